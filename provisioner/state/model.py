"""The reconciler's state as plain data, and the pure rules that allocate numbers.

Nothing here touches a database: :func:`allocate` turns a snapshot and the declarations into
an :class:`Allocation`, and :func:`advance` says what the snapshot looks like once that
allocation is committed. The store performs exactly :func:`advance` in one transaction, so a
plan shown to an administrator and the state written afterwards cannot disagree.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Final, Literal, TypeAlias, get_args

from provisioner.quality_id import QualityId

ChannelStatus = Literal["pending", "active", "degraded", "failed", "removed"]
# `degraded`: applied, but the host may still serve what the declarations no longer say
# (removals deferred, a refused quality held on its last good configuration).
RunOutcome = Literal["ok", "failed", "partial", "degraded"]
RefusalCode = Literal[
    "technical-user-immutable",
    "technical-user-taken",
    "technical-user-reserved",
    "quality-type-unknown",
    "sender-numbers-exhausted",
    "uid-range-exhausted",
]

CHANNEL_STATUSES: Final[frozenset[str]] = frozenset(get_args(ChannelStatus))
RUN_OUTCOMES: Final[frozenset[str]] = frozenset(get_args(RunOutcome))

# Sender numbers are six digits in every file name. 999999 is what the gateway itself puts in
# the files it sends back, so handing it to a quality would make its uploads look like
# gateway output: the highest number a quality can get is 999998.
RESERVED_SENDER_NUMBER: Final = 999999
MAX_SENDER_NUMBER: Final = RESERVED_SENDER_NUMBER - 1
DEFAULT_SENDER_START: Final = 100000
DEFAULT_UID_RANGE: Final[tuple[int, int]] = (200000, 299999)

_ENTERPRISE_NUMBER = re.compile(r"[0-9]{10}")
_QUALITY_TYPE = re.compile(r"[a-z0-9_]{1,64}")

# The quality type of a registration made before schema 4, when the enterprise number alone
# was the key: the next reconcile adopts the type of the declaration it belongs to (see
# `legacy_adoptions`). Never written for a new registration.
LEGACY_QUALITY_TYPE: Final = ""

# Read-only container types so that a caller's list[str] or dict[str, int] is accepted as is.
JSONValue: TypeAlias = (
    str | int | float | bool | Sequence["JSONValue"] | Mapping[str, "JSONValue"] | None
)


def format_sender_number(number: int) -> str:
    """The sender number as it appears in file names: six digits, zero-padded."""
    if not 0 <= number <= RESERVED_SENDER_NUMBER:
        raise ValueError(f"sender number {number} does not fit in six digits")
    return f"{number:06d}"


def _check_enterprise_number(value: str) -> None:
    # The declarations layer normalises and checks mod-97; here only the shape is checked so
    # that a caller passing "0403.170.701" gets an error instead of a second identity.
    if not _ENTERPRISE_NUMBER.fullmatch(value):
        raise ValueError(f"enterprise number {value!r} is not 10 normalised digits")


def check_quality_id(qid: QualityId, *, legacy: bool = False) -> None:
    """A programming error (ValueError) for an identity that is not normalised."""
    _check_enterprise_number(qid.enterprise_number)
    if legacy and qid.quality_type == LEGACY_QUALITY_TYPE:
        return
    if not _QUALITY_TYPE.fullmatch(qid.quality_type):
        raise ValueError(f"quality type {qid.quality_type!r} is not a catalogue code")


def ensure_utc(value: datetime, what: str = "datetime") -> datetime:
    # Naive datetimes are refused: the SFTP sync runs at :00/:30 local time while the
    # database may run in another zone, so an ambiguous instant would be a silent bug.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


@dataclass(frozen=True)
class Registration:
    """One quality's channel registration, as kept forever (removal only changes the status)."""

    enterprise_number: str
    technical_user: str
    sender_number: int
    # None: the quality has no SFTP channel on this host (yet), so no account; a uid is
    # assigned the first time it declares one, and kept forever like the sender number.
    uid: int | None
    registered_at: datetime
    status: ChannelStatus
    status_since: datetime
    status_reason: str | None = None
    revision: str | None = None
    last_applied_at: datetime | None = None
    # The declaration file that declared the quality at its last successful apply, relative
    # to the declarations root, and its Git blob id (sha256 of the content outside Git): a
    # file that is refused later still says whose it was (see `reconcile`).
    declared_path: str | None = None
    declared_blob: str | None = None
    # Keyword-only and without a default: every caller says which quality it means.
    # LEGACY_QUALITY_TYPE only for rows migrated from schema 3 that no reconcile adopted yet.
    quality_type: str = field(kw_only=True)

    def __post_init__(self) -> None:
        check_quality_id(self.qid, legacy=True)
        if not self.technical_user:
            raise ValueError(f"quality {self.qid} has an empty technical user")
        if not 0 <= self.sender_number <= MAX_SENDER_NUMBER:
            raise ValueError(
                f"sender number {self.sender_number} of quality {self.qid} "
                f"is outside 000000-{MAX_SENDER_NUMBER:06d}"
            )
        if self.uid is not None and self.uid <= 0:
            raise ValueError(f"uid {self.uid} of quality {self.qid} is not > 0")
        if self.status not in CHANNEL_STATUSES:
            raise ValueError(f"unknown channel status {self.status!r}")
        # Normalised to UTC so that equality and repr do not depend on the zone a value
        # happened to be read back in.
        object.__setattr__(self, "registered_at", ensure_utc(self.registered_at, "registered_at"))
        object.__setattr__(self, "status_since", ensure_utc(self.status_since, "status_since"))
        if self.last_applied_at is not None:
            object.__setattr__(
                self, "last_applied_at", ensure_utc(self.last_applied_at, "last_applied_at")
            )

    @property
    def sender(self) -> str:
        """The sender number as written in file names."""
        return format_sender_number(self.sender_number)

    @property
    def qid(self) -> QualityId:
        """The quality this registration belongs to."""
        return QualityId(self.enterprise_number, self.quality_type)

    @property
    def legacy(self) -> bool:
        """Migrated from schema 3 and not yet matched to a declaration's quality type."""
        return self.quality_type == LEGACY_QUALITY_TYPE


def _frozen_mapping(value: object) -> bool:
    return isinstance(value, MappingProxyType)


@dataclass(frozen=True)
class StateSnapshot:
    """Everything the allocator needs, read in one consistent transaction."""

    registrations: Mapping[QualityId, Registration] = field(hash=False)
    # Technical user -> the quality it was recorded for, forever.
    usernames: Mapping[str, QualityId] = field(hash=False)
    next_sender_number: int
    next_uid: int
    version: int
    # Key fingerprint -> the quality on whose channel the last successful apply put it.
    channel_keys: Mapping[str, QualityId] = field(default_factory=dict, hash=False)
    # Names taken in the portal's access system by users that are no quality of ours
    # (imported with `--reserved-usernames`): refused to every quality, case-insensitively.
    reserved: frozenset[str] = field(default_factory=frozenset, hash=False)
    # Legacy (schema 3) identities this snapshot already shows under their adopted type;
    # written by the next commit (see `legacy_adoptions`).
    adoptions: tuple[tuple[QualityId, QualityId], ...] = ()

    def __post_init__(self) -> None:
        # Read-only views: a snapshot is shared between plan and apply, and a caller that
        # mutated it would make the plan lie.
        for name in ("registrations", "usernames", "channel_keys"):
            value = getattr(self, name)
            if not _frozen_mapping(value):
                object.__setattr__(self, name, MappingProxyType(dict(value)))
        if not isinstance(self.reserved, frozenset):
            object.__setattr__(self, "reserved", frozenset(self.reserved))

    @classmethod
    def empty(cls) -> StateSnapshot:
        """The state of a freshly created store."""
        return cls(registrations={}, usernames={}, next_sender_number=0, next_uid=0, version=0)

    def by_enterprise(self, enterprise_number: str) -> list[Registration]:
        """The registrations of every quality of one enterprise, by quality type."""
        return sorted(
            (r for q, r in self.registrations.items() if q.enterprise_number == enterprise_number),
            key=lambda r: r.quality_type,
        )

    def reserved_folded(self) -> frozenset[str]:
        return frozenset(name.lower() for name in self.reserved)


def legacy_adoptions(
    snapshot: StateSnapshot, declared: Mapping[QualityId, str]
) -> dict[QualityId, QualityId]:
    """Which schema-3 registrations (quality type unknown) take which declared type. Pure.

    ``declared`` maps every declared quality (valid or not, as far as it can say its
    identity) to its technical user. A legacy registration of enterprise E is adopted by

    1. the declaration of E whose technical user is the registration's (technical users are
       immutable and unique, so this is the same quality), else
    2. for a live (not removed) registration, the only declaration of E, whatever its
       technical user (as before schema 4, when E alone named the quality: the immutability
       rule then judges it as it did).

    Otherwise the registration stays legacy: undeclared, it is removed as any other; with
    several candidates, `allocate` refuses them (``quality-type-unknown``) rather than guess.
    A removed one keeps its numbers and name forever, and is adopted only by a declaration
    of its technical user: another quality of E registers as a new quality.
    """
    by_en: dict[str, list[tuple[QualityId, str]]] = {}
    for qid, user in declared.items():
        by_en.setdefault(qid.enterprise_number, []).append((qid, user))
    out: dict[QualityId, QualityId] = {}
    for qid, reg in sorted(snapshot.registrations.items()):
        if not reg.legacy:
            continue
        candidates = [
            c
            for c in sorted(by_en.get(qid.enterprise_number, []))
            if c[0] not in snapshot.registrations
        ]
        same_user = [c for c, user in candidates if user == reg.technical_user]
        if same_user:
            out[qid] = same_user[0]
        elif len(candidates) == 1 and reg.status != "removed":
            out[qid] = candidates[0][0]
    # Ledger names recorded for a legacy identity that has no registration follow the only
    # declaration of their enterprise.
    for user, owner in sorted(snapshot.usernames.items()):
        if owner.quality_type != LEGACY_QUALITY_TYPE or owner in snapshot.registrations:
            continue
        if owner in out:
            continue
        free = [
            c for c, _u in by_en.get(owner.enterprise_number, []) if c not in snapshot.registrations
        ]
        named = [c for c, u in by_en.get(owner.enterprise_number, []) if u == user]
        if named:
            out[owner] = named[0]
        elif len(free) == 1:
            out[owner] = free[0]
    return out


def adopt(snapshot: StateSnapshot, adoptions: Mapping[QualityId, QualityId]) -> StateSnapshot:
    """The snapshot with the legacy identities re-keyed as ``adoptions`` says; same version.
    The commit of an allocation computed from it writes the adoptions."""
    if not adoptions:
        return snapshot

    def moved(qid: QualityId) -> QualityId:
        return adoptions.get(qid, qid)

    registrations = {
        moved(q): replace(r, quality_type=moved(q).quality_type)
        for q, r in snapshot.registrations.items()
    }
    return StateSnapshot(
        registrations=registrations,
        usernames={u: moved(q) for u, q in snapshot.usernames.items()},
        next_sender_number=snapshot.next_sender_number,
        next_uid=snapshot.next_uid,
        version=snapshot.version,
        channel_keys={fp: moved(q) for fp, q in snapshot.channel_keys.items()},
        reserved=snapshot.reserved,
        adoptions=(*snapshot.adoptions, *sorted(adoptions.items())),
    )


@dataclass(frozen=True)
class Refusal:
    """A state rule that a declaration breaks; the declaration is not acted upon."""

    qid: QualityId
    code: RefusalCode
    message: str

    @property
    def enterprise_number(self) -> str:
        return self.qid.enterprise_number


@dataclass(frozen=True)
class Allocation:
    """What a reconcile will change in the state; computed by :func:`allocate`."""

    new: tuple[Registration, ...]
    returning: tuple[Registration, ...]
    removed: tuple[QualityId, ...]
    refused: tuple[Refusal, ...]
    base_version: int
    # Registered qualities that declare an SFTP channel for the first time: the uid they get.
    accounts: tuple[Registration, ...] = ()
    # Legacy identity -> the identity it takes (see `legacy_adoptions`), written first.
    adopted: tuple[tuple[QualityId, QualityId], ...] = ()

    @property
    def changed(self) -> bool:
        """Whether committing this allocation writes anything."""
        return bool(self.new or self.returning or self.removed or self.accounts or self.adopted)


@dataclass(frozen=True)
class RunRecord:
    """One reconcile run, kept for `status` output and post-mortems."""

    started_at: datetime
    finished_at: datetime | None
    revision: str | None
    outcome: RunOutcome
    summary: Mapping[str, JSONValue] = field(default_factory=dict, hash=False)
    error: str | None = None
    id: int | None = None
    # The host that ran it (several may share one state database).
    host: str | None = None

    def __post_init__(self) -> None:
        if self.outcome not in RUN_OUTCOMES:
            raise ValueError(f"unknown run outcome {self.outcome!r}")
        object.__setattr__(self, "started_at", ensure_utc(self.started_at, "started_at"))
        if self.finished_at is not None:
            object.__setattr__(self, "finished_at", ensure_utc(self.finished_at, "finished_at"))


@dataclass(frozen=True, slots=True)
class HostChannel:
    """The revision one host serves for one channel, and since when."""

    host: str
    qid: QualityId
    revision: str | None
    applied_at: datetime

    @property
    def enterprise_number(self) -> str:
        return self.qid.enterprise_number


def _ledger_by_owner(usernames: Mapping[str, QualityId]) -> dict[QualityId, list[str]]:
    owners: dict[QualityId, list[str]] = {}
    for user, owner in usernames.items():
        owners.setdefault(owner, []).append(user)
    for users in owners.values():
        users.sort()
    return owners


def _quoted(names: list[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)


def allocate(
    snapshot: StateSnapshot,
    declared: Mapping[QualityId, str],
    *,
    now: datetime,
    sender_start: int = DEFAULT_SENDER_START,
    uid_range: tuple[int, int] = DEFAULT_UID_RANGE,
    held: Collection[QualityId] = (),
    sftp: Collection[QualityId] | None = None,
) -> Allocation:
    """Decide registrations, returns and removals for the declared qualities. Pure.

    ``declared`` maps the identity of every valid declaration to its technical user;
    ``sftp`` names those with an SFTP channel (``None``: all of them). Rules:

    * a quality seen for the first time gets the next free sender number at or above
      ``max(sender_start, snapshot.next_sender_number)``, whatever its channels (the number
      is in its file names on every channel); one with an SFTP channel also gets the next
      free uid in ``uid_range``, and a registered one gets its uid the first time it declares
      an SFTP channel. Numbers are never reused, and new qualities are taken in identity
      order so that the plan and the apply step agree on who gets which number;
    * a registered quality keeps its technical user: declaring another one is refused
      (``technical-user-immutable``) and the registration is kept as it is;
    * a technical user in the ledger belongs to its quality forever, even after removal:
      another quality declaring it, or a name differing from it only by case, is refused
      (``technical-user-taken``), and so are two new qualities declaring the same name in one
      run, since neither has a better claim; a reserved name is refused to every quality
      (``technical-user-reserved``);
    * a removed quality declared again returns with its old sender number, uid and
      technical user, status ``pending``;
    * a registered quality no longer declared is marked removed (nothing is deleted), unless
      it is in ``held``: qualities whose file still exists but is invalid this run, so that a
      typo in a declaration does not cut off a working channel;
    * a schema-3 registration (quality type unknown) is first adopted by the declaration it
      belongs to (:func:`legacy_adoptions`); when several declarations of its enterprise could
      be it, each is refused (``quality-type-unknown``) and the registration is held;
    * when numbers run out, the quality is refused (``sender-numbers-exhausted`` /
      ``uid-range-exhausted``) rather than given a number outside six digits or the range.
    """
    now = ensure_utc(now, "now")
    _check_allocation_arguments(declared, sender_start=sender_start, uid_range=uid_range)
    with_account = set(declared) if sftp is None else set(sftp)
    snapshot = adopt(snapshot, legacy_adoptions(snapshot, declared))
    allocator = _Allocator(
        snapshot, declared, now=now, sender_start=sender_start, uid_range=uid_range
    )
    # New qualities in identity order, so that the plan and the apply step agree on who gets
    # which number.
    for qid in sorted(declared):
        technical_user = declared[qid]
        current = snapshot.registrations.get(qid)
        if current is not None:
            allocator.keep_registered(qid, technical_user, current, sftp=qid in with_account)
            continue
        refusal = allocator.first_time_refusal(qid, technical_user)
        if refusal is not None:
            allocator.refused.append(refusal)
            continue
        allocator.register(qid, technical_user, sftp=qid in with_account)
    return Allocation(
        new=tuple(allocator.new),
        returning=tuple(allocator.returning),
        removed=_no_longer_declared(snapshot, declared, held),
        refused=tuple(allocator.refused),
        base_version=snapshot.version,
        accounts=tuple(allocator.accounts),
        adopted=snapshot.adoptions,
    )


def _check_allocation_arguments(
    declared: Mapping[QualityId, str], *, sender_start: int, uid_range: tuple[int, int]
) -> None:
    """Programming errors, not refusals: the caller passed what no settings can produce."""
    if not 0 <= sender_start <= MAX_SENDER_NUMBER:
        raise ValueError(f"sender_start {sender_start} is outside 000000-{MAX_SENDER_NUMBER}")
    uid_low, uid_high = uid_range
    if not 0 < uid_low <= uid_high:
        raise ValueError(f"uid_range {uid_range} is not a non-empty range of positive uids")
    for qid, technical_user in declared.items():
        check_quality_id(qid)
        if not technical_user:
            raise ValueError(f"quality {qid} declares an empty technical user")


def _no_longer_declared(
    snapshot: StateSnapshot, declared: Mapping[QualityId, str], held: Collection[QualityId]
) -> tuple[QualityId, ...]:
    """Live registrations to mark removed: not declared, not held, and not a legacy
    registration that a declaration of its enterprise may still be (it is refused instead)."""
    return tuple(
        sorted(
            qid
            for qid, reg in snapshot.registrations.items()
            if reg.status != "removed"
            and qid not in declared
            and qid not in held
            and not (
                reg.legacy and any(q.enterprise_number == qid.enterprise_number for q in declared)
            )
        )
    )


class _Allocator:
    """One run of :func:`allocate`: what the ledger already holds, the next free numbers, and
    what the run has decided so far (each quality is decided once, in identity order)."""

    def __init__(
        self,
        snapshot: StateSnapshot,
        declared: Mapping[QualityId, str],
        *,
        now: datetime,
        sender_start: int,
        uid_range: tuple[int, int],
    ) -> None:
        self.now = now
        self.registrations = snapshot.registrations
        ledger = snapshot.usernames
        self.folded: dict[str, list[tuple[str, QualityId]]] = {}
        for name, owner in ledger.items():
            self.folded.setdefault(name.lower(), []).append((name, owner))
        self.reserved = snapshot.reserved_folded()
        self.owned = _ledger_by_owner(ledger)
        self.used_senders = {reg.sender_number for reg in self.registrations.values()}
        self.used_uids = {reg.uid for reg in self.registrations.values() if reg.uid is not None}
        # The first number this gateway hands out, for the refusal's sentence; the next one
        # is past every number handed out before (numbers are never reused).
        self.sender_start = sender_start
        self.next_sender = max(sender_start, snapshot.next_sender_number)
        self.uid_low, self.uid_high = uid_range
        self.next_uid = max(self.uid_low, snapshot.next_uid)
        # Enterprises whose legacy registration could be any of several declarations.
        self.ambiguous = {
            q.enterprise_number: r
            for q, r in self.registrations.items()
            if r.legacy and r.status != "removed"
        }
        # Unrecorded names that two first-time qualities want in the same run: counted up
        # front so the outcome does not depend on which of them sorts first. A recorded name
        # has an owner already and the ledger check decides.
        self.wanted: dict[str, list[QualityId]] = {}
        for qid in sorted(declared):
            name = declared[qid]
            if qid not in self.registrations and name not in ledger:
                self.wanted.setdefault(name, []).append(qid)
        self.new: list[Registration] = []
        self.returning: list[Registration] = []
        self.accounts: list[Registration] = []
        self.refused: list[Refusal] = []

    # --- numbers ------------------------------------------------------------------------

    def next_free_uid(self, qid: QualityId) -> int | None:
        """The next uid never assigned, or None (and the refusal) when the range is used up."""
        while self.next_uid in self.used_uids:
            self.next_uid += 1
        if self.next_uid > self.uid_high:
            self.refused.append(
                Refusal(
                    qid,
                    "uid-range-exhausted",
                    f"No uid is left for quality {qid} in the range "
                    f"{self.uid_low}-{self.uid_high}: uids are never reused and the next "
                    f"unassigned one is {self.next_uid}.",
                )
            )
            return None
        self.used_uids.add(self.next_uid)
        return self.next_uid

    def next_free_sender(self, qid: QualityId) -> int | None:
        """The next sender number never assigned, or None (and the refusal) past six digits."""
        while self.next_sender in self.used_senders:
            self.next_sender += 1
        if self.next_sender > MAX_SENDER_NUMBER:
            self.refused.append(
                Refusal(
                    qid,
                    "sender-numbers-exhausted",
                    f"No sender number is left for quality {qid}: every number "
                    f"from {self.sender_start:06d} to "
                    f"{MAX_SENDER_NUMBER:06d} has been assigned and numbers are never reused "
                    f"({RESERVED_SENDER_NUMBER:06d} is reserved for files sent back).",
                )
            )
            return None
        return self.next_sender

    # --- registered qualities -----------------------------------------------------------

    def keep_registered(
        self, qid: QualityId, technical_user: str, current: Registration, *, sftp: bool
    ) -> None:
        """A registered quality keeps its user, gets its uid with its first SFTP channel,
        and comes back ``pending`` when it was removed."""
        if current.technical_user != technical_user:
            self.refused.append(
                Refusal(
                    qid,
                    "technical-user-immutable",
                    f"Quality {qid} has been registered with technical user "
                    f"'{current.technical_user}' since "
                    f"{current.registered_at:%Y-%m-%d}; a technical user cannot be "
                    f"changed, so the declared '{technical_user}' is refused. Declare "
                    f"'{current.technical_user}' again to keep (or get back) the channel.",
                )
            )
            return
        if current.uid is None and sftp:
            uid = self.next_free_uid(qid)
            if uid is None:
                return
            current = replace(current, uid=uid)
            if current.status != "removed":
                self.accounts.append(current)
        if current.status == "removed":
            self.returning.append(
                replace(current, status="pending", status_since=self.now, status_reason=None)
            )

    # --- first-time qualities -----------------------------------------------------------

    def first_time_refusal(self, qid: QualityId, technical_user: str) -> Refusal | None:
        """Why a quality seen for the first time cannot have its technical user, if it cannot:
        the first of the ledger's rules it breaks, in the order they are told."""
        return (
            self._legacy_refusal(qid)
            or self._own_name_refusal(qid, technical_user)
            or self._reserved_refusal(qid, technical_user)
            or self._taken_refusal(qid, technical_user)
            or self._rival_refusal(qid, technical_user)
        )

    def _legacy_refusal(self, qid: QualityId) -> Refusal | None:
        legacy = self.ambiguous.get(qid.enterprise_number)
        if legacy is None:
            return None
        return Refusal(
            qid,
            "quality-type-unknown",
            f"Enterprise {qid.enterprise_number} was registered before quality types "
            f"were recorded (technical user '{legacy.technical_user}', sender number "
            f"{legacy.sender}), and several of its qualities are declared, none with "
            f"that technical user; declare '{legacy.technical_user}' in the file of "
            "the quality it belongs to, so that it keeps its sender number.",
        )

    def _own_name_refusal(self, qid: QualityId, technical_user: str) -> Refusal | None:
        # Not registered, but a name may already be recorded for it (imported from another
        # channel of the same quality): a quality that had a channel keeps its user.
        own_names = self.owned.get(qid, [])
        if not own_names or technical_user in own_names:
            return None
        return Refusal(
            qid,
            "technical-user-immutable",
            f"Quality {qid} already has technical user "
            f"{_quoted(own_names)}; a technical user cannot be changed, so the "
            f"declared '{technical_user}' is refused.",
        )

    def _reserved_refusal(self, qid: QualityId, technical_user: str) -> Refusal | None:
        if technical_user.lower() not in self.reserved:
            return None
        return Refusal(
            qid,
            "technical-user-reserved",
            f"Technical user '{technical_user}' is already taken in the access system "
            f"by a user that is not a quality of this gateway; choose another "
            f"technical user for quality {qid}.",
        )

    def _taken_refusal(self, qid: QualityId, technical_user: str) -> Refusal | None:
        """The name (or one differing only by case) is in the ledger for another quality."""
        holders = [(n, o) for n, o in self.folded.get(technical_user.lower(), []) if o != qid]
        if not holders:
            return None
        name, owner = holders[0]
        owner_reg = self.registrations.get(owner)
        removed_note = (
            " (removed, but a technical user is never given to another quality)"
            if owner_reg is not None and owner_reg.status == "removed"
            else ""
        )
        case_note = (
            f" as '{name}' (names differing only by case are one name)"
            if (name != technical_user)
            else ""
        )
        return Refusal(
            qid,
            "technical-user-taken",
            f"Technical user '{technical_user}' belongs to quality {_shown(owner)}"
            f"{case_note}{removed_note}; choose another technical user for quality "
            f"{qid}.",
        )

    def _rival_refusal(self, qid: QualityId, technical_user: str) -> Refusal | None:
        """Two first-time qualities declare one unrecorded name: neither has a better claim."""
        rivals = [str(o) for o in self.wanted.get(technical_user, []) if o != qid]
        if not rivals:
            return None
        return Refusal(
            qid,
            "technical-user-taken",
            f"Technical user '{technical_user}' is declared by quality "
            f"{qid} and by {', '.join(rivals)}; a technical user "
            "belongs to one quality only, so none of them is registered until the "
            "others choose another name.",
        )

    def register(self, qid: QualityId, technical_user: str, *, sftp: bool) -> None:
        """A new registration: the next sender number, and a uid when it has an SFTP channel."""
        sender = self.next_free_sender(qid)
        if sender is None:
            return
        account: int | None = None
        if sftp:
            account = self.next_free_uid(qid)
            if account is None:
                return
        self.new.append(
            Registration(
                enterprise_number=qid.enterprise_number,
                quality_type=qid.quality_type,
                technical_user=technical_user,
                sender_number=sender,
                uid=account,
                registered_at=self.now,
                status="pending",
                status_since=self.now,
            )
        )
        self.used_senders.add(sender)


def _shown(qid: QualityId) -> str:
    return qid.enterprise_number if qid.quality_type == LEGACY_QUALITY_TYPE else str(qid)


def advance(
    snapshot: StateSnapshot, allocation: Allocation, *, revision: str | None, now: datetime
) -> StateSnapshot:
    """The snapshot after committing ``allocation``. Pure; the store does the same in SQL.

    Raises ``ValueError`` when the allocation was not computed from this snapshot; the store
    raises :class:`~provisioner.state.errors.StaleState` in that case instead.
    """
    now = ensure_utc(now, "now")
    if allocation.base_version != snapshot.version:
        raise ValueError(
            f"allocation is based on version {allocation.base_version}, "
            f"snapshot is version {snapshot.version}"
        )
    if not allocation.changed:
        return snapshot
    adopted = adopt(snapshot, dict(allocation.adopted)) if not snapshot.adoptions else snapshot
    registrations = dict(adopted.registrations)
    usernames = dict(adopted.usernames)
    next_sender = snapshot.next_sender_number
    next_uid = snapshot.next_uid
    for reg in allocation.new:
        registrations[reg.qid] = replace(reg, revision=revision)
        usernames[reg.technical_user] = reg.qid
        next_sender = max(next_sender, reg.sender_number + 1)
        if reg.uid is not None:
            next_uid = max(next_uid, reg.uid + 1)
    for reg in allocation.accounts:
        registrations[reg.qid] = replace(registrations[reg.qid], uid=reg.uid)
        if reg.uid is not None:
            next_uid = max(next_uid, reg.uid + 1)
    for reg in allocation.returning:
        registrations[reg.qid] = replace(reg, revision=revision)
        if reg.uid is not None:
            next_uid = max(next_uid, reg.uid + 1)
    for qid in allocation.removed:
        registrations[qid] = replace(
            registrations[qid],
            status="removed",
            status_since=now,
            status_reason=None,
            revision=revision,
        )
    return StateSnapshot(
        registrations=registrations,
        usernames=usernames,
        next_sender_number=next_sender,
        next_uid=next_uid,
        version=snapshot.version + 1,
        channel_keys=adopted.channel_keys,
        reserved=snapshot.reserved,
    )
