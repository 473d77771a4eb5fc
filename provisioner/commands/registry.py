"""Commands of the registry: import existing registrations, export the ledger."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from provisioner.commands.common import (
    EXIT_INVALID,
    EXIT_OK,
    SummaryGroup,
    echo_err,
    host_options,
    settings_from,
)


@click.command("import", short_help="Bring the portal's registrations into the state.")
@click.argument("csv_file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@host_options
@click.option(
    "--reserved-usernames",
    "reserved_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Names taken in the portal's access system by users that are no SFTP quality: one a "
    "line, # starts a comment. They are refused to every quality from then on.",
)
@click.option(
    "--commit",
    is_flag=True,
    help="Write what the dry run shows, in one transaction [default: a dry run, nothing written].",
)
def import_command(
    csv_file: Path,
    settings_file: Path | None,
    root: Path | None,
    state_url: str | None,
    reserved_file: Path | None,
    commit: bool,
) -> int:
    """Bring registrations made in the portal into the state, numbers and usernames included.

    FILE is a CSV export with the header

    \b
    enterprise_number,quality_type,sender_number,technical_user,registered_on,status

    (status active or removed: a removed quality keeps its number and username forever). A dry
    run shows what would be recorded; --commit records it. Any refused row: nothing is written,
    exit 1. Running it again records nothing.
    """
    from provisioner.adoption import render_diagnostics, render_plan, run_import
    from provisioner.errors import SettingsError
    from provisioner.state import StaleState, StateError

    settings = settings_from(settings_file, root, state_url)
    try:
        outcome = run_import(
            settings.state_url,
            csv_file,
            reserved_path=reserved_file,
            commit=commit,
            now=datetime.now(UTC),
        )
    except StaleState as exc:
        echo_err(f"error: nothing was imported: {exc}")
        return EXIT_INVALID
    except StateError as exc:
        raise SettingsError(f"the state database cannot be opened: {exc}") from None
    plan = outcome.plan
    if not plan.ok:
        click.echo(render_diagnostics(plan.diagnostics), err=True, nl=False)
        errors = sum(1 for d in plan.diagnostics if d.is_error)
        echo_err(f"refused: {errors} error{'s' if errors != 1 else ''}; nothing was imported")
        return EXIT_INVALID
    if outcome.missing_state is not None:
        click.echo(f"no state yet at {outcome.missing_state}: --commit creates it")
    click.echo(render_plan(plan, committed=outcome.written), nl=False)
    return EXIT_OK


@click.group(
    "ledger", cls=SummaryGroup, short_help="Export the ledger of numbers and usernames for CI."
)
def ledger_group() -> None:
    """The ledger of sender numbers and usernames, published for CI (`validate --ledger`)."""


@ledger_group.command("export", short_help="Write the ledger (JSON) to FILE or standard output.")
@host_options
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the ledger to FILE (atomically, mode 0644) [default: standard output].",
)
def ledger_export_command(
    settings_file: Path | None, root: Path | None, state_url: str | None, out: Path | None
) -> int:
    """Write the ledger: per quality its sender number, technical user and status, and every
    retired or reserved username. No contact data, no keys."""
    from provisioner.ledger import export_ledger, write_ledger

    settings = settings_from(settings_file, root, state_url)
    ledger = export_ledger(settings, now=datetime.now(UTC))
    if out is None:
        click.echo(ledger.dumps(), nl=False)
    else:
        write_ledger(out, ledger)
        click.echo(
            f"wrote {out} ({len(ledger.qualities)} qualities, {len(ledger.usernames)} "
            "retired or reserved usernames)"
        )
    return EXIT_OK


# Added to the `provisioner` group by cli.py, in this order.
COMMANDS: tuple[click.Command, ...] = (import_command, ledger_group)
