"""Commands on the SFTP host: plan, apply, status."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from provisioner.commands.common import (
    EXIT_CHANGES,
    EXIT_INTERNAL,
    EXIT_INVALID,
    EXIT_OK,
    host_options,
    settings_from,
)
from provisioner.errors import PlanError
from provisioner.gcpause import one_shot
from provisioner.progress import progress_options, reporter
from provisioner.settings import HostSettings


def _revision(paths: tuple[Path, ...]) -> str | None:
    from provisioner.discovery import find_root
    from provisioner.gitbase import head_revision

    root = find_root(list(paths))
    if not (root / ".git").exists():
        return None
    return head_revision(root)


def _read_snapshot(settings: HostSettings) -> tuple[Any, str | None]:
    """The state, read without creating anything; with the URL when there is no database yet.

    An absent SQLite file is a host before its first apply: the plan starts from an empty
    state (every channel new) rather than creating the file or its directory to look.
    """
    from provisioner.errors import SettingsError
    from provisioner.state import StateError, StateMissing, StateSnapshot, StateStore

    try:
        store = StateStore.open(settings.state_url, create=False)
    except StateMissing:
        from provisioner.state import redact_url

        return StateSnapshot.empty(), redact_url(settings.state_url)
    except StateError as exc:
        raise SettingsError(f"the state database cannot be opened: {exc}") from None
    try:
        return store.snapshot(), None
    finally:
        store.close()


def _open_store(settings: HostSettings) -> Any:
    from provisioner.state import StateError, StateStore

    try:
        return StateStore.open(settings.state_url)
    except StateError as exc:
        from provisioner.errors import SettingsError

        raise SettingsError(f"the state database cannot be opened: {exc}") from None


# Options plan and apply share.
plan_format = click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
)
no_cache = click.option(
    "--no-cache",
    is_flag=True,
    help="Check every declaration and compare every managed path in full, trusting no cache "
    "of earlier runs (same result, slower).",
)
summary_option = click.option(
    "--summary",
    "summary_only",
    is_flag=True,
    help="Only the counts and one line per channel that changes (every format); --out "
    "still saves the whole plan.",
)
no_diff_option = click.option(
    "--no-diff", is_flag=True, help="Text and Markdown: list path changes without their diffs."
)
# apply and reconcile: the mass-removal guard (see provisioner/guard.py).
allow_removals_option = click.option(
    "--allow-removals",
    "allow_removals",
    type=click.IntRange(min=0),
    metavar="N",
    help="Accept up to N channel removals this run, over the mass-removal guard's threshold "
    "(max_removals, max_removals_percent); a plan removing more is still refused whole.",
)


@click.command("plan", short_help="Show what apply would change, channel by channel.")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@host_options
@plan_format
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Save the plan (JSON) for `apply --plan`.",
)
@no_diff_option
@summary_option
@click.option(
    "--max-chars",
    type=click.IntRange(min=0),
    default=60_000,
    show_default=True,
    help="Markdown: shorten the plan to at most N characters (a pull-request comment holds "
    "65,536), saying what was left out; 0: no limit.",
)
@click.option(
    "--full-plan-url",
    metavar="URL",
    help="Markdown: where reviewers find the whole plan (a CI artifact), named when the plan "
    "is shortened [default: the --out file].",
)
@no_cache
@progress_options
def plan_command(
    paths: tuple[Path, ...],
    settings_file: Path | None,
    root: Path | None,
    state_url: str | None,
    fmt: str,
    out: Path | None,
    no_diff: bool,
    summary_only: bool,
    max_chars: int,
    full_plan_url: str | None,
    no_cache: bool,
    progress_mode: str,
    progress_every: float,
    progress_delay: float,
) -> int:
    """Show what apply would change: per channel, then file diffs, owners and modes.

    Looking changes nothing: without a state database (SQLite) the plan starts from an empty
    state, says so, and creates neither the database nor its directory.

    Exit 0 no changes, 2 changes, 1 when a quality is refused, when the mass-removal guard
    would refuse the plan, or on error.
    """
    from provisioner import planformat
    from provisioner.reconcile import compute

    one_shot()
    paths = paths or (Path(),)
    settings = settings_from(settings_file, root, state_url)
    snapshot, missing = _read_snapshot(settings)
    with reporter(progress_mode, progress_every, progress_delay) as progress:
        rec = compute(
            settings,
            paths,
            snapshot,
            revision=_revision(paths),
            use_cache=not no_cache,
            progress=progress,
        )
    plan = rec.plan
    if missing is not None:
        plan.notes.insert(0, f"no state yet at {missing}: every channel would be new")
    if out is not None:
        out.write_text(planformat.render_json(plan), "utf-8")
    full_plan = full_plan_url or (str(out) if out is not None else None)
    click.echo(
        planformat.render(
            plan,
            fmt,
            diffs=not no_diff,
            summary_only=summary_only,
            max_chars=max_chars,
            full_plan=full_plan,
        ),
        nl=False,
    )
    guard = plan.removal_guard
    if plan.has_refusals or (guard is not None and guard.refused):
        # The mass-removal guard would refuse this plan: apply would apply none of it.
        return EXIT_INVALID
    return EXIT_CHANGES if plan.has_changes else EXIT_OK


@click.command("apply", short_help="Reconcile the host with the declarations, safely.")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@host_options
@click.option(
    "--plan",
    "plan_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Apply only if this saved plan still matches the host and declarations.",
)
@plan_format
@no_diff_option
@summary_option
@no_cache
@allow_removals_option
@progress_options
def apply_command(
    paths: tuple[Path, ...],
    settings_file: Path | None,
    root: Path | None,
    state_url: str | None,
    plan_file: Path | None,
    fmt: str,
    no_diff: bool,
    summary_only: bool,
    no_cache: bool,
    allow_removals: int | None,
    progress_mode: str,
    progress_every: float,
    progress_delay: float,
) -> int:
    """Reconcile the host with the declarations: one run at a time, atomic, restorable.

    Exit 0 when everything declared is provisioned, 1 when a quality was refused (the others
    are applied) or on error.

    SIGINT (Ctrl-C) or SIGTERM before the first live change stops the run with nothing
    changed; once changes have begun, the apply finishes (bounded: every change is
    journalled), then stops; a second signal rolls everything back at once. It says which,
    and exits 130 after SIGINT, 143 after SIGTERM (128 + the signal's number), whichever
    happened. A staging directory left by a killed run is removed by the next one.
    """
    from provisioner import planformat
    from provisioner.apply import ApplyInterrupted, Interruption, apply
    from provisioner.plan import Plan

    one_shot()
    paths = paths or (Path(),)
    settings = settings_from(settings_file, root, state_url)
    saved = None
    if plan_file is not None:
        try:
            saved = Plan.from_json(json.loads(plan_file.read_text("utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            raise PlanError(f"{plan_file} is not a saved plan: {exc}") from None
    store = _open_store(settings)
    interrupt = Interruption(notice=_notice)
    try:
        with (
            interrupt.installed(),
            reporter(progress_mode, progress_every, progress_delay) as progress,
        ):
            result = apply(
                settings,
                paths,
                store,
                saved_plan=saved,
                revision=_revision(paths),
                use_cache=not no_cache,
                allow_removals=allow_removals,
                interrupt=interrupt,
                report_progress=progress,
            )
    except ApplyInterrupted as stop:
        return _interrupted(stop)
    finally:
        store.close()
    for path in result.stale_staging:
        click.echo(f"removed {path}, the staging directory of an interrupted run", err=True)
    plan = result.plan
    click.echo(planformat.render(plan, fmt, diffs=not no_diff, summary_only=summary_only), nl=False)
    if fmt == "text":
        if result.sshd_checked:
            click.echo("sshd -t: the staged configuration is valid")
        for src, dest, size in result.archived:
            click.echo(f"archived {src} -> {dest} ({size})")
        if result.owners_not_set:
            click.echo(
                f"owners not set (not running as root): {len(result.owners_not_set)} "
                "paths, e.g. " + ", ".join(result.owners_not_set[:3])
            )
        if result.reloaded:
            click.echo("sshd reloaded")
        click.echo(f"Applied {len(result.applied)} change(s).")
    if result.aborted:
        # A rendering that does not read back as its validated keys is a bug, not bad input.
        return EXIT_INTERNAL
    if result.interrupted is not None:
        click.echo(
            f"interrupted ({signal.Signals(result.interrupted).name}): finished the apply "
            f"({len(result.applied)} changes), then stopped",
            err=True,
        )
        return 128 + result.interrupted
    return EXIT_INVALID if plan.has_refusals else EXIT_OK


def _notice(message: str) -> None:
    # Called from a signal handler: a raw write, never click's buffered stream (reentrancy).
    with contextlib.suppress(OSError):
        os.write(2, f"provisioner: {message}\n".encode())


def _interrupted(stop: Any) -> int:
    """What an apply stopped or rolled back by a signal says, and its exit code."""
    name = signal.Signals(stop.signum).name
    if stop.problems:
        click.echo(
            f"error: interrupted ({name}): rolled back, but restoring failed for: "
            f"{', '.join(stop.problems)}",
            err=True,
        )
        return EXIT_INVALID
    if stop.rolled_back:
        click.echo(f"interrupted ({name}): rolled back, nothing changed", err=True)
    else:
        click.echo(f"interrupted ({name}): stopped before any change, nothing changed", err=True)
    return int(128 + stop.signum)


@click.command("status", short_help="Show each channel: sender number, status, last and next sync.")
@click.argument("username", required=False)
@host_options
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--declarations",
    "-d",
    "declarations",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Also show channels declared here since the last run, as pending "
    "[default: the 'declarations' setting].",
)
def status_command(
    username: str | None,
    settings_file: Path | None,
    root: Path | None,
    state_url: str | None,
    fmt: str,
    declarations: tuple[Path, ...],
) -> int:
    """Per channel: sender number, username, registration date, status, last and next sync."""
    from provisioner.channel_status import status_report
    from provisioner.statusview import status_text

    settings = settings_from(settings_file, root, state_url)
    declared = declarations or ((settings.declarations,) if settings.declarations else ())
    report = status_report(settings, declared, now=datetime.now(UTC), username=username)
    if username and not report.rows:
        click.echo(f"no channel with the technical user '{username}'", err=True)
        return EXIT_INVALID
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(status_text(report, host=settings.host_name), nl=False)
    return EXIT_OK


# Added to the `provisioner` group by cli.py, in this order.
COMMANDS: tuple[click.Command, ...] = (plan_command, apply_command, status_command)
