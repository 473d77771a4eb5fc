"""Notifications to the contacts of the channels, once per event.

`notify_run` is called after a run: it finds the events (see `events`), claims each event's
key in the state (a key already claimed was notified before, by this host or another), renders
the message in the contact's language and puts it in the outbox; with the SMTP transport it
then sends what the outbox holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from provisioner import logs
from provisioner.errors import ProvisionerError
from provisioner.notify.delivery import Delivery, Outbox, flush
from provisioner.notify.events import (
    EVENT_KINDS,
    STATE_KINDS,
    Contact,
    ContactBook,
    Event,
    collect,
    revive,
)
from provisioner.notify.message import compose
from provisioner.quality_id import QualityId
from provisioner.settings import HostSettings
from provisioner.state import StateSnapshot, StateStore

if TYPE_CHECKING:
    from provisioner.validate import ValidationReport

__all__ = [
    "EVENT_KINDS",
    "Contact",
    "ContactBook",
    "Event",
    "NotifyReport",
    "Outbox",
    "collect",
    "compose",
    "notify_run",
]


@dataclass(slots=True)
class NotifyReport:
    events: int = 0
    queued: int = 0  # written to the outbox this run
    sent: int = 0  # accepted by the SMTP relay this run
    failed: int = 0  # refused for good by the relay
    waiting: int = 0  # left in the outbox for the next run (SMTP transport)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, int]:
        return {
            "events": self.events,
            "queued": self.queued,
            "sent": self.sent,
            "failed": self.failed,
            "waiting": self.waiting,
        }


def contact_book(settings: HostSettings) -> ContactBook:
    return ContactBook(settings.work_dir / "contacts.json")


def _deliver_one(
    settings: HostSettings,
    store: StateStore,
    outbox: Outbox,
    book: ContactBook,
    event: Event,
    now: datetime,
    report: NotifyReport,
) -> bool:
    """Put one event's message in the outbox; False when it could not be and is still owed."""
    contact = book.get(str(event.qid))
    if contact is None:
        # Not claimed: once a contact is known, a later run still tells them.
        report.skipped.append(event.key)
        logs.warn("notification-no-contact", "no known contact", key=event.key)
        return False
    if store.notification_sent(event.key):
        return True
    try:
        msg = compose(settings, event, contact, now)
    except ProvisionerError as exc:
        report.errors.append(f"{event.key}: {exc}")
        logs.error("notification-template", str(exc), key=event.key)
        return False
    # Claim, then write: of two hosts sharing the state, only one sends.
    if not store.claim_notification(event.key, now):
        return True
    try:
        path = outbox.put(msg, kind=event.kind, enterprise_number=event.enterprise_number, now=now)
    except OSError as exc:
        report.errors.append(f"{event.key}: cannot write to the outbox: {exc}")
        logs.error("notification-lost", str(exc), key=event.key)
        return True  # claimed: retrying would need to un-claim, which the state cannot do
    report.queued += 1
    logs.event(
        "notification-queued",
        kind=event.kind,
        quality=str(event.qid),
        language=contact.language,
        to=",".join(contact.emails),
        file=path.name,
    )
    return True


def notify_run(
    settings: HostSettings,
    store: StateStore,
    *,
    report: ValidationReport,
    refusals: Mapping[QualityId, Sequence[str]],
    before: StateSnapshot,
    after: StateSnapshot,
    now: datetime,
    environ: Mapping[str, str],
) -> NotifyReport:
    """Notify the events of a run whose declarations `report` (a full validation) holds.

    The report, not its whole results: reading every whole result back from the cache would
    cost seconds every half hour, and only the files with an expiring key or a changed
    contact need theirs (see `events`).
    """
    done = NotifyReport()
    book = contact_book(settings)
    book.update(report)
    outbox = Outbox(settings.outbox_dir)
    events = collect(report, refusals, before, after, now)
    fresh = {e.key for e in events}
    events += [e for e in revive(book.owed, after) if e.key not in fresh]
    done.events = len(events)
    delivered = {e.key: _deliver_one(settings, store, outbox, book, e, now, done) for e in events}
    book.owed = [e.key for e in events if e.kind in STATE_KINDS and not delivered[e.key]]
    book.save()
    if settings.notify_transport == "smtp":
        delivery: Delivery = flush(settings, outbox, environ)
        done.sent = delivery.sent
        done.failed = delivery.failed
        done.waiting = delivery.queued
        done.errors.extend(delivery.errors)
    return done
