"""Commands of the pull-request gate: validate, schema, codeowners, show."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from provisioner.catalogue import LANGUAGES
from provisioner.commands.common import (
    EXIT_INVALID,
    EXIT_OK,
    default_cache_dir,
    echo_err,
    state_location_options,
)
from provisioner.forge import FORGES, Forge, resolve_author
from provisioner.progress import progress_options, reporter
from provisioner.report import FORMATS, render, render_text
from provisioner.validate import ValidateSettings, ValidationReport, validate

# Where a declarations repository keeps its files (the README's CI recipe validates it).
DEFAULT_DECLARATIONS_DIR = Path("qualities")


def _default_paths() -> tuple[Path, ...]:
    """What `validate` checks without a PATH: ./qualities, else nothing but a hint.

    The current directory is no default: in a checkout of anything else (this project's own,
    with its test cases, catalogue and CI files) every YAML file would be read as a
    declaration and refused.
    """
    if DEFAULT_DECLARATIONS_DIR.is_dir():
        return (DEFAULT_DECLARATIONS_DIR,)
    from provisioner.errors import DeclarationError

    raise DeclarationError(
        "which declarations? there is no qualities/ directory here: give the files or "
        "directories to check (provisioner validate PATH...), e.g. provisioner validate ."
    )


@click.command("validate", short_help="Check declarations and report every error with its place.")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="Output format on standard output.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report in --format to FILE; the terminal then gets text.",
)
@click.option(
    "--base",
    metavar="GITREF",
    help="Compare with the repository at GITREF: technical users are immutable.",
)
@click.option(
    "--author",
    metavar="WHO",
    help="Refuse changes to qualities that do not name WHO as administrator (needs --base, "
    "default HEAD). WHO is an e-mail, github:LOGIN, gitlab:LOGIN, or a bare LOGIN of the "
    "forge whose CI runs this (GITHUB_ACTIONS / GITLAB_CI).",
)
@click.option(
    "--cache/--no-cache",
    default=True,
    show_default=True,
    help="Reuse results of unchanged files (keyed by content hash).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the cache lives [default: $XDG_CACHE_HOME/sftp-provisioner].",
)
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Worker processes.")
@click.option(
    "--as-of",
    "as_of",
    metavar="WHEN",
    help="Judge certificate and key dates as on WHEN (ISO 8601 date or time, UTC unless "
    "given) instead of now: will the declarations still pass next month?",
)
@click.option(
    "--ledger",
    "ledger_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The ledger the SFTP host publishes (`provisioner ledger export`): refuse usernames "
    "taken, retired or reserved, and changed technical users of known qualities.",
)
@click.option(
    "--ledger-max-age",
    metavar="AGE",
    default="2h",
    show_default=True,
    envvar="SFTP_PROVISIONER_LEDGER_MAX_AGE",
    help="A ledger written longer ago than AGE (90m, 2h, 1d) is a warning.",
)
@progress_options
def validate_command(
    paths: tuple[Path, ...],
    fmt: str,
    output: Path | None,
    base: str | None,
    author: str | None,
    cache: bool,
    cache_dir: Path | None,
    jobs: int | None,
    as_of: str | None,
    ledger_file: Path | None,
    ledger_max_age: str,
    progress_mode: str,
    progress_every: float,
    progress_delay: float,
) -> int:
    """Validate declarations: files or directories (recursively *.yaml, *.yml).

    Exit 0 when valid (warnings allowed), 1 when any error was found.
    """
    settings = ValidateSettings(
        paths=paths or _default_paths(),
        base=base,
        author=resolve_author(author, os.environ) if author is not None else None,
        cache_dir=(cache_dir or default_cache_dir()) if cache else None,
    )
    if as_of is not None:
        settings = replace(settings, now=_moment(as_of))
    if jobs:
        settings = replace(settings, jobs=jobs)
    if ledger_file is not None:
        from provisioner.ledger import load_ledger, parse_age

        try:
            max_age = parse_age(ledger_max_age)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--ledger-max-age") from None
        settings = replace(settings, ledger=load_ledger(ledger_file), ledger_max_age=max_age)
    with reporter(progress_mode, progress_every, progress_delay) as progress:
        report = validate(replace(settings, progress=progress))
    if output is not None:
        output.write_text(render(report, fmt), "utf-8")
        click.echo(render_text(report, color=sys.stdout.isatty()), nl=False)
    else:
        click.echo(render(report, fmt, color=sys.stdout.isatty()), nl=False)
    return EXIT_OK if report.ok else EXIT_INVALID


@click.command("schema", short_help="Write the JSON Schema of a declaration.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("schemas/quality.schema.json"),
    show_default=True,
)
@click.option("--check", is_flag=True, help="Exit 1 when the file differs from the models.")
def schema_command(output: Path, check: bool) -> int:
    """Write the JSON Schema of a declaration (for editors and check-jsonschema)."""
    from provisioner.models import json_schema

    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    if check:
        current = output.read_text("utf-8") if output.exists() else ""
        if current != text:
            click.echo(f"{output} is out of date; run `provisioner schema`", err=True)
            return EXIT_INVALID
        click.echo(f"{output} is up to date")
        return EXIT_OK
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, "utf-8")
    click.echo(f"wrote {output}")
    return EXIT_OK


@click.command("show", short_help="Show the overview the portal shows on its confirmation page.")
@click.argument("target", metavar="FILE|USERNAME")
@click.option(
    "--lang",
    type=click.Choice(LANGUAGES),
    help="Language of the overview [default: the contact's language].",
)
@click.option(
    "--declarations",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    show_default=True,
    help="Where to look for the declaration of USERNAME (recursively).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("text", "json")),
    default="text",
    show_default=True,
    help="Output format on standard output.",
)
@state_location_options(
    settings_help="Host settings: show the sender number and status from the host's state.",
    root_help="As for plan/apply: read the state under DIR.",
    state_url_help="Read the registration from this state database.",
)
@click.option(
    "--ledger",
    "ledger_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the registration from the ledger the SFTP host publishes "
    "(`provisioner ledger export`), e.g. in CI.",
)
def show_command(
    target: str,
    lang: str | None,
    declarations: Path,
    fmt: str,
    settings_file: Path | None,
    root: Path | None,
    state_url: str | None,
    ledger_file: Path | None,
) -> int:
    """Show the overview the portal shows on its confirmation page.

    FILE is a declaration; USERNAME a technical user (case-sensitive) declared under
    --declarations. The sender number and registration date read "not yet assigned" until the
    reconciler has registered the channel; with the host's state (--settings, --root,
    --state-url) or its ledger (--ledger), a channel not synchronised yet reads "the
    configuration for the creation of the channel is in progress", with the time of the next
    sync (Brussels time). A declaration with errors is not shown: its diagnostics are, and the
    exit code is 1.
    """
    from provisioner.overview import locate, overview_of, render_json
    from provisioner.overview import render_text as render_overview

    if ledger_file is not None and (settings_file or root or state_url):
        raise click.UsageError("give either --ledger or the state (--settings/--root/--state-url)")
    found = locate(target, declarations)
    if found.diagnostics:
        report = ValidationReport(found.root, [found.result.display], found.diagnostics)
        click.echo(render_text(report, color=sys.stderr.isatty()), err=True, nl=False)
    if not found.ok:
        return EXIT_INVALID
    synchronisation = None
    if ledger_file is not None or settings_file or root or state_url:
        synchronisation = _synchronisation(
            found.result, ledger_file, settings_file, root, state_url
        )
    overview = overview_of(found.result, lang=lang, synchronisation=synchronisation)
    click.echo(render_json(overview) if fmt == "json" else render_overview(overview), nl=False)
    return EXIT_OK


def _synchronisation(
    result: Any,
    ledger_file: Path | None,
    settings_file: Path | None,
    root: Path | None,
    state_url: str | None,
) -> Any:
    """What the host knows of the shown quality: from its ledger, or its state (read-only)."""
    from provisioner.pending import synchronisation_from_ledger, synchronisation_from_state
    from provisioner.quality_id import QualityId
    from provisioner.settings import load_settings

    declaration = result.declaration
    qid = QualityId(declaration.quality.enterprise_number, declaration.quality.type)
    now = datetime.now(UTC)
    if ledger_file is not None:
        return synchronisation_from_ledger(ledger_file, qid, now=now)
    settings = load_settings(settings_file, root=root, overrides={"state_url": state_url})
    has_sftp = declaration.structured_messages.channels.sftp is not None
    return synchronisation_from_state(settings, qid, has_sftp=has_sftp, now=now)


@click.command("codeowners", short_help="Write a CODEOWNERS file from the administrators.")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to FILE (e.g. .github/CODEOWNERS) instead of standard output.",
)
@click.option("--check", is_flag=True, help="Exit 1 when --output differs from what it would be.")
@click.option(
    "--exit-code",
    is_flag=True,
    help="Exit 1 when --output had to be written (a pre-commit hook then stops the commit, "
    "even when the file is new).",
)
@click.option(
    "--forge",
    type=click.Choice(FORGES),
    default="github",
    show_default=True,
    help="Whose CODEOWNERS: administrators with a login on this forge are named @login.",
)
def codeowners_command(
    paths: tuple[Path, ...], output: Path | None, check: bool, exit_code: bool, forge: Forge
) -> int:
    """Write a CODEOWNERS file (GitHub or GitLab) from the declarations' administrators.

    Each declaration file, and the key and certificate files it references, is owned by its
    local and co-local administrators. Exit 1 when a declaration names no administrator that
    can be read (it is then left out) or, with --check, when --output is out of date.
    """
    from provisioner.codeowners import collect, render

    owners = collect(paths or (Path(),), forge=forge)
    text = render(owners)
    for display, reason in owners.problems:
        echo_err(f"{display}: error: {reason}; it has no code owners (see `provisioner validate`)")
    code = EXIT_INVALID if owners.problems else EXIT_OK
    if check:
        if output is None:
            raise click.UsageError("--check needs --output FILE")
        current = output.read_text("utf-8") if output.is_file() else None
        if current != text:
            echo_err(f"{output} is out of date; run `provisioner codeowners --output {output}`")
            return EXIT_INVALID
        click.echo(f"{output} is up to date")
        return code
    if output is None:
        click.echo(text, nl=False)
        return code
    output.parent.mkdir(parents=True, exist_ok=True)
    if not output.is_file() or output.read_text("utf-8") != text:
        output.write_text(text, "utf-8")
        click.echo(f"wrote {output} ({len(owners.rules)} paths)")
        if exit_code:
            return EXIT_INVALID
    else:
        click.echo(f"{output} is up to date")
    return code


def _moment(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not an ISO 8601 date or time (e.g. 2027-01-31 or 2027-01-31T09:00Z)",
            param_hint="--as-of",
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


# Added to the `provisioner` group by cli.py, in this order.
COMMANDS: tuple[click.Command, ...] = (
    validate_command,
    schema_command,
    show_command,
    codeowners_command,
)
