"""What an apply did, for its caller: the CLI's summary, notifications, the scheduler."""

from __future__ import annotations

from dataclasses import dataclass, field

from provisioner.plan import PathChange, Plan
from provisioner.reconcile import Reconciliation


@dataclass(slots=True)
class ApplyResult:
    plan: Plan
    # What the plan was computed from, so callers (notifications) need not compute it again.
    reconciliation: Reconciliation | None = None
    applied: list[PathChange] = field(default_factory=list)
    owners_not_set: list[str] = field(default_factory=list)
    archived: list[tuple[str, str, str]] = field(default_factory=list)
    reloaded: bool = False
    sshd_checked: bool = False
    # Channels whose rendered authorized_keys did not read back as their validated keys: an
    # internal error (a bug, or a site's template override); nothing of them was written.
    aborted: list[str] = field(default_factory=list)
    # How many times the run planned and tried to commit (more than 1: another host sharing
    # the state committed first, see `provisioner.apply.converge`).
    attempts: int = 1
    # Set when SIGINT/SIGTERM came during the apply and it finished (see Interruption).
    interrupted: int | None = None
    # Staging directories of earlier runs (killed) that this run removed.
    stale_staging: list[str] = field(default_factory=list)
