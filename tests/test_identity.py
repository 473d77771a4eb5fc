"""A live channel survives a typo, a broken file and a rename (issue 10).

The state remembers which file declared each quality at its last successful apply (its path
relative to the declarations root, and its blob). A file that still exists but is refused —
unparsable, a mistyped enterprise number, another number altogether — holds the quality it
declared: the sender keeps logging in, its uploads stay where they are, and `status` says
`degraded` with the reason and since when. Every other removal goes ahead. A file moved with
the same identity is the same channel. With `--base`, the gate refuses a change of identity
inside an existing file and says how to move a registration.

Each test drives real applies into a temporary --root with the SQLite state, and looks at what
a sender or an operator would notice: the account in extrausers, the keys file, the chroot,
the archive, the routing table, the status.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import (
    EN_ONDERNEMING,
    EN_SECSOC,
    EN_THIRD,
    NOW,
    Q_ONDERNEMING,
    Q_SECSOC,
    Q_THIRD,
    USER_ONDERNEMING,
    USER_SECSOC,
    Host,
    add_third_quality,
)
from test_history import git

from provisioner.plan import ChannelAction, PathAction, Plan
from provisioner.report import render_text
from provisioner.validate import ValidateSettings, ValidationReport, validate

KEYS = "etc/ssh/sftp-provisioner/authorized_keys"
PASSWD = "var/lib/extrausers/passwd"
ONDERNEMING = f"qualities/{EN_ONDERNEMING}.yaml"
# One digit off: the mod-97 check fails. And another valid enterprise number altogether.
TYPO, OTHER_VALID = "0403.170.702", "0403.170.897"
LATER = NOW + timedelta(minutes=30)


@dataclass(frozen=True)
class Serving:
    """What a sender relies on: the account, the keys, the chroot and its routing entry."""

    account: list[str]
    keys: bytes | None
    chroot: bool
    archived: list[str]
    routing: list[str]


def serving(host: Host, user: str) -> Serving:
    passwd = (host.root / PASSWD).read_text("utf-8").splitlines()
    keys = host.root / KEYS / user
    settings = host.settings()
    routing = json.loads(settings.routing_table.read_text("utf-8"))["senders"]
    archive = settings.archive_dir
    return Serving(
        account=[line for line in passwd if line.startswith(f"{user}:")],
        keys=keys.read_bytes() if keys.exists() else None,
        chroot=(host.root / "srv/sftp" / user).is_dir(),
        archived=sorted(p.name for p in archive.iterdir() if p.name.startswith(user))
        if archive.exists()
        else [],
        routing=sorted(s for s, v in routing.items() if v.get("username") == user),
    )


def channel(plan: Plan, en: str) -> tuple[ChannelAction, tuple[str, ...]]:
    (found,) = [c for c in plan.channels if c.enterprise_number == en]
    return found.action, found.reasons


def removes_nothing(plan: Plan) -> None:
    assert not [c for c in plan.channels if c.action is ChannelAction.REMOVE]
    assert not [c for c in plan.changes if c.action in (PathAction.ARCHIVE, PathAction.DELETE)], (
        plan.changes
    )


@pytest.fixture
def live(host: Host) -> Host:
    """Both example channels applied and serving."""
    host.write_settings(sshd_check=False)
    host.apply()
    return host


# --- the one-digit typo (issue 10, finding 1) -----------------------------------------------


def test_a_mistyped_check_digit_keeps_the_channel_serving(live: Host) -> None:
    before = serving(live, USER_ONDERNEMING)
    assert before.account and before.keys and before.chroot and before.routing
    live.edit(EN_ONDERNEMING, '"0403.170.701"', f'"{TYPO}"')

    plan = live.plan(now=LATER)
    action, reasons = channel(plan, EN_ONDERNEMING)
    assert action is ChannelAction.REFUSED
    assert "keeps its last good configuration" in reasons[0]
    assert any("identity-changed" in r and "0403170702" in r for r in reasons)
    removes_nothing(plan)
    assert EN_ONDERNEMING not in {r.enterprise_number for r in live.compute(now=LATER).removed}

    done = live.run("apply")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert serving(live, USER_ONDERNEMING) == before
    regs = live.snapshot().registrations
    assert all(q.enterprise_number != "0403170702" for q in regs)
    reg = regs[Q_ONDERNEMING]
    assert reg.status == "degraded"
    assert reg.status_reason is not None and "identity-changed" in reg.status_reason
    status = live.run("status")
    assert "degraded" in status.stdout, status.stdout

    # Put right: active again, and nothing of the channel was touched on the way.
    live.edit(EN_ONDERNEMING, f'"{TYPO}"', '"0403.170.701"')
    live.apply(now=LATER + timedelta(minutes=30))
    assert live.snapshot().registrations[Q_ONDERNEMING].status == "active"
    assert serving(live, USER_ONDERNEMING) == before


def test_degraded_says_since_when(live: Host) -> None:
    live.edit(EN_ONDERNEMING, '"0403.170.701"', f'"{TYPO}"')
    live.apply(now=LATER)
    live.apply(now=LATER + timedelta(minutes=30))
    reg = live.snapshot().registrations[Q_ONDERNEMING]
    assert (reg.status, reg.status_since) == ("degraded", LATER)


def test_another_valid_number_in_the_same_file_is_an_identity_change(live: Host) -> None:
    before = serving(live, USER_ONDERNEMING)
    next_sender = live.snapshot().next_sender_number
    live.edit(EN_ONDERNEMING, '"0403.170.701"', f'"{OTHER_VALID}"')

    plan = live.plan(now=LATER)
    action, reasons = channel(plan, EN_ONDERNEMING)
    assert action is ChannelAction.REFUSED
    (changed,) = [r for r in reasons if "identity-changed" in r]
    assert f"{ONDERNEMING}:4:" in changed
    assert "declared quality 0403170701" in changed and "now declares 0403170897" in changed
    assert "remove this file" in changed and "separate change" in changed
    removes_nothing(plan)
    assert not [c for c in plan.channels if c.action is ChannelAction.CREATE]

    live.apply(now=LATER)
    assert serving(live, USER_ONDERNEMING) == before
    snapshot = live.snapshot()
    assert all(q.enterprise_number != "0403170897" for q in snapshot.registrations)
    assert snapshot.next_sender_number == next_sender
    assert snapshot.registrations[Q_ONDERNEMING].status == "degraded"


# --- a broken file holds only its own quality -----------------------------------------------


def test_an_unparsable_file_holds_its_quality_while_another_is_removed(live: Host) -> None:
    kept = serving(live, USER_ONDERNEMING)
    live.quality(EN_ONDERNEMING).write_text("quality: [\n", "utf-8")
    live.quality(EN_SECSOC).unlink()  # the same commit: the secretariat leaves

    rec = live.compute(now=LATER)
    assert rec.deferred == [] and rec.deferred_by == []
    assert [r.enterprise_number for r in rec.removed] == [EN_SECSOC]
    assert not any("removals deferred" in n for n in rec.plan.notes)

    live.apply(now=LATER)
    regs = live.snapshot().registrations
    # The departure happened: no login, the uploads archived.
    assert regs[Q_SECSOC].status == "removed"
    gone = serving(live, USER_SECSOC)
    assert gone.account == [] and gone.keys is None and not gone.chroot
    assert len(gone.archived) == 1 and gone.routing == []
    # The broken file's channel serves on.
    assert serving(live, USER_ONDERNEMING) == kept
    assert regs[Q_ONDERNEMING].status == "degraded"
    assert regs[Q_ONDERNEMING].status_reason


def test_a_refused_new_file_defers_nothing(live: Host) -> None:
    add_third_quality(live)
    live.edit(EN_THIRD, "language: fr", "language: xx")
    live.quality(EN_SECSOC).unlink()
    rec = live.compute(now=LATER)
    assert rec.deferred == []
    assert [r.enterprise_number for r in rec.removed] == [EN_SECSOC]
    live.apply(now=LATER)
    regs = live.snapshot().registrations
    assert regs[Q_SECSOC].status == "removed"
    assert Q_THIRD not in regs


def test_a_file_gone_with_nobody_declaring_it_is_removed(live: Host) -> None:
    live.quality(EN_ONDERNEMING).unlink()
    plan = live.plan(now=LATER)
    assert channel(plan, EN_ONDERNEMING)[0] is ChannelAction.REMOVE
    live.apply(now=LATER)
    assert live.snapshot().registrations[Q_ONDERNEMING].status == "removed"
    gone = serving(live, USER_ONDERNEMING)
    assert gone.account == [] and gone.keys is None and len(gone.archived) == 1


# --- moves and renames ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("qualities/onderneming.yaml", id="same-directory"),
        # A sibling directory: the file's ../keys and ../certs still lead to the same files.
        pytest.param("moved/here/../onderneming.yaml", id="another-directory"),
    ],
)
def test_a_moved_file_is_the_same_channel(live: Host, target: str) -> None:
    before = serving(live, USER_ONDERNEMING)
    old = live.snapshot()
    assert old.registrations[Q_ONDERNEMING].declared_path == ONDERNEMING
    dest = Path(live.decls, target).resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    live.quality(EN_ONDERNEMING).rename(dest)

    plan = live.plan(now=LATER)
    assert channel(plan, EN_ONDERNEMING)[0] in (ChannelAction.UNCHANGED, ChannelAction.CHANGE)
    removes_nothing(plan)
    assert not [c for c in plan.channels if c.action is ChannelAction.CREATE]

    live.apply(now=LATER)
    assert serving(live, USER_ONDERNEMING) == before
    new = live.snapshot()
    reg, was = new.registrations[Q_ONDERNEMING], old.registrations[Q_ONDERNEMING]
    assert (reg.sender_number, reg.uid, reg.registered_at, reg.status) == (
        was.sender_number,
        was.uid,
        was.registered_at,
        "active",
    )
    assert new.next_sender_number == old.next_sender_number
    assert reg.declared_path == dest.relative_to(live.decls.resolve()).as_posix()

    # Broken under its new name, it still holds its channel.
    dest.write_text("quality: [\n", "utf-8")
    rec = live.compute(now=LATER + timedelta(minutes=30))
    assert rec.removed == [] and rec.deferred == []
    assert channel(rec.plan, EN_ONDERNEMING)[0] is ChannelAction.REFUSED


def test_the_declared_path_is_relative_to_the_root_however_it_was_typed(live: Host) -> None:
    other = live.base / "elsewhere"
    other.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "provisioner",
            "apply",
            "../examples/./qualities/../",
            "--root",
            str(live.root),
            "--settings",
            str(live.settings_file),
        ],
        cwd=other,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    regs = live.snapshot().registrations
    assert regs[Q_ONDERNEMING].declared_path == ONDERNEMING
    assert regs[Q_SECSOC].declared_path == f"qualities/{EN_SECSOC}.yaml"


def test_the_declared_blob_is_the_content_hash_or_the_git_blob(live: Host) -> None:
    content = live.quality(EN_ONDERNEMING).read_bytes()
    reg = live.snapshot().registrations[Q_ONDERNEMING]
    assert reg.declared_blob == hashlib.sha256(content).hexdigest()

    for path in live.decls.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    git(live.decls, "init", "-q")
    git(live.decls, "add", "-A")
    git(live.decls, "commit", "-q", "-m", "declarations")
    live.edit(EN_ONDERNEMING, "function: IT Manager", "function: CIO")
    live.apply(now=LATER)
    reg = live.snapshot().registrations[Q_ONDERNEMING]
    assert reg.declared_blob == git(live.decls, "hash-object", ONDERNEMING)
    assert reg.declared_path == ONDERNEMING


# --- identity changes in CI: validate --base --------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "declarations"
    shutil.copytree(Path(__file__).parent.parent / "examples", root)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    return root


def gate(repo: Path, base: str = "HEAD") -> ValidationReport:
    return validate(
        ValidateSettings(
            paths=(Path("qualities"),), cwd=repo, now=NOW, base=base, cache_dir=None, jobs=1
        )
    )


def identity_errors(report: ValidationReport) -> list[str]:
    return [line for line in render_text(report).splitlines() if "identity-changed" in line]


def replace_in(repo: Path, rel: str, old: str, new: str) -> None:
    path = repo / rel
    text = path.read_text("utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), "utf-8")


def test_gate_refuses_another_enterprise_number_in_an_existing_file(repo: Path) -> None:
    replace_in(repo, ONDERNEMING, '"0403.170.701"', f'"{OTHER_VALID}"')
    (line,) = identity_errors(gate(repo))
    assert line.startswith(f"{ONDERNEMING}:4:22: error[identity-changed] ")
    assert "declares quality 0403170701 at HEAD" in line and "0403170897" in line
    assert "remove this file" in line and "add a new file in a separate change" in line


def test_gate_refuses_a_mistyped_number_as_an_identity_change_too(repo: Path) -> None:
    replace_in(repo, ONDERNEMING, '"0403.170.701"', f'"{TYPO}"')
    codes = {d.code for d in gate(repo).diagnostics if d.is_error}
    assert "identity-changed" in codes and len(codes) == 2  # and the mod-97 check


def test_gate_refuses_another_quality_type(repo: Path) -> None:
    replace_in(repo, ONDERNEMING, "type: employer_nsso", "type: service_provider")
    (line,) = identity_errors(gate(repo))
    assert line.startswith(f"{ONDERNEMING}:5:9: error[identity-changed] ")
    assert "'employer_nsso' at HEAD" in line and "'service_provider'" in line


def test_gate_follows_a_git_rename(repo: Path) -> None:
    git(repo, "mv", ONDERNEMING, "qualities/onderneming.yaml")
    assert identity_errors(gate(repo)) == []  # moved, same identity: fine
    replace_in(repo, "qualities/onderneming.yaml", '"0403.170.701"', f'"{OTHER_VALID}"')
    git(repo, "add", "-A")
    (line,) = identity_errors(gate(repo))
    assert line.startswith("qualities/onderneming.yaml:4:22: error[identity-changed] ")
    assert f"(as {ONDERNEMING})" in line


def test_gate_allows_a_removal_then_a_new_file(repo: Path) -> None:
    """The documented way to move a registration: two changes, each passes."""
    git(repo, "rm", "-q", ONDERNEMING)
    git(repo, "commit", "-q", "-m", "remove")
    assert identity_errors(gate(repo, "HEAD~1")) == []
    text = (Path(__file__).parent.parent / "examples" / ONDERNEMING).read_text("utf-8")
    (repo / ONDERNEMING).write_text(text.replace('"0403.170.701"', f'"{OTHER_VALID}"'))
    assert identity_errors(gate(repo)) == []


def test_gate_identity_change_through_the_cli(repo: Path) -> None:
    replace_in(repo, ONDERNEMING, '"0403.170.701"', f'"{OTHER_VALID}"')
    done = subprocess.run(
        [sys.executable, "-m", "provisioner", "validate", "qualities", "--base", "HEAD"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{ONDERNEMING}:4:22: error[identity-changed]" in done.stdout
