"""When the reconciler runs: wall-clock slots, an injectable clock, the loop, and signals.

Runs are aligned to the wall clock (:00 and :30 for "30m"), not "every 30 minutes after start":
the SFTP host is known to pick up registrations around :00 and :30. Slots count from local
midnight, so an interval must divide an hour or a day. The clock is injected, so tests move time
instead of sleeping.

SIGTERM and SIGINT never interrupt an apply: they are noted, the current run finishes (an apply
either completes or rolls back on its own), and the loop then ends cleanly. While waiting for
the next slot they end the loop at once.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Protocol

from provisioner import logs
from provisioner.errors import SettingsError

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
_INTERVAL = re.compile(r"^\s*([0-9]+)\s*([smh]?)\s*$")
_UNITS = {"s": 1, "": 60, "m": 60, "h": 3600}


def parse_interval(text: str) -> timedelta:
    """`30m`, `1h`, `15m`, `90s`… (a bare number is minutes); it must divide an hour or a day."""
    match = _INTERVAL.match(text)
    if not match:
        raise SettingsError(f"'{text}' is not an interval like 30m, 15m or 1h")
    every = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    check_interval(every, text)
    return every


def check_interval(every: timedelta, text: str | None = None) -> None:
    shown = text or format_interval(every)
    if every < timedelta(minutes=1) or every.total_seconds() % 60:
        raise SettingsError(f"the interval {shown} must be whole minutes, at least 1m")
    if every > DAY:
        raise SettingsError(f"the interval {shown} must not be longer than a day")
    if HOUR % every and (every % HOUR or DAY % every):
        raise SettingsError(
            f"the interval {shown} must divide an hour (such as 5m, 10m, 15m, 20m, 30m, 60m) or a day in whole hours "
            "(1h, 2h, 3h, 4h, 6h, 8h, 12h, 24h), so that runs fall on the same clock times"
        )


def format_interval(every: timedelta) -> str:
    seconds = int(every.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def next_slot(now: datetime, every: timedelta) -> datetime:
    """The first slot strictly after `now`, counted from midnight in `now`'s own time zone.

    `now` must be timezone-aware; the result is in UTC. For "30m" the slots are :00 and :30 of
    every hour; for "6h" they are 00:00, 06:00, 12:00 and 18:00 local time.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    offset = now.utcoffset() or timedelta(0)
    wall = now.replace(tzinfo=None)
    midnight = wall.replace(hour=0, minute=0, second=0, microsecond=0)
    slots = (wall - midnight) // every + 1
    return (midnight + slots * every - offset).replace(tzinfo=UTC)


def on_calendar(every: timedelta) -> str:
    """The systemd `OnCalendar=` expression of the same slots (`*-*-* *:00,30:00` for 30m)."""
    check_interval(every)
    minutes = int(every.total_seconds()) // 60
    if minutes <= 60:
        marks = ",".join(f"{m:02d}" for m in range(0, 60, minutes))
        return f"*-*-* *:{marks}:00"
    hours = ",".join(f"{h:02d}" for h in range(0, 24, minutes // 60))
    return f"*-*-* {hours}:00:00"


# --- clocks --------------------------------------------------------------------------------


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (in the zone whose wall clock the slots follow)."""
        ...

    def wait_until(self, when: datetime, stop: threading.Event) -> bool:
        """Wait until `when`; False when `stop` was set first."""
        ...


class SystemClock:
    """The machine's wall clock in its local zone; waits wake up for a stop at once."""

    # Waking up now and then catches a suspended machine or a clock that was set.
    max_nap = 30.0

    def now(self) -> datetime:
        return datetime.now(UTC).astimezone()

    def wait_until(self, when: datetime, stop: threading.Event) -> bool:
        while not stop.is_set():
            remaining = (when - datetime.now(UTC)).total_seconds()
            if remaining <= 0:
                return True
            stop.wait(min(remaining, self.max_nap))
        return False


# --- signals -------------------------------------------------------------------------------


class Stopper:
    """Turns SIGTERM and SIGINT into a request to stop after the current run."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: int | None = None
        self.busy = False

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def request(self, signum: int | None = None) -> None:
        if self.signal is None:
            self.signal = signum
        self.event.set()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        already = self.event.is_set()
        self.request(signum)
        if already:
            logs.warn("stop-pending", "already stopping; the current run is being finished")
        elif self.busy:
            logs.warn(
                "stop-requested",
                "finishing the current run first (an apply completes or rolls back), then exiting",
                signal=name,
            )
        else:
            logs.event("stop-requested", "exiting", signal=name)

    @contextmanager
    def installed(self) -> Iterator[Stopper]:
        """Handle SIGTERM and SIGINT inside the block (main thread only); restore afterwards."""
        previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextmanager
    def working(self) -> Iterator[None]:
        self.busy = True
        try:
            yield
        finally:
            self.busy = False


# --- the loop ------------------------------------------------------------------------------


@dataclass(slots=True)
class LoopStats:
    runs: int = 0
    failures: int = 0
    slots: list[datetime] | None = None


def run_loop(
    job: Callable[[datetime, datetime], bool],
    every: timedelta,
    *,
    clock: Clock,
    stopper: Stopper,
    max_runs: int | None = None,
) -> LoopStats:
    """Call `job(slot, next_slot)` at every slot until stopped; returns what happened.

    `job` returns whether the run succeeded. A failed run, or a job that raises, never ends the
    loop. A run that overruns the next slot is not repeated to catch up: the loop waits for the
    first slot after it finished.
    """
    stats = LoopStats(slots=[])
    while not stopper.requested:
        slot = next_slot(clock.now(), every)
        logs.event("waiting", next_run=slot.astimezone().isoformat(timespec="seconds"))
        if not clock.wait_until(slot, stopper.event):
            break
        assert stats.slots is not None
        stats.slots.append(slot)
        with stopper.working():
            try:
                ok = job(slot, next_slot(slot, every))
            except Exception as exc:
                # A bug in one run is logged with its traceback; the next slot still runs.
                logs.log.exception(
                    "the run failed unexpectedly; the next run is at the next slot",
                    extra={"event": "run-crashed", "fields": {"error": type(exc).__name__}},
                )
                ok = False
        stats.runs += 1
        if not ok:
            stats.failures += 1
        if max_runs is not None and stats.runs >= max_runs:
            break
    return stats
