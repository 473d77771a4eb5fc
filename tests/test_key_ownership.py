"""First come, first served for keys (issue 9, finding 8).

A key already applied on a live channel stays with that channel; the quality that newly
declares it is the one refused, on the host (the state records which channel each key was
applied on) and in CI (`validate --base`: the file that had it at the base revision keeps it).
Two new declarations of the same key: both refused. The examples' qualities are
A = onderneming (0403170701, sorts second) and B = secsoc (0200065765, sorts first): the file
first by name is the newcomer here, which is exactly the order in which the old rule refused
the owner instead.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    EN_ONDERNEMING,
    EN_SECSOC,
    EN_THIRD,
    EXAMPLES,
    Q_ONDERNEMING,
    Q_SECSOC,
    Q_THIRD,
    USER_ONDERNEMING,
    USER_SECSOC,
    Host,
    add_key,
    add_third_quality,
    ssh_key,
)

from provisioner.state import StateStore

# pytest fixtures of a real, throw-away PostgreSQL server
pytest_plugins = ("pg",)

KEYS = "etc/ssh/sftp-provisioner/authorized_keys"
# The inline key of A (onderneming), line 26 of its file.
A_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPq7+feyI92PczJjNGhPAS4DdtZ+T8Tph+METQA1ZLfL"
A_FP = "SHA256:sGI6jWxjXYdog93B00xtNqBmi2suN9iNBfvCsk7Hzsk"
B_FILE = "qualities/0200065765.yaml"
A_FILE = "qualities/0403170701.yaml"


def paste(path: Path, key_line: str) -> None:
    """Declare `key_line` as the first key of the declaration at `path`."""
    text = path.read_text("utf-8")
    marker = "      ssh_keys:\n"
    assert marker in text
    path.write_text(text.replace(marker, f"{marker}        - {key_line}\n", 1), "utf-8")


def drop(path: Path, key_line: str) -> None:
    text = path.read_text("utf-8")
    line = next(x for x in text.splitlines(keepends=True) if key_line in x)
    path.write_text(text.replace(line, "", 1), "utf-8")


def keys_of(host: Host, user: str) -> str:
    return (host.root / KEYS / user).read_text("utf-8")


def refused(result: object) -> dict[str, tuple[str, ...]]:
    plan = result.plan  # type: ignore[attr-defined]
    return {c.enterprise_number: c.reasons for c in plan.refused}


# --- on the host, from the state ------------------------------------------------------------


def test_the_channel_that_had_the_key_keeps_it_and_the_newcomer_is_refused(host: Host) -> None:
    host.apply()
    assert host.snapshot().channel_keys[A_FP] == Q_ONDERNEMING

    paste(host.quality(EN_SECSOC), f"{A_KEY} stolen")
    result = host.apply()
    reasons = refused(result)
    assert set(reasons) == {EN_SECSOC}
    (why,) = reasons[EN_SECSOC]
    # On the newcomer's line, naming the owner's file.
    assert why.startswith(f"examples/{B_FILE}:25:11: duplicate-key: this key ({A_FP})")
    assert f"already belongs to the channel of examples/{A_FILE} (line 26)" in why

    regs = host.snapshot().registrations
    assert regs[Q_ONDERNEMING].status == "active"
    assert regs[Q_SECSOC].status == "degraded"
    assert A_KEY in keys_of(host, USER_ONDERNEMING)
    # B keeps its last good configuration, without the stolen key.
    assert A_KEY not in keys_of(host, USER_SECSOC)
    assert host.snapshot().channel_keys[A_FP] == Q_ONDERNEMING

    # A's own later changes are not blocked.
    new = add_key(host, EN_ONDERNEMING, 41)
    result = host.apply()
    assert set(refused(result)) == {EN_SECSOC}
    assert {c.enterprise_number: c.action.value for c in result.plan.channels}[
        EN_ONDERNEMING
    ] == "change"
    assert new.split()[1] in keys_of(host, USER_ONDERNEMING)
    assert host.snapshot().registrations[Q_ONDERNEMING].status == "active"


def test_the_owner_refused_for_another_reason_still_keeps_its_key(host: Host) -> None:
    """A held channel (its file refused) keeps its keys: one who declares one is refused."""
    host.apply()
    host.edit(EN_ONDERNEMING, "language: nl", "language: xx")  # A's file is now invalid
    paste(host.quality(EN_SECSOC), f"{A_KEY} stolen")
    result = host.apply()
    assert set(refused(result)) == {EN_SECSOC, EN_ONDERNEMING}
    assert A_KEY in keys_of(host, USER_ONDERNEMING)
    assert A_KEY not in keys_of(host, USER_SECSOC)


def test_an_owner_whose_file_is_unreadable_keeps_its_key(host: Host) -> None:
    """A's file too broken to say whose it is: A is held, and so is its key."""
    host.apply()
    host.quality(EN_ONDERNEMING).write_text("garbage: [\n", "utf-8")
    paste(host.quality(EN_SECSOC), f"{A_KEY} stolen")
    result = host.apply()
    (why,) = refused(result)[EN_SECSOC]
    assert "key-taken" in why and f"({A_FP})" in why
    assert A_KEY in keys_of(host, USER_ONDERNEMING)
    assert A_KEY not in keys_of(host, USER_SECSOC)


def test_a_key_its_channel_gave_up_may_move(host: Host) -> None:
    """The owner's own file dropping the key in the same change frees it."""
    host.apply()
    drop(host.quality(EN_ONDERNEMING), A_KEY)
    paste(host.quality(EN_SECSOC), f"{A_KEY} moved")
    result = host.apply()
    assert refused(result) == {}
    assert A_KEY in keys_of(host, USER_SECSOC)
    assert A_KEY not in keys_of(host, USER_ONDERNEMING)
    assert host.snapshot().channel_keys[A_FP] == Q_SECSOC


def test_a_removed_channel_releases_its_keys(host: Host) -> None:
    host.apply()
    host.quality(EN_ONDERNEMING).unlink()
    host.apply()
    assert Q_ONDERNEMING not in host.snapshot().channel_keys.values()
    paste(host.quality(EN_SECSOC), f"{A_KEY} reused")
    assert refused(host.apply()) == {}
    assert host.snapshot().channel_keys[A_FP] == Q_SECSOC


def test_two_new_declarations_of_one_key_are_both_refused(host: Host) -> None:
    host.apply()
    add_third_quality(host)
    fresh = ssh_key(77, "shared@test")
    paste(host.quality(EN_SECSOC), fresh)
    paste(host.quality(EN_THIRD), fresh)
    reasons = refused(host.apply())
    assert set(reasons) == {EN_SECSOC, EN_THIRD}
    for en in (EN_SECSOC, EN_THIRD):
        assert "none of these files had it before" in reasons[en][0]
    assert fresh.split()[1] not in keys_of(host, USER_SECSOC)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_record_channel_keys(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Held channels keep their keys, removed ones release them, one owner per key."""
    from datetime import UTC, datetime

    from provisioner.state import allocate

    url = (
        f"sqlite:///{tmp_path}/state.db"
        if backend == "sqlite"
        else str(request.getfixturevalue("postgres_url"))
    )
    now = datetime(2026, 11, 29, 20, 30, tzinfo=UTC)
    with StateStore.open(url) as store:
        alloc = allocate(store.snapshot(), {Q_SECSOC: "secsoc0001", Q_THIRD: "third00001"}, now=now)
        store.commit(alloc, revision=None, now=now)
        assert (
            store.record_channel_keys({Q_SECSOC: ["k1", "k2"], Q_THIRD: ["k3"]}, [], now=now) == 3
        )
        version = store.version()
        assert store.record_channel_keys({Q_SECSOC: ["k1", "k2"]}, [], now=now) == 0
        assert store.version() == version  # nothing changed, nothing written
        # THIRD is held (not in this apply): its k3 is not handed to SECSOC.
        store.record_channel_keys({Q_SECSOC: ["k1", "k3"]}, [], now=now)
        assert dict(store.snapshot().channel_keys) == {"k1": Q_SECSOC, "k3": Q_THIRD}
        store.record_channel_keys({}, [Q_THIRD], now=now)
        store.record_channel_keys({Q_SECSOC: ["k1", "k3"]}, [], now=now)
        assert dict(store.snapshot().channel_keys) == {"k1": Q_SECSOC, "k3": Q_SECSOC}


# --- in CI, from the base revision ----------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=T", "-c", "user.email=t@example.invalid",
         "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args],
        cwd=repo, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "declarations"
    shutil.copytree(EXAMPLES, root)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    return root


def validate(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provisioner", "validate", "qualities", "--no-cache", *args],
        cwd=repo, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stdout.splitlines() if ": error[" in line]


def test_ci_refuses_the_file_that_introduced_the_key(repo: Path) -> None:
    paste(repo / B_FILE, f"{A_KEY} stolen")
    done = validate(repo, "--base", "HEAD")
    assert done.returncode == 1
    assert error_lines(done) == [
        f"{B_FILE}:25:11: error[duplicate-key] this key ({A_FP}) already belongs to the channel "
        f"of {A_FILE} (line 26), which had it first; every channel has keys of its own, so it "
        "is refused here and stays there [structured_messages.channels.sftp.ssh_keys[0]]"
    ]
    # Committed on a branch, judged against the target: the same.
    git(repo, "checkout", "-q", "-b", "steal")
    git(repo, "commit", "-q", "-am", "copy a key")
    assert error_lines(validate(repo, "--base", "main")) == error_lines(done)


def test_ci_follows_a_key_file_of_the_base_revision(repo: Path) -> None:
    """A's key in a referenced .pub file at the base revision counts as A's too."""
    pub = (repo / "keys" / "expdemo-payroll-2026.pub").read_text().strip()
    paste(repo / B_FILE, pub)
    lines = error_lines(validate(repo, "--base", "HEAD"))
    assert len(lines) == 1 and lines[0].startswith(f"{B_FILE}:25:11: error[duplicate-key]")
    assert f"already belongs to the channel of {A_FILE} (line 25)" in lines[0]


def test_ci_two_new_declarations_are_both_refused(repo: Path) -> None:
    fresh = ssh_key(78, "shared@test")
    paste(repo / B_FILE, fresh)
    paste(repo / A_FILE, fresh)
    lines = error_lines(validate(repo, "--base", "HEAD"))
    assert [line.split(" error[")[0] for line in lines] == [f"{B_FILE}:25:11:", f"{A_FILE}:25:11:"]
    assert all("none of these files had it before, so each of them is refused" in x for x in lines)


def test_without_history_both_files_are_refused_and_told_why(repo: Path) -> None:
    paste(repo / B_FILE, f"{A_KEY} stolen")
    lines = error_lines(validate(repo))
    assert [line.split(" error[")[0] for line in lines] == [f"{B_FILE}:25:11:", f"{A_FILE}:26:11:"]
    assert all("without --base the gate cannot tell which file had it first" in x for x in lines)
