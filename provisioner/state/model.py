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

ChannelStatus = Literal["pending", "active", "degraded", "failed", "removed"]
# `degraded`: applied, but the host may still serve what the declarations no longer say
# (removals deferred, a refused quality held on its last good configuration).
RunOutcome = Literal["ok", "failed", "partial", "degraded"]
RefusalCode = Literal[
    "technical-user-immutable",
    "technical-user-taken",
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
    uid: int
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

    def __post_init__(self) -> None:
        _check_enterprise_number(self.enterprise_number)
        if not self.technical_user:
            raise ValueError(f"quality {self.enterprise_number} has an empty technical user")
        if not 0 <= self.sender_number <= MAX_SENDER_NUMBER:
            raise ValueError(
                f"sender number {self.sender_number} of quality {self.enterprise_number} "
                f"is outside 000000-{MAX_SENDER_NUMBER:06d}"
            )
        if self.uid <= 0:
            raise ValueError(f"uid {self.uid} of quality {self.enterprise_number} is not > 0")
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


def _frozen_mapping(value: Mapping[str, object]) -> bool:
    return isinstance(value, MappingProxyType)


@dataclass(frozen=True)
class StateSnapshot:
    """Everything the allocator needs, read in one consistent transaction."""

    registrations: Mapping[str, Registration] = field(hash=False)
    usernames: Mapping[str, str] = field(hash=False)
    next_sender_number: int
    next_uid: int
    version: int
    # Key fingerprint -> the quality on whose channel the last successful apply put it.
    channel_keys: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # Read-only views: a snapshot is shared between plan and apply, and a caller that
        # mutated it would make the plan lie.
        for name in ("registrations", "usernames", "channel_keys"):
            value = getattr(self, name)
            if not _frozen_mapping(value):
                object.__setattr__(self, name, MappingProxyType(dict(value)))

    @classmethod
    def empty(cls) -> StateSnapshot:
        """The state of a freshly created store."""
        return cls(registrations={}, usernames={}, next_sender_number=0, next_uid=0, version=0)


@dataclass(frozen=True)
class Refusal:
    """A state rule that a declaration breaks; the declaration is not acted upon."""

    enterprise_number: str
    code: RefusalCode
    message: str


@dataclass(frozen=True)
class Allocation:
    """What a reconcile will change in the state; computed by :func:`allocate`."""

    new: tuple[Registration, ...]
    returning: tuple[Registration, ...]
    removed: tuple[str, ...]
    refused: tuple[Refusal, ...]
    base_version: int

    @property
    def changed(self) -> bool:
        """Whether committing this allocation writes anything."""
        return bool(self.new or self.returning or self.removed)


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
    enterprise_number: str
    revision: str | None
    applied_at: datetime


def _ledger_by_owner(usernames: Mapping[str, str]) -> dict[str, list[str]]:
    owners: dict[str, list[str]] = {}
    for user, owner in usernames.items():
        owners.setdefault(owner, []).append(user)
    for users in owners.values():
        users.sort()
    return owners


def _quoted(names: list[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)


def allocate(
    snapshot: StateSnapshot,
    declared: Mapping[str, str],
    *,
    now: datetime,
    sender_start: int = DEFAULT_SENDER_START,
    uid_range: tuple[int, int] = DEFAULT_UID_RANGE,
    held: Collection[str] = (),
) -> Allocation:
    """Decide registrations, returns and removals for the declared qualities. Pure.

    ``declared`` maps the enterprise number of every valid declaration to its technical user.
    Rules:

    * a quality seen for the first time gets the next free sender number at or above
      ``max(sender_start, snapshot.next_sender_number)`` and the next free uid in
      ``uid_range``; numbers are never reused, and new qualities are taken in enterprise-number
      order so that the plan and the apply step agree on who gets which number;
    * a registered quality keeps its technical user: declaring another one is refused
      (``technical-user-immutable``) and the registration is kept as it is;
    * a technical user in the ledger belongs to its quality forever, even after removal:
      another quality declaring it is refused (``technical-user-taken``), and so are two new
      qualities declaring the same name in one run, since neither has a better claim;
    * a removed quality declared again returns with its old sender number, uid and
      technical user, status ``pending``;
    * a registered quality no longer declared is marked removed (nothing is deleted), unless
      it is in ``held``: qualities whose file still exists but is invalid this run, so that a
      typo in a declaration does not cut off a working channel;
    * when numbers run out, the quality is refused (``sender-numbers-exhausted`` /
      ``uid-range-exhausted``) rather than given a number outside six digits or the range.
    """
    now = ensure_utc(now, "now")
    if not 0 <= sender_start <= MAX_SENDER_NUMBER:
        raise ValueError(f"sender_start {sender_start} is outside 000000-{MAX_SENDER_NUMBER}")
    uid_low, uid_high = uid_range
    if not 0 < uid_low <= uid_high:
        raise ValueError(f"uid_range {uid_range} is not a non-empty range of positive uids")
    for enterprise_number, technical_user in declared.items():
        _check_enterprise_number(enterprise_number)
        if not technical_user:
            raise ValueError(f"quality {enterprise_number} declares an empty technical user")

    registrations = snapshot.registrations
    ledger = snapshot.usernames
    owned = _ledger_by_owner(ledger)
    used_senders = {reg.sender_number for reg in registrations.values()}
    used_uids = {reg.uid for reg in registrations.values()}
    next_sender = max(sender_start, snapshot.next_sender_number)
    next_uid = max(uid_low, snapshot.next_uid)

    # Unrecorded names that two first-time qualities want in the same run: counted up front
    # so the outcome does not depend on which of them sorts first. A recorded name has an
    # owner already and the ledger check decides.
    wanted: dict[str, list[str]] = {}
    for enterprise_number in sorted(declared):
        name = declared[enterprise_number]
        if enterprise_number not in registrations and name not in ledger:
            wanted.setdefault(name, []).append(enterprise_number)

    new: list[Registration] = []
    returning: list[Registration] = []
    refused: list[Refusal] = []

    for enterprise_number in sorted(declared):
        technical_user = declared[enterprise_number]
        current = registrations.get(enterprise_number)

        if current is not None:
            if current.technical_user != technical_user:
                refused.append(
                    Refusal(
                        enterprise_number,
                        "technical-user-immutable",
                        f"Quality {enterprise_number} has been registered with technical user "
                        f"'{current.technical_user}' since "
                        f"{current.registered_at:%Y-%m-%d}; a technical user cannot be "
                        f"changed, so the declared '{technical_user}' is refused. Declare "
                        f"'{current.technical_user}' again to keep (or get back) the channel.",
                    )
                )
            elif current.status == "removed":
                returning.append(
                    replace(current, status="pending", status_since=now, status_reason=None)
                )
            continue

        # Not registered, but a name may already be recorded for it (imported from another
        # channel of the same quality): a quality that had a channel keeps its user.
        own_names = owned.get(enterprise_number, [])
        if own_names and technical_user not in own_names:
            refused.append(
                Refusal(
                    enterprise_number,
                    "technical-user-immutable",
                    f"Quality {enterprise_number} already has technical user "
                    f"{_quoted(own_names)}; a technical user cannot be changed, so the "
                    f"declared '{technical_user}' is refused.",
                )
            )
            continue

        owner = ledger.get(technical_user)
        if owner is not None and owner != enterprise_number:
            owner_reg = registrations.get(owner)
            removed_note = (
                " (removed, but a technical user is never given to another quality)"
                if owner_reg is not None and owner_reg.status == "removed"
                else ""
            )
            refused.append(
                Refusal(
                    enterprise_number,
                    "technical-user-taken",
                    f"Technical user '{technical_user}' belongs to quality {owner}"
                    f"{removed_note}; choose another technical user for quality "
                    f"{enterprise_number}.",
                )
            )
            continue

        rivals = [o for o in wanted.get(technical_user, []) if o != enterprise_number]
        if rivals:
            refused.append(
                Refusal(
                    enterprise_number,
                    "technical-user-taken",
                    f"Technical user '{technical_user}' is declared by quality "
                    f"{enterprise_number} and by {', '.join(rivals)}; a technical user "
                    "belongs to one quality only, so none of them is registered until the "
                    "others choose another name.",
                )
            )
            continue

        while next_sender in used_senders:
            next_sender += 1
        if next_sender > MAX_SENDER_NUMBER:
            refused.append(
                Refusal(
                    enterprise_number,
                    "sender-numbers-exhausted",
                    f"No sender number is left for quality {enterprise_number}: every number "
                    f"from {max(sender_start, snapshot.next_sender_number):06d} to "
                    f"{MAX_SENDER_NUMBER:06d} has been assigned and numbers are never reused "
                    f"({RESERVED_SENDER_NUMBER:06d} is reserved for files sent back).",
                )
            )
            continue
        while next_uid in used_uids:
            next_uid += 1
        if next_uid > uid_high:
            refused.append(
                Refusal(
                    enterprise_number,
                    "uid-range-exhausted",
                    f"No uid is left for quality {enterprise_number} in the range "
                    f"{uid_low}-{uid_high}: uids are never reused and the next unassigned "
                    f"one is {next_uid}.",
                )
            )
            continue

        new.append(
            Registration(
                enterprise_number=enterprise_number,
                technical_user=technical_user,
                sender_number=next_sender,
                uid=next_uid,
                registered_at=now,
                status="pending",
                status_since=now,
            )
        )
        used_senders.add(next_sender)
        used_uids.add(next_uid)

    removed = tuple(
        sorted(
            enterprise_number
            for enterprise_number, reg in registrations.items()
            if reg.status != "removed"
            and enterprise_number not in declared
            and enterprise_number not in held
        )
    )
    return Allocation(
        new=tuple(new),
        returning=tuple(returning),
        removed=removed,
        refused=tuple(refused),
        base_version=snapshot.version,
    )


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
    registrations = dict(snapshot.registrations)
    usernames = dict(snapshot.usernames)
    next_sender = snapshot.next_sender_number
    next_uid = snapshot.next_uid
    for reg in allocation.new:
        registrations[reg.enterprise_number] = replace(reg, revision=revision)
        usernames[reg.technical_user] = reg.enterprise_number
        next_sender = max(next_sender, reg.sender_number + 1)
        next_uid = max(next_uid, reg.uid + 1)
    for reg in allocation.returning:
        registrations[reg.enterprise_number] = replace(reg, revision=revision)
    for enterprise_number in allocation.removed:
        registrations[enterprise_number] = replace(
            registrations[enterprise_number],
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
        channel_keys=snapshot.channel_keys,
    )
