"""Progress of the long steps of validate, plan and apply, for the person or log waiting.

The core never prints: `validate`, `compute` and `apply` take a `ProgressCallback` and call
it as `progress(stage, done, total)` after each item of a long step (a declaration checked, a
channel rendered, a change applied), `done == total` last. What is shown is decided here, by
a `Reporter` the commands pass in:

- on a terminal, a bar (click's own `click.progressbar`: click is already the CLI, and the
  bar needs nothing more) for a step that has run longer than `delay` (1 s), drawn on
  standard error at most ten times a second;
- without a terminal (systemd, CI), one line on standard error every `every` seconds (5 s)
  while a step runs, and one when a step that was reported ends;
- at the end, when anything was shown, one summary line.

Standard output is never written: it may be JSON or Markdown for a machine.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Literal, TextIO, cast

ProgressCallback = Callable[[str, int, int], None]

# The stages, as the summary line names them.
CHECK = "checking declarations"
RENDER = "rendering channels"
APPLY = "applying changes"

Mode = Literal["auto", "bar", "log", "none"]
MODES = ("auto", "bar", "log", "none")
DELAY = 1.0
EVERY = 5.0
# A bar redrawn more often than this costs more than it tells.
_REDRAW = 0.1


def report_all(progress: ProgressCallback | None, stage: str, items: Any, total: int) -> list[Any]:
    """The items of an iterable as a list, calling `progress` after each (for the core)."""
    if progress is None:
        return list(items)
    out = []
    for done, item in enumerate(items, 1):
        out.append(item)
        progress(stage, done, total)
    return out


@dataclass(slots=True)
class _Stage:
    name: str
    total: int
    started: float
    done: int = 0
    shown: bool = False
    last_line: float = 0.0
    last_draw: float = 0.0
    seconds: float = 0.0


class Reporter:
    """A `ProgressCallback` that draws a bar or writes log lines on `stream` (stderr)."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        mode: Mode = "auto",
        delay: float = DELAY,
        every: float = EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            tty = getattr(self.stream, "isatty", None)
            mode = "bar" if tty is not None and tty() else "log"
        self.mode = mode
        self.delay = delay
        self.every = every
        self.clock = clock
        self.started = clock()
        self.stages: list[_Stage] = []
        self._stage: _Stage | None = None
        self._bar: Any = None

    # -- the callback --------------------------------------------------------------------

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.mode == "none":
            return
        now = self.clock()
        current = self._stage
        if current is None or current.name != stage or done < current.done:
            self._end(now)
            current = self._stage = _Stage(stage, total, now)
            self.stages.append(current)
        current.done, current.total = done, total
        elapsed = now - current.started
        if self.mode == "bar":
            if self._bar is None and elapsed >= self.delay and done < total:
                self._open_bar(current)
            if self._bar is not None and (now - current.last_draw >= _REDRAW or done >= total):
                self._bar.update(done - self._bar.pos)
                current.last_draw = now
        elif done < total and elapsed >= self.every and now - current.last_line >= self.every:
            self._line(f"{stage}: {_count(done, total)}, {elapsed:.0f} s")
            current.shown = True
            current.last_line = now
        if done >= total:
            self._end(now)

    # -- the end -------------------------------------------------------------------------

    def finish(self) -> None:
        """End the last step; one summary line when anything was shown."""
        if self.mode == "none":
            return
        now = self.clock()
        self._end(now)
        if any(s.shown for s in self.stages):
            parts = ", ".join(
                f"{s.name} {s.done:,}/{s.total:,} ({s.seconds:.1f} s)" for s in self.stages
            )
            self._line(f"done in {now - self.started:.1f} s: {parts}")

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.finish()
        else:
            self._close_bar()  # the error is what the user reads next, on a clean line

    def _end(self, now: float) -> None:
        stage = self._stage
        if stage is None:
            return
        self._stage = None
        stage.seconds = now - stage.started
        if self._bar is not None:
            self._bar.update(stage.done - self._bar.pos)
            self._close_bar()
        elif stage.shown and self.mode == "log":
            self._line(
                f"{stage.name}: {_count(stage.done, stage.total)}, done in {stage.seconds:.1f} s"
            )

    # -- output --------------------------------------------------------------------------

    def _open_bar(self, stage: _Stage) -> None:
        import click

        self._bar = click.progressbar(
            length=stage.total,
            label=stage.name,
            file=cast(TextIO, self.stream),
            show_pos=True,
            show_eta=True,
        )
        self._bar.__enter__()
        stage.shown = True

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None

    def _line(self, text: str) -> None:
        self.stream.write(f"provisioner: {text}\n")
        self.stream.flush()


def _count(done: int, total: int) -> str:
    share = f" ({100 * done // total} %)" if total else ""
    return f"{done:,}/{total:,}{share}"


def progress_options(fn: Any) -> Any:
    """`--progress`, `--progress-every` and `--progress-delay` for commands with long steps."""
    import click

    fn = click.option(
        "--progress-delay",
        "progress_delay",
        type=click.FloatRange(min=0),
        default=DELAY,
        show_default=True,
        metavar="SECONDS",
        help="On a terminal: a bar for a step once it has run SECONDS.",
    )(fn)
    fn = click.option(
        "--progress-every",
        "progress_every",
        type=click.FloatRange(min=0),
        default=EVERY,
        show_default=True,
        metavar="SECONDS",
        help="Without a terminal: one progress line on standard error every SECONDS while a "
        "long step runs.",
    )(fn)
    return click.option(
        "--progress",
        "progress_mode",
        type=click.Choice(MODES),
        default="auto",
        show_default=True,
        help="Progress on standard error: a bar on a terminal, log lines elsewhere (auto), "
        "either one, or none. Standard output is never used.",
    )(fn)


def reporter(mode: str, every: float = EVERY, delay: float = DELAY) -> Reporter:
    """The reporter a command passes to the core (and finishes when it is done)."""
    return Reporter(mode=cast(Mode, mode), every=every, delay=delay)
