"""The command line: thin click commands over the library.

Each command parses its options into a settings object, calls the core and returns an exit
code. Exit codes: 0 valid / no changes, 1 invalid input or refused, 2 the plan has changes,
3 internal error (short message here, details in a log file).
"""

from __future__ import annotations

import sys

import click

from provisioner import __version__
from provisioner.commands import declarations, host, intake, ops, registry
from provisioner.commands.common import EXIT_INTERNAL, EXIT_INVALID, EXIT_OK, SummaryGroup, echo_err
from provisioner.commands.common import summary as summary  # the --help rule, re-exported
from provisioner.crashlog import write_crash_log
from provisioner.errors import ProvisionerError


@click.group(
    cls=SummaryGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="provisioner")
def cli() -> None:
    """GitOps provisioning of SFTP batch channels for a social-security file gateway."""


# Each command is built in its own module, which never imports this one; here they are added.
for _command in (
    *declarations.COMMANDS,
    *host.COMMANDS,
    *intake.COMMANDS,
    *ops.COMMANDS,
    *registry.COMMANDS,
):
    cli.add_command(_command)


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
        log = write_crash_log()
        echo_err(f"internal error: {type(exc).__name__}: {exc}")
        echo_err(f"this is a bug in sftp-provisioner; details are in {log}")
        return EXIT_INTERNAL
    if isinstance(code, int):
        return code
    return EXIT_OK


def run() -> None:
    sys.exit(main())
