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

from provisioner.quality_id import QualityId

from . import schema as t
from ._db import create_engine, redact_url, transaction
from .errors import (
    StaleState,
    StateConflict,
    StateUnavailable,
    UnknownRegistration,
    UsernameCaseClash,
    UsernameReserved,
    UsernameTaken,
)
from .migrations import migrate
from .model import (
    LEGACY_QUALITY_TYPE,
    Allocation,
    ChannelStatus,
    HostChannel,
    JSONValue,
    Registration,
    RunRecord,
    StateSnapshot,
    check_quality_id,
    ensure_utc,
)

_REGISTRATION_COLUMNS = (
    "enterprise_number",
    "quality_type",
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

    qid: QualityId
    status: ChannelStatus
    reason: str | None = None
    revision: str | None = None


def _row_to_registration(row: sa.Row[Any]) -> Registration:
    values = row._mapping
    return Registration(**{name: values[name] for name in _REGISTRATION_COLUMNS})


def _registration_values(reg: Registration) -> dict[str, object]:
    return {name: getattr(reg, name) for name in _REGISTRATION_COLUMNS}


def _is(table: sa.Table, qid: QualityId) -> sa.ColumnElement[bool]:
    return sa.and_(
        table.c.enterprise_number == qid.enterprise_number,
        table.c.quality_type == qid.quality_type,
    )


def _qid_in(table: sa.Table, qids: Iterable[QualityId]) -> sa.ColumnElement[bool]:
    return sa.tuple_(table.c.enterprise_number, table.c.quality_type).in_([tuple(q) for q in qids])


def _chunks(items: list[QualityId]) -> Iterable[list[QualityId]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


def _owner(row: Any) -> QualityId | None:
    if row.enterprise_number is None:
        return None
    return QualityId(row.enterprise_number, row.quality_type or LEGACY_QUALITY_TYPE)


# One batched UPDATE of a registration's status fields, keyed by "key_en"/"key_qt": what
# set_statuses computes and what restore_statuses puts back are the same five columns.
_STATUS_UPDATE = (
    t.registrations.update()
    .where(
        t.registrations.c.enterprise_number == sa.bindparam("key_en"),
        t.registrations.c.quality_type == sa.bindparam("key_qt"),
    )
    .values(
        status=sa.bindparam("status"),
        status_since=sa.bindparam("status_since"),
        status_reason=sa.bindparam("status_reason"),
        revision=sa.bindparam("revision"),
        last_applied_at=sa.bindparam("last_applied_at"),
    )
)


def open_engine(url: str, *, create: bool = True) -> Engine:
    """The one way a state URL becomes an engine: created (see `create_engine`), then
    migrated, and disposed of again if the migration fails. :meth:`StateStore.open` wraps it;
    the intake gate, which may be the first to open a fresh database, uses the engine itself."""
    engine = create_engine(url, create=create)
    try:
        migrate(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


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
        return cls(open_engine(url, create=create))

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
            for legacy, adopted in allocation.adopted:
                self._adopt(conn, legacy, adopted)
            for reg in allocation.new:
                conn.execute(
                    t.registrations.insert().values(
                        **_registration_values(reg) | {"revision": revision}
                    )
                )
                self._record_username(conn, reg.technical_user, reg.qid, now)
                next_sender = max(next_sender, reg.sender_number + 1)
                if reg.uid is not None:
                    next_uid = max(next_uid, reg.uid + 1)
            for reg in allocation.accounts:
                self._update_one(
                    conn,
                    reg.qid,
                    only_if=t.registrations.c.uid.is_(None),
                    values={"uid": reg.uid},
                )
                next_uid = max(next_uid, (reg.uid or 0) + 1)

            for reg in allocation.returning:
                values: dict[str, object] = {
                    "status": reg.status,
                    "status_since": reg.status_since,
                    "status_reason": reg.status_reason,
                    "revision": revision,
                }
                if reg.uid is not None:
                    values["uid"] = reg.uid
                    next_uid = max(next_uid, reg.uid + 1)
                self._update_one(
                    conn, reg.qid, only_if=t.registrations.c.status == "removed", values=values
                )
            for qid in allocation.removed:
                self._update_one(
                    conn,
                    qid,
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
        qid: QualityId,
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
                sa.select(reg_t.c.status, reg_t.c.revision).where(_is(reg_t, qid))
            ).one_or_none()
            if row is None:
                raise UnknownRegistration(f"no registration for quality {qid} in {self.url}")
            values: dict[str, object] = {
                "status": status,
                "status_reason": reason,
                "revision": revision if revision is not None else row.revision,
            }
            if row.status != status:
                values["status_since"] = now
            if status in _APPLIED_STATUSES:
                values["last_applied_at"] = now
            conn.execute(reg_t.update().where(_is(reg_t, qid)).values(values))
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
        seen: set[QualityId] = set()
        for u in todo:
            if u.status not in ("pending", "active", "degraded", "failed", "removed"):
                raise ValueError(f"unknown channel status {u.status!r}")
            if u.qid in seen:
                raise ValueError(f"quality {u.qid} appears twice in one update")
            seen.add(u.qid)
        if not todo:
            return 0
        reg_t = t.registrations
        with transaction(self._engine, write=True) as conn:
            meta = self._lock_meta(conn)
            current: dict[QualityId, Any] = {}
            qids = [u.qid for u in todo]
            for chunk in _chunks(qids):
                for found in conn.execute(
                    sa.select(
                        reg_t.c.enterprise_number,
                        reg_t.c.quality_type,
                        reg_t.c.status,
                        reg_t.c.status_since,
                        reg_t.c.revision,
                        reg_t.c.last_applied_at,
                    ).where(_qid_in(reg_t, chunk))
                ):
                    current[QualityId(found.enterprise_number, found.quality_type)] = found
            missing = [str(q) for q in qids if q not in current]
            if missing:
                shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
                raise UnknownRegistration(f"no registration for quality {shown} in {self.url}")
            rows = []
            for u in todo:
                row = current[u.qid]
                rows.append(
                    {
                        "key_en": u.qid.enterprise_number,
                        "key_qt": u.qid.quality_type,
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

    def record_declared(self, declared: Mapping[QualityId, tuple[str, str | None]]) -> int:
        """Record, per quality, the file (relative to the declarations root) and blob that
        declared it in a successful apply; returns rows written. Rows already saying so are
        left alone, and nothing written bumps no version (an unchanged repository writes
        nothing). An unknown quality is skipped: it cannot have been applied."""
        reg_t = t.registrations
        with transaction(self._engine, write=True) as conn:
            meta = self._lock_meta(conn)
            current: dict[QualityId, tuple[str | None, str | None]] = {}
            for chunk in _chunks(sorted(declared)):
                for found in conn.execute(
                    sa.select(
                        reg_t.c.enterprise_number,
                        reg_t.c.quality_type,
                        reg_t.c.declared_path,
                        reg_t.c.declared_blob,
                    ).where(_qid_in(reg_t, chunk))
                ):
                    current[QualityId(found.enterprise_number, found.quality_type)] = (
                        found.declared_path,
                        found.declared_blob,
                    )
            rows = [
                {
                    "key_en": qid.enterprise_number,
                    "key_qt": qid.quality_type,
                    "declared_path": path,
                    "declared_blob": blob,
                }
                for qid, (path, blob) in sorted(declared.items())
                if qid in current and current[qid] != (path, blob)
            ]
            if rows:
                conn.execute(
                    reg_t.update()
                    .where(
                        reg_t.c.enterprise_number == sa.bindparam("key_en"),
                        reg_t.c.quality_type == sa.bindparam("key_qt"),
                    )
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
                "key_en": reg.enterprise_number,
                "key_qt": reg.quality_type,
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
        applied: Mapping[QualityId, Collection[str]],
        released: Collection[QualityId],
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
            owners: dict[str, QualityId] = {
                row.fingerprint: QualityId(row.enterprise_number, row.quality_type)
                for row in conn.execute(
                    sa.select(
                        keys_t.c.fingerprint, keys_t.c.enterprise_number, keys_t.c.quality_type
                    )
                )
            }
            wanted = {q: set(fps) for q, fps in applied.items() if q not in released}
            drop = [fp for fp, q in owners.items() if q in touched and fp not in wanted.get(q, ())]
            free = set(drop)
            add: list[dict[str, object]] = []
            for qid, fps in sorted(wanted.items()):
                for fp in sorted(fps):
                    owner = owners.get(fp)
                    if owner == qid or (owner is not None and fp not in free):
                        continue
                    free.discard(fp)  # one owner, even if two channels asked for it
                    owners[fp] = qid
                    add.append(
                        {
                            "fingerprint": fp,
                            "enterprise_number": qid.enterprise_number,
                            "quality_type": qid.quality_type,
                            "recorded_at": now,
                        }
                    )
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
        import is harmless), ``True`` if it was added. Raises, writing nothing,
        :class:`StateConflict` if the quality is registered differently or its sender number
        or uid belongs to another quality; :class:`UsernameTaken` if its technical user
        belongs to another quality, :class:`UsernameCaseClash` if it differs only by case
        from one that does, :class:`UsernameReserved` if it is a reserved name (all three
        are StateConflicts). A ``uid`` of ``None`` is allowed (the account's uid is assigned
        at its first SFTP apply). The counters move past the imported numbers so that
        nothing below them is handed out later: the portal may have given lower numbers to
        qualities that have left, and those stay theirs.
        """
        if reg.legacy:
            raise ValueError("an imported registration must name its quality type")
        reg_t = t.registrations
        qid = reg.qid
        with transaction(self._engine, write=True) as conn:
            meta = self._lock_meta(conn)
            existing = conn.execute(sa.select(reg_t).where(_is(reg_t, qid))).one_or_none()
            if existing is not None:
                current = _row_to_registration(existing)
                same = (current.technical_user, current.sender_number) == (
                    reg.technical_user,
                    reg.sender_number,
                ) and (reg.uid is None or reg.uid == current.uid)
                if same:
                    return False
                uid_text = f", uid {current.uid}" if current.uid is not None else ""
                new_uid_text = f", uid {reg.uid}" if reg.uid is not None else ""
                raise StateConflict(
                    f"quality {qid} is already registered with technical user "
                    f"'{current.technical_user}', sender number {current.sender}{uid_text}; "
                    f"refusing to import '{reg.technical_user}', sender number "
                    f"{reg.sender}{new_uid_text}"
                )
            problems: list[str] = []
            checks: list[tuple[sa.ColumnElement[bool], str]] = [
                (reg_t.c.sender_number == reg.sender_number, f"sender number {reg.sender}")
            ]
            if reg.uid is not None:
                checks.append((reg_t.c.uid == reg.uid, f"uid {reg.uid}"))
            for condition, label in checks:
                holder = conn.execute(
                    sa.select(reg_t.c.enterprise_number, reg_t.c.quality_type).where(condition)
                ).first()
                if holder is not None:
                    problems.append(f"{label} belongs to quality {_owner(holder)}")
            if problems:
                raise StateConflict(f"cannot import quality {qid}: " + "; ".join(problems))
            self._check_username(conn, reg.technical_user, qid, importing=True)
            conn.execute(reg_t.insert().values(**_registration_values(reg)))
            self._record_username(conn, reg.technical_user, qid, reg.registered_at)
            self._bump(
                conn,
                meta.version,
                next_sender=max(meta.next_sender_number, reg.sender_number + 1),
                next_uid=max(meta.next_uid, reg.uid + 1) if reg.uid is not None else None,
            )
            return True

    def import_registrations(
        self,
        registrations: Iterable[Registration],
        reserved: Iterable[str] = (),
        *,
        base_version: int,
        now: datetime,
    ) -> int:
        """Many imported registrations and reserved names in one transaction, all or nothing.

        Written only while the state is still at ``base_version``, the snapshot the caller
        judged them against (`adoption.plan_import` checks every row against it and against
        the other rows, case-insensitively): :class:`StaleState` otherwise, writing nothing.
        The database's unique constraints stay the last guard. Each registration's technical
        user goes into the username ledger, recorded at its registration date. The counters
        move past the imported numbers (see :meth:`import_registration`); one version bump.
        Returns how many rows (registrations and names) were written.
        """
        now = ensure_utc(now, "now")
        regs = list(registrations)
        names = sorted(set(reserved))
        for reg in regs:
            if reg.legacy:
                raise ValueError("an imported registration must name its quality type")
        with transaction(self._engine, write=True) as conn:
            meta = self._lock_meta(conn)
            if meta.version != base_version:
                raise StaleState(
                    f"state changed since the import was checked (checked against version "
                    f"{base_version}, state is at version {meta.version}); run it again"
                )
            if not regs and not names:
                return 0
            if regs:
                conn.execute(t.registrations.insert(), [_registration_values(r) for r in regs])
            rows: list[dict[str, object]] = [
                {
                    "technical_user": r.technical_user,
                    "enterprise_number": r.enterprise_number,
                    "quality_type": r.quality_type,
                    "recorded_at": r.registered_at,
                }
                for r in regs
            ]
            rows.extend(
                {
                    "technical_user": name,
                    "enterprise_number": None,
                    "quality_type": None,
                    "recorded_at": now,
                }
                for name in names
            )
            conn.execute(t.username_ledger.insert(), rows)
            uids = [r.uid for r in regs if r.uid is not None]
            self._bump(
                conn,
                meta.version,
                next_sender=max([meta.next_sender_number, *(r.sender_number + 1 for r in regs)]),
                next_uid=max([meta.next_uid, *(u + 1 for u in uids)]) if uids else None,
            )
        return len(regs) + len(names)

    def reserve_usernames(self, names: Iterable[str], now: datetime) -> int:
        """Record names taken in the portal's access system by users that are no quality of
        ours: refused to every quality from now on, whatever their case. Returns how many
        were new. A name the ledger holds already (reserved, or any quality's, in any case)
        is left as it is: it is refused to newcomers either way. One transaction; bumps the
        version only when something was recorded."""
        now = ensure_utc(now, "now")
        wanted = sorted({name for name in names if name})
        if not wanted:
            return 0
        ledger = t.username_ledger
        with transaction(self._engine, write=True) as conn:
            meta = self._lock_meta(conn)
            known = {
                name.lower()
                for name in conn.execute(sa.select(ledger.c.technical_user)).scalars().all()
            }
            rows = []
            for name in wanted:
                if name.lower() in known:
                    continue
                known.add(name.lower())
                rows.append(
                    {
                        "technical_user": name,
                        "enterprise_number": None,
                        "quality_type": None,
                        "recorded_at": now,
                    }
                )
            if rows:
                conn.execute(ledger.insert(), rows)
                self._bump(conn, meta.version)
        return len(rows)

    def reserved_usernames(self) -> list[str]:
        """Every reserved name (no owning quality), sorted."""
        ledger = t.username_ledger
        with transaction(self._engine, write=False) as conn:
            return sorted(
                conn.execute(
                    sa.select(ledger.c.technical_user).where(ledger.c.enterprise_number.is_(None))
                )
                .scalars()
                .all()
            )

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
        served: Mapping[QualityId, str | None],
        *,
        keep: Collection[QualityId] = (),
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
        keep = set(keep)
        with transaction(self._engine, write=True) as conn:
            current = {
                QualityId(row.enterprise_number, row.quality_type): row.revision
                for row in conn.execute(
                    sa.select(hc.c.enterprise_number, hc.c.quality_type, hc.c.revision).where(
                        hc.c.host == host
                    )
                )
            }
            drop = sorted(q for q in current if q not in served and q not in keep)
            add = [
                {
                    "host": host,
                    "enterprise_number": q.enterprise_number,
                    "quality_type": q.quality_type,
                    "revision": rev,
                    "applied_at": now,
                }
                for q, rev in sorted(served.items())
                if q not in current
            ]
            move = [
                {
                    "key_en": q.enterprise_number,
                    "key_qt": q.quality_type,
                    "revision": rev,
                    "applied_at": now,
                }
                for q, rev in sorted(served.items())
                if q in current and current[q] != rev
            ]
            for chunk in _chunks(drop):
                conn.execute(hc.delete().where(hc.c.host == host, _qid_in(hc, chunk)))
            if add:
                conn.execute(hc.insert(), add)
            if move:
                conn.execute(
                    hc.update()
                    .where(
                        hc.c.host == host,
                        hc.c.enterprise_number == sa.bindparam("key_en"),
                        hc.c.quality_type == sa.bindparam("key_qt"),
                    )
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
            rows = conn.execute(
                sa.select(hc).order_by(hc.c.enterprise_number, hc.c.quality_type, hc.c.host)
            ).all()
        return [
            HostChannel(
                row.host,
                QualityId(row.enterprise_number, row.quality_type),
                row.revision,
                row.applied_at,
            )
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
            reg.qid: reg
            for reg in map(_row_to_registration, conn.execute(sa.select(t.registrations)))
        }
        ledger: dict[str, QualityId] = {}
        reserved: set[str] = set()
        led = t.username_ledger
        for row in conn.execute(
            sa.select(led.c.technical_user, led.c.enterprise_number, led.c.quality_type)
        ):
            owner = _owner(row)
            if owner is None:
                reserved.add(row.technical_user)
            else:
                ledger[row.technical_user] = owner
        keys = t.channel_keys
        owners = {
            row.fingerprint: QualityId(row.enterprise_number, row.quality_type)
            for row in conn.execute(
                sa.select(keys.c.fingerprint, keys.c.enterprise_number, keys.c.quality_type)
            )
        }
        return StateSnapshot(
            registrations=regs,
            usernames=ledger,
            next_sender_number=meta.next_sender_number,
            next_uid=meta.next_uid,
            version=meta.version,
            channel_keys=owners,
            reserved=frozenset(reserved),
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

    def _check_username(
        self, conn: Connection, technical_user: str, qid: QualityId, *, importing: bool
    ) -> None:
        """Refuse a name reserved, or held by another quality exactly or up to case; and a
        second name for a quality that has one."""
        ledger = t.username_ledger
        rows = conn.execute(
            sa.select(ledger.c.technical_user, ledger.c.enterprise_number, ledger.c.quality_type)
            .where(sa.func.lower(ledger.c.technical_user) == technical_user.lower())
            .order_by(ledger.c.technical_user)
        ).all()
        for row in rows:
            owner = _owner(row)
            if owner == qid and row.technical_user == technical_user:
                continue
            if owner is None:
                raise UsernameReserved(
                    f"cannot import quality {qid}: technical user '{technical_user}' is "
                    f"reserved in the access system"
                    + (
                        f" (as '{row.technical_user}')"
                        if row.technical_user != technical_user
                        else ""
                    )
                )
            if row.technical_user == technical_user:
                raise UsernameTaken(
                    f"cannot import quality {qid}: technical user '{technical_user}' belongs "
                    f"to quality {owner}"
                )
            raise UsernameCaseClash(
                f"cannot import quality {qid}: technical user '{technical_user}' differs only "
                f"by case from '{row.technical_user}' of quality {owner}"
            )
        if importing:
            others = (
                conn.execute(
                    sa.select(ledger.c.technical_user).where(
                        ledger.c.enterprise_number == qid.enterprise_number,
                        ledger.c.quality_type == qid.quality_type,
                        ledger.c.technical_user != technical_user,
                    )
                )
                .scalars()
                .all()
            )
            if others:
                names = ", ".join(f"'{name}'" for name in sorted(others))
                raise StateConflict(
                    f"cannot import quality {qid}: it already has technical user {names}"
                )

    def _record_username(
        self, conn: Connection, technical_user: str, qid: QualityId, now: datetime
    ) -> None:
        check_quality_id(qid, legacy=True)
        ledger = t.username_ledger
        row = conn.execute(
            sa.select(ledger.c.enterprise_number, ledger.c.quality_type).where(
                ledger.c.technical_user == technical_user
            )
        ).one_or_none()
        if row is not None:
            owner = _owner(row)
            if owner == qid:
                return
            raise StateConflict(
                f"technical user '{technical_user}' belongs to "
                + (f"quality {owner}" if owner is not None else "the reserved names")
                + f", not {qid}"
            )
        conn.execute(
            ledger.insert().values(
                technical_user=technical_user,
                enterprise_number=qid.enterprise_number,
                quality_type=qid.quality_type,
                recorded_at=now,
            )
        )

    def _adopt(self, conn: Connection, legacy: QualityId, adopted: QualityId) -> None:
        """Give a schema-3 identity (quality type unknown) the type it was matched to,
        everywhere it appears; nothing else changes."""
        if legacy.quality_type != LEGACY_QUALITY_TYPE or legacy.enterprise_number != (
            adopted.enterprise_number
        ):
            raise ValueError(f"{legacy} cannot be adopted as {adopted}")
        check_quality_id(adopted)
        taken = conn.execute(
            sa.select(t.registrations.c.sender_number).where(_is(t.registrations, adopted))
        ).first()
        if taken is not None:
            raise StaleState(f"quality {adopted} is registered already; plan again")
        for table in (t.registrations, t.username_ledger, t.channel_keys, t.host_channels):
            conn.execute(
                table.update().where(_is(table, legacy)).values(quality_type=adopted.quality_type)
            )

    def _update_one(
        self,
        conn: Connection,
        qid: QualityId,
        *,
        only_if: sa.ColumnElement[bool],
        values: Mapping[str, object],
    ) -> None:
        reg_t = t.registrations
        result = conn.execute(reg_t.update().where(_is(reg_t, qid), only_if).values(dict(values)))
        if result.rowcount != 1:
            raise StaleState(
                f"registration of quality {qid} is not in the state the plan expected; plan again"
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
