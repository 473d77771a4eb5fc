"""Forge handles: `github:`/`gitlab:` logins of administrators, in CODEOWNERS and `--author`.

The login rules are checked against a plain reading of each forge's documented rules
(property tests), the gate's messages live in tests/cases/forge-handles/. Here: who
`--author` takes an author for, CODEOWNERS naming `@login`, and the history rule with a
handle, in a real Git repository built like tests/test_history.py's.
"""

from __future__ import annotations

import itertools
import shutil
import string
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_history import (
    CO_LOCAL,
    EXAMPLES,
    FIXED_NOW,
    LOCAL,
    ONDERNEMING,
    STRANGER,
    edit,
    errors,
    git,
)

from provisioner.cli import main
from provisioner.errors import SettingsError
from provisioner.forge import (
    github_login_problem,
    gitlab_login_problem,
    identities,
    resolve_author,
)
from provisioner.validate import ValidateSettings, validate

# --- the login rules, against the forges' documented rules -----------------------------------

ALPHABET = string.ascii_letters + string.digits + "-_.@é "


def github_reference(login: str) -> bool:
    """GitHub: 1-39 alphanumerics or single hyphens, no hyphen first or last."""
    return (
        1 <= len(login) <= 39
        and all(c in string.ascii_letters + string.digits + "-" for c in login)
        and not login.startswith("-")
        and not login.endswith("-")
        and "--" not in login
    )


def gitlab_reference(login: str) -> bool:
    """GitLab: 2-255 of [A-Za-z0-9_.-], letter or digit first and last, no two specials in a
    row, not ending in .git or .atom."""
    specials = "_.-"
    alnum = string.ascii_letters + string.digits
    return (
        2 <= len(login) <= 255
        and all(c in alnum + specials for c in login)
        and login[0] in alnum
        and login[-1] in alnum
        and not any(a in specials and b in specials for a, b in itertools.pairwise(login))
        and not login.lower().endswith((".git", ".atom"))
    )


@given(st.text(alphabet=ALPHABET, max_size=45))
def test_github_rule_is_the_documented_one(login: str) -> None:
    assert (github_login_problem(login) is None) == github_reference(login)


@given(st.text(alphabet=ALPHABET, max_size=45))
def test_gitlab_rule_is_the_documented_one(login: str) -> None:
    assert (gitlab_login_problem(login) is None) == gitlab_reference(login)


def test_a_long_hostile_login_is_not_echoed_whole() -> None:
    problem = github_login_problem("x" * 5000)
    assert problem is not None and len(problem) < 200 and "5000 characters" in problem


# --- who --author is ---------------------------------------------------------------------------

GITHUB_CI = {"GITHUB_ACTIONS": "true"}
GITLAB_CI = {"GITLAB_CI": "true"}


@pytest.mark.parametrize(
    ("given_", "environ", "identity"),
    [
        ("Dieter.Expedito@Onderneming.example", {}, "dieter.expedito@onderneming.example"),
        ("github:Dieter-X", {}, "github:dieter-x"),
        ("gitlab:dieter.x", GITHUB_CI, "gitlab:dieter.x"),  # an explicit forge wins
        ("Dieter-X", GITHUB_CI, "github:dieter-x"),  # bare: the forge whose CI runs this
        ("dieter-x", GITLAB_CI, "gitlab:dieter-x"),
        ("dieter.x", {}, "gitlab:dieter.x"),  # only GitLab allows a dot
    ],
)
def test_author_forms(given_: str, environ: dict[str, str], identity: str) -> None:
    assert resolve_author(given_, environ) == identity


@pytest.mark.parametrize(
    ("given_", "environ", "message"),
    [
        ("", GITHUB_CI, "--author is empty"),
        ("  ", {}, "--author is empty"),
        ("dieter", {}, "write github:dieter or gitlab:dieter"),
        ("dieter", {**GITHUB_CI, **GITLAB_CI}, "write github:dieter or gitlab:dieter"),
        ("dieter_x", GITHUB_CI, "is not a GitHub login"),
        ("bitbucket:dieter", {}, "expected an e-mail address, github:LOGIN"),
        ("github:-dieter", {}, "is not a GitHub login"),
        ("not an@address", {}, "is not a valid e-mail address"),
    ],
)
def test_author_refused(given_: str, environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("+", r"\+")):
        resolve_author(given_, environ)


# --- in a repository -------------------------------------------------------------------------

HANDLES = "    role: local\n    github: Dieter-X\n    gitlab: dieter.x\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The examples committed, the local administrator of ONDERNEMING with both logins."""
    root = tmp_path / "declarations"
    shutil.copytree(EXAMPLES, root)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    edit(
        root,
        ONDERNEMING,
        "    role: local\n",
        HANDLES + f"  - name: IT Partner\n    email: {CO_LOCAL}\n    role: co_local\n",
    )
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    return root


def run(repo: Path, author: str) -> list[str]:
    report = validate(
        ValidateSettings(
            paths=(Path("qualities"),),
            cwd=repo,
            now=FIXED_NOW,
            base="HEAD",
            author=resolve_author(author, {}),
            cache_dir=None,
            jobs=1,
        )
    )
    return errors(report)


def test_a_handle_of_the_base_version_may_change_the_file(repo: Path) -> None:
    edit(repo, ONDERNEMING, "function: IT Manager", "function: CIO")
    assert run(repo, "github:dieter-x") == []  # logins compare without case
    assert run(repo, "gitlab:Dieter.X") == []
    assert run(repo, LOCAL) == []  # the e-mail still works


def test_the_same_login_on_the_other_forge_is_someone_else(repo: Path) -> None:
    edit(repo, ONDERNEMING, "function: IT Manager", "function: CIO")
    assert run(repo, "gitlab:dieter-x") == [
        f"{ONDERNEMING}:6:1: error[author-not-administrator] gitlab:dieter-x may not change "
        "this quality's declaration: only its local or co-local administrators "
        f"({LOCAL}, github:dieter-x, gitlab:dieter.x, {CO_LOCAL}) may, as listed at HEAD "
        "[administrators]"
    ]


def test_a_handle_added_in_the_same_change_does_not_count(repo: Path) -> None:
    """As with e-mails: whoever adds their login to a file may not also change it."""
    edit(repo, ONDERNEMING, HANDLES, HANDLES.replace("Dieter-X", "mallory"))
    refused = run(repo, "github:mallory")
    assert [line.split(" error[")[1].split("]")[0] for line in refused] == [
        "author-not-administrator"
    ]
    assert run(repo, "github:dieter-x") == []


def test_an_invalid_handle_at_the_base_grants_nothing(repo: Path) -> None:
    """A base file with a login its forge would refuse: that login is nobody's identity."""
    edit(repo, ONDERNEMING, "github: Dieter-X", "github: mallory_x")
    git(repo, "commit", "-q", "-am", "broken login")
    edit(repo, ONDERNEMING, "function: IT Manager", "function: CIO")
    refused = run(repo, "gitlab:mallory_x")
    assert len(refused) == 2  # the login itself, and the author
    assert "error[gitlab-login]" not in refused[0]
    assert any("gitlab:mallory_x may not change" in line for line in refused)


def test_an_email_field_never_stands_for_a_login() -> None:
    """In raw YAML (an invalid file, a base revision) an `email:` shaped like a handle is not
    that handle: e-mail identities hold an @, logins never do."""
    assert identities("github:mallory", {}) == ()
    assert identities("a@b.example", {"github": "Ok-1", "gitlab": "_bad"}) == (
        "a@b.example",
        "github:ok-1",
    )


def cli(repo: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provisioner", "validate", "--no-cache", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(repo), **env},
    )


def test_the_recipe_passes_a_bare_login_in_github_actions(repo: Path) -> None:
    edit(repo, ONDERNEMING, "function: IT Manager", "function: CIO")
    done = cli(repo, "--base", "HEAD", "--author", "dieter-x", "qualities", env=GITHUB_CI)
    assert done.returncode == 0, done.stdout + done.stderr
    done = cli(repo, "--base", "HEAD", "--author", "octocat", "qualities", env=GITHUB_CI)
    assert done.returncode == 1
    assert "error[author-not-administrator] github:octocat may not change" in done.stdout


def test_an_empty_author_is_a_usage_error_not_a_refusal_of_everything(repo: Path) -> None:
    done = cli(repo, "--base", "HEAD", "--author", "", "qualities", env=GITHUB_CI)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("error: --author is empty")
    assert "Traceback" not in done.stderr


def test_an_ambiguous_bare_login_outside_ci_says_how_to_write_it(repo: Path) -> None:
    done = cli(repo, "--base", "HEAD", "--author", "dieter", "qualities", env={})
    assert done.returncode == 1
    assert "write github:dieter or gitlab:dieter" in done.stderr


# --- CODEOWNERS ------------------------------------------------------------------------------


def codeowners(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["codeowners", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out


def test_codeowners_names_the_login_of_its_forge(
    capsys: pytest.CaptureFixture[str], repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo)
    code, out = codeowners(capsys)
    assert code == 0
    lines = out.splitlines()
    assert f"/qualities/0403170701.yaml @Dieter-X {CO_LOCAL}" in lines
    assert f"/keys/expdemo-payroll-2026.pub @Dieter-X {CO_LOCAL}" in lines
    assert "/qualities/0200065765.yaml admin@secsoc.example" in lines  # no handle: e-mail
    code, out = codeowners(capsys, "--forge", "gitlab")
    assert code == 0
    assert f"/qualities/0403170701.yaml @dieter.x {CO_LOCAL}" in out.splitlines()
    assert "GitLab login" in out.splitlines()[3]


def test_codeowners_of_an_invalid_file_still_names_its_valid_logins(
    capsys: pytest.CaptureFixture[str], repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An invalid file keeps its owners (else anyone could approve its repair); a login its
    forge would refuse is left out."""
    edit(repo, ONDERNEMING, "gitlab: dieter.x", "gitlab: _bad")
    edit(repo, ONDERNEMING, 'phone: "025455078"', 'phone: "12"')
    monkeypatch.chdir(repo)
    code, out = codeowners(capsys)
    assert code == 0
    assert f"/qualities/0403170701.yaml {LOCAL} @dieter-x {CO_LOCAL}" in out.splitlines()
    code, out = codeowners(capsys, "--forge", "gitlab")
    assert f"/qualities/0403170701.yaml {LOCAL} {CO_LOCAL}" in out.splitlines()


def test_stranger_is_still_refused(repo: Path) -> None:
    edit(repo, ONDERNEMING, "function: IT Manager", "function: CIO")
    assert len(run(repo, STRANGER)) == 1
