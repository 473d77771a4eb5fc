"""StateStore.set_statuses: many set_status calls in one transaction, with the same result."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from provisioner.quality_id import QualityId
from provisioner.state import StateStore, UnknownRegistration, allocate
from provisioner.state.store import StatusUpdate

pytest_plugins = ("pg",)

NOW = datetime(2026, 11, 29, 20, 30, tzinfo=UTC)
LATER = NOW + timedelta(minutes=30)


def enterprise_number(i: int) -> QualityId:
    base = 2_000_000 + i
    return QualityId(f"{base:08d}{97 - base % 97:02d}", "employer_nsso")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state/state.db"
    return str(request.getfixturevalue("postgres_url"))


def fill(url: str, n: int) -> list[QualityId]:
    ens = [enterprise_number(i) for i in range(n)]
    with StateStore.open(url) as store:
        alloc = allocate(
            store.snapshot(), {en: f"user{i:08d}" for i, en in enumerate(ens)}, now=NOW
        )
        store.commit(alloc, revision="r1", now=NOW)
    return ens


@pytest.fixture
def two_stores(
    request: pytest.FixtureRequest, tmp_path: Path, store_url: str
) -> Iterator[tuple[StateStore, StateStore]]:
    """Two stores with the same registrations: one updated one by one, the other in bulk."""
    if store_url.startswith("sqlite"):
        urls = [store_url, f"sqlite:///{tmp_path}/other/state.db"]
    else:
        server = request.getfixturevalue("postgres_server")
        urls = [store_url, server.url(server.create_database("bulk"))]
    for url in urls:
        fill(url, 6)
    with StateStore.open(urls[0]) as one, StateStore.open(urls[1]) as bulk:
        yield one, bulk


def test_same_result_as_one_set_status_per_quality(
    two_stores: tuple[StateStore, StateStore],
) -> None:
    one, bulk = two_stores
    ens = sorted(one.snapshot().registrations)
    version = bulk.snapshot().version
    rounds = [
        (
            NOW,
            [
                StatusUpdate(ens[0], "active", None, "r2"),
                StatusUpdate(ens[1], "failed", "useradd failed", None),
                StatusUpdate(ens[2], "pending", None, "r2"),  # unchanged status
                StatusUpdate(ens[3], "removed", None, None),
            ],
        ),
        (
            LATER,
            [
                StatusUpdate(ens[0], "active", None, None),  # same status: since stays
                StatusUpdate(ens[1], "failed", "still failing", "r3"),
                StatusUpdate(ens[2], "active", None, "r3"),
                StatusUpdate(ens[4], "failed", "x", None),
            ],
        ),
    ]
    for now, updates in rounds:
        for u in updates:
            one.set_status(u.qid, u.status, reason=u.reason, revision=u.revision, now=now)
        assert bulk.set_statuses(updates, now=now) == len(updates)
        a, b = one.snapshot(), bulk.snapshot()
        assert a.registrations == b.registrations
    # One version bump per call, not per quality.
    assert bulk.snapshot().version == version + len(rounds)


def test_one_version_bump_and_nothing_for_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    ens = fill(url, 3)
    with StateStore.open(url) as store:
        v = store.snapshot().version
        assert store.set_statuses([], now=NOW) == 0
        assert store.snapshot().version == v
        store.set_statuses([StatusUpdate(en, "active") for en in ens], now=NOW)
        snapshot = store.snapshot()
        assert snapshot.version == v + 1
        assert {r.status for r in snapshot.registrations.values()} == {"active"}
        assert {r.last_applied_at for r in snapshot.registrations.values()} == {NOW}


def test_an_unknown_quality_writes_nothing(store_url: str) -> None:
    ens = fill(store_url, 2)
    with StateStore.open(store_url) as store:
        before = store.snapshot()
        with pytest.raises(UnknownRegistration, match="0999999947"):
            store.set_statuses(
                [
                    StatusUpdate(ens[0], "active"),
                    StatusUpdate(QualityId("0999999947", "employer_nsso"), "active"),
                ],
                now=NOW,
            )
        assert store.snapshot() == before


@pytest.mark.parametrize(
    "updates",
    [
        [StatusUpdate(QualityId("0200000010", "employer_nsso"), "bogus")],  # type: ignore[arg-type]
        [
            StatusUpdate(QualityId("0200000010", "employer_nsso"), "active"),
            StatusUpdate(QualityId("0200000010", "employer_nsso"), "failed"),
        ],
    ],
)
def test_bad_updates_are_refused_before_anything_is_written(
    tmp_path: Path, updates: list[StatusUpdate]
) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    fill(url, 1)
    with StateStore.open(url) as store:
        before = store.snapshot()
        with pytest.raises(ValueError):
            store.set_statuses(updates, now=NOW)
        assert store.snapshot() == before


def test_naive_time_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    ens = fill(url, 1)
    with StateStore.open(url) as store, pytest.raises(ValueError, match="timezone-aware"):
        store.set_statuses([StatusUpdate(ens[0], "active")], now=datetime(2026, 1, 1))


@pytest.mark.slow
def test_ten_thousand_qualities_in_one_transaction(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    ens = fill(url, 10_000)
    with StateStore.open(url) as store:
        assert (
            store.set_statuses([StatusUpdate(en, "active", None, "r9") for en in ens], now=NOW)
            == 10_000
        )
        regs = store.snapshot().registrations
        assert len(regs) == 10_000
        assert {(r.status, r.revision) for r in regs.values()} == {("active", "r9")}
