"""What `provisioner status` knows about each channel: one row type for registered channels
and for the ones the next sync will create, and the report they make together.

The command only turns this into text (provisioner.statusview) or JSON; reading the state and
the declarations happens here, read-only: looking creates no database file and no directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from provisioner.errors import SettingsError
from provisioner.pending import IN_PROGRESS, status_message
from provisioner.plan import ChannelAction
from provisioner.schedule import next_slot, parse_interval
from provisioner.settings import HostSettings
from provisioner.state import (
    Registration,
    RunRecord,
    StateError,
    StateMissing,
    StateSnapshot,
    StateStore,
)


@dataclass(frozen=True, slots=True)
class StatusRow:
    """One channel as `status` shows it. Instants are ISO 8601 in UTC; statusview puts them
    on the Brussels clock for a person."""

    kind: Literal["registered", "pending"]
    sender_number: str | None
    username: str | None
    enterprise_number: str
    # With the enterprise number, the quality's identity: one enterprise may hold several
    # qualities ('' for one registered before types were recorded).
    quality_type: str
    registered_at: str | None
    status: str
    status_since: str | None
    reason: str | None
    revision: str | None
    # When its configuration was last applied; `last_sync` is the host's last run.
    changed_at: str | None
    last_sync: str | None
    next_sync: str
    message: str | None
    # Registered channels: which hosts serve which revision. Pending ones: where declared.
    hosts: list[dict[str, Any]] = field(default_factory=list)
    declared_in: str | None = None

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "sender_number": self.sender_number,
            "username": self.username,
            "enterprise_number": self.enterprise_number,
            "quality_type": self.quality_type,
            "registered_at": self.registered_at,
            "status": self.status,
            "status_since": self.status_since,
            "reason": self.reason,
            "revision": self.revision,
            "changed_at": self.changed_at,
            "last_sync": self.last_sync,
            "next_sync": self.next_sync,
            "message": self.message,
        }
        if self.kind == "registered":
            row["hosts"] = self.hosts
        else:
            row["declared_in"] = self.declared_in
        return row


@dataclass(frozen=True, slots=True)
class StatusReport:
    rows: list[StatusRow]
    next_sync: datetime
    # The last run recorded by any host, and the last run of each host (None: before schema 3).
    last_run: RunRecord | None
    host_runs: dict[str | None, RunRecord]
    # The last run of the host `status` is asked on.
    this_run: RunRecord | None
    # Every host that serves a channel, whichever channels the rows show.
    serving_hosts: frozenset[str] = frozenset()

    @property
    def several_hosts(self) -> bool:
        return len(self.serving_hosts) > 1

    def to_json(self) -> dict[str, Any]:
        last = self.last_run
        return {
            "channels": [row.to_json() for row in self.rows],
            "next_sync": self.next_sync.isoformat(),
            "last_run": None
            if last is None
            else {
                "started_at": last.started_at.isoformat(),
                "outcome": last.outcome,
                "revision": last.revision,
                "host": last.host,
            },
            "hosts": [
                {
                    "host": host,
                    "started_at": run.started_at.isoformat(),
                    "outcome": run.outcome,
                    "revision": run.revision,
                }
                for host, run in sorted(self.host_runs.items(), key=lambda i: i[0] or "")
                if host is not None
            ],
        }


def next_sync(now: datetime, every: timedelta = timedelta(minutes=30)) -> datetime:
    """The next wall-clock slot (:00 and :30 for half an hour), in UTC."""
    return next_slot(now, every)


def last_sync(this_run: RunRecord | None, applied_at: datetime | None) -> str | None:
    """When this host last synchronised the channel: its last run, or a later `apply` by hand
    that changed the channel (`apply` records no run, but it did synchronise)."""
    moments = [m for m in (this_run.started_at if this_run else None, applied_at) if m]
    return max(moments).isoformat() if moments else None


def registered_row(
    reg: Registration,
    *,
    this_run: RunRecord | None,
    upcoming: datetime,
    hosts: list[dict[str, Any]],
) -> StatusRow:
    return StatusRow(
        kind="registered",
        sender_number=reg.sender,
        username=reg.technical_user,
        enterprise_number=reg.enterprise_number,
        quality_type=reg.quality_type,
        registered_at=reg.registered_at.isoformat(),
        status=reg.status,
        status_since=reg.status_since.isoformat(),
        reason=reg.status_reason,
        revision=reg.revision,
        changed_at=reg.last_applied_at.isoformat() if reg.last_applied_at else None,
        last_sync=last_sync(this_run, reg.last_applied_at),
        next_sync=upcoming.isoformat(),
        message=status_message(reg.status, reg.status_since, reg.status_reason),
        hosts=hosts,
    )


def pending_rows(
    settings: HostSettings,
    paths: Sequence[Path],
    snapshot: StateSnapshot,
    now: datetime,
    next_sync: datetime,
) -> dict[str, StatusRow]:
    """Status rows, by quality identity (`str(QualityId)`), of the channels the next sync
    will create.

    A quality that comes back after a removal keeps its sender number; a new one gets its
    number at the sync (numbers are handed out in order then, so none is promised here).
    """
    from provisioner.reconcile import compute

    rec = compute(settings, paths, snapshot, now=now)
    rows: dict[str, StatusRow] = {}
    for ch in rec.plan.channels:
        if ch.action is not ChannelAction.CREATE:
            continue
        known = snapshot.registrations.get(ch.qid)
        rows[str(ch.qid)] = StatusRow(
            kind="pending",
            sender_number=known.sender if known else None,
            username=ch.technical_user,
            enterprise_number=ch.enterprise_number,
            quality_type=ch.quality_type,
            registered_at=known.registered_at.isoformat() if known else None,
            status="pending",
            status_since=None,
            reason=None,
            revision=None,
            changed_at=known.last_applied_at.isoformat()
            if known and known.last_applied_at
            else None,
            last_sync=None,  # the host's last run: status_report fills it in
            next_sync=next_sync.isoformat(),
            message=IN_PROGRESS,
            declared_in=ch.source,
        )
    return rows


@dataclass(slots=True)
class _Recorded:
    snapshot: StateSnapshot = field(default_factory=StateSnapshot.empty)
    runs: list[RunRecord] = field(default_factory=list)
    served: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    host_runs: dict[str | None, RunRecord] = field(default_factory=dict)


def _read_state(settings: HostSettings, declared: Sequence[Path]) -> _Recorded:
    try:
        # Looking creates nothing: no database file, no directory.
        store = StateStore.open(settings.state_url, create=False)
    except StateMissing as exc:
        if not declared:
            raise SettingsError(f"the state database cannot be opened: {exc}") from None
        # A host before its first sync: every declared channel is pending.
        return _Recorded()
    except StateError as exc:
        raise SettingsError(f"the state database cannot be opened: {exc}") from None
    try:
        return _Recorded(
            store.snapshot(), store.last_runs(1), _served_by(store), store.last_run_per_host()
        )
    finally:
        store.close()


def _served_by(store: StateStore) -> dict[str, list[dict[str, Any]]]:
    """Per channel (`str` of its quality identity), which host serves which revision since
    when (hosts sharing the state)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in store.host_channels():
        out.setdefault(str(row.qid), []).append(
            {"host": row.host, "revision": row.revision, "applied_at": row.applied_at.isoformat()}
        )
    return out


def status_report(
    settings: HostSettings,
    declared: Sequence[Path],
    *,
    now: datetime,
    username: str | None = None,
) -> StatusReport:
    """Every registered channel (or the one of `username`), then the channels declared in
    `declared` that the next sync will create."""
    recorded = _read_state(settings, declared)
    upcoming = next_sync(now.astimezone(), parse_interval(settings.reconcile_every))
    waiting = pending_rows(settings, declared, recorded.snapshot, now, upcoming) if declared else {}
    # The last run of this host, whatever it changed (runs before schema 3 name no host).
    this_run = recorded.host_runs.get(settings.host_name) or recorded.host_runs.get(None)
    this_sync = this_run.started_at.isoformat() if this_run is not None else None
    rows = [
        registered_row(
            reg, this_run=this_run, upcoming=upcoming, hosts=recorded.served.get(str(reg.qid), [])
        )
        for reg in sorted(recorded.snapshot.registrations.values(), key=lambda r: r.technical_user)
        # Removed and declared again: pending, listed with the waiting ones.
        if (not username or reg.technical_user == username) and str(reg.qid) not in waiting
    ]
    rows.extend(
        replace(row, last_sync=this_sync)
        for row in waiting.values()
        if not username or row.username == username
    )
    return StatusReport(
        rows,
        upcoming,
        recorded.runs[0] if recorded.runs else None,
        recorded.host_runs,
        this_run,
        frozenset(h["host"] for hosts in recorded.served.values() for h in hosts),
    )
