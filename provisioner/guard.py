"""The mass-removal guard: an emptied checkout must never take the gateway down.

A removal is the one change a reconcile cannot take back by itself: the account and keys go
and the sender's uploads move to the archive. A declarations checkout emptied by mistake, a
bad merge or a wrong path all look like "these qualities left", so a plan that removes more
channels than a threshold is refused as a whole by `apply` and `reconcile` (which applies
through `apply`): nothing is removed and nothing else is applied either, because a
half-applied bad revision is worse than a run that waits for an operator. The operator
accepts a planned mass removal with `--allow-removals N` for one run, or raises the setting.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from provisioner.errors import RemovalGuardError
from provisioner.plan import ChannelAction, ChannelPlan, RemovalGuard
from provisioner.settings import HostSettings
from provisioner.state import StateSnapshot


def assess(
    settings: HostSettings, snapshot: StateSnapshot, channels: Iterable[ChannelPlan]
) -> RemovalGuard:
    """The verdict on a plan's channels, before any allowance."""
    live = sum(1 for r in snapshot.registrations.values() if r.status != "removed")
    removals = sum(1 for c in channels if c.action is ChannelAction.REMOVE)
    # Rounded down: "5 % of 30 channels" must not let 2 through.
    share = math.floor(live * settings.max_removals_percent / 100)
    return RemovalGuard(
        removals=removals,
        threshold=max(settings.max_removals, share),
        live=live,
        max_removals=settings.max_removals,
        max_removals_percent=settings.max_removals_percent,
    )


def _percent(value: float) -> str:
    return f"{value:g} %"


def basis(guard: RemovalGuard) -> str:
    return (
        f"the larger of max_removals {guard.max_removals} and max_removals_percent "
        f"{_percent(guard.max_removals_percent)} of {guard.live} registered channel"
        f"{'s' if guard.live != 1 else ''}"
    )


def verdict(guard: RemovalGuard) -> str:
    """One line for the plan: what apply and reconcile will do with these removals."""
    n = guard.removals
    what = f"{n} removal{'s' if n != 1 else ''}"
    if not guard.over:
        return f"{what}, within the threshold of {guard.threshold} ({basis(guard)})"
    if not guard.refused:
        return (
            f"{what}, over the threshold of {guard.threshold} ({basis(guard)}), "
            f"accepted by --allow-removals {guard.allowed}"
        )
    return (
        f"REFUSED: {what}, over the threshold of {guard.threshold} ({basis(guard)}); "
        f"apply and reconcile refuse this plan as a whole unless --allow-removals {n}"
    )


def enforce(guard: RemovalGuard | None) -> None:
    """Raise before anything is committed when the guard refuses the plan."""
    if guard is None or not guard.refused:
        return
    n = guard.removals
    short = (
        f"; --allow-removals {guard.allowed} accepts only {guard.allowed}"
        if guard.allowed is not None
        else ""
    )
    raise RemovalGuardError(
        f"mass-removal guard: this run would remove {n} channels, more than the threshold "
        f"of {guard.threshold} ({basis(guard)}){short}; nothing was removed or applied. "
        "If the declarations are what you meant, run again with "
        f"--allow-removals {n} (or raise max_removals in the settings); if not, fix the "
        "checkout or the path",
        removals=n,
        threshold=guard.threshold,
    )
