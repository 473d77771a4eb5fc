"""Notifications through a real SMTP server (aiosmtpd) with STARTTLS and AUTH.

The server runs in the test on 127.0.0.1 with a certificate made for it; the provisioner trusts
exactly that certificate (smtp_ca_file) and logs in with credentials from the environment.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from conftest import NOW, USER_ONDERNEMING, USER_SECSOC, Host
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ops_support import body, outbox, read_message, run

from provisioner.settings import SMTP_PASSWORD_ENV, SMTP_USERNAME_ENV

USER, PASSWORD = "provisioner", "s3cret-Relay-Pw"
CREDENTIALS = {SMTP_USERNAME_ENV: USER, SMTP_PASSWORD_ENV: PASSWORD}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made now."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtp relay for tests")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "relay.crt", directory / "relay.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Received:
    envelope: Envelope
    tls: bool
    login: bytes | None


@dataclass
class Relay:
    port: int
    ca_file: Path
    messages: list[Received] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        self.messages.append(Received(envelope, session.ssl is not None, login))
        return "250 2.0.0 queued"


def authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USER.encode()
        and auth_data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    cert, key = server_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = Relay(free_port(), cert)
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=handler.port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield handler
    finally:
        controller.stop()


def smtp_settings(host: Host, relay: Relay, **extra: Any) -> None:
    host.write_settings(
        notify_transport="smtp",
        smtp_host="127.0.0.1",
        smtp_port=relay.port,
        smtp_ca_file=str(relay.ca_file),
        mail_from="sftp@test-host.example",
        **extra,
    )


def test_messages_go_through_starttls_and_auth_in_each_language(
    host: Host, relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    host.edit("0200065765", "language: fr", "language: de")
    smtp_settings(host, relay)
    caplog.set_level(logging.DEBUG)
    report = run(host.settings(), [host.decls], host.base, now=NOW, environ=CREDENTIALS)
    assert report.outcome == "ok", report.errors
    assert report.notifications == {
        "events": 2,
        "queued": 2,
        "sent": 2,
        "failed": 0,
        "waiting": 0,
    }
    assert len(relay.messages) == 2
    assert all(m.tls and m.login == USER.encode() for m in relay.messages)
    by_to = {tuple(m.envelope.rcpt_tos): m for m in relay.messages}
    nl = read_message(by_to[("batch@onderneming.example",)].envelope.original_content or b"")
    de = read_message(by_to[("edi@secsoc.example",)].envelope.original_content or b"")
    assert by_to[("edi@secsoc.example",)].envelope.mail_from == "sftp@test-host.example"
    assert nl["Subject"].startswith(f"Uw SFTP-kanaal is actief: gebruiker {USER_ONDERNEMING}")
    assert de["Subject"] == (
        f"Ihr SFTP-Kanal ist aktiv: Benutzer {USER_SECSOC}, Absendernummer 100000"
    )
    assert de["Content-Language"] == "de"
    assert body(de).startswith("Sehr geehrte Frau Dupont,")
    # Delivered: the outbox is empty; the password is nowhere in logs or files.
    assert outbox(host.settings()) == []
    assert PASSWORD not in caplog.text
    assert PASSWORD not in host.settings().status_file.read_text()

    # The next run sends nothing again.
    run(
        host.settings(),
        [host.decls],
        host.base,
        now=NOW + timedelta(minutes=30),
        environ=CREDENTIALS,
    )
    assert len(relay.messages) == 2


def test_wrong_credentials_keep_the_messages_for_the_next_run(host: Host, relay: Relay) -> None:
    smtp_settings(host, relay)
    wrong = {SMTP_USERNAME_ENV: USER, SMTP_PASSWORD_ENV: "not-the-password"}
    report = run(host.settings(), [host.decls], host.base, now=NOW, environ=wrong)
    assert report.outcome == "partial"
    assert "535" in report.errors[0] and "not-the-password" not in " ".join(report.errors)
    assert report.notifications["waiting"] == 2 and relay.messages == []
    assert len(outbox(host.settings())) == 2

    report = run(
        host.settings(),
        [host.decls],
        host.base,
        now=NOW + timedelta(minutes=30),
        environ=CREDENTIALS,
    )
    assert report.outcome == "ok"
    assert report.notifications["sent"] == 2 and report.notifications["queued"] == 0
    assert len(relay.messages) == 2 and outbox(host.settings()) == []


def test_a_relay_that_is_down_delays_delivery_without_losing_it(host: Host, relay: Relay) -> None:
    smtp_settings(host, relay)
    host.write_settings(
        notify_transport="smtp",
        smtp_host="127.0.0.1",
        smtp_port=free_port(),  # nobody listens there
        smtp_ca_file=str(relay.ca_file),
    )
    report = run(host.settings(), [host.decls], host.base, now=NOW, environ=CREDENTIALS)
    assert report.outcome == "partial" and "cannot reach the SMTP relay" in report.errors[0]
    assert len(outbox(host.settings())) == 2

    smtp_settings(host, relay)
    run(
        host.settings(),
        [host.decls],
        host.base,
        now=NOW + timedelta(minutes=30),
        environ=CREDENTIALS,
    )
    assert len(relay.messages) == 2 and outbox(host.settings()) == []


def test_an_untrusted_relay_certificate_sends_nothing(host: Host, relay: Relay) -> None:
    smtp_settings(host, relay)
    host.write_settings(
        notify_transport="smtp", smtp_host="127.0.0.1", smtp_port=relay.port
    )  # the system trust store does not know the test relay's certificate
    report = run(host.settings(), [host.decls], host.base, now=NOW, environ=CREDENTIALS)
    assert report.outcome == "partial"
    assert "CERTIFICATE_VERIFY_FAILED" in report.errors[0]
    assert relay.messages == []


def test_a_recipient_refused_for_good_is_set_aside(host: Host, relay: Relay) -> None:
    smtp_settings(host, relay)
    relay.refuse.add("edi@secsoc.example")
    report = run(host.settings(), [host.decls], host.base, now=NOW, environ=CREDENTIALS)
    assert report.notifications["sent"] == 1 and report.notifications["failed"] == 1
    settings = host.settings()
    assert outbox(settings) == []
    (kept,) = (settings.outbox_dir / "failed").glob("*.eml")
    assert read_message(kept)["To"] == "edi@secsoc.example"


def test_credentials_need_starttls(host: Host, relay: Relay) -> None:
    smtp_settings(host, relay, smtp_starttls=False)
    report = run(host.settings(), [host.decls], host.base, now=NOW, environ=CREDENTIALS)
    assert "would cross the network in clear" in report.errors[0]
    assert relay.messages == [] and len(outbox(host.settings())) == 2
