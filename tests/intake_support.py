"""A host tree for the intake gate without sshd: chroots, a routing table, real certificates.

The routing table is written in the shape the reconciler renders (version 2: per sender the
username, the quality, the applications with their purpose codes and the certificates with
the PEM path); the chroots have the six exchange directories. Signatures are real detached
CMS signatures, made with cryptography's PKCS7SignatureBuilder or `openssl smime -sign`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7

from provisioner.settings import HostSettings, load_settings
from tests.fixtures_crypto import key_usage, make_certificate

UTC = dt.UTC
EXCHANGE = ("IN", "INTEST", "INTEST-S", "OUT", "OUTTEST", "OUTTEST-S")
ENV_DIR = {"R": "IN", "T": "INTEST", "S": "INTEST-S"}
# A sender in the tests: DmfA and Dimona (the e2e declaration's applications).
PURPOSES = {"dmfa": ["DMFA", "DMWA"], "dimona": ["DIMN"]}


@dataclass
class Signer:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def sha256(self) -> str:
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return hashlib.sha256(der).hexdigest()

    def sign(self, data: bytes) -> bytes:
        """As the clients seen in the field write FS: base64 DER, no armour, CRLF."""
        der = (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(data)
            .add_signer(self.certificate, self.key, hashes.SHA256())
            .sign(
                serialization.Encoding.DER,
                [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary],
            )
        )
        return base64.encodebytes(der).replace(b"\n", b"\r\n")

    def sign_openssl(self, data: bytes, *, binary: bool = True) -> bytes:
        """`openssl smime -sign -outform PEM`, armour stripped, CRLF line ends; without
        `binary`, the text mode the field's documentation shows (it signs CRLF line ends)."""
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            (t / "key.pem").write_bytes(
                self.key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            (t / "cert.pem").write_bytes(self.pem)
            (t / "data").write_bytes(data)
            out = subprocess.run(
                [
                    "openssl",
                    "smime",
                    "-sign",
                    *(["-binary"] if binary else []),
                    "-md",
                    "sha256",
                    "-outform",
                    "PEM",
                    "-in",
                    str(t / "data"),
                    "-signer",
                    str(t / "cert.pem"),
                    "-inkey",
                    str(t / "key.pem"),
                ],
                capture_output=True,
                check=True,
            ).stdout
        body = [ln for ln in out.splitlines() if ln and not ln.startswith(b"-----")]
        return b"\r\n".join(body) + b"\r\n"


def make_signer(
    *,
    not_before: dt.datetime = dt.datetime(2026, 1, 1, tzinfo=UTC),
    not_after: dt.datetime = dt.datetime(2030, 12, 31, tzinfo=UTC),
    serial: int | None = None,
) -> Signer:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_certificate(
        key=key,
        not_before=not_before,
        not_after=not_after,
        serial=serial or int.from_bytes(os.urandom(8), "big"),
        usage=key_usage(digital_signature=True, content_commitment=True),
    )
    return Signer(key, cert)


@dataclass
class Channel:
    user: str
    sender: str
    signers: list[Signer]
    applications: tuple[str, ...] = ("dmfa", "dimona")
    language: str | None = "nl"


@dataclass
class IntakeHost:
    root: Path
    settings: HostSettings
    channels: dict[str, Channel] = field(default_factory=dict)

    def chroot(self, user: str) -> Path:
        return self.settings.chroot_base / user

    def upload_dir(self, user: str, directory: str) -> Path:
        return self.chroot(user) / directory

    def add(self, channel: Channel) -> Channel:
        for d in EXCHANGE:
            (self.chroot(channel.user) / d).mkdir(parents=True, exist_ok=True)
        self.channels[channel.user] = channel
        self.write_routing()
        return channel

    def write_routing(self) -> None:
        certs_dir = self.settings.routing_table.parent / "certificates"
        certs_dir.mkdir(parents=True, exist_ok=True)
        senders: dict[str, Any] = {}
        for ch in self.channels.values():
            entries = []
            for s in ch.signers:
                path = certs_dir / f"{ch.sender}-{s.sha256[:16]}.pem"
                path.write_bytes(s.pem)
                entries.append(
                    {
                        "sha256": s.sha256,
                        "not_before": s.certificate.not_valid_before_utc.isoformat(),
                        "not_after": s.certificate.not_valid_after_utc.isoformat(),
                        "pem_path": str(path),
                    }
                )
            senders[ch.sender] = {
                "sender_number": ch.sender,
                "username": ch.user,
                "enterprise_number": "0403170701",
                "quality": f"QUALITY {ch.user}",
                "quality_type": "employer_nsso",
                "channels": ["sftp"],
                "applications": [
                    {"application": a, "purpose_codes": PURPOSES[a], "preferred_channel": "sftp"}
                    for a in ch.applications
                ],
                "certificates": entries,
                "language": ch.language,
            }
        self.settings.routing_table.parent.mkdir(parents=True, exist_ok=True)
        self.settings.routing_table.write_text(
            json.dumps({"generated_by": "tests", "version": 2, "senders": senders}), "utf-8"
        )

    # -- uploads ---------------------------------------------------------------------------
    def put(self, user: str, directory: str, name: str, data: bytes, *, age: float = 60) -> Path:
        """An upload, `age` seconds old (mtime; ctime cannot be set, so the stability window
        of these hosts is 0)."""
        path = self.upload_dir(user, directory) / name
        path.write_bytes(data)
        when = dt.datetime.now(UTC).timestamp() - age
        os.utime(path, (when, when))
        return path

    def upload_set(
        self,
        channel: Channel,
        seq: int,
        *,
        env: str = "R",
        directory: str | None = None,
        purpose: str = "DMFA",
        sender: str | None = None,
        parts: int = 1,
        content: bytes | None = None,
        signer: Signer | None = None,
        openssl: bool = False,
        day: dt.date | None = None,
        signed: bool | None = None,
        go: bool = True,
    ) -> list[str]:
        """FI (+FS) per part and a GO; returns the names written."""
        day = day or dt.datetime.now(UTC).date()
        sender = sender or channel.sender
        directory = directory or ENV_DIR[env]
        base = f"{purpose}.{sender}.{day:%Y%m%d}.{seq:05d}.{env}"
        names = []
        signer = signer or channel.signers[0]
        for part in range(1, parts + 1):
            data = content if content is not None else f"<dmfa part={part} seq={seq}/>".encode() * 8
            fi = f"FI.{base}.{parts}.{part}"
            self.put(channel.user, directory, fi, data)
            names.append(fi)
            if signed if signed is not None else env != "S":
                fs = f"FS.{base}.{parts}.{part}"
                sig = signer.sign_openssl(data) if openssl else signer.sign(data)
                self.put(channel.user, directory, fs, sig)
                names.append(fs)
        if go:
            self.put(channel.user, directory, f"GO.{base}.{parts}", b"go")
            names.append(f"GO.{base}.{parts}")
        return names

    # -- what the gate left ------------------------------------------------------------------
    def records(self, where: str = "all") -> list[dict[str, Any]]:
        roots = []
        if where in ("all", "accepted"):
            roots += [self.settings.intake_dir / e for e in ("R", "T", "S")]
        if where in ("all", "refused"):
            roots.append(self.settings.quarantine_dir)
        out = []
        for r in roots:
            for rec in sorted(r.glob("*/record.json")):
                out.append(json.loads(rec.read_text()))
        return out

    def notices(self, user: str, directory: str = "OUT") -> dict[str, str]:
        return {
            p.name: p.read_text("utf-8")
            for p in sorted((self.chroot(user) / directory).iterdir())
            if p.name.startswith("FO.")
        }

    def inventory(self) -> dict[str, list[tuple[str, str]]]:
        """{sha256 + name: [where...]} of every uploaded file wherever it is now."""
        found: dict[str, list[tuple[str, str]]] = {}

        def add(path: Path, where: str) -> None:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found.setdefault(f"{path.name}:{digest}", []).append((where, str(path)))

        for ch in self.channels.values():
            for d in ("IN", "INTEST", "INTEST-S"):
                for p in self.upload_dir(ch.user, d).iterdir():
                    if p.is_file():
                        add(p, "upload")
        for top, where in (
            (self.settings.intake_dir, "intake"),
            (self.settings.quarantine_dir, "quarantine"),
        ):
            for p in top.rglob("*"):
                if p.is_file() and p.parent.name == "files":
                    add(p, where)
        return found


def make_host(tmp: Path, **overrides: Any) -> IntakeHost:
    values: dict[str, Any] = {
        "intake_stability": 0,
        "host_name": "intake-test",
        "notifications": False,
    }
    values.update(overrides)
    settings = load_settings(None, root=tmp, overrides=values, environ={})
    return IntakeHost(tmp, settings)


def sender_channel(
    user: str, sender: str, signers: Sequence[Signer] | None = None, **kw: Any
) -> Channel:
    return Channel(user, sender, list(signers) if signers else [make_signer()], **kw)
