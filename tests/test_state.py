"""State store: the pure allocator, and the store on real SQLite files and a real PostgreSQL."""

from __future__ import annotations

import sqlite3
import stat
import threading
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioner.quality_id import QualityId
from provisioner.state import (
    MAX_SENDER_NUMBER,
    SCHEMA_VERSION,
    Allocation,
    Registration,
    RunRecord,
    StaleState,
    StateConflict,
    StateError,
    StateSchemaTooNew,
    StateSnapshot,
    StateStore,
    StateUnavailable,
    UnknownRegistration,
    UsernameCaseClash,
    UsernameReserved,
    UsernameTaken,
    advance,
    allocate,
    format_sender_number,
    migrations,
    redact_url,
)
from provisioner.state.migrations import Migration

if TYPE_CHECKING:
    from pg import PostgresServer

# The PostgreSQL fixtures (postgres_server, postgres_url) live in tests/pg.py for reuse.
pytest_plugins = ("pg",)

NOW = datetime(2026, 11, 29, 20, 30, tzinfo=UTC)
LATER = NOW + timedelta(minutes=30)
BRUSSELS = timezone(timedelta(hours=1))

EN_A = "0403170701"
EN_B = "0202239951"
EN_C = "0417497106"
EN_D = "0878065378"
TYPE = "employer_nsso"
A, B, C, D = (QualityId(en, TYPE) for en in (EN_A, EN_B, EN_C, EN_D))


def reg(
    en: str,
    user: str,
    sender: int,
    uid: int | None,
    status: str = "active",
    **kw: object,
) -> Registration:
    return Registration(
        enterprise_number=en,
        quality_type=kw.pop("quality_type", TYPE),  # type: ignore[arg-type]
        technical_user=user,
        sender_number=sender,
        uid=uid,
        registered_at=kw.pop("registered_at", NOW - timedelta(days=30)),  # type: ignore[arg-type]
        status=status,  # type: ignore[arg-type]
        status_since=kw.pop("status_since", NOW - timedelta(days=1)),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def snap(
    *regs: Registration, next_sender: int = 0, next_uid: int = 0, version: int = 7
) -> StateSnapshot:
    return StateSnapshot(
        registrations={r.qid: r for r in regs},
        usernames={r.technical_user: r.qid for r in regs},
        next_sender_number=next_sender,
        next_uid=next_uid,
        version=version,
    )


# --------------------------------------------------------------------------- allocate (pure)


class TestAllocate:
    def test_new_qualities_get_numbers_in_enterprise_number_order(self) -> None:
        alloc = allocate(snap(), {C: "Charlie0001", A: "Alpha00001", B: "Bravo00001"}, now=NOW)
        assert [r.enterprise_number for r in alloc.new] == [EN_B, EN_A, EN_C]
        assert [r.sender_number for r in alloc.new] == [100000, 100001, 100002]
        assert [r.uid for r in alloc.new] == [200000, 200001, 200002]
        first = alloc.new[0]
        assert first.sender == "100000"
        assert first.status == "pending"
        assert first.registered_at == first.status_since == NOW
        assert first.status_reason is None and first.revision is None
        assert first.last_applied_at is None
        assert alloc.returning == () and alloc.removed == () and alloc.refused == ()
        assert alloc.base_version == 7

    def test_declaration_order_does_not_matter(self) -> None:
        declared = {C: "Charlie0001", A: "Alpha00001", B: "Bravo00001", D: "Alpha00001"}
        reversed_declared = dict(reversed(list(declared.items())))
        assert allocate(snap(), declared, now=NOW) == allocate(snap(), reversed_declared, now=NOW)

    def test_counters_and_used_numbers_are_skipped(self) -> None:
        # Imported portal numbers can sit anywhere; a number in use is never handed out again.
        existing = reg(EN_A, "Alpha00001", 101380, 200500)
        alloc = allocate(
            snap(existing, next_sender=101380, next_uid=200500),
            {A: "Alpha00001", B: "Bravo00001"},
            now=NOW,
        )
        assert [(r.sender_number, r.uid) for r in alloc.new] == [(101381, 200501)]

    def test_sender_start_is_a_floor_not_a_reset(self) -> None:
        assert (
            allocate(snap(next_sender=100050), {A: "Alpha00001"}, now=NOW, sender_start=100000)
            .new[0]
            .sender_number
            == 100050
        )
        assert (
            allocate(snap(next_sender=5), {A: "Alpha00001"}, now=NOW, sender_start=6400)
            .new[0]
            .sender
            == "006400"
        )

    def test_unchanged_registration_is_left_alone(self) -> None:
        for status in ("pending", "active", "failed"):
            current = reg(EN_A, "Alpha00001", 100000, 200000, status=status)
            alloc = allocate(snap(current), {A: "Alpha00001"}, now=NOW)
            assert alloc == Allocation((), (), (), (), 7)
            assert not alloc.changed

    def test_quality_no_longer_declared_is_removed_not_deleted(self) -> None:
        a = reg(EN_A, "Alpha00001", 100000, 200000)
        b = reg(EN_B, "Bravo00001", 100001, 200001, status="failed")
        gone = reg(EN_C, "Charlie0001", 100002, 200002, status="removed")
        alloc = allocate(snap(a, b, gone), {}, now=NOW)
        assert alloc.removed == (B, A)
        assert alloc.new == () and alloc.returning == ()

    def test_held_quality_is_not_removed(self) -> None:
        # Its file exists but failed validation this run: a typo must not cut the channel.
        a = reg(EN_A, "Alpha00001", 100000, 200000)
        b = reg(EN_B, "Bravo00001", 100001, 200001)
        assert allocate(snap(a, b), {}, now=NOW, held={A}).removed == (B,)

    def test_removed_quality_returns_with_its_numbers_and_user(self) -> None:
        gone = reg(EN_A, "Alpha00001", 100042, 200042, status="removed", revision="abc")
        alloc = allocate(
            snap(gone, next_sender=100100, next_uid=200100), {A: "Alpha00001"}, now=NOW
        )
        assert alloc.new == ()
        (back,) = alloc.returning
        assert (back.sender_number, back.uid, back.technical_user) == (100042, 200042, "Alpha00001")
        assert back.registered_at == gone.registered_at
        assert back.status == "pending" and back.status_since == NOW and back.status_reason is None

    def test_technical_user_is_immutable(self) -> None:
        current = reg(EN_A, "Alpha00001", 100000, 200000)
        alloc = allocate(snap(current), {A: "Alpha00002"}, now=NOW)
        (refusal,) = alloc.refused
        assert refusal.enterprise_number == EN_A
        assert refusal.code == "technical-user-immutable"
        assert "'Alpha00001'" in refusal.message and "'Alpha00002'" in refusal.message
        # The registration is kept: neither removed nor re-registered.
        assert alloc.removed == () and alloc.new == () and alloc.returning == ()

    def test_removed_quality_cannot_come_back_under_another_name(self) -> None:
        gone = reg(EN_A, "Alpha00001", 100000, 200000, status="removed")
        alloc = allocate(snap(gone), {A: "Alpha00002"}, now=NOW)
        assert [r.code for r in alloc.refused] == ["technical-user-immutable"]
        assert alloc.returning == () and alloc.new == ()

    def test_username_of_another_quality_is_refused(self) -> None:
        a = reg(EN_A, "Alpha00001", 100000, 200000)
        alloc = allocate(snap(a), {A: "Alpha00001", B: "Alpha00001"}, now=NOW)
        (refusal,) = alloc.refused
        assert (refusal.enterprise_number, refusal.code) == (EN_B, "technical-user-taken")
        assert EN_A in refusal.message and "'Alpha00001'" in refusal.message
        assert alloc.new == ()

    def test_username_stays_taken_after_removal(self) -> None:
        gone = reg(EN_A, "Alpha00001", 100000, 200000, status="removed")
        alloc = allocate(snap(gone), {B: "Alpha00001"}, now=NOW)
        (refusal,) = alloc.refused
        assert (refusal.enterprise_number, refusal.code) == (EN_B, "technical-user-taken")
        assert "removed" in refusal.message
        assert alloc.new == ()

    def test_a_recorded_name_is_taken_whatever_its_case(self) -> None:
        # Changed with schema 4: the portal's access system does not tell names apart by
        # case, and `import` refuses a case-only clash, so the reconciler does too (it used to
        # register ALPHA00001 next to Alpha00001).
        a = reg(EN_A, "Alpha00001", 100000, 200000)
        alloc = allocate(snap(a), {A: "Alpha00001", B: "ALPHA00001"}, now=NOW)
        (refusal,) = alloc.refused
        assert (refusal.qid, refusal.code) == (B, "technical-user-taken")
        assert "'Alpha00001'" in refusal.message and "by case" in refusal.message
        assert alloc.new == ()
        # Names are still case-sensitive logins: two new ones differing by case in one run
        # are registered (the gate warns about them).
        both = allocate(snap(), {A: "Alpha00001", B: "ALPHA00001"}, now=NOW)
        assert sorted(r.technical_user for r in both.new) == ["ALPHA00001", "Alpha00001"]

    def test_two_qualities_of_one_enterprise_are_two_registrations(self) -> None:
        nsso, local = QualityId(EN_A, "employer_nsso"), QualityId(EN_A, "employer_local")
        alloc = allocate(snap(), {nsso: "Alpha00001", local: "Alpha00002"}, now=NOW)
        assert [(r.qid, r.sender, r.uid) for r in alloc.new] == [
            (local, "100000", 200000),
            (nsso, "100001", 200001),
        ]

    def test_every_quality_gets_a_sender_number_only_sftp_gets_a_uid(self) -> None:
        alloc = allocate(snap(), {A: "Alpha00001", B: "Bravo00001"}, now=NOW, sftp={B})
        assert [(r.qid, r.sender, r.uid) for r in alloc.new] == [
            (B, "100000", 200000),
            (A, "100001", None),
        ]
        after = advance(snap(), alloc, revision="r1", now=NOW)
        # The FTP-only quality adds an SFTP channel: same sender number, a uid now.
        later = allocate(after, {A: "Alpha00001", B: "Bravo00001"}, now=LATER)
        assert later.new == () and later.refused == ()
        assert [(r.qid, r.sender, r.uid) for r in later.accounts] == [(A, "100001", 200001)]
        assert advance(after, later, revision="r2", now=LATER).registrations[A].uid == 200001

    def test_reserved_names_are_refused_to_everyone_whatever_their_case(self) -> None:
        s = replace(snap(), reserved=frozenset({"PortalUser1"}))
        alloc = allocate(s, {A: "portaluser1", B: "Bravo00001"}, now=NOW)
        assert [(r.qid, r.code) for r in alloc.refused] == [(A, "technical-user-reserved")]
        assert [r.qid for r in alloc.new] == [B]

    def test_legacy_registration_adopts_the_type_of_its_declaration(self) -> None:
        legacy = reg(EN_A, "Alpha00001", 100000, 200000, quality_type="")
        s = snap(legacy)
        alloc = allocate(s, {A: "Alpha00001"}, now=NOW)
        assert alloc.adopted == ((legacy.qid, A),)
        assert alloc.new == () and alloc.removed == () and alloc.refused == ()
        after = advance(s, alloc, revision="r1", now=NOW)
        assert after.registrations[A].sender == "100000"
        assert after.usernames == {"Alpha00001": A}
        # Two qualities of the enterprise: the one with its technical user adopts it.
        other = QualityId(EN_A, "employer_local")
        two = allocate(s, {A: "Alpha00002", other: "Alpha00001"}, now=NOW)
        assert two.adopted == ((legacy.qid, other),)
        assert [r.qid for r in two.new] == [A]
        # Removed: only its own technical user takes it back; another quality of the
        # enterprise is a new quality (and the old number stays the removed one's).
        gone = snap(replace(legacy, status="removed"))
        fresh = allocate(gone, {other: "Alpha00003"}, now=NOW)
        assert fresh.adopted == () and [r.qid for r in fresh.new] == [other]
        assert allocate(gone, {other: "Alpha00001"}, now=NOW).adopted == ((legacy.qid, other),)
        # Several candidates, none with its technical user: nobody guesses.
        stuck = allocate(s, {A: "Alpha00002", other: "Alpha00003"}, now=NOW)
        assert stuck.adopted == () and stuck.new == () and stuck.removed == ()
        assert {(r.qid, r.code) for r in stuck.refused} == {
            (A, "quality-type-unknown"),
            (other, "quality-type-unknown"),
        }

    def test_same_new_name_twice_in_one_run_refuses_both(self) -> None:
        alloc = allocate(snap(), {A: "Shared00001", B: "Shared00001", C: "Charlie0001"}, now=NOW)
        assert sorted((r.enterprise_number, r.code) for r in alloc.refused) == [
            (EN_B, "technical-user-taken"),
            (EN_A, "technical-user-taken"),
        ]
        assert [r.enterprise_number for r in alloc.new] == [EN_C]
        # A refused quality does not consume a number.
        assert alloc.new[0].sender_number == 100000

    def test_name_recorded_for_an_unregistered_quality_is_reserved_for_it(self) -> None:
        reserved = StateSnapshot(
            registrations={},
            usernames={"Alpha00001": A},
            next_sender_number=0,
            next_uid=0,
            version=1,
        )
        assert [r.code for r in allocate(reserved, {B: "Alpha00001"}, now=NOW).refused] == [
            "technical-user-taken"
        ]
        assert [r.code for r in allocate(reserved, {A: "Other000001"}, now=NOW).refused] == [
            "technical-user-immutable"
        ]
        ok = allocate(reserved, {A: "Alpha00001", B: "Alpha00001"}, now=NOW)
        assert [r.enterprise_number for r in ok.new] == [EN_A]
        assert [(r.enterprise_number, r.code) for r in ok.refused] == [
            (EN_B, "technical-user-taken")
        ]

    def test_sender_numbers_exhausted_and_999999_never_given(self) -> None:
        alloc = allocate(
            snap(),
            {A: "Alpha00001", B: "Bravo00001", C: "Charlie0001"},
            now=NOW,
            sender_start=999997,
        )
        assert [r.sender for r in alloc.new] == ["999997", "999998"]
        (refusal,) = alloc.refused
        assert (refusal.enterprise_number, refusal.code) == (EN_C, "sender-numbers-exhausted")
        assert "999999" in refusal.message
        full = snap(
            reg(EN_A, "Alpha00001", MAX_SENDER_NUMBER, 200000), next_sender=MAX_SENDER_NUMBER + 1
        )
        assert [
            r.code for r in allocate(full, {A: "Alpha00001", B: "Bravo00001"}, now=NOW).refused
        ] == ["sender-numbers-exhausted"]

    def test_uid_range_exhausted(self) -> None:
        alloc = allocate(
            snap(),
            {A: "Alpha00001", B: "Bravo00001", C: "Charlie0001"},
            now=NOW,
            uid_range=(5000, 5001),
        )
        assert [r.uid for r in alloc.new] == [5000, 5001]
        assert [(r.enterprise_number, r.code) for r in alloc.refused] == [
            (EN_C, "uid-range-exhausted")
        ]

    def test_exhaustion_does_not_block_returning_qualities(self) -> None:
        gone = reg(EN_A, "Alpha00001", MAX_SENDER_NUMBER, 200000, status="removed")
        alloc = allocate(snap(gone, next_sender=MAX_SENDER_NUMBER + 1), {A: "Alpha00001"}, now=NOW)
        assert [r.enterprise_number for r in alloc.returning] == [EN_A]
        assert alloc.refused == ()

    def test_now_is_normalised_to_utc_and_naive_refused(self) -> None:
        local = NOW.astimezone(BRUSSELS)
        new = allocate(snap(), {A: "Alpha00001"}, now=local).new[0]
        assert new.registered_at.tzinfo is UTC and new.registered_at == NOW
        with pytest.raises(ValueError, match="timezone-aware"):
            allocate(snap(), {A: "Alpha00001"}, now=NOW.replace(tzinfo=None))

    @pytest.mark.parametrize("bad", ["403170701", "0403.170.701", "BE0403170701", ""])
    def test_unnormalised_enterprise_number_is_a_programming_error(self, bad: str) -> None:
        with pytest.raises(ValueError, match="10 normalised digits"):
            allocate(snap(), {QualityId(bad, TYPE): "Alpha00001"}, now=NOW)

    def test_snapshot_cannot_be_mutated_through_its_mappings(self) -> None:
        s = snap(reg(EN_A, "Alpha00001", 100000, 200000))
        with pytest.raises(TypeError):
            s.registrations[B] = s.registrations[A]  # type: ignore[index]

    def test_advance_applies_an_allocation(self) -> None:
        a = reg(EN_A, "Alpha00001", 100000, 200000)
        gone = reg(EN_B, "Bravo00001", 100001, 200001, status="removed")
        before = snap(a, gone, next_sender=100002, next_uid=200002)
        alloc = allocate(before, {B: "Bravo00001", C: "Charlie0001"}, now=NOW)
        after = advance(before, alloc, revision="r2", now=LATER)
        assert after.version == before.version + 1
        assert after.registrations[A].status == "removed"
        assert after.registrations[A].status_since == LATER
        assert after.registrations[B].status == "pending"
        assert after.registrations[C].sender_number == 100002
        assert {r.revision for r in after.registrations.values()} == {"r2"}
        assert after.usernames["Charlie0001"] == C
        assert (after.next_sender_number, after.next_uid) == (100003, 200003)
        with pytest.raises(ValueError, match="based on version"):
            advance(after, alloc, revision="r3", now=LATER)


def test_format_sender_number() -> None:
    assert format_sender_number(6400) == "006400"
    assert format_sender_number(999999) == "999999"
    with pytest.raises(ValueError):
        format_sender_number(1_000_000)


def test_registration_validation() -> None:
    with pytest.raises(ValueError, match="outside"):
        reg(EN_A, "Alpha00001", 999999, 200000)
    with pytest.raises(ValueError, match="naive"):
        reg(EN_A, "Alpha00001", 100000, 200000, registered_at=NOW.replace(tzinfo=None))


# Qualities, names and how each round declares them; names collide on purpose.
# Two quality types: one enterprise may hold two qualities, each its own identity.
_ENS = st.builds(
    QualityId,
    st.sampled_from([f"{n:010d}" for n in range(1, 5)]),
    st.sampled_from(["employer_nsso", "employer_local"]),
)
_NAMES = st.sampled_from(["Alpha00001", "Bravo00001", "alpha00001", "Charlie001", "Delta00001"])
_ROUNDS = st.lists(st.dictionaries(_ENS, _NAMES, max_size=6), min_size=1, max_size=6)


def _run_rounds(
    rounds: list[dict[QualityId, str]],
) -> list[tuple[StateSnapshot, dict[QualityId, str], Allocation]]:
    state = StateSnapshot.empty()
    history = []
    for i, declared in enumerate(rounds):
        alloc = allocate(state, declared, now=NOW + timedelta(minutes=30 * i), sender_start=999994)
        history.append((state, declared, alloc))
        state = advance(state, alloc, revision=f"r{i}", now=NOW + timedelta(minutes=30 * i))
    history.append((state, {}, Allocation((), (), (), (), state.version)))
    return history


@settings(max_examples=300, deadline=None)
@given(_ROUNDS)
def test_allocation_invariants_over_many_reconciles(rounds: list[dict[QualityId, str]]) -> None:
    history = _run_rounds(rounds)
    first_seen: dict[QualityId, tuple[str, int, int | None]] = {}
    owners: dict[str, QualityId] = {}
    for before, declared, alloc in history:
        regs = before.registrations
        # Numbers and names are unique across every registration ever made, removed included.
        assert len({r.sender_number for r in regs.values()}) == len(regs)
        uids = [r.uid for r in regs.values() if r.uid is not None]
        assert len(set(uids)) == len(uids)
        assert all(r.sender_number <= MAX_SENDER_NUMBER for r in regs.values())
        for r in regs.values():
            # A quality's user and numbers never change once given.
            assert first_seen.setdefault(r.qid, (r.technical_user, r.sender_number, r.uid)) == (
                r.technical_user,
                r.sender_number,
                r.uid,
            )
        for user, owner in before.usernames.items():
            assert owners.setdefault(user, owner) == owner
        # Every declared quality ends up exactly one of: unchanged, new, returning, refused.
        touched = (
            [r.qid for r in alloc.new]
            + [r.qid for r in alloc.returning]
            + [r.qid for r in alloc.refused]
        )
        assert len(touched) == len(set(touched))
        assert set(alloc.removed).isdisjoint(declared)
        assert set(touched) <= set(declared)


def test_allocation_is_deterministic() -> None:
    declared = {QualityId(f"{n:010d}", TYPE): f"User{n:06d}" for n in range(50, 0, -1)}
    a = allocate(StateSnapshot.empty(), declared, now=NOW)
    b = allocate(StateSnapshot.empty(), dict(sorted(declared.items())), now=NOW)
    assert a == b
    assert [r.qid for r in a.new] == sorted(declared)


# --------------------------------------------------------------------------- the store


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state/state.db"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[StateStore]:
    with StateStore.open(store_url) as s:
        yield s


def _plan_and_commit(
    store: StateStore, declared: Mapping[QualityId, str], revision: str = "r1"
) -> StateSnapshot:
    alloc = allocate(store.snapshot(), declared, now=NOW)
    return store.commit(alloc, revision=revision, now=NOW)


class TestStore:
    def test_empty_store(self, store: StateStore) -> None:
        assert store.snapshot() == StateSnapshot.empty()
        assert store.last_runs(5) == []

    def test_commit_round_trips_and_matches_the_pure_model(self, store: StateStore) -> None:
        before = store.snapshot()
        local_now = NOW.astimezone(BRUSSELS) + timedelta(microseconds=123456)
        alloc = allocate(before, {A: "Alpha00001", B: "Bravo00001"}, now=local_now)
        after = store.commit(alloc, revision="deadbeef", now=local_now)
        assert after == advance(before, alloc, revision="deadbeef", now=local_now)
        assert store.snapshot() == after
        stored = store.snapshot().registrations[A]
        assert stored.registered_at == NOW + timedelta(microseconds=123456)
        assert stored.registered_at.tzinfo is UTC
        assert stored.revision == "deadbeef"
        assert after.usernames == {"Alpha00001": A, "Bravo00001": B}
        assert after.version == 1

    def test_full_lifecycle_matches_the_pure_model(self, store: StateStore) -> None:
        rounds = [
            {A: "Alpha00001", B: "Bravo00001"},
            {B: "Bravo00001", C: "Alpha00001"},  # A removed; C wants A's name
            {A: "Alpha00001", C: "Charlie001"},  # A returns, B removed, C new
            {A: "Alpha00002", B: "Bravo00001", C: "Charlie001"},  # A renames: refused
        ]
        model = store.snapshot()
        for i, declared in enumerate(rounds):
            when = NOW + timedelta(minutes=30 * i)
            alloc = allocate(model, declared, now=when)
            model = advance(model, alloc, revision=f"r{i}", now=when)
            assert store.commit(alloc, revision=f"r{i}", now=when) == model
        final = store.snapshot()
        assert final == model
        assert {en: (r.sender, r.status) for en, r in final.registrations.items()} == {
            B: ("100000", "pending"),  # sorts before EN_A, so registered first
            A: ("100001", "pending"),
            C: ("100002", "pending"),
        }

    def test_stale_commit_is_refused_and_writes_nothing(self, store: StateStore) -> None:
        base = store.snapshot()
        first = allocate(base, {A: "Alpha00001"}, now=NOW)
        second = allocate(base, {B: "Bravo00001"}, now=NOW)
        store.commit(first, revision="r1", now=NOW)
        with pytest.raises(StaleState, match="plan again"):
            store.commit(second, revision="r2", now=NOW)
        current = store.snapshot()
        assert set(current.registrations) == {A}
        assert current.version == 1

    def test_empty_allocation_checks_but_does_not_bump(self, store: StateStore) -> None:
        _plan_and_commit(store, {A: "Alpha00001"})
        stale = allocate(StateSnapshot.empty(), {}, now=NOW)
        with pytest.raises(StaleState):
            store.commit(stale, revision="r", now=NOW)
        noop = allocate(store.snapshot(), {A: "Alpha00001"}, now=NOW)
        assert store.commit(noop, revision="r2", now=NOW).version == 1

    def test_unique_constraints_are_the_last_line_of_defence(self, store: StateStore) -> None:
        _plan_and_commit(store, {A: "Alpha00001"})
        current = store.snapshot()
        forged = Allocation(
            new=(reg(EN_B, "Bravo00001", 100000, 299999, status="pending"),),
            returning=(),
            removed=(),
            refused=(),
            base_version=current.version,
        )
        with pytest.raises(StateConflict):
            store.commit(forged, revision="x", now=NOW)
        assert store.snapshot() == current

    def test_set_status(self, store: StateStore) -> None:
        _plan_and_commit(store, {A: "Alpha00001"})
        v = store.snapshot().version
        store.set_status(A, "failed", reason="useradd failed", revision="r2", now=NOW)
        r = store.snapshot().registrations[A]
        assert (r.status, r.status_reason, r.revision, r.status_since) == (
            "failed",
            "useradd failed",
            "r2",
            NOW,
        )
        assert r.last_applied_at is None
        store.set_status(A, "failed", reason="still failing", revision=None, now=LATER)
        r = store.snapshot().registrations[A]
        assert (r.status_reason, r.revision, r.status_since) == ("still failing", "r2", NOW)
        store.set_status(A, "active", reason=None, revision="r3", now=LATER)
        snapshot = store.snapshot()
        r = snapshot.registrations[A]
        assert (r.status, r.status_reason, r.status_since, r.last_applied_at) == (
            "active",
            None,
            LATER,
            LATER,
        )
        assert snapshot.version == v + 3
        with pytest.raises(UnknownRegistration):
            store.set_status(B, "active", reason=None, revision=None, now=NOW)

    def test_set_status_makes_older_plans_stale(self, store: StateStore) -> None:
        _plan_and_commit(store, {A: "Alpha00001"})
        plan = allocate(store.snapshot(), {A: "Alpha00001", B: "Bravo00001"}, now=NOW)
        store.set_status(A, "active", reason=None, revision=None, now=NOW)
        with pytest.raises(StaleState):
            store.commit(plan, revision="r", now=NOW)

    def test_import_registration(self, store: StateStore) -> None:
        portal = reg(EN_A, "Alpha00001", 101380, 200010, status="active", revision=None)
        assert store.import_registration(portal) is True
        assert store.import_registration(portal) is False  # re-running an import is harmless
        s = store.snapshot()
        assert s.registrations[A] == portal
        assert s.usernames == {"Alpha00001": A}
        assert (s.next_sender_number, s.next_uid) == (101381, 200011)
        new = allocate(s, {A: "Alpha00001", B: "Bravo00001"}, now=NOW).new
        assert [(r.sender_number, r.uid) for r in new] == [(101381, 200011)]

    @pytest.mark.parametrize(
        ("conflicting", "fragment"),
        [
            (reg(EN_A, "Alpha00002", 101380, 200010), "already registered"),
            (reg(EN_B, "Bravo00001", 101380, 200099), "sender number 101380 belongs to quality"),
            (reg(EN_B, "Bravo00001", 101999, 200010), "uid 200010 belongs to quality"),
            (reg(EN_B, "Alpha00001", 101999, 200099), "technical user 'Alpha00001' belongs"),
        ],
    )
    def test_import_refuses_conflicts(
        self, store: StateStore, conflicting: Registration, fragment: str
    ) -> None:
        store.import_registration(reg(EN_A, "Alpha00001", 101380, 200010))
        before = store.snapshot()
        with pytest.raises(StateConflict, match=fragment):
            store.import_registration(conflicting)
        assert store.snapshot() == before

    def test_import_refuses_names_taken_case_clashes_and_reserved_names(
        self, store: StateStore
    ) -> None:
        store.import_registration(reg(EN_A, "Alpha00001", 101380, None))
        assert store.reserve_usernames(["PortalUser1", "PortalUser1", "portaluser1"], NOW) == 1
        assert store.reserve_usernames(["PORTALUSER1", "ALPHA00001"], NOW) == 0
        before = store.snapshot()
        assert before.reserved == {"PortalUser1"}
        assert before.registrations[A].uid is None
        cases: list[tuple[Registration, type[StateConflict], str]] = [
            (reg(EN_B, "Alpha00001", 101381, None), UsernameTaken, "belongs to quality"),
            (reg(EN_B, "alpha00001", 101381, None), UsernameCaseClash, "only by case"),
            (reg(EN_B, "portaluser1", 101381, None), UsernameReserved, "reserved"),
        ]
        for conflicting, kind, fragment in cases:
            with pytest.raises(kind, match=fragment):
                store.import_registration(conflicting)
        assert store.snapshot() == before
        # Another quality of the same enterprise is another identity.
        local = reg(EN_A, "Alpha00002", 101381, None, quality_type="employer_local")
        assert store.import_registration(local) is True
        assert set(store.snapshot().registrations) == {A, QualityId(EN_A, "employer_local")}
        assert store.reserved_usernames() == ["PortalUser1"]

    def test_legacy_rows_are_adopted_by_the_next_commit(self, store: StateStore) -> None:
        legacy = reg(EN_A, "Alpha00001", 100000, 200000, quality_type="")
        with pytest.raises(ValueError, match="quality type"):
            store.import_registration(legacy)
        # As the schema-4 migration leaves a schema-3 row: quality type ''.
        store.commit(Allocation((legacy,), (), (), (), 0), revision="r0", now=NOW)
        store.record_channel_keys({legacy.qid: ["SHA256:k1"]}, (), now=NOW)
        store.record_host_channels("h1", {legacy.qid: "r0"}, now=NOW)
        alloc = allocate(store.snapshot(), {A: "Alpha00001"}, now=NOW)
        assert alloc.adopted == ((legacy.qid, A),)
        after = store.commit(alloc, revision="r1", now=NOW)
        assert after == store.snapshot()
        assert set(after.registrations) == {A}
        assert after.registrations[A].sender == "100000"
        assert after.usernames == {"Alpha00001": A}
        assert after.channel_keys == {"SHA256:k1": A}
        assert [h.qid for h in store.host_channels()] == [A]

    def test_runs(self, store: StateStore) -> None:
        for i, outcome in enumerate(["ok", "partial", "failed"]):
            store.record_run(
                RunRecord(
                    started_at=NOW + timedelta(minutes=i),
                    finished_at=NOW + timedelta(minutes=i, seconds=5),
                    revision=f"rev{i}",
                    outcome=outcome,  # type: ignore[arg-type]
                    summary={
                        "new": [EN_A],
                        "counts": {"active": i},
                        "ok": True,
                        "ratio": 0.5,
                        "x": None,
                    },
                    error="boom" if outcome == "failed" else None,
                )
            )
        runs = store.last_runs(2)
        assert [r.revision for r in runs] == ["rev2", "rev1"]
        assert runs[0].error == "boom" and runs[0].outcome == "failed"
        assert runs[0].summary == {
            "new": [EN_A],
            "counts": {"active": 2},
            "ok": True,
            "ratio": 0.5,
            "x": None,
        }
        assert runs[0].started_at == NOW + timedelta(minutes=2)
        assert runs[0].id is not None
        assert len(store.last_runs(100)) == 3
        assert store.last_runs(0) == []
        # Runs are history, not allocation state.
        assert store.snapshot().version == 0

    def test_notifications_are_sent_once(self, store: StateStore) -> None:
        key = f"active:{EN_A}:2026-11-29T20:30"
        assert not store.notification_sent(key)
        assert store.claim_notification(key, NOW) is True
        assert store.claim_notification(key, LATER) is False
        store.mark_notification(key, LATER)
        assert store.notification_sent(key)
        assert not store.notification_sent(f"active:{EN_B}:2026-11-29T20:30")

    def test_persistence_across_reopen(self, store_url: str) -> None:
        with StateStore.open(store_url) as first:
            _plan_and_commit(first, {A: "Alpha00001"})
            first.record_run(RunRecord(NOW, LATER, "r1", "ok", {"n": 1}))
            first.mark_notification("k", NOW)
            expected = first.snapshot()
        with StateStore.open(store_url) as again:
            assert again.snapshot() == expected
            assert again.last_runs(1)[0].summary == {"n": 1}
            assert again.notification_sent("k")

    def test_migrations_are_idempotent_on_reopen(self, store_url: str) -> None:
        for _ in range(3):
            StateStore.open(store_url).close()
        engine = sa.create_engine(store_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT version FROM schema_migrations")).all()
        finally:
            engine.dispose()
        assert [r.version for r in rows] == list(range(1, SCHEMA_VERSION + 1))

    def test_newer_schema_is_refused_untouched(self, store_url: str) -> None:
        StateStore.open(store_url).close()
        engine = sa.create_engine(store_url)
        try:
            with engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "INSERT INTO schema_migrations (version, description, applied_at) "
                        "VALUES (:v, 'from the future', :at)"
                    ),
                    {"v": SCHEMA_VERSION + 1, "at": "2030-01-01T00:00:00.000000+00:00"},
                )
            with pytest.raises(
                StateSchemaTooNew, match=f"schema version {SCHEMA_VERSION + 1}"
            ) as info:
                StateStore.open(store_url)
            assert "***" in str(info.value) or "sqlite" in str(info.value)
            with engine.connect() as conn:
                count = conn.execute(sa.text("SELECT count(*) FROM schema_migrations")).scalar()
            assert count == SCHEMA_VERSION + 1
        finally:
            engine.dispose()


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_a_failing_migration_is_rolled_back(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    StateStore.open(store_url).close()

    def broken(conn: sa.Connection) -> None:
        conn.execute(sa.text("CREATE TABLE half_done (x INTEGER)"))
        conn.execute(sa.text("UPDATE state_meta SET next_uid = 42"))
        raise sa.exc.OperationalError("ALTER ...", {}, Exception("disk on fire"))

    after = SCHEMA_VERSION + 1  # the migration a next release would add
    monkeypatch.setattr(
        migrations, "MIGRATIONS", (*migrations.MIGRATIONS, Migration(after, "broken", broken))
    )
    monkeypatch.setattr(migrations, "LATEST_VERSION", after)
    with pytest.raises(
        StateError, match=rf"migration {after} \(broken\) failed and was rolled back"
    ):
        StateStore.open(store_url)
    # DDL included: SQLite only rolls back DDL when the store, not sqlite3, issues BEGIN.
    assert "half_done" not in _tables(store_url)
    monkeypatch.undo()
    with StateStore.open(store_url) as store:
        assert store.snapshot() == StateSnapshot.empty()


def test_a_new_migration_is_applied_on_reopen(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with StateStore.open(store_url) as store:
        _plan_and_commit(store, {A: "Alpha00001"})
        expected = store.snapshot()

    def add_column(conn: sa.Connection) -> None:
        conn.execute(sa.text("ALTER TABLE registrations ADD COLUMN note TEXT"))

    after = SCHEMA_VERSION + 1
    monkeypatch.setattr(
        migrations, "MIGRATIONS", (*migrations.MIGRATIONS, Migration(after, "note", add_column))
    )
    monkeypatch.setattr(migrations, "LATEST_VERSION", after)
    with StateStore.open(store_url) as store:
        assert store.snapshot() == expected
    with StateStore.open(store_url):
        pass  # applied once: reopening does not run it again (it would fail: column exists)


# --------------------------------------------------------------------------- SQLite specifics


def test_sqlite_file_and_directory_permissions(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state" / "state.db"
    with StateStore.open(f"sqlite:///{path}") as store:
        _plan_and_commit(store, {A: "Alpha00001"})
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for extra in path.parent.iterdir():
        assert stat.S_IMODE(extra.stat().st_mode) & 0o077 == 0, extra


def test_sqlite_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateStore.open(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "schema_migrations",
        "state_meta",
        "registrations",
        "username_ledger",
        "runs",
        "notifications",
    } <= tables


def test_sqlite_datetimes_are_stored_as_utc_iso_text(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateStore.open(f"sqlite:///{path}") as store:
        alloc = allocate(store.snapshot(), {A: "Alpha00001"}, now=NOW.astimezone(BRUSSELS))
        store.commit(alloc, revision=None, now=NOW)
    with sqlite3.connect(path) as conn:
        (text,) = conn.execute("SELECT registered_at FROM registrations").fetchone()
    assert text == "2026-11-29T20:30:00.000000+00:00"


def test_sqlite_two_stores_on_one_file_do_not_share_numbers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    with StateStore.open(url) as one, StateStore.open(url) as two:
        _race(one, two)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("sqlite:///relative/state.db", "relative path"),
        ("sqlite://", "must name a database file"),
        ("sqlite:///:memory:", "must name a database file"),
        ("mysql://u:hunter2@db/state", "unsupported database"),
        ("postgresql+psycopg2://u:hunter2@db/state", "psycopg 3"),
        ("not a url at all :hunter2@", "not a valid database URL"),
    ],
)
def test_bad_urls(url: str, fragment: str) -> None:
    with pytest.raises(StateUnavailable, match=fragment) as info:
        StateStore.open(url)
    assert "hunter2" not in str(info.value)


def test_unreachable_postgres_names_the_url_without_password() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql+psycopg://prov:s3cretpw@127.0.0.1:{port}/state?connect_timeout=2"
    with pytest.raises(StateUnavailable) as info:
        StateStore.open(url)
    message = str(info.value)
    assert "s3cretpw" not in message
    assert f"postgresql+psycopg://prov:***@127.0.0.1:{port}/state" in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://a:b%40cdef@h:5432/d", "postgresql+psycopg://a:***@h:5432/d"),
        ("postgresql+psycopg://a:p@ssword@h/d", "postgresql+psycopg://a:***@h/d"),
        (
            "postgresql+psycopg://h/d?password=hunter22",
            "postgresql+psycopg://h/d?password=%2A%2A%2A",
        ),
        ("::garbage//user:hunter22@host", "***@host"),
        ("sqlite:////var/lib/provisioner/state.db", "sqlite:////var/lib/provisioner/state.db"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_unreachable_host_with_unescaped_at_in_password() -> None:
    url = "postgresql+psycopg://prov:s3cret@pw@nonexistent.invalid/state?connect_timeout=2"
    with pytest.raises(StateUnavailable) as info:
        StateStore.open(url)
    assert "s3cret" not in str(info.value) and "pw@" not in str(info.value)


def test_not_a_database_file(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateUnavailable, match="not a database"):
        StateStore.open(f"sqlite:///{path}")


# --------------------------------------------------------------------------- PostgreSQL specifics


def _race(one: StateStore, two: StateStore) -> None:
    """Both plan from the same snapshot and commit at once: exactly one may win."""
    base = one.snapshot()
    plans = {
        "one": allocate(base, {A: "Alpha00001"}, now=NOW),
        "two": allocate(two.snapshot(), {B: "Bravo00001"}, now=NOW),
    }
    # Both were handed the same number by the pure allocator: only the store can stop it.
    assert plans["one"].new[0].sender_number == plans["two"].new[0].sender_number
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def run(name: str, s: StateStore) -> None:
        barrier.wait()
        try:
            results[name] = s.commit(plans[name], revision=name, now=NOW)
        except StaleState as exc:
            results[name] = exc

    threads = [
        threading.Thread(target=run, args=("one", one)),
        threading.Thread(target=run, args=("two", two)),
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    stale = [name for name, outcome in results.items() if isinstance(outcome, StaleState)]
    assert len(stale) == 1, results
    final = one.snapshot()
    assert len(final.registrations) == 1
    assert final.version == base.version + 1


@pytest.mark.postgres
def test_postgres_concurrent_commits_one_is_stale(postgres_url: str) -> None:
    with StateStore.open(postgres_url) as one, StateStore.open(postgres_url) as two:
        _race(one, two)


@pytest.mark.postgres
def test_postgres_many_hosts_never_share_numbers(postgres_url: str) -> None:
    """Four "hosts" keep re-planning until each has registered its qualities."""
    stores = [StateStore.open(postgres_url) for _ in range(4)]
    errors: list[BaseException] = []
    wanted = {QualityId(f"{n:010d}", TYPE): f"User{n:06d}" for n in range(1, 41)}
    shares = [dict(list(wanted.items())[i::4]) for i in range(4)]

    def host(i: int) -> None:
        try:
            mine: dict[QualityId, str] = {}
            for qid, user in shares[i].items():
                mine[qid] = user
                while True:
                    s = stores[i].snapshot()
                    declared = {e: r.technical_user for e, r in s.registrations.items()} | mine
                    try:
                        stores[i].commit(allocate(s, declared, now=NOW), revision=f"h{i}", now=NOW)
                        break
                    except StaleState:
                        continue
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=host, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    try:
        assert errors == []
        final = stores[0].snapshot()
        regs = final.registrations.values()
        assert {r.qid for r in regs} == set(wanted)
        assert sorted(r.sender_number for r in regs) == list(range(100000, 100040))
        assert len({r.uid for r in regs}) == 40
        assert all(r.status == "pending" for r in regs)
    finally:
        for s in stores:
            s.close()


@pytest.mark.postgres
def test_postgres_uses_timestamptz(postgres_url: str) -> None:
    StateStore.open(postgres_url).close()
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            kinds = dict(
                conn.execute(
                    sa.text(
                        "SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_name = 'registrations'"
                    )
                ).all()
            )
    finally:
        engine.dispose()
    assert kinds["registered_at"] == "timestamp with time zone"
    assert kinds["last_applied_at"] == "timestamp with time zone"


@pytest.mark.postgres
def test_postgres_wrong_password_is_unavailable_without_the_password(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.url(postgres_server.create_database(), password="wrongpassword123")
    with pytest.raises(StateUnavailable) as info:
        StateStore.open(url)
    assert "wrongpassword123" not in str(info.value)
    assert "password authentication failed" in str(info.value)


@pytest.mark.postgres
def test_postgres_migration_race(postgres_url: str) -> None:
    """Hosts starting at the same time on an empty database migrate it once."""
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            barrier.wait()
            StateStore.open(postgres_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert errors == []
    with StateStore.open(postgres_url) as store:
        assert store.snapshot() == StateSnapshot.empty()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rounds=_ROUNDS)
def test_sqlite_store_follows_the_model(
    tmp_path_factory: pytest.TempPathFactory, rounds: list[dict[QualityId, str]]
) -> None:
    path = tmp_path_factory.mktemp("model") / "state.db"
    with StateStore.open(f"sqlite:///{path}") as store:
        model = store.snapshot()
        for i, declared in enumerate(rounds):
            when = NOW + timedelta(minutes=30 * i)
            alloc = allocate(model, declared, now=when, sender_start=999994)
            model = advance(model, alloc, revision=f"r{i}", now=when)
            assert store.commit(alloc, revision=f"r{i}", now=when) == model
        assert store.snapshot() == model


def test_registration_replace_keeps_validation() -> None:
    r = reg(EN_A, "Alpha00001", 100000, 200000)
    with pytest.raises(ValueError):
        replace(r, status="gone")  # type: ignore[arg-type]
