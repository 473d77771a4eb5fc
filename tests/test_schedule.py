"""Scheduled reconcile: wall-clock slots, the loop, failures, signals, the state's run history."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import NOW, USER_ONDERNEMING, USER_SECSOC, Host
from ops_support import FakeClock, Lines, provisioner_process, run

from provisioner.errors import SettingsError
from provisioner.schedule import (
    Stopper,
    next_slot,
    on_calendar,
    parse_interval,
    run_loop,
)

BRUSSELS_WINTER = timezone(timedelta(hours=1))
KATHMANDU = timezone(timedelta(hours=5, minutes=45))


# --- slots ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "every", "expected"),
    [
        # :00 and :30 of the wall clock, not "30 minutes after start".
        (datetime(2026, 11, 29, 10, 7, 13, tzinfo=BRUSSELS_WINTER), "30m", (10, 30)),
        (datetime(2026, 11, 29, 10, 30, 0, tzinfo=BRUSSELS_WINTER), "30m", (11, 0)),
        (datetime(2026, 11, 29, 10, 29, 59, 999999, tzinfo=BRUSSELS_WINTER), "30m", (10, 30)),
        (datetime(2026, 11, 29, 23, 45, tzinfo=BRUSSELS_WINTER), "30m", (0, 0)),
        (datetime(2026, 11, 29, 10, 7, tzinfo=BRUSSELS_WINTER), "15m", (10, 15)),
        (datetime(2026, 11, 29, 10, 7, tzinfo=BRUSSELS_WINTER), "1h", (11, 0)),
        # Whole hours count from local midnight, not from UTC midnight.
        (datetime(2026, 11, 29, 10, 7, tzinfo=BRUSSELS_WINTER), "6h", (12, 0)),
        # A zone 45 minutes off the hour still runs at its own :00 and :30.
        (datetime(2026, 11, 29, 10, 7, tzinfo=KATHMANDU), "30m", (10, 30)),
    ],
)
def test_next_slot_is_on_the_wall_clock(
    now: datetime, every: str, expected: tuple[int, int]
) -> None:
    slot = next_slot(now, parse_interval(every))
    assert slot.tzinfo is UTC
    local = slot.astimezone(now.tzinfo)
    assert (local.hour, local.minute, local.second, local.microsecond) == (*expected, 0, 0)
    assert slot > now


@pytest.mark.parametrize("text", ["7m", "90m", "5h", "25h", "45s", "0m", "often", ""])
def test_intervals_that_do_not_fall_on_the_same_clock_times_are_refused(text: str) -> None:
    with pytest.raises(SettingsError):
        parse_interval(text)


def test_on_calendar_matches_the_slots() -> None:
    assert on_calendar(parse_interval("30m")) == "*-*-* *:00,30:00"
    assert on_calendar(parse_interval("15m")) == "*-*-* *:00,15,30,45:00"
    assert on_calendar(parse_interval("60m")) == "*-*-* *:00:00"
    assert on_calendar(parse_interval("6h")) == "*-*-* 00,06,12,18:00:00"


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_slot(datetime(2026, 11, 29, 10, 7), timedelta(minutes=30))


# --- the loop, with an injected clock ------------------------------------------------------


def test_runs_happen_at_the_aligned_slots() -> None:
    clock = FakeClock(datetime(2026, 11, 29, 10, 7, 13, tzinfo=BRUSSELS_WINTER))
    started: list[datetime] = []

    def job(slot: datetime, upcoming: datetime) -> bool:
        started.append(clock.now())
        assert upcoming == slot + timedelta(minutes=30)
        clock.advance(timedelta(minutes=3, seconds=41))  # the run takes a while
        return True

    stats = run_loop(job, parse_interval("30m"), clock=clock, stopper=Stopper(), max_runs=4)
    assert [t.astimezone(BRUSSELS_WINTER).strftime("%H:%M:%S") for t in started] == [
        "10:30:00",
        "11:00:00",
        "11:30:00",
        "12:00:00",
    ]
    assert stats.runs == 4 and stats.failures == 0


def test_a_run_that_overruns_a_slot_is_not_caught_up_in_a_burst() -> None:
    clock = FakeClock(datetime(2026, 11, 29, 10, 7, tzinfo=BRUSSELS_WINTER))
    started: list[str] = []

    def job(_slot: datetime, _next: datetime) -> bool:
        started.append(clock.now().astimezone(BRUSSELS_WINTER).strftime("%H:%M"))
        if len(started) == 1:
            clock.advance(timedelta(minutes=47))  # past 11:00
        return True

    run_loop(job, parse_interval("30m"), clock=clock, stopper=Stopper(), max_runs=3)
    assert started == ["10:30", "11:30", "12:00"]


def test_a_failing_run_does_not_end_the_loop() -> None:
    clock = FakeClock(datetime(2026, 11, 29, 10, 7, tzinfo=UTC))
    outcomes = iter([RuntimeError("a bug in one run"), False, True])
    seen: list[str] = []

    def job(_slot: datetime, _next: datetime) -> bool:
        outcome = next(outcomes)
        seen.append(clock.now().strftime("%H:%M"))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    stats = run_loop(job, parse_interval("30m"), clock=clock, stopper=Stopper(), max_runs=3)
    assert seen == ["10:30", "11:00", "11:30"]
    assert (stats.runs, stats.failures) == (3, 2)


def test_a_signal_during_a_run_lets_it_finish_then_stops_the_loop() -> None:
    clock = FakeClock(datetime(2026, 11, 29, 10, 7, tzinfo=UTC))
    stopper = Stopper()
    finished: list[bool] = []

    def job(_slot: datetime, _next: datetime) -> bool:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs here; the run goes on
        finished.append(stopper.requested)
        return True

    with stopper.installed():
        stats = run_loop(job, parse_interval("30m"), clock=clock, stopper=stopper)
    assert finished == [True]
    assert stats.runs == 1
    assert stopper.signal == signal.SIGTERM
    # The previous handler is back.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_stop_while_waiting_ends_the_loop_without_a_run() -> None:
    stopper = Stopper()
    stopper.request()
    calls: list[datetime] = []
    stats = run_loop(
        lambda slot, _n: bool(calls.append(slot)) or True,
        parse_interval("30m"),
        clock=FakeClock(datetime(2026, 11, 29, 10, 7, tzinfo=UTC)),
        stopper=stopper,
    )
    assert stats.runs == 0 and not calls


# --- runs against a real host tree ---------------------------------------------------------


def test_a_failing_run_followed_by_a_good_one(host: Host) -> None:
    settings = host.settings()
    # An empty checkout (a botched clone): never read as "every quality was removed".
    (host.decls / "qualities").rename(host.base / "away")
    bad = run(settings, [host.decls], host.base, now=NOW)
    assert bad.outcome == "failed"
    assert "no declarations" in bad.errors[0]
    assert not settings.routing_table.exists()
    beat = json.loads(settings.status_file.read_text())
    assert (beat["ok"], beat["last_success"], beat["failed_runs_total"]) == (False, None, 1)

    (host.base / "away").rename(host.decls / "qualities")
    good = run(settings, [host.decls], host.base, now=NOW + timedelta(minutes=30))
    assert good.outcome == "ok", good.errors
    assert good.channels["active"] == 2

    with host.store() as store:
        runs = store.last_runs(5)
    assert [r.outcome for r in runs][:2] == ["ok", "failed"]
    assert runs[0].summary["applied_changes"] == good.applied > 0
    beat = json.loads(settings.status_file.read_text())
    assert beat["ok"] and beat["failed_runs_total"] == 1 and beat["runs_total"] == 2


def test_a_held_lock_makes_a_failed_run_not_a_crash(host: Host) -> None:
    from provisioner.apply import host_lock

    settings = host.settings()
    with host_lock(settings.lock_file):
        report = run(settings, [host.decls], host.base, now=NOW)
    assert report.outcome == "failed"
    assert "holds the lock" in report.errors[0]
    assert not settings.keys_file(USER_SECSOC).exists()


def test_sigterm_in_the_middle_of_an_apply_finishes_it_and_exits_cleanly(host: Host) -> None:
    """A real process, a real signal: the apply completes (or would roll back), nothing half."""
    marker = host.base / "reloading"
    # The reload is the last step inside the apply's journal: while it runs, the apply holds
    # the lock and every file has been replaced but nothing is committed as done yet.
    host.write_settings(reload_command=["sh", "-c", f"touch {marker}; sleep 2"])
    proc = provisioner_process(
        host.base, "reconcile", "--once", "examples", "--root", "root", "--settings",
        "settings.yaml",
    )  # fmt: skip
    lines = Lines(proc)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, lines.text()
        assert time.monotonic() < deadline, lines.text()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, lines.text()
    lines.wait_for("stop-requested")
    lines.wait_for("run-finished outcome=ok")

    settings = host.settings()
    # Fully new: every file of both channels, and the state says so.
    passwd = settings.extrausers_dir.joinpath("passwd").read_text()
    assert USER_SECSOC in passwd and USER_ONDERNEMING in passwd
    routing = json.loads(settings.routing_table.read_text())
    assert len(routing["senders"]) == 2
    assert settings.keys_file(USER_SECSOC).exists()
    assert not list(settings.staging_dir.parent.glob("staging-*"))
    with host.store() as store:
        assert [r.outcome for r in store.last_runs(5)] == ["ok"]
        assert {r.status for r in store.snapshot().registrations.values()} == {"active"}


def test_sigterm_while_waiting_for_the_next_slot_exits_at_once(host: Host) -> None:
    proc = provisioner_process(
        host.base, "reconcile", "--every", "30m", "examples", "--root", "root",
        "--settings", "settings.yaml",
    )  # fmt: skip
    lines = Lines(proc)
    lines.wait_for("waiting next_run=")
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0, lines.text()
    assert time.monotonic() - started < 10
    lines.wait_for("stopped runs=0")
    assert not Path(host.settings().status_file).exists()
