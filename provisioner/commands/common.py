"""What every command shares: exit codes, the error stream, the default cache directory and
the group class whose `--help` lists whole summaries.

Below the commands and `cli.py` alike: a command module never imports `cli.py`, which adds
the commands to the `provisioner` group (see each module's `COMMANDS`).
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from provisioner.settings import HostSettings, load_settings

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_CHANGES = 2
EXIT_INTERNAL = 3


F = TypeVar("F", bound=Callable[..., Any])

HOST_SETTINGS_HELP = (
    "Host settings file [default: /etc/sftp-provisioner/settings.yaml when present]."
)
ROOT_HELP = "Prefix every managed path (and the default state file) with DIR."
STATE_URL_HELP = "State database URL (sqlite:///… or postgresql+psycopg://…)."


def state_location_options(
    settings_help: str = HOST_SETTINGS_HELP,
    root_help: str = ROOT_HELP,
    state_url_help: str = STATE_URL_HELP,
) -> Callable[[F], F]:
    """--settings, --root and --state-url: where the host's settings and state are. Commands
    that only read the state (`show`) word the help their own way."""

    def decorate(fn: F) -> F:
        options = [
            click.option(
                "--settings",
                "settings_file",
                type=click.Path(dir_okay=False, path_type=Path),
                help=settings_help,
            ),
            click.option(
                "--root", type=click.Path(file_okay=False, path_type=Path), help=root_help
            ),
            click.option("--state-url", help=state_url_help),
        ]
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


host_options = state_location_options()


def settings_from(
    settings_file: Path | None, root: Path | None, state_url: str | None, **overrides: Any
) -> HostSettings:
    return load_settings(settings_file, root=root, overrides={"state_url": state_url, **overrides})


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sftp-provisioner"


def echo_err(message: str) -> None:
    click.echo(message, err=True)


def summary(command: click.Command) -> str:
    """A command's line in `--help`: its short_help, else the first sentence of its help.

    Never cut to fit with "...", as click does: a summary that does not fit is wrapped.
    """
    if command.short_help:
        return command.short_help
    text = " ".join(inspect.cleandoc(command.help or "").split("\n\n", 1)[0].split())
    return re.split(r"(?<=\.)\s", text, maxsplit=1)[0]


class SummaryGroup(click.Group):
    """A group whose command list shows whole summaries (see `summary`)."""

    # Subgroups made with @group.group() are of this class too.
    group_class = type

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, summary(command)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
