"""SIGINT and SIGTERM during an apply: all or nothing, and the caller is told which."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from types import FrameType


class ApplyInterrupted(Exception):
    """SIGINT or SIGTERM ended an apply with nothing changed: it stopped before its first
    live change, or a second signal rolled it back. `problems`: paths a rollback could not
    restore."""

    def __init__(self, signum: int, *, rolled_back: bool) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.rolled_back = rolled_back
        self.problems: list[str] = []


class Interruption:
    """SIGINT and SIGTERM during an apply, for a caller that asks for it (`provisioner
    apply`; the library installs no handler unasked, and `reconcile` has its own Stopper).

    Policy. Before the first live change (rendering, staging, `sshd -t`, the state commit) a
    signal stops the apply at the next step, with nothing changed; a second one stops it at
    once. Once live changes have begun, a first signal lets the apply finish: every change is
    journalled and a few milliseconds long, so finishing is bounded, and a finished apply is
    a consistent host. A second signal rolls the journal back at the next change and puts the
    statuses back. After the reloads the apply is complete: later signals only end the
    process afterwards. Either way the caller is told which (`ApplyResult.interrupted`, or
    `ApplyInterrupted`) and exits with 128 + the first signal's number.

    One that is never `installed` sees no signal, and its safe points never stop anything:
    that is what an apply without a caller's policy uses.
    """

    def __init__(self, notice: Callable[[str], None] | None = None) -> None:
        self.signals: list[int] = []
        # Called from the handler: it must not take locks (os.write is fine, print is not).
        self.notice = notice
        self.phase = "prepare"  # -> "commit" -> "changes" -> "done"
        self._pid = os.getpid()

    @property
    def requested(self) -> bool:
        return bool(self.signals)

    @property
    def rollback(self) -> bool:
        return len(self.signals) >= 2

    @property
    def signum(self) -> int:
        return self.signals[0]

    def _say(self, message: str) -> None:
        if self.notice is not None:
            self.notice(message)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if os.getpid() != self._pid:
            # A forked validation worker: the parent decides, and it finishes its share.
            return
        self.signals.append(signum)
        name = signal.Signals(signum).name
        if len(self.signals) == 1:
            if self.phase in ("prepare", "commit"):
                self._say(f"{name}: stopping before anything changes")
            elif self.phase == "changes":
                self._say(f"{name}: finishing the apply, then stopping; send it again to roll back")
            else:
                self._say(f"{name}: the apply is complete; stopping once it is recorded")
        elif len(self.signals) == 2:
            if self.phase == "prepare":
                # Nothing live is touched before the commit: no need to wait for the step.
                raise ApplyInterrupted(self.signum, rolled_back=False)
            if self.phase in ("commit", "changes"):
                self._say(f"{name}: rolling back")

    def check(self) -> None:
        """A safe point before the first live change: stop there if a signal came."""
        if self.signals:
            raise ApplyInterrupted(self.signum, rolled_back=False)

    def before_change(self, done: int) -> None:
        """The safe point before live change number `done` (from 1): a first signal stops
        only the first change (nothing changed yet); a second stops any, rolled back."""
        # Phase first: a signal from here on is told the apply finishes.
        self.phase = "changes"
        if self.rollback or (self.requested and done == 1):
            raise ApplyInterrupted(self.signum, rolled_back=done > 1)

    def stop_if_rolling_back(self) -> None:
        """After the changes and after the reloads: a second signal rolls everything back."""
        if self.rollback:
            raise ApplyInterrupted(self.signum, rolled_back=True)

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interruption]:
        """Handle SIGINT and SIGTERM inside the block (main thread only); restore afterwards."""
        previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
