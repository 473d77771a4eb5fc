"""The state store: what the reconciler must remember and Git cannot hold.

Sender numbers, uids and the technical-user ledger are handed out once and kept forever; the
store persists them (SQLite for one host, PostgreSQL when several hosts share the state) and
makes :meth:`StateStore.commit` the only way numbers are handed out, under optimistic
concurrency: an allocation computed from a snapshot is written only if nothing was committed
since that snapshot.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import schema as t
from ._db import create_engine, redact_url, transaction
from .errors import StaleState, StateConflict, StateUnavailable, UnknownRegistration
from .migrations import migrate
from .model import (
    Allocation,
    ChannelStatus,
    HostChannel,
    JSONValue,
    Registration,
    RunRecord,
    StateSnapshot,
    ensure_utc,
)

_REGISTRATION_COLUMNS = (
    "enterprise_number",
    "technical_user",
    "sender_number",
    "uid",
    "registered_at",
    "status",
    "status_since",
    "status_reason",
    "revision",
    "last_applied_at",
    "declared_path",
    "declared_blob",
)

# Rows per "IN (...)" list: far below the bound-parameter limits of SQLite and PostgreSQL.
_IN_CHUNK = 500

# Statuses after which the server configuration is known to match the registration; the
# apply step's timestamp is recorded for them only.
_APPLIED_STATUSES: frozenset[str] = frozenset({"active", "removed"})


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """One quality's new channel status, for :meth:`StateStore.set_statuses`."""

    enterprise_number: str
    status: ChannelStatus
    reason: str | None = None
    revision: str | None = None


def _row_to_registration(row: sa.Row[Any]) -> Registration:
    values = row._mapping
    return Registration(**{name: values[name] for name in _REGISTRATION_COLUMNS})


def _registration_values(reg: Registration) -> dict[str, object]:
    return {name: getattr(reg, name) for name in _REGISTRATION_COLUMNS}


# One batched UPDATE of a registration's status fields, keyed by "key": what set_statuses
# computes and what restore_statuses puts back are the same five columns.
_STATUS_UPDATE = (
    t.registrations.update()
    .where(t.registrations.c.enterprise_number == sa.bindparam("key"))
    .values(
        status=sa.bindparam("status"),
        status_since=sa.bindparam("status_since"),
        status_reason=sa.bindparam("status_reason"),
        revision=sa.bindparam("revision"),
        last_applied_at=sa.bindparam("last_applied_at"),
    )
)


class StateStore:
    """Persistent state over SQLAlchemy Core. Thread-safe; one instance per process is enough."""

    def __init__(self, engine: Engine) -> None:
        """Wrap an engine whose database is already migrated; use :meth:`open` instead."""
        self._engine = engine

    @classmethod
    def open(cls, url: str, *, create: bool = True) -> StateStore:
        """Open (creating and migrating if needed) the state database at ``url``.

        ``sqlite:////absolute/path.db`` creates a missing parent directory with mode 0700 and
        the file with mode 0600 (with ``create=False``, a missing file is refused instead);
        ``postgresql+psycopg://user:password@host/db`` needs the database to exist. Raises
        :class:`StateUnavailable` for a bad URL or an unreachable database and
        :class:`StateSchemaTooNew` for a database migrated by a newer release.
        """
        engine = create_engine(url, create=create)
        try:
            migrate(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @property
    def url(self) -> str:
        """The database URL with the password hidden."""
        return redact_url(self._engine.url)

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- registrations ---------------------------------------------------------------------

    def snapshot(self) -> StateSnapshot:
        """Registrations, ledger and counters, read in one consistent transaction."""
        with transaction(self._engine, write=False) as conn:
            return self._read_snapshot(conn)

    def version(self) -> int:
        """The state's version: a snapshot of that version is still the state."""
        with transaction(self._engine, write=False) as conn:
            return int(
                conn.execute(
                    sa.select(t.state_meta.c.version).where(t.state_meta.c.id == 1)
                ).scalar_one()
            )

    def commit(
        self, allocation: Allocation, *, revision: str | None, now: datetime
    ) -> StateSnapshot:
        """Write ``allocation`` atomically; returns the snapshot after it.

        Raises :class:`StaleState` (writing nothing) if anything was committed since the
        snapshot the allocation was computed from. An allocation that changes nothing is
        checked the same way but does not bump the version.
        """
        now = ensure_utc(now, "now")
        with transaction(self._engine, write=True) as conn:
            meta = self._lock_meta(conn)
            if meta.version != allocation.base_version:
                raise StaleState(
                    f"state changed since the plan was made (plan based on version "
                    f"{allocation.base_version}, state is at version {meta.version}); "
                    "plan again"
                )
            if not allocation.changed:
                return self._read_snapshot(conn)

            next_sender = meta.next_sender_number
            next_uid = meta.next_uid
            for reg in allocation.new:
                conn.execute(
                    t.registrations.insert().values(
                        **_registration_values(reg) | {"revision": revision}
                    )
                )
                self._record_username(conn, reg.technical_user, reg.enterprise_number, now)
                next_sender = max(next_sender, reg.sender_number + 1)
                next_uid = max(next_uid, reg.uid + 1)

            for reg in allocation.returning:
                self._update_one(
                    conn,
                    reg.enterprise_number,
                    only_if=t.registrations.c.status == "removed",
                    values={
                        "status": reg.status,
                        "status_since": reg.status_since,
                        "status_reason": reg.status_reason,
                        "revision": revision,
                    },
                )
            for enterprise_number in allocation.removed:
                self._update_one(
                    conn,
                    enterprise_number,
                    only_if=t.registrations.c.status != "removed",
                    values={
                        "status": "removed",
                        "status_since": now,
                        "status_reason": None,
                        "revision": revision,
                    },
                )
            self._bump(conn, meta.version, next_sender=next_sender, next_uid=next_uid)
            return self._read_snapshot(conn)

    def set_status(
        self,
        enterprise_number: str,
        status: ChannelStatus,
        *,
        reason: str | None,
        revision: str | None,
        now: datetime,
    ) -> None:
        """Record what the apply step observed for one quality; bumps the version.

        ``status_since`` only moves when the status changes, so "pending since" stays the
        time the quality started waiting. ``last_applied_at`` is set when the server is known
        to match (``active`` or ``removed``). A ``revision`` of ``None`` keeps the stored one.
        """
        now = ensure_utc(now, "now")
        if status not in ("pending", "active", "degraded", "failed", "removed"):
            raise ValueError(f"unknown channel status {status!r}")
        reg_t = t.registrations
        with transaction(self._engine, write=True) as conn:
            meta = self._lock_meta(conn)
            row = conn.execute(
                sa.select(reg_t.c.status, reg_t.c.revision).where(
                    reg_t.c.enterprise_number == enterprise_number
                )
            ).one_or_none()
            if row is None:
                raise UnknownRegistration(
                    f"no registration for quality {enterprise_number} in {self.url}"
                )
            values: dict[str, object] = {
                "status": status,
                "status_reason": reason,
                "revision": revision if revision is not None else row.revision,
            }
            if row.status != status:
                values["status_since"] = now
            if status in _APPLIED_STATUSES:
                values["last_applied_at"] = now
            conn.execute(
                reg_t.update().where(reg_t.c.enterprise_number == enterprise_number).values(values)
            )
            self._bump(conn, meta.version)

    def set_statuses(
        self,
        updates: Iterable[StatusUpdate],
        *,
        now: datetime,
    ) -> int:
        """:meth:`set_status` for many qualities in one transaction and one version bump.

        Each update means exactly what the same :meth:`set_status` call means (``status_since``
        moves only when the status changes, ``last_applied_at`` is set for ``active`` and
        ``removed``, a ``revision`` of ``None`` keeps the stored one). All or nothing: an
        unknown quality raises :class:`UnknownRegistration` and writes nothing. A quality may
        appear once. Returns how many registrations were written; none bumps no version.
        """
        now = ensure_utc(now, "now")
        todo = list(updates)
        seen: set[str] = set()
        for u in todo:
            if u.status not in ("pending", "active", "degraded", "failed", "removed"):
                raise ValueError(f"unknown channel status {u.status!r}")
            if u.enterprise_number in seen:
                raise ValueError(f"quality {u.enterprise_number} appears twice in one update")
            seen.add(u.enterprise_number)
        if not todo:
            return 0
        reg_t = t.registrations
        with transaction(self._engine, write=True) as conn:
            meta = self._lock_meta(conn)
            current: dict[str, Any] = {}
            ens = [u.enterprise_number for u in todo]
            for start in range(0, len(ens), _IN_CHUNK):
                chunk = ens[start : start + _IN_CHUNK]
                for found in conn.execute(
                    sa.select(
                        reg_t.c.enterprise_number,
                        reg_t.c.status,
                        reg_t.c.status_since,
                        reg_t.c.revision,
                        reg_t.c.last_applied_at,
                    ).where(reg_t.c.enterprise_number.in_(chunk))
                ):
                    current[found.enterprise_number] = found
            missing = [en for en in ens if en not in current]
            if missing:
                shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
                raise UnknownRegistration(f"no registration for quality {shown} in {self.url}")
            rows = []
            for u in todo:
                row = current[u.enterprise_number]
                rows.append(
                    {
                        "key": u.enterprise_number,
                        "status": u.status,
                        "status_reason": u.reason,
                        "revision": u.revision if u.revision is not None else row.revision,
                        "status_since": now if row.status != u.status else row.status_since,
                        "last_applied_at": now
                        if u.status in _APPLIED_STATUSES
                        else row.last_applied_at,
                    }
                )
            conn.execute(_STATUS_UPDATE, rows)
            self._bump(conn, meta.version)
        return len(rows)

    def record_declared(self, declared: Mapping[str, tuple[str, str | None]]) -> int:
        """Record, per quality, the file (relative to the declarations root) and blob that
        declared it in a successful apply; returns rows written. Rows already saying so are
        left alone, and nothing written bumps no version (an unchanged repository writes
        nothing). An unknown quality is skipped: it cannot have been applied."""
        reg_t = t.registrations
        with transaction(self._engine, write=True) as conn:
            meta = self._lock_meta(conn)
            current: dict[str, tuple[str | None, str | None]] = {}
            ens = sorted(declared)
            for start in range(0, len(ens), _IN_CHUNK):
                chunk = ens[start : start + _IN_CHUNK]
                for found in conn.execute(
                    sa.select(
                        reg_t.c.enterprise_number, reg_t.c.declared_path, reg_t.c.declared_blob
                    ).where(reg_t.c.enterprise_number.in_(chunk))
                ):
                    current[found.enterprise_number] = (found.declared_path, found.declared_blob)
            rows = [
                {"key": en, "declared_path": path, "declared_blob": blob}
                for en, (path, blob) in sorted(declared.items())
                if en in current and current[en] != (path, blob)
            ]
            if rows:
                conn.execute(
                    reg_t.update()
                    .where(reg_t.c.enterprise_number == sa.bindparam("key"))
                    .values(
                        declared_path=sa.bindparam("declared_path"),
                        declared_blob=sa.bindparam("declared_blob"),
                    ),
                    rows,
                )
                self._bump(conn, meta.version)
        return len(rows)

    def restore_statuses(self, previous: Iterable[Registration]) -> int:
        """Put the status fields (status, since, reason, revision, last applied) of these
        registrations back as they were in an earlier snapshot, verbatim: an apply that was
        rolled back after its commit had marked them removed or returning. One transaction
        and one version bump; returns rows written (none bumps no version)."""
        rows = [
            {
                "key": reg.enterprise_number,
                "status": reg.status,
                "status_since": reg.status_since,
                "status_reason": reg.status_reason,
                "revision": reg.revision,
                "last_applied_at": reg.last_applied_at,
            }
            for reg in previous
        ]
        if not rows:
            return 0
        with transaction(self._engine, write=True) as conn:
            meta = self._lock_meta(conn)
            conn.execute(_STATUS_UPDATE, rows)
            self._bump(conn, meta.version)
        return len(rows)

    def record_channel_keys(
        self,
        applied: Mapping[str, Collection[str]],
        released: Collection[str],
        *,
        now: datetime,
    ) -> int:
        """Record which keys a successful apply left on which channel; returns rows written.

        ``applied`` maps each channel the apply wrote (or found as it should be) to the
        fingerprints of its keys; ``released`` lists channels it removed, whose keys are free
        again. Channels in neither (held on their last good configuration) keep theirs: a key
        recorded for one of them is never taken over here, whatever ``applied`` says. One
        transaction; bumps the version only when something changed.
        """
        now = ensure_utc(now, "now")
        keys_t = t.channel_keys
        touched = set(applied) | set(released)
        with transaction(self._engine, write=True) as conn:
            meta = self._lock_meta(conn)
            owners = {
                row.fingerprint: row.enterprise_number
                for row in conn.execute(sa.select(keys_t.c.fingerprint, keys_t.c.enterprise_number))
            }
            wanted = {en: set(fps) for en, fps in applied.items() if en not in released}
            drop = [
                fp for fp, en in owners.items() if en in touched and fp not in wanted.get(en, ())
            ]
            free = set(drop)
            add: list[dict[str, object]] = []
            for en, fps in sorted(wanted.items()):
                for fp in sorted(fps):
                    owner = owners.get(fp)
                    if owner == en or (owner is not None and fp not in free):
                        continue
                    free.discard(fp)  # one owner, even if two channels asked for it
                    owners[fp] = en
                    add.append({"fingerprint": fp, "enterprise_number": en, "recorded_at": now})
            for start in range(0, len(drop), _IN_CHUNK):
                chunk = drop[start : start + _IN_CHUNK]
                conn.execute(keys_t.delete().where(keys_t.c.fingerprint.in_(chunk)))
            if add:
                conn.execute(keys_t.insert(), add)
            if drop or add:
                self._bump(conn, meta.version)
        return len(drop) + len(add)

    def import_registration(self, reg: Registration) -> bool:
        """Take over a registration made elsewhere (the portal), numbers included.

        Returns ``False`` if exactly this registration is already stored (re-running an
        import is harmless), ``True`` if it was added. Raises :class:`StateConflict`, writing
        nothing, if the quality is registered differently or the sender number, uid or
        technical user belongs to another quality. The counters move past the imported
        numbers so that nothing below them is handed out later: the portal may have given
        lower numbers to qualities that have left, and those stay theirs.
        """
        reg_t = t.registrations
        ledger = t.username_ledger
        with transaction(self._engine, write=True) as conn:
            meta = self._lock_meta(conn)
            existing = conn.execute(
                sa.select(reg_t).where(reg_t.c.enterprise_number == reg.enterprise_number)
            ).one_or_none()
            if existing is not None:
                current = _row_to_registration(existing)
                same = (current.technical_user, current.sender_number, current.uid) == (
                    reg.technical_user,
                    reg.sender_number,
                    reg.uid,
                )
                if same:
                    return False
                raise StateConflict(
                    f"quality {reg.enterprise_number} is already registered with technical "
                    f"user '{current.technical_user}', sender number {current.sender}, uid "
                    f"{current.uid}; refusing to import '{reg.technical_user}', sender number "
                    f"{reg.sender}, uid {reg.uid}"
                )
            problems: list[str] = []
            for column, value, label in (
                (reg_t.c.sender_number, reg.sender_number, f"sender number {reg.sender}"),
                (reg_t.c.uid, reg.uid, f"uid {reg.uid}"),
            ):
                holder = conn.execute(
                    sa.select(reg_t.c.enterprise_number).where(column == value)
                ).scalar_one_or_none()
                if holder is not None:
                    problems.append(f"{label} belongs to quality {holder}")
            owner = conn.execute(
                sa.select(ledger.c.enterprise_number).where(
                    ledger.c.technical_user == reg.technical_user
                )
            ).scalar_one_or_none()
            if owner is not None and owner != reg.enterprise_number:
                problems.append(f"technical user '{reg.technical_user}' belongs to quality {owner}")
            other_names = (
                conn.execute(
                    sa.select(ledger.c.technical_user).where(
                        ledger.c.enterprise_number == reg.enterprise_number,
                        ledger.c.technical_user != reg.technical_user,
                    )
                )
                .scalars()
                .all()
            )
            if other_names:
                names = ", ".join(f"'{name}'" for name in sorted(other_names))
                problems.append(
                    f"quality {reg.enterprise_number} already has technical user {names}"
                )
            if problems:
                raise StateConflict(
                    f"cannot import quality {reg.enterprise_number}: " + "; ".join(problems)
                )
            conn.execute(reg_t.insert().values(**_registration_values(reg)))
            self._record_username(
                conn, reg.technical_user, reg.enterprise_number, reg.registered_at
            )
            self._bump(
                conn,
                meta.version,
                next_sender=max(meta.next_sender_number, reg.sender_number + 1),
                next_uid=max(meta.next_uid, reg.uid + 1),
            )
            return True

    # -- runs ------------------------------------------------------------------------------

    def record_run(self, run: RunRecord) -> None:
        """Append a reconcile run to the history."""
        summary = json.dumps(dict(run.summary), sort_keys=True, ensure_ascii=False)
        with transaction(self._engine, write=True) as conn:
            conn.execute(
                t.runs.insert().values(
                    started_at=run.started_at,
                    finished_at=run.finished_at,
                    revision=run.revision,
                    outcome=run.outcome,
                    summary=summary,
                    error=run.error,
                    host=run.host,
                )
            )

    def last_runs(self, n: int) -> list[RunRecord]:
        """The ``n`` most recent runs, newest first."""
        if n <= 0:
            return []
        runs = t.runs
        with transaction(self._engine, write=False) as conn:
            rows = conn.execute(
                sa.select(runs).order_by(runs.c.started_at.desc(), runs.c.id.desc()).limit(n)
            ).all()
        return [_run_record(row) for row in rows]

    def last_run_per_host(self) -> dict[str | None, RunRecord]:
        """The most recent run each host recorded (``None``: runs recorded before schema 3)."""
        runs = t.runs
        with transaction(self._engine, write=False) as conn:
            newest = (
                sa.select(runs.c.host, sa.func.max(runs.c.id).label("id"))
                .group_by(runs.c.host)
                .subquery()
            )
            rows = conn.execute(sa.select(runs).join(newest, runs.c.id == newest.c.id)).all()
        return {row.host: _run_record(row) for row in rows}

    # -- hosts -----------------------------------------------------------------------------

    def record_host_channels(
        self,
        host: str,
        served: Mapping[str, str | None],
        *,
        keep: Collection[str] = (),
        now: datetime,
    ) -> int:
        """Record that ``host`` serves ``served`` (channel -> revision) after a successful
        apply; returns rows written.

        A row moves (and its ``applied_at`` with it) only when the revision changes; the
        host's rows for channels neither served nor in ``keep`` (held on their last good
        configuration) are deleted. Never bumps the state version: a host saying what it
        serves must not make the other hosts' plans stale.
        """
        now = ensure_utc(now, "now")
        hc = t.host_channels
        with transaction(self._engine, write=True) as conn:
            current = {
                row.enterprise_number: row.revision
                for row in conn.execute(
                    sa.select(hc.c.enterprise_number, hc.c.revision).where(hc.c.host == host)
                )
            }
            drop = sorted(en for en in current if en not in served and en not in keep)
            add = [
                {"host": host, "enterprise_number": en, "revision": rev, "applied_at": now}
                for en, rev in sorted(served.items())
                if en not in current
            ]
            move = [
                {"key": en, "revision": rev, "applied_at": now}
                for en, rev in sorted(served.items())
                if en in current and current[en] != rev
            ]
            for start in range(0, len(drop), _IN_CHUNK):
                chunk = drop[start : start + _IN_CHUNK]
                conn.execute(
                    hc.delete().where(hc.c.host == host, hc.c.enterprise_number.in_(chunk))
                )
            if add:
                conn.execute(hc.insert(), add)
            if move:
                conn.execute(
                    hc.update()
                    .where(hc.c.host == host, hc.c.enterprise_number == sa.bindparam("key"))
                    .values(
                        revision=sa.bindparam("revision"), applied_at=sa.bindparam("applied_at")
                    ),
                    move,
                )
        return len(drop) + len(add) + len(move)

    def host_channels(self) -> list[HostChannel]:
        """Which revision every host serves for every channel, by channel then host."""
        hc = t.host_channels
        with transaction(self._engine, write=False) as conn:
            rows = conn.execute(sa.select(hc).order_by(hc.c.enterprise_number, hc.c.host)).all()
        return [
            HostChannel(row.host, row.enterprise_number, row.revision, row.applied_at)
            for row in rows
        ]

    # -- notifications ---------------------------------------------------------------------

    def notification_sent(self, key: str) -> bool:
        """Whether the event named ``key`` was already notified."""
        notes = t.notifications
        with transaction(self._engine, write=False) as conn:
            found = conn.execute(sa.select(notes.c.key).where(notes.c.key == key)).first()
        return found is not None

    def claim_notification(self, key: str, now: datetime) -> bool:
        """Mark ``key`` as notified; ``True`` only for the one caller that marked it first.

        Check-then-mark leaves a window in which two hosts both send; claim first, send
        after, and the event goes out once.
        """
        now = ensure_utc(now, "now")
        notes = t.notifications
        insert: sa.Insert
        if self.dialect == "postgresql":
            # Imported here: the PostgreSQL dialect (and asyncio with it) costs 40 ms at start.
            from sqlalchemy.dialects import postgresql

            insert = postgresql.insert(notes).on_conflict_do_nothing(index_elements=["key"])
        else:
            from sqlalchemy.dialects import sqlite

            insert = sqlite.insert(notes).on_conflict_do_nothing(index_elements=["key"])
        with transaction(self._engine, write=True) as conn:
            inserted = conn.execute(insert.values(key=key, sent_at=now).returning(notes.c.key))
            return inserted.first() is not None

    def mark_notification(self, key: str, now: datetime) -> None:
        """Mark ``key`` as notified; marking it again keeps the first time."""
        self.claim_notification(key, now)

    # -- internals -------------------------------------------------------------------------

    def _read_snapshot(self, conn: Connection) -> StateSnapshot:
        meta = conn.execute(sa.select(t.state_meta).where(t.state_meta.c.id == 1)).one()
        regs = {
            reg.enterprise_number: reg
            for reg in map(_row_to_registration, conn.execute(sa.select(t.registrations)))
        }
        ledger: Mapping[str, str] = {
            row.technical_user: row.enterprise_number
            for row in conn.execute(
                sa.select(t.username_ledger.c.technical_user, t.username_ledger.c.enterprise_number)
            )
        }
        keys = t.channel_keys
        owners = {
            row.fingerprint: row.enterprise_number
            for row in conn.execute(sa.select(keys.c.fingerprint, keys.c.enterprise_number))
        }
        return StateSnapshot(
            registrations=regs,
            usernames=ledger,
            next_sender_number=meta.next_sender_number,
            next_uid=meta.next_uid,
            version=meta.version,
            channel_keys=owners,
        )

    def _lock_meta(self, conn: Connection) -> sa.Row[Any]:
        # FOR UPDATE makes PostgreSQL writers queue on this row, so two hosts cannot both
        # pass the version check; SQLite ignores it and relies on BEGIN IMMEDIATE.
        row = conn.execute(
            sa.select(t.state_meta).where(t.state_meta.c.id == 1).with_for_update()
        ).one_or_none()
        if row is None:
            raise StateUnavailable(f"state database {self.url} has no state_meta row")
        return row

    def _bump(
        self,
        conn: Connection,
        version: int,
        *,
        next_sender: int | None = None,
        next_uid: int | None = None,
    ) -> None:
        values: dict[str, object] = {"version": version + 1}
        if next_sender is not None:
            values["next_sender_number"] = next_sender
        if next_uid is not None:
            values["next_uid"] = next_uid
        meta = t.state_meta
        result = conn.execute(
            meta.update().where(meta.c.id == 1, meta.c.version == version).values(values)
        )
        # Unreachable while every writer locks the row first; kept so that a writer that
        # forgot to would still fail safe instead of overwriting a concurrent commit.
        if result.rowcount != 1:
            raise StaleState(f"state version moved past {version} during the transaction")

    def _record_username(
        self, conn: Connection, technical_user: str, enterprise_number: str, now: datetime
    ) -> None:
        ledger = t.username_ledger
        owner = conn.execute(
            sa.select(ledger.c.enterprise_number).where(ledger.c.technical_user == technical_user)
        ).scalar_one_or_none()
        if owner == enterprise_number:
            return
        if owner is not None:
            raise StateConflict(
                f"technical user '{technical_user}' belongs to quality {owner}, "
                f"not {enterprise_number}"
            )
        conn.execute(
            ledger.insert().values(
                technical_user=technical_user, enterprise_number=enterprise_number, recorded_at=now
            )
        )

    def _update_one(
        self,
        conn: Connection,
        enterprise_number: str,
        *,
        only_if: sa.ColumnElement[bool],
        values: Mapping[str, object],
    ) -> None:
        reg_t = t.registrations
        result = conn.execute(
            reg_t.update()
            .where(reg_t.c.enterprise_number == enterprise_number, only_if)
            .values(dict(values))
        )
        if result.rowcount != 1:
            raise StaleState(
                f"registration of quality {enterprise_number} is not in the state the plan "
                "expected; plan again"
            )


def _run_record(row: sa.Row[Any]) -> RunRecord:
    return RunRecord(
        id=row.id,
        started_at=row.started_at,
        finished_at=row.finished_at,
        revision=row.revision,
        outcome=row.outcome,
        summary=cast(dict[str, JSONValue], json.loads(row.summary)),
        error=row.error,
        host=row.host,
    )
