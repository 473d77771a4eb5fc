"""The committed JSON Schema, the examples that point at it, and the pre-commit hooks."""

from __future__ import annotations

import copy
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from ruamel.yaml import YAML

from provisioner.cli import main
from provisioner.models import json_schema

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "schemas" / "quality.schema.json"
EXAMPLES = sorted((ROOT / "examples" / "qualities").glob("*.y*ml"))
HOOKS = ROOT / ".pre-commit-hooks.yaml"
MODELINE = re.compile(r"#\s*yaml-language-server:\s*\$schema=(\S+)\s*")


def committed() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMA.read_text("utf-8"))
    return data


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text("utf-8"))


def test_committed_schema_matches_the_models() -> None:
    assert committed() == json.loads(json.dumps(json_schema())), (
        "schemas/quality.schema.json is out of date: run `provisioner schema`"
    )


def test_schema_command_writes_the_committed_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "quality.schema.json"
    assert main(["schema", "--output", str(out)]) == 0
    assert out.read_bytes() == SCHEMA.read_bytes()
    assert main(["schema", "--check", "--output", str(SCHEMA)]) == 0
    capsys.readouterr()


def test_schema_is_draft_2020_12() -> None:
    schema = committed()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid_against_the_schema(example: Path) -> None:
    validator = Draft202012Validator(committed(), format_checker=FormatChecker())
    errors = sorted(validator.iter_errors(load_yaml(example)), key=lambda e: list(e.path))
    assert [f"{list(e.path)}: {e.message}" for e in errors] == []


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_points_editors_at_the_schema(example: Path) -> None:
    first = example.read_text("utf-8").splitlines()[0]
    match = MODELINE.fullmatch(first)
    assert match, f"{example.name} must start with '# yaml-language-server: $schema=…'"
    target = (example.parent / match.group(1)).resolve()
    assert target.is_file(), f"{example.name}: $schema points at {target}, which does not exist"
    assert target.samefile(SCHEMA)


def test_schema_refuses_a_typo() -> None:
    # Unknown fields are errors in the gate; the schema agrees, so editors flag them too.
    validator = Draft202012Validator(committed())
    instance = load_yaml(EXAMPLES[0])
    typo = copy.deepcopy(instance)
    typo["structured_messages"]["contact"]["phone_number"] = typo["structured_messages"][
        "contact"
    ].pop("phone")
    messages = [e.message for e in validator.iter_errors(typo)]
    assert any("phone_number" in m for m in messages)
    assert any("'phone' is a required property" in m for m in messages)


# --- .pre-commit-hooks.yaml ----------------------------------------------------------------


def hooks() -> list[dict[str, Any]]:
    data = load_yaml(HOOKS)
    assert isinstance(data, list)
    return data


def console_scripts() -> dict[str, str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    scripts: dict[str, str] = pyproject["project"]["scripts"]
    return scripts


def test_hooks_parse_and_name_existing_console_scripts() -> None:
    entries = {hook["id"]: hook for hook in hooks()}
    assert set(entries) == {"sftp-provisioner-validate", "sftp-provisioner-codeowners"}
    scripts = console_scripts()
    for hook in entries.values():
        assert {"id", "name", "entry", "language"} <= set(hook)
        assert hook["language"] == "python"
        command = shlex.split(hook["entry"])
        assert command[0] in scripts, f"{hook['id']}: {command[0]} is not a console script"
        # Cross-file rules need every declaration, not only the changed files.
        assert hook["pass_filenames"] is False
        re.compile(hook["files"])


def test_validate_hook() -> None:
    hook = next(h for h in hooks() if h["id"] == "sftp-provisioner-validate")
    assert hook["entry"] == "provisioner validate"
    assert hook["args"] == ["qualities"]
    files = re.compile(hook["files"])
    for changed in ("qualities/0403170701.yaml", "q/x.yml", "keys/a.pub", "certs/c.cer"):
        assert files.search(changed), changed
    for changed in ("certs/c.crt", "certs/c.pem", "certs/c.der"):
        assert files.search(changed), changed
    for unrelated in ("README.md", "bench/run.py", "keys/a.pub.bak"):
        assert not files.search(unrelated), unrelated


def test_codeowners_hook() -> None:
    hook = next(h for h in hooks() if h["id"] == "sftp-provisioner-codeowners")
    assert shlex.split(hook["entry"]) == ["provisioner", "codeowners", "--exit-code"]
    assert hook["args"][:2] == ["--output", ".github/CODEOWNERS"]


@pytest.mark.parametrize("hook_id", ["sftp-provisioner-validate", "sftp-provisioner-codeowners"])
def test_hook_commands_exist(hook_id: str, capsys: pytest.CaptureFixture[str]) -> None:
    hook = next(h for h in hooks() if h["id"] == hook_id)
    command = shlex.split(hook["entry"])[1:]
    assert main([*command, "--help"]) == 0
    assert "Usage: provisioner " + command[0] in capsys.readouterr().out
