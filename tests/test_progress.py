"""Progress of long steps: a bar on a terminal, a line every few seconds elsewhere, a summary
line at the end, all on standard error; standard output stays what the format says.

The reporter is driven by a fake clock for the timing rules; the command line is run on a
real pseudo-terminal (pty) and with pipes.
"""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
import time

from conftest import Host

from provisioner.progress import APPLY, CHECK, RENDER, Reporter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def drive(reporter: Reporter, clock: Clock, stage: str, total: int, seconds: float) -> None:
    for done in range(1, total + 1):
        clock.now += seconds / total
        reporter(stage, done, total)


def test_without_a_terminal_a_line_every_few_seconds_then_a_summary() -> None:
    clock, out = Clock(), io.StringIO()
    with Reporter(out, every=5.0, clock=clock) as reporter:
        assert reporter.mode == "log"
        drive(reporter, clock, CHECK, 1_000, 12.0)
        drive(reporter, clock, RENDER, 10, 0.5)  # short: says nothing on its own
    lines = out.getvalue().splitlines()
    # The step starts at its first item: 5 s later is item 418 of 1,000 (12 ms each).
    assert lines[0] == "provisioner: checking declarations: 418/1,000 (41 %), 5 s"
    assert lines[1] == "provisioner: checking declarations: 835/1,000 (83 %), 10 s"
    assert lines[2] == "provisioner: checking declarations: 1,000/1,000 (100 %), done in 12.0 s"
    assert lines[3] == (
        "provisioner: done in 12.5 s: checking declarations 1,000/1,000 (12.0 s), "
        "rendering channels 10/10 (0.4 s)"  # timed from its first item
    )
    assert len(lines) == 4


def test_quick_steps_print_nothing_at_all() -> None:
    for stream in (io.StringIO(), Terminal()):
        clock = Clock()
        with Reporter(stream, clock=clock) as reporter:
            drive(reporter, clock, CHECK, 100, 0.5)
            drive(reporter, clock, APPLY, 27, 0.3)
        assert stream.getvalue() == ""


def test_on_a_terminal_a_bar_once_a_step_lasts_a_second() -> None:
    clock, term = Clock(), Terminal()
    with Reporter(term, clock=clock) as reporter:
        assert reporter.mode == "bar"
        drive(reporter, clock, APPLY, 500, 3.0)
    shown = term.getvalue()
    assert "applying changes" in shown and "#" in shown and "500/500" in shown
    assert shown.rstrip().splitlines()[-1].startswith("provisioner: done in 3.0 s: applying")


def test_none_is_silent_and_the_core_callback_never_fails() -> None:
    clock, out = Clock(), io.StringIO()
    with Reporter(out, mode="none", clock=clock) as reporter:
        drive(reporter, clock, CHECK, 100, 60.0)
    assert out.getvalue() == ""


# --- the command line --------------------------------------------------------------------------


def _on_a_pty(host: Host, *args: str) -> tuple[int, str, str]:
    """Run the CLI with standard error on a pseudo-terminal, standard output on a pipe."""
    master, slave = pty.openpty()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SFTP_PROVISIONER_")}
    environ["COLUMNS"] = "100"
    proc = subprocess.Popen(
        [sys.executable, "-m", "provisioner", *args],
        cwd=host.base,
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    seen = bytearray()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other end closed: the process is gone
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    assert proc.stdout is not None
    stdout = proc.stdout.read().decode()
    proc.wait(timeout=60)
    os.close(master)
    return proc.returncode, stdout, seen.decode(errors="replace")


def test_on_a_pseudo_terminal_apply_draws_a_bar_on_stderr_and_json_stays_json(host: Host) -> None:
    code, stdout, terminal = _on_a_pty(
        host,
        "apply",
        "examples",
        "--root",
        "root",
        "--settings",
        "settings.yaml",
        "--format",
        "json",
        "--progress-delay",
        "0",
    )
    assert code == 0, terminal
    assert json.loads(stdout)["counts"]["create"] == 2
    assert "applying changes" in terminal and "30/30" in terminal and "#" in terminal
    assert "provisioner: done in " in terminal


def test_without_a_terminal_progress_lines_go_to_stderr_and_json_stays_json(host: Host) -> None:
    done = host.run("apply", "--format", "json", "--progress-every", "0")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"]["create"] == 2
    lines = done.stderr.splitlines()
    assert "provisioner: applying changes: 1/30 (3 %), 0 s" in lines
    assert any(
        ln.startswith("provisioner: applying changes: 30/30 (100 %), done in ") for ln in lines
    )
    assert lines[-1].startswith("provisioner: done in ")
    assert "applying changes 30/30" in lines[-1]


def test_markdown_plan_and_validate_keep_stdout_clean(host: Host) -> None:
    plan = host.run("plan", "--format", "markdown", "--progress-every", "0", "--no-cache")
    assert plan.returncode == 2, plan.stderr
    assert plan.stdout.startswith("### sftp-provisioner plan:")
    assert "\nprovisioner: " not in plan.stdout
    assert "provisioner: checking declarations: 1/2 (50 %)" in plan.stderr
    assert "provisioner: rendering channels: " in plan.stderr
    checked = host.cli(
        "validate", "examples", "--format", "json", "--no-cache", "--progress-every", "0"
    )
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["valid"] is True
    assert "provisioner: checking declarations: 2/2 (100 %), done in " in checked.stderr


def test_progress_none_prints_nothing_extra(host: Host) -> None:
    done = host.run("apply", "--progress", "none", "--progress-every", "0")
    assert done.returncode == 0, done.stderr
    assert "provisioner:" not in done.stderr
