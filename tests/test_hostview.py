"""The planner's host view (`provisioner.hostview`): a recorded host gives the plan the real
host gives, and says what the planner read of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import NOW, Host

from provisioner.hostrecord import RECORD_NAME, HostRecord
from provisioner.hostview import RecordedHost, RecordedPath, record_host
from provisioner.plan import canonical_json
from provisioner.reconcile import Reconciliation, compute

ACME_USER = "EXPDEMOONDERNEMING"


def compute_on(host: Host, view: RecordedHost | None, *, use_cache: bool = True) -> Reconciliation:
    with host.store() as store:
        snapshot = store.snapshot()
    return compute(
        host.settings(),
        [host.decls],
        snapshot,
        now=NOW,
        cwd=host.base,
        use_cache=use_cache,
        host=view,
    )


def plan_json(rec: Reconciliation) -> str:
    return canonical_json(rec.plan.to_json())


@pytest.fixture
def applied(recorded_host: Host) -> Host:
    return recorded_host


def test_an_empty_root_plans_the_same_recorded(tmp_path: Path) -> None:
    host = Host(tmp_path)
    settings = host.settings()
    recorded = record_host(settings)
    assert plan_json(compute_on(host, recorded)) == plan_json(compute_on(host, None))
    # Nothing exists yet: the planner asked about paths, and read no content but the record.
    assert recorded.reads == {recorded.shown(HostRecord.location(settings) / RECORD_NAME)}
    assert recorded.shown(settings.keys_dir) in recorded.stats


def test_an_applied_root_plans_the_same_recorded(applied: Host) -> None:
    recorded = record_host(applied.settings())
    real = compute_on(applied, None)
    assert plan_json(compute_on(applied, recorded)) == plan_json(real)
    assert not real.plan.has_changes
    # The record vouches for every channel: none of its files was read again.
    chroot = applied.settings().chroot(ACME_USER)
    assert recorded.read_under(recorded.shown(chroot)) == set()
    assert recorded.read_under(recorded.shown(applied.settings().keys_file(ACME_USER))) == set()
    # Without the record every path is read, and the plan is the same.
    recorded.forget_reads()
    assert plan_json(compute_on(applied, recorded, use_cache=False)) == plan_json(real)
    assert recorded.shown(applied.settings().keys_file(ACME_USER)) in recorded.reads


def test_json_round_trip_and_root_independence(applied: Host, tmp_path: Path) -> None:
    settings = applied.settings()
    recorded = record_host(settings)
    text = recorded.dumps()
    assert str(applied.root) not in text  # every path is written from $ROOT
    data = json.loads(text)
    assert f"$ROOT{str(settings.keys_file(ACME_USER))[len(str(applied.root)) :]}" in data["paths"]
    again = RecordedHost.loads(text, applied.root)
    assert again.dumps() == text
    assert plan_json(compute_on(applied, again)) == plan_json(compute_on(applied, None))


def test_a_missing_key_is_a_missing_path(applied: Host) -> None:
    settings = applied.settings()
    recorded = record_host(settings)
    keys = str(settings.keys_file(ACME_USER))
    del recorded.paths[keys]
    rec = compute_on(applied, recorded)
    created = [c for c in rec.plan.changes if c.path == keys]
    assert created
    assert created[0].before is None


def test_edited_content_is_seen(applied: Host) -> None:
    settings = applied.settings()
    recorded = record_host(settings)
    keys = str(settings.keys_file(ACME_USER))
    old = recorded.paths[keys]
    # Another content and no stamp: the record no longer vouches for the channel.
    recorded.put(keys, RecordedPath("file", old.owner, old.group, old.mode, b"# emptied\n"))
    rec = compute_on(applied, recorded)
    assert [c.path for c in rec.plan.changes] == [keys]
    assert recorded.shown(keys) in recorded.reads


def test_recorded_paths_answer_as_the_file_system_would() -> None:
    root = Path("/srv/case")
    host = RecordedHost.from_json(
        {
            "format": 1,
            "paths": {
                "$ROOT/srv/sftp": {"kind": "dir"},
                "$ROOT/srv/sftp/a/IN": {"kind": "dir", "owner": 1001, "mode": "2770"},
                "$ROOT/srv/sftp/a/IN/x.xml": {"kind": "file", "text": "<x/>\n"},
                "$ROOT/srv/sftp/a/link": {"kind": "symlink", "target": "$ROOT/etc"},
                "$ROOT/srv/sftp/a/fifo": {"kind": "fifo"},
                "$ROOT/srv/sftp/a/bin": {"kind": "file", "base64": "AAE="},
                "$ROOT/srv/sftp/gone": {"kind": "missing"},
            },
        },
        root,
    )
    # A directory only implied by the paths under it does not exist: its parent lists nothing.
    assert host.list_dir(root / "srv/sftp") == []
    host.put("$ROOT/srv/sftp/a", RecordedPath("dir", mode=0o755))
    assert host.list_dir(root / "srv/sftp") == ["a"]
    assert host.list_dir(root / "srv/sftp/a") == ["IN", "bin", "fifo", "link"]
    seen = host.observe(root / "srv/sftp/a/IN")
    assert (seen.kind, seen.owner, seen.group, seen.mode) == ("dir", 1001, 0, 0o2770)
    assert host.observe(root / "srv/sftp/a/fifo").kind == "other"
    assert host.observe(root / "srv/sftp/gone").kind == "missing"
    assert host.observe(root / "nowhere").kind == "missing"
    assert host.readlink(root / "srv/sftp/a/link") == "/srv/case/etc"
    assert host.observe(root / "srv/sftp/a/bin").content == b"\x00\x01"
    assert host.tree_size(root / "srv/sftp/a") == (5 + 2 + len(b"/srv/case/etc"), 4)
    # Only file contents count as reads; a file asked for without its content is a stat.
    host.forget_reads()
    host.observe(root / "srv/sftp/a/IN/x.xml", read=False)
    host.observe(root / "srv/sftp/a/IN")
    assert host.reads == set()
    assert host.stats == {"$ROOT/srv/sftp/a/IN/x.xml", "$ROOT/srv/sftp/a/IN"}
    host.observe(root / "srv/sftp/a/IN/x.xml")
    assert host.read_under("$ROOT/srv/sftp/a") == {"$ROOT/srv/sftp/a/IN/x.xml"}
    assert host.read_under("$ROOT/srv/sftp/ab") == set()


def test_a_damaged_recorded_path_is_named() -> None:
    with pytest.raises(ValueError, match=r"\$ROOT/x"):
        RecordedHost.from_json({"paths": {"$ROOT/x": {"kind": "file", "base64": "%%"}}}, None)
    with pytest.raises(ValueError, match="unknown kind"):
        RecordedHost.from_json({"paths": {"$ROOT/x": {"kind": "door"}}}, None)
