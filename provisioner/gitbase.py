"""Rules against history: the immutable technical user, and who may change a quality's file.

`--base REF` compares the work tree with the repository at REF (the pull request's target).
Only the administrators a quality's file names at REF may change or remove it; for a new file,
those it names itself. Checking the base version is what stops an author from adding their
own address to a file in the same pull request that changes it.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from provisioner.declarations import partial_facts
from provisioner.diagnostics import Diagnostic, Location, error
from provisioner.errors import GitError
from provisioner.source import parse_document

if TYPE_CHECKING:
    from provisioner.rules import FileSummary
    from provisioner.validate import ValidateSettings


@dataclass(frozen=True, slots=True)
class BaseQuality:
    path: str  # relative to the work tree
    enterprise_number: str | None
    technical_user: str | None
    administrators: tuple[str, ...]


def _git(root: Path, *args: str, input_: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args],
            input=input_,
            capture_output=True,
            check=False,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"cannot run git: {exc}") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GitError(f"git {args[0]} failed: {message[-1] if message else done.returncode}")
    return done.stdout


def work_tree(root: Path) -> Path:
    return Path(_git(root, "rev-parse", "--show-toplevel").decode().strip())


def resolve_revision(root: Path, ref: str) -> str:
    try:
        return _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").decode().strip()
    except GitError:
        raise GitError(f"the revision '{ref}' does not exist in {root}") from None


def head_revision(root: Path) -> str | None:
    try:
        return _git(root, "rev-parse", "HEAD").decode().strip()
    except GitError:
        return None


def _base_facts(path: str, raw: bytes) -> BaseQuality:
    doc, _ = parse_document(raw, Path(path), path)
    if doc is None:
        return BaseQuality(path, None, None, ())
    facts = partial_facts(doc)
    return BaseQuality(path, facts.enterprise_number, facts.technical_user, facts.administrators)


def base_qualities(top: Path, revision: str, prefixes: list[str]) -> dict[str, BaseQuality]:
    """Every YAML file under the declaration paths at `revision`, by path in the work tree."""
    listing = _git(top, "ls-tree", "-r", "-z", "--name-only", revision, "--", *prefixes)
    paths = [
        p
        for p in listing.decode("utf-8", "replace").split("\0")
        if p.endswith((".yaml", ".yml")) and not any(part.startswith(".") for part in p.split("/"))
    ]
    if not paths:
        return {}
    # One `cat-file --batch` for all files: one process instead of one per quality.
    request = "".join(f"{revision}:{p}\n" for p in paths).encode()
    out = _git(top, "cat-file", "--batch", input_=request)
    result: dict[str, BaseQuality] = {}
    pos = 0
    for p in paths:
        header_end = out.index(b"\n", pos)
        header = out[pos:header_end].split()
        if len(header) < 3 or header[1] == b"missing":
            pos = header_end + 1
            continue
        size = int(header[2])
        body = out[header_end + 1 : header_end + 1 + size]
        pos = header_end + 1 + size + 1
        result[p] = _base_facts(p, body)
    return result


def changed_paths(top: Path, revision: str, prefixes: list[str]) -> dict[str, str]:
    """YAML paths changed since `revision` (committed, staged, unstaged or untracked)."""
    changes = changed_files(top, revision, prefixes)
    return {p: s for p, s in changes.items() if p.endswith((".yaml", ".yml"))}


def changed_files(top: Path, revision: str, prefixes: list[str]) -> dict[str, str]:
    """Every path changed since `revision` under `prefixes` (all when empty): path -> A/M/D."""
    out = _git(top, "diff", "--no-renames", "--name-status", "-z", revision, "--", *prefixes)
    parts = out.decode("utf-8", "replace").split("\0")
    changes: dict[str, str] = {}
    for status, path in zip(parts[0::2], parts[1::2], strict=False):
        if path:
            changes[path] = status[:1]
    untracked = _git(top, "ls-files", "--others", "--exclude-standard", "-z", "--", *prefixes)
    for path in untracked.decode("utf-8", "replace").split("\0"):
        if path:
            changes[path] = "A"
    return changes


def _referenced(summary: FileSummary, top: Path) -> set[str]:
    """The key and certificate files a declaration references, relative to the work tree.

    Both the path as written and where it leads count: re-pointing a symlink changes the
    declaration as much as changing the file it points at.
    """
    found: set[str] = set()
    for candidate in summary.refs:
        for path in (Path(os.path.normpath(candidate)), Path(candidate).resolve()):
            if path.is_relative_to(top):
                found.add(str(path.relative_to(top)))
    return found


def history_rules(
    root: Path, files: list[Path], summaries: list[FileSummary], settings: ValidateSettings
) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    top = work_tree(root)
    ref = settings.base or "HEAD"
    revision = resolve_revision(top, ref)
    prefixes = []
    for given in settings.paths:
        absolute = (given if given.is_absolute() else settings.cwd / given).resolve()
        inside = absolute.relative_to(top) if absolute.is_relative_to(top) else Path()
        prefixes.append(str(inside))
    base = base_qualities(top, revision, prefixes)
    by_number = {b.enterprise_number: b for b in base.values() if b.enterprise_number}
    from provisioner.validate import display_path

    by_display = {s.display: s for s in summaries}
    current: dict[str, FileSummary] = {}
    for path in files:
        resolved = path.resolve()
        summary = by_display.get(display_path(path, settings.cwd))
        if summary is not None and resolved.is_relative_to(top):
            current[str(resolved.relative_to(top))] = summary

    if settings.base is not None:
        for summary in summaries:
            f = summary.facts
            before = by_number.get(f.enterprise_number or "")
            if before is None or f.technical_user is None or before.technical_user is None:
                continue
            if f.technical_user != before.technical_user and f.technical_user_at is not None:
                out.append(
                    error(
                        "technical-user-immutable",
                        f"the technical user of this quality is '{before.technical_user}' (at {ref}) "
                        f"and cannot be changed once created; '{f.technical_user}' is refused",
                        f.technical_user_at,
                    )
                )

    if settings.author is not None:
        author = settings.author.lower()
        changed = changed_paths(top, revision, prefixes)
        for rel, status in sorted(changed.items()):
            summary = current.get(rel)
            display = summary.display if summary else rel
            if status == "A":
                allowed = summary.facts.administrators if summary else ()
                where = summary.facts.administrators_at if summary else None
                verb = "add"
            else:
                old = base.get(rel)
                allowed = old.administrators if old else ()
                where = summary.facts.administrators_at if summary else None
                verb = "remove" if status == "D" else "change"
            if author in allowed:
                continue
            names = ", ".join(allowed) or "nobody"
            out.append(
                error(
                    "author-not-administrator",
                    f"{settings.author} may not {verb} this quality's declaration: only its local or "
                    f"co-local administrators ({names}) may"
                    + (f", as listed at {ref}" if status != "A" else ""),
                    where or Location(display),
                )
            )
        # A quality's key and certificate files are part of its declaration: swapping the .pub
        # file it references puts another key on its login without touching the YAML.
        touched_files = changed_files(top, revision, [])
        for rel, summary in sorted(current.items()):
            old = base.get(rel)
            if rel in changed or old is None or author in old.administrators:
                continue  # the YAML itself was judged above, or the author may change it
            touched = sorted(_referenced(summary, top) & touched_files.keys())
            if not touched:
                continue
            names = ", ".join(old.administrators) or "nobody"
            out.append(
                error(
                    "author-not-administrator",
                    f"{settings.author} may not change {', '.join(touched)}, which this quality's "
                    f"declaration references: only its local or co-local administrators "
                    f"({names}) may, as listed at {ref}",
                    summary.facts.administrators_at or Location(summary.display),
                )
            )
    return out
