"""A run that could not do everything says so (issue 9, finding 7).

One unparsable file defers every removal for the run (rightly: it might be anyone's), but
departed qualities then keep working logins: the run is `degraded`, `reconcile --once` exits 1,
the heartbeat says not ok, a metric counts the deferred removals and the log names the file.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import EN_ONDERNEMING, EN_SECSOC, NOW, Q_ONDERNEMING, USER_SECSOC, Host
from ops_support import run
from test_heartbeat import parse_metrics

from provisioner.state import RunRecord, StateStore, migrations

pytest_plugins = ("pg",)

KEYS = "etc/ssh/sftp-provisioner/authorized_keys"


def test_deferred_removals_make_the_run_degraded_and_name_the_file(host: Host) -> None:
    host.write_settings(sshd_check=False, notifications=False)
    first = host.run("reconcile", "examples", "--once")
    assert first.returncode == 0, first.stderr

    # SECSOC leaves; a file nobody can attribute arrives in the same change.
    host.quality(EN_SECSOC).unlink()
    (host.decls / "qualities" / "zz.yaml").write_text("garbage: [\n", "utf-8")
    done = host.run("reconcile", "examples", "--once")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (deferral,) = [line for line in done.stderr.splitlines() if "removals-deferred" in line]
    assert " error " in deferral and "files=examples/qualities/zz.yaml" in deferral
    assert "deferred=1" in deferral
    assert "outcome=degraded" in done.stderr
    # Deferred, not done: the departed quality still has its keys (and so its login).
    assert (host.root / KEYS / USER_SECSOC).exists()

    settings = host.settings()
    status = json.loads(settings.status_file.read_text("utf-8"))
    assert status["outcome"] == "degraded" and status["ok"] is False
    assert status["removals_deferred"] == 1
    assert status["deferred_by"] == ["examples/qualities/zz.yaml"]
    assert any("zz.yaml" in e and "removals deferred" in e for e in status["errors"])
    metrics = parse_metrics(settings.metrics_file.read_text("utf-8"))
    assert metrics["sftp_provisioner_last_run_ok"] == 0
    assert metrics["sftp_provisioner_removals_deferred"] == 1
    with host.store() as store:
        (last,) = store.last_runs(1)
    assert last.outcome == "degraded"
    assert last.summary["removals_deferred"] == 1

    # Fixed: the removal happens, and the run is healthy again.
    (host.decls / "qualities" / "zz.yaml").unlink()
    again = host.run("reconcile", "examples", "--once")
    assert again.returncode == 0, again.stderr
    assert not (host.root / KEYS / USER_SECSOC).exists()
    metrics = parse_metrics(settings.metrics_file.read_text("utf-8"))
    assert metrics["sftp_provisioner_last_run_ok"] == 1
    assert metrics["sftp_provisioner_removals_deferred"] == 0


def test_a_refused_file_alone_makes_the_run_degraded(host: Host) -> None:
    """Nothing to remove, but a file was refused: not a healthy run either."""
    settings = host.settings()
    run(settings, [host.decls], host.base, now=NOW)
    (host.decls / "qualities" / "zz.yaml").write_text("garbage: [\n", "utf-8")
    report = run(settings, [host.decls], host.base, now=NOW + timedelta(minutes=30))
    assert report.outcome == "degraded"
    assert report.removals_deferred == 0 and report.deferred_by == ["examples/qualities/zz.yaml"]
    assert any(e.startswith("file refused: examples/qualities/zz.yaml") for e in report.errors)
    status = json.loads(settings.status_file.read_text("utf-8"))
    assert status["ok"] is False
    # The apply completed: it is the last success, and not a failed run.
    assert status["last_success"] == status["last_run"] and status["failed_runs_total"] == 0


def test_a_held_quality_makes_the_run_degraded(host: Host) -> None:
    settings = host.settings()
    run(settings, [host.decls], host.base, now=NOW)
    host.edit(EN_ONDERNEMING, "language: nl", "language: xx")
    report = run(settings, [host.decls], host.base, now=NOW + timedelta(minutes=30))
    assert report.outcome == "degraded"
    assert report.errors and f"quality {Q_ONDERNEMING} refused" in report.errors[0]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    return str(request.getfixturevalue("postgres_url"))


def test_a_schema_1_database_keeps_its_runs_and_takes_degraded_ones(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = datetime(2026, 11, 29, 20, 30, tzinfo=UTC)
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:1])
    monkeypatch.setattr(migrations, "LATEST_VERSION", 1)
    with StateStore.open(url):
        pass
    monkeypatch.undo()
    # The runs a schema-1 release wrote, in that schema's columns (today's store writes more).
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for i, outcome in enumerate(("ok", "partial", "failed")):
                conn.execute(
                    sa.text(
                        "INSERT INTO runs (started_at, finished_at, revision, outcome, summary) "
                        "VALUES (:started, :finished, 'r', :outcome, :summary)"
                    ),
                    {
                        "started": (at + timedelta(minutes=i)).isoformat(timespec="microseconds"),
                        "finished": at.isoformat(timespec="microseconds"),
                        "outcome": outcome,
                        "summary": json.dumps({"n": i}),
                    },
                )
    finally:
        engine.dispose()
    with StateStore.open(url) as store:
        store.record_run(RunRecord(at + timedelta(minutes=9), at, "r", "degraded", {"n": 9}))
        runs = store.last_runs(10)
        assert sorted((r.outcome, r.summary["n"]) for r in runs) == [
            ("degraded", 9),
            ("failed", 2),
            ("ok", 0),
            ("partial", 1),
        ]
        assert store.snapshot().channel_keys == {}
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError):
            conn.execute(
                sa.text(
                    "INSERT INTO runs (started_at, outcome, summary) "
                    "VALUES ('2026-01-01T00:00:00.000000+00:00', 'bogus', '{}')"
                )
            )
    finally:
        engine.dispose()
