"""Hosts sharing one state database: plan again when another host committed first."""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from typing import ParamSpec

from provisioner import logs
from provisioner.apply.result import ApplyResult
from provisioner.errors import PlanError
from provisioner.settings import HostSettings


class StateMoved(PlanError):
    """Another writer (a second host sharing the database) committed between this run's
    snapshot and its commit; nothing live was changed yet."""


_P = ParamSpec("_P")


def converging(fn: Callable[_P, ApplyResult]) -> Callable[_P, ApplyResult]:
    """Plan again and retry when another host moved the state on, within the same run.

    Hosts sharing one database fire in the same slot; all but the first find the state moved
    on at their commit. Their next plan starts from what the first committed (the same sender
    numbers and uids), so it commits nothing new and goes through: without a retry the
    losers skipped every slot in which anything was allocated. Bounded (`state_retries`
    attempts), with a random pause that grows, so that hosts do not collide again in step.
    A saved plan is never re-planned: what the operator reviewed is stale, and they are told.
    Only this case is retried; any other error ends the run as before.
    """

    @functools.wraps(fn)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> ApplyResult:
        settings = args[0] if args else kwargs["settings"]
        assert isinstance(settings, HostSettings)
        attempts = 1 if kwargs.get("saved_plan") is not None else settings.state_retries
        for attempt in range(1, attempts + 1):
            try:
                result = fn(*args, **kwargs)
            except StateMoved as exc:
                if attempt == attempts:
                    if attempts == 1:
                        raise
                    raise StateMoved(
                        f"{exc.message} (gave up after {attempts} attempts: other hosts kept "
                        "committing first)"
                    ) from None
                _pause_before(attempt + 1, attempts, settings)
                continue
            result.attempts = attempt
            return result
        raise AssertionError("unreachable: the last attempt returns or raises")

    return run


def _pause_before(attempt: int, attempts: int, settings: HostSettings) -> None:
    """A random pause that grows with the attempts, said in the log."""
    ceiling = min(
        settings.state_retry_max_delay,
        settings.state_retry_min_delay * 2 ** (attempt - 1),
    )
    pause = random.uniform(settings.state_retry_min_delay, max(ceiling, 0.0))
    logs.warn(
        "state-moved-retry",
        f"another host changed the state first; planning again in {pause:.2f}s "
        f"(attempt {attempt} of {attempts})",
        host=settings.host_name,
        attempt=attempt,
        attempts=attempts,
        pause=round(pause, 3),
    )
    time.sleep(pause)
