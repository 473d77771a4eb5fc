"""The heartbeat files: a JSON status file and a Prometheus textfile, with the same figures."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from conftest import EN_ONDERNEMING, NOW, Host
from ops_support import run

from provisioner.heartbeat import Heartbeat, carry_over, render_metrics

SAMPLE = re.compile(r'^(sftp_provisioner_[a-z_]+)(\{[a-z]+="(?:[^"\\]|\\.)*"\})? (\S+)$')


def parse_metrics(text: str) -> dict[str, float]:
    """Strict enough to catch what the textfile collector would refuse."""
    assert text.endswith("\n")
    helped: set[str] = set()
    typed: dict[str, str] = {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("gauge", "counter")
            typed[name] = kind
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, labels, value = match.groups()
            assert name in helped and name in typed, f"{name} has no HELP/TYPE"
            samples[name + (labels or "")] = float(value)
    return samples


def test_both_files_after_a_good_run(host: Host) -> None:
    settings = host.settings()
    report = run(settings, [host.decls], host.base, now=NOW)
    assert report.outcome == "ok"

    status = json.loads(settings.status_file.read_text("utf-8"))
    assert status["outcome"] == "ok" and status["ok"] is True
    assert status["last_run"] == status["last_success"]
    assert status["revision"] is None  # the examples are not a Git checkout here
    assert status["channels"] == {
        "active": 2,
        "degraded": 0,
        "failed": 0,
        "pending": 0,
        "removed": 0,
    }
    assert status["errors"] == []
    assert status["duration_seconds"] >= 0
    assert status["applied_changes"] == report.applied > 0
    assert status["notifications"]["queued"] == 2

    metrics = parse_metrics(settings.metrics_file.read_text("utf-8"))
    last_run = datetime.fromisoformat(status["last_run"]).timestamp()
    assert metrics["sftp_provisioner_last_run_timestamp_seconds"] == last_run
    assert metrics["sftp_provisioner_last_success_timestamp_seconds"] == last_run
    assert metrics["sftp_provisioner_last_run_ok"] == 1
    assert metrics["sftp_provisioner_run_errors_total"] == 0
    assert metrics["sftp_provisioner_runs_total"] == 1
    assert metrics['sftp_provisioner_channels{status="active"}'] == 2
    assert metrics['sftp_provisioner_channels{status="removed"}'] == 0
    assert metrics["sftp_provisioner_run_duration_seconds"] == status["duration_seconds"]
    # Nothing half-written is left next to them (the collector reads every *.prom).
    assert sorted(p.name for p in settings.metrics_file.parent.iterdir()) == [
        settings.metrics_file.name
    ]
    assert not list(settings.status_file.parent.glob(".status.json.*"))


def test_a_failed_run_keeps_the_last_success_and_counts_the_error(host: Host) -> None:
    settings = host.settings()
    good = run(settings, [host.decls], host.base, now=NOW)
    first = json.loads(settings.status_file.read_text())

    host.edit(EN_ONDERNEMING, "technical_user: EXPDEMOONDERNEMING", "technical_user: RENAMED2026")
    (host.decls / "qualities" / "0200065765.yaml").unlink()
    # Refused (the technical user is immutable): applied for the rest, so a degraded run:
    # it counts as the last success (the apply completed), but not as a healthy run.
    partial = run(settings, [host.decls], host.base, now=NOW + timedelta(minutes=30))
    assert partial.outcome == "degraded"
    status = json.loads(settings.status_file.read_text())
    assert status["ok"] is False and status["outcome"] == "degraded"
    assert "refused" in status["errors"][0] and "technical-user-immutable" in status["errors"][0]
    # The refused quality keeps its last good configuration: degraded (it was applied
    # before), not failed (never applied).
    assert status["channels"] == {
        "active": 0,
        "degraded": 1,
        "failed": 0,
        "pending": 0,
        "removed": 1,
    }

    (host.decls / "qualities").rename(host.base / "away")
    failed = run(settings, [host.decls], host.base, now=NOW + timedelta(minutes=60))
    assert failed.outcome == "failed"
    status = json.loads(settings.status_file.read_text())
    assert status["outcome"] == "failed"
    assert partial.finished_at is not None
    assert status["last_success"] == partial.finished_at.isoformat()
    assert status["last_success"] != status["last_run"]
    assert status["runs_total"] == 3 and status["failed_runs_total"] == 1
    metrics = parse_metrics(settings.metrics_file.read_text())
    assert metrics["sftp_provisioner_last_run_ok"] == 0
    assert metrics["sftp_provisioner_run_errors_total"] == 1
    assert metrics["sftp_provisioner_last_run_errors"] == 1
    assert metrics["sftp_provisioner_last_success_timestamp_seconds"] == (
        datetime.fromisoformat(status["last_success"]).timestamp()
    )
    assert good.outcome == "ok" and first["runs_total"] == 1


def test_a_state_that_cannot_be_opened_still_leaves_a_heartbeat(host: Host) -> None:
    host.write_settings(state_url="sqlite:////nonexistent-dir/sub/\x00bad.db")
    settings = host.settings()
    report = run(settings, [host.decls], host.base, now=NOW)
    assert report.outcome == "failed" and not report.recorded
    status = json.loads(settings.status_file.read_text())
    assert status["outcome"] == "failed" and status["errors"]


def test_labels_are_escaped_and_metrics_render_without_a_run_history() -> None:
    beat = Heartbeat(
        host="h",
        last_run=datetime(2026, 11, 29, 21, 0, tzinfo=UTC),
        outcome="failed",
        duration_seconds=1.5,
        revision='a"b\\c',
        errors=["x"],
        channels={},
    )
    carry_over(beat, None, success=False)
    samples = parse_metrics(render_metrics(beat))
    assert samples['sftp_provisioner_revision_info{revision="a\\"b\\\\c"}'] == 1
    assert samples["sftp_provisioner_last_success_timestamp_seconds"] == 0
    assert samples["sftp_provisioner_runs_total"] == 1
