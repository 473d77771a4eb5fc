"""A database made by the release before schema 4 opens with today's code, loses nothing, and
keeps every number and name through the next reconcile.

`tests/data/state-v3.db` was written by the schema-3 release's own code (commit d9cb3d7) with
`tests/data/make_state_v3.py`; see that script for what it holds.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    EN_ONDERNEMING,
    EN_SECSOC,
    EN_THIRD,
    NOW,
    Q_ONDERNEMING,
    Q_SECSOC,
    USER_ONDERNEMING,
    USER_SECSOC,
    USER_THIRD,
    Host,
)

from provisioner.quality_id import QualityId
from provisioner.state import SCHEMA_VERSION, StateStore

pytest_plugins = ("pg",)

V3_DB = Path(__file__).parent / "data" / "state-v3.db"
ROUTING = "var/lib/sftp-gateway/routing.json"
# The tables of schema 3 and the columns each had then.
V3_TABLES = (
    "registrations",
    "username_ledger",
    "runs",
    "notifications",
    "channel_keys",
    "host_channels",
    "state_meta",
)
# Keyed by what identifies a row, so the comparison does not depend on row order.
ROW_KEYS = {
    "registrations": ("enterprise_number",),
    "username_ledger": ("technical_user",),
    "runs": ("id",),
    "notifications": ("key",),
    "channel_keys": ("fingerprint",),
    "host_channels": ("host", "enterprise_number"),
    "state_meta": ("id",),
}
IMPORTED, USER_IMPORTED = "0417497106", "Imported0001"
UNREGISTERED, USER_UNREGISTERED = "0878065378", "Recorded0001"


def dump(db: Path) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        out: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
        for table in V3_TABLES:
            rows = [dict(r) for r in con.execute(f"SELECT * FROM {table}")]
            out[table] = {tuple(r[k] for k in ROW_KEYS[table]): r for r in rows}
        return out
    finally:
        con.close()


@pytest.fixture
def v3_copy(tmp_path: Path) -> Path:
    db = tmp_path / "state" / "state.db"
    db.parent.mkdir(mode=0o700)
    shutil.copy(V3_DB, db)
    return db


def test_the_checked_in_database_is_schema_3() -> None:
    con = sqlite3.connect(f"file:{V3_DB}?mode=ro", uri=True)
    try:
        versions = [v for (v,) in con.execute("SELECT version FROM schema_migrations")]
        columns = [c[1] for c in con.execute("PRAGMA table_info(registrations)")]
    finally:
        con.close()
    assert versions == [1, 2, 3]
    assert "quality_type" not in columns


def test_migration_to_v4_loses_no_row_number_or_name(v3_copy: Path) -> None:
    before = dump(v3_copy)
    with StateStore.open(f"sqlite:///{v3_copy}") as store:
        snapshot = store.snapshot()
    after = dump(v3_copy)
    for table in V3_TABLES:
        assert set(after[table]) == set(before[table]), table
        for key, row in before[table].items():
            migrated = after[table][key]
            # Every value of every row is as it was; rows that name a quality now also say
            # its type, unknown yet ('': adopted by the next reconcile).
            assert {c: migrated[c] for c in row} == row, (table, key)
            if "enterprise_number" in row and table != "state_meta":
                assert migrated["quality_type"] == "", (table, key)
    con = sqlite3.connect(v3_copy)
    try:
        versions = [v for (v,) in con.execute("SELECT version FROM schema_migrations")]
    finally:
        con.close()
    assert versions == list(range(1, SCHEMA_VERSION + 1))

    regs = snapshot.registrations
    assert {(q, r.technical_user, r.sender, r.uid, r.status) for q, r in regs.items()} == {
        (QualityId(EN_SECSOC, ""), USER_SECSOC, "100000", 200000, "active"),
        (QualityId(EN_THIRD, ""), USER_THIRD, "100001", 200001, "removed"),
        (QualityId(EN_ONDERNEMING, ""), USER_ONDERNEMING, "100002", 200002, "degraded"),
        (QualityId(IMPORTED, ""), USER_IMPORTED, "101380", 200500, "active"),
    }
    assert all(r.legacy for r in regs.values())
    assert snapshot.usernames[USER_UNREGISTERED] == QualityId(UNREGISTERED, "")
    assert (snapshot.next_sender_number, snapshot.next_uid) == (101381, 200501)


def test_a_reconcile_after_the_migration_keeps_every_number_and_name(
    tmp_path: Path, v3_copy: Path
) -> None:
    host = Host(tmp_path / "host")
    host.write_settings(state_url=f"sqlite:///{v3_copy}")
    with host.store() as store:
        before = store.snapshot()
    result = host.apply()
    assert not result.plan.refused
    after = host.snapshot()
    old = {(q.enterprise_number, r.technical_user, r.sender_number, r.uid) for q, r in
           before.registrations.items()}  # fmt: skip
    new = {(q.enterprise_number, r.technical_user, r.sender_number, r.uid) for q, r in
           after.registrations.items()}  # fmt: skip
    assert new == old
    # The declared qualities took the type their file declares, in every table.
    regs = after.registrations
    assert (regs[Q_SECSOC].sender, regs[Q_SECSOC].status) == ("100000", "active")
    assert (regs[Q_ONDERNEMING].sender, regs[Q_ONDERNEMING].status) == ("100002", "active")
    assert (
        regs[Q_ONDERNEMING].registered_at
        == before.registrations[QualityId(EN_ONDERNEMING, "")].registered_at
    )
    # Not declared: still legacy, removed, numbers and name kept.
    assert regs[QualityId(EN_THIRD, "")].status == "removed"
    assert regs[QualityId(IMPORTED, "")].status == "removed"
    # Every name ever recorded is still recorded for the same enterprise.
    assert {u: q.enterprise_number for u, q in after.usernames.items()} == {
        u: q.enterprise_number for u, q in before.usernames.items()
    }
    assert after.usernames[USER_SECSOC] == Q_SECSOC
    assert after.usernames[USER_ONDERNEMING] == Q_ONDERNEMING
    with host.store() as store:
        served = {(h.host, h.qid) for h in store.host_channels()}
    assert ("sftp-a", Q_SECSOC) in served and ("sftp-b", Q_ONDERNEMING) in served
    assert (host.settings().host_name, Q_SECSOC) in served
    assert all(q.quality_type for q in after.channel_keys.values())
    # The same numbers on the host: the routing table and the accounts.
    routing = json.loads((host.root / ROUTING).read_bytes())["senders"]
    assert routing["100000"]["username"] == USER_SECSOC
    assert routing["100002"]["username"] == USER_ONDERNEMING
    assert routing["100002"]["quality_type"] == "employer_nsso"
    # A second run changes nothing more.
    assert not host.plan(now=NOW).has_changes


@pytest.mark.postgres
def test_the_same_database_on_postgresql_migrates_without_loss(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL alters the tables in place rather than rebuilding them: the schema-3 rows
    of the checked-in database, put into a PostgreSQL database at schema 3 (made by the
    frozen migrations 1-3), come out of migration 4 the same."""
    import sqlalchemy as sa

    from provisioner.state import migrations

    with monkeypatch.context() as m:
        m.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:3])
        m.setattr(migrations, "LATEST_VERSION", 3)
        StateStore.open(postgres_url).close()
    before = dump(V3_DB)
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM state_meta"))
            for table in V3_TABLES:
                rows = list(before[table].values())
                if rows:
                    columns = ", ".join(rows[0])
                    values = ", ".join(f":{c}" for c in rows[0])
                    insert = f"INSERT INTO {table} ({columns}) VALUES ({values})"
                    conn.execute(sa.text(insert), rows)
        with StateStore.open(postgres_url) as store:
            snapshot = store.snapshot()
        with engine.connect() as conn:
            for table in V3_TABLES:
                found = [dict(r._mapping) for r in conn.execute(sa.text(f"SELECT * FROM {table}"))]
                assert len(found) == len(before[table]), table
                for row in found:
                    if "quality_type" in row and table != "state_meta":
                        assert row.pop("quality_type") == "", table
    finally:
        engine.dispose()
    assert {(q, r.sender, r.uid) for q, r in snapshot.registrations.items()} == {
        (QualityId(EN_SECSOC, ""), "100000", 200000),
        (QualityId(EN_THIRD, ""), "100001", 200001),
        (QualityId(EN_ONDERNEMING, ""), "100002", 200002),
        (QualityId(IMPORTED, ""), "101380", 200500),
    }
    assert set(snapshot.usernames) == {user for (user,) in before["username_ledger"]}
    assert set(snapshot.channel_keys) == {fp for (fp,) in before["channel_keys"]}
