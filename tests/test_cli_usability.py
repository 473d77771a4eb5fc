"""What a new user meets first: `--help` summaries and `validate` without arguments."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import click
import pytest
from conftest import run_provisioner

from provisioner.cli import cli, summary

REPO = Path(__file__).resolve().parents[1]


def run(cwd: Path, *args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {"COLUMNS": str(columns), "XDG_CACHE_HOME": str(cwd / ".cache-test")}
    return run_provisioner(*args, cwd=cwd, env=env, timeout=120)


def commands_section(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index("Commands:")
    return lines[start + 1 :]


@pytest.mark.parametrize("columns", [60, 80, 100])
def test_help_never_cuts_a_command_summary(tmp_path: Path, columns: int) -> None:
    done = run(tmp_path, "--help", columns=columns)
    assert done.returncode == 0, done.stderr
    section = commands_section(done.stdout)
    assert not any("..." in line for line in section), section
    flat = " ".join(" ".join(section).split())
    for name, command in cli.commands.items():
        assert " ".join(summary(command).split()) in flat, name


def test_every_summary_is_a_whole_short_sentence() -> None:
    for name, command in cli.commands.items():
        text = summary(command)
        assert text and text[-1] in ".)", (name, text)
        if isinstance(command, click.Group):
            for sub_name, sub in command.commands.items():
                assert summary(sub)[-1] in ".)", (name, sub_name)


# The commands of a first session fit on one line of an 80-column terminal.
FIRST_SESSION = ("validate", "show", "plan", "apply", "status", "init", "systemd", "reconcile")


def test_first_session_summaries_fit_on_one_line(tmp_path: Path) -> None:
    done = run(tmp_path, "--help", columns=80)
    section = commands_section(done.stdout)
    for name in FIRST_SESSION:
        (line,) = [line for line in section if line.split()[:1] == [name]]
        assert line.rstrip().endswith(summary(cli.commands[name])), line


# --- validate without a PATH -------------------------------------------------------------------


def test_validate_without_a_path_checks_qualities_of_a_declarations_repository(
    tmp_path: Path,
) -> None:
    # A declarations repository: a Git work tree with qualities/ (keys and certificates next
    # to it, inside the root).
    shutil.copytree(REPO / "examples", tmp_path / "decls")
    subprocess.run(["git", "init", "-q", str(tmp_path / "decls")], check=True)
    done = run(tmp_path / "decls", "validate", "--no-cache")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 declarations checked: valid" in done.stdout


def test_validate_without_a_path_in_this_repository_reads_nothing_and_says_what_to_give() -> None:
    done = run(REPO, "validate", "--no-cache")
    assert done.returncode == 1
    assert done.stdout == ""
    assert "error: which declarations? there is no qualities/ directory here" in done.stderr
    assert "provisioner validate PATH" in done.stderr
    # None of the project's own YAML (test cases, catalogue, CI files) is read as a declaration.
    assert "error[" not in done.stderr


def test_validate_without_a_path_in_an_empty_directory(tmp_path: Path) -> None:
    done = run(tmp_path, "validate")
    assert done.returncode == 1 and "which declarations?" in done.stderr
    assert "Traceback" not in done.stderr
