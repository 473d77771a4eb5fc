"""Write tests/data/state-v3.db with the code of the release before schema 4 (d9cb3d7).

Run from the repository root, with that release's code first on the path:

    git worktree add /tmp/v3src d9cb3d7
    PYTHONPATH=/tmp/v3src .venv/bin/python tests/data/make_state_v3.py tests/data/state-v3.db
    git worktree remove /tmp/v3src

The database holds what a schema-3 host accumulates: registrations active, degraded,
removed and imported, the username ledger (one name recorded for a quality that never
registered), channel keys, runs of two hosts, the channels each host serves, the declaring
files and a sent notification. tests/test_state_migration.py opens it with today's code.
"""

from __future__ import annotations

import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from provisioner.state import Registration, RunRecord, StateStore, allocate
from provisioner.state.migrations import LATEST_VERSION

SECSOC, USER_SECSOC = "0200065765", "secsocexemple01"
ONDERNEMING, USER_ONDERNEMING = "0403170701", "EXPDEMOONDERNEMING"
THIRD, USER_THIRD = "0202239951", "thirdquality01"
IMPORTED, USER_IMPORTED = "0417497106", "Imported0001"
UNREGISTERED, USER_UNREGISTERED = "0878065378", "Recorded0001"
T0 = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)


def main(target: Path) -> None:
    if LATEST_VERSION != 3:
        raise SystemExit(f"run with the schema-3 release's code (this is schema {LATEST_VERSION})")
    if target.exists():
        target.unlink()
    url = f"sqlite:///{target.resolve()}"
    with StateStore.open(url) as store:
        first = {SECSOC: USER_SECSOC, ONDERNEMING: USER_ONDERNEMING, THIRD: USER_THIRD}
        store.commit(allocate(store.snapshot(), first, now=T0), revision="a" * 40, now=T0)
        for en in first:
            store.set_status(en, "active", reason=None, revision="a" * 40, now=T0)
        t1 = T0 + timedelta(days=1)
        # THIRD leaves: removed, its number and name kept forever.
        second = {SECSOC: USER_SECSOC, ONDERNEMING: USER_ONDERNEMING}
        store.commit(allocate(store.snapshot(), second, now=t1), revision="b" * 40, now=t1)
        store.set_status(THIRD, "removed", reason=None, revision="b" * 40, now=t1)
        # ONDERNEMING's file is refused: it serves its last good configuration.
        t2 = t1 + timedelta(days=1)
        store.set_status(
            ONDERNEMING, "degraded", reason="qualities/x.yaml:3:1: invalid", revision=None, now=t2
        )
        store.import_registration(
            Registration(IMPORTED, USER_IMPORTED, 101380, 200500, T0, "active", T0)
        )
        store.record_declared(
            {
                SECSOC: ("qualities/0200065765.yaml", "1" * 40),
                ONDERNEMING: ("qualities/0403170701.yaml", "2" * 40),
            }
        )
        store.record_channel_keys(
            {SECSOC: ["SHA256:secsoc-key"], ONDERNEMING: ["SHA256:onderneming-key"]}, [], now=t1
        )
        for host in ("sftp-a", "sftp-b"):
            store.record_host_channels(host, {SECSOC: "b" * 40, ONDERNEMING: "a" * 40}, now=t1)
            store.record_run(
                RunRecord(t2, t2 + timedelta(seconds=3), "b" * 40, "degraded", {"n": 2}, host=host)
            )
        store.record_run(RunRecord(T0, T0 + timedelta(seconds=9), "a" * 40, "ok", {"n": 3}))
        store.mark_notification(f"channel-active:{SECSOC}:20261001T080000Z", T0)
    # A name recorded for a quality that has no registration here (another channel of it).
    db = sqlite3.connect(target, isolation_level=None)
    try:
        db.execute(
            "INSERT INTO username_ledger (technical_user, enterprise_number, recorded_at) "
            "VALUES (?, ?, ?)",
            (USER_UNREGISTERED, UNREGISTERED, "2026-10-01T08:00:00.000000+00:00"),
        )
        # One small self-contained file to check in: no -wal or -shm beside it.
        db.execute("PRAGMA journal_mode = DELETE")
        db.execute("VACUUM")
    finally:
        db.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
