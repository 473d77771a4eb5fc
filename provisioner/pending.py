"""Channels declared since the last run: pending until the next sync picks them up.

The portal shows a new channel as "the configuration for the creation of the channel is in
progress" until the SFTP host synchronises at the next :00 or :30. The state only learns of a
channel at that sync, so `status` compares the declarations with the state to show it earlier.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from provisioner.plan import ChannelAction
from provisioner.settings import HostSettings
from provisioner.state import StateSnapshot

IN_PROGRESS = "the configuration for the creation of the channel is in progress"
# How apply words the reason of a channel whose apply was rolled back (see apply.py), so that
# its status says "rolled back" rather than "refused".
ROLLED_BACK = "apply rolled back: "
REMOVAL_ROLLED_BACK = "removal rolled back: "


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


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


def pending_rows(
    settings: HostSettings,
    paths: Sequence[Path],
    snapshot: StateSnapshot,
    now: datetime,
    next_sync: datetime,
) -> dict[str, dict[str, Any]]:
    """Status rows, by enterprise number, of the channels the next sync will create.

    A quality that comes back after a removal keeps its sender number; a new one gets its
    number at the sync (numbers are handed out in order then, so none is promised here).
    """
    from provisioner.reconcile import compute

    rec = compute(settings, paths, snapshot, now=now)
    rows: dict[str, dict[str, Any]] = {}
    for ch in rec.plan.channels:
        if ch.action is not ChannelAction.CREATE:
            continue
        known = snapshot.registrations.get(ch.enterprise_number)
        rows[ch.enterprise_number] = {
            "sender_number": known.sender if known else None,
            "username": ch.technical_user,
            "enterprise_number": ch.enterprise_number,
            "registered_at": known.registered_at.isoformat() if known else None,
            "status": "pending",
            "status_since": None,
            "reason": None,
            "revision": None,
            "last_sync": known.last_applied_at.isoformat()
            if known and known.last_applied_at
            else None,
            "next_sync": next_sync.isoformat(),
            "message": IN_PROGRESS,
            "declared_in": ch.source,
        }
    return rows
