"""Names already sent (anomaly 133), decided in the state database.

An accepted set claims every one of its file names in ``intake_names`` (schema v5) in one
transaction, under the primary key: of two hosts sharing the database that accept a set with
the same name, exactly one commit succeeds. A claim is keyed by the set's id, so a run that
finishes a set after a crash finds its own claim and goes on. Refused sets claim nothing: a
sender may correct a set and send it again under the same name.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from provisioner.state._db import transaction
from provisioner.state.errors import StateConflict
from provisioner.state.schema import intake_names
from provisioner.state.store import open_engine

_CHUNK = 500


def open_state(url: str) -> Engine:
    """The state database, migrated (the gate may be the first to open a fresh one)."""
    return open_engine(url)


def _taken(engine: Engine, names: Sequence[str], set_id: str) -> list[str]:
    with transaction(engine, write=False) as conn:
        taken: list[str] = []
        for i in range(0, len(names), _CHUNK):
            rows = conn.execute(
                sa.select(intake_names.c.name, intake_names.c.set_id).where(
                    intake_names.c.name.in_(list(names[i : i + _CHUNK]))
                )
            )
            taken += [name for name, owner in rows if owner != set_id]
        return sorted(taken)


def claim(
    engine: Engine,
    *,
    set_id: str,
    sender: str,
    names: Sequence[str],
    host: str,
    now: datetime,
) -> list[str]:
    """Claim `names` for `set_id`; returns the names another set already holds (then nothing
    is claimed). Idempotent for the same set."""
    for _attempt in range(3):
        try:
            with transaction(engine, write=True) as conn:
                existing: dict[str, str] = {}
                for i in range(0, len(names), _CHUNK):
                    rows = conn.execute(
                        sa.select(intake_names.c.name, intake_names.c.set_id).where(
                            intake_names.c.name.in_(list(names[i : i + _CHUNK]))
                        )
                    )
                    existing.update((str(n), str(o)) for n, o in rows)
                taken = sorted(n for n, owner in existing.items() if owner != set_id)
                if taken:
                    return taken
                missing = [n for n in names if n not in existing]
                if missing:
                    conn.execute(
                        intake_names.insert(),
                        [
                            {
                                "name": n,
                                "sender_number": sender,
                                "set_id": set_id,
                                "host": host,
                                "claimed_at": now,
                            }
                            for n in missing
                        ],
                    )
                return []
        except StateConflict:
            # Another host inserted one of the names between our read and our insert
            # (PostgreSQL); read again and report it as taken.
            taken = _taken(engine, names, set_id)
            if taken:
                return taken
    raise StateConflict("could not claim the names of set " + set_id)


def claimed_by(engine: Engine, set_id: str) -> list[str]:
    with transaction(engine, write=False) as conn:
        rows = conn.execute(sa.select(intake_names.c.name).where(intake_names.c.set_id == set_id))
        return sorted(r[0] for r in rows)


def release(engine: Engine, set_id: str) -> None:
    """Drop the claims of a set that ends refused (decided again after a crash, say), so
    that the sender's corrected set may use the names."""
    with transaction(engine, write=True) as conn:
        conn.execute(intake_names.delete().where(intake_names.c.set_id == set_id))
