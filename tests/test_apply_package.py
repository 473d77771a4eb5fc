"""The apply package: its public names, the one reload function, the signal safe points.

The behaviour of a whole apply is tested in test_apply*.py; these pin the small seams the
package split made visible, so that a later move of a module does not lose them.
"""

from __future__ import annotations

import logging
import signal

import pytest

import provisioner.apply as apply_package
from provisioner.apply import ApplyInterrupted, Interruption, readback, reload, staging
from provisioner.errors import ApplyError


def test_the_names_code_and_tests_import_stay_at_the_package() -> None:
    for name in (
        "ApplyInterrupted",
        "ApplyResult",
        "Interruption",
        "StateMoved",
        "apply",
        "host_lock",
    ):
        assert hasattr(apply_package, name), name


def test_reload_without_a_command_reloads_nothing() -> None:
    assert reload([], "sshd") is False


def test_reload_runs_the_command() -> None:
    assert reload(["true"], "sshd") is True


def test_a_failed_reload_says_what_and_why() -> None:
    with pytest.raises(ApplyError) as failed:
        reload(["sh", "-c", "echo no such unit >&2; exit 5"], "rsyslog")
    assert (
        failed.value.message
        == "reloading rsyslog failed (sh -c echo no such unit >&2; exit 5): no such unit"
    )


def test_an_interruption_never_installed_never_stops() -> None:
    quiet = Interruption()
    quiet.check()
    for done in (1, 2, 3):
        quiet.before_change(done)
    quiet.stop_if_rolling_back()
    assert not quiet.requested


def test_one_signal_stops_only_before_the_first_change() -> None:
    once = Interruption()
    once.signals.append(signal.SIGTERM)
    with pytest.raises(ApplyInterrupted) as stopped:
        once.before_change(1)
    assert not stopped.value.rolled_back
    once.before_change(2)  # live changes have begun: the apply finishes
    once.stop_if_rolling_back()
    assert once.phase == "changes"


def test_a_second_signal_rolls_back_at_the_next_change() -> None:
    twice = Interruption()
    twice.signals.extend([signal.SIGINT, signal.SIGINT])
    with pytest.raises(ApplyInterrupted) as stopped:
        twice.before_change(3)
    assert stopped.value.rolled_back
    assert stopped.value.signum == signal.SIGINT
    with pytest.raises(ApplyInterrupted):
        twice.stop_if_rolling_back()


def test_the_log_event_is_still_provisioner_apply() -> None:
    # The logger's name is the event of the log line operators and their collectors see.
    for module in (readback, staging):
        assert isinstance(module._log, logging.Logger)
        assert module._log.name == "provisioner.apply"
