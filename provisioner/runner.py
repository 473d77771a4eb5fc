"""One scheduled reconcile run: update the checkout, apply, notify, record, heartbeat.

Whatever happens inside, a run ends with a record in the state (when the state can be opened),
a heartbeat (status file and metrics) and log lines; it never raises for a failure it can name,
so that the loop goes on at the next slot.

Outcomes: `ok` (everything declared is applied), `partial` (applied, but a notification could
not be delivered), `degraded` (applied what it could, but the host may still serve what the
declarations no longer say: a file was refused, a quality held on its last good configuration,
removals deferred), `failed` (nothing applied: the checkout could not be updated or verified,
the lock was held, the mass-removal guard refused the plan, apply failed and rolled back…). Only `ok` is a healthy run (exit code 0,
`last_run_ok` 1); `ok`, `partial` and `degraded` count as a success for the heartbeat's "last
success": the apply completed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisioner import logs
from provisioner.errors import ProvisionerError, RemovalGuardError
from provisioner.heartbeat import Heartbeat, carry_over, expiries, read_status, write
from provisioner.settings import HostSettings
from provisioner.state import RunOutcome, RunRecord, StateError, StateSnapshot, StateStore
from provisioner.state.model import CHANNEL_STATUSES

if TYPE_CHECKING:
    # Typing only: apply is imported when a run starts, as run_once does.
    from provisioner.apply import ApplyResult

STEPS = ("checkout", "apply", "notify", "record")


@dataclass(frozen=True, slots=True)
class RunOptions:
    paths: tuple[Path, ...]
    pull: bool = False
    verify_signatures: bool = False
    notify: bool = True
    cwd: Path | None = None
    # Removals over the mass-removal guard's threshold this run accepts (--allow-removals).
    allow_removals: int | None = None


@dataclass(slots=True)
class RunReport:
    started_at: datetime
    finished_at: datetime | None = None
    outcome: RunOutcome = "failed"
    revision: str | None = None
    previous_revision: str | None = None
    errors: list[str] = field(default_factory=list)
    applied: int = 0
    plan: dict[str, int] = field(default_factory=dict)
    channels: dict[str, int] = field(default_factory=dict)
    notifications: dict[str, int] = field(default_factory=dict)
    duration_seconds: float = 0.0
    recorded: bool = False
    # Removals a broken file put off, and the files that did.
    removals_deferred: int = 0
    deferred_by: list[str] = field(default_factory=list)
    # The mass-removal guard refused the run, and how many removals it refused.
    removal_guard_tripped: bool = False
    removals_refused: int = 0
    # This host's name (`host_name`), and how many plans the apply took (more than one:
    # another host sharing the state committed first).
    host: str | None = None
    attempts: int = 0
    # Certificate and first key expiry per SFTP login (Unix time), for the metrics.
    certificate_expiry: dict[str, float] = field(default_factory=dict)
    key_expiry: dict[str, float] = field(default_factory=dict)

    @property
    def short_revision(self) -> str | None:
        return self.revision[:12] if self.revision else None

    @property
    def succeeded(self) -> bool:
        """The apply completed (what `last_success` means), healthy or not."""
        return self.outcome in ("ok", "partial", "degraded")

    def summary(self) -> dict[str, Any]:
        return {
            "previous_revision": self.previous_revision,
            "applied_changes": self.applied,
            "plan": self.plan,
            "channels": self.channels,
            "notifications": self.notifications,
            "duration_seconds": round(self.duration_seconds, 3),
            "errors": self.errors,
            "removals_deferred": self.removals_deferred,
            "deferred_by": self.deferred_by,
            "removal_guard_tripped": self.removal_guard_tripped,
            "removals_refused": self.removals_refused,
            "attempts": self.attempts,
        }


def channel_counts(snapshot: StateSnapshot) -> dict[str, int]:
    counts = dict.fromkeys(sorted(CHANNEL_STATUSES), 0)
    for reg in snapshot.registrations.values():
        counts[reg.status] = counts.get(reg.status, 0) + 1
    return counts


def _update_checkout(options: RunOptions, report: RunReport) -> None:
    from provisioner import gitsync

    if not (options.pull or options.verify_signatures):
        report.revision = _plain_revision(options.paths)
        report.previous_revision = report.revision
        return
    root = gitsync.checkout_of(options.paths)
    if options.pull:
        update = gitsync.pull(root, verify=options.verify_signatures)
        report.previous_revision, report.revision = update.before, update.after
        if update.moved:
            logs.event("pulled", before=update.before[:12], after=update.after[:12])
    else:
        gitsync.require_clean(root)
        report.revision = report.previous_revision = gitsync.revision(root)
    if options.verify_signatures:
        assert report.revision is not None
        signer = gitsync.verify_revision(root, report.revision)
        logs.event("signature-verified", revision=report.revision[:12], signer=signer or None)


def _plain_revision(paths: Sequence[Path]) -> str | None:
    from provisioner.discovery import find_root
    from provisioner.gitbase import head_revision

    root = find_root(list(paths))
    return head_revision(root) if (root / ".git").exists() else None


def run_once(
    settings: HostSettings,
    options: RunOptions,
    *,
    now: datetime | None = None,
    next_run: datetime | None = None,
    environ: Mapping[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> RunReport:
    """One complete run; never raises for a failure of the run itself."""
    from provisioner.apply import apply

    environ = os.environ if environ is None else environ
    started = now or datetime.now(UTC)
    clock = time.monotonic()
    report = RunReport(started_at=started, host=settings.host_name)
    step = progress or (lambda _what: None)
    logs.event("run-started", paths=" ".join(map(str, options.paths)))
    store: StateStore | None = None
    try:
        # Opened first, so that a run refused at the checkout is recorded too.
        store = StateStore.open(settings.state_url)
        _update_checkout(options, report)
        step("checkout")
        before = store.snapshot()
        result = apply(
            settings,
            options.paths,
            store,
            now=started,
            revision=report.revision,
            cwd=options.cwd,
            allow_removals=options.allow_removals,
        )
        step("apply")
        report.applied = len(result.applied)
        report.attempts = result.attempts
        report.plan = result.plan.counts()
        if result.reconciliation is not None:
            report.certificate_expiry, report.key_expiry = expiries(
                result.reconciliation.report.summaries
            )
        _judge(result, report)
        after = store.snapshot()
        report.channels = channel_counts(after)
        logs.event(
            "applied",
            revision=report.short_revision,
            changes=report.applied,
            channels=",".join(f"{k}:{v}" for k, v in report.plan.items() if v) or None,
        )
        if options.notify and settings.notifications:
            _notify(settings, options, store, result, before, after, environ, report)
        step("notify")
    except (ProvisionerError, StateError, OSError) as exc:
        report.outcome = "failed"
        report.errors.append(str(exc))
        logs.error("run-failed", str(exc), kind=type(exc).__name__)
        if isinstance(exc, RemovalGuardError):
            report.removal_guard_tripped = True
            report.removals_refused = exc.removals
    except Exception as exc:
        # A bug: logged with its traceback, recorded as a failed run, and the loop goes on.
        report.outcome = "failed"
        report.errors.append(f"internal error: {type(exc).__name__}: {exc}")
        logs.log.exception(
            "internal error during the run",
            extra={"event": "run-crashed", "fields": {"error": type(exc).__name__}},
        )
    report.duration_seconds = time.monotonic() - clock
    report.finished_at = started + timedelta(seconds=report.duration_seconds)
    _record(store, report)
    if store is not None:
        # A failed run changed nothing (it was refused or rolled back): the ledger already
        # published says the same, and looking at a failure must leave the host as it was.
        if report.outcome != "failed":
            _publish_ledger(settings, store, report, next_run)
        store.close()
    _heartbeat(settings, report, next_run)
    step("record")
    logs.event(
        "run-finished",
        outcome=report.outcome,
        revision=report.short_revision,
        duration=f"{report.duration_seconds:.2f}s",
        errors=len(report.errors),
    )
    return report


def _notify(
    settings: HostSettings,
    options: RunOptions,
    store: StateStore,
    result: Any,
    before: StateSnapshot,
    after: StateSnapshot,
    environ: Mapping[str, str],
    report: RunReport,
) -> None:
    """Tell the contacts; the apply is done, so a failure here makes the run partial."""
    from provisioner.notify import notify_run
    from provisioner.reconcile import compute

    now = report.started_at
    try:
        # Until apply hands back its Reconciliation, the declarations are read once more
        # (read-only) for the contacts, certificates and keys.
        rec = getattr(result, "reconciliation", None) or compute(
            settings, options.paths, after, now=now, revision=report.revision, cwd=options.cwd
        )
        outcome = notify_run(
            settings,
            store,
            report=rec.report,
            refusals=rec.refusals,
            before=before,
            after=after,
            now=now,
            environ=environ,
        )
    except (ProvisionerError, StateError, OSError) as exc:
        errors = [f"notifications: {exc}"]
        logs.error("notify-failed", str(exc))
    else:
        report.notifications = outcome.figures()
        errors = outcome.errors
    if errors:
        report.errors.extend(errors)
        if report.outcome == "ok":
            report.outcome = "partial"


def _judge(result: ApplyResult, report: RunReport) -> None:
    """`ok`, or `degraded` with every reason named: refused qualities and files, and the
    removals a broken file put off (logged with that file: revocations are waiting on it)."""
    rec = result.reconciliation
    plan = result.plan
    degraded = rec.degraded if rec is not None else plan.has_refusals
    report.outcome = "degraded" if degraded else "ok"
    for ch in plan.refused:
        who = ch.qid if ch.quality_type else ch.enterprise_number
        report.errors.append(f"quality {who} refused: {'; '.join(ch.reasons[:1])}")
    for reason in plan.unidentified:
        report.errors.append(f"file refused: {reason}")
    if rec is not None and rec.deferred_by:
        report.removals_deferred = len(rec.deferred)
        report.deferred_by = list(rec.deferred_by)
    if rec is not None and rec.deferred:
        users = ", ".join(r.technical_user for r in rec.deferred[:10])
        more = f" and {len(rec.deferred) - 10} more" if len(rec.deferred) > 10 else ""
        report.errors.append(
            f"{len(rec.deferred)} removals deferred by {', '.join(rec.deferred_by)}"
            + (f" ({users}{more} keep their logins)" if users else "")
        )
        logs.error(
            "removals-deferred",
            "removals deferred: cannot tell which quality these files declare",
            files=", ".join(rec.deferred_by),
            deferred=len(rec.deferred),
        )


def _record(store: StateStore | None, report: RunReport) -> None:
    if store is None:
        return
    try:
        store.record_run(
            RunRecord(
                started_at=report.started_at,
                finished_at=report.finished_at,
                revision=report.revision,
                outcome=report.outcome,
                summary=report.summary(),
                error="; ".join(report.errors) or None,
                host=report.host,
            )
        )
        report.recorded = True
    except (StateError, OSError) as exc:
        logs.error("run-not-recorded", str(exc))


def _publish_ledger(
    settings: HostSettings, store: StateStore, report: RunReport, next_run: datetime | None
) -> None:
    """The ledger CI reads (`validate --ledger`), from the state as this run left it."""
    from provisioner.ledger import publish

    assert report.finished_at is not None
    try:
        publish(store, settings, now=report.finished_at, next_sync=next_run)
    except (ProvisionerError, StateError, OSError) as exc:
        logs.error("ledger-not-written", str(exc), file=str(settings.ledger_file))


def _heartbeat(settings: HostSettings, report: RunReport, next_run: datetime | None) -> None:
    assert report.finished_at is not None
    beat = Heartbeat(
        host=settings.host_name,
        last_run=report.finished_at,
        outcome=report.outcome,
        duration_seconds=report.duration_seconds,
        revision=report.revision,
        errors=list(report.errors),
        channels=dict(report.channels),
        applied_changes=report.applied,
        plan=dict(report.plan),
        notifications=dict(report.notifications),
        next_run=next_run,
        removals_deferred=report.removals_deferred,
        deferred_by=list(report.deferred_by),
        removal_guard_tripped=report.removal_guard_tripped,
        removals_refused=report.removals_refused,
        certificate_expiry=dict(report.certificate_expiry),
        key_expiry=dict(report.key_expiry),
    )
    carry_over(beat, read_status(settings.status_file), success=report.succeeded)
    try:
        write(beat, settings.status_file, settings.metrics_file)
    except OSError as exc:
        logs.error("heartbeat-not-written", str(exc), file=str(settings.status_file))
