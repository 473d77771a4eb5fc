"""The X.509 certificate whose key signs every file sent over the channel.

Administrators declare the public certificate (a ``.cer``, DER or PEM). This module reads it into
the figures the confirmation page shows (owner, company, issuer, expiry, serial in decimal and
hex) and judges whether it can sign files. It is pure: no I/O, no clock — the caller passes
``now``.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Final, Literal, NoReturn

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID, ObjectIdentifier

from provisioner.errors import CodedProblem

__all__ = [
    "CertificateFinding",
    "CertificateInfo",
    "CertificateProblem",
    "certificate_der",
    "check_certificate",
    "load_certificate",
]

NOT_SPECIFIED: Final = "Not specified"

# Short names in names: cryptography's RFC 4514 ones, plus those eID and commercial signing
# certificates carry, which it would print as dotted OIDs. serialNumber is written the way the
# portal shows it.
_ATTRIBUTE_NAMES: Final[dict[ObjectIdentifier, str]] = {
    NameOID.COMMON_NAME: "CN",
    NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COUNTRY_NAME: "C",
    NameOID.STREET_ADDRESS: "STREET",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.USER_ID: "UID",
    NameOID.SERIAL_NUMBER: "SERIALNUMBER",
    NameOID.SURNAME: "SN",
    NameOID.GIVEN_NAME: "GN",
    NameOID.TITLE: "title",
    NameOID.INITIALS: "initials",
    NameOID.GENERATION_QUALIFIER: "generationQualifier",
    NameOID.DN_QUALIFIER: "dnQualifier",
    NameOID.PSEUDONYM: "pseudonym",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
    NameOID.BUSINESS_CATEGORY: "businessCategory",
    NameOID.POSTAL_CODE: "postalCode",
    NameOID.JURISDICTION_COUNTRY_NAME: "jurisdictionC",
    NameOID.JURISDICTION_STATE_OR_PROVINCE_NAME: "jurisdictionST",
    NameOID.JURISDICTION_LOCALITY_NAME: "jurisdictionL",
}

_PEM_LABEL = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----")
_CERTIFICATE_LABELS: Final = (b"CERTIFICATE", b"X509 CERTIFICATE")
# Private keys that do not use PEM armour: PuTTY, ssh.com, and an OpenSSH key whose armour lines
# were lost (its body starts with the base64 of "openssh-key-v1").
_TEXT_PRIVATE_KEY_MARKERS: Final = (
    b"PuTTY-User-Key-File-",
    b"BEGIN SSH2 ENCRYPTED PRIVATE KEY",
    b"b3BlbnNzaC1rZXktdjE",
)
# The OID of PKCS#7 "data" right after the version of a PFX: how a .p12/.pfx file starts.
_PKCS12_DATA_OID: Final = bytes.fromhex("06092a864886f70d010701")

# Everything cryptography raises on a structure it cannot decode, some of it only when a field
# is first accessed rather than at load time.
_DECODE_ERRORS: Final = (
    ValueError,
    TypeError,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


class CertificateProblem(CodedProblem):
    """A certificate file that cannot be used; its content is never quoted."""


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """The figures of a certificate, as the confirmation page shows them."""

    owner: str
    company: str
    issuer: str
    subject: str
    not_before: datetime
    not_after: datetime
    serial_decimal: str
    serial_hex: str
    sha256_fingerprint: str
    is_ca: bool
    key_usage_signature: bool


@dataclass(frozen=True, slots=True)
class CertificateFinding:
    """One judgement on a certificate; an error blocks the declaration, a warning does not."""

    severity: Literal["error", "warning"]
    code: str
    message: str


def load_certificate(data: bytes) -> CertificateInfo:
    """Read a DER certificate or the first certificate of a PEM file.

    Raises :class:`CertificateProblem`: ``certificate-private-key`` when the file holds a private
    key (even next to a certificate), ``certificate-unreadable`` for anything else that is not a
    certificate (empty file, CSR, SSH key, damaged data…). Messages never quote the file.
    """
    der = _certificate_der(bytes(data))
    try:
        certificate = x509.load_der_x509_certificate(der)
        return _describe(certificate, der)
    except _DECODE_ERRORS:
        if not _is_pem(data):
            _diagnose_der(der)
        _unreadable("the certificate is damaged or not valid X.509")


def certificate_der(data: bytes) -> bytes:
    """The DER bytes of the certificate `load_certificate` reads from the same file."""
    return _certificate_der(bytes(data))


def check_certificate(
    info: CertificateInfo, now: datetime, warn_days: int = 60
) -> list[CertificateFinding]:
    """Judge whether the certificate can sign the channel's files at ``now`` (timezone-aware).

    Errors: ``certificate-expired``, ``certificate-not-yet-valid``, ``certificate-ca``,
    ``certificate-key-usage``. Warning: ``certificate-expiring`` within ``warn_days`` days.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if warn_days < 0:
        raise ValueError("warn_days must not be negative")
    findings: list[CertificateFinding] = []
    # Days are counted between UTC calendar dates so that "in N days" agrees with the date shown.
    days_left = (_utc_date(info.not_after) - _utc_date(now)).days
    expiry = _utc_date(info.not_after).isoformat()

    if now > info.not_after:
        findings.append(
            CertificateFinding(
                "error",
                "certificate-expired",
                f"the certificate expired on {expiry}: files signed with it are refused — "
                "declare the renewed certificate",
            )
        )
    elif now < info.not_before:
        findings.append(
            CertificateFinding(
                "error",
                "certificate-not-yet-valid",
                f"the certificate is valid only from {_utc_date(info.not_before).isoformat()}: "
                "files signed with it before then are refused",
            )
        )
    if info.is_ca:
        findings.append(
            CertificateFinding(
                "error",
                "certificate-ca",
                "this is a CA certificate: declare the signing (end-entity) certificate of the "
                "person or application that signs the files, not the certificate of its issuer",
            )
        )
    if not info.key_usage_signature:
        findings.append(
            CertificateFinding(
                "error",
                "certificate-key-usage",
                "this certificate may not be used for signatures (its key usage has neither "
                "digitalSignature nor nonRepudiation): declare the signing certificate — on an "
                "eID, the 'Signature' certificate, not the 'Authentication' one",
            )
        )
    if now <= info.not_after and days_left <= warn_days:
        when = (
            "today"
            if days_left == 0
            else ("in 1 day" if days_left == 1 else f"in {days_left} days")
        )
        findings.append(
            CertificateFinding(
                "warning",
                "certificate-expiring",
                f"the certificate expires on {expiry}, {when}: renew it and declare the new "
                "certificate before then, or files will be refused",
            )
        )
    return findings


def _utc_date(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def _is_pem(data: bytes) -> bool:
    return b"-----BEGIN" in data


def _certificate_der(data: bytes) -> bytes:
    """The DER bytes of the certificate to read, or a problem explaining what the file is."""
    if not data or data.isspace():
        _unreadable("the file is empty")
    if any(marker in data for marker in _TEXT_PRIVATE_KEY_MARKERS):
        _private_key()
    if not _is_pem(data):
        if data[0] == 0x30:
            return data
        _diagnose_text(data)

    labels = [m.group(1) for m in _PEM_LABEL.finditer(data)]
    # A private key anywhere in the file is refused even when a certificate comes first: the file
    # is about to be committed and must not carry the key.
    if any(b"PRIVATE KEY" in label for label in labels):
        _private_key()
    for match in _PEM_LABEL.finditer(data):
        if match.group(1) in _CERTIFICATE_LABELS:
            return _pem_body(data, match)
    if any(b"CERTIFICATE REQUEST" in label for label in labels):
        _unreadable(
            "this is a certificate signing request (CSR), not a certificate; declare the "
            "certificate the certification authority issued"
        )
    if any(b"PKCS7" in label for label in labels):
        _unreadable("this is a PKCS#7 bundle; export the signing certificate alone as a .cer file")
    if any(b"PUBLIC KEY" in label for label in labels):
        _unreadable("this is a bare public key, not a certificate")
    _unreadable("the PEM file holds no certificate")


def _pem_body(data: bytes, begin: re.Match[bytes]) -> bytes:
    end_marker = b"-----END " + begin.group(1) + b"-----"
    end = data.find(end_marker, begin.end())
    if end < 0:
        _unreadable("the PEM certificate has no END line; the file is truncated")
    try:
        return binascii.a2b_base64(data[begin.end() : end])
    except binascii.Error:
        _unreadable("the PEM certificate's base64 text is damaged")


def _describe(certificate: x509.Certificate, der: bytes) -> CertificateInfo:
    try:
        issuer, subject, owner, company = _names_from_der(der)
    except (_UnusualName, IndexError):
        issuer, subject, owner, company = _names_from_objects(certificate)
    serial = certificate.serial_number
    is_ca = False
    key_usage_signature = True
    for extension in certificate.extensions:
        value = extension.value
        if isinstance(value, x509.BasicConstraints):
            is_ca = value.ca
        elif isinstance(value, x509.KeyUsage):
            key_usage_signature = value.digital_signature or value.content_commitment
    return CertificateInfo(
        owner=owner,
        company=company,
        issuer=issuer,
        subject=subject,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        serial_decimal=str(serial),
        serial_hex=_serial_hex(serial),
        sha256_fingerprint=hashlib.sha256(der).digest().hex(":").upper(),
        is_ca=is_ca,
        key_usage_signature=key_usage_signature,
    )


def _names_from_objects(certificate: x509.Certificate) -> tuple[str, str, str, str]:
    """(issuer, subject, owner, company) through cryptography's Name objects.

    Exact for every name cryptography can read, but building those objects is most of the cost
    of reading a certificate; :func:`_names_from_der` gives the same strings for common names.
    """
    subject = certificate.subject
    subject_text = _format_name(subject)
    common_names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    organisations = subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return (
        _format_name(certificate.issuer),
        subject_text,
        _text(common_names[0].value) if common_names else subject_text,
        _text(organisations[0].value) if organisations else NOT_SPECIFIED,
    )


# Between RDNs, the portal writes ", " (`SERIALNUMBER=200803, CN=Citizen CA, C=BE`).
NAME_SEPARATOR: Final = ", "


def _format_name(name: x509.Name) -> str:
    # RFC 4514 order: the last RDN of the DER first. A Belgian eID CA stores C=BE first, and
    # the portal shows it last.
    return NAME_SEPARATOR.join(rdn.rfc4514_string(_ATTRIBUTE_NAMES) for rdn in reversed(name.rdns))


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.hex()


class _UnusualName(Exception):
    """A name the DER fast path leaves to cryptography (unknown attribute, odd string type…)."""


def _oid_der(oid: ObjectIdentifier) -> bytes:
    """The DER content octets of an OID, to match attribute types without decoding them."""
    arcs = [int(arc) for arc in oid.dotted_string.split(".")]
    encoded = bytearray()
    for number in (arcs[0] * 40 + arcs[1], *arcs[2:]):
        group = [number & 0x7F]
        number >>= 7
        while number:
            group.append(0x80 | (number & 0x7F))
            number >>= 7
        encoded.extend(reversed(group))
    return bytes(encoded)


_OID_NAMES: Final = {_oid_der(oid): name for oid, name in _ATTRIBUTE_NAMES.items()}
_COMMON_NAME_DER: Final = _oid_der(NameOID.COMMON_NAME)
_ORGANIZATION_DER: Final = _oid_der(NameOID.ORGANIZATION_NAME)
# The string types cryptography decodes itself, with the codec it uses for each: every tag but
# BMPString and UniversalString is read as UTF-8.
_STRING_CODECS: Final = {
    0x0C: "utf-8",  # UTF8String
    0x12: "utf-8",  # NumericString
    0x13: "utf-8",  # PrintableString
    0x14: "utf-8",  # T61String
    0x16: "utf-8",  # IA5String
    0x1A: "utf-8",  # VisibleString
    0x1C: "utf-32-be",  # UniversalString
    0x1E: "utf-16-be",  # BMPString
}
_NEEDS_ESCAPE = re.compile(r'[\\"+,;<>\x00]|^[# ]| $')


def _element(der: bytes, position: int, limit: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``position``."""
    if position + 2 > limit:
        raise _UnusualName
    tag = der[position]
    length = der[position + 1]
    position += 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 3 or position + count > limit:
            raise _UnusualName
        length = int.from_bytes(der[position : position + count], "big")
        position += count
    end = position + length
    if end > limit:
        raise _UnusualName
    return tag, position, end


def _names_from_der(der: bytes) -> tuple[str, str, str, str]:
    """(issuer, subject, owner, company) read straight from the DER TBSCertificate.

    Only called on bytes cryptography has already parsed as a certificate, so the structure is
    known to be sound; anything outside the common case raises :class:`_UnusualName`.
    """
    _, start, end = _element(der, 0, len(der))
    _, position, tbs_end = _element(der, start, end)
    tag, _, after = _element(der, position, tbs_end)
    if tag == 0xA0:  # explicit version; the serial follows
        _, _, after = _element(der, after, tbs_end)
    _, _, after = _element(der, after, tbs_end)  # signature algorithm
    tag, issuer_start, issuer_end = _element(der, after, tbs_end)
    _, _, after = _element(der, issuer_end, tbs_end)  # validity
    subject_tag, subject_start, subject_end = _element(der, after, tbs_end)
    if tag != 0x30 or subject_tag != 0x30:
        raise _UnusualName
    issuer, _, _ = _read_name(der, issuer_start, issuer_end)
    subject, owner, company = _read_name(der, subject_start, subject_end)
    return (
        issuer,
        subject,
        subject if owner is None else owner,
        NOT_SPECIFIED if company is None else company,
    )


def _read_name(der: bytes, position: int, end: int) -> tuple[str, str | None, str | None]:
    """(formatted name as `_format_name` writes it, first CN, first O) of a Name's content
    octets (CN and O first in the DER order, as cryptography's get_attributes_for_oid finds).

    In a usual name every element is shorter than 128 bytes, so every header is two bytes; they
    are read inline, which halves the cost of reading a certificate. Longer ones take the slow
    path. An IndexError can only come from lengths that lie, and also means "slow path".
    """
    rdns: list[str] = []
    common_name: str | None = None
    organization: str | None = None
    while position < end:
        set_end = position + 2 + der[position + 1]
        inner = position + 2
        if der[position] != 0x31 or der[position + 1] & 0x80 or inner == set_end or set_end > end:
            raise _UnusualName
        attributes: list[str] = []
        while inner < set_end:
            pair_length = der[inner + 1]
            oid_end = inner + 4 + der[inner + 3]
            pair_end = inner + 2 + pair_length
            if (
                der[inner] != 0x30
                or der[inner + 2] != 0x06
                or (pair_length | der[inner + 3] | der[oid_end + 1]) & 0x80
                or oid_end + 2 + der[oid_end + 1] != pair_end
                or pair_end > set_end
            ):
                raise _UnusualName
            oid = der[inner + 4 : oid_end]
            label = _OID_NAMES.get(oid)
            codec = _STRING_CODECS.get(der[oid_end])
            if label is None or codec is None:
                raise _UnusualName
            value = der[oid_end + 2 : pair_end].decode(codec)
            if common_name is None and oid == _COMMON_NAME_DER:
                common_name = value
            elif organization is None and oid == _ORGANIZATION_DER:
                organization = value
            attributes.append(f"{label}={_escape(value)}")
            inner = pair_end
        rdns.append("+".join(attributes))
        position = set_end
    return NAME_SEPARATOR.join(reversed(rdns)), common_name, organization


def _escape(value: str) -> str:
    """RFC 4514 escaping, character for character as cryptography's rfc4514_string does it."""
    if not value or _NEEDS_ESCAPE.search(value) is None:
        return value
    for special in ("\\", '"', "+", ",", ";", "<", ">"):
        value = value.replace(special, "\\" + special)
    value = value.replace("\x00", "\\00")
    if value[0] == "#" or (value[0] == " " and len(value) > 1):
        value = "\\" + value
    if value[-1] == " ":
        value = value[:-1] + "\\ "
    return value


def _serial_hex(serial: int) -> str:
    """Minimal big-endian bytes of the serial, e.g. ``10 00 … 5c 29``.

    DER prefixes a 0x00 byte when the first byte has its high bit set; people compare the
    number, not its encoding, so that byte is left out.
    """
    magnitude = abs(serial)
    raw = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "big").hex(" ")
    # RFC 5280 forbids negative serials, but some old CAs issued them; show the sign rather
    # than a two's-complement encoding nobody would recognise.
    return f"-{raw}" if serial < 0 else raw


def _diagnose_der(der: bytes) -> None:
    """Explain a binary file that is not a certificate, when we can tell what it is."""
    head = der[:32]
    if _PKCS12_DATA_OID in head and b"\x02\x01\x03" in head:
        _private_key()
    try:
        serialization.load_der_private_key(der, password=None)
    except TypeError:
        _private_key()  # an encrypted private key: it wants a password
    except Exception:  # noqa: S110 - anything else simply means "not a private key"
        pass
    else:
        _private_key()
    try:
        x509.load_der_x509_csr(der)
    except Exception:  # noqa: S110 - not a CSR either; the caller reports it as unreadable
        pass
    else:
        _unreadable(
            "this is a certificate signing request (CSR), not a certificate; declare the "
            "certificate the certification authority issued"
        )


def _diagnose_text(data: bytes) -> NoReturn:
    text = data.lstrip()
    if text.startswith((b"ssh-", b"ecdsa-", b"sk-")):
        _unreadable("this is an SSH public key; declare it among the SSH keys")
    if text.startswith(b"MII"):
        _unreadable(
            "the base64 text lacks its '-----BEGIN CERTIFICATE-----' and "
            "'-----END CERTIFICATE-----' lines"
        )
    _unreadable("it is neither a DER nor a PEM certificate")


def _unreadable(reason: str) -> NoReturn:
    raise CertificateProblem(
        "certificate-unreadable",
        f"the certificate file cannot be used: {reason}; declare the public certificate (.cer, "
        "DER or PEM) that signs the files",
    )


def _private_key() -> NoReturn:
    raise CertificateProblem(
        "certificate-private-key",
        "this file contains a private key: never put it in the repository (if it was committed, "
        "consider the key compromised and have the certificate revoked); declare only the "
        "public certificate (.cer)",
    )
