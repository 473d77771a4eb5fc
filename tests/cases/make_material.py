"""Make the SSH keys and certificates the golden test cases reference (run once, commit the output).

    python tests/cases/make_material.py           # writes missing files only
    python tests/cases/make_material.py --force   # regenerates everything

The files land in ``tests/cases/_material/{keys,certs}`` and are committed, so the golden files
(``tests/cases/*/expected.txt``) never change between runs. Regenerating is only needed when a
case wants a new kind of key or certificate; after ``--force`` re-run the golden tests with
``UPDATE_GOLDEN=1`` and review the diff.

Determinism: Ed25519 and ECDSA keys are derived from fixed seeds, and the certificates are
Ed25519-signed (deterministic signatures), so those files come out byte-identical on every run.
RSA and DSA keys cannot be generated from a seed with cryptography, and an OpenSSH private key
carries a random check number; those files differ per run, which is harmless because no golden
file quotes their fingerprint or content.

Dates are chosen around the tests' fixed clock ``FIXED_NOW`` (2026-11-29T12:00Z, see
``tests/test_cases.py``): a certificate expiring within 60 days of it, one expired before it, one
not yet valid at it. Every key and certificate here is made for the tests and protects nothing,
including the deliberately committed private keys (they exist to prove the gate refuses them
without echoing them).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import ed25519_reference as edref  # noqa: E402
from fixtures_crypto import (  # noqa: E402
    CITIZEN_CA,
    dsa_private_key,
    key_usage,
    make_certificate,
    rsa_private_key,
    ssh_mpint,
    ssh_public_line,
    ssh_string,
    wire_line,
    x509_name,
)

MATERIAL = HERE / "_material"
UTC = dt.UTC
FIXED_NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def seeded_ed25519(name: str) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(name.encode()).digest())


def seeded_ec(name: str, curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey:
    # Reduced well below every curve's order, so any seed gives a valid scalar.
    scalar = int.from_bytes(hashlib.sha256(name.encode()).digest(), "big") >> 8
    return ec.derive_private_key(scalar, curve)


def public_ed25519_raw(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def keys() -> dict[str, str]:
    """File name -> content of every key file."""
    out: dict[str, str] = {}
    for i in range(1, 9):
        out[f"ed25519-{i}.pub"] = ssh_public_line(seeded_ed25519(f"ed25519-{i}"), f"case{i}@test")
    for curve, bits in ((ec.SECP256R1(), 256), (ec.SECP384R1(), 384), (ec.SECP521R1(), 521)):
        out[f"ecdsa-p{bits}.pub"] = ssh_public_line(seeded_ec(f"ecdsa-{bits}", curve), "ec@test")
    out["rsa-2048.pub"] = ssh_public_line(rsa_private_key(2048), "payroll@test")
    out["rsa-3072.pub"] = ssh_public_line(rsa_private_key(3072), "rsa3072@test")
    out["rsa-1024.pub"] = ssh_public_line(rsa_private_key(1024), "old@test")
    out["dsa.pub"] = ssh_public_line(dsa_private_key(), "older@test")
    sk_ed = public_ed25519_raw(seeded_ed25519("sk-ed25519"))
    out["sk-ed25519.pub"] = wire_line(
        "sk-ssh-ed25519@openssh.com", ssh_string(sk_ed), ssh_string(b"ssh:"), comment="token@test"
    )
    point = (
        seeded_ec("sk-ecdsa", ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    out["sk-ecdsa.pub"] = wire_line(
        "sk-ecdsa-sha2-nistp256@openssh.com",
        ssh_string("nistp256"),
        ssh_string(point),
        ssh_string(b"ssh:"),
        comment="token@test",
    )
    # An OpenSSH private key saved under a .pub name: the mistake the gate must catch.
    out["leaked-private.pub"] = (
        seeded_ed25519("leaked")
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        .decode()
    )
    out["not-a-key.pub"] = "this is not a key, just a note someone saved here\n"
    out["empty.pub"] = ""
    ed_line = out["ed25519-1.pub"].split()
    ed_blob = base64.b64decode(ed_line[1])
    # The RFC 4716 export of PuTTYgen and ssh.com tools.
    body = base64.b64encode(ed_blob).decode()
    out["ssh2-format.pub"] = (
        "---- BEGIN SSH2 PUBLIC KEY ----\n"
        'Comment: "ed25519-key-20260101"\n'
        f"{body[:64]}\n{body[64:]}\n"
        "---- END SSH2 PUBLIC KEY ----\n"
    )
    out["pem-format.pub"] = (
        seeded_ed25519("pem")
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    out["x509-certificate.pub"] = pem(certificate("pasted-as-key")).decode()
    out["ed448.pub"] = wire_line("ssh-ed448", ssh_string(b"\x01" * 57), comment="ed448@test")
    out["openssh-certificate.pub"] = wire_line(
        "ssh-ed25519-cert-v01@openssh.com", ssh_string(b"\x00" * 32), comment="cert@test"
    )
    # An Ed25519 key's data under the ssh-rsa label: a line assembled from two keys.
    out["type-mismatch.pub"] = f"ssh-rsa {ed_line[1]} mixed@test"
    out["truncated.pub"] = f"ssh-ed25519 {base64.b64encode(ed_blob[:-8]).decode()} cut@test"
    out["rsa-too-long.pub"] = wire_line(
        "ssh-rsa", ssh_mpint(65537), ssh_mpint((1 << 16400) + 1), comment="huge@test"
    )
    out["two-keys.pub"] = out["ed25519-7.pub"] + "\n" + out["ed25519-8.pub"]
    out.update(weak_keys())
    return {name: text if text.endswith("\n") else text + "\n" for name, text in out.items()}


def weak_keys() -> dict[str, str]:
    """Well-formed public keys that are not keys (tests/cases/ssh-keys-weak, issue 9)."""

    def ed(name: str, point: bytes, key_type: str = "ssh-ed25519") -> tuple[str, str]:
        fields = [ssh_string(point)] + ([ssh_string(b"ssh:")] if key_type.startswith("sk-") else [])
        return f"{name}.pub", wire_line(key_type, *fields, comment=f"{name}@test")

    def rsa_line(name: str, modulus: int, exponent: int = 65537) -> tuple[str, str]:
        return f"{name}.pub", wire_line(
            "ssh-rsa", ssh_mpint(exponent), ssh_mpint(modulus), comment=f"{name}@test"
        )

    genuine = edref.decode(public_ed25519_raw(seeded_ed25519("weak-mixed")))
    assert genuine is not None
    q2048 = rsa_private_key(4096).private_numbers().p  # a 2048-bit prime
    q1024 = rsa_private_key(2048).private_numbers().p
    q768 = rsa_private_key(1536).private_numbers().p
    modulus = rsa_private_key(2048).public_key().public_numbers().n
    return dict(
        [
            ed("ed25519-order-8", edref.encode(edref.ORDER_8)),
            ed("ed25519-identity-non-canonical", edref.raw(edref.P + 1)),
            ed("ed25519-non-canonical", edref.raw(edref.P + 3)),
            ed("ed25519-off-curve", edref.raw(edref.off_curve_y())),
            ed("ed25519-mixed-order", edref.encode(edref.add(genuine, edref.ORDER_8))),
            ed("sk-ed25519-identity", edref.raw(1), "sk-ssh-ed25519@openssh.com"),
            rsa_line("rsa-3q", 3 * q2048),
            rsa_line("rsa-65521q", 65521 * q2048),
            rsa_line("rsa-square", q1024 * q1024),
            rsa_line("rsa-cube", q768**3),
            rsa_line("rsa-exponent-1", modulus, 1),
            rsa_line("rsa-exponent-3", modulus, 3),
            rsa_line("rsa-exponent-even", modulus, 65538),
        ]
    )


SUBJECT = x509_name(
    (NameOID.COUNTRY_NAME, "BE"),
    (NameOID.ORGANIZATION_NAME, "Test Payroll NV"),
    (NameOID.COMMON_NAME, "Test Signer (Signature)"),
    (NameOID.SERIAL_NUMBER, "85073003328"),
)
SIGN = key_usage(content_commitment=True)


def certificate(
    name: str,
    *,
    not_before: dt.datetime = dt.datetime(2026, 1, 1, tzinfo=UTC),
    not_after: dt.datetime = dt.datetime(2030, 12, 31, tzinfo=UTC),
    ca: bool | None = None,
    usage: x509.KeyUsage | None = SIGN,
) -> x509.Certificate:
    serial = int.from_bytes(hashlib.sha256(name.encode()).digest()[:12], "big") | (1 << 92)
    return make_certificate(
        subject=SUBJECT,
        issuer=CITIZEN_CA,
        serial=serial,
        not_before=not_before,
        not_after=not_after,
        ca=ca,
        usage=usage,
        key=seeded_ed25519(f"cert-{name}"),
        signer=seeded_ed25519("citizen-ca"),
    )


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def certs() -> dict[str, bytes]:
    day = dt.timedelta(days=1)
    out: dict[str, bytes] = {
        "signature.cer": der(certificate("signature")),
        "signature.pem": pem(certificate("signature-pem")),
        "signature-2.crt": pem(certificate("signature-2")),
        # Expires 30 days after FIXED_NOW: accepted with a warning (60-day window).
        "expiring.cer": der(certificate("expiring", not_after=FIXED_NOW + 30 * day)),
        "expired.cer": der(certificate("expired", not_after=dt.datetime(2026, 6, 30, tzinfo=UTC))),
        "not-yet-valid.cer": der(
            certificate("not-yet-valid", not_before=dt.datetime(2027, 6, 1, tzinfo=UTC))
        ),
        "ca.cer": der(
            certificate(
                "ca",
                ca=True,
                usage=key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True),
            )
        ),
        # An eID-like Authentication certificate: no signature usage at all.
        "authentication.cer": der(
            certificate("authentication", usage=key_usage(key_encipherment=True))
        ),
        "garbage.cer": b"\x30\x82\x01\x00" + hashlib.sha256(b"garbage").digest() * 4,
        "empty.cer": b"",
        "ssh-key.cer": keys()["ed25519-1.pub"].encode(),
        # The right certificate, but saved under a name that says it is something else.
        "signature.p12": der(certificate("signature-p12")),
    }
    leaked = seeded_ed25519("cert-leaked").private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    out["with-private-key.pem"] = pem(certificate("leaked")) + leaked
    out["private-key.cer"] = seeded_ed25519("cert-leaked-der").private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(SUBJECT)
        .sign(seeded_ed25519("csr"), None)
    )
    out["request.pem"] = csr.public_bytes(serialization.Encoding.PEM)
    signature_pem = pem(certificate("no-armour")).decode().splitlines()
    out["no-armour.cer"] = ("\n".join(signature_pem[1:-1]) + "\n").encode()
    out["truncated.pem"] = ("\n".join(signature_pem[:-3]) + "\n").encode()
    return out


def write(path: Path, data: bytes, force: bool) -> None:
    if path.exists() and not force:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    print(f"wrote {path.relative_to(HERE)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="regenerate existing files too")
    args = parser.parse_args()
    for name, text in keys().items():
        write(MATERIAL / "keys" / name, text.encode(), args.force)
    for name, data in certs().items():
        write(MATERIAL / "certs" / name, data, args.force)
    # signature.cer as it was written, in PEM: the same certificate named twice in a renewal.
    same = x509.load_der_x509_certificate((MATERIAL / "certs" / "signature.cer").read_bytes())
    write(MATERIAL / "certs" / "signature-again.pem", pem(same), args.force)


if __name__ == "__main__":
    main()
