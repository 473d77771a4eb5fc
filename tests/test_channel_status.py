"""What a sender sees of its channel: pending, active, degraded, failed, removed.

`degraded` is a channel applied before that still serves its last good configuration while
its declaration is refused; `failed` one that was never applied. In `status` (text and JSON),
the heartbeat (counts per status) and the metrics (a gauge per status).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from conftest import (
    EN_ONDERNEMING,
    EN_SECSOC,
    EN_THIRD,
    NOW,
    Q_ONDERNEMING,
    Q_THIRD,
    USER_ONDERNEMING,
    USER_THIRD,
    Host,
    add_third_quality,
)
from guard_support import add_qualities
from ops_support import run
from test_heartbeat import parse_metrics

from provisioner.errors import ApplyError
from provisioner.state.model import CHANNEL_STATUSES

KEYS_DIR = "etc/ssh/sftp-provisioner/authorized_keys"
IN_PROGRESS = "the configuration for the creation of the channel is in progress"
DEGRADED = "serving the last good configuration; the declaration is refused since "


def rows(host: Host, *extra: str) -> dict[str, dict[str, Any]]:
    done = host.run("status", "--format", "json", *extra)
    assert done.returncode == 0, done.stderr
    return {r["enterprise_number"]: r for r in json.loads(done.stdout)["channels"]}


def test_status_heartbeat_and_metrics_show_each_of_the_five(host: Host) -> None:
    # A first apply that is rolled back: nothing was ever applied (failed, all of them).
    (gone,) = add_qualities(host, 1)
    add_third_quality(host)
    host.write_settings(reload_command=["/bin/false"])
    with pytest.raises(ApplyError, match="the previous files were restored"):
        host.apply()
    assert {r.status for r in host.snapshot().registrations.values()} == {"failed"}
    host.write_settings(reload_command=[])
    # THIRD refused while never applied: still failed; the others are applied now.
    host.edit(EN_THIRD, "language: fr", "language: xx")
    host.apply(now=NOW + timedelta(minutes=1))
    assert host.snapshot().registrations[Q_THIRD].status == "failed"

    # Next run: ONDERNEMING refused after it was applied (degraded), one quality gone
    # (removed), SECSOC fine (active).
    host.edit(EN_ONDERNEMING, "language: nl", "language: xx")
    host.quality(gone).unlink()
    settings = host.settings()
    later = NOW + timedelta(minutes=30)
    report = run(settings, [host.decls], host.base, now=later, notify=False)
    assert report.outcome == "degraded"
    # Declared after the run: pending until the next sync.
    (waiting,) = add_qualities(host, 1, first=1)

    data = rows(host, "-d", "examples")
    assert {en: r["status"] for en, r in data.items()} == {
        EN_SECSOC: "active",
        EN_ONDERNEMING: "degraded",
        EN_THIRD: "failed",
        gone: "removed",
        waiting: "pending",
    }
    assert data[EN_SECSOC]["message"] is None
    assert data[waiting]["message"] == IN_PROGRESS
    degraded = data[EN_ONDERNEMING]
    # The sentence is for a person: Brussels time (21:00 UTC is 22:00 CET).
    assert degraded["message"].startswith(DEGRADED + "2026-11-29 22:00 CET because ")
    assert "invalid-value" in degraded["message"] and "invalid-value" in degraded["reason"]
    assert degraded["status_since"] == later.isoformat()
    # `changed_at`: when its configuration was last applied; `last_sync`: the host's last run.
    assert degraded["changed_at"] is not None
    assert degraded["last_sync"] == later.isoformat()
    failed = data[EN_THIRD]
    assert failed["message"].startswith("never applied: the declaration is refused since ")
    assert "invalid-value" in failed["message"] and failed["changed_at"] is None
    assert data[gone]["message"].startswith("removed since 2026-11-29 22:00 CET")

    text = host.run("status", "-d", "examples")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    for en, status in (
        (EN_ONDERNEMING, "degraded"),
        (EN_THIRD, "failed  "),
        (gone, "removed "),
        (waiting, "pending "),
    ):
        at = next(i for i, line in enumerate(lines) if en in line)
        assert f"{en}  {status:<8}  " in lines[at], lines[at]  # a column, under a header
        assert lines[at + 1].strip() == data[en]["message"]
    assert "reason:" not in text.stdout  # the sentences say it, with since when

    # The heartbeat counts per status and a gauge per status, every status present.
    beat = json.loads(settings.status_file.read_text("utf-8"))
    assert beat["channels"] == {
        "active": 1,
        "degraded": 1,
        "failed": 1,
        "pending": 0,
        "removed": 1,
    }
    metrics = parse_metrics(settings.metrics_file.read_text("utf-8"))
    for status in CHANNEL_STATUSES:
        assert (
            metrics[f'sftp_provisioner_channels{{status="{status}"}}'] == beat["channels"][status]
        )


def test_refused_after_active_is_degraded_since_then_and_active_again_once_fixed(
    host: Host,
) -> None:
    settings = host.settings()
    run(settings, [host.decls], host.base, now=NOW)
    keys = (host.root / KEYS_DIR / USER_ONDERNEMING).read_bytes()
    host.edit(EN_ONDERNEMING, "language: nl", "language: xx")

    first = NOW + timedelta(minutes=30)
    run(settings, [host.decls], host.base, now=first)
    reg = host.snapshot().registrations[Q_ONDERNEMING]
    assert (reg.status, reg.status_since) == ("degraded", first)
    assert "invalid-value" in (reg.status_reason or "")
    # Still served as it was.
    assert (host.root / KEYS_DIR / USER_ONDERNEMING).read_bytes() == keys

    # Refused again, for another reason: since does not move on every run.
    host.edit(EN_ONDERNEMING, "language: xx", "language: yy")
    run(settings, [host.decls], host.base, now=first + timedelta(minutes=30))
    reg = host.snapshot().registrations[Q_ONDERNEMING]
    assert (reg.status, reg.status_since) == ("degraded", first)
    assert "'yy'" in (reg.status_reason or "")
    assert rows(host)[EN_ONDERNEMING]["message"].startswith(DEGRADED + "2026-11-29 22:00 CET")

    fixed = first + timedelta(hours=1)
    host.edit(EN_ONDERNEMING, "language: yy", "language: nl")
    plan = host.run("plan")
    assert "status degraded -> active (the files already match)" in plan.stdout
    report = run(settings, [host.decls], host.base, now=fixed)
    assert report.outcome == "ok", report.errors
    reg = host.snapshot().registrations[Q_ONDERNEMING]
    assert (reg.status, reg.status_since, reg.status_reason) == ("active", fixed, None)
    assert rows(host)[EN_ONDERNEMING]["message"] is None


def test_a_never_applied_channel_refused_stays_failed(host: Host) -> None:
    add_third_quality(host)
    host.write_settings(reload_command=["/bin/false"])
    with pytest.raises(ApplyError):
        host.apply()
    host.write_settings(reload_command=[])
    host.edit(EN_THIRD, f"technical_user: {USER_THIRD}", "technical_user: thirdrenamed1")
    host.apply(now=NOW + timedelta(minutes=30))
    reg = host.snapshot().registrations[Q_THIRD]
    assert reg.status == "failed" and reg.last_applied_at is None
    assert "technical-user-immutable" in (reg.status_reason or "")
