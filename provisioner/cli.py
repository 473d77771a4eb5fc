"""The command line: thin click commands over the library.

Each command parses its options into a settings object, calls the core and returns an exit
code. Exit codes: 0 valid / no changes, 1 invalid input or refused, 2 the plan has changes,
3 internal error (short message here, details in a log file).
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from provisioner import __version__
from provisioner.errors import ProvisionerError

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_CHANGES = 2
EXIT_INTERNAL = 3

F = TypeVar("F", bound=Callable[..., Any])


def _state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "sftp-provisioner"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sftp-provisioner"


def _write_crash_log() -> str:
    text = f"sftp-provisioner {__version__} {datetime.now(UTC).isoformat()}\n"
    text += f"argv: {sys.argv!r}\n" + traceback.format_exc()
    for directory in (_state_dir(), Path(tempfile.gettempdir())):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix="crash-", suffix=".log", dir=directory)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            return name
        except OSError:
            continue
    return "(no writable log directory)"


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


@click.group(
    cls=SummaryGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="provisioner")
def cli() -> None:
    """GitOps provisioning of SFTP batch channels for a social-security file gateway."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors exit 1, bugs exit 3 with a log, never a bare traceback."""
    try:
        code = cli.main(args=argv, prog_name="provisioner", standalone_mode=False)
    except click.exceptions.Abort:
        echo_err("aborted")
        return EXIT_INVALID
    except click.ClickException as exc:
        # Usage errors exit 1, not click's 2: 2 means "the plan has changes" here.
        exc.show()
        return EXIT_INVALID
    except ProvisionerError as exc:
        echo_err(f"error: {exc}")
        return EXIT_INVALID
    except KeyboardInterrupt:
        echo_err("interrupted")
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:
        log = _write_crash_log()
        echo_err(f"internal error: {type(exc).__name__}: {exc}")
        echo_err(f"this is a bug in sftp-provisioner; details are in {log}")
        return EXIT_INTERNAL
    if isinstance(code, int):
        return code
    return EXIT_OK


def run() -> None:
    sys.exit(main())


# Importing the command modules registers them on `cli`.
from provisioner.commands import declarations as _declarations  # noqa: E402, F401
from provisioner.commands import host as _host  # noqa: E402, F401
from provisioner.commands import intake as _intake  # noqa: E402, F401
from provisioner.commands import ops as _ops  # noqa: E402, F401
from provisioner.commands import registry as _registry  # noqa: E402, F401
