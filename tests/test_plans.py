"""The planner tested as data: one test over the case directories of tests/plans/.

Each case holds the declarations, the state snapshot and the host as the planner finds them,
and the plan it must compute (`expected/plan.json`); see tests/plans/README.md and
tests/plans_support.py for the format. A case proves one decision of the planner: who is
created, changed, refused and held, whose account goes and whose chroot is archived, what
drift is repaired and what is only reported.

After an intended change of what the planner decides, refresh the expected plans (as root,
owners are part of every case) and review the diff before committing it:

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_plans.py
    git diff tests/plans/

The inputs are remade by tests/plans/make_cases.py; this runner never needs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import require_root
from plans_support import (
    PLANS,
    case_directories,
    dumps,
    exact,
    load_case,
    normalised,
    plan_of,
    updating,
)

from provisioner.plan import Plan

CASES = case_directories()


def test_the_corpus_is_there() -> None:
    # A glob that found nothing would pass every parametrized test there is.
    assert len(CASES) >= 15, [c.name for c in CASES]


@pytest.mark.parametrize("directory", CASES, ids=[c.name for c in CASES])
def test_plan(directory: Path) -> None:
    # Recorded hosts have foreign owners, and a normal user's plan does not manage owners.
    require_root()
    case = load_case(directory)
    assert case.why, f"{directory}/case.yaml: say in `why:` what the case proves"
    text = dumps(normalised(plan_of(case)))
    expected = directory / "expected" / "plan.json"
    if updating():
        expected.parent.mkdir(exist_ok=True)
        expected.write_text(text, "utf-8")
    assert expected.exists(), f"{expected} is missing (UPDATE_GOLDEN=1 writes it)"
    assert text == expected.read_text("utf-8"), (
        f"{case.name}: the plan differs from {expected} (UPDATE_GOLDEN=1 refreshes; "
        f"review the diff). Case: {case.why}"
    )


@pytest.mark.parametrize("directory", CASES, ids=[c.name for c in CASES])
def test_expected_plan_is_a_loadable_saved_plan(directory: Path) -> None:
    expected = directory / "expected" / "plan.json"
    if not expected.exists():
        pytest.fail(f"{expected} is missing (UPDATE_GOLDEN=1 writes it)")
    data = json.loads(expected.read_text("utf-8"))
    plan = Plan.from_json(data)
    assert dumps(plan.to_json()) == dumps(data)


# Decisions of issue 11 not made yet: strict, so that the day they hold the marker must go.
NOT_YET = {
    "settings-no-render": "the settings fingerprint still digests every setting, mail_from "
    "and smtp_timeout included (issue 11: key it on what rendering reads)",
}
SAME = [
    pytest.param(
        c,
        id=c.name,
        marks=[pytest.mark.xfail(strict=True, reason=NOT_YET[c.name])] if c.name in NOT_YET else [],
    )
    for c in CASES
    if load_case(c).same_plan_as
]


@pytest.mark.parametrize("directory", SAME)
def test_same_plan_as(directory: Path) -> None:
    """`same_plan_as: OTHER`: the plan equals OTHER's, fingerprints included, so a plan
    saved before the difference between the two cases (a setting that renders nothing)
    is still the plan and is not refused as stale."""
    require_root()
    case = load_case(directory)
    assert case.same_plan_as is not None
    other = load_case(PLANS / case.same_plan_as)
    mine, theirs = exact(plan_of(case)), exact(plan_of(other))
    assert mine["fingerprints"] == theirs["fingerprints"], "a saved plan would be stale"
    assert mine == theirs
