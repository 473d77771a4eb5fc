"""Watch mode: on every save, validate and plan again, and say what would change. Never applies.

The declarations root is watched as a directory, recursively: editors save by writing a
temporary file and renaming it over the original, which a watch on the file itself would lose
after the first save. Changes are debounced (one report for a burst of events) and the `.git`
directory, swap and backup files are ignored. `poll` is for file systems without inotify
(network shares, some container mounts); it compares modification times to the second, so two
saves within one second show as one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import watchfiles

from provisioner import planformat, report
from provisioner.discovery import find_root
from provisioner.errors import ProvisionerError
from provisioner.settings import HostSettings
from provisioner.state import StateError, StateSnapshot, StateStore
from provisioner.validate import ValidateSettings, validate

Echo = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class WatchOptions:
    paths: tuple[Path, ...]
    poll: bool = False
    debounce_ms: int = 200
    diffs: bool = True
    cwd: Path | None = None


class _Filter(watchfiles.DefaultFilter):
    """watchfiles' defaults (.git, swap files, editor backups…) and nothing but files."""

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        name = Path(path).name
        if name.endswith(".tmp") or name.startswith(".#"):
            return False
        if change != watchfiles.Change.deleted and Path(path).is_dir():
            return False  # a directory changes with every rename inside: its files say what
        return super().__call__(change, path)


def _snapshot(settings: HostSettings) -> tuple[StateSnapshot, str | None]:
    """The host's state when readable; else an empty one, with a note saying so."""
    try:
        store = StateStore.open(settings.state_url)
    except (StateError, OSError) as exc:
        return StateSnapshot.empty(), f"the state cannot be read ({exc}): planned as a new host"
    try:
        return store.snapshot(), None
    finally:
        store.close()


def report_once(settings: HostSettings, options: WatchOptions, echo: Echo) -> bool:
    """Validate and plan once; True when the declarations are valid."""
    from provisioner.reconcile import compute

    now = datetime.now(UTC)
    cwd = options.cwd or Path.cwd()
    snapshot, note = _snapshot(settings)
    try:
        rec = compute(settings, options.paths, snapshot, now=now, cwd=cwd)
    except ProvisionerError as exc:
        # No plan (no declarations, templates or settings at fault): the diagnostics still help.
        checked = validate(ValidateSettings(paths=options.paths, now=now, cwd=cwd))
        echo(report.render_text(checked).rstrip("\n"))
        echo(f"plan: not available: {exc}")
        return checked.ok
    echo(report.render_text(rec.report).rstrip("\n"))
    if note:
        echo(f"note: {note}")
    echo(planformat.render_text(rec.plan, diffs=options.diffs).rstrip("\n"))
    return rec.report.ok and not rec.plan.refused


# A save by rename arrives as "added": to the person editing, it is a save.
_WHAT = {"added": "saved", "modified": "saved", "deleted": "deleted"}


def describe(changes: Iterable[tuple[watchfiles.Change, str]], root: Path) -> str:
    seen: dict[str, str] = {}
    for change, path in sorted(changes, key=lambda c: c[1]):
        try:
            shown = str(Path(path).relative_to(root))
        except ValueError:
            shown = path
        seen[shown] = _WHAT.get(change.name, change.name)
    return ", ".join(f"{p} ({what})" for p, what in seen.items())


def watch(
    settings: HostSettings,
    options: WatchOptions,
    *,
    stop: threading.Event,
    echo: Echo,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Report now, then after every (debounced) change under the declarations root."""
    root = find_root(list(options.paths))
    report_once(settings, options, echo)
    mode = "polling" if options.poll else "inotify"
    ready = False
    for changes in watchfiles.watch(
        root,
        watch_filter=_Filter(),
        debounce=max(1600, options.debounce_ms * 4),
        step=options.debounce_ms,
        stop_event=stop,
        force_polling=options.poll,
        poll_delay_ms=250,
        rust_timeout=300,
        # An empty batch after a quiet spell: the watcher is running. Only then is
        # "watching" printed, so that an edit made after it is never missed.
        yield_on_timeout=True,
        raise_interrupt=False,
    ):
        if stop.is_set():
            break
        if not changes:
            if not ready:
                ready = True
                echo(f"watching {root} for changes ({mode}); Ctrl-C to stop")
                if on_ready is not None:
                    on_ready()
            continue
        stamp = datetime.now().astimezone().strftime("%H:%M:%S")
        echo("")
        echo(f"== {stamp} changed: {describe(changes, root)}")
        report_once(settings, options, echo)
        ready = True
        echo(f"watching {root} for changes ({mode}); Ctrl-C to stop")
