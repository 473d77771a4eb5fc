"""Several SFTP hosts on one state database converge in the same slot.

A host whose commit finds the state moved on by another host plans again and retries within
the run (bounded, with jitter); only that case is retried. Each host records which revision
it serves per channel, and `status` shows it per host. The 3-host run on a real PostgreSQL
(three --root trees firing together for 10 slots while qualities are added, changed and
removed) is the scenario of bench/hosts_bench.py, asserted here.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import EN_ONDERNEMING, EN_SECSOC, NOW, REPO, USER_SECSOC, Host, add_third_quality
from hosts_support import MANAGED, managed_files

from provisioner.apply import ApplyResult, StateMoved, apply
from provisioner.state import Registration, StateStore

pytest_plugins = ("pg",)


class Racing(StateStore):
    """The real store; before each of its first `times` commits another writer commits
    first (`rival`, on a store of its own): the race two hosts firing together run."""

    def __init__(self, url: str, rival: Callable[[StateStore, int], None], times: int) -> None:
        super().__init__(StateStore.open(url)._engine)
        self.url_given, self.rival, self.times = url, rival, times

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        if self.times > 0:
            self.times -= 1
            with StateStore.open(self.url_given) as other:
                self.rival(other, self.times)
        return super().commit(*args, **kwargs)


def host_applies_first(rival: Host, decls: Path) -> Callable[[StateStore, int], None]:
    """The other host applies, with one more quality declared: it allocates numbers."""

    def run(store: StateStore, _n: int) -> None:
        fake = Host.__new__(Host)
        fake.decls = decls
        add_third_quality(fake)
        apply(rival.settings(), [decls], store, now=NOW)

    return run


def portal_imports(store: StateStore, n: int) -> None:
    """Another writer registers a quality (a portal import): the state moves on every time."""
    store.import_registration(
        Registration(
            f"09000000{n:02d}",
            f"Imported{n:04d}",
            900000 + n,
            290000 + n,
            NOW,
            "active",
            NOW,
            quality_type="employer_nsso",
        )
    )


def two_hosts(tmp_path: Path, **extra: Any) -> tuple[Host, Host, str]:
    one, two = Host(tmp_path / "one"), Host(tmp_path / "two")
    url = f"sqlite:///{tmp_path / 'state.db'}"
    common = {"state_url": url, "state_retry_min_delay": 0.01, "state_retry_max_delay": 0.05}
    one.write_settings(host_name="sftp-a", **common, **extra)
    two.write_settings(host_name="sftp-b", **common, **extra)
    return one, two, url


def digest(host: Host) -> dict[str, str]:
    out = {}
    for path in managed_files(host.root):
        content = path.read_bytes().replace(str(host.root).encode(), b"<root>")
        out[str(path.relative_to(host.root))] = hashlib.sha256(content).hexdigest()
    return out


def test_the_host_that_loses_the_race_plans_again_and_applies(tmp_path: Path) -> None:
    one, two, url = two_hosts(tmp_path)
    store = Racing(url, host_applies_first(two, one.decls), times=1)
    try:
        result: ApplyResult = apply(one.settings(), [one.decls], store, now=NOW)
    finally:
        store.close()
    # The rival committed a new quality between this host's plan and its commit.
    assert result.attempts == 2
    assert not result.plan.refused
    regs = one.snapshot().registrations
    assert len(regs) == 3 and all(r.status == "active" for r in regs.values())
    assert len({r.sender_number for r in regs.values()}) == 3
    assert len({r.uid for r in regs.values()}) == 3
    # Both hosts serve the same numbers: the same files, the --root aside.
    assert digest(one) == digest(two)


def test_the_retries_are_bounded_and_the_last_refusal_says_so(tmp_path: Path) -> None:
    one, _two, url = two_hosts(tmp_path, state_retries=2)
    store = Racing(url, portal_imports, times=5)
    with pytest.raises(StateMoved, match="gave up after 2 attempts"):
        try:
            apply(one.settings(), [one.decls], store, now=NOW)
        finally:
            store.close()
    # Nothing of this host was written: no tree at all.
    assert not (one.root / MANAGED[0]).exists()


def test_a_saved_plan_is_not_planned_again(tmp_path: Path) -> None:
    one, two, url = two_hosts(tmp_path)
    saved = one.plan()
    store = Racing(url, host_applies_first(two, one.decls), times=1)
    with pytest.raises(StateMoved, match="plan again"):
        try:
            apply(one.settings(), [one.decls], store, saved_plan=saved, now=NOW)
        finally:
            store.close()
    assert store.times == 0  # one attempt only


def test_status_shows_which_host_serves_which_revision(tmp_path: Path) -> None:
    one, two, _url = two_hosts(tmp_path)
    with one.store() as store:
        apply(one.settings(), [one.decls], store, now=NOW, revision="a" * 40)
    with two.store() as store:
        apply(two.settings(), [one.decls], store, now=NOW, revision="b" * 40)
    done = one.run("status", "--format", "json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    row = next(r for r in data["channels"] if r["enterprise_number"] == EN_SECSOC)
    served = {h["host"]: h["revision"] for h in row["hosts"]}
    assert served == {"sftp-a": "a" * 40, "sftp-b": "b" * 40}
    text = one.run("status").stdout
    assert f"served by sftp-a at {'a' * 12}; sftp-b at {'b' * 12}" in text
    # A channel removed on one host is no longer said to be served by it.
    one.quality(EN_ONDERNEMING).unlink()
    with one.store() as store:
        apply(one.settings(), [one.decls], store, now=NOW, revision="c" * 40)
    with one.store() as store:
        served_by = {(h.host, h.enterprise_number) for h in store.host_channels()}
    assert ("sftp-a", EN_ONDERNEMING) not in served_by
    assert ("sftp-b", EN_ONDERNEMING) in served_by  # until sftp-b applies the removal
    assert ("sftp-a", EN_SECSOC) in served_by
    with one.store() as store:
        runs = store.last_run_per_host()
    assert set(runs) <= {"sftp-a", "sftp-b", None}
    assert USER_SECSOC in text


@pytest.mark.postgres
@pytest.mark.slow
def test_three_hosts_on_postgresql_apply_every_slot_and_render_the_same(
    tmp_path: Path, postgres_url: str
) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from hosts_bench import Cluster, scenario
    finally:
        sys.path.remove(str(REPO / "bench"))
    cluster = Cluster(tmp_path, postgres_url, hosts=3, n=30)
    retried = 0
    for slot in scenario(cluster, 10, add=2, remove=1):
        for run in slot.runs:
            assert run.outcome in ("ok", "degraded"), (slot.number, run)
            assert run.returncode in (0, 1), (slot.number, run)
            retried += run.attempts > 1
        assert len(set(slot.digests.values())) == 1, (slot.number, slot.digests)
        assert cluster.duplicates() == [], slot.number
    with StateStore.open(postgres_url) as store:
        regs = store.snapshot().registrations
        served = store.host_channels()
    live = {q for q, r in regs.items() if r.status == "active"}
    for name in cluster.names:
        assert {h.qid for h in served if h.host == name} == live, name
    # They did race: without the retry these runs would have failed.
    assert retried > 0
