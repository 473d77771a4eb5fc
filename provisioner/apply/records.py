"""What an apply records: the state's statuses and allocation, the audit log, and the host
record of what it left on the host (`provisioner.hostrecord`)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import IO, Any, Literal

from provisioner.apply.converge import StateMoved
from provisioner.apply.result import ApplyResult
from provisioner.cache import RACY_NS, RESTAMP_MIN
from provisioner.hostrecord import (
    ChannelRecord,
    HostRecord,
    channel_fingerprint,
    listing_stamp,
    stamp,
)
from provisioner.identity import to_record
from provisioner.pending import REMOVAL_ROLLED_BACK, ROLLED_BACK
from provisioner.plan import PathChange, PathState, compare
from provisioner.quality_id import QualityId
from provisioner.reconcile import Reconciliation, unknown_in
from provisioner.render import MEMO_ROLES, Channel
from provisioner.settings import HostSettings
from provisioner.state import (
    ChannelStatus,
    Registration,
    StaleState,
    StateSnapshot,
    StateStore,
)
from provisioner.state.store import StatusUpdate

# --- the state -----------------------------------------------------------------------------


def commit_allocation(
    store: StateStore, rec: Reconciliation, revision: str | None, now: datetime
) -> StateSnapshot:
    """Commit what this run allocated (sender numbers, uids, removals), if anything; the
    state as this run leaves it."""
    if not (rec.allocation.changed or rec.allocation.refused):
        return rec.snapshot
    try:
        return store.commit(rec.allocation, revision=revision, now=now)
    except StaleState as exc:
        # Before anything live changed: `apply` plans again and retries (see converge).
        raise StateMoved(f"{exc}") from None


def uncommitted(rec: Reconciliation) -> list[Registration]:
    """The registrations this run's commit moved (removed, returning) as they were before."""
    before = rec.snapshot.registrations
    moved = [*rec.allocation.removed, *(r.qid for r in rec.allocation.returning)]
    return [before[q] for q in moved if q in before]


def record_failure(
    store: StateStore, rec: Reconciliation, reason: str, revision: str | None, now: datetime
) -> None:
    regs = store.snapshot().registrations
    # The rollback put back what was served before: a channel applied before serves its last
    # good configuration (`degraded`); `failed` is for a channel never applied.
    updates = {
        channel.qid: StatusUpdate(
            channel.qid,
            _held_status(regs[channel.qid]),
            ROLLED_BACK + reason,
            revision,
        )
        for channel in (*rec.accepted, *rec.routed)
        if channel.qid in regs
    }
    # The state already says "removed", but the rollback put the account, keys and chroot
    # back: say so. The next run, still not declared, removes it again.
    for qid in rec.allocation.removed:
        if qid in regs:
            updates[qid] = StatusUpdate(
                qid, _held_status(regs[qid]), REMOVAL_ROLLED_BACK + reason, revision
            )
    # One transaction for all of them: one per channel took 10 s for 10,000 channels.
    store.set_statuses(updates.values(), now=now)


def record_success(
    store: StateStore,
    rec: Reconciliation,
    revision: str | None,
    now: datetime,
    known: StateSnapshot,
) -> None:
    # `known` is the state as this run left it; read it again only if another writer (a
    # second host sharing the database) moved it on since.
    regs = (known if store.version() == known.version else store.snapshot()).registrations
    updates: dict[QualityId, StatusUpdate] = {}
    # A quality without SFTP is live once its routing entry is.
    for channel in (*rec.accepted, *rec.routed):
        current = regs.get(channel.qid)
        if current is not None and (current.status != "active" or current.revision != revision):
            updates[channel.qid] = StatusUpdate(channel.qid, "active", None, revision)
    for en, reasons in rec.refusals.items():
        current = regs.get(en)
        reason = "; ".join(reasons)
        if current is None or current.status == "removed":
            continue
        # Refused after it was applied: its files are still served (`degraded`, since the
        # first refused run: status_since moves only with the status). Never applied: `failed`.
        status = _held_status(current)
        if current.status != status or current.status_reason != reason:
            updates[en] = StatusUpdate(en, status, reason, None)
    store.set_statuses(updates.values(), now=now)
    # Which file declares each applied channel: when it is refused later, it still says whose.
    store.record_declared(
        to_record(rec.declared, regs, rec.report.root, unchanged=rec.unchanged.keys())
    )


def record_served(
    store: StateStore,
    rec: Reconciliation,
    settings: HostSettings,
    revision: str | None,
    now: datetime,
) -> None:
    """Which keys and which revision each channel has on this host now."""
    # Which channel has which key now: a quality that declares one of them later is refused.
    # A quality that keeps only its other channels has no keys here any more.
    released = [*rec.allocation.removed, *(c.qid for c in rec.routed)]
    store.record_channel_keys(rec.channel_keys, released, now=now)
    # Which revision this host serves per channel (`status` shows it for every host);
    # held and deferred channels still serve what they served, the rest is gone.
    store.record_host_channels(
        settings.host_name,
        {c.qid: revision for c in (*rec.accepted, *rec.routed)},
        keep={*rec.refusals, *(r.qid for r in (*rec.held, *rec.deferred))},
        now=now,
    )


def _held_status(reg: Registration) -> ChannelStatus:
    """The status of a channel this run did not apply: what a sender sees of it. A quality
    coming back after a removal is `pending` again, and serves nothing until applied."""
    served = reg.last_applied_at is not None and reg.status != "pending"
    return "degraded" if served else "failed"


# --- the audit log -------------------------------------------------------------------------


def audit(settings: HostSettings, entries: Sequence[dict[str, Any]]) -> None:
    if not entries:
        return
    path = settings.audit_log
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o640)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        _write_lines(fh, entries)
        fh.flush()
        os.fsync(fh.fileno())


def _write_lines(fh: IO[str], entries: Sequence[dict[str, Any]]) -> None:
    for entry in entries:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")


def audit_entries(
    rec: Reconciliation, result: ApplyResult, revision: str | None, now: datetime
) -> list[dict[str, Any]]:
    users = {c.key: c.user for c in rec.accepted}
    users.update({str(r.qid): r.technical_user for r in rec.removed})
    out = []
    for change in result.applied:
        out.append(
            {
                "time": now.isoformat(),
                "revision": revision,
                "channel": change.channel,
                "user": users.get(change.channel or ""),
                "change": change.action.value,
                "path": change.path,
                "before": change.before.sha256 if change.before else None,
                "after": change.after.sha256 if change.after else None,
                "details": list(change.details),
            }
        )
    for ch in rec.plan.channels:
        if ch.action.value in ("create", "remove", "refused"):
            out.append(
                {
                    "time": now.isoformat(),
                    "revision": revision,
                    "channel": str(ch.qid),
                    "user": ch.technical_user,
                    "change": f"channel-{ch.action.value}",
                    "sender": ch.sender_number,
                    "reasons": list(ch.reasons),
                }
            )
    return out


# --- the host record -----------------------------------------------------------------------


def remember(rec: Reconciliation, applied: Sequence[PathChange]) -> None:
    """Record what this apply left on the host, so that the next run need not read it all
    again (see `provisioner.hostrecord`). Only channels whose paths are now as rendered are
    recorded; the others are rendered and compared in full next time.

    Like the declarations cache, the record is rewritten for new stamps alone (files that
    were too recent to stamp last time) only once that saves real work: an apply that
    changes nothing leaves every file alone, this one included."""
    if rec.memo.record is None:
        return
    _wait_out_racy_window(applied)
    at = time.time_ns()
    old = rec.memo.record.channels
    new = HostRecord(rec.memo.record.context)
    changed = set(old) != {c.key for c in rec.accepted}
    restamped = 0
    for channel in rec.accepted:
        record, how = _channel_record(rec, channel, old.get(channel.key), at)
        if record is not None:
            new.channels[channel.key] = record
        changed = changed or how == "changed"
        if how == "restamped":
            restamped += 1
    for node in rec.tree:
        if node.role in MEMO_ROLES and node.kind == "file":
            state = PathState.of_desired(node)
            new.host_files[node.role] = [rec.memo.host_keys[node.role], state.sha256, state.size]
    changed = changed or new.host_files != rec.memo.record.host_files
    if changed or restamped >= max(RESTAMP_MIN, len(new.channels) // 100):
        new.save(rec.settings)


# How a channel's record differs from the last one: "restamped" is new stamps alone, worth a
# rewrite only in numbers; "changed" is rewritten at once.
_Difference = Literal["same", "restamped", "changed"]


def _wait_out_racy_window(applied: Sequence[PathChange]) -> None:
    written = sum(
        1 for c in applied if c.channel is not None and c.kind == "file" and c.after is not None
    )
    if written > RESTAMP_MIN:
        # Files written in the last two seconds cannot be stamped (see hostrecord), and the
        # next runs would render their channels and read them again: after a first apply,
        # thousands. Waiting out the window once here is cheaper than that.
        time.sleep(RACY_NS / 1e9)


def _channel_record(
    rec: Reconciliation, channel: Channel, before: ChannelRecord | None, at: int
) -> tuple[ChannelRecord | None, _Difference]:
    """The channel's record after this apply (None: not as rendered, not recorded), and how
    it differs from `before`."""
    kept = rec.memo.unchanged.get(channel.qid)
    if kept is not None:
        return _kept_record(rec, channel.qid, kept)
    fresh = _stamped_record(rec, channel, at)
    if fresh is None:
        return None, "changed"
    if before is not None and _same_but_stamps(before, fresh):
        return fresh, "restamped"
    return fresh, "changed"


def _kept_record(
    rec: Reconciliation, en: QualityId, kept: ChannelRecord
) -> tuple[ChannelRecord, _Difference]:
    """Untouched by this apply: what compute saw still holds, but for its chroot's listing."""
    unknown, listing = rec.memo.chroot_unknown.get(en, ([], None))
    if (unknown, listing) == (kept.unknown, kept.listing):
        return kept, "same"
    how: _Difference = "changed" if unknown != kept.unknown else "restamped"
    return replace(kept, unknown=unknown, listing=listing, raw=None), how


def _stamped_record(rec: Reconciliation, channel: Channel, at: int) -> ChannelRecord | None:
    """A new record of a channel this apply rendered, from stamps of its paths as they are
    now; None if one of them is not as rendered (or too recent to stamp)."""
    en = channel.qid
    nodes = rec.channel_nodes.get(en, [])
    chroot = str(rec.settings.chroot(channel.user))
    files: list[list[Any]] = []
    dirs: list[list[Any]] = []
    prints = []
    for node in nodes:
        stamped = stamp(node.path, node.kind, chroot, at)
        if stamped is None or compare(node, stamped[1], owners=rec.plan.owners_managed) is not None:
            return None
        entry, observed = stamped
        (files if node.kind == "file" else dirs).append(entry)
        prints.append(observed.fingerprint())
    return ChannelRecord(
        key=rec.memo.keys[en],
        routing=rec.memo.routing[en],
        routing_digest=rec.memo.routing_digests[en],
        files=files,
        dirs=dirs,
        fingerprint=channel_fingerprint(prints),
        chroot=chroot,
        unknown=unknown_in(chroot, frozenset(str(n.path) for n in nodes)),
        listing=listing_stamp(chroot),
    )


def _same_but_stamps(a: ChannelRecord, b: ChannelRecord) -> bool:
    """The same record but for stamps of files that were too recent to stamp before (a file
    rewritten since has another inode or ctime: a real change, recorded at once)."""
    return (
        (a.key, a.routing_digest, a.dirs, a.fingerprint, a.chroot, a.unknown)
        == (b.key, b.routing_digest, b.dirs, b.fingerprint, b.chroot, b.unknown)
        and len(a.files) == len(b.files)
        and all(
            x[:5] == y[:5] and x[8] == y[8] and (x[6] is None or x[5:8] == y[5:8])
            for x, y in zip(a.files, b.files, strict=True)
        )
    )
