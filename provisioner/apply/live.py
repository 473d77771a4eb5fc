"""The live phase of an apply: the journalled changes, then the reloads, all or nothing.

Everything before it (staging, `sshd -t`, the state commit) changed nothing live. From the
first change on, an apply that cannot finish puts everything back: the journal restores the
files, the services read them again, and the state says what happened.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from provisioner.apply.changes import apply_change
from provisioner.apply.interrupt import ApplyInterrupted, Interruption
from provisioner.apply.journal import Journal, Owners
from provisioner.apply.records import record_failure, uncommitted
from provisioner.apply.result import ApplyResult
from provisioner.apply.sshd import reload
from provisioner.errors import ApplyError
from provisioner.plan import PathChange
from provisioner.progress import APPLY, ProgressCallback
from provisioner.reconcile import Reconciliation
from provisioner.settings import HostSettings
from provisioner.state import StateStore

# Files sshd reads on a reload: its drop-in, and the accounts it looks users up in.
_SSHD_ROLES = frozenset({"sshd-dropin", "passwd", "group", "shadow"})


@dataclass(slots=True)
class LiveChanges:
    rec: Reconciliation
    settings: HostSettings
    store: StateStore
    journal: Journal
    owners: Owners
    result: ApplyResult
    interrupt: Interruption
    now: datetime
    revision: str | None
    # (command, service) of each reload made, in order: a rollback makes them again.
    reloaded: list[tuple[Sequence[str], str]] = field(default_factory=list)

    def run(
        self,
        progress: Callable[[int, int, PathChange], None] | None,
        report_progress: ProgressCallback | None,
    ) -> None:
        """Every change, then the reloads; on a second signal or a failure, all put back."""
        try:
            self._change(progress, report_progress)
            self.interrupt.stop_if_rolling_back()
            self._reload()
            self.interrupt.phase = "done"
            self.interrupt.stop_if_rolling_back()
        except (ApplyInterrupted, KeyboardInterrupt) as stop:
            self._roll_back_interrupted(stop)
            raise
        except Exception as exc:
            error = self._roll_back_failed(exc)
            if error is None:
                raise
            raise error from exc

    def _change(
        self,
        progress: Callable[[int, int, PathChange], None] | None,
        report_progress: ProgressCallback | None,
    ) -> None:
        changes = self.rec.plan.changes
        total = len(changes)
        for done, change in enumerate(changes, 1):
            self.interrupt.before_change(done)
            node = self.rec.tree.nodes.get(Path(change.path))
            apply_change(
                change, node, self.settings, self.journal, self.owners, self.now, self.result
            )
            if progress is not None:
                progress(done, total, change)
            if report_progress is not None:
                report_progress(APPLY, done, total)

    def _reload(self) -> None:
        """sshd when its configuration or accounts changed, rsyslog when its did."""
        roles = {c.role for c in self.rec.plan.changes}
        if roles & _SSHD_ROLES:
            self.result.reloaded = self._reload_one(self.settings.reload_command, "sshd")
        if "rsyslog" in roles:
            self._reload_one(self.settings.syslog_reload_command, "rsyslog")

    def _reload_one(self, command: Sequence[str], what: str) -> bool:
        reloaded = reload(command, what)
        if reloaded:
            self.reloaded.append((command, what))
        return reloaded

    def _roll_back_interrupted(self, stop: ApplyInterrupted | KeyboardInterrupt) -> None:
        """A second signal (or Ctrl-C without handlers): everything goes back, the statuses
        the commit moved too, so the host is exactly as before the run."""
        problems = self.journal.rollback()
        for command, what in self.reloaded:
            with contextlib.suppress(ApplyError):
                reload(command, what)
        if self.rec.allocation.changed:
            self.store.restore_statuses(uncommitted(self.rec))
        if isinstance(stop, ApplyInterrupted):
            stop.rolled_back = stop.rolled_back or bool(self.journal.entries)
            stop.problems = problems

    def _roll_back_failed(self, exc: Exception) -> ApplyError | None:
        """The files put back and the channels' statuses saying so; the error to tell the
        operator, or None for an internal error (raised as it is)."""
        problems = self.journal.rollback()
        record_failure(self.store, self.rec, str(exc), self.revision, self.now)
        detail = f"; restoring also failed for: {', '.join(problems)}" if problems else ""
        if isinstance(exc, ApplyError):
            return ApplyError(f"{exc.message}; the previous files were restored{detail}")
        if isinstance(exc, OSError):
            return ApplyError(
                f"applying failed at {getattr(exc, 'filename', '?')}: "
                f"{exc.strerror or exc}; the previous files were restored"
                f"{detail}"
            )
        return None
