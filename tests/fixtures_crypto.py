"""Real keys and certificates for tests, made with cryptography at run time.

Nothing here is a mock: every key is generated, every certificate is signed. Hand-made SSH wire
blobs (:func:`wire_line`) exist only for shapes no generator produces (a 2047-bit modulus, a
point off the curve…); they are built from the same wire encoding OpenSSH uses.

RSA and DSA generation is slow, so those private keys are cached per size for the session.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import NameOID

SshPrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
CertificateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

UTC = dt.UTC
NOT_BEFORE = dt.datetime(2026, 1, 1, tzinfo=UTC)
NOT_AFTER = dt.datetime(2030, 12, 31, tzinfo=UTC)


# --- SSH wire format -----------------------------------------------------------------------


def ssh_string(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return len(raw).to_bytes(4, "big") + raw


def ssh_mpint(value: int) -> bytes:
    """RFC 4251 mpint of a non-negative integer (a 0x00 byte when the high bit is set)."""
    if value == 0:
        return ssh_string(b"")
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big")
    return ssh_string(raw)


def wire_line(
    key_type: str, *fields: bytes, comment: str = "", blob_type: str | None = None
) -> str:
    """An OpenSSH line whose blob is ``string(blob_type or key_type) || fields``."""
    blob = ssh_string(blob_type if blob_type is not None else key_type) + b"".join(fields)
    line = f"{key_type} {base64.b64encode(blob).decode()}"
    return f"{line} {comment}" if comment else line


def blob_of(line: str) -> bytes:
    return base64.b64decode(line.split()[1])


# --- SSH keys ------------------------------------------------------------------------------


@functools.cache
def rsa_private_key(bits: int, index: int = 0) -> rsa.RSAPrivateKey:
    """A cached RSA key; ``index`` gives distinct keys of the same size."""
    del index  # only part of the cache key
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def dsa_private_key() -> dsa.DSAPrivateKey:
    return dsa.generate_private_key(key_size=1024)


def ssh_public_line(key: SshPrivateKey | dsa.DSAPrivateKey, comment: str = "") -> str:
    if isinstance(key, dsa.DSAPrivateKey):
        # Built from the key's numbers: cryptography's own ssh-dss output is deprecated.
        numbers = key.public_key().public_numbers()
        parameters = numbers.parameter_numbers
        return wire_line(
            "ssh-dss",
            *(ssh_mpint(n) for n in (parameters.p, parameters.q, parameters.g, numbers.y)),
            comment=comment,
        )
    line = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return f"{line} {comment}" if comment else line


def ed25519_line(comment: str = "test@example") -> str:
    return ssh_public_line(ed25519.Ed25519PrivateKey.generate(), comment)


def ecdsa_line(curve: ec.EllipticCurve, comment: str = "test@example") -> str:
    return ssh_public_line(ec.generate_private_key(curve), comment)


def rsa_line(bits: int, comment: str = "test@example") -> str:
    return ssh_public_line(rsa_private_key(bits), comment)


def dsa_line(comment: str = "old@example") -> str:
    return ssh_public_line(dsa_private_key(), comment)


def sk_ed25519_line(application: bytes = b"ssh:", comment: str = "token@example") -> str:
    """A FIDO Ed25519 public key: the public half of a real Ed25519 key plus an application."""
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return wire_line(
        "sk-ssh-ed25519@openssh.com", ssh_string(raw), ssh_string(application), comment=comment
    )


def sk_ecdsa_line(application: bytes = b"ssh:", comment: str = "token@example") -> str:
    point = ec_point(ec.generate_private_key(ec.SECP256R1()))
    return wire_line(
        "sk-ecdsa-sha2-nistp256@openssh.com",
        ssh_string("nistp256"),
        ssh_string(point),
        ssh_string(application),
        comment=comment,
    )


def ec_point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def private_key_texts() -> dict[str, str]:
    """Private keys in every text form an administrator might paste by mistake."""
    ed = ed25519.Ed25519PrivateKey.generate()
    ecc = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa_private_key(1024, index=1)
    none = serialization.NoEncryption()
    pkcs8 = serialization.PrivateFormat.PKCS8
    traditional = serialization.PrivateFormat.TraditionalOpenSSL
    openssh = serialization.PrivateFormat.OpenSSH
    pem = serialization.Encoding.PEM
    password = serialization.BestAvailableEncryption(b"correct horse")
    texts = {
        "openssh-ed25519": ed.private_bytes(pem, openssh, none).decode(),
        "openssh-rsa": rsa_key.private_bytes(pem, openssh, none).decode(),
        "openssh-encrypted": ed.private_bytes(pem, openssh, password).decode(),
        "pkcs1-rsa": rsa_key.private_bytes(pem, traditional, none).decode(),
        "sec1-ec": ecc.private_bytes(pem, traditional, none).decode(),
        "pkcs8": ed.private_bytes(pem, pkcs8, none).decode(),
        "pkcs8-encrypted": ecc.private_bytes(pem, pkcs8, password).decode(),
        "dsa": dsa_private_key().private_bytes(pem, traditional, none).decode(),
        "putty": putty_private_key_text(ed),
        "ssh2-encrypted": ssh2_private_key_text(ed),
    }
    openssh_text = texts["openssh-ed25519"]
    body = "".join(openssh_text.splitlines()[1:-1])
    # Pasted without its armour lines, joined on one line, and armour lost in a YAML fold.
    texts["openssh-body-only"] = body
    texts["openssh-one-line"] = " ".join(openssh_text.split())
    texts["openssh-first-line"] = openssh_text.splitlines()[1]
    return texts


def putty_private_key_text(key: ed25519.Ed25519PrivateKey) -> str:
    """A PuTTY .ppk (v3, unencrypted) holding ``key``: the layout PuTTYgen writes."""
    public = base64.b64encode(blob_of(ssh_public_line(key))).decode()
    secret = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    private = base64.b64encode(ssh_string(secret)).decode()
    return (
        "PuTTY-User-Key-File-3: ssh-ed25519\n"
        "Encryption: none\n"
        "Comment: eddsa-key-20260101\n"
        f"Public-Lines: 1\n{public}\n"
        f"Private-Lines: 1\n{private}\n"
        "Private-MAC: 0f4a9e5b6c7d8e9f00112233445566778899aabbccddeeff0011223344556677\n"
    )


def ssh2_private_key_text(key: ed25519.Ed25519PrivateKey) -> str:
    """The ssh.com / Tectia private key armour around real key bytes."""
    secret = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    body = base64.b64encode(secret * 3).decode()
    armour = "---- {} SSH2 ENCRYPTED PRIVATE KEY ----\n"
    return armour.format("BEGIN") + body + "\n" + armour.format("END")


def secret_fragments(text: str, width: int = 16) -> list[str]:
    """Slices of a private key's base64 body: none may ever appear in a message."""
    fragments: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("-", "PuTTY", "Encryption", "Comment", "Public", "Private")):
            continue
        fragments.extend(stripped[i : i + width] for i in range(0, len(stripped) - width + 1, 4))
    if not fragments and len(text) >= width:
        fragments = [text[i : i + width] for i in range(0, len(text) - width + 1, 4)]
    return [f for f in fragments if len(f.strip()) == width]


# --- X.509 certificates --------------------------------------------------------------------


def x509_name(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


def x509_name_rdns(rdns: Iterable[Sequence[tuple[x509.ObjectIdentifier, str]]]) -> x509.Name:
    """A name with multi-valued RDNs, e.g. ``[[(CN, a), (UID, b)], [(C, BE)]]``."""
    return x509.Name(
        [
            x509.RelativeDistinguishedName(x509.NameAttribute(oid, value) for oid, value in rdn)
            for rdn in rdns
        ]
    )


# In the DER order of the real Belgian Citizen CA: C first (the portal shows it last).
CITIZEN_CA = x509_name(
    (NameOID.COUNTRY_NAME, "BE"),
    (NameOID.COMMON_NAME, "Citizen CA"),
    (NameOID.SERIAL_NUMBER, "200803"),
)
SIGNATURE_SUBJECT = x509_name(
    (NameOID.COUNTRY_NAME, "BE"),
    (NameOID.COMMON_NAME, "Jan Peeters (Signature)"),
    (NameOID.SURNAME, "Peeters"),
    (NameOID.GIVEN_NAME, "Jan"),
    (NameOID.SERIAL_NUMBER, "85073003328"),
)


@functools.cache
def issuer_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@functools.cache
def subject_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


_SIGNATURE_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=True,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def key_usage(**flags: bool) -> x509.KeyUsage:
    """A KeyUsage with only the given flags set, e.g. ``key_usage(key_cert_sign=True)``."""
    values = {
        "digital_signature": False,
        "content_commitment": False,
        "key_encipherment": False,
        "data_encipherment": False,
        "key_agreement": False,
        "key_cert_sign": False,
        "crl_sign": False,
        "encipher_only": False,
        "decipher_only": False,
    }
    values.update(flags)
    return x509.KeyUsage(**values)


def make_certificate(
    *,
    subject: x509.Name = SIGNATURE_SUBJECT,
    issuer: x509.Name = CITIZEN_CA,
    serial: int = 0x1000000000000B7A21DF5C29,
    not_before: dt.datetime = NOT_BEFORE,
    not_after: dt.datetime = NOT_AFTER,
    ca: bool | None = None,
    usage: x509.KeyUsage | None = _SIGNATURE_USAGE,
    key: CertificateKey | None = None,
    signer: CertificateKey | None = None,
) -> x509.Certificate:
    """A certificate signed by a (cached) issuer key; defaults mimic an eID Signature cert.

    ``ca=None`` leaves basicConstraints out; ``usage=None`` leaves keyUsage out.
    """
    public = (key or subject_key()).public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=None), critical=True
        )
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    signing_key = signer or issuer_key()
    algorithm = None if isinstance(signing_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(signing_key, algorithm)


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def make_csr(subject: x509.Name = SIGNATURE_SUBJECT) -> x509.CertificateSigningRequest:
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(subject_key(), None)
