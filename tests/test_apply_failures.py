"""`apply` when something goes wrong: refused qualities, stale plans, the lock, failures midway,
`sshd -t` refusing the staged configuration, and a run without root into a --root.

The promise under test: a refused quality keeps its last good configuration while the others
are reconciled, and a failed run leaves every live file as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import (
    EN_ONDERNEMING,
    EN_SECSOC,
    NOW,
    Q_ONDERNEMING,
    Q_SECSOC,
    Q_THIRD,
    USER_ONDERNEMING,
    USER_SECSOC,
    USER_THIRD,
    Entry,
    Host,
    add_key,
    add_third_quality,
    require,
    require_root,
    require_sshd,
)

from provisioner.errors import ApplyError, LockError, PlanError
from provisioner.plan import Plan
from provisioner.resources import shipped

LATER = NOW + timedelta(hours=1)
KEYS = "etc/ssh/sftp-provisioner/authorized_keys"
PASSWD = "var/lib/extrausers/passwd"
ROUTING = "var/lib/sftp-gateway/routing.json"


def senders(host: Host) -> dict[str, dict[str, object]]:
    data: dict[str, dict[str, object]] = json.loads((host.root / ROUTING).read_bytes())["senders"]
    return data


def assert_unchanged(before: dict[str, Entry], after: dict[str, Entry], *, inodes: bool) -> None:
    """Every path as it was: same set, bytes, owner and mode (and inode/mtime if asked)."""
    assert sorted(after) == sorted(before)
    for rel, entry in before.items():
        assert after[rel].same_metadata(entry), rel
        if inodes and entry.kind != "dir":
            assert (after[rel].ino, after[rel].mtime_ns) == (entry.ino, entry.mtime_ns), rel


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stdout + done.stderr


# --- refused qualities ---------------------------------------------------------------------


class TestRefused:
    def test_invalid_declaration_keeps_its_last_good_configuration(self, host: Host) -> None:
        host.apply()
        before = host.tree()
        entry_before = senders(host)["100001"]
        # One invalid declaration among valid ones, one valid change, one new quality.
        host.edit(EN_ONDERNEMING, "language: nl", "language: xx")
        new_key = add_key(host, EN_SECSOC, 7)
        add_third_quality(host)

        plan = host.run("plan")
        assert plan.returncode == 1, plan.stdout
        done = host.run("apply")
        no_traceback(done)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "! refused   100001  EXPDEMOONDERNEMING" in done.stdout
        assert "invalid-value" in done.stdout
        assert "(keeps its last good configuration)" in done.stdout
        assert "1 to create, 1 to change, 0 to remove, 0 unchanged, 1 refused" in done.stdout

        after = host.tree()
        # The refused quality: its own files untouched, its account and routing entry kept.
        for rel in before:
            if USER_ONDERNEMING in rel:
                assert after[rel] == before[rel], rel
        assert f"{USER_ONDERNEMING}:x:200001:" in (host.root / PASSWD).read_text()
        assert senders(host)["100001"] == entry_before
        # The others were reconciled.
        assert new_key in (host.root / KEYS / USER_SECSOC).read_text()
        assert (host.root / "srv/sftp" / USER_THIRD / "IN").is_dir()
        assert senders(host)["100002"]["username"] == USER_THIRD
        regs = host.snapshot().registrations
        # Applied before and still served as it was: degraded (failed is for never applied).
        assert regs[Q_ONDERNEMING].status == "degraded"
        assert "invalid-value" in (regs[Q_ONDERNEMING].status_reason or "")
        assert (regs[Q_SECSOC].status, regs[Q_THIRD].status) == ("active", "active")
        status = host.run("status")
        assert "degraded" in status.stdout
        assert "serving the last good configuration; the declaration is refused since" in (
            status.stdout
        )
        assert "invalid-value" in status.stdout

        # Fixed: back to active, nothing else moves; plan says the status will change.
        host.edit(EN_ONDERNEMING, "language: xx", "language: nl")
        fixed = host.run("plan")
        assert fixed.returncode == 2, fixed.stdout
        assert "~ change    100001  EXPDEMOONDERNEMING" in fixed.stdout
        assert "status degraded -> active (the files already match)" in fixed.stdout
        assert "No changes" not in fixed.stdout
        assert host.run("apply").returncode == 0
        assert host.snapshot().registrations[Q_ONDERNEMING].status == "active"
        assert host.run("plan").returncode == 0

    def test_changing_the_technical_user_is_refused(self, host: Host) -> None:
        host.apply()
        before = host.tree()
        host.edit(
            EN_ONDERNEMING,
            f"technical_user: {USER_ONDERNEMING}",
            "technical_user: EXPDEMONEWNAME1",
        )
        add_key(host, EN_SECSOC, 8)
        done = host.run("apply")
        no_traceback(done)
        assert done.returncode == 1
        assert "technical-user-immutable" in done.stdout
        # The refusal points at the line that declares the user.
        assert "examples/qualities/0403170701.yaml:11:" in done.stdout
        assert "1 refused" in done.stdout
        after = host.tree()
        for rel in before:
            if USER_ONDERNEMING in rel:
                assert after[rel] == before[rel], rel
        assert not (host.root / "srv/sftp/EXPDEMONEWNAME1").exists()
        reg = host.snapshot().registrations[Q_ONDERNEMING]
        assert (reg.technical_user, reg.status) == (USER_ONDERNEMING, "degraded")
        assert "EXPDEMONEWNAME1" not in host.snapshot().usernames
        assert host.snapshot().registrations[Q_SECSOC].status == "active"

    def test_a_file_that_cannot_say_whose_it_is_removes_nobody_and_fails(self, host: Host) -> None:
        host.apply()
        before = host.tree()
        host.quality(EN_ONDERNEMING).write_text("quality: [\n", "utf-8")
        done = host.run("apply")
        no_traceback(done)
        assert done.returncode == 1, done.stdout
        # The state knows which file declared the quality: that one is held, nothing deferred.
        assert "removals deferred" not in done.stdout
        assert f"refused   100001  {USER_ONDERNEMING}" in done.stdout
        assert "qualities/0403170701.yaml:" in done.stdout
        assert_unchanged(before, host.tree(), inodes=True)
        assert host.snapshot().registrations[Q_ONDERNEMING].status == "degraded"

    def test_plan_json_lists_the_refusal(self, host: Host) -> None:
        host.apply()
        host.edit(EN_ONDERNEMING, "language: nl", "language: xx")
        done = host.run("plan", "--format", "json")
        assert done.returncode == 1
        data = json.loads(done.stdout)
        assert data["counts"]["refused"] == 1
        (refused,) = [c for c in data["channels"] if c["action"] == "refused"]
        assert refused["technical_user"] == USER_ONDERNEMING
        assert refused["sender_number"] == "100001"
        assert refused["reasons"]


# --- stale plans ---------------------------------------------------------------------------


class TestStalePlan:
    def saved(self, host: Host) -> Path:
        out = host.base / "plan.json"
        done = host.run("plan", "--out", str(out))
        assert done.returncode in (0, 2), done.stderr
        Plan.from_json(json.loads(out.read_text()))
        return out

    def test_a_fresh_saved_plan_is_applied(self, host: Host) -> None:
        out = self.saved(host)
        done = host.run("apply", "--plan", str(out))
        assert done.returncode == 0, done.stderr
        assert host.snapshot().registrations[Q_SECSOC].status == "active"

    @pytest.mark.parametrize("what", ["declaration", "managed file", "settings", "state"])
    def test_refused_once_anything_moved_on(self, host: Host, what: str) -> None:
        host.apply()
        add_key(host, EN_SECSOC, 11)
        out = self.saved(host)
        if what == "declaration":
            host.edit(EN_SECSOC, "function: Responsable EDI", "function: Responsable IT")
            expected = "the declarations changed"
        elif what == "managed file":
            with open(host.root / KEYS / USER_ONDERNEMING, "a") as fh:
                fh.write("# hand edit\n")
            expected = "the files on the host changed"
        elif what == "settings":
            host.write_settings(max_auth_tries=4)
            expected = "the host settings changed"
        else:
            with host.store() as store:
                store.set_status(Q_SECSOC, "pending", reason=None, revision=None, now=LATER)
            expected = "the state moved on"
        before = host.tree()
        version = host.snapshot().version

        done = host.run("apply", "--plan", str(out))
        no_traceback(done)
        assert done.returncode == 1
        assert "the saved plan is stale and was not applied" in done.stderr
        assert expected in done.stderr
        assert "make a new plan" in done.stderr
        assert_unchanged(before, host.tree(), inodes=True)
        assert host.snapshot().version == version

    def test_a_plan_for_another_root_is_refused(self, host: Host) -> None:
        out = self.saved(host)
        other = host.base / "other-root"
        done = host.cli(
            "apply", "examples", "--root", str(other), "--settings", "settings.yaml", "--plan",
            str(out),
        )  # fmt: skip
        assert done.returncode == 1
        assert "stale" in done.stderr
        assert not (other / "srv").exists()

    def test_not_a_plan_is_refused_clearly(self, host: Host) -> None:
        bogus = host.base / "bogus.json"
        bogus.write_text('{"format": 99}')
        done = host.run("apply", "--plan", str(bogus))
        no_traceback(done)
        assert done.returncode == 1
        assert "is not a saved plan" in done.stderr
        assert not (host.root / "srv").exists()

    def test_library_raises_plan_error(self, host: Host) -> None:
        saved = host.plan()
        add_key(host, EN_SECSOC, 12)
        with pytest.raises(PlanError, match="the declarations changed"):
            host.apply(saved_plan=saved)


# --- the lock ------------------------------------------------------------------------------

HOLD = """
import sys
from pathlib import Path
from provisioner.apply import host_lock
with host_lock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()
"""


class TestLock:
    def test_a_second_run_says_who_holds_the_lock(self, host: Host) -> None:
        lock = host.settings().lock_file
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(lock)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            done = host.run("apply")
            no_traceback(done)
            assert done.returncode == 1
            assert f"another run holds the lock {lock}: pid {holder.pid} on " in done.stderr
            assert not (host.root / "srv").exists(), "nothing may change without the lock"
            with pytest.raises(LockError, match=f"pid {holder.pid}"):
                host.apply()
        finally:
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(timeout=30)
        # Released (and a dead holder's leftover text does not block either).
        lock.write_text("pid 1 on elsewhere since long ago\n")
        assert host.run("apply").returncode == 0


# --- failures midway -----------------------------------------------------------------------


def prepare_many_changes(host: Host) -> None:
    """After a first apply: a removal with uploaded data, a changed key, a new quality."""
    (host.root / "srv/sftp" / USER_ONDERNEMING / "IN" / "upload").write_bytes(b"data" * 100)
    host.quality(EN_ONDERNEMING).unlink()
    add_key(host, EN_SECSOC, 13)
    add_third_quality(host)


class TestFailureMidway:
    def test_a_failing_reload_restores_every_file(self, host: Host) -> None:
        host.apply()
        prepare_many_changes(host)
        host.write_settings(reload_command=["/bin/false"])
        before = host.tree()
        plan = host.plan(now=LATER)
        assert len(plan.changes) > 10
        assert {c.role for c in plan.changes} >= {"passwd", "authorized-keys", "chroot"}

        done = host.run("apply")
        no_traceback(done)
        assert done.returncode == 1
        assert "reloading sshd failed (/bin/false)" in done.stderr
        assert "the previous files were restored" in done.stderr
        # Every managed file byte-identical, every directory back, the archive undone.
        assert_unchanged(before, host.tree(), inodes=False)
        assert not any(host.settings().archive_dir.glob("*"))

        regs = host.snapshot().registrations
        # Rolled back: the channels applied before serve what they served (degraded, the
        # removed one too: its removal was undone); the new one was never applied (failed).
        expected = {Q_SECSOC: "degraded", Q_THIRD: "failed", Q_ONDERNEMING: "degraded"}
        for en, status in expected.items():
            assert regs[en].status == status, en
            assert "reloading sshd failed" in (regs[en].status_reason or ""), en

        # Once the reload works, the same run goes through.
        host.write_settings(reload_command=["/bin/true"])
        retried = host.run("apply")
        assert retried.returncode == 0, retried.stderr
        assert "sshd reloaded" in retried.stdout
        regs = host.snapshot().registrations
        assert (regs[Q_SECSOC].status, regs[Q_THIRD].status) == ("active", "active")
        assert regs[Q_ONDERNEMING].status == "removed"
        assert host.run("plan").returncode == 0

    def test_rollback_restores_drift_too(self, host: Host) -> None:
        """Modes, a directory in the way (moved aside, then back) and a symlink come back."""
        host.apply()
        (host.root / PASSWD).chmod(0o600)
        keys = host.root / KEYS / USER_SECSOC
        keys.unlink()
        keys.mkdir()
        (keys / "data").write_bytes(b"precious")
        group = host.root / "var/lib/extrausers/group"
        group.unlink()
        group.symlink_to("/etc/group")
        prepare_many_changes(host)
        host.write_settings(reload_command=["/bin/false"])
        before = host.tree()
        done = host.run("apply")
        assert done.returncode == 1
        assert "the previous files were restored" in done.stderr
        assert "restoring also failed" not in done.stderr
        assert_unchanged(before, host.tree(), inodes=False)
        assert (keys / "data").read_bytes() == b"precious"
        assert not host.settings().archive_dir.exists() or not any(
            host.settings().archive_dir.iterdir()
        )

    def test_an_unwritable_directory_midway_restores_every_file(self, host: Host) -> None:
        require_root()
        require(shutil.which("chattr") is not None, "needs chattr (e2fsprogs)")
        host.apply()
        prepare_many_changes(host)
        before = host.tree()
        keys_dir = host.root / KEYS
        probe = subprocess.run(
            ["chattr", "+i", str(keys_dir)], capture_output=True, text=True, check=False
        )
        require(
            probe.returncode == 0,
            f"this file system has no immutable flag: {probe.stderr.strip()}",
        )
        try:
            plan = host.plan(now=LATER)
            keys_at = next(
                i for i, c in enumerate(plan.changes) if c.path.startswith(str(keys_dir))
            )
            assert keys_at > 0, "the failure must come after other files were written"
            with pytest.raises(ApplyError, match="the previous files were restored") as info:
                host.apply(now=LATER)
            assert "Operation not permitted" in str(info.value)
        finally:
            subprocess.run(["chattr", "-i", str(keys_dir)], check=True)
        assert_unchanged(before, host.tree(), inodes=False)
        assert host.snapshot().registrations[Q_SECSOC].status == "degraded"
        host.apply(now=LATER)
        assert host.snapshot().registrations[Q_SECSOC].status == "active"


# --- sshd -t -------------------------------------------------------------------------------


class TestSshdCheck:
    def test_an_invalid_dropin_leaves_the_live_files_untouched(self, host: Host) -> None:
        require_sshd()
        host.apply()
        assert host.settings().sshd_check
        templates = host.base / "templates"
        (templates / "sshd").mkdir(parents=True)
        shipped_dropin = shipped("templates") / "sshd" / "sftp-provisioner.conf.j2"
        (templates / "sshd" / "sftp-provisioner.conf.j2").write_text(
            shipped_dropin.read_text("utf-8") + "NoSuchKeyword yes\n", "utf-8"
        )
        host.write_settings(templates_dir=str(templates))
        prepare_many_changes(host)
        before = host.tree()
        version = host.snapshot().version

        done = host.run("apply")
        no_traceback(done)
        assert done.returncode == 1
        assert "sshd -t refused the rendered configuration, nothing was changed" in done.stderr
        assert "NoSuchKeyword" in done.stderr
        assert_unchanged(before, host.tree(), inodes=True)
        assert host.snapshot().version == version
        assert Q_THIRD not in host.snapshot().registrations


# --- without root --------------------------------------------------------------------------

NOBODY = "65534"


def _as_nobody() -> tuple[str, ...]:
    """setpriv to nobody; keeps CAP_DAC_READ_SEARCH only if the interpreter is otherwise
    unreachable (a virtualenv under /root): it reads and searches, it never writes or chowns."""
    base = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
    probe = subprocess.run([*base, sys.executable, "-c", "import provisioner"], capture_output=True)
    if probe.returncode == 0:
        return base
    caps = ("--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search")
    return (*base, *caps)


def test_a_normal_user_applies_into_a_root_and_reports_owners() -> None:
    require_root()  # to become nobody
    require(shutil.which("setpriv") is not None, "needs setpriv (util-linux)")
    base = Path(tempfile.mkdtemp(prefix="sftp-provisioner-nonroot-"))
    try:
        os.chmod(base, 0o755)
        host = Host(base)
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(base)], check=True)
        prefix = _as_nobody()
        args = ("--root", "root", "--settings", "settings.yaml")

        done = host.cli("apply", "examples", *args, prefix=prefix)
        no_traceback(done)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "note: not running as root: owners and groups are not compared or set" in done.stdout
        assert "owners not set (not running as root):" in done.stdout
        assert f"{host.root}/srv/sftp (0:0)" in done.stdout

        tree = host.tree()
        assert {(e.uid, e.gid) for e in tree.values()} == {(65534, 65534)}
        assert tree[f"srv/sftp/{USER_SECSOC}"].mode == 0o755
        assert tree[f"srv/sftp/{USER_SECSOC}/IN"].mode == 0o2770
        assert tree["var/lib/extrausers/shadow"].mode == 0o640

        again = host.cli("plan", "examples", *args, prefix=prefix)
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)
