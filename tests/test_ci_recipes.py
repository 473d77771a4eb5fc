"""The CI recipes shipped in ci/: valid for their forge, naming only flags that exist, and
working as written.

- Each file is checked against its forge's schema by check-jsonschema's vendored builtin
  schemas (offline): `vendor.github-workflows`, `vendor.gitlab-ci`.
- Every `provisioner` command line in them is parsed by the real CLI (click), options and
  their values included, so a recipe never names a flag or a format that does not exist.
- The scripts themselves run, as the forge would run them, in a real declarations repository
  with a pull request on top of its base branch and a ledger the host published: the gate
  passes for the quality's administrator (by login) and refuses a stranger, and the plan shows
  the pull request's change only.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from conftest import REPO
from ruamel.yaml import YAML

from provisioner.cli import cli

GITHUB = REPO / "ci" / "github" / "sftp-provisioner.yml"
GITLAB = REPO / "ci" / "gitlab" / "sftp-provisioner.gitlab-ci.yml"
BIN = Path(sys.executable).parent
NEW_KEY = (REPO / "tests" / "cases" / "_material" / "keys" / "ed25519-8.pub").read_text().strip()
ONDERNEMING = "qualities/0403170701.yaml"
LOGIN = "dieter-x"


def load(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text("utf-8"))


def github_scripts() -> list[tuple[str, str]]:
    """(step id or name, script) of every `run:` step of the workflow."""
    out = []
    for job in load(GITHUB)["jobs"].values():
        for step in job["steps"]:
            if "run" in step:
                out.append((step.get("id") or step["name"], step["run"]))
    return out


def gitlab_scripts() -> list[str]:
    return list(load(GITLAB)["sftp-provisioner"]["script"])


# --- the forges' schemas ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "schema"),
    [(GITHUB, "vendor.github-workflows"), (GITLAB, "vendor.gitlab-ci")],
    ids=["github", "gitlab"],
)
def test_recipe_matches_its_forge_schema(path: Path, schema: str) -> None:
    done = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- every provisioner command line parses -----------------------------------------------------

# `provisioner` as a command: at the start of a line or after a shell operator.
COMMAND = re.compile(r"(?:^|[;&|]\s*|\$\(\s*)provisioner\s+((?:[^\n;&|)\\]|\\\n)*)", re.M)


def command_lines(script: str) -> list[list[str]]:
    out = []
    for match in COMMAND.finditer(script):
        text = match.group(1).replace("\\\n", " ")
        # Shell redirections and what follows them are not the command's arguments.
        text = re.split(r"\s(?:>>?|<|2>)\s*", text)[0]
        # Variables stand for values; "${a[@]}" is the optional ledger pair.
        text = text.replace('"${ledger[@]}"', "--ledger LEDGER").replace(
            "$ledger", "--ledger LEDGER"
        )
        text = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", r"\1", text)
        out.append(shlex.split(text))
    return out


def all_command_lines() -> list[tuple[str, list[str]]]:
    scripts = [(f"github:{name}", s) for name, s in github_scripts()]
    scripts += [(f"gitlab:{i}", s) for i, s in enumerate(gitlab_scripts())]
    return [(where, args) for where, script in scripts for args in command_lines(script)]


def test_the_recipes_run_validate_and_plan_with_the_features_they_need() -> None:
    for path in (GITHUB, GITLAB):
        lines = [args for where, args in all_command_lines() if where.startswith(path.parent.name)]
        validate = [a for a in lines if a[0] == "validate"]
        plan = [a for a in lines if a[0] == "plan"]
        assert len(validate) == 1 and len(plan) == 1, path
        assert {"--base", "--author", "--ledger"} <= set(validate[0])
        assert {"--summary", "--format"} <= set(plan[0])
        assert plan[0][plan[0].index("--format") + 1] == "markdown"
    github_validate = next(a for w, a in all_command_lines() if w == "github:validate")
    assert github_validate[github_validate.index("--format") + 1] == "github"


@pytest.mark.parametrize(("where", "args"), all_command_lines(), ids=lambda v: str(v)[:60])
def test_command_line_parses_with_the_real_cli(where: str, args: list[str]) -> None:
    """click parses the whole line, options and values (choices included), without running it."""
    command = cli.get_command(click.Context(cli), args[0])
    assert command is not None, f"{where}: no command {args[0]!r}"
    rest = args[1:]
    if isinstance(command, click.Group):
        sub = command.get_command(click.Context(command), rest[0])
        assert sub is not None, f"{where}: no command {' '.join(args[:2])!r}"
        command, rest = sub, rest[1:]
    try:
        command.make_context(args[0], list(rest))
    except click.ClickException as exc:
        pytest.fail(f"{where}: `provisioner {shlex.join(args)}`: {exc.format_message()}")


def test_a_flag_that_does_not_exist_is_caught() -> None:
    """The check above would refuse a recipe naming an unknown flag or format."""
    command = cli.get_command(click.Context(cli), "plan")
    assert command is not None
    with pytest.raises(click.NoSuchOption):
        command.make_context("plan", ["qualities", "--no-such-flag"])
    with pytest.raises(click.BadParameter):
        command.make_context("plan", ["qualities", "--format", "github"])


# --- the scripts run as written ----------------------------------------------------------------


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [
            "git",
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.invalid",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text("utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), "utf-8")


@pytest.fixture
def pull_request(tmp_path: Path) -> Path:
    """A clone at a pull request's head: the examples on main (ONDERNEMING's local
    administrator with the GitHub and GitLab login dieter-x), one key added on top, and a
    ledger branch the host pushed its ledger to."""
    upstream = tmp_path / "upstream.git"
    work = tmp_path / "author"
    shutil.copytree(REPO / "examples", work)
    for path in work.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    replace(
        work / ONDERNEMING,
        "    role: local\n",
        f"    role: local\n    github: {LOGIN}\n    gitlab: {LOGIN}\n",
    )
    git(tmp_path, "init", "-q", "--bare", str(upstream))
    git(work, "init", "-q")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "base")
    git(work, "remote", "add", "origin", str(upstream))
    git(work, "push", "-q", "origin", "main")
    # The host: applies main and publishes its ledger to the ledger branch.
    host = tmp_path / "sftp-a"
    env = {
        **os.environ,
        "SFTP_PROVISIONER_SSHD_CHECK": "false",
        "SFTP_PROVISIONER_OPENSSH_VERSION": "9.6",
    }
    run = [str(BIN / "provisioner")]
    subprocess.run(
        [*run, "apply", str(work / "qualities"), "--root", str(host)],
        env=env,
        capture_output=True,
        check=True,
    )
    ledger_tree = tmp_path / "ledger"
    ledger_tree.mkdir()
    subprocess.run(
        [*run, "ledger", "export", "--root", str(host), "--out", str(ledger_tree / "ledger.json")],
        env=env,
        capture_output=True,
        check=True,
    )
    git(ledger_tree, "init", "-q")
    git(ledger_tree, "add", "ledger.json")
    git(ledger_tree, "commit", "-q", "-m", "ledger")
    git(ledger_tree, "push", "-q", str(upstream), "HEAD:refs/heads/sftp-ledger")
    # The pull request: a new key for ONDERNEMING.
    git(work, "checkout", "-q", "-b", "new-key")
    replace(work / ONDERNEMING, "      ssh_keys:\n", f"      ssh_keys:\n        - {NEW_KEY}\n")
    git(work, "commit", "-q", "-am", "a new key")
    checkout = tmp_path / "checkout"
    git(tmp_path, "clone", "-q", str(upstream), str(checkout))
    git(checkout, "fetch", "-q", str(work), "new-key")
    git(checkout, "checkout", "-q", "--detach", "FETCH_HEAD")
    return checkout


def expression(text: str, context: dict[str, str]) -> str:
    """The few GitHub expressions the workflow's env uses: `a.b || 'default'`, names, literals."""

    def one(match: re.Match[str]) -> str:
        for alternative in match.group(1).split("||"):
            term = alternative.strip()
            value = term.strip("'") if term.startswith("'") else context.get(term, "")
            if value:
                return value
        return ""

    return re.sub(r"\$\{\{\s*(.+?)\s*\}\}", one, text)


def shell(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # GitHub runs `run:` with `bash -e {0}`; GitLab's runner with bash and `set -eo pipefail`.
    return subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def base_env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }


def run_github(
    checkout: Path, tmp_path: Path, login: str
) -> dict[str, subprocess.CompletedProcess[str]]:
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir(exist_ok=True)
    context = {
        "runner.temp": str(runner_temp),
        "github.base_ref": "main",
        "github.event.pull_request.user.login": login,
        "github.server_url": "https://github.example",
        "github.repository": "owner/declarations",
        "github.run_id": "42",
        "vars.PROVISIONER_LEDGER_BRANCH": "sftp-ledger",
    }
    workflow = load(GITHUB)
    (job,) = workflow["jobs"].values()
    env = {**base_env(tmp_path), "GITHUB_ACTIONS": "true", "RUNNER_TEMP": str(runner_temp)}
    env["GITHUB_STEP_SUMMARY"] = str(runner_temp / "summary.md")
    env.update({k: expression(str(v), context) for k, v in job["env"].items()})
    results = {}
    for step in job["steps"]:
        name = step.get("id")
        if "run" not in step or name not in {"ledger", "validate", "plan"}:
            continue  # checkout, setup-python, pip install, artifact, comment: the forge's part
        step_env = {
            **env,
            **{k: expression(str(v), context) for k, v in step.get("env", {}).items()},
        }
        results[name] = shell(step["run"], checkout, step_env)
    return results


def test_the_github_workflow_runs_as_written(pull_request: Path, tmp_path: Path) -> None:
    results = run_github(pull_request, tmp_path, LOGIN)
    for name, done in results.items():
        assert done.returncode == 0, f"{name}: {done.stdout}{done.stderr}"
    assert (tmp_path / "runner-temp" / "ledger.json").stat().st_size > 0
    plan = (tmp_path / "runner-temp" / "plan.md").read_text("utf-8")
    assert "EXPDEMOONDERNEMING" in plan
    assert "secsocexemple01" not in plan  # unchanged by this pull request: only counted
    assert len(plan) < 60_000
    assert plan in (tmp_path / "runner-temp" / "summary.md").read_text("utf-8")
    assert (tmp_path / "runner-temp" / "plan.json").is_file()


def test_the_github_workflow_refuses_a_stranger_with_an_annotation(
    pull_request: Path, tmp_path: Path
) -> None:
    results = run_github(pull_request, tmp_path, "octocat")
    assert results["validate"].returncode == 1
    assert (
        f"::error file={ONDERNEMING},line=6,col=1,title=author-not-administrator::"
        in results["validate"].stdout
    ), results["validate"].stdout
    assert results["plan"].returncode == 0  # the plan is still shown


def run_gitlab(checkout: Path, tmp_path: Path, login: str) -> subprocess.CompletedProcess[str]:
    job = load(GITLAB)["sftp-provisioner"]
    env = {
        **base_env(tmp_path),
        "GITLAB_CI": "true",
        "CI_PROJECT_DIR": str(checkout),
        "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main",
        "GITLAB_USER_LOGIN": login,
        "CI_JOB_URL": "https://gitlab.example/owner/declarations/-/jobs/42",
        "PROVISIONER_LEDGER_BRANCH": "sftp-ledger",
    }
    for key, value in job["variables"].items():
        env[key] = re.sub(r"\$([A-Z_]+)", lambda m: env.get(m.group(1), ""), str(value))
    # The runner joins the script items into one shell script; pip install is its part.
    script = "\n".join(s for s in job["script"] if "pip install" not in s)
    return shell(script, checkout, env)


def test_the_gitlab_job_runs_as_written(pull_request: Path, tmp_path: Path) -> None:
    done = run_gitlab(pull_request, tmp_path, LOGIN)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "note: no PROVISIONER_LEDGER_URL" not in done.stdout
    assert (pull_request / ".sftp-provisioner" / "ledger.json").stat().st_size > 0
    plan = (pull_request / "plan.md").read_text("utf-8")
    assert "EXPDEMOONDERNEMING" in plan and "secsocexemple01" not in plan


def test_the_gitlab_job_fails_for_a_stranger_after_showing_the_plan(
    pull_request: Path, tmp_path: Path
) -> None:
    done = run_gitlab(pull_request, tmp_path, "mallory")
    assert done.returncode == 1
    assert "error[author-not-administrator] gitlab:mallory may not change" in done.stdout
    assert (pull_request / "plan.md").is_file()
