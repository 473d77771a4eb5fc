"""The declarations checkout of a scheduled run: fast-forward pull and signature checks.

A run applies what the checkout holds. With `--pull` it first fetches and fast-forwards to the
upstream branch; a checkout with local changes, a diverged branch or a failed fetch means no
apply. With `--verify-signatures` the revision to apply must carry a commit signature that Git
verifies (GPG or SSH, as configured in Git: `gpg.format`, `gpg.ssh.allowedSignersFile`, the
keyring); when pulling, the new revision is checked *before* the fast-forward, so the checkout
never moves to a revision that was refused.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioner.discovery import find_root
from provisioner.errors import GitError
from provisioner.gitbase import _git, head_revision

# `git log --format=%G?`: what each letter means, for the refusal message.
SIGNATURE_STATES = {
    "G": "a good signature",
    "B": "a bad signature",
    "U": "a good signature of unknown validity (the key is not trusted)",
    "X": "a good signature that has expired",
    "Y": "a good signature made by an expired key",
    "R": "a good signature made by a revoked key",
    "E": "a signature that cannot be checked (the key or allowed-signers file is missing)",
    "N": "no signature",
}


@dataclass(frozen=True, slots=True)
class Update:
    """What a pull did: the revision before and after (equal when nothing was new)."""

    before: str
    after: str

    @property
    def moved(self) -> bool:
        return self.before != self.after


def checkout_of(paths: Sequence[Path]) -> Path:
    """The Git work tree holding the declarations; an error when there is none."""
    root = find_root(list(paths))
    if not (root / ".git").exists():
        raise GitError(
            f"{root} is not a Git checkout: --pull and --verify-signatures need the "
            "declarations to be a clone of their repository"
        )
    return root


def local_changes(root: Path) -> list[str]:
    """Modified, staged and untracked files (ignored ones aside), as `git status` shows them."""
    out = _git(root, "status", "--porcelain=v1", "--untracked-files=normal")
    return [line for line in out.decode("utf-8", "replace").splitlines() if line.strip()]


def require_clean(root: Path) -> None:
    changes = local_changes(root)
    if changes:
        shown = ", ".join(line[3:] for line in changes[:5])
        more = f" and {len(changes) - 5} more" if len(changes) > 5 else ""
        raise GitError(
            f"the declarations checkout {root} has local changes ({shown}{more}); nothing was "
            "applied: what is applied must be a revision of the repository"
        )


def revision(root: Path) -> str:
    found = head_revision(root)
    if found is None:
        raise GitError(f"the declarations checkout {root} has no commit yet")
    return found


def upstream(root: Path) -> str:
    try:
        ref = _git(root, "rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}")
    except GitError:
        raise GitError(
            f"the branch checked out in {root} has no upstream to pull from; set one with "
            "`git branch --set-upstream-to=origin/main`"
        ) from None
    return ref.decode().strip()


def signature_state(root: Path, rev: str) -> tuple[str, str]:
    """The `%G?` letter of `rev` and who signed it (`%GS`, may be empty)."""
    out = _git(root, "log", "-1", "--format=%G?%x00%GS", rev, "--")
    letter, _, signer = out.decode("utf-8", "replace").strip().partition("\x00")
    return letter or "N", signer


def verify_revision(root: Path, rev: str) -> str:
    """Refuse `rev` unless Git verifies its commit signature; returns the signer."""
    letter, signer = signature_state(root, rev)
    done = subprocess.run(
        ["git", "-C", str(root), "verify-commit", rev],
        capture_output=True,
        check=False,
        timeout=120,
    )
    if letter != "G" or done.returncode != 0:
        what = SIGNATURE_STATES.get(letter, f"signature state '{letter}'")
        raise GitError(f"revision {rev[:12]} has {what}; it was not applied (--verify-signatures)")
    return signer


def pull(root: Path, *, verify: bool) -> Update:
    """Fetch and fast-forward to the upstream branch; never merges, never moves on local edits."""
    require_clean(root)
    before = revision(root)
    branch = upstream(root)
    remote = branch.split("/", 1)[0]
    _git(root, "fetch", "--quiet", "--prune", remote)
    target = _git(root, "rev-parse", "--verify", "@{upstream}^{commit}").decode().strip()
    if target == before:
        return Update(before, before)
    try:
        _git(root, "merge-base", "--is-ancestor", before, target)
    except GitError:
        raise GitError(
            f"cannot fast-forward {root} to {branch} ({target[:12]}): the checkout has "
            "commits of its own or the upstream was rewritten; nothing was applied"
        ) from None
    if verify:
        verify_revision(root, target)
    _git(root, "merge", "--ff-only", "--quiet", target)
    return Update(before, revision(root))
