"""The ledger: which quality holds which sender number and technical user, published for CI.

The host knows what Git cannot: the usernames of qualities that left (retired forever), the
names taken in the portal's access system by users that are no quality (reserved), and the
technical user each known quality was registered with (immutable). Without that, a pull request
reusing such a name passes review and is refused only at the next sync, on the host, where the
administrator does not look. So the host writes this document with every run
(`ledger_file`), and `provisioner validate --ledger FILE` applies the same rules in the pull
request, at the declaration's line.

The document holds no contact data, no keys and no e-mail addresses: only identities, numbers,
usernames, statuses and dates, which are all in the file names and logins anyway::

    {"format": "sftp-provisioner-ledger", "version": 1,
     "generated_at": "2026-12-01T23:30:04+00:00", "host": "sftp-a", "revision": "3f2a…",
     "next_sync": "2026-12-02T00:00:00+00:00",
     "qualities": [{"enterprise_number": "0403170701", "quality_type": "employer_nsso",
                    "sender_number": "100000", "technical_user": "EXPDEMOONDERNEMING",
                    "status": "active", "registered_on": "2026-11-30", "status_since": "…"}],
     "usernames": [{"username": "OLDNAME1", "state": "retired", "enterprise_number": "…",
                    "quality_type": "…"}, {"username": "PORTALUSR", "state": "reserved"}]}

Readers ignore keys they do not know, so that later versions can add some.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from provisioner.diagnostics import Diagnostic, Location, error, warning
from provisioner.errors import ProvisionerError
from provisioner.fsutil import write_atomic
from provisioner.quality_id import QualityId
from provisioner.safefile import Refused, read_regular

if TYPE_CHECKING:
    from provisioner.settings import HostSettings
    from provisioner.state import StateSnapshot, StateStore

FORMAT = "sftp-provisioner-ledger"
VERSION = 1
# Some 100 bytes a quality: room for a few hundred thousand.
MAX_LEDGER_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_AGE = timedelta(hours=2)

UsernameState = Literal["retired", "reserved"]


class LedgerError(ProvisionerError):
    """A ledger file that cannot be used."""

    code = "ledger"


# --- the document ------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class LedgerQuality(_Model):
    enterprise_number: str = Field(pattern=r"^[01][0-9]{9}$")
    quality_type: str = Field(pattern=r"^[a-z0-9_]{1,64}$")
    sender_number: str = Field(pattern=r"^[0-9]{6}$")
    technical_user: str = Field(min_length=1, max_length=64)
    status: str = Field(pattern=r"^[a-z]{1,16}$")
    registered_on: date | None = None
    status_since: datetime | None = None

    @property
    def qid(self) -> QualityId:
        return QualityId(self.enterprise_number, self.quality_type)


class LedgerUsername(_Model):
    username: str = Field(min_length=1, max_length=64)
    state: UsernameState
    enterprise_number: str | None = Field(default=None, pattern=r"^[01][0-9]{9}$")
    quality_type: str | None = Field(default=None, pattern=r"^[a-z0-9_]{1,64}$")

    @property
    def qid(self) -> QualityId | None:
        if self.enterprise_number is None or self.quality_type is None:
            return None
        return QualityId(self.enterprise_number, self.quality_type)


class _Document(_Model):
    format: Literal["sftp-provisioner-ledger"]
    version: Literal[1]
    generated_at: datetime
    host: str | None = None
    revision: str | None = None
    next_sync: datetime | None = None
    qualities: list[LedgerQuality] = Field(max_length=1_000_000)
    usernames: list[LedgerUsername] = Field(default_factory=list, max_length=1_000_000)


@dataclass(frozen=True)
class Ledger:
    generated_at: datetime
    qualities: tuple[LedgerQuality, ...] = ()
    usernames: tuple[LedgerUsername, ...] = ()
    host: str | None = None
    revision: str | None = None
    next_sync: datetime | None = None
    # Where it was read from, for diagnostics ("" when made in memory).
    source: str = ""
    _by_qid: dict[QualityId, LedgerQuality] = field(default_factory=dict, repr=False, compare=False)
    _by_user: dict[str, tuple[UsernameState | str, QualityId | None]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for q in self.qualities:
            self._by_qid[q.qid] = q
            self._by_user[q.technical_user] = (
                "retired" if q.status == "removed" else q.status,
                q.qid,
            )
        for u in self.usernames:
            self._by_user.setdefault(u.username, (u.state, u.qid))

    def quality(self, qid: QualityId) -> LedgerQuality | None:
        return self._by_qid.get(qid)

    def only_quality_of(self, enterprise_number: str) -> LedgerQuality | None:
        """The enterprise's quality when it has exactly one in the ledger."""
        found = [q for q in self.qualities if q.enterprise_number == enterprise_number]
        return found[0] if len(found) == 1 else None

    def holder(self, username: str) -> tuple[str, QualityId | None] | None:
        """(state, quality) of a username: a quality's status, `retired` or `reserved`."""
        return self._by_user.get(username)

    def folded(self) -> dict[str, list[str]]:
        """Lower-case username -> the usernames of the ledger that fold to it."""
        out: dict[str, list[str]] = {}
        for name in self._by_user:
            out.setdefault(name.lower(), []).append(name)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "generated_at": _utc(self.generated_at),
            "host": self.host,
            "revision": self.revision,
            "next_sync": _utc(self.next_sync) if self.next_sync else None,
            "qualities": [_quality_json(q) for q in self.qualities],
            "usernames": [u.model_dump(mode="json", exclude_none=True) for u in self.usernames],
        }

    def dumps(self) -> str:
        """One entry a line: small, and a published copy under Git diffs line by line."""
        doc = self.to_json()
        head = {k: v for k, v in doc.items() if k not in ("qualities", "usernames")}
        text = json.dumps(head, ensure_ascii=False)[:-1]
        for key in ("qualities", "usernames"):
            items = ",\n  ".join(json.dumps(e, ensure_ascii=False) for e in doc[key])
            text += f',\n "{key}": [\n  {items}\n ]' if items else f',\n "{key}": []'
        return text + "\n}\n"


def _quality_json(q: LedgerQuality) -> dict[str, Any]:
    return {
        "enterprise_number": q.enterprise_number,
        "quality_type": q.quality_type,
        "sender_number": q.sender_number,
        "technical_user": q.technical_user,
        "status": q.status,
        "registered_on": q.registered_on.isoformat() if q.registered_on else None,
        "status_since": _utc(q.status_since) if q.status_since else None,
    }


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def load_ledger(path: Path, display: str | None = None) -> Ledger:
    """The ledger in `path`; a `LedgerError` naming the file when it is not one."""
    shown = display or str(path)
    where = Location(shown)
    try:
        data = read_regular(path, MAX_LEDGER_BYTES, follow=True)
    except FileNotFoundError:
        raise LedgerError("the ledger file does not exist", location=where) from None
    except Refused as exc:
        raise LedgerError(
            f"the ledger file {exc.reason}; it was not read", location=where
        ) from None
    except OSError as exc:
        raise LedgerError(f"cannot read the ledger file: {exc.strerror}", location=where) from None
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise LedgerError(
            "this is not a ledger: not JSON text (expected what `provisioner ledger export` "
            "writes)",
            location=where,
        ) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise LedgerError(f'this is not a ledger: its "format" is not "{FORMAT}"', location=where)
    if raw.get("version") != VERSION:
        raise LedgerError(
            f"this ledger is of another version than {VERSION}; upgrade sftp-provisioner",
            location=where,
        )
    try:
        doc = _Document.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        at = ".".join(str(p) for p in first["loc"])
        raise LedgerError(f"this ledger is damaged: {at}: {first['msg']}", location=where) from None
    if doc.generated_at.tzinfo is None:
        raise LedgerError("this ledger's generated_at has no UTC offset", location=where)
    return Ledger(
        generated_at=doc.generated_at,
        qualities=tuple(doc.qualities),
        usernames=tuple(doc.usernames),
        host=doc.host,
        revision=doc.revision,
        next_sync=doc.next_sync,
        source=shown,
    )


def write_ledger(path: Path, ledger: Ledger) -> None:
    """Atomically, mode 0644: CI and the web server that publishes it read it."""
    write_atomic(path, ledger.dumps().encode("utf-8"), mode=0o644)


# --- the pull-request rules --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Declared:
    """What the rules need of one declaration."""

    qid: QualityId | None
    technical_user: str
    at: Location
    # Used when the quality type is unknown (a file whose type could not be read).
    enterprise_number: str | None = None


def ledger_rules(
    declared: Iterable[Declared], ledger: Ledger, now: datetime, max_age: timedelta
) -> list[Diagnostic]:
    """The host's username rules, judged in the pull request from the published ledger."""
    out: list[Diagnostic] = []
    age = now - ledger.generated_at
    if age > max_age:
        out.append(
            warning(
                "ledger-stale",
                f"this ledger was written {_age(age)} ago (at {_utc(ledger.generated_at)}), more "
                f"than {_age(max_age)}: usernames taken since are not known to this check",
                Location(ledger.source or "ledger"),
            )
        )
    folded = ledger.folded()
    for d in declared:
        verdict = _username_verdict(d, ledger, folded)
        if verdict is not None:
            out.append(verdict)
    return out


def _username_verdict(
    d: Declared, ledger: Ledger, folded: dict[str, list[str]]
) -> Diagnostic | None:
    """At most one refusal per declaration: a registered quality is judged on its own
    username alone; a new one's username must be free, in any case."""
    user = d.technical_user
    qid = _quality_of(d, ledger)
    own = ledger.quality(qid) if qid is not None else None
    if own is not None:
        if own.technical_user == user:
            return None
        return error(
            "technical-user-immutable",
            f"quality {qid} is registered with the technical user "
            f"'{own.technical_user}' (ledger of {ledger.host or 'the host'}), "
            f"which cannot be changed; '{user}' is refused",
            d.at,
        )
    held = ledger.holder(user)
    if held is not None:
        return _refusal_for_held_name(d, qid, *held)
    others = [n for n in folded.get(user.lower(), []) if n != user]
    return _refusal_for_case_twin(d, qid, others[0], ledger) if others else None


def _quality_of(d: Declared, ledger: Ledger) -> QualityId | None:
    """The declaration's quality; when its type could not be read, the enterprise's only
    quality in the ledger, if it has just one."""
    if d.qid is None and d.enterprise_number is not None:
        only = ledger.only_quality_of(d.enterprise_number)
        return only.qid if only is not None else None
    return d.qid


def _refusal_for_held_name(
    d: Declared, qid: QualityId | None, state: str, owner: QualityId | None
) -> Diagnostic | None:
    user = d.technical_user
    if owner is not None and owner == qid:
        return None
    if state == "reserved":
        return error(
            "technical-user-reserved",
            f"'{user}' is taken in the portal's access system by a user that is no "
            "SFTP quality; choose another technical username",
            d.at,
        )
    if state == "retired":
        return error(
            "technical-user-retired",
            f"'{user}' was the technical user of quality {owner}, which was "
            "removed; a username is never given to another quality, even after "
            "it left",
            d.at,
        )
    return error(
        "technical-user-taken",
        f"'{user}' is the technical user of quality {owner}; choose another technical username",
        d.at,
    )


def _refusal_for_case_twin(
    d: Declared, qid: QualityId | None, other: str, ledger: Ledger
) -> Diagnostic | None:
    state, owner = ledger.holder(other) or ("", None)
    if owner is not None and owner == qid:
        return None
    whose = (
        "a user of the portal's access system"
        if owner is None
        else f"quality {owner}" + (" (removed)" if state == "retired" else "")
    )
    return error(
        # As the host judges it: a reserved name is refused whatever its case.
        "technical-user-reserved" if state == "reserved" else "technical-user-taken",
        f"'{d.technical_user}' differs only in case from '{other}', the username of {whose}; "
        "the portal's access system does not tell them apart",
        d.at,
    )


def _age(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} minutes"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} hours"
    return f"{hours // 24} days"


def parse_age(text: str) -> timedelta:
    """`90m`, `2h`, `1d` (as `ledger_max_age` and `--ledger-max-age` are written)."""
    units = {"m": 60, "h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isascii() or not number.isdigit() or int(number) <= 0:
        raise ValueError(f"{text!r} is not an age such as 90m, 2h or 1d")
    return timedelta(seconds=int(number) * units[unit])


def declared_of(summaries: Sequence[Any]) -> list[Declared]:
    """The declarations of a validation run, as the ledger rules see them."""
    out = []
    for s in summaries:
        f = s.facts
        if not f.technical_user or f.technical_user_at is None:
            continue
        quality_type = getattr(f, "quality_type", None)
        qid = (
            QualityId(f.enterprise_number, quality_type)
            if f.enterprise_number and quality_type
            else None
        )
        out.append(Declared(qid, f.technical_user, f.technical_user_at, f.enterprise_number))
    return out


# --- from the state ----------------------------------------------------------------------------


def ledger_from_snapshot(
    snapshot: StateSnapshot,
    *,
    generated_at: datetime,
    host: str | None = None,
    revision: str | None = None,
    next_sync: datetime | None = None,
) -> Ledger:
    """The ledger of a state: every quality ever registered, and the usernames no active
    quality holds (retired with a removed quality, reserved in the portal's access system)."""
    from zoneinfo import ZoneInfo

    brussels = ZoneInfo("Europe/Brussels")
    qualities = []
    current: dict[str, QualityId] = {}
    for qid, reg in sorted(snapshot.registrations.items()):
        if reg.legacy:
            continue  # a schema-3 row whose quality type the next reconcile adopts
        current[reg.technical_user] = qid
        # From our own state, already checked: built without validating every field again.
        qualities.append(
            LedgerQuality.model_construct(
                enterprise_number=qid.enterprise_number,
                quality_type=qid.quality_type,
                sender_number=reg.sender,
                technical_user=reg.technical_user,
                status=reg.status,
                registered_on=reg.registered_at.astimezone(brussels).date(),
                status_since=reg.status_since,
            )
        )
    usernames = []
    for name, owner in sorted(snapshot.usernames.items()):
        holding = snapshot.registrations.get(owner)
        if current.get(name) == owner and holding is not None and holding.status != "removed":
            continue  # an active quality's: in `qualities`
        if owner.quality_type == "":
            continue
        usernames.append(
            LedgerUsername.model_construct(
                username=name,
                state="retired",
                enterprise_number=owner.enterprise_number,
                quality_type=owner.quality_type,
            )
        )
    usernames.extend(
        LedgerUsername(username=name, state="reserved") for name in sorted(snapshot.reserved)
    )
    return Ledger(
        generated_at=generated_at,
        qualities=tuple(qualities),
        usernames=tuple(usernames),
        host=host,
        revision=revision,
        next_sync=next_sync,
    )


def _last_revision(store: StateStore) -> str | None:
    runs = store.last_runs(1)
    return runs[0].revision if runs else None


def ledger_of_store(
    store: StateStore, settings: HostSettings, *, now: datetime, next_sync: datetime | None = None
) -> Ledger:
    from provisioner.schedule import next_slot, parse_interval

    if next_sync is None:
        next_sync = next_slot(now, parse_interval(settings.reconcile_every))
    return ledger_from_snapshot(
        store.snapshot(),
        generated_at=now,
        host=settings.host_name,
        revision=_last_revision(store),
        next_sync=next_sync,
    )


def export_ledger(settings: HostSettings, *, now: datetime) -> Ledger:
    """The ledger of the host's state (read-only: a missing database is an error)."""
    from provisioner.errors import SettingsError
    from provisioner.state import StateError, StateMissing, StateStore, redact_url

    try:
        store = StateStore.open(settings.state_url, create=False)
    except StateMissing:
        raise SettingsError(
            f"no state database at {redact_url(settings.state_url)}: nothing to export"
        ) from None
    except StateError as exc:
        raise SettingsError(f"the state database cannot be opened: {exc}") from None
    with store:
        return ledger_of_store(store, settings, now=now)


def publish(
    store: StateStore, settings: HostSettings, *, now: datetime, next_sync: datetime | None
) -> Ledger:
    """After a run: the ledger written to `ledger_file`, where CI fetches it from."""
    ledger = ledger_of_store(store, settings, now=now, next_sync=next_sync)
    write_ledger(settings.ledger_file, ledger)
    return ledger
