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

from provisioner import logs
from provisioner.declarations import FileResult
from provisioner.errors import ProvisionerError
from provisioner.notify.delivery import Delivery, Outbox, flush
from provisioner.notify.events import EVENT_KINDS, Contact, ContactBook, Event, collect
from provisioner.notify.message import compose
from provisioner.settings import HostSettings
from provisioner.state import StateSnapshot, StateStore

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


def notify_run(
    settings: HostSettings,
    store: StateStore,
    *,
    results: Sequence[FileResult],
    refusals: Mapping[str, Sequence[str]],
    before: StateSnapshot,
    after: StateSnapshot,
    now: datetime,
    environ: Mapping[str, str],
) -> NotifyReport:
    report = NotifyReport()
    book = contact_book(settings)
    book.update(results)
    book.save()
    outbox = Outbox(settings.outbox_dir)
    events = collect(results, refusals, before, after, now)
    report.events = len(events)
    for event in events:
        contact = book.get(event.enterprise_number)
        if contact is None:
            # Not claimed: once a contact is known, a later run still tells them.
            report.skipped.append(event.key)
            logs.warn("notification-no-contact", "no known contact", key=event.key)
            continue
        if store.notification_sent(event.key):
            continue
        try:
            msg = compose(settings, event, contact, now)
        except ProvisionerError as exc:
            report.errors.append(f"{event.key}: {exc}")
            logs.error("notification-template", str(exc), key=event.key)
            continue
        # Claim, then write: of two hosts sharing the state, only one sends.
        if not store.claim_notification(event.key, now):
            continue
        try:
            path = outbox.put(
                msg, kind=event.kind, enterprise_number=event.enterprise_number, now=now
            )
        except OSError as exc:
            report.errors.append(f"{event.key}: cannot write to the outbox: {exc}")
            logs.error("notification-lost", str(exc), key=event.key)
            continue
        report.queued += 1
        logs.event(
            "notification-queued",
            kind=event.kind,
            quality=event.enterprise_number,
            language=contact.language,
            to=",".join(contact.emails),
            file=path.name,
        )
    if settings.notify_transport == "smtp":
        delivery: Delivery = flush(settings, outbox, environ)
        report.sent = delivery.sent
        report.failed = delivery.failed
        report.waiting = delivery.queued
        report.errors.extend(delivery.errors)
    return report
