"""The record of the last apply (`provisioner.hostrecord`): plans made from it are the plans
made by reading everything.

Within two seconds of an apply every file is "racy" and read in full anyway, so these tests
shrink that window to nothing (and wait out the filesystem's timestamp granularity where a
test edits a file in place); otherwise they would not exercise the record at all.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Host

from provisioner import hostrecord
from provisioner.quality_id import QualityId
from provisioner.reconcile import Reconciliation

ACME = "0403170701"  # the employer of the examples
ACME_USER = "EXPDEMOONDERNEMING"
ACME_Q = QualityId(ACME, "employer_nsso")  # its identity: channels are keyed on it


@pytest.fixture
def host(recorded_host: Host) -> Host:
    return recorded_host


def same_plan(a: Reconciliation, b: Reconciliation) -> None:
    assert a.plan.fingerprints == b.plan.fingerprints
    assert a.plan.changes == b.plan.changes
    assert a.plan.unknown == b.plan.unknown
    assert a.plan.channels == b.plan.channels


def both(host: Host) -> Reconciliation:
    """The plan from the record, checked against the plan made by reading everything."""
    fast = host.compute()
    slow = host.compute(use_cache=False)
    same_plan(fast, slow)
    return fast


def test_after_an_apply_nothing_is_rendered_or_read(host: Host) -> None:
    rec = both(host)
    assert not rec.plan.has_changes
    assert set(rec.unchanged) == {c.qid for c in rec.accepted}
    assert rec.channel_nodes == {}
    # Every managed path is still accounted for.
    paths = {str(p) for p in rec.managed_paths()}
    assert str(host.settings().keys_file(ACME_USER)) in paths
    assert str(host.settings().chroot(ACME_USER) / "OUTTEST-S") in paths


def keys_file(host: Host) -> Path:
    return host.settings().keys_file(ACME_USER)


def chroot(host: Host) -> Path:
    return host.settings().chroot(ACME_USER)


def edit_same_size(host: Host) -> None:
    path = keys_file(host)
    data = bytearray(path.read_bytes())
    at = data.index(b"ssh-ed25519") + 30  # a byte inside a key: same size, other content
    data[at] = ord("A") if data[at] != ord("A") else ord("B")
    with open(path, "r+b") as fh:  # in place: same inode
        fh.write(data)


def append_key_line(host: Host) -> None:
    with keys_file(host).open("a") as fh:
        fh.write("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3R0 x\n")


def replace_by_copy(host: Host) -> None:
    path = keys_file(host)
    tmp = path.with_name("elsewhere")
    shutil.copy2(path, tmp)
    os.replace(tmp, path)  # same content, another inode


def symlink_instead(host: Host) -> None:
    path = keys_file(host)
    path.unlink()
    path.symlink_to("/etc/passwd")


def mode_of_in(host: Host) -> None:
    (chroot(host) / "IN").chmod(0o777)


def mode_of_keys(host: Host) -> None:
    keys_file(host).chmod(0o666)


def remove_out(host: Host) -> None:
    (chroot(host) / "OUT").rmdir()


def stranger_in_chroot(host: Host) -> None:
    (chroot(host) / "stranger").write_text("who put this here?\n")


def file_instead_of_dir(host: Host) -> None:
    (chroot(host) / "OUTTEST").rmdir()
    (chroot(host) / "OUTTEST").write_text("not a directory\n")


def upload(host: Host) -> None:
    # Uploads move a directory's mtime: that is no drift.
    (chroot(host) / "IN" / "FI.DMFA.100001.20261129.0001.R").write_bytes(b"data")


DRIFT: dict[str, Callable[[Host], None]] = {
    "same-size edit in place": edit_same_size,
    "extra key line": append_key_line,
    "same bytes, new inode": replace_by_copy,
    "symlink instead of the file": symlink_instead,
    "mode of IN": mode_of_in,
    "mode of authorized_keys": mode_of_keys,
    "OUT removed": remove_out,
    "unknown file in the chroot": stranger_in_chroot,
    "file where a directory belongs": file_instead_of_dir,
    "an upload": upload,
}


@pytest.mark.parametrize("name", list(DRIFT))
def test_drift_is_seen_as_without_the_record(host: Host, name: str) -> None:
    DRIFT[name](host)
    rec = both(host)
    if name in ("an upload", "same bytes, new inode"):
        # Nothing to repair; a new inode only makes this run read the file again.
        assert not rec.plan.has_changes
        assert rec.plan.unknown == []
        assert (ACME_Q in rec.channel_nodes) == (name == "same bytes, new inode")
        return
    if name == "unknown file in the chroot":
        assert rec.plan.unknown == [str(chroot(host) / "stranger")]
        assert not rec.plan.has_changes
        return
    assert rec.plan.has_changes
    assert {c.channel for c in rec.plan.changes} == {str(ACME_Q)}
    # Repaired by apply, and then the record holds again.
    host.apply()
    time.sleep(0.05)
    after = both(host)
    assert not after.plan.has_changes
    assert ACME_Q in after.unchanged


@pytest.mark.usefixtures("needs_root")  # giving a file away needs root
def test_an_owner_change_is_seen(host: Host) -> None:
    os.chown(chroot(host) / "OUT", 4242, 4242)
    os.lchown(keys_file(host), 4242, 0)
    rec = both(host)
    assert {c.path for c in rec.plan.changes} == {
        str(chroot(host) / "OUT"),
        str(keys_file(host)),
    }


def new_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def test_a_changed_declaration_renders_that_channel_only(host: Host) -> None:
    host.edit(ACME, "      ssh_keys:\n", f"      ssh_keys:\n        - {new_key()} new@example\n")
    rec = host.compute()
    assert set(rec.channel_nodes) == {ACME_Q}
    assert ACME_Q not in rec.unchanged
    # A new key changes neither the accounts nor the routing table: neither is rendered.
    s = host.settings()
    for path in (s.extrausers_dir / "passwd", s.routing_table):
        assert rec.tree.nodes[path].content is None
    same_plan(rec, host.compute(use_cache=False))


def record_file(host: Host) -> Path:
    return host.settings().cache_dir / hostrecord.RECORD_NAME


@pytest.mark.parametrize(
    "damage",
    ["garbage", "truncated", "empty", "wrong types", "other context", "entries of other shape"],
)
def test_a_damaged_record_only_makes_the_plan_slower(host: Host, damage: str) -> None:
    path = record_file(host)
    text = path.read_text()
    header, *lines = text.splitlines()
    if damage == "garbage":
        text = "\x00\xff not a record"
    elif damage == "truncated":
        text = text[: len(text) // 2]
    elif damage == "empty":
        text = ""
    elif damage == "wrong types":
        text = header + "\n" + "\n".join(f"{ln.split(chr(9))[0]}\t[1,2,3]" for ln in lines)
    elif damage == "other context":
        text = text.replace(json.loads(header)["context"], "0" * 64)
    else:
        damaged = []
        for line in lines:
            en, _, value = line.partition("\t")
            data = json.loads(value)
            data[3] = [[1, 2]]  # files
            data[4] = [["IN"]]  # dirs
            damaged.append(f"{en}\t{json.dumps(data)}")
        text = header + "\n" + "\n".join(damaged)
    path.write_text(text)
    keys_file(host).write_text("tampered\n")  # drift the record must not hide
    rec = both(host)
    assert str(keys_file(host)) in {c.path for c in rec.plan.changes}


def test_a_record_others_may_write_is_not_used(host: Host) -> None:
    path = record_file(host)
    assert host.compute().unchanged
    path.chmod(0o666)
    assert host.compute().unchanged == {}
    path.chmod(0o600)
    host.settings().cache_dir.chmod(0o777)
    assert host.compute().unchanged == {}


def test_a_symlinked_record_is_not_followed(host: Host) -> None:
    path = record_file(host)
    elsewhere = path.with_name("elsewhere")
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    assert host.compute().unchanged == {}


def test_new_settings_or_templates_render_everything_again(host: Host, tmp_path: Path) -> None:
    assert host.compute().unchanged
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "authorized_keys.j2").write_text(
        (Path(__file__).resolve().parents[1] / "templates" / "authorized_keys.j2")
        .read_text()
        .replace("restrict", "restrict,no-touch-required"),
    )
    host.write_settings(templates_dir=str(templates))
    rec = both(host)
    assert rec.unchanged == {}
    assert any(c.role == "authorized-keys" for c in rec.plan.changes)


def test_plan_leaves_the_record_alone_and_a_quiet_apply_too(host: Host) -> None:
    path = record_file(host)
    host.apply()  # stamps everything that was racy the first time
    before = path.stat()
    host.compute()
    host.apply()
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.parametrize("name", ["passwd", "shadow", "routing.json"])
def test_host_wide_files_are_checked_by_content(host: Host, name: str) -> None:
    s = host.settings()
    path = s.routing_table if name == "routing.json" else s.extrausers_dir / name
    assert host.compute().tree.nodes[path].content is None  # not rendered: known
    path.write_bytes(path.read_bytes().replace(b"EXPDEMOONDERNEMING", b"EXPDEMOONDERNEMINX"))
    rec = both(host)
    assert [c.path for c in rec.plan.changes] == [str(path)]
    assert "EXPDEMOONDERNEMINX" in rec.plan.changes[0].diff


def test_a_renamed_quality_renders_the_routing_table(host: Host) -> None:
    host.edit(ACME, "name: ONDERNEMING", "name: ONDERNEMING NV")
    rec = both(host)
    assert {c.role for c in rec.plan.changes} == {"routing"}
    assert "ONDERNEMING NV" in next(c.diff for c in rec.plan.changes if c.role == "routing")
