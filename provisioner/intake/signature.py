"""The check of an FS file: a detached CMS/PKCS#7 signature of its FI file.

``verify_detached`` answers one question: did the holder of one of the channel's registered
certificates sign exactly these bytes, with a certificate valid at the time of upload? It never
raises on what a sender uploads; every refusal is a verdict with a sentence that quotes nothing
of the upload.

What is checked, in order: the encoding (DER, PEM, or the base64 body without its armour, CRLF
or LF), a ContentInfo of type SignedData whose encapsulated content is ``data`` and absent
(detached), exactly one SignerInfo, a digest algorithm of the SHA-2 family, the signer matched
to a *registered* certificate by issuer and serial number or by subject key identifier, the
signed attributes when present (exactly one contentType that says ``data``, exactly one
messageDigest equal to the digest of the content), the signature itself with that
certificate's public key (RSA PKCS#1 v1.5 and PSS, ECDSA, Ed25519), and the certificate's
validity period around ``at``.

What is not checked: a chain to a certification authority, revocation (CRL/OCSP). The
registered certificate is the trust anchor: the declaration that registered it went through
review, so a certificate inside the signature is never trusted, only the registered ones are
(a bundle that names itself the signer changes nothing). The signingTime attribute is the
signer's own claim and is ignored; the gate passes the time of upload.

Parsing is asn1crypto's (the CMS definitions pyHanko, endesive and certvalidator build on);
the arithmetic is cryptography's, which cannot verify PKCS#7 itself (its public pkcs7 module
signs, encrypts and decrypts only).
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache, partial
from typing import Any, Final

from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

__all__ = ["MAX_SIGNATURE_BYTES", "SignatureVerdict", "verify_detached"]

# A detached signature with a certificate chain inside is a few kilobytes; anything much larger
# is refused before it is decoded.
MAX_SIGNATURE_BYTES: Final = 256 * 1024

_HASHES: Final[dict[str, Callable[[], hashes.HashAlgorithm]]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 #]{1,40})-----(.*?)-----END \1-----", re.DOTALL)
_PEM_LABELS: Final = (b"PKCS7", b"CMS", b"PKCS #7 SIGNED DATA")
_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=\s]+")


@dataclass(frozen=True, slots=True)
class SignatureVerdict:
    """``ok``: the signature holds. ``fingerprint``: lower-case hex SHA-256 of the DER of the
    registered certificate whose key verified it (also when ``ok`` is false because that
    certificate was not valid at the time of upload; else None). ``reason``: one sentence."""

    ok: bool
    fingerprint: str | None
    reason: str


class _Refused(Exception):
    def __init__(self, reason: str, fingerprint: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fingerprint = fingerprint


def verify_detached(
    signature: bytes,
    content: bytes,
    certificates: Sequence[x509.Certificate],
    at: datetime,
) -> SignatureVerdict:
    """Whether ``signature`` is a valid detached signature of ``content`` by one of
    ``certificates``, valid at ``at`` (timezone-aware: the time of upload)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("at must be timezone-aware")
    try:
        fingerprint = _verify(bytes(signature), content, certificates, at)
    except _Refused as refused:
        return SignatureVerdict(False, refused.fingerprint, refused.reason)
    except (RecursionError, MemoryError):
        return SignatureVerdict(False, None, "the signature's structure is nested too deeply")
    return SignatureVerdict(True, fingerprint, "the signature is valid")


def _verify(
    signature: bytes, content: bytes, certificates: Sequence[x509.Certificate], at: datetime
) -> str:
    signer_info, detached_type = _signer_info(_der(signature))
    digest_name = _field(lambda: signer_info["digest_algorithm"]["algorithm"].native)
    if digest_name not in _HASHES:
        raise _Refused(
            f"the signature uses the digest algorithm {_safe_name(digest_name)}; "
            "SHA-256 (or SHA-384, SHA-512) is required"
        )
    digest = hashlib.new(digest_name, content).digest()
    signed = _signed_bytes(signer_info, detached_type, digest)
    if signed is None:
        signed = content
    candidates = _matching(signer_info, certificates)
    if not candidates:
        raise _Refused("the signer is not one of the certificates registered for this channel")
    algorithm = _field(lambda: signer_info["signature_algorithm"])
    value = _field(lambda: bytes(signer_info["signature"].native))
    verified = [c for c in candidates if _signature_holds(c, algorithm, value, signed, digest_name)]
    if not verified:
        raise _Refused(
            "the signature does not match the file: the file was changed after it was signed, "
            "or it was signed with another key"
        )
    for certificate in verified:
        if certificate.not_valid_before_utc <= at <= certificate.not_valid_after_utc:
            return _fingerprint(certificate)
    first = verified[0]
    if at < first.not_valid_before_utc:
        raise _Refused(
            "the signing certificate is valid only from "
            f"{first.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC, after the upload",
            _fingerprint(first),
        )
    raise _Refused(
        f"the signing certificate expired on {first.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC, "
        "before the upload",
        _fingerprint(first),
    )


def _der(signature: bytes) -> bytes:
    if not signature or signature.isspace():
        raise _Refused("the signature file is empty")
    if len(signature) > MAX_SIGNATURE_BYTES:
        raise _Refused(f"the signature file is larger than {MAX_SIGNATURE_BYTES} bytes")
    # DER first, before any stripping: its last byte is part of the signature value and may
    # well be 0x0a or 0x20 (about one signature in sixty), which strip() would cut off.
    if signature[0] == 0x30:
        return signature
    data = signature.strip()
    if b"-----BEGIN" in data:
        for match in _PEM.finditer(data):
            if match.group(1) in _PEM_LABELS:
                return _base64(match.group(2))
        raise _Refused("the PEM file holds no PKCS#7 or CMS signature")
    return _base64(data)


def _base64(text: bytes) -> bytes:
    if _BASE64_TEXT.fullmatch(text) is None:
        raise _Refused("the signature is neither DER, PEM nor base64")
    try:
        return binascii.a2b_base64(b"".join(text.split()), strict_mode=True)
    except binascii.Error:
        raise _Refused("the signature's base64 text is damaged") from None


def _field(read: Callable[[], Any]) -> Any:
    """A value of the parsed structure; asn1crypto decodes lazily, so a damaged field only
    shows when it is read, as any of several exceptions."""
    try:
        return read()
    except _Refused:
        raise
    except (RecursionError, MemoryError):
        raise
    except Exception:
        raise _Refused("the signature is damaged or not a CMS/PKCS#7 structure") from None


def _signer_info(der: bytes) -> tuple[Any, str]:
    info = _field(lambda: asn1_cms.ContentInfo.load(der, strict=True))
    if _field(lambda: info["content_type"].native) != "signed_data":
        raise _Refused("the file is a CMS structure but not a signature (SignedData)")
    signed_data = _field(lambda: info["content"])
    encap = _field(lambda: signed_data["encap_content_info"])
    content_type = _field(lambda: encap["content_type"].native)
    if content_type != "data":
        raise _Refused("the signature does not sign plain data (its content type is not 'data')")
    if _field(lambda: not isinstance(encap["content"], asn1_core.Void)):
        raise _Refused(
            "the signature holds the signed content itself; a detached signature is expected"
        )
    signers = _field(lambda: list(signed_data["signer_infos"]))
    if not signers:
        raise _Refused("the signature has no signer")
    if len(signers) > 1:
        raise _Refused(f"the signature has {len(signers)} signers; exactly one is expected")
    return signers[0], content_type


def _signed_bytes(signer_info: Any, content_type: str, digest: bytes) -> bytes | None:
    """The DER of the signed attributes as they were signed (a SET OF, RFC 5652 5.4), after
    checking them; None when there are none and the signature covers the content itself."""
    attributes = _field(lambda: signer_info["signed_attrs"])
    if isinstance(attributes, asn1_core.Void):
        return None
    found: dict[str, list[Any]] = {}
    for attribute in _field(lambda: list(attributes)):
        name, values = _field(partial(_attribute, attribute))
        found.setdefault(name, []).extend(values)
    digests = found.get("message_digest", [])
    types = found.get("content_type", [])
    if len(digests) != 1 or len(types) != 1:
        raise _Refused(
            "the signed attributes must hold exactly one messageDigest and one contentType"
        )
    if _field(lambda: types[0].native) != content_type:
        raise _Refused("the signed contentType attribute does not say 'data'")
    if _field(lambda: bytes(digests[0].native)) != digest:
        raise _Refused(
            "the signature does not match the file: the file was changed after it was signed"
        )
    encoded: bytes = _field(lambda: attributes.dump())
    return b"\x31" + encoded[1:]


_CHECKED_ATTRIBUTES: Final = frozenset({"message_digest", "content_type"})


def _attribute(attribute: Any) -> tuple[str, list[Any]]:
    # Only the two attributes checked are decoded (signingTime, S/MIME capabilities… are not
    # needed); each is a SET OF values, and a second value is as suspect as a second attribute.
    name = str(attribute["type"].native)
    return name, list(attribute["values"]) if name in _CHECKED_ATTRIBUTES else []


def _matching(signer_info: Any, certificates: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    sid = _field(lambda: signer_info["sid"])
    kind = _field(lambda: sid.name)
    if kind == "issuer_and_serial_number":
        issuer = _field(lambda: sid.chosen["issuer"])
        serial = _field(lambda: sid.chosen["serial_number"].native)
        _field(lambda: issuer.native)  # decode now: a damaged name is a damaged signature
        return [c for c in certificates if c.serial_number == serial and _same_issuer(c, issuer)]
    if kind == "subject_key_identifier":
        key_id = _field(lambda: bytes(sid.chosen.native))
        return [c for c in certificates if key_id in _key_identifiers(c)]
    raise _Refused("the signature does not identify its signer")


def _signature_holds(
    certificate: x509.Certificate, algorithm: Any, value: bytes, signed: bytes, digest_name: str
) -> bool:
    name = _field(lambda: algorithm.signature_algo)
    try:
        hash_name = algorithm.hash_algo
    except (ValueError, KeyError):
        hash_name = digest_name  # rsaEncryption or plain ecdsa: the digest algorithm decides
    if hash_name != digest_name and name != "rsassa_pss":
        raise _Refused("the signature's algorithms disagree on the digest")
    key = certificate.public_key()
    try:
        if name == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPublicKey):
            key.verify(value, signed, padding.PKCS1v15(), _HASHES[digest_name]())
        elif name == "rsassa_pss" and isinstance(key, rsa.RSAPublicKey):
            key.verify(value, signed, _pss(algorithm), _hash(hash_name))
        elif name == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(value, signed, ec.ECDSA(_HASHES[digest_name]()))
        elif name == "ed25519" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(value, signed)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _pss(algorithm: Any) -> padding.PSS:
    params = _field(lambda: algorithm["parameters"])
    mgf = _field(lambda: params["mask_gen_algorithm"])
    if _field(lambda: mgf["algorithm"].native) != "mgf1":
        raise _Refused("the RSA-PSS signature uses a mask generation other than MGF1")
    mgf_hash = _field(lambda: mgf["parameters"]["algorithm"].native)
    salt = _field(lambda: params["salt_length"].native)
    if _field(lambda: params["trailer_field"].native) != "trailer_field_bc" or not (
        isinstance(salt, int) and 0 <= salt <= 1024
    ):
        raise _Refused("the RSA-PSS signature's parameters are not valid")
    return padding.PSS(mgf=padding.MGF1(_hash(mgf_hash)), salt_length=salt)


def _hash(name: object) -> hashes.HashAlgorithm:
    if not isinstance(name, str) or name not in _HASHES:
        raise _Refused(
            f"the signature uses the digest algorithm {_safe_name(name)}; "
            "SHA-256 (or SHA-384, SHA-512) is required"
        )
    return _HASHES[name]()


def _safe_name(name: object) -> str:
    # asn1crypto names known algorithms and leaves others as dotted OIDs: neither can carry
    # arbitrary text, but the length is bounded all the same.
    text = str(name)
    return text if re.fullmatch(r"[a-z0-9_.]{1,64}", text) else "(unknown)"


def _certificate_der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def _fingerprint(certificate: x509.Certificate) -> str:
    return hashlib.sha256(_certificate_der(certificate)).hexdigest()


@lru_cache(maxsize=4096)
def _parsed(der: bytes) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(der)


def _same_issuer(certificate: x509.Certificate, issuer: asn1_x509.Name) -> bool:
    # The same bytes are the same name; otherwise asn1crypto compares names as RFC 5280 says
    # (case and spaces folded).
    try:
        if certificate.issuer.public_bytes() == issuer.dump():
            return True
        return bool(_parsed(_certificate_der(certificate)).issuer == issuer)
    except (RecursionError, MemoryError):
        raise
    except Exception:
        return False


def _key_identifiers(certificate: x509.Certificate) -> set[bytes]:
    """The certificate's subject key identifier, and the RFC 5280 one computed from its key
    (what a signer writes when the certificate carries none)."""
    ids: set[bytes] = set()
    try:
        ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        ids.add(ski.value.digest)
    except (x509.ExtensionNotFound, ValueError):
        pass
    with contextlib.suppress(ValueError, TypeError, UnsupportedAlgorithm):
        ids.add(x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest)
    return ids
