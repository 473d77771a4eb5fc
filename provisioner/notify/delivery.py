"""Delivery of notifications: an outbox directory of .eml files, optionally flushed by SMTP.

Every message is first written to the outbox, one RFC 5322 file each (CRLF line ends), atomic.
With the "outbox" transport that is the delivery: a mail agent or a person takes them from
there. With "smtp" the outbox is a queue: each run sends what it holds through the configured
relay (STARTTLS, credentials from the environment) and removes what was accepted; what the relay
could not take stays for the next run, and a message whose recipients the relay refuses for good
is moved to `failed/` next to it instead of being retried forever.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr
from pathlib import Path

from provisioner import logs
from provisioner.errors import SettingsError
from provisioner.fsutil import write_atomic
from provisioner.settings import SMTP_PASSWORD_ENV, SMTP_USERNAME_ENV, HostSettings

SUFFIX = ".eml"
# CRLF line ends as on the wire. Headers are not folded at 78 columns: the standard library
# drops the space between two folded encoded words ("numéro d'expéditeur" came back as
# "numérod'expéditeur"); RFC 5322 allows lines up to 998 characters.
POLICY = email.policy.SMTP.clone(max_line_length=998)


@dataclass(slots=True)
class Delivery:
    """What one flush did."""

    sent: int = 0
    failed: int = 0
    queued: int = 0
    errors: list[str] = field(default_factory=list)


class Outbox:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def failed_dir(self) -> Path:
        return self.directory / "failed"

    def put(self, msg: EmailMessage, *, kind: str, enterprise_number: str, now: datetime) -> Path:
        data = msg.as_bytes(policy=POLICY)
        digest = hashlib.sha256(data).hexdigest()[:12]
        name = f"{now:%Y%m%dT%H%M%SZ}-{kind}-{enterprise_number}-{digest}{SUFFIX}"
        path = self.directory / name
        write_atomic(path, data, 0o640, dir_mode=0o750)
        return path

    def pending(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(
            p for p in self.directory.iterdir() if p.name.endswith(SUFFIX) and p.is_file()
        )

    def give_up(self, path: Path) -> None:
        self.failed_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        path.replace(self.failed_dir / path.name)


def credentials(environ: Mapping[str, str]) -> tuple[str, str] | None:
    user = environ.get(SMTP_USERNAME_ENV)
    if not user:
        return None
    return user, environ.get(SMTP_PASSWORD_ENV, "")


def _connect(settings: HostSettings, environ: Mapping[str, str]) -> smtplib.SMTP:
    if not settings.smtp_host:
        raise SettingsError("notify_transport is smtp, but smtp_host is not set")
    smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout)
    try:
        smtp.ehlo()
        encrypted = False
        if settings.smtp_starttls:
            cafile = str(settings.smtp_ca_file) if settings.smtp_ca_file else None
            smtp.starttls(context=ssl.create_default_context(cafile=cafile))
            smtp.ehlo()
            encrypted = True
        creds = credentials(environ)
        if creds is not None:
            if not encrypted:
                raise SettingsError(
                    "SMTP credentials are set but smtp_starttls is off: they would cross the "
                    "network in clear, so nothing was sent"
                )
            smtp.login(*creds)
    except BaseException:
        smtp.close()
        raise
    return smtp


def _envelope(raw: bytes) -> tuple[str, list[str]]:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    sender = parseaddr(str(msg.get("From", "")))[1]
    rcpts = [addr for _, addr in getaddresses([str(v) for v in msg.get_all("To", [])]) if addr]
    return sender, rcpts


def flush(settings: HostSettings, outbox: Outbox, environ: Mapping[str, str]) -> Delivery:
    """Send every queued message through the SMTP relay; keep what could not be sent."""
    result = Delivery()
    queue = outbox.pending()
    if not queue:
        return result
    try:
        smtp = _connect(settings, environ)
    except (OSError, smtplib.SMTPException, SettingsError) as exc:
        # Server replies and socket errors only: never the credentials.
        result.errors.append(
            f"cannot reach the SMTP relay {settings.smtp_host}:{settings.smtp_port}: {exc}"
        )
        result.queued = len(queue)
        logs.error("smtp-unavailable", result.errors[-1], queued=result.queued)
        return result
    try:
        for path in queue:
            raw = path.read_bytes()
            sender, rcpts = _envelope(raw)
            try:
                smtp.sendmail(sender, rcpts, raw)
            except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as exc:
                outbox.give_up(path)
                result.failed += 1
                result.errors.append(f"{path.name}: refused by the relay: {exc}")
                logs.error("notification-refused", str(exc), file=path.name)
                continue
            except smtplib.SMTPResponseException as exc:
                if 500 <= exc.smtp_code < 600:
                    outbox.give_up(path)
                    result.failed += 1
                else:
                    result.queued += 1
                result.errors.append(f"{path.name}: {exc.smtp_code} {exc.smtp_error!r}")
                logs.error("notification-not-sent", str(exc), file=path.name)
                continue
            path.unlink()
            result.sent += 1
            logs.event("notification-sent", file=path.name, to=",".join(rcpts))
    except (OSError, smtplib.SMTPException) as exc:
        result.errors.append(f"the SMTP relay dropped the connection: {exc}")
        result.queued = len(outbox.pending())
    finally:
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()
    return result
