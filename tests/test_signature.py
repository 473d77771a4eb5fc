"""The FS check: a detached CMS signature of the FI file, by a registered certificate.

Signatures are made the way senders make them: the `openssl smime -sign` command (PEM with its
armour stripped and CRLF line ends, as the clients seen in the field write them; DER; PEM) and
cryptography's PKCS7SignatureBuilder (with and without signed attributes). Every refusal is a
verdict with a reason, never an exception, whatever the bytes.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import require
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioner.intake.signature import MAX_SIGNATURE_BYTES, SignatureVerdict, verify_detached
from tests.fixtures_crypto import key_usage, make_certificate, rsa_private_key

UTC = dt.UTC
UPLOAD = dt.datetime(2027, 6, 1, 9, 30, tzinfo=UTC)
CONTENT = b"<?xml version='1.0'?><DmfAOriginal>\r\n" + bytes(range(256)) * 40 + b"</DmfAOriginal>"


@pytest.fixture
def _openssl() -> None:
    require(shutil.which("openssl") is not None, "needs the openssl command (apt install openssl)")


needs_openssl = pytest.mark.usefixtures("_openssl")

SignerKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@functools.cache
def _ec_key(index: int = 0) -> ec.EllipticCurvePrivateKey:
    del index
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    key: SignerKey,
    *,
    serial: int = 0x1000000000000B7A21DF5C29,
    not_before: dt.datetime = dt.datetime(2026, 1, 1, tzinfo=UTC),
    not_after: dt.datetime = dt.datetime(2028, 12, 31, tzinfo=UTC),
    with_ski: bool = True,
) -> x509.Certificate:
    certificate = make_certificate(
        key=key,
        serial=serial,
        not_before=not_before,
        not_after=not_after,
        usage=key_usage(digital_signature=True, content_commitment=True),
    )
    if not with_ski:
        return certificate
    # The usual signing certificate carries a subject key identifier; re-issue it with one.
    builder = (
        x509.CertificateBuilder()
        .subject_name(certificate.subject)
        .issuer_name(certificate.issuer)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    return builder.sign(rsa_private_key(2048, 9), hashes.SHA256())


@functools.cache
def rsa_signer() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa_private_key(2048)
    return key, _cert(key)


def _builder_signature(
    key: SignerKey,
    certificate: x509.Certificate,
    content: bytes = CONTENT,
    *,
    attributes: bool = True,
    rsa_padding: padding.PSS | padding.PKCS1v15 | None = None,
    encoding: serialization.Encoding = serialization.Encoding.DER,
) -> bytes:
    options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    if not attributes:
        options.append(pkcs7.PKCS7Options.NoAttributes)
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(content)
        .add_signer(certificate, key, hashes.SHA256(), rsa_padding=rsa_padding)
        .sign(encoding, options)
    )


def _openssl_signature(
    tmp_path: Path,
    key: SignerKey,
    certificate: x509.Certificate,
    content: bytes = CONTENT,
    *,
    outform: str = "PEM",
    command: tuple[str, ...] = ("smime", "-sign"),
    extra: tuple[str, ...] = (),
) -> bytes:
    (tmp_path / "FI").write_bytes(content)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    subprocess.run(
        [
            "openssl",
            *command,
            "-binary",
            "-md",
            "sha256",
            "-in",
            str(tmp_path / "FI"),
            "-signer",
            str(tmp_path / "cert.pem"),
            "-inkey",
            str(tmp_path / "key.pem"),
            "-outform",
            outform,
            "-out",
            str(tmp_path / "FS"),
            *extra,
        ],
        check=True,
        capture_output=True,
    )
    return (tmp_path / "FS").read_bytes()


def _as_clients_write_it(pem: bytes) -> bytes:
    """The PEM armour stripped and CRLF line ends, as the field's clients write FS files."""
    lines = [line for line in pem.splitlines() if line and not line.startswith(b"-----")]
    return b"\r\n".join(lines) + b"\r\n"


def _ok(verdict: SignatureVerdict, certificate: x509.Certificate) -> None:
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
    assert verdict == SignatureVerdict(True, fingerprint, "the signature is valid")


def _refused(verdict: SignatureVerdict, *words: str) -> None:
    assert not verdict.ok
    assert verdict.reason
    for word in words:
        assert word in verdict.reason, verdict.reason


# --- what senders produce verifies ---------------------------------------------------------


@needs_openssl
@pytest.mark.parametrize("form", ["stripped-crlf", "PEM", "DER", "base64-lf"])
def test_openssl_smime_signatures_verify(tmp_path: Path, form: str) -> None:
    key, certificate = rsa_signer()
    outform = "DER" if form == "DER" else "PEM"
    signature = _openssl_signature(tmp_path, key, certificate, outform=outform)
    if form == "stripped-crlf":
        signature = _as_clients_write_it(signature)
    elif form == "base64-lf":
        signature = b"\n".join(
            line for line in signature.splitlines() if not line.startswith(b"-----")
        )
    _ok(verify_detached(signature, CONTENT, [certificate], UPLOAD), certificate)


@needs_openssl
@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(("-noattr",), id="no-attributes"),
        pytest.param(("-keyid",), id="subject-key-identifier"),
        pytest.param(("-nocerts",), id="no-certificate-inside"),
        pytest.param(("-keyopt", "rsa_padding_mode:pss"), id="rsa-pss"),
    ],
)
def test_openssl_cms_variants_verify(tmp_path: Path, extra: tuple[str, ...]) -> None:
    key, certificate = rsa_signer()
    signature = _openssl_signature(
        tmp_path, key, certificate, outform="DER", command=("cms", "-sign"), extra=extra
    )
    _ok(verify_detached(signature, CONTENT, [certificate], UPLOAD), certificate)


@needs_openssl
def test_ecdsa_signature_by_openssl_verifies(tmp_path: Path) -> None:
    key = _ec_key()
    certificate = _cert(key)
    signature = _as_clients_write_it(_openssl_signature(tmp_path, key, certificate))
    _ok(verify_detached(signature, CONTENT, [certificate], UPLOAD), certificate)


@pytest.mark.parametrize("attributes", [True, False], ids=["attributes", "no-attributes"])
@pytest.mark.parametrize("kind", ["rsa", "rsa-pss", "ecdsa"])
def test_pkcs7_signature_builder_signatures_verify(kind: str, attributes: bool) -> None:
    key: SignerKey
    if kind == "ecdsa":
        key = _ec_key()
        certificate = _cert(key)
        rsa_padding = None
    else:
        key, certificate = rsa_signer()
        rsa_padding = (
            padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
            if kind == "rsa-pss"
            else None
        )
    signature = _builder_signature(key, certificate, attributes=attributes, rsa_padding=rsa_padding)
    _ok(verify_detached(signature, CONTENT, [certificate], UPLOAD), certificate)


@pytest.mark.parametrize("last", [b"\n", b"\r", b" ", b"\t"], ids=["LF", "CR", "space", "tab"])
def test_a_der_signature_whose_last_byte_is_whitespace_verifies(last: bytes) -> None:
    # The last byte of a DER signature is the last byte of the signature value: random, so
    # about one signature in sixty ends in a byte that looks like white space. Found in a
    # full run, where 1 of 60 `openssl cms -sign` RSA-PSS signatures was refused as damaged.
    key = _ec_key()
    certificate = _cert(key)
    for _ in range(5000):
        signature = _builder_signature(key, certificate)
        if signature[-1:] == last:
            break
    else:
        pytest.fail(f"no signature ending in {last!r} in 5000 tries")
    _ok(verify_detached(signature, CONTENT, [certificate], UPLOAD), certificate)


def test_the_registered_certificate_that_signed_is_named_among_several() -> None:
    key, certificate = rsa_signer()
    other_key = rsa_private_key(2048, 1)
    other = _cert(other_key, serial=77)
    signature = _builder_signature(key, certificate)
    _ok(verify_detached(signature, CONTENT, [other, certificate], UPLOAD), certificate)


def test_renewal_with_the_same_key_picks_the_certificate_valid_at_upload() -> None:
    key = rsa_private_key(2048)
    old = _cert(key, serial=1, not_after=dt.datetime(2027, 3, 31, tzinfo=UTC))
    new = _cert(key, serial=2, not_before=dt.datetime(2027, 3, 1, tzinfo=UTC))
    signature = _builder_signature(key, old, attributes=True)
    # Signed by issuer+serial of the old one: only the old one matches, and it has expired.
    verdict = verify_detached(signature, CONTENT, [old, new], UPLOAD)
    _refused(verdict, "expired on 2027-03-31")
    assert verdict.fingerprint == old.fingerprint(hashes.SHA256()).hex()
    during_overlap = dt.datetime(2027, 3, 15, tzinfo=UTC)
    _ok(verify_detached(signature, CONTENT, [old, new], during_overlap), old)


# --- refusals ------------------------------------------------------------------------------


def test_tampered_content_is_refused() -> None:
    key, certificate = rsa_signer()
    for attributes in (True, False):
        signature = _builder_signature(key, certificate, attributes=attributes)
        tampered = CONTENT[:-1] + b"X"
        _refused(verify_detached(signature, tampered, [certificate], UPLOAD), "changed")


def test_a_certificate_not_registered_is_refused() -> None:
    key, certificate = rsa_signer()
    registered = _cert(rsa_private_key(2048, 1), serial=5)
    signature = _builder_signature(key, certificate)
    verdict = verify_detached(signature, CONTENT, [registered], UPLOAD)
    _refused(verdict, "not one of the certificates registered")
    assert verdict.fingerprint is None
    _refused(verify_detached(signature, CONTENT, [], UPLOAD), "not one of the certificates")


def test_a_certificate_inside_the_signature_posing_as_the_registered_one_is_refused() -> None:
    # The impostor copies the registered certificate's issuer and serial number, and brings
    # its own key in a certificate inside the signature: the registered key decides.
    _, registered = rsa_signer()
    impostor_key = rsa_private_key(2048, 2)
    impostor = _cert(impostor_key, serial=registered.serial_number)
    signature = _builder_signature(impostor_key, impostor)
    _refused(verify_detached(signature, CONTENT, [registered], UPLOAD), "signed with another key")


@pytest.mark.parametrize(
    ("not_before", "not_after", "words"),
    [
        (dt.datetime(2025, 1, 1, tzinfo=UTC), dt.datetime(2027, 5, 31, tzinfo=UTC), "expired"),
        (dt.datetime(2027, 6, 2, tzinfo=UTC), dt.datetime(2029, 1, 1, tzinfo=UTC), "valid only"),
    ],
    ids=["expired-at-upload", "not-yet-valid-at-upload"],
)
def test_certificate_outside_its_validity_at_upload_is_refused(
    not_before: dt.datetime, not_after: dt.datetime, words: str
) -> None:
    key = rsa_private_key(2048)
    certificate = _cert(key, not_before=not_before, not_after=not_after)
    signature = _builder_signature(key, certificate)
    verdict = verify_detached(signature, CONTENT, [certificate], UPLOAD)
    _refused(verdict, words)
    assert verdict.fingerprint == certificate.fingerprint(hashes.SHA256()).hex()


def test_an_attached_signature_is_refused() -> None:
    key, certificate = rsa_signer()
    signature = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(CONTENT)
        .add_signer(certificate, key, hashes.SHA256())
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )
    _refused(verify_detached(signature, CONTENT, [certificate], UPLOAD), "detached")


def test_two_signers_are_refused() -> None:
    key, certificate = rsa_signer()
    other_key = _ec_key()
    other = _cert(other_key, serial=9)
    signature = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(CONTENT)
        .add_signer(certificate, key, hashes.SHA256())
        .add_signer(other, other_key, hashes.SHA256())
        .sign(
            serialization.Encoding.DER,
            [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary],
        )
    )
    _refused(verify_detached(signature, CONTENT, [certificate, other], UPLOAD), "2 signers")


@needs_openssl
def test_a_signature_by_sha1_is_refused(tmp_path: Path) -> None:
    key, certificate = rsa_signer()
    signature = _openssl_signature(
        tmp_path, key, certificate, outform="DER", command=("cms", "-sign"), extra=("-md", "sha1")
    )
    _refused(verify_detached(signature, CONTENT, [certificate], UPLOAD), "sha1", "SHA-256")


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"   \r\n",
        b"\x30",
        b"\x30\x84\xff\xff\xff\xff" + b"\x00" * 16,  # a length of 4 GiB over 16 bytes
        b"\x30\x89" + b"\xff" * 9,  # a length longer than any machine word
        b"-----BEGIN PKCS7-----\r\nnot base64 at all!\r\n-----END PKCS7-----\r\n",
        b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        b"MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwEAAKCAMIIC",
        b"\x00\xff" * 300,
        base64.b64encode(b"\x30\x03\x06\x01\x00"),
        b"go",
        b"\x30\x80" * 50_000,  # indefinite lengths nested deeply
        b"A" * (MAX_SIGNATURE_BYTES + 1),
    ],
    ids=lambda g: f"{len(g)}-bytes",
)
def test_garbage_is_refused_with_a_reason(garbage: bytes) -> None:
    _, certificate = rsa_signer()
    _refused(verify_detached(garbage, CONTENT, [certificate], UPLOAD))


def test_every_truncation_of_a_signature_is_refused() -> None:
    key, certificate = rsa_signer()
    signature = _builder_signature(key, certificate)
    for end in range(len(signature)):
        verdict = verify_detached(signature[:end], CONTENT, [certificate], UPLOAD)
        assert not verdict.ok, end
        assert verdict.reason


def test_a_signature_with_another_content_type_is_refused() -> None:
    key, certificate = rsa_signer()
    signature = _builder_signature(key, certificate, attributes=False)
    # id-data (1.2.840.113549.1.7.1) in the encapsulated content -> id-signedData (...7.2).
    data_oid = bytes.fromhex("06092a864886f70d010701")
    at = signature.index(data_oid, 20)
    forged = signature[:at] + bytes.fromhex("06092a864886f70d010702") + signature[at + 11 :]
    _refused(verify_detached(forged, CONTENT, [certificate], UPLOAD), "content type")


@functools.cache
def _fuzz_material() -> tuple[bytes, x509.Certificate]:
    key, certificate = rsa_signer()
    return _builder_signature(key, certificate), certificate


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=5000), st.integers(0, 255)),
        min_size=1,
        max_size=6,
    )
)
def test_fuzzed_signatures_never_raise(flips: list[tuple[int, int]]) -> None:
    signature, certificate = _fuzz_material()
    mutated = bytearray(signature)
    for position, value in flips:
        mutated[position % len(mutated)] = value
    verdict = verify_detached(bytes(mutated), CONTENT, [certificate], UPLOAD)
    assert isinstance(verdict, SignatureVerdict)
    assert verdict.reason
    if bytes(mutated) != signature and verdict.ok:
        # A flip in a part the signature does not cover (the certificates inside it, an
        # unsigned field) may leave it valid; then the registered certificate still signed.
        assert verdict.fingerprint == certificate.fingerprint(hashes.SHA256()).hex()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096))
def test_random_bytes_never_raise(data: bytes) -> None:
    _, certificate = rsa_signer()
    verdict = verify_detached(data, CONTENT, [certificate], UPLOAD)
    assert not verdict.ok
    assert verdict.reason


def test_reasons_quote_nothing_of_the_upload() -> None:
    _, certificate = rsa_signer()
    marker = b"SECRET-PAYLOAD-TEXT"
    for upload in (marker, b"-----BEGIN PKCS7-----\n" + marker + b"\n-----END PKCS7-----"):
        verdict = verify_detached(upload, CONTENT, [certificate], UPLOAD)
        assert marker.decode() not in verdict.reason


def test_a_naive_time_of_upload_is_a_programming_error() -> None:
    _, certificate = rsa_signer()
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_detached(b"", CONTENT, [certificate], dt.datetime(2027, 1, 1))


def test_mixed_key_types_do_not_confuse_the_check() -> None:
    # An RSA signature whose signer identifier names an EC certificate (same issuer and serial).
    key, certificate = rsa_signer()
    ec_key = _ec_key(3)
    ec_cert = _cert(ec_key, serial=certificate.serial_number)
    signature = _builder_signature(key, certificate)
    _refused(verify_detached(signature, CONTENT, [ec_cert], UPLOAD), "another key")
