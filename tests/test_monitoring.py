"""The operators' dashboards: Prometheus alerting rules and a Grafana dashboard (monitoring/).

The rules are checked and unit-tested by promtool itself (Debian's `prometheus` package; under
CI=true a missing promtool fails, never skips). Every metric the rules and the dashboard name
must be one the heartbeat writes, with the labels it writes: a renamed metric would otherwise
leave an alert that can never fire.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import REPO, require
from ruamel.yaml import YAML

from provisioner.heartbeat import PLAN_ACTIONS, Heartbeat, expiries, render_metrics
from provisioner.plan import ChannelAction
from provisioner.validate import ValidateSettings, validate

MONITORING = REPO / "monitoring"
RULES = sorted(MONITORING.glob("*.rules.yml"))
RULE_TESTS = sorted((MONITORING / "tests").glob("*.yml"))
DASHBOARD = MONITORING / "sftp-provisioner.dashboard.json"
NAME = re.compile(r"\bsftp_provisioner_[a-z_]+\b")
# A selector with label matchers: name{label="value", ...}
SELECTOR = re.compile(r"\b(sftp_provisioner_[a-z_]+)\{([^}]*)\}")
MATCHER = re.compile(r'([a-z_]+)\s*(=~|!=|!~|=)\s*"([^"]*)"')
# Labels Prometheus itself or the node exporter's scrape adds.
SCRAPE_LABELS = {"instance", "job"}
# Labels whose every value the heartbeat writes on every run (run outcomes, plan actions,
# channel statuses): a matcher must name one of them. (`user` and `revision` are data.)
ENUMERATED = {"outcome", "action", "status"}


def promtool() -> str:
    found = shutil.which("promtool")
    require(found is not None, "needs promtool (Debian package prometheus)")
    assert found is not None
    return found


def full_heartbeat() -> Heartbeat:
    """A heartbeat with every optional figure present, so that every metric is written."""
    when = datetime(2026, 12, 1, 23, 30, tzinfo=UTC)
    return Heartbeat(
        host="sftp-a",
        last_run=when,
        outcome="degraded",
        duration_seconds=2.5,
        revision="3f2a",
        errors=["x"],
        channels={"active": 3},
        last_success=when,
        plan={"create": 1, "refused": 1},
        notifications={"queued": 1, "sent": 2, "failed": 0},
        next_run=when,
        removals_deferred=1,
        certificate_expiry={"EXPDEMOONDERNEMING": when.timestamp()},
        key_expiry={"EXPDEMOONDERNEMING": when.timestamp()},
    )


def written() -> dict[str, set[tuple[str, str]]]:
    """Metric name -> the (label, value) pairs the heartbeat writes for it."""
    out: dict[str, set[tuple[str, str]]] = {}
    for line in render_metrics(full_heartbeat()).splitlines():
        if line.startswith("# TYPE "):
            out.setdefault(line.split()[2], set())
        elif not line.startswith("#"):
            name, _, rest = line.partition("{")
            labels = rest.rpartition("}")[0] if rest else ""
            out.setdefault(name.split()[0], set()).update(
                (k, v) for k, _op, v in MATCHER.findall(labels)
            )
    return out


def test_promtool_checks_the_rules() -> None:
    assert RULES, "no monitoring/*.rules.yml"
    done = subprocess.run(
        [promtool(), "check", "rules", *map(str, RULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_promtool_unit_tests_of_the_alerts() -> None:
    assert RULE_TESTS
    done = subprocess.run(
        [promtool(), "test", "rules", *map(str, RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def alert_names() -> set[str]:
    names = set()
    for path in RULES:
        for group in YAML(typ="safe").load(path.read_text("utf-8"))["groups"]:
            names.update(r["alert"] for r in group["rules"] if "alert" in r)
    return names


def test_every_alert_has_a_unit_test() -> None:
    tested = set()
    for path in RULE_TESTS:
        for case in YAML(typ="safe").load(path.read_text("utf-8"))["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    tested.add(check["alertname"])
    assert alert_names() - tested == set()
    assert {
        "SftpProvisionerReconcilerDead",
        "SftpProvisionerRunFailed",
        "SftpProvisionerRunDegraded",
        "SftpProvisionerRemovalGuardTripped",
        "SftpProvisionerCertificateExpiring",
        "SftpProvisionerKeyExpiring",
        "SftpProvisionerDeclarationsRefused",
    } <= alert_names()


@pytest.mark.parametrize("path", [*RULES, *RULE_TESTS, DASHBOARD], ids=lambda p: p.name)
def test_every_metric_named_is_one_the_heartbeat_writes(path: Path) -> None:
    text = path.read_text("utf-8")
    metrics = written()
    named = set(NAME.findall(text))
    assert named, f"{path.name} names no metric"
    assert named - metrics.keys() == set()
    for name, matchers in SELECTOR.findall(text):
        for label, op, value in MATCHER.findall(matchers):
            if label in SCRAPE_LABELS:
                continue
            values = {v for k, v in metrics[name] if k == label}
            assert values, f"{path.name}: {name} has no label {label!r}"
            if op == "=" and label in ENUMERATED:
                assert value in values, f"{path.name}: {name}{{{label}={value!r}}} never written"


def test_the_plan_actions_written_are_the_plans() -> None:
    assert set(PLAN_ACTIONS) == {a.value for a in ChannelAction}


def dashboard_exprs() -> list[str]:
    data = json.loads(DASHBOARD.read_text("utf-8"))
    exprs = []
    for panel in data["panels"]:
        for target in panel.get("targets", []):
            exprs.append(target["expr"])
    return exprs


def test_dashboard_is_importable() -> None:
    data = json.loads(DASHBOARD.read_text("utf-8"))
    assert data["uid"] == "sftp-provisioner"
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in data["templating"]["list"]}
    assert variables == {"datasource", "instance"}
    for panel in data["panels"]:
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"] and panel["description"]


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query, as a recording rule, with the host variable filled in."""
    exprs = dashboard_exprs()
    assert exprs
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": e.replace("$instance", ".*")}
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(json.dumps(rules), "utf-8")  # JSON is YAML
    done = subprocess.run(
        [promtool(), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_expiry_figures_come_from_the_validated_declarations(tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples", tmp_path / "decls")
    path = tmp_path / "decls" / "qualities" / "0403170701.yaml"
    path.chmod(0o644)
    text = path.read_text("utf-8")
    old = "        - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPq7"
    assert old in text
    text = text.replace(
        old,
        "        - expires: 2027-03-31\n          key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPq7",
    )
    path.write_text(text, "utf-8")
    report = validate(
        ValidateSettings(
            paths=(tmp_path / "decls",),
            cwd=tmp_path,
            now=datetime(2026, 11, 29, 12, 0, tzinfo=UTC),
            cache_dir=None,
            jobs=1,
        )
    )
    assert report.ok, report.diagnostics
    certificates, keys = expiries(report.summaries)
    assert set(certificates) == {"EXPDEMOONDERNEMING", "secsocexemple01"}
    # A date is the end of that day on the Brussels clock (23:59 CEST is 21:59 UTC).
    end_of_day = datetime(2027, 3, 31, 21, 59, tzinfo=UTC).timestamp()
    assert keys == {"EXPDEMOONDERNEMING": end_of_day}
    beat = full_heartbeat()
    beat.certificate_expiry, beat.key_expiry = certificates, keys
    lines = render_metrics(beat).splitlines()
    assert (
        'sftp_provisioner_key_expiry_timestamp_seconds{user="EXPDEMOONDERNEMING"} '
        f"{int(keys['EXPDEMOONDERNEMING'])}" in lines
    )
