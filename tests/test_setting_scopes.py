"""The settings a plan depends on (`provisioner.setting_scopes`): every setting is classified,
and only those that rendering and planning read key the host record and the plan."""

from __future__ import annotations

import pytest
from conftest import Host

from provisioner.hostrecord import context_key
from provisioner.reconcile import Reconciliation
from provisioner.setting_scopes import ELSEWHERE, PLANS, RENDERS
from provisioner.settings import HostSettings


def test_every_setting_is_in_exactly_one_scope() -> None:
    fields = set(HostSettings.model_fields)
    scopes = {"RENDERS": RENDERS, "PLANS": PLANS, "ELSEWHERE": ELSEWHERE}
    unclassified = fields - RENDERS - PLANS - ELSEWHERE
    assert not unclassified, (
        f"settings in no scope of provisioner/setting_scopes.py: {sorted(unclassified)}; "
        "put each where it belongs (does rendering read it? does the plan or its apply?)"
    )
    assert not (RENDERS | PLANS | ELSEWHERE) - fields, "a scope names a setting that is gone"
    for a, first in scopes.items():
        for b, second in scopes.items():
            assert a == b or not first & second, f"{sorted(first & second)} in {a} and {b}"


@pytest.fixture
def applied(recorded_host: Host) -> Host:
    return recorded_host


def _context(host: Host) -> str:
    return context_key(host.settings(), True, (9, 2))


def _nothing_rendered(rec: Reconciliation) -> bool:
    return rec.channel_nodes == {} and set(rec.unchanged) == {c.qid for c in rec.accepted}


def test_notification_settings_leave_plan_and_record_alone(applied: Host) -> None:
    before = applied.compute()
    assert _nothing_rendered(before)
    context = _context(applied)
    applied.write_settings(mail_from="gateway@example.org", smtp_timeout=7)
    assert applied.settings().mail_from == "gateway@example.org"
    after = applied.compute()
    assert after.plan.fingerprints == before.plan.fingerprints
    assert _context(applied) == context
    assert _nothing_rendered(after)  # no channel was rendered or read again


@pytest.mark.parametrize(
    "setting",
    [{"max_auth_tries": 4}, {"chroot_base": "/srv/elsewhere"}],
    ids=["sshd-option", "chroot-base"],
)
def test_a_rendering_setting_changes_plan_and_record(
    applied: Host, setting: dict[str, object]
) -> None:
    before = applied.compute()
    context = _context(applied)
    applied.write_settings(**setting)
    after = applied.compute()
    assert after.plan.fingerprints.settings != before.plan.fingerprints.settings
    assert _context(applied) != context
    assert after.unchanged == {}  # every channel is rendered and compared again


def test_a_planning_setting_changes_the_plan_only(applied: Host) -> None:
    before = applied.compute()
    context = _context(applied)
    applied.write_settings(max_removals=3)
    after = applied.compute()
    assert after.plan.fingerprints.settings != before.plan.fingerprints.settings
    assert _context(applied) == context
    assert _nothing_rendered(after)
