"""`apply`: one reconcile of the host, step by step (see `apply`'s docstring).

The steps live in the modules named after them: `lock`, `staging`, `sshd`, `readback`,
`records`, `live` (with `changes` and `journal` below it), `converge` (the retry around it all).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from provisioner.apply.converge import converging
from provisioner.apply.interrupt import Interruption
from provisioner.apply.journal import Journal, Owners
from provisioner.apply.live import LiveChanges
from provisioner.apply.lock import host_lock
from provisioner.apply.readback import abort_misrendered
from provisioner.apply.records import (
    audit,
    audit_entries,
    commit_allocation,
    record_served,
    record_success,
    remember,
)
from provisioner.apply.result import ApplyResult
from provisioner.apply.sshd import sshd_test
from provisioner.apply.staging import Staging, remove_stale_staging, stage
from provisioner.errors import PlanError
from provisioner.gcpause import paused_gc
from provisioner.guard import enforce
from provisioner.plan import PathChange, Plan
from provisioner.progress import ProgressCallback
from provisioner.reconcile import Reconciliation, compute
from provisioner.settings import HostSettings
from provisioner.state import StateStore


@converging
def apply(
    settings: HostSettings,
    paths: Sequence[Path],
    store: StateStore,
    *,
    saved_plan: Plan | None = None,
    now: datetime | None = None,
    revision: str | None = None,
    cwd: Path | None = None,
    progress: Callable[[int, int, PathChange], None] | None = None,
    report_progress: ProgressCallback | None = None,
    use_cache: bool = True,
    allow_removals: int | None = None,
    interrupt: Interruption | None = None,
) -> ApplyResult:
    """Reconcile the host; `progress(done, total, change)` is called after each change.
    `interrupt`: an installed `Interruption`, for the signal policy it describes.
    `use_cache=False`: compare everything in full, trusting no cache (see `compute`).
    `allow_removals`: how many removals over the mass-removal guard's threshold this run
    accepts (see `provisioner.guard`); a plan over it raises before anything is committed.
    `report_progress(stage, done, total)`: the steps of the plan and of the changes, for a
    progress bar or log (see `provisioner.progress`).

    The steps: under the host lock, compute the plan; refuse a stale saved plan and a mass
    removal; read the rendered keys back; stage and `sshd -t`; commit the allocation; make the
    journalled changes and reload (all rolled back if that cannot finish); record the
    statuses and what each channel serves; audit; remember what the host now holds."""
    now = now or datetime.now(UTC)
    # Not installed, it sees no signal: the library installs no handler unasked.
    interrupt = interrupt or Interruption()
    with host_lock(settings.lock_file), paused_gc():
        interrupt.phase = "prepare"  # again when `converging` plans a second time
        stale_staging = remove_stale_staging(settings.work_dir)
        rec = compute(
            settings,
            paths,
            store.snapshot(),
            now=now,
            revision=revision,
            cwd=cwd,
            write_cache=True,
            use_cache=use_cache,
            progress=report_progress,
        )
        if saved_plan is not None:
            _refuse_if_stale(saved_plan, rec.plan)
        _guard_removals(rec.plan, allow_removals)
        result = ApplyResult(rec.plan, rec)
        result.stale_staging = stale_staging
        result.aborted = abort_misrendered(rec)
        owners = Owners(rec.plan.owners_managed)
        result.owners_not_set = owners.not_set
        interrupt.check()
        with Staging(settings.work_dir) as staging:
            _stage_and_check(rec, settings, staging.path, result)
            interrupt.check()
            interrupt.phase = "commit"
            committed = commit_allocation(store, rec, revision, now)
            journal = Journal(
                staging.path / "backup", settings.archive_dir, f"{now:%Y%m%dT%H%M%SZ}"
            )
            live = LiveChanges(
                rec, settings, store, journal, owners, result, interrupt, now, revision
            )
            live.run(progress, report_progress)
        record_success(store, rec, revision, now, committed)
        record_served(store, rec, settings, revision, now)
        audit(settings, audit_entries(rec, result, revision, now))
        remember(rec, result.applied)
        if interrupt.requested:
            result.interrupted = interrupt.signum
        return result


def _refuse_if_stale(saved: Plan, fresh: Plan) -> None:
    """A saved plan is applied only as it was reviewed: nothing it was computed from moved."""
    moved = _what_moved(saved, fresh)
    if moved:
        raise PlanError(
            "the saved plan is stale and was not applied: " + "; ".join(moved) + "; make a new plan"
        )


def _what_moved(saved: Plan, fresh: Plan) -> list[str]:
    a, b = saved.fingerprints, fresh.fingerprints
    moved = []
    if a.declarations != b.declarations:
        moved.append("the declarations changed")
    if a.state_version != b.state_version:
        moved.append(f"the state moved on (version {a.state_version} -> {b.state_version})")
    if a.observed != b.observed:
        moved.append("the files on the host changed")
    if a.settings != b.settings:
        moved.append("the host settings changed")
    if saved.root != fresh.root:
        moved.append(f"the plan is for root {saved.root}, not {fresh.root}")
    return moved


def _guard_removals(plan: Plan, allow_removals: int | None) -> None:
    """Before the state, the staging area or any live file is touched: a refused mass
    removal removes nothing and applies nothing."""
    if plan.removal_guard is not None:
        plan.removal_guard = replace(plan.removal_guard, allowed=allow_removals)
    enforce(plan.removal_guard)


def _stage_and_check(
    rec: Reconciliation, settings: HostSettings, staging: Path, result: ApplyResult
) -> None:
    """Everything this run writes, staged, and the staged sshd configuration checked."""
    if not rec.plan.changes:
        return
    staged_dropin = stage(rec, staging / "tree")
    if settings.sshd_check:
        sshd_test(settings, staged_dropin, staging)
        result.sshd_checked = True
