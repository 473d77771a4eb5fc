"""Channels declared since the last run: pending until the next sync picks them up.

The portal shows a new channel as "the configuration for the creation of the channel is in
progress" until the SFTP host synchronises at the next :00 or :30. The state only learns of a
channel at that sync, so `status` compares the declarations with the state to show it earlier.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from provisioner.overview import PENDING_STATUSES, Synchronisation
from provisioner.portaltime import portal_minute
from provisioner.quality_id import QualityId
from provisioner.settings import HostSettings

IN_PROGRESS = "the configuration for the creation of the channel is in progress"
# The cadence the host runs at when the source says nothing else (the settings' default).
DEFAULT_EVERY = timedelta(minutes=30)
# How apply words the reason of a channel whose apply was rolled back (see apply/records.py), so
# that its status says "rolled back" rather than "refused".
ROLLED_BACK = "apply rolled back: "
REMOVAL_ROLLED_BACK = "removal rolled back: "


def _when(moment: datetime) -> str:
    # A sentence a person reads: Brussels time (the JSON fields beside it stay UTC).
    return portal_minute(moment)


def status_message(status: str, since: datetime | None, reason: str | None) -> str | None:
    """What a sender sees of its channel, in one sentence (None: `active`, nothing to say).

    `degraded`: applied before and still served as it was, while the declaration is refused
    (or the change was rolled back); `failed`: never applied.
    """
    if status == "pending":
        return IN_PROGRESS
    if status == "active" or since is None:
        return None
    at = _when(since)
    why = reason or "no reason was recorded"
    if status == "removed":
        return (
            f"removed since {at}: no account and no keys any more, the uploads are archived; "
            "the sender number and the username stay reserved for this quality"
        )
    for prefix in (ROLLED_BACK, REMOVAL_ROLLED_BACK):
        if why.startswith(prefix):
            cause = f"the last apply was rolled back at {at} because {why[len(prefix) :]}"
            break
    else:
        cause = f"the declaration is refused since {at} because {why}"
    if status == "degraded":
        return f"serving the last good configuration; {cause}"
    if status == "failed":
        return f"never applied: {cause}"
    return None


# --- what `show` learns from the host ------------------------------------------------------


def registration_for(registrations: Mapping[Any, Any], qid: QualityId) -> Any | None:
    """The state's registration of `qid`, whichever way this state keys its registrations.

    State schema 4 keys them on the quality identity; before it, on the enterprise number, and
    a row migrated from then has no quality type until a reconcile adopts one.
    """
    for key in (qid, qid.enterprise_number, QualityId(qid.enterprise_number, "")):
        found = registrations.get(key)
        if found is not None:
            return found
    return None


def synchronisation_from_state(
    settings: HostSettings, qid: QualityId, *, has_sftp: bool, now: datetime
) -> Synchronisation:
    """What the host's state says of `qid` (read-only: a missing database is an error)."""
    from provisioner.errors import SettingsError
    from provisioner.schedule import next_slot, parse_interval
    from provisioner.state import StateError, StateMissing, StateStore

    try:
        store = StateStore.open(settings.state_url, create=False)
    except StateMissing as exc:
        raise SettingsError(f"the state database cannot be opened: {exc}") from None
    except StateError as exc:
        raise SettingsError(f"the state database cannot be opened: {exc}") from None
    try:
        registration = registration_for(store.snapshot().registrations, qid)
    finally:
        store.close()
    # Slots follow the host's wall clock, as the systemd timer does (see `schedule`).
    upcoming = next_slot(now.astimezone(), parse_interval(settings.reconcile_every))
    waiting = registration is None or registration.status in PENDING_STATUSES
    # A quality registered without an SFTP channel has no account yet (schema 4: no uid).
    if has_sftp and registration is not None and getattr(registration, "uid", 0) is None:
        waiting = True
    return Synchronisation(registration, upcoming, waiting)


@dataclass(frozen=True, slots=True)
class LedgerRegistration:
    """A quality as the published ledger lists it (see `provisioner.ledger`)."""

    sender_number: str
    registered_at: date | None
    status: str


def synchronisation_from_ledger(path: Path, qid: QualityId, *, now: datetime) -> Synchronisation:
    """What the ledger the host published says of `qid`; a `LedgerError` when it is not one."""
    from provisioner.ledger import load_ledger
    from provisioner.schedule import next_slot

    ledger = load_ledger(path)
    entry = ledger.quality(qid)
    registration = (
        None
        if entry is None
        else LedgerRegistration(entry.sender_number, entry.registered_on, entry.status)
    )
    upcoming = ledger.next_sync
    if upcoming is None or upcoming <= now:
        # The ledger is older than the sync it announced: the host's cadence goes on.
        upcoming = next_slot(now.astimezone(), DEFAULT_EVERY)
    waiting = registration is None or registration.status in PENDING_STATUSES
    return Synchronisation(registration, upcoming, waiting)
