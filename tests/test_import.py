"""`provisioner import`: existing registrations brought into the state, all or nothing.

The rule book is tested as data: each directory `tests/import_cases/<case>/` holds the
`import.csv` an operator would feed, optionally `reserved.txt` (--reserved-usernames), and
what the state already holds as `state.csv` (registrations, same format) and
`state-reserved.txt`; `expected.txt` is exactly what the operator reads: the diagnostics
(`import.csv:LINE:COL: error[code] message`) when the import is refused, else the dry run's
table. The case's name says what it shows; `ok-*` cases must be accepted. Rewrite the golden
files with `UPDATE_GOLDEN=1 pytest tests/test_import.py -k <case>` and review the diff.

The rest goes through the command line and the real store: SQLite and PostgreSQL, the 5,000-row
import, its first apply, idempotence, hostile files.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from provisioner.adoption import (
    Held,
    ImportPlan,
    plan_import,
    read_import,
    read_reserved,
    render_diagnostics,
    render_plan,
)
from provisioner.quality_id import QualityId

CASES = Path(__file__).parent / "import_cases"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
TODAY = date(2026, 11, 29)
NOW = datetime(2026, 11, 29, 20, 30, tzinfo=UTC)


def case_dirs() -> list[Path]:
    return sorted(p for p in CASES.iterdir() if p.is_dir())


def held_from_files(case: Path) -> Held:
    registrations: dict[QualityId, tuple[int, str]] = {}
    usernames: dict[str, QualityId | None] = {}
    if (case / "state.csv").exists():
        rows, problems = read_import(case / "state.csv", "state.csv", today=TODAY)
        assert not problems, render_diagnostics(problems)
        for row in rows:
            registrations[row.qid] = (row.sender_number, row.technical_user)
            usernames[row.technical_user] = row.qid
    if (case / "state-reserved.txt").exists():
        names, problems = read_reserved(case / "state-reserved.txt", "state-reserved.txt")
        assert not problems
        usernames.update((n.username, None) for n in names)
    return Held(registrations=registrations, usernames=usernames)


def run_case(case: Path) -> tuple[ImportPlan, str]:
    cwd = Path.cwd()
    os.chdir(case)
    try:
        rows, problems = read_import(Path("import.csv"), "import.csv", today=TODAY)
        reserved = []
        if Path("reserved.txt").exists():
            reserved, more = read_reserved(Path("reserved.txt"), "reserved.txt")
            problems.extend(more)
        plan = plan_import("import.csv", rows, reserved, held_from_files(case), problems)
    finally:
        os.chdir(cwd)
    text = render_plan(plan) if plan.ok else render_diagnostics(plan.diagnostics)
    return plan, text


@pytest.mark.parametrize("case", case_dirs(), ids=lambda p: p.name)
def test_case(case: Path) -> None:
    plan, text = run_case(case)
    golden = case / "expected.txt"
    if UPDATE:
        golden.write_text(text, "utf-8")
    assert golden.exists(), f"{golden} is missing; write it with UPDATE_GOLDEN=1 and review it"
    assert text == golden.read_text("utf-8")
    assert plan.ok == case.name.startswith("ok-"), text
