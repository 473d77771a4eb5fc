"""Commands of unattended operation: reconcile (scheduled), watch, systemd."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from provisioner import logs
from provisioner.commands.common import EXIT_INVALID, EXIT_OK, echo_err, host_options, settings_from
from provisioner.commands.host import allow_removals_option
from provisioner.errors import SettingsError
from provisioner.settings import HostSettings

F = TypeVar("F", bound=Callable[..., Any])


def _declarations(paths: tuple[Path, ...], settings: HostSettings) -> tuple[Path, ...]:
    if paths:
        return paths
    if settings.declarations is not None:
        return (settings.declarations,)
    raise SettingsError(
        "which declarations? give DECLS (the checkout of the declarations repository) or set "
        "'declarations' in the settings"
    )


def _log_option(fn: F) -> F:
    return click.option(
        "--log-format",
        type=click.Choice(logs.LOG_FORMATS),
        default="text",
        show_default=True,
        help="One log line per event on standard error, as text or JSON.",
    )(fn)


@click.command("reconcile", short_help="Reconcile the host at :00 and :30 (or once), unattended.")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@host_options
@click.option(
    "--every",
    metavar="INTERVAL",
    help="Run at the wall-clock slots of INTERVAL (30m: at :00 and :30) "
    "[default: the 'reconcile_every' setting, 30m].",
)
@click.option("--once", is_flag=True, help="One run now, then exit (for systemd timers, cron).")
@click.option(
    "--pull", is_flag=True, help="Fast-forward the declarations checkout before each run."
)
@click.option(
    "--verify-signatures",
    is_flag=True,
    help="Refuse a revision whose commit signature Git does not verify.",
)
@click.option("--no-notify", is_flag=True, help="Send no notifications to the contacts.")
@allow_removals_option
@_log_option
def reconcile_command(
    paths: tuple[Path, ...],
    settings_file: Path | None,
    root: Path | None,
    state_url: str | None,
    every: str | None,
    once: bool,
    pull: bool,
    verify_signatures: bool,
    no_notify: bool,
    allow_removals: int | None,
    log_format: logs.LogFormat,
) -> int:
    """Reconcile the host at :00 and :30 (or once), unattended.

    Each run can update the checkout first (--pull, fast-forward only; a dirty checkout or a
    failed pull means no apply), applies, notifies the contacts, records the run in the state
    and writes the heartbeat files. A failed run does not end the loop. SIGTERM or SIGINT let
    the current apply finish (or roll back), then exit 0.

    With --once: exit 0 when everything declared is applied, 1 otherwise: the run failed,
    or was degraded (a refused file or quality, removals deferred), or could not notify.

    --allow-removals N accepts up to N removals over the mass-removal guard's threshold;
    with --every it holds until one run has applied, not for every later run.
    """
    from provisioner.runner import STEPS, RunOptions, run_once
    from provisioner.schedule import Stopper, SystemClock, next_slot, parse_interval, run_loop

    settings = settings_from(settings_file, root, state_url)
    interval = parse_interval(every or settings.reconcile_every)
    options = RunOptions(
        paths=_declarations(paths, settings),
        pull=pull,
        verify_signatures=verify_signatures,
        notify=not no_notify,
    )
    smtp = settings.notifications and not no_notify and settings.notify_transport == "smtp"
    if smtp and not settings.smtp_host:
        raise SettingsError("notify_transport is smtp, but smtp_host is not set")
    logs.configure(log_format)
    bar = logs.wants_bar(log_format)
    stopper = Stopper()

    allowance = [allow_removals]

    def job(_slot: datetime, upcoming: datetime) -> bool:
        this_run = replace(options, allow_removals=allowance[0])
        with logs.progress("reconcile", len(STEPS), bar=bar) as progress:
            report = run_once(settings, this_run, next_run=upcoming, progress=progress.step)
        if report.succeeded:
            # Accepted for the removals an operator looked at, not for a later bad merge.
            allowance[0] = None
        return report.outcome == "ok"

    with stopper.installed():
        if once:
            from provisioner.gcpause import one_shot

            one_shot()  # the process ends after this run: see there
            with stopper.working():
                ok = job(datetime.now(UTC), next_slot(datetime.now(UTC).astimezone(), interval))
            return EXIT_OK if ok else EXIT_INVALID
        logs.event("started", every=every or settings.reconcile_every)
        stats = run_loop(job, interval, clock=SystemClock(), stopper=stopper)
    logs.event("stopped", runs=stats.runs, failed=stats.failures)
    return EXIT_OK


@click.command("watch", short_help="Re-validate and re-plan on every save; never applies.")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@host_options
@click.option("--poll", is_flag=True, help="Poll instead of inotify (network file systems).")
@click.option(
    "--debounce",
    "debounce_ms",
    type=click.IntRange(min=10, max=10000),
    default=200,
    show_default=True,
    metavar="MS",
    help="Wait until the files were quiet this long before re-planning.",
)
@click.option("--no-diff", is_flag=True, help="List the changes without file diffs.")
def watch_command(
    paths: tuple[Path, ...],
    settings_file: Path | None,
    root: Path | None,
    state_url: str | None,
    poll: bool,
    debounce_ms: int,
    no_diff: bool,
) -> int:
    """Re-validate and re-plan on every save under DECLS; never applies.

    Prints the diagnostics and what apply would change, now and after each change. Ctrl-C
    (or SIGTERM) stops it.
    """
    from provisioner.schedule import Stopper
    from provisioner.watch import WatchOptions, watch

    settings = settings_from(settings_file, root, state_url)
    options = WatchOptions(
        paths=paths or (Path(),), poll=poll, debounce_ms=debounce_ms, diffs=not no_diff
    )
    stopper = Stopper()
    logs.configure("text")
    with stopper.installed():
        watch(settings, options, stop=stopper.event, echo=click.echo)
    return EXIT_OK


@click.command("systemd", short_help="Print or install the systemd service and timer.")
@click.argument("declarations", required=False, type=click.Path(path_type=Path))
@host_options
@click.option("--every", metavar="INTERVAL", help="[default: the 'reconcile_every' setting]")
@click.option("--pull", is_flag=True, help="The service pulls (fast-forward) before each run.")
@click.option("--verify-signatures", is_flag=True, help="The service verifies commit signatures.")
@_log_option
@click.option(
    "--install",
    "do_install",
    is_flag=True,
    help="Write the units to the unit directory, create the managed directories they name, "
    "and reload systemd.",
)
@click.option(
    "--unit-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/etc/systemd/system"),
    show_default=True,
)
def systemd_command(
    declarations: Path | None,
    settings_file: Path | None,
    root: Path | None,
    state_url: str | None,
    every: str | None,
    pull: bool,
    verify_signatures: bool,
    log_format: str,
    do_install: bool,
    unit_dir: Path,
) -> int:
    """Print (or --install) a service and a timer at :00 and :30, built from the settings.

    With --root DIR (a trial) the units name the paths under DIR, --install writes them to
    DIR/etc/systemd/system and systemd is not reloaded.
    """
    from provisioner import systemd
    from provisioner.schedule import parse_interval

    if state_url:
        raise SettingsError(
            "--state-url does not go into a unit file (it may hold a password and unit files "
            "are world-readable): set state_url in the settings, or SFTP_PROVISIONER_STATE_URL "
            f"in {systemd.ENVIRONMENT_FILE}"
        )
    settings = settings_from(settings_file, root, None)
    if root is not None and unit_dir == systemd.UNIT_DIR:
        # A trial root is a host of its own: its units go there, and systemd is not told.
        unit_dir = root / systemd.UNIT_DIR.relative_to("/")
    decls = _declarations((declarations,) if declarations else (), settings)[0]
    options = systemd.UnitOptions(
        declarations=decls.absolute(),
        every=parse_interval(every or settings.reconcile_every),
        settings_file=settings_file.absolute() if settings_file else None,
        pull=pull,
        verify_signatures=verify_signatures,
        log_format=log_format,
    )
    if not do_install:
        for name, text in systemd.render_units(settings, options).items():
            click.echo(f"# --- {name}")
            click.echo(text, nl=False)
        return EXIT_OK
    for line in systemd.install(settings, options, unit_dir):
        click.echo(line)
    echo_err(f"enable it with: systemctl enable --now {systemd.TIMER}")
    return EXIT_OK


@click.command("init", short_help="Write a commented settings file for a fresh host.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write it [default: /etc/sftp-provisioner/settings.yaml, under --root if given].",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    help="A trial root: the file goes to DIR/etc/sftp-provisioner/settings.yaml, where the "
    "host commands given --root DIR look for it.",
)
@click.option(
    "--declarations",
    type=click.Path(path_type=Path),
    default=Path("/srv/declarations"),
    show_default=True,
    help="The checkout of the declarations repository this host reconciles.",
)
@click.option("--force", is_flag=True, help="Replace a settings file that already exists.")
def init_command(out: Path | None, root: Path | None, declarations: Path, force: bool) -> int:
    """Write a commented settings file for a fresh host.

    Every setting is in it with its meaning and default, commented out so that it keeps the
    default; only 'declarations' is set. An existing file is left alone unless --force.
    """
    from provisioner.diagnostics import Location
    from provisioner.fsutil import write_atomic
    from provisioner.settings import DEFAULT_SETTINGS_FILE, load_settings
    from provisioner.settings_reference import render_settings_file

    if out is not None:
        target = out
    elif root is not None:
        target = root / DEFAULT_SETTINGS_FILE.relative_to("/")
    else:
        target = DEFAULT_SETTINGS_FILE
    if (target.exists() or target.is_symlink()) and not force:
        raise SettingsError(
            "a settings file is already there; edit it, or give --force to replace it",
            location=Location(str(target)),
        )
    text = render_settings_file({"declarations": declarations.absolute()})
    # World-readable like any file under /etc: it holds no secret (those go in the
    # environment file, 0600), and the operators who read it need not be root.
    write_atomic(target, text.encode("utf-8"), 0o644)
    load_settings(target, environ={})  # what was written must load, or nothing is claimed
    click.echo(f"wrote {target}")
    echo_err(
        f"next: check it, clone the declarations into {declarations.absolute()}, "
        f"then `provisioner plan {declarations.absolute()}`"
    )
    return EXIT_OK


# Added to the `provisioner` group by cli.py, in this order.
COMMANDS: tuple[click.Command, ...] = (
    reconcile_command,
    watch_command,
    systemd_command,
    init_command,
)
