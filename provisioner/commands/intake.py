"""`provisioner intake`: the intake gate, once (cron, tests) or as a long-running service."""

from __future__ import annotations

from pathlib import Path

import click

from provisioner import logs
from provisioner.commands.common import EXIT_INVALID, EXIT_OK, host_options, settings_from


@click.command("intake")
@host_options
@click.option("--once", is_flag=True, help="One run now, then exit (cron, tests).")
@click.option(
    "--poll",
    is_flag=True,
    help="Scan every 'intake_poll_interval' seconds instead of waiting for file events "
    "(network file systems, where another client's writes raise no event).",
)
@click.option(
    "--log-format",
    type=click.Choice(logs.LOG_FORMATS),
    default="text",
    show_default=True,
    help="One log line per event on standard error, as text or JSON.",
)
def intake_command(
    settings_file: Path | None,
    root: Path | None,
    state_url: str | None,
    once: bool,
    poll: bool,
    log_format: logs.LogFormat,
) -> int:
    """Check every uploaded file set whose GO file has arrived and move it on.

    Accepted sets go to <intake_dir>/<ENV>/, refused ones to <quarantine_dir>/ with a notice
    in the sender's OUT directory; sets without GO wait (anomaly 130 after
    'intake_set_max_age'). Without --once it keeps running, reacting to uploads (--poll: by
    scanning); SIGTERM or SIGINT finish the current set and run, then exit 0.

    With --once: exit 0 when the run completed (refused sets included: refusing is its job),
    1 when it could not run or a notice could not be written.
    """
    from provisioner.intake.gate import run_once, serve
    from provisioner.schedule import Stopper

    settings = settings_from(settings_file, root, state_url)
    logs.configure(log_format)
    if once:
        summary = run_once(settings)
        for error in summary.errors:
            logs.error("intake-error", error)
        return EXIT_OK if summary.ok else EXIT_INVALID
    stopper = Stopper()
    with stopper.installed():
        logs.event("started", mode="poll" if poll else "watch")
        runs = serve(settings, poll=poll, stop=stopper.event)
    logs.event("stopped", runs=runs)
    return EXIT_OK


# Added to the `provisioner` group by cli.py, in this order.
COMMANDS: tuple[click.Command, ...] = (intake_command,)
