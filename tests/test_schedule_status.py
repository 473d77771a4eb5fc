"""`provisioner status`: channels declared since the last run show as pending, with the next sync."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from conftest import EN_ONDERNEMING, EN_SECSOC, USER_ONDERNEMING, USER_SECSOC, Host
from ops_support import run

IN_PROGRESS = "the configuration for the creation of the channel is in progress"


def status(host: Host, *extra: str) -> dict[str, object]:
    done = host.run("status", "--format", "json", *extra)
    assert done.returncode == 0, done.stderr
    data: dict[str, object] = json.loads(done.stdout)
    return data


def test_a_channel_declared_since_the_last_run_is_pending_until_the_next_sync(
    host: Host,
) -> None:
    away = host.base / "later.yaml"
    host.quality(EN_ONDERNEMING).rename(away)
    run(host.settings(), [host.decls], host.base)  # the last run knew one quality
    away.rename(host.quality(EN_ONDERNEMING))  # merged after it

    before = datetime.now(UTC)
    data = status(host, "--declarations", "examples")
    rows = {r["username"]: r for r in data["channels"]}  # type: ignore[attr-defined]
    assert rows[USER_SECSOC]["status"] == "active"
    assert rows[USER_SECSOC]["message"] is None
    new = rows[USER_ONDERNEMING]
    assert new["status"] == "pending"
    assert new["message"] == IN_PROGRESS
    assert new["enterprise_number"] == EN_ONDERNEMING
    assert new["sender_number"] is None and new["registered_at"] is None
    next_sync = datetime.fromisoformat(new["next_sync"])
    assert next_sync.minute in (0, 30) and next_sync.second == 0
    assert before < next_sync <= before + timedelta(minutes=30)
    assert new["next_sync"] == data["next_sync"]

    text = host.run("status", "--declarations", "examples")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    pending = next(i for i, line in enumerate(lines) if USER_ONDERNEMING in line)
    assert lines[pending].startswith("------  EXPDEMOONDERNEMING")
    assert lines[1].split() == [
        "SENDER", "USERNAME", "ENTERPRISE", "STATUS", "REGISTERED", "CHANGED", "LAST", "SYNC",
        "NEXT", "SYNC",
    ]  # fmt: skip
    assert "pending" in lines[pending] and "at next sync" in lines[pending]
    # Times a person reads are on the Brussels clock.
    local = next_sync.astimezone(ZoneInfo("Europe/Brussels"))
    assert lines[pending].endswith(f"  {local:%H:%M}")
    assert lines[pending + 1].strip() == IN_PROGRESS

    # The sync picks it up: active, with its sender number, and nothing pending any more.
    run(host.settings(), [host.decls], host.base)
    rows = {r["username"]: r for r in status(host, "-d", "examples")["channels"]}  # type: ignore[attr-defined]
    assert rows[USER_ONDERNEMING]["status"] == "active"
    assert rows[USER_ONDERNEMING]["sender_number"] == "100001"


def test_the_declarations_setting_is_the_default(host: Host) -> None:
    host.write_settings(declarations=str(host.decls))
    rows = status(host)["channels"]
    assert {(r["enterprise_number"], r["status"]) for r in rows} == {  # type: ignore[union-attr,index]
        (EN_SECSOC, "pending"),
        (EN_ONDERNEMING, "pending"),
    }


def test_a_quality_coming_back_keeps_its_sender_number_while_pending(host: Host) -> None:
    run(host.settings(), [host.decls], host.base)
    away = host.base / "away.yaml"
    host.quality(EN_ONDERNEMING).rename(away)
    run(host.settings(), [host.decls], host.base)
    away.rename(host.quality(EN_ONDERNEMING))
    rows = [
        r
        for r in status(host, "-d", "examples")["channels"]  # type: ignore[union-attr]
        if r["enterprise_number"] == EN_ONDERNEMING  # type: ignore[index]
    ]
    assert len(rows) == 1
    assert rows[0]["status"] == "pending" and rows[0]["sender_number"] == "100001"  # type: ignore[index]


def test_without_declarations_status_shows_the_state_only(host: Host) -> None:
    # An empty state (a host without one is an error: see test_looking.py), and declarations
    # that status is not told about: none of them shows.
    host.store().close()
    assert status(host)["channels"] == []
