"""What happened to a channel that its contact must hear about, and whom to tell.

Events are found by comparing the state before and after a run, and by reading the
declarations: a channel became active or was removed, a certificate expires within 60 days or
has expired, a key expires within 14 days, a quality was refused on the host. Each event has a
key that names exactly one occurrence (the channel and the moment it became active, the
certificate's fingerprint, the key and its expiry date, the reasons of a refusal…); the state
remembers the keys that were sent, so an event is notified once, not every half hour.

The declarations are read from a `ValidationReport`: its summaries are cheap, while whole
results (model, resolved keys) are read back from the cache, 2-4 s for 10,000 files, which
the scheduled job would pay every half hour. Whole results are therefore loaded only where
a summary does not say enough: the files with a key about to expire (the message names the
key's algorithm and comment), and the files whose contact may have changed (`ContactBook`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from provisioner.cache import code_digest
from provisioner.declarations import FileResult
from provisioner.fsutil import write_atomic
from provisioner.portaltime import portal_day
from provisioner.quality_id import QualityId
from provisioner.state.model import Registration, StateSnapshot

if TYPE_CHECKING:
    from provisioner.rules import FileSummary
    from provisioner.validate import ValidationReport

EventKind = Literal[
    "channel-active",
    "channel-removed",
    "certificate-expiring",
    "certificate-expired",
    "key-expiring",
    "quality-refused",
]
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)
CERTIFICATE_NOTICE = timedelta(days=60)
KEY_NOTICE = timedelta(days=14)


@dataclass(frozen=True, slots=True)
class Contact:
    """The contact person of a quality's structured messages, as last declared."""

    enterprise_number: str
    quality_name: str
    title: str
    first_name: str
    last_name: str
    language: str
    emails: tuple[str, ...]
    quality_type: str = ""

    @classmethod
    def of(cls, result: FileResult) -> Contact | None:
        decl = result.declaration
        if decl is None:
            return None
        c = decl.structured_messages.contact
        return cls(
            enterprise_number=decl.quality.enterprise_number,
            quality_name=decl.quality.name,
            title=c.title,
            first_name=c.first_name,
            last_name=c.last_name,
            language=c.language,
            emails=tuple(str(e) for e in c.emails),
            quality_type=decl.quality.type,
        )


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    # Names the quality by its identity (`str(QualityId)`): two qualities of one enterprise
    # never share a key, so each contact hears of its own channel.
    key: str
    enterprise_number: str
    facts: Mapping[str, Any] = field(default_factory=dict)
    quality_type: str = ""

    @property
    def qid(self) -> QualityId:
        return QualityId(self.enterprise_number, self.quality_type)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:16]


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


def _channel_facts(reg: Registration) -> dict[str, Any]:
    return {
        "technical_user": reg.technical_user,
        "sender_number": reg.sender,
        "registered_at": reg.registered_at,
    }


def _active(qid: QualityId, reg: Registration) -> Event:
    return Event(
        "channel-active",
        f"channel-active:{qid}:{_stamp(reg.status_since)}",
        qid.enterprise_number,
        _channel_facts(reg) | {"active_since": reg.status_since},
        qid.quality_type,
    )


def _removed(qid: QualityId, reg: Registration) -> Event:
    return Event(
        "channel-removed",
        f"channel-removed:{qid}:{_stamp(reg.status_since)}",
        qid.enterprise_number,
        _channel_facts(reg) | {"removed_at": reg.status_since},
        qid.quality_type,
    )


def state_events(before: StateSnapshot, after: StateSnapshot) -> list[Event]:
    """Channels that became active, and channels removed, in this run."""
    events: list[Event] = []
    for en, reg in sorted(after.registrations.items()):
        # A registration from before quality types was adopted by this run: the same channel.
        old = before.registrations.get(en) or before.registrations.get(
            QualityId(en.enterprise_number, "")
        )
        if reg.status == "active" and (old is None or old.status != "active"):
            # A channel that was active before and only was held for a while (`degraded`: a
            # refused edit; `failed` with an apply date: written before `degraded` existed)
            # does not announce itself again; one that never worked, or returns, does.
            if (
                old is not None
                and old.status in ("degraded", "failed")
                and old.last_applied_at is not None
            ):
                continue
            events.append(_active(en, reg))
        elif reg.status == "removed" and old is not None and old.status != "removed":
            events.append(_removed(en, reg))
    return events


def revive(owed: Sequence[str], after: StateSnapshot) -> list[Event]:
    """Events of past runs that could not be sent, while still true.

    A change of status is seen once, in the run that made it; if its message could not be
    written then (a broken site template, a full disk), its key is owed and retried here.
    Events read from the declarations need no such memory: every run finds them again.
    """
    events = []
    for key in owed:
        kind, _, rest = key.partition(":")
        try:
            qid = QualityId.parse(rest.split(":", 1)[0])
        except ValueError:
            continue  # owed before keys named the quality type: no longer identifiable
        reg = after.registrations.get(qid)
        if reg is None:
            continue
        if kind == "channel-active" and reg.status == "active":
            event = _active(qid, reg)
        elif kind == "channel-removed" and reg.status == "removed":
            event = _removed(qid, reg)
        else:
            continue
        if event.key == key:
            events.append(event)
    return events


STATE_KINDS = frozenset({"channel-active", "channel-removed"})


def _key_expiring(expires: datetime | None, now: datetime) -> bool:
    return expires is not None and now < expires <= now + KEY_NOTICE


def declaration_events(
    report: ValidationReport, after: StateSnapshot, now: datetime
) -> list[Event]:
    """Certificates and keys close to (or past) their expiry, per declared quality.

    Certificates come from the summaries, which hold all the message needs. A key's summary
    has its fingerprint and date but not its algorithm and comment, so the whole result is
    loaded for the files with a key in the notice window only: a handful, not every file.
    """
    summaries = report.summaries
    expiring = [
        i
        for i, s in enumerate(summaries)
        if s.facts.qid is not None and any(_key_expiring(k.expires, now) for k in s.keys)
    ]
    # One call for all of them: the loader checks missing cache entries again in parallel.
    whole = dict(zip(expiring, report.results_of(expiring), strict=True))
    events: list[Event] = []
    for i, summary in enumerate(summaries):
        qid = summary.facts.qid
        if qid is None:
            continue
        en, qtype = qid
        reg = after.registrations.get(qid)
        base = _channel_facts(reg) if reg is not None else {}
        certificates = [summary.certificate, summary.next_certificate]
        following = summary.next_certificate
        # During a renewal each certificate is announced on its own (the event id carries the
        # fingerprint); the current one's notice names the next one, already registered.
        for cert in (c for c in certificates if c is not None):
            renewal = (
                {
                    "renewal_serial": following.serial_decimal,
                    "renewal_valid_from": following.not_before,
                }
                if following is not None
                and cert is summary.certificate
                and following.not_after > cert.not_after
                else {}
            )
            facts = (
                base
                | renewal
                | {
                    "certificate_owner": cert.owner,
                    "certificate_issuer": cert.issuer,
                    "certificate_serial": cert.serial_decimal,
                    "certificate_serial_hex": cert.serial_hex,
                    "certificate_fingerprint": cert.sha256_fingerprint,
                    "expires_on": cert.not_after,
                    "days_left": (portal_day(cert.not_after) - portal_day(now)).days,
                    "source": summary.display,
                }
            )
            if now > cert.not_after:
                events.append(
                    Event(
                        "certificate-expired",
                        f"certificate-expired:{qid}:{cert.sha256_fingerprint}",
                        en,
                        facts,
                        qtype,
                    )
                )
            elif cert.not_after - now <= CERTIFICATE_NOTICE:
                events.append(
                    Event(
                        "certificate-expiring",
                        f"certificate-expiring:{qid}:{cert.sha256_fingerprint}",
                        en,
                        facts,
                        qtype,
                    )
                )
        result = whole.get(i)
        for key in result.keys if result is not None else ():
            if key.expires is None or not _key_expiring(key.expires, now):
                continue
            fingerprint = key.key.fingerprint
            events.append(
                Event(
                    "key-expiring",
                    f"key-expiring:{qid}:{fingerprint}:{key.expires:%Y-%m-%d}",
                    en,
                    base
                    | {
                        "key_fingerprint": fingerprint,
                        "key_algorithm": key.key.algorithm,
                        "key_comment": key.key.comment,
                        "expires_on": key.expires,
                        "days_left": (portal_day(key.expires) - portal_day(now)).days,
                        "source": summary.display,
                    },
                    qtype,
                )
            )
    return events


def refusal_events(
    refusals: Mapping[QualityId, Sequence[str]],
    summaries: Sequence[FileSummary],
    after: StateSnapshot,
) -> list[Event]:
    """A quality refused on the host, once per distinct set of reasons for one file content."""
    digests = {s.facts.qid: (s.digest, s.display) for s in summaries}
    events: list[Event] = []
    for qid, reasons in sorted(refusals.items()):
        digest, source = digests.get(qid, ("", None))
        reg = after.registrations.get(qid)
        events.append(
            Event(
                "quality-refused",
                f"quality-refused:{qid}:{_digest(digest, *reasons)}",
                qid.enterprise_number,
                (_channel_facts(reg) if reg is not None else {})
                | {"reasons": list(reasons), "source": source},
                qid.quality_type,
            )
        )
    return events


def collect(
    report: ValidationReport,
    refusals: Mapping[QualityId, Sequence[str]],
    before: StateSnapshot,
    after: StateSnapshot,
    now: datetime,
) -> list[Event]:
    return (
        state_events(before, after)
        + declaration_events(report, after, now)
        + refusal_events(refusals, report.summaries, after)
    )


# --- contacts ------------------------------------------------------------------------------

# How `Contact.of` reads a declaration: raise it when that changes, so that the contacts of
# unchanged files are read again rather than trusted from the book.
CONTACT_FORMAT = 2  # 2: contacts keyed by quality identity, no longer enterprise number


def _contact_code() -> str:
    """The code a remembered contact was read with: `Contact.of` and the checking code."""
    return f"{CONTACT_FORMAT}:{code_digest()}"


class ContactBook:
    """What notifying needs to remember besides the sent keys (those are in the state).

    The last declared contact of every quality: a removed quality's file is gone from the
    checkout, its contact is read from here. And the keys of status events that could not be
    sent yet (`owed`, see `revive`).

    With each contact, the digest of the declaration it was taken from. A contact is a function
    of the file's content alone (for the same checking code), so a file whose digest is the
    remembered one gives the remembered contact: only the files whose digest differs are read
    back whole (every file the first time, or after the checking code changed). The digests are
    kept beside the contacts rather than inside them, so that older code reading a newer book
    still finds every contact (it builds a `Contact` from each entry's fields).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        # Keyed by `str(QualityId)`: two qualities of one enterprise have contacts of their own.
        self.contacts: dict[str, Contact] = {}
        # Quality -> digest of the declaration its contact was taken from.
        self.digests: dict[str, str] = {}
        self.owed: list[str] = []
        try:
            raw = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            raw = {}
        if not isinstance(raw, dict):
            raw = {}
        contacts = raw.get("contacts", {})
        for en, data in contacts.items() if isinstance(contacts, dict) else ():
            with contextlib.suppress(TypeError, ValueError, KeyError):
                self.contacts[en] = Contact(**{**data, "emails": tuple(data["emails"])})
        digests = raw.get("digests", {})
        # A book without digests (the format before them), or written by other checking code
        # (which may read the same file into another contact): every file counts as changed.
        if isinstance(digests, dict) and raw.get("code") == _contact_code():
            self.digests = {
                en: d for en, d in digests.items() if isinstance(d, str) and en in self.contacts
            }
        owed = raw.get("owed", [])
        self.owed = [k for k in owed if isinstance(k, str)] if isinstance(owed, list) else []

    def get(self, quality: str) -> Contact | None:
        """The contact of `quality` (`str(QualityId)`). A book written before contacts were
        kept per quality identity has them by enterprise number: such a contact is still
        that quality's (the only one its enterprise had then)."""
        found = self.contacts.get(quality)
        if found is None:
            number, _, quality_type = quality.partition("/")
            older = self.contacts.get(number)
            if older is not None and older.quality_type in ("", quality_type):
                return older
        return found

    def update(self, report: ValidationReport) -> None:
        """Take each declared quality's contact, as the last of its files that has one says.

        Several files may declare one enterprise number (the cross-file rules refuse that, but
        a file that is refused still names its contact), and one may be too broken to have a
        contact at all. Every quality's files are walked from the last: a file with the
        remembered digest is the one the remembered contact came from, so the walk stops there
        without reading anything; any other file is read whole, and the walk stops at the first
        with a contact. A quality none of whose files has one keeps the contact it had. (A
        broken file after the one with the contact is read at every run: it is refused, and
        rare.)
        """
        files: dict[str, list[int]] = {}
        for i, summary in enumerate(report.summaries):
            qid = summary.facts.qid
            if qid is not None:
                files.setdefault(str(qid), []).append(i)
        remembered = dict(self.digests)
        # Rounds of one file per quality, so that the files to read are read in one call.
        while files:
            round_ = {en: indices.pop() for en, indices in files.items()}
            unknown = [
                i for en, i in round_.items() if report.summaries[i].digest != remembered.get(en)
            ]
            whole = dict(zip(unknown, report.results_of(unknown), strict=True))
            for en, i in round_.items():
                result = whole.get(i)
                if result is not None:
                    contact = Contact.of(result)
                    if contact is None:
                        # Too broken to name a contact: an earlier file may; if none does,
                        # the contact the book had stays.
                        if not files[en]:
                            del files[en]
                        continue
                    # Keyed as the summaries are: a declaration's facts carry its identity.
                    self.contacts[en] = contact
                    self.digests[en] = result.digest
                # else: the file the remembered contact was taken from, unchanged.
                del files[en]

    def save(self) -> None:
        data = {
            "code": _contact_code(),
            "contacts": {en: asdict(c) for en, c in sorted(self.contacts.items())},
            "digests": dict(sorted(self.digests.items())),
            "owed": sorted(set(self.owed)),
        }
        text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
        write_atomic(self.path, text.encode("utf-8"), 0o600, dir_mode=0o700)
