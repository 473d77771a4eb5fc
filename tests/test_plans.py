"""The planner tested as data: one test over the case directories of tests/plans/.

Each case holds the declarations, the state snapshot and the host as the planner finds them,
and the plan it must compute (`expected/plan.json`); see tests/plans/README.md and
tests/plans_support.py for the format. A case proves one decision of the planner: who is
created, changed, refused and held, whose account goes and whose chroot is archived, what
drift is repaired and what is only reported.

After an intended change of what the planner decides, refresh the expected files (as root,
owners are part of every case) and review the diff before committing it:

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_plans.py
    git diff tests/plans/

The inputs are remade by tests/plans/make_cases.py; this runner never needs it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    plan_on_a_real_tree,
    reads_of,
    updating,
)

from provisioner.plan import Plan

CASES = case_directories()


def _params(directories: list[Path]) -> list[Any]:
    return [pytest.param(d, id=d.name) for d in directories]


def _check(expected: Path, text: str, why: str) -> None:
    if updating():
        expected.parent.mkdir(exist_ok=True)
        expected.write_text(text, "utf-8")
    assert expected.exists(), f"{expected} is missing (UPDATE_GOLDEN=1 writes it)"
    assert text == expected.read_text("utf-8"), (
        f"{expected} differs (UPDATE_GOLDEN=1 refreshes; review the diff). Case: {why}"
    )


def test_the_corpus_is_there() -> None:
    # A glob that found nothing would pass every parametrized test there is.
    assert len(CASES) >= 15, [c.name for c in CASES]


@pytest.mark.parametrize("directory", _params(CASES))
def test_plan(directory: Path) -> None:
    # Owners are part of every case, and a plan manages them only in a run as root.
    require_root()
    case = load_case(directory)
    assert case.why, f"{directory}/case.yaml: say in `why:` what the case proves"
    _check(directory / "expected" / "plan.json", dumps(normalised(plan_of(case))), case.why)


@pytest.mark.parametrize("directory", _params(CASES))
def test_the_same_plan_on_a_real_tree(directory: Path) -> None:
    """The recorded host is the host: laid out for real, read as this host is read, it
    gives the expected plan too."""
    require_root()
    case = load_case(directory)
    expected = (directory / "expected" / "plan.json").read_text("utf-8")
    assert dumps(normalised(plan_on_a_real_tree(case))) == expected


@pytest.mark.parametrize("directory", _params(CASES))
def test_expected_plan_is_a_loadable_saved_plan(directory: Path) -> None:
    expected = directory / "expected" / "plan.json"
    data = json.loads(expected.read_text("utf-8"))
    assert dumps(Plan.from_json(data).to_json()) == dumps(data)


READS = [c for c in CASES if load_case(c).host_record is not None]


@pytest.mark.parametrize("directory", _params(READS))
def test_reads(directory: Path) -> None:
    """What the planner reads of a host its last apply left with a host record: channels
    the record vouches for are neither read nor listed, and a path changed since (by the
    declarations or by hand) is read again."""
    require_root()
    case = load_case(directory)
    plan, reads = reads_of(case)
    # A record makes a plan faster, never different.
    assert dumps(normalised(plan)) == (directory / "expected" / "plan.json").read_text("utf-8")
    _check(directory / "expected" / "reads.json", dumps(reads), case.why)


SAME = [c for c in CASES if load_case(c).same_plan_as]


@pytest.mark.parametrize("directory", _params(SAME))
def test_same_plan_as(directory: Path) -> None:
    """`same_plan_as: OTHER`: the plan equals OTHER's, fingerprints included, so a plan
    saved before the difference between the two cases (a setting that renders nothing)
    is still the plan and is not refused as stale; and when both make a host record, the
    planner reads what it reads for OTHER (no channel again)."""
    require_root()
    case = load_case(directory)
    assert case.same_plan_as is not None
    other = load_case(PLANS / case.same_plan_as)
    mine, theirs = exact(plan_of(case)), exact(plan_of(other))
    assert mine["fingerprints"] == theirs["fingerprints"], "a saved plan would be stale"
    assert mine == theirs
    if case.host_record is not None and other.host_record is not None:
        assert reads_of(case)[1] == reads_of(other)[1], "the planner read more than for OTHER"
