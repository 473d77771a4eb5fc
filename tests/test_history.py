"""Rules against Git history: `validate --base REF` and `--author EMAIL`.

Each test builds a real Git repository in a temporary directory, commits declarations like the
canonical examples, then changes the work tree (or commits on top) the way a pull request would,
and checks the report an administrator gets: the technical user is immutable, and only a
quality's local or co-local administrators (as listed at the base revision, or in a new file
itself) may add, change or remove its declaration.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from provisioner.report import render_text
from provisioner.validate import ValidateSettings, ValidationReport, validate

FIXED_NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
EXAMPLES = Path(__file__).parent.parent / "examples"
SECSOC = "qualities/0200065765.yaml"  # local admin admin@secsoc.example
ONDERNEMING = "qualities/0403170701.yaml"  # local admin dieter.expedito@onderneming.example
LOCAL = "dieter.expedito@onderneming.example"
CO_LOCAL = "it.partner@onderneming.example"
STRANGER = "mallory@elsewhere.example"
NEW_KEY = (
    (Path(__file__).parent / "cases" / "_material" / "keys" / "ed25519-8.pub").read_text().strip()
)


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        [
            "git",
            "-c",
            "user.name=Test Admin",
            "-c",
            "user.email=test@example.invalid",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
            *args,
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def edit(repo: Path, rel: str, old: str, new: str) -> None:
    path = repo / rel
    text = path.read_text()
    assert old in text, f"{old!r} not in {rel}"
    path.write_text(text.replace(old, new, 1))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A declarations repository whose first commit holds the examples, with a co-local admin."""
    root = tmp_path / "declarations"
    shutil.copytree(EXAMPLES, root)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # the examples are read-only
    edit(
        root,
        ONDERNEMING,
        "    role: local\n",
        f"    role: local\n  - name: IT Partner\n    email: {CO_LOCAL}\n    role: co_local\n",
    )
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    return root


def run(repo: Path, *, base: str | None = "HEAD", author: str | None = None) -> ValidationReport:
    return validate(
        ValidateSettings(
            paths=(Path("qualities"),),
            cwd=repo,
            now=FIXED_NOW,
            base=base,
            author=author,
            cache_dir=None,
            jobs=1,
        )
    )


def errors(report: ValidationReport) -> list[str]:
    """The report's error lines (the examples' RSA 2048 warning is always there)."""
    return [line for line in render_text(report).splitlines() if ": error[" in line]


# --- the technical user is immutable -------------------------------------------------------


def test_unchanged_repository_passes(repo: Path) -> None:
    report = run(repo, author=LOCAL)
    assert report.ok
    assert render_text(report).splitlines()[-1] == (
        "2 declarations checked: valid, 0 errors, 1 warning"
    )


def test_changed_technical_user_is_refused(repo: Path) -> None:
    edit(repo, ONDERNEMING, "technical_user: EXPDEMOONDERNEMING", "technical_user: EXPDEMONEW")
    report = run(repo)
    assert errors(report) == [
        f"{ONDERNEMING}:14:19: error[technical-user-immutable] the technical user of this "
        "quality is 'EXPDEMOONDERNEMING' (at HEAD) and cannot be changed once created; "
        "'EXPDEMONEW' is refused [structured_messages.technical_user]"
    ]


def test_technical_user_case_change_is_a_change(repo: Path) -> None:
    """Usernames are case-sensitive: changing only the case is changing the login."""
    edit(repo, SECSOC, "technical_user: secsocexemple01", "technical_user: SecsocExemple01")
    assert [line.split(" error[")[1][:24] for line in errors(run(repo))] == [
        "technical-user-immutable"
    ]


def test_changed_technical_user_committed_on_a_branch_is_refused(repo: Path) -> None:
    """CI compares the pull request's head with its target: --base names the target."""
    git(repo, "checkout", "-q", "-b", "feature")
    edit(repo, SECSOC, "technical_user: secsocexemple01", "technical_user: secsocexemple02")
    git(repo, "commit", "-q", "-am", "rename the login")
    assert run(repo, base="HEAD").ok  # against its own head, nothing changed
    report = run(repo, base="main")
    assert [
        (d.location.file, d.location.line, d.code) for d in report.diagnostics if d.is_error
    ] == [(SECSOC, 11, "technical-user-immutable")]
    assert "'secsocexemple01' (at main)" in report.diagnostics[0].message


def test_other_changes_keep_the_technical_user(repo: Path) -> None:
    edit(repo, ONDERNEMING, "function: IT Manager", "function: CIO")
    assert run(repo).ok


def test_a_moved_file_keeps_its_technical_user(repo: Path) -> None:
    """The rule follows the quality (its enterprise number), not the file name."""
    git(repo, "mv", ONDERNEMING, "qualities/onderneming.yaml")
    edit(repo, "qualities/onderneming.yaml", "EXPDEMOONDERNEMING", "EXPDEMOOTHER")
    report = run(repo)
    assert [(d.location.file, d.code) for d in report.diagnostics if d.is_error] == [
        ("qualities/onderneming.yaml", "technical-user-immutable")
    ]


def new_quality(repo: Path, admin: str) -> str:
    """A new quality, a copy of the secretariat's with its own number, login and key."""
    text = (repo / SECSOC).read_text()
    text = text.replace('"0200.065.765"', '"0403.199.702"')
    text = text.replace("secsocexemple01", "newquality01")
    text = text.replace("admin@secsoc.example", admin)
    old_key = next(line for line in text.splitlines() if "ssh-ed25519" in line)
    text = text.replace(old_key, f"        - {NEW_KEY}")
    (repo / "qualities" / "0403199702.yaml").write_text(text)
    return "qualities/0403199702.yaml"


def test_a_new_quality_chooses_its_technical_user(repo: Path) -> None:
    new_quality(repo, "founder@new.example")
    report = run(repo)
    assert report.ok, render_text(report)


def test_a_second_quality_of_an_enterprise_chooses_its_own_technical_user(repo: Path) -> None:
    """A quality is its enterprise number and quality type: the secretariat's enterprise
    adding a social-secretariat quality is a new quality, not a changed technical user."""
    text = (repo / SECSOC).read_text()
    text = text.replace("type: employer_nsso", "type: social_secretariat")
    text = text.replace("secsocexemple01", "secsocsecond01")
    old_key = next(line for line in text.splitlines() if "ssh-ed25519" in line)
    (repo / "qualities" / "secsoc-social.yaml").write_text(
        text.replace(old_key, f"        - {NEW_KEY}")
    )
    report = run(repo)
    assert report.ok, render_text(report)
    # Its technical user is immutable from then on, per quality.
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "second quality")
    edit(repo, "qualities/secsoc-social.yaml", "secsocsecond01", "secsocsecond02")
    assert [line.split(": error[")[1].split("]")[0] for line in errors(run(repo))] == [
        "technical-user-immutable"
    ]


# --- who may change a quality --------------------------------------------------------------


def test_added_file_naming_the_author_passes(repo: Path) -> None:
    new_quality(repo, "founder@new.example")
    report = run(repo, author="Founder@New.example")  # e-mail addresses compare without case
    assert report.ok, render_text(report)


def test_added_file_not_naming_the_author_is_refused(repo: Path) -> None:
    added = new_quality(repo, "founder@new.example")
    assert errors(run(repo, author=STRANGER)) == [
        f"{added}:6:1: error[author-not-administrator] {STRANGER} may not add this quality's "
        "declaration: only its local or co-local administrators (founder@new.example) may "
        "[administrators]"
    ]


def test_changed_file_by_its_local_administrator_passes(repo: Path) -> None:
    edit(repo, ONDERNEMING, "function: IT Manager", "function: CIO")
    assert run(repo, author=LOCAL).ok


def test_changed_file_by_a_co_local_administrator_listed_at_base_passes(repo: Path) -> None:
    edit(repo, ONDERNEMING, "function: IT Manager", "function: CIO")
    assert run(repo, author=CO_LOCAL).ok


def test_changed_file_by_someone_else_is_refused(repo: Path) -> None:
    edit(repo, ONDERNEMING, "function: IT Manager", "function: CIO")
    assert errors(run(repo, author=STRANGER)) == [
        f"{ONDERNEMING}:6:1: error[author-not-administrator] {STRANGER} may not change this "
        f"quality's declaration: only its local or co-local administrators ({LOCAL}, "
        f"{CO_LOCAL}) may, as listed at HEAD [administrators]"
    ]


def test_author_adding_themselves_in_the_same_change_is_refused(repo: Path) -> None:
    """Only the administrators at the base count: nobody can co-opt themselves."""
    edit(
        repo,
        ONDERNEMING,
        "    role: co_local\n",
        f"    role: co_local\n  - name: Mallory\n    email: {STRANGER}\n    role: co_local\n",
    )
    report = run(repo, author=STRANGER)
    assert [
        (d.location.file, d.location.line, d.code) for d in report.diagnostics if d.is_error
    ] == [(ONDERNEMING, 6, "author-not-administrator")]


def test_removed_file_by_someone_else_is_refused(repo: Path) -> None:
    (repo / ONDERNEMING).unlink()
    assert errors(run(repo, author=STRANGER)) == [
        f"{ONDERNEMING}: error[author-not-administrator] {STRANGER} may not remove this "
        f"quality's declaration: only its local or co-local administrators ({LOCAL}, "
        f"{CO_LOCAL}) may, as listed at HEAD"
    ]


def test_removed_file_by_its_administrator_passes(repo: Path) -> None:
    (repo / ONDERNEMING).unlink()
    report = run(repo, author=CO_LOCAL)
    assert report.ok, render_text(report)


def test_committed_change_is_judged_against_the_base(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "feature")
    edit(repo, SECSOC, "function: Responsable EDI", "function: Responsable informatique")
    git(repo, "commit", "-q", "-am", "new function")
    assert run(repo, base="main", author="admin@secsoc.example").ok
    refused = run(repo, base="main", author=LOCAL)
    assert [(d.location.file, d.code) for d in refused.diagnostics if d.is_error] == [
        (SECSOC, "author-not-administrator")
    ]


def test_only_changed_files_are_judged(repo: Path) -> None:
    """An author who changes one quality is not refused for the others they do not administer."""
    edit(repo, ONDERNEMING, "function: IT Manager", "function: CIO")
    report = run(repo, author=LOCAL)
    assert report.ok
    assert SECSOC in report.files


# --- through the command line --------------------------------------------------------------


def cli(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provisioner", "validate", "--no-cache", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_unknown_base_revision_is_a_clean_error(repo: Path) -> None:
    done = cli(repo, "--base", "no-such-branch", "qualities")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.startswith("error: the revision 'no-such-branch' does not exist")


def test_base_outside_a_git_repository_is_a_clean_error(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "plain")
    done = cli(tmp_path / "plain", "--base", "HEAD", "qualities")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.startswith("error: ")


def test_immutable_technical_user_through_the_cli(repo: Path) -> None:
    edit(repo, ONDERNEMING, "technical_user: EXPDEMOONDERNEMING", "technical_user: EXPDEMONEW")
    done = cli(repo, "--base", "HEAD", "--author", LOCAL, "qualities")
    assert done.returncode == 1, done.stderr
    assert f"{ONDERNEMING}:14:19: error[technical-user-immutable]" in done.stdout
    assert done.stdout.splitlines()[-1] == "2 declarations checked: invalid, 1 error, 1 warning"


# --- referenced key and certificate files belong to the quality ----------------------------


def test_swapping_a_referenced_key_file_needs_an_administrator(repo: Path) -> None:
    """Replacing the .pub file a quality references puts another key on its SFTP login."""
    (repo / "keys" / "expdemo-payroll-2026.pub").write_text(NEW_KEY + "\n")
    report = run(repo, author=STRANGER)
    assert errors(report) == [
        f"{ONDERNEMING}:6:1: error[author-not-administrator] {STRANGER} may not change "
        "keys/expdemo-payroll-2026.pub, which this quality's declaration references: only its "
        f"local or co-local administrators ({LOCAL}, {CO_LOCAL}) may, as listed at HEAD "
        "[administrators]"
    ]
    assert run(repo, author=CO_LOCAL).ok


def test_swapping_a_referenced_certificate_needs_an_administrator(repo: Path) -> None:
    certificate = repo / "certs" / "dupont-signature.pem"
    certificate.write_bytes(
        (Path(__file__).parent / "cases" / "_material" / "certs" / "signature.pem").read_bytes()
    )
    assert [
        (d.location.file, d.code) for d in run(repo, author=LOCAL).diagnostics if d.is_error
    ] == [(SECSOC, "author-not-administrator")]
    assert run(repo, author="admin@secsoc.example").ok
