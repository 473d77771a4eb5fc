"""An event becomes an RFC 5322 message in the contact's language, from Jinja2 templates.

Templates live in `templates/notifications/<language>/<event>.txt.j2` (a site may override any
of them with `templates_dir`). The first line a template renders is the subject; the body
follows after a blank line. Values reach the templates as context, never as template text.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from datetime import date, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

import jinja2

from provisioner.errors import SettingsError
from provisioner.models import format_enterprise_number
from provisioner.notify.events import Contact, Event
from provisioner.portaltime import portal_day
from provisioner.render import DOWNLOAD_DIRS, UPLOAD_DIRS, template_environment
from provisioner.settings import HostSettings

LANGUAGES = ("nl", "fr", "de")
_DATE_FORMATS = {"nl": "%d-%m-%Y", "fr": "%d/%m/%Y", "de": "%d.%m.%Y"}


def template_name(kind: str, language: str) -> str:
    return f"notifications/{language}/{kind}.txt.j2"


def _date_formatter(language: str) -> Any:
    pattern = _DATE_FORMATS.get(language, "%Y-%m-%d")

    def fmt(value: date | datetime | None) -> str:
        if value is None:
            return ""
        if isinstance(value, datetime):
            # The contact reads the date of the Brussels clock, not of UTC.
            value = portal_day(value)
        return value.strftime(pattern)

    return fmt


def context(
    settings: HostSettings, event: Event, contact: Contact, now: datetime
) -> dict[str, Any]:
    return {
        **dict(event.facts),
        "event": event.kind,
        "contact": contact,
        "quality_name": contact.quality_name,
        "enterprise_number": format_enterprise_number(event.enterprise_number),
        "host": settings.sender_host,
        "port": settings.sender_port,
        "upload_dirs": UPLOAD_DIRS,
        "download_dirs": DOWNLOAD_DIRS,
        "now": now,
        "date": _date_formatter(contact.language),
    }


def render(
    settings: HostSettings, event: Event, contact: Contact, now: datetime
) -> tuple[str, str]:
    """(subject, body) of `event` in the contact's language."""
    language = contact.language if contact.language in LANGUAGES else "nl"
    env = template_environment(settings)
    name = template_name(event.kind, language)
    try:
        text = env.get_template(name).render(**context(settings, event, contact, now))
    except jinja2.TemplateNotFound as exc:
        raise SettingsError(f"notification template {exc.name} not found") from None
    except jinja2.TemplateError as exc:
        raise SettingsError(f"notification template {name} cannot be rendered: {exc}") from None
    subject, _, body = text.lstrip("\n").partition("\n")
    subject = " ".join(subject.split())
    if not subject:
        raise SettingsError(f"notification template {name} renders an empty subject line")
    return subject, body.strip("\n") + "\n"


def compose(
    settings: HostSettings,
    event: Event,
    contact: Contact,
    now: datetime,
    *,
    headers: Mapping[str, str] | None = None,
) -> EmailMessage:
    subject, body = render(settings, event, contact, now)
    msg = EmailMessage()
    msg["From"] = Address(addr_spec=settings.mail_sender)
    msg["To"] = [Address(addr_spec=addr) for addr in contact.emails]
    msg["Subject"] = subject
    msg["Date"] = email.utils.format_datetime(now)
    msg["Message-ID"] = email.utils.make_msgid(idstring=event.kind, domain=settings.hostname)
    # RFC 3834: automatic mail; vacation responders must not answer it.
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Sftp-Provisioner-Event"] = event.key
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body, subtype="plain", charset="utf-8")
    # After set_content, which replaces every Content-* header.
    msg["Content-Language"] = contact.language
    return msg
