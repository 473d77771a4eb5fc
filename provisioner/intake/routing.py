"""What the gate knows about each channel: the reconciler's routing table, read defensively.

Per sender number the table names the technical user, the quality, the applications with
their purpose codes and the registered certificates (fingerprint, validity and the PEM the
reconciler installed). The table is the reconciler's own output, but the PEM files and the
table are still read as regular files within a size cap and never through a symbolic link:
the gate must not be the tool that reads some other file of the host for an attacker.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provisioner.errors import ProvisionerError
from provisioner.safefile import read_regular

ROUTING_CAP = 256 << 20
PEM_CAP = 256 << 10
_USER = re.compile(r"[A-Za-z0-9]{1,32}")
_SENDER = re.compile(r"[0-9]{6}")


class IntakeError(ProvisionerError):
    """The gate cannot run: its routing table, directories or settings are unusable."""

    code = "intake"


@dataclass(frozen=True, slots=True)
class Channel:
    sender_number: str
    username: str
    quality: str  # the quality identity, "ENTERPRISE/TYPE"
    purposes: frozenset[str]
    certificates: tuple[x509.Certificate, ...]
    # Certificates listed but not usable (missing PEM, fingerprint mismatch): logged.
    certificate_problems: tuple[str, ...] = ()
    language: str | None = None


@dataclass(frozen=True, slots=True)
class Routing:
    by_user: Mapping[str, Channel]
    by_sender: Mapping[str, Channel]


def _entries(doc: Any) -> Iterable[Mapping[str, Any]]:
    senders = doc.get("senders") if isinstance(doc, dict) else None
    if isinstance(senders, dict):
        return [v for v in senders.values() if isinstance(v, dict)]
    if isinstance(senders, list):
        return [v for v in senders if isinstance(v, dict)]
    raise IntakeError("the routing table has no 'senders'")


def _certificates(
    entry: Mapping[str, Any], base: Path
) -> tuple[tuple[x509.Certificate, ...], tuple[str, ...]]:
    found: list[x509.Certificate] = []
    problems: list[str] = []
    for item in entry.get("certificates") or ():
        if not isinstance(item, dict):
            continue
        sha = str(item.get("sha256", "")).lower()
        pem_path = item.get("pem_path")
        if not isinstance(pem_path, str) or not pem_path:
            problems.append(f"certificate {sha[:16]}: no pem_path")
            continue
        path = Path(pem_path)
        if not path.is_absolute():
            path = base / path
        try:
            data = read_regular(path, PEM_CAP)
            cert = (
                x509.load_pem_x509_certificate(data)
                if b"-----BEGIN" in data
                else x509.load_der_x509_certificate(data)
            )
        except (OSError, ValueError) as exc:
            problems.append(f"certificate {sha[:16]}: {path} unusable ({type(exc).__name__})")
            continue
        actual = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
        if sha and actual != sha:
            problems.append(f"certificate {sha[:16]}: {path} holds another certificate")
            continue
        found.append(cert)
    return tuple(found), tuple(problems)


def _over_sftp(application: Mapping[str, Any]) -> bool:
    """Whether the SFTP channel carries `application`: by its `channels` list when the table
    gives one; a table without it (version 1 listed SFTP applications only; version 2 lists
    every application of the quality) is taken at its word."""
    carriers = application.get("channels")
    return not isinstance(carriers, list) or "sftp" in carriers


def load_routing(path: Path) -> Routing:
    """The channels of the routing table at `path`; an unreadable table is an IntakeError."""
    try:
        doc = json.loads(read_regular(path, ROUTING_CAP))
    except FileNotFoundError:
        raise IntakeError(
            f"there is no routing table at {path}: run `provisioner apply` first"
        ) from None
    except (OSError, ValueError) as exc:
        raise IntakeError(f"the routing table {path} cannot be read: {exc}") from None
    by_user: dict[str, Channel] = {}
    by_sender: dict[str, Channel] = {}
    for entry in _entries(doc):
        user = entry.get("username")
        sender = str(entry.get("sender_number", ""))
        if not isinstance(user, str) or not _USER.fullmatch(user) or not _SENDER.fullmatch(sender):
            continue  # no SFTP channel (username null), or nothing this gate can serve
        purposes = {
            str(code)
            for app in entry.get("applications") or ()
            if isinstance(app, dict) and _over_sftp(app)
            for code in app.get("purpose_codes") or ()
        }
        certs, problems = _certificates(entry, path.parent)
        quality = entry.get("quality_id") or (
            f"{entry.get('enterprise_number', '')}/{entry.get('quality_type', '')}"
        )
        language = entry.get("language")
        channel = Channel(
            sender_number=sender,
            username=user,
            quality=str(quality),
            purposes=frozenset(purposes),
            certificates=certs,
            certificate_problems=problems,
            language=language if language in ("nl", "fr", "de", "en") else None,
        )
        by_user[user] = channel
        by_sender[sender] = channel
    return Routing(by_user, by_sender)
