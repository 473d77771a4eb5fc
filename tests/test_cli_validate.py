"""`provisioner validate` end to end: the real command line in a child process.

What CI sees: the exit code (0 valid, warnings allowed; 1 invalid or a usage error, never 2,
which means "plan has changes"), the report on standard output, `--output FILE` writing a
machine format while the terminal still gets text, and no traceback on any input.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from provisioner.source import MAX_FILE_BYTES

TESTS = Path(__file__).parent
EXAMPLES = TESTS.parent / "examples"
CASES = TESTS / "cases"


# The clock of the golden files (tests/test_cases.py): certificate and key dates are judged as
# on that moment, or the expected "expires in 30 days" would be wrong tomorrow.
AS_OF = "2026-11-29T12:00:00+00:00"


def provisioner(
    *args: str, cwd: Path, env: dict[str, str] | None = None, as_of: str = AS_OF
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provisioner", "validate", "--as-of", as_of, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def test_examples_are_valid_from_another_directory(tmp_path: Path) -> None:
    """Exit 0 with a warning: warnings never fail the gate."""
    done = provisioner("--no-cache", str(EXAMPLES), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "2 declarations checked: valid, 0 errors, 1 warning"
    assert lines[0].startswith(
        f"{EXAMPLES}/qualities/0403170701.yaml:25:11: warning[key-rsa-below-3072] "
    )
    assert done.stderr == ""


def test_default_path_is_the_current_directory() -> None:
    done = provisioner("--no-cache", cwd=EXAMPLES)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("qualities/0403170701.yaml:25:11: warning[")


def test_invalid_declarations_exit_1_with_every_diagnostic() -> None:
    case = CASES / "multi-error"
    done = provisioner("--no-cache", ".", cwd=case)
    assert done.returncode == 1
    assert done.stdout == (case / "expected.txt").read_text()
    assert "\x1b[" not in done.stdout  # no colours when the output is not a terminal


def test_machine_formats_on_standard_output() -> None:
    case = CASES / "multi-error"
    as_json = provisioner("--no-cache", "--format", "json", ".", cwd=case)
    assert as_json.returncode == 1
    assert as_json.stdout == (case / "expected.json").read_text()
    assert json.loads(as_json.stdout)["valid"] is False
    github = provisioner("--no-cache", "--format", "github", ".", cwd=case)
    assert github.returncode == 1
    assert github.stdout == (case / "expected.github").read_text()


def test_output_file_gets_the_format_and_the_terminal_gets_text(tmp_path: Path) -> None:
    case = CASES / "multi-error"
    report = tmp_path / "report.json"
    done = provisioner("--no-cache", "--format", "json", "--output", str(report), ".", cwd=case)
    assert done.returncode == 1
    assert done.stdout == (case / "expected.txt").read_text()
    assert report.read_text() == (case / "expected.json").read_text()


def test_output_file_for_a_valid_tree(tmp_path: Path) -> None:
    report = tmp_path / "annotations.txt"
    done = provisioner("--no-cache", "--format", "github", "--output", str(report), cwd=EXAMPLES)
    assert done.returncode == 0
    assert done.stdout.endswith("2 declarations checked: valid, 0 errors, 1 warning\n")
    annotations = report.read_text().splitlines()
    assert annotations[0].startswith(
        "::warning file=qualities/0403170701.yaml,line=25,col=11,title=key-rsa-below-3072::"
    )
    assert annotations[-1] == "::notice::2 declarations checked: valid, 0 errors, 1 warning"


def test_bad_input_never_crashes() -> None:
    done = provisioner("--no-cache", ".", cwd=CASES / "bad-input")
    assert done.returncode == 1
    assert done.stderr == ""
    assert done.stdout == (CASES / "bad-input" / "expected.txt").read_text()


def test_oversized_file_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "huge.yaml").write_bytes(b"# " + b"x" * MAX_FILE_BYTES + b"\n")
    done = provisioner("--no-cache", ".", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout.startswith("huge.yaml:1:1: error[file-too-large] ")


def test_missing_path_and_empty_directory_exit_1(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = provisioner("--no-cache", "nowhere", "empty", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "empty: error[no-declarations] no declarations (*.yaml, *.yml) found in this directory",
        "nowhere: error[file-not-found] no such file or directory",
        "0 declarations checked: invalid, 2 errors, 0 warnings",
    ]


def test_usage_errors_exit_1_not_2(tmp_path: Path) -> None:
    """Exit code 2 is reserved for "the plan has changes"; a bad option is exit 1."""
    done = provisioner("--format", "xml", ".", cwd=tmp_path)
    assert done.returncode == 1
    assert "xml" in done.stderr
    assert "Traceback" not in done.stderr


def test_cache_follows_changes_of_referenced_files(tmp_path: Path) -> None:
    """A second run may reuse results, but never those of a file whose key file changed."""
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES, repo)
    for path in repo.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    cache = tmp_path / "cache"
    first = provisioner("--cache-dir", str(cache), ".", cwd=repo)
    again = provisioner("--cache-dir", str(cache), ".", cwd=repo)
    assert first.returncode == again.returncode == 0
    assert first.stdout == again.stdout
    assert any(cache.iterdir())
    key = repo / "keys" / "expdemo-payroll-2026.pub"
    key.write_text((CASES / "_material" / "keys" / "rsa-1024.pub").read_text())
    changed = provisioner("--cache-dir", str(cache), ".", cwd=repo)
    assert changed.returncode == 1
    assert "qualities/0403170701.yaml:25:11: error[key-rsa-too-short]" in changed.stdout


def test_as_of_judges_dates_on_another_day(tmp_path: Path) -> None:
    later = provisioner("--no-cache", cwd=CASES / "multi-error", as_of="2026-12-15")
    assert "12-29, in 14 days" in later.stdout
    bad = provisioner(".", cwd=tmp_path, as_of="next week")
    assert bad.returncode == 1
    assert "--as-of" in bad.stderr and "Traceback" not in bad.stderr
