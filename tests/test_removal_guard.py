"""The mass-removal guard: a plan removing more channels than the threshold applies nothing.

Real applies into a temporary --root with the SQLite state. The threshold is the larger of
`max_removals` and `max_removals_percent` % of the registered channels; `--allow-removals N`
accepts N removals for one run.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from conftest import EN_ONDERNEMING, EN_SECSOC, NOW, Entry, Host
from guard_support import add_qualities
from ops_support import run
from test_heartbeat import parse_metrics

from provisioner.errors import RemovalGuardError

# 2 examples + 12 = 14 channels: 5 % of 14 is 0, so the threshold is max_removals (10).
EXTRA = 12


@pytest.fixture
def many(host: Host) -> tuple[Host, list[str]]:
    ens = add_qualities(host, EXTRA)
    host.apply()
    return host, ens


def untouched(before: dict[str, Entry], after: dict[str, Entry], host: Host | None = None) -> bool:
    """The same paths with the same content, owners and modes, and no file rewritten (an
    atomic replace gives a new inode). Directory times move with the state's own files.
    With `host`: its heartbeat files (a run writes them whatever happened) do not count."""
    if host is not None:
        s = host.settings()
        beats = {s.status_file, s.metrics_file, *s.status_file.parents, *s.metrics_file.parents}
        skip = {str(p.relative_to(host.root)) for p in beats if p.is_relative_to(host.root)}
        after = {k: v for k, v in after.items() if k not in skip}
        before = {k: v for k, v in before.items() if k not in skip}
    assert sorted(after) == sorted(before)
    for rel, entry in before.items():
        assert entry.same_metadata(after[rel]), rel
        assert entry.kind != "file" or entry.ino == after[rel].ino, rel
    return True


def live(host: Host) -> dict[str, str]:
    # One quality type per enterprise here: the enterprise number names the quality.
    return {q.enterprise_number: r.status for q, r in host.snapshot().registrations.items()}


def test_one_removal_over_the_threshold_removes_nothing_and_applies_nothing(
    many: tuple[Host, list[str]],
) -> None:
    host, ens = many
    for en in ens[:11]:
        host.quality(en).unlink()
    # Another change in the same revision is not applied either: the run is refused whole.
    host.edit(EN_SECSOC, "language: fr", "language: nl")
    before, statuses, version = host.tree(), live(host), host.snapshot().version

    with pytest.raises(RemovalGuardError) as info:
        host.apply()
    message = str(info.value)
    assert "would remove 11 channels" in message
    assert "threshold of 10" in message and "max_removals 10" in message
    assert "--allow-removals 11" in message
    assert "nothing was removed or applied" in message
    assert untouched(before, host.tree())
    assert live(host) == statuses and host.snapshot().version == version
    assert not list(host.settings().work_dir.glob("staging-*"))

    done = host.run("apply")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "mass-removal guard" in done.stderr and "--allow-removals 11" in done.stderr
    assert untouched(before, host.tree())

    # plan shows the verdict before anyone applies: a line, a JSON field, exit 1.
    text = host.run("plan")
    assert text.returncode == 1, text.stdout + text.stderr
    assert "removal guard: REFUSED: 11 removals, over the threshold of 10" in text.stdout
    assert "unless --allow-removals 11" in text.stdout
    data = json.loads(host.run("plan", "--format", "json").stdout)
    assert data["removal_guard"] == {
        "removals": 11,
        "threshold": 10,
        "live": 14,
        "max_removals": 10,
        "max_removals_percent": 5.0,
        "allowed": None,
        "refused": True,
    }
    markdown = host.run("plan", "--format", "markdown").stdout
    assert "> :no_entry: **removal guard**: REFUSED: 11 removals" in markdown


def test_removals_at_the_threshold_are_applied(many: tuple[Host, list[str]]) -> None:
    host, ens = many
    for en in ens[:10]:
        host.quality(en).unlink()
    plan = host.run("plan")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "removal guard: 10 removals, within the threshold of 10" in plan.stdout
    result = host.apply()
    assert result.plan.removal_guard is not None and not result.plan.removal_guard.refused
    statuses = live(host)
    assert [statuses[en] for en in ens[:10]] == ["removed"] * 10
    assert statuses[EN_SECSOC] == statuses[EN_ONDERNEMING] == "active"


def test_allow_removals_lets_exactly_that_many_through(host: Host) -> None:
    host.write_settings(max_removals=2)
    ens = add_qualities(host, 3)
    host.apply()
    for en in ens:
        host.quality(en).unlink()
    before = host.tree()

    short = host.run("apply", "--allow-removals", "2")
    assert short.returncode == 1
    assert "--allow-removals 2 accepts only 2" in short.stderr
    assert untouched(before, host.tree())

    done = host.run("apply", "--allow-removals", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "removal guard: 3 removals, over the threshold of 2" in done.stdout
    assert "accepted by --allow-removals 3" in done.stdout
    assert all(live(host)[en] == "removed" for en in ens)
    # Uploads are archived, never deleted: three chroots in the archive.
    assert len(list(host.settings().archive_dir.iterdir())) == 3


def test_the_percentage_wins_when_it_is_larger(host: Host) -> None:
    host.write_settings(max_removals=1, max_removals_percent=40)
    ens = add_qualities(host, 3)  # 5 channels: 40 % is 2
    host.apply()
    host.quality(ens[0]).unlink()
    host.quality(ens[1]).unlink()
    guard = host.plan().removal_guard
    assert guard is not None and (guard.threshold, guard.live, guard.refused) == (2, 5, False)
    host.quality(ens[2]).unlink()
    guard = host.plan().removal_guard
    assert guard is not None and guard.refused
    assert "max_removals_percent 40 % of 5 registered channels" in host.run("plan").stdout


def test_the_setting_comes_from_the_environment_too(host: Host) -> None:
    ens = add_qualities(host, 2)
    host.apply()
    for en in ens:
        host.quality(en).unlink()
    env = {"SFTP_PROVISIONER_MAX_REMOVALS": "1"}
    assert host.run("apply", env=env).returncode == 1
    assert host.run("apply", env={"SFTP_PROVISIONER_MAX_REMOVALS": "2"}).returncode == 0


def test_reconcile_refused_by_the_guard_is_a_failed_run_with_its_own_metric(
    many: tuple[Host, list[str]],
) -> None:
    """All qualities but one deleted (a bad merge): reconcile --once exits 1 and removes
    nothing; the heartbeat says why; the next good run clears the metric."""
    host, ens = many
    away = host.base / "away"
    away.mkdir()
    for en in [*ens, EN_ONDERNEMING]:
        host.quality(en).rename(away / f"{en}.yaml")
    before = host.tree()
    settings = host.settings()

    done = host.cli(
        "reconcile", "--once", "--no-notify", "examples", "--root", "root",
        "--settings", "settings.yaml",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "mass-removal guard" in done.stderr and "would remove 13 channels" in done.stderr
    assert untouched(before, host.tree(), host)
    assert set(live(host).values()) == {"active"}
    status = json.loads(settings.status_file.read_text("utf-8"))
    assert status["ok"] is False and status["outcome"] == "failed"
    assert status["removal_guard_tripped"] is True and status["removals_refused"] == 13
    metrics = parse_metrics(settings.metrics_file.read_text("utf-8"))
    assert metrics["sftp_provisioner_removal_guard_tripped"] == 1
    assert metrics["sftp_provisioner_removals_refused"] == 13
    assert metrics["sftp_provisioner_last_run_ok"] == 0
    with host.store() as store:
        (last,) = store.last_runs(1)
    assert last.outcome == "failed" and last.summary["removal_guard_tripped"] is True

    # The operator accepts them for one run: applied, and the metric is back to 0.
    report = run(settings, [host.decls], host.base, now=NOW + timedelta(minutes=30),
                 allow_removals=13, notify=False)  # fmt: skip
    assert report.outcome == "ok", report.errors
    metrics = parse_metrics(settings.metrics_file.read_text("utf-8"))
    assert metrics["sftp_provisioner_removal_guard_tripped"] == 0
    assert metrics["sftp_provisioner_removals_refused"] == 0
    assert live(host)[EN_ONDERNEMING] == "removed"


def test_an_emptied_qualities_directory_removes_nothing_and_fails_the_run(host: Host) -> None:
    settings = host.settings()
    assert run(settings, [host.decls], host.base, now=NOW).outcome == "ok"
    before = host.tree()
    for path in (host.decls / "qualities").iterdir():
        path.unlink()
    assert (host.decls / "qualities").is_dir() and any((host.decls / "keys").iterdir())

    done = host.cli(
        "reconcile", "--once", "--no-notify", "examples", "--root", "root",
        "--settings", "settings.yaml",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "no declarations to reconcile" in done.stderr
    assert untouched(before, host.tree(), host)
    assert set(live(host).values()) == {"active"}
    status = json.loads(settings.status_file.read_text("utf-8"))
    assert status["ok"] is False and status["outcome"] == "failed"
    assert status["channels"]["active"] == 2  # the last known figures, not zeros
    assert host.run("apply").returncode == 1
    assert untouched(before, host.tree(), host)
