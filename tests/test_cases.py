"""Golden tests of the declarations gate: every rule, passing and refused, as data.

Each directory ``tests/cases/<case>/`` (except ``_material``) is a small declarations tree:
``qualities/*.yaml`` files, each starting with a comment that says whether it must pass or be
refused and why. The keys and certificates they reference live in ``tests/cases/_material/``
(made once by ``tests/cases/make_material.py``). Next to the tree:

- ``expected.txt``: the exact text report of ``provisioner validate`` run in the case directory
  (``file:line:col: severity[code] message [yaml.path]`` lines and the summary line);
- optionally ``expected.json`` and ``expected.github``: the same report in ``--format json`` and
  ``--format github``.

A passing file shows up only in the summary's count; every refusal shows its code and line.
The clock is fixed at ``FIXED_NOW`` (2026-11-29T12:00Z) so that certificates and keys never
expire under the tests. The declarations root is the Git work tree, so the absolute path of the
checkout, wherever it is, appears as ``<root>`` in the golden files.

To add a case, create its directory and YAML files, then write its golden files with::

    UPDATE_GOLDEN=1 pytest tests/test_cases.py -k <case>

and review the diff of ``expected.*`` before committing: a golden file is a statement of what an
administrator sees. ``UPDATE_GOLDEN=1 pytest tests/test_cases.py`` rewrites all of them (e.g.
after rewording a message).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from provisioner.declarations import check_file
from provisioner.report import render_github, render_json, render_text
from provisioner.validate import ValidateSettings, ValidationReport, validate

FIXED_NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
CASES = Path(__file__).parent / "cases"
EXAMPLES = Path(__file__).parent.parent / "examples"
MATERIAL = CASES / "_material"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

RENDERERS = {
    "expected.txt": render_text,
    "expected.json": render_json,
    "expected.github": render_github,
}


def case_dirs() -> list[Path]:
    return sorted(p for p in CASES.iterdir() if p.is_dir() and not p.name.startswith("_"))


def run_case(case: Path) -> ValidationReport:
    return validate(
        ValidateSettings(paths=(Path(),), cwd=case, now=FIXED_NOW, cache_dir=None, jobs=1)
    )


def normalise(text: str, report: ValidationReport) -> str:
    return text.replace(str(report.root), "<root>")


def check_golden(path: Path, actual: str) -> None:
    if UPDATE:
        path.write_text(actual, "utf-8")
        return
    assert path.exists(), f"{path} is missing; write it with UPDATE_GOLDEN=1 and review it"
    expected = path.read_text("utf-8")
    assert actual == expected, f"{path.parent.name}/{path.name} differs from the report"


@pytest.mark.parametrize("case", case_dirs(), ids=lambda p: p.name)
def test_case(case: Path) -> None:
    report = run_case(case)
    for name, render in RENDERERS.items():
        if name == "expected.txt" or (case / name).exists():
            check_golden(case / name, normalise(render(report), report))


def test_every_case_declares_its_intent() -> None:
    """Each YAML file says in its first comment line whether it passes, warns or is refused."""
    for case in case_dirs():
        for path in sorted(case.rglob("*.y*ml")):
            first = path.read_bytes().lstrip(b"\xef\xbb\xbf").split(b"\n", 1)[0]
            if path.stat().st_size == 0 or not first.startswith(b"#"):
                continue  # empty and non-text inputs of bad-input cannot carry a comment
            assert first.startswith((b"# Passing", b"# Refused", b"# Warned")), path


def test_passing_files_have_no_diagnostic_and_refused_ones_an_error() -> None:
    """The comments and the golden files agree: what is said to pass really passes."""
    for case in case_dirs():
        report = run_case(case)
        by_file: dict[str, set[str]] = {}
        related: set[str] = set()
        for d in report.diagnostics:
            by_file.setdefault(d.location.file, set()).add(d.severity.value)
            related.update(r.file for r in d.related)
        for path in sorted(case.rglob("*.y*ml")):
            first = path.read_bytes().lstrip(b"\xef\xbb\xbf").split(b"\n", 1)[0]
            shown = str(path.relative_to(case))
            found = by_file.get(shown, set())
            if first.startswith(b"# Passing:"):
                assert not found, f"{shown} should pass without diagnostics"
            elif first.startswith((b"# Passing with", b"# Warned:")):
                assert found == {"warning"}, f"{shown} should pass with warnings only"
            elif first.startswith((b"# Refused together with", b"# Warned together with")):
                # The first of a pair is named by the diagnostic on the second.
                assert shown in related, f"{shown} should be named by its pair's diagnostic"
            elif first.startswith(b"# Refused"):
                assert "error" in found, f"{shown} should be refused"


def test_json_report_is_the_text_report() -> None:
    """The JSON golden holds the same diagnostics, in the same order, as the text golden."""
    case = CASES / "multi-error"
    report = run_case(case)
    doc = json.loads(render_json(report))
    assert doc["valid"] is False
    assert (doc["errors"], doc["warnings"]) == (report.errors, report.warnings)
    assert [(d["file"], d["line"], d["code"]) for d in doc["diagnostics"]] == [
        (d.location.file, d.location.line, d.code) for d in report.diagnostics
    ]
    dup = next(d for d in doc["diagnostics"] if d["code"] == "duplicate-technical-user")
    assert dup["related"] == [
        {
            "file": "qualities/acme,inc.yaml",
            "line": 12,
            "column": 19,
            "path": "structured_messages.technical_user",
        }
    ]


def test_examples_validate_unchanged() -> None:
    """The canonical examples are valid; the RSA 2048 key of the payroll package only warns."""
    report = validate(
        ValidateSettings(paths=(Path(),), cwd=EXAMPLES, now=FIXED_NOW, cache_dir=None, jobs=1)
    )
    assert render_text(report).splitlines() == [
        "qualities/0403170701.yaml:25:11: warning[key-rsa-below-3072] "
        + next(d.message for d in report.diagnostics)
        + " [structured_messages.channels.sftp.ssh_keys[0]]",
        "2 declarations checked: valid, 0 errors, 1 warning",
    ]
    assert report.ok


def test_phone_numbers_are_normalised() -> None:
    """National and international notations end up in E.164, as the SFTP host's records want."""
    case = CASES / "contact" / "qualities"
    national = check_file(case / "ok-national-phone.yaml", "n.yaml", CASES)
    international = check_file(case / "ok-international.yaml", "i.yaml", CASES)
    assert national.declaration is not None and international.declaration is not None
    contact = national.declaration.structured_messages.contact
    assert contact.phone == "+3225551234"
    contact = international.declaration.structured_messages.contact
    assert (contact.phone, contact.fax, contact.mobile) == (
        "+33142685300",
        "+3225551235",
        "+32470123456",
    )


def test_enterprise_numbers_are_normalised() -> None:
    """Dotted, undotted and BE-prefixed notations are the same ten digits."""
    case = CASES / "enterprise-number" / "qualities"
    numbers = {
        name: check_file(case / name, name, CASES).facts.enterprise_number
        for name in ("ok-dotted.yaml", "ok-undotted.yaml", "ok-be-prefix.yaml")
    }
    assert all(n is not None and len(n) == 10 and n.isdigit() for n in numbers.values())
    assert numbers["ok-be-prefix.yaml"] == "0450012395"


def test_private_key_is_never_echoed() -> None:
    """A private key pasted or referenced by mistake is refused without quoting any of it."""
    from fixtures_crypto import secret_fragments

    secret = (MATERIAL / "keys" / "leaked-private.pub").read_text()
    fragments = secret_fragments(secret)
    assert fragments
    report = run_case(CASES / "private-key")
    assert {d.code for d in report.diagnostics} == {"key-private", "certificate-private-key"}
    for render in RENDERERS.values():
        output = render(report)
        leaked = [f for f in fragments if f in output]
        assert not leaked, f"{render.__name__} echoes the private key"
