"""`apply` on a temporary --root: first apply, idempotence, drift, unknown files, removal.

Each test builds a host from a copy of `examples/` (conftest.Host), goes through the library
where that reads more clearly and through `python -m provisioner` for exit codes and output.
Owners are only real as root: those checks call `require_root()`, which FAILS under CI=true.
"""

from __future__ import annotations

import hashlib
import json
import os
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
    USER_THIRD,
    Host,
    add_third_quality,
    require_root,
    ssh_key,
)

from provisioner.plan import ChannelAction, PathAction

LATER = NOW + timedelta(hours=1)


def live(host: Host, rel: str) -> str:
    return str(host.root / rel)


KEYS = "etc/ssh/sftp-provisioner/authorized_keys"
PASSWD = "var/lib/extrausers/passwd"
SHADOW = "var/lib/extrausers/shadow"
GROUP = "var/lib/extrausers/group"
ROUTING = "var/lib/sftp-gateway/routing.json"
DROPIN = "etc/ssh/sshd_config.d/00-sftp-provisioner.conf"


def routing(host: Host) -> dict[str, dict[str, object]]:
    senders: dict[str, dict[str, object]] = json.loads((host.root / ROUTING).read_bytes())[
        "senders"
    ]
    return senders


# --- first apply ---------------------------------------------------------------------------


class TestFirstApply:
    def test_state_sender_numbers_dates_statuses_revision(self, host: Host) -> None:
        result = host.apply(revision="0123abcd")
        assert result.plan.counts()["create"] == 2
        assert not result.plan.refused
        regs = host.snapshot().registrations
        # Sender numbers and uids are handed out in identity (enterprise-number) order.
        assert regs[Q_SECSOC].sender == "100000"
        assert regs[Q_ONDERNEMING].sender == "100001"
        assert (regs[Q_SECSOC].uid, regs[Q_ONDERNEMING].uid) == (200000, 200001)
        for en, user in ((Q_SECSOC, USER_SECSOC), (Q_ONDERNEMING, USER_ONDERNEMING)):
            reg = regs[en]
            assert reg.technical_user == user
            assert reg.registered_at == NOW
            assert reg.status == "active"
            assert reg.last_applied_at == NOW
            assert reg.revision == "0123abcd"
        assert host.snapshot().usernames == {
            USER_SECSOC: Q_SECSOC,
            USER_ONDERNEMING: Q_ONDERNEMING,
        }

    def test_sender_numbers_are_six_digits_from_sender_start(self, host: Host) -> None:
        host.write_settings(sender_start=6400)
        host.apply()
        regs = host.snapshot().registrations
        assert (regs[Q_SECSOC].sender, regs[Q_ONDERNEMING].sender) == ("006400", "006401")
        assert set(routing(host)) == {"006400", "006401"}
        assert routing(host)["006400"]["username"] == USER_SECSOC

    def test_tree_modes_and_accounts(self, host: Host) -> None:
        host.apply()
        tree = host.tree()
        for user in (USER_SECSOC, USER_ONDERNEMING):
            assert tree[f"srv/sftp/{user}"].mode == 0o755
            for name in ("IN", "INTEST", "INTEST-S", "OUT", "OUTTEST", "OUTTEST-S"):
                assert tree[f"srv/sftp/{user}/{name}"].mode == 0o2770
            keys = tree[f"{KEYS}/{user}"]
            assert keys.mode == 0o644
            assert keys.content is not None
            lines = [ln for ln in keys.content.decode().splitlines() if not ln.startswith("#")]
            assert lines and all(ln.startswith("restrict ") for ln in lines)
        assert tree[SHADOW].mode == 0o640
        passwd = (host.root / PASSWD).read_text()
        assert f"{USER_SECSOC}:x:200000:2900:" in passwd
        assert passwd.count("/usr/sbin/nologin") == 2
        assert (host.root / SHADOW).read_text().splitlines() == [
            f"{USER_ONDERNEMING}:*:::::::",
            f"{USER_SECSOC}:*:::::::",
        ]
        dropin = (host.root / DROPIN).read_text()
        assert f"ChrootDirectory {host.root}/srv/sftp/%u" in dropin
        assert f"AuthorizedKeysFile {host.root}/{KEYS}/%u" in dropin

    def test_owners_as_root(self, host: Host) -> None:
        require_root()
        result = host.apply()
        assert result.owners_not_set == []
        tree = host.tree()
        for user, uid in ((USER_SECSOC, 200000), (USER_ONDERNEMING, 200001)):
            chroot = tree[f"srv/sftp/{user}"]
            assert (chroot.uid, chroot.gid) == (0, 0)
            for name in ("IN", "OUT"):
                entry = tree[f"srv/sftp/{user}/{name}"]
                assert (entry.uid, entry.gid) == (uid, 0)
            assert (tree[f"{KEYS}/{user}"].uid, tree[f"{KEYS}/{user}"].gid) == (0, 0)
        for rel in (PASSWD, SHADOW, GROUP, ROUTING, DROPIN, "srv/sftp", KEYS):
            assert (tree[rel].uid, tree[rel].gid) == (0, 0), rel

    def test_audit_log_is_json_lines_with_hashes(self, host: Host) -> None:
        result = host.apply(revision="0123abcd")
        entries = host.audit()
        paths = [e for e in entries if "path" in e]
        assert len(paths) == len(result.applied) == len(result.plan.changes) > 0
        for entry in entries:
            assert entry["time"] == NOW.isoformat()
            assert entry["revision"] == "0123abcd"
        for entry in paths:
            assert entry["change"] == "create"
            assert entry["before"] is None
            if os.path.isfile(entry["path"]):
                digest = hashlib.sha256(Path(entry["path"]).read_bytes()).hexdigest()
                assert entry["after"] == digest
        keys_entry = next(e for e in paths if e["path"].endswith(f"{KEYS}/{USER_SECSOC}"))
        # A channel is named by its quality identity (enterprise number and quality type).
        assert (keys_entry["channel"], keys_entry["user"]) == (str(Q_SECSOC), USER_SECSOC)
        created = {e["channel"]: e for e in entries if e["change"] == "channel-create"}
        assert created[str(Q_SECSOC)]["sender"] == "100000"
        assert created[str(Q_ONDERNEMING)]["user"] == USER_ONDERNEMING

    def test_cli_first_apply_then_status(self, host: Host) -> None:
        changes = len(host.plan().changes)
        done = host.run("apply")
        assert done.returncode == 0, done.stderr
        assert f"Applied {changes} change(s)." in done.stdout
        assert "Traceback" not in done.stdout + done.stderr
        status = host.run("status", "--format", "json")
        assert status.returncode == 0, status.stderr
        rows = {r["username"]: r for r in json.loads(status.stdout)["channels"]}
        assert rows[USER_SECSOC]["sender_number"] == "100000"
        assert rows[USER_SECSOC]["status"] == "active"
        assert rows[USER_ONDERNEMING]["registered_at"]
        text = host.run("status")
        assert "100001  EXPDEMOONDERNEMING" in text.stdout
        assert text.stdout.count("active") == 2


# --- idempotence ---------------------------------------------------------------------------


class TestIdempotence:
    def test_second_apply_changes_and_rewrites_nothing(self, host: Host) -> None:
        host.apply(revision="r1")
        lock = host.settings().lock_file
        before = {k: v for k, v in host.tree(bookkeeping=True).items() if host.root / k != lock}
        audit_lines = len(host.audit())
        version = host.snapshot().version

        result = host.apply(now=LATER, revision="r1")

        assert result.applied == []
        assert not result.plan.has_changes
        assert result.plan.counts() == {
            "create": 0,
            "change": 0,
            "remove": 0,
            "unchanged": 2,
            "refused": 0,
        }
        after = {k: v for k, v in host.tree(bookkeeping=True).items() if host.root / k != lock}
        assert sorted(after) == sorted(before)
        managed = {str(p.relative_to(host.root)) for p in host.compute().managed_paths()}
        for rel, entry in before.items():
            assert after[rel].same_metadata(entry), rel
            if entry.kind != "dir" or rel in managed:
                # Same inode and mtime: not rewritten, not even with the same bytes. (The
                # state database's directory is left out: SQLite's WAL files come and go.)
                assert (after[rel].ino, after[rel].mtime_ns) == (entry.ino, entry.mtime_ns), rel
        assert len(host.audit()) == audit_lines
        assert host.snapshot().version == version

    def test_plan_then_exits_0_and_cli_apply_applies_nothing(self, host: Host) -> None:
        assert host.run("apply").returncode == 0
        plan = host.run("plan")
        assert plan.returncode == 0, plan.stdout + plan.stderr
        assert "No changes." in plan.stdout
        again = host.run("apply")
        assert again.returncode == 0
        assert "Applied 0 change(s)." in again.stdout
        assert host.run("plan", "--format", "json").returncode == 0


# --- drift ---------------------------------------------------------------------------------


class TestDrift:
    def test_plan_shows_each_drift_and_apply_repairs_it(self, host: Host) -> None:
        host.apply()
        good = host.tree()
        root = host.root
        # A hand edit, an extra key line, a wrong mode, a deleted upload dir, a symlink.
        with open(root / KEYS / USER_ONDERNEMING, "a") as fh:
            fh.write("# edited by hand\n")
        intruder = ssh_key(9, "intruder@elsewhere")
        with open(root / KEYS / USER_SECSOC, "a") as fh:
            fh.write(f"{intruder}\n")
        os.chmod(root / ROUTING, 0o666)
        os.chmod(root / "srv/sftp" / USER_SECSOC, 0o775)
        os.rmdir(root / "srv/sftp" / USER_ONDERNEMING / "IN")
        outside = host.base / "outside.txt"
        outside.write_text("not managed\n")
        os.unlink(root / GROUP)
        os.symlink(outside, root / GROUP)

        plan = host.plan(now=LATER)
        by_path = {c.path: c for c in plan.changes}
        edited = by_path[live(host, f"{KEYS}/{USER_ONDERNEMING}")]
        assert edited.action is PathAction.UPDATE
        assert "-# edited by hand" in edited.diff
        extra = by_path[live(host, f"{KEYS}/{USER_SECSOC}")]
        assert extra.action is PathAction.UPDATE
        assert f"-{intruder}" in extra.diff
        assert by_path[live(host, ROUTING)].action is PathAction.METADATA
        assert by_path[live(host, ROUTING)].details == ("mode 0666 -> 0644",)
        assert by_path[live(host, f"srv/sftp/{USER_SECSOC}")].details == ("mode 0775 -> 0755",)
        assert by_path[live(host, f"srv/sftp/{USER_ONDERNEMING}/IN")].action is PathAction.CREATE
        assert by_path[live(host, GROUP)].action is PathAction.REPLACE
        assert len(plan.changes) == 6
        channels = {c.enterprise_number: c.action for c in plan.channels}
        assert channels == {EN_SECSOC: ChannelAction.CHANGE, EN_ONDERNEMING: ChannelAction.CHANGE}

        shown = host.run("plan")
        assert shown.returncode == 2
        for rel in (f"{KEYS}/{USER_ONDERNEMING}", ROUTING, f"srv/sftp/{USER_ONDERNEMING}/IN"):
            assert live(host, rel) in shown.stdout
        assert "mode 0666 -> 0644" in shown.stdout
        assert f"-{intruder}" in shown.stdout

        applied = host.run("apply")
        assert applied.returncode == 0, applied.stderr
        repaired = host.tree()
        assert sorted(repaired) == sorted(good)
        for rel, entry in good.items():
            assert repaired[rel].same_metadata(entry), rel
        assert outside.read_text() == "not managed\n", "a symlink's target must not be written"
        assert host.run("plan").returncode == 0

    def test_a_directory_in_the_way_of_a_managed_file_is_archived_not_deleted(
        self, host: Host
    ) -> None:
        host.apply()
        keys = host.root / KEYS / USER_SECSOC
        keys.unlink()
        keys.mkdir()
        (keys / "someones-data").write_bytes(b"precious")
        plan = host.plan(now=LATER)
        (change,) = plan.changes
        assert (change.path, change.action) == (str(keys), PathAction.REPLACE)
        assert change.details == ("a dir is there, a file is wanted",)
        host.apply(now=LATER)
        assert keys.is_file()
        archive = host.settings().archive_dir
        (displaced,) = list(archive.iterdir())
        assert displaced.name.startswith(f"{USER_SECSOC}-displaced-")
        assert (displaced / "someones-data").read_bytes() == b"precious"

    def test_wrong_owner_is_shown_and_repaired(self, host: Host) -> None:
        require_root()
        host.apply()
        os.chown(host.root / PASSWD, 1234, 1234)
        os.chown(host.root / "srv/sftp" / USER_SECSOC / "OUT", 0, 0)
        plan = host.plan(now=LATER)
        details = {c.path: c.details for c in plan.changes}
        assert details[live(host, PASSWD)] == ("owner 1234:1234 -> 0:0",)
        assert details[live(host, f"srv/sftp/{USER_SECSOC}/OUT")] == ("owner 0:0 -> 200000:0",)
        shown = host.run("plan")
        assert shown.returncode == 2
        assert "owner 1234:1234 -> 0:0" in shown.stdout
        assert host.run("apply").returncode == 0
        tree = host.tree()
        assert (tree[PASSWD].uid, tree[PASSWD].gid) == (0, 0)
        assert tree[f"srv/sftp/{USER_SECSOC}/OUT"].uid == 200000
        assert host.run("plan").returncode == 0


# --- unknown files -------------------------------------------------------------------------


class TestUnknownFiles:
    def test_reported_by_plan_never_deleted_by_apply(self, host: Host) -> None:
        host.apply()
        root = host.root
        strays = {
            root / KEYS / "stranger": b"ssh-ed25519 AAAA stranger\n",
            root / "var/lib/extrausers/passwd.bak": b"old\n",
            root / "srv/sftp" / USER_SECSOC / "notes.txt": b"notes\n",
        }
        for path, data in strays.items():
            path.write_bytes(data)
        (root / "srv/sftp/olduser/IN").mkdir(parents=True)
        (root / "srv/sftp/olduser/IN/data").write_bytes(b"kept\n")
        # Uploads are the sender's data, not unknown files.
        (root / "srv/sftp" / USER_SECSOC / "IN" / "FI.DMFA.100000.20261129.00001.T").write_bytes(
            b"x"
        )

        plan = host.plan(now=LATER)
        expected = sorted([*(str(p) for p in strays), str(root / "srv/sftp/olduser")])
        assert plan.unknown == expected
        assert not plan.has_changes

        shown = host.run("plan")
        assert shown.returncode == 0, shown.stdout
        assert "Unknown files in managed directories (reported, never deleted):" in shown.stdout
        for shown_path in expected:
            assert f"  ? {shown_path}" in shown.stdout

        assert host.run("apply").returncode == 0
        for path, data in strays.items():
            assert path.read_bytes() == data
        assert (root / "srv/sftp/olduser/IN/data").read_bytes() == b"kept\n"
        assert host.plan(now=LATER).unknown == expected


# --- removal -------------------------------------------------------------------------------


class TestRemoval:
    def test_removal_archives_the_chroot_and_keeps_the_ledger(self, host: Host) -> None:
        host.apply()
        root = host.root
        chroot = root / "srv/sftp" / USER_ONDERNEMING
        upload = chroot / "IN" / "FI.DMFA.100001.20261129.00001.R"
        upload.write_bytes(b"A" * 1000)
        (chroot / "OUT" / "FO.ACRF.999999.20261129.00001.R").write_bytes(b"B" * 234)
        declaration = host.quality(EN_ONDERNEMING).read_bytes()
        host.quality(EN_ONDERNEMING).unlink()

        plan = host.plan(now=LATER)
        assert {c.enterprise_number: c.action for c in plan.channels} == {
            EN_ONDERNEMING: ChannelAction.REMOVE,
            EN_SECSOC: ChannelAction.UNCHANGED,
        }
        by_path = {c.path: c for c in plan.changes}
        assert by_path[str(chroot)].action is PathAction.ARCHIVE
        assert by_path[str(chroot)].details == ("2 files, 1234 bytes kept",)
        assert by_path[live(host, f"{KEYS}/{USER_ONDERNEMING}")].action is PathAction.DELETE
        assert by_path[live(host, PASSWD)].action is PathAction.UPDATE

        shown = host.run("plan")
        assert shown.returncode == 2
        assert "remove" in shown.stdout and "2 files, 1234 bytes kept" in shown.stdout

        done = host.run("apply")
        assert done.returncode == 0, done.stderr
        assert "archived " + str(chroot) in done.stdout
        assert "(2 files, 1234 bytes kept)" in done.stdout

        # Account and keys gone; nothing of the sender's data lost.
        assert not chroot.exists()
        assert not (root / KEYS / USER_ONDERNEMING).exists()
        for rel in (PASSWD, SHADOW, GROUP):
            assert USER_ONDERNEMING not in (root / rel).read_text(), rel
        assert "100001" not in routing(host)
        archive = host.settings().archive_dir
        archived = [p for p in archive.iterdir() if p.name.startswith(USER_ONDERNEMING + "-")]
        assert len(archived) == 1
        assert (archived[0] / "IN" / upload.name).read_bytes() == b"A" * 1000
        assert os.stat(archive).st_mode & 0o777 == 0o700

        # The ledger keeps the number and the name.
        snapshot = host.snapshot()
        reg = snapshot.registrations[Q_ONDERNEMING]
        assert (reg.status, reg.sender, reg.uid) == ("removed", "100001", 200001)
        assert snapshot.usernames[USER_ONDERNEMING] == Q_ONDERNEMING
        assert any(e["change"] == "channel-remove" for e in host.audit())
        assert any(e["change"] == "archive" for e in host.audit())
        assert host.run("plan").returncode == 0

        # Back later: the SAME sender number and uid, a fresh chroot, the archive untouched.
        host.quality(EN_ONDERNEMING).write_bytes(declaration)
        back = host.apply(now=LATER + timedelta(days=30))
        assert {c.enterprise_number: c.action for c in back.plan.channels}[
            EN_ONDERNEMING
        ] is ChannelAction.CREATE
        reg = host.snapshot().registrations[Q_ONDERNEMING]
        assert (reg.status, reg.sender, reg.uid) == ("active", "100001", 200001)
        assert f"{USER_ONDERNEMING}:x:200001:" in (root / PASSWD).read_text()
        assert routing(host)["100001"]["username"] == USER_ONDERNEMING
        assert chroot.is_dir() and list((chroot / "IN").iterdir()) == []
        assert (archived[0] / "IN" / upload.name).read_bytes() == b"A" * 1000

    def test_removed_username_is_never_given_to_another_quality(self, host: Host) -> None:
        host.apply()
        host.quality(EN_ONDERNEMING).unlink()
        host.apply(now=LATER)
        add_third_quality(host)
        host.edit(EN_THIRD, f"technical_user: {USER_THIRD}", f"technical_user: {USER_ONDERNEMING}")
        result = host.apply(now=LATER + timedelta(hours=1))
        (refused,) = result.plan.refused
        assert refused.enterprise_number == EN_THIRD
        assert "technical-user-taken" in refused.reasons[0]
        assert Q_THIRD not in host.snapshot().registrations

    def test_second_removal_does_not_nest_into_the_first_archive(self, host: Host) -> None:
        """Removed, back, removed again at the same second: two archives side by side."""
        host.apply()
        declaration = host.quality(EN_ONDERNEMING).read_bytes()
        chroot = host.root / "srv/sftp" / USER_ONDERNEMING
        (chroot / "IN" / "first").write_bytes(b"1")
        host.quality(EN_ONDERNEMING).unlink()
        host.apply(now=LATER)
        host.quality(EN_ONDERNEMING).write_bytes(declaration)
        host.apply(now=LATER)
        (chroot / "IN" / "second").write_bytes(b"2")
        host.quality(EN_ONDERNEMING).unlink()
        host.apply(now=LATER)
        archive = host.settings().archive_dir
        found = sorted(p.relative_to(archive).as_posix() for p in archive.rglob("IN/*"))
        assert len(found) == 2, found
        assert all(p.count("/") == 2 for p in found), f"an archive nested in another: {found}"


# --- the library and CLI agree on a fresh host --------------------------------------------


def test_plan_writes_nothing_managed(host: Host) -> None:
    done = host.run("plan")
    assert done.returncode == 2
    managed = [p for p in host.compute().managed_paths() if p.exists()]
    assert managed == []


def test_examples_dir_is_untouched_by_tests(host: Host) -> None:
    """The copy is what tests edit; the repository's examples stay as they are."""
    from conftest import EXAMPLES

    for path in EXAMPLES.rglob("*"):
        if path.is_file():
            assert (host.decls / path.relative_to(EXAMPLES)).read_bytes() == path.read_bytes()


@pytest.mark.parametrize("fmt", ["json", "markdown"])
def test_apply_reports_in_other_formats(host: Host, fmt: str) -> None:
    done = host.run("apply", "--format", fmt)
    assert done.returncode == 0, done.stderr
    if fmt == "json":
        assert json.loads(done.stdout)["counts"]["create"] == 2
    else:
        assert done.stdout.startswith("### sftp-provisioner plan: 2 to create")


def test_a_key_mapping_renders_from_and_expiry_time(host: Host) -> None:
    line = ssh_key(31, "limited@test")
    text = host.quality(EN_SECSOC).read_text("utf-8")
    marker = "      ssh_keys:\n"
    mapping = (
        f"        - key: {line}\n"
        f'          from: ["192.0.2.0/24", "2001:db8::/32"]\n'
        f"          expires: 2027-12-31\n"
    )
    host.quality(EN_SECSOC).write_text(text.replace(marker, marker + mapping, 1), "utf-8")
    result = host.apply()
    assert not result.plan.has_refusals, result.plan.refused
    keys = (host.root / KEYS / USER_SECSOC).read_text()
    # A date expires at the end of that day in Brussels (23:59 CET), told to sshd in UTC.
    assert (
        f'restrict,from="192.0.2.0/24,2001:db8::/32",expiry-time="202712312259Z" {line}\n' in keys
    )
    assert keys.count("restrict") >= 2
