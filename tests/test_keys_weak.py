"""Keys that are keys (issue 9): public keys that anyone could use, or that no generator makes.

Each class is fed by a hypothesis strategy and must be refused with its code and a message that
says why: Ed25519 (and sk-ssh-ed25519) points of small order in every encoding, non-canonical
encodings, points off the curve and mixed-order points; RSA moduli with a prime factor below
2**16 or that are perfect powers; RSA exponents below 65537, even, or not below the modulus;
invisible characters in comments. Genuine keys made with cryptography are always accepted.

The Ed25519 verdicts are compared with two independent references: textbook curve arithmetic
(tests/ed25519_reference.py) and libsodium's crypto_core_ed25519_is_valid_point (PyNaCl, which
paramiko brings along).
"""

from __future__ import annotations

import functools
import math
import unicodedata

import ed25519_reference as ref
import pytest
from cpu_time import Stopwatch, cpu_seconds
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from fixtures_crypto import rsa_private_key, ssh_mpint, ssh_public_line, ssh_string, wire_line
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_core_ed25519_is_valid_point

from provisioner import keys
from provisioner.keys import KeyProblem, PublicKey, parse_public_key

# The line of issue 9, finding 3: the identity point, against which R = identity, S = 0 is a
# valid signature of every message.
IDENTITY_LINE = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
SMALL_PRIMES = [q for q in range(2, 1 << 16) if all(q % r for r in range(2, math.isqrt(q) + 1))]
# Each parse must stay far below a second, whatever the input: a limit for one call, in CPU
# time with the collector paused (see cpu_time), so that a pathological parse still fails it.
PER_CALL_LIMIT = 0.25


def parse(line: str) -> tuple[PublicKey, object]:
    watch = Stopwatch()
    try:
        with cpu_seconds() as watch:
            return parse_public_key(line)
    finally:
        # Refused or accepted, the call had to be quick.
        assert watch.seconds < PER_CALL_LIMIT


def refused(line: str, code: str) -> KeyProblem:
    with pytest.raises(KeyProblem) as caught:
        parse(line)
    assert caught.value.code == code, caught.value.message
    return caught.value


def ed_line(point: bytes, key_type: str = "ssh-ed25519", comment: str = "x@test") -> str:
    fields = [ssh_string(point)]
    if key_type.startswith("sk-"):
        fields.append(ssh_string(b"ssh:"))
    return wire_line(key_type, *fields, comment=comment)


ED_TYPES = st.sampled_from(["ssh-ed25519", "sk-ssh-ed25519@openssh.com"])
ED_CODES = {
    "small-order": "key-ed25519-small-order",
    "non-canonical": "key-ed25519-non-canonical",
    "mixed-order": "key-ed25519-mixed-order",
    "off-curve": "key-malformed",
}


def raw_public(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# --- Ed25519: the classes, one by one ------------------------------------------------------


def test_the_identity_point_of_the_issue_is_refused() -> None:
    problem = refused(IDENTITY_LINE, "key-ed25519-small-order")
    assert "forged signature" in problem.message
    assert "anyone could log in" in problem.message
    assert "ssh-keygen -t ed25519" in problem.message


def test_sk_identity_point_is_refused_with_the_security_key_hint() -> None:
    problem = refused(ed_line(ref.raw(1), "sk-ssh-ed25519@openssh.com"), "key-ed25519-small-order")
    assert "ssh-keygen -t ed25519-sk" in problem.message


def small_order_encodings() -> list[bytes]:
    """All 8 torsion points with both sign bits, and every non-canonical y + p of them."""
    out = []
    for point in ref.TORSION:
        y = int.from_bytes(ref.encode(point), "little") & ((1 << 255) - 1)
        for candidate in (y, y + ref.P):
            if candidate < 1 << 255:
                out += [ref.raw(candidate, 0), ref.raw(candidate, 1)]
    return sorted(set(out))


SMALL_ORDER = small_order_encodings()


def test_the_small_order_encodings_are_those_libsodium_blacklists() -> None:
    assert len({ref.encode(p) for p in ref.TORSION}) == 8
    # 5 y values (0, 1, p-1 and the two of order 8), 2 sign bits; y + p fits for 0 and 1.
    assert len(SMALL_ORDER) == 14
    assert all(ref.classify(e) == "small-order" for e in SMALL_ORDER)
    assert not any(crypto_core_ed25519_is_valid_point(e) for e in SMALL_ORDER)


@pytest.mark.parametrize("encoding", SMALL_ORDER, ids=lambda e: e.hex()[:8] + e.hex()[-2:])
@pytest.mark.parametrize("key_type", ["ssh-ed25519", "sk-ssh-ed25519@openssh.com"])
def test_every_small_order_encoding_is_refused(encoding: bytes, key_type: str) -> None:
    refused(ed_line(encoding, key_type), "key-ed25519-small-order")


@pytest.mark.parametrize("y", range(ref.P, 1 << 255))
def test_every_non_canonical_y_is_refused(y: int) -> None:
    for sign in (0, 1):
        expected = ED_CODES[ref.classify(ref.raw(y, sign))]
        problem = refused(ed_line(ref.raw(y, sign)), expected)
        if expected == "key-ed25519-non-canonical":
            assert "2^255-19" in problem.message


def test_off_curve_point_is_malformed() -> None:
    problem = refused(ed_line(ref.raw(ref.off_curve_y())), "key-malformed")
    assert "not a point of the curve" in problem.message


def test_mixed_order_point_is_refused() -> None:
    genuine = ref.decode(raw_public(ed25519.Ed25519PrivateKey.generate()))
    assert genuine is not None
    problem = refused(ed_line(ref.encode(ref.add(genuine, ref.ORDER_8))), "key-ed25519-mixed-order")
    assert "libsodium" in problem.message


def test_without_x25519_the_curve_is_still_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    # An OpenSSL without X25519 (FIPS mode) loses only the mixed-order check.
    monkeypatch.setattr(keys, "_ED25519_SUBGROUP_SCALAR", None)
    refused(IDENTITY_LINE, "key-ed25519-small-order")
    refused(ed_line(ref.raw(ref.P + 3)), "key-ed25519-non-canonical")
    refused(ed_line(ref.raw(ref.off_curve_y())), "key-malformed")
    genuine = raw_public(ed25519.Ed25519PrivateKey.generate())
    parse(ed_line(genuine))
    point = ref.decode(genuine)
    assert point is not None
    parse(ed_line(ref.encode(ref.add(point, ref.ORDER_8))))


def test_cryptography_alone_would_accept_the_identity_point() -> None:
    # Why the check is ours: cryptography (OpenSSL) loads the identity point without complaint,
    # and the constant forged signature (R = identity, S = 0) verifies for any message.
    public = ed25519.Ed25519PublicKey.from_public_bytes(ref.raw(1))
    for message in (b"", b"any session", b"\x00" * 100):
        public.verify(ref.raw(1) + bytes(32), message)


# --- Ed25519: properties -------------------------------------------------------------------


@PROPERTY
@given(st.sampled_from(SMALL_ORDER), ED_TYPES, st.text(alphabet="abc@.-", max_size=12))
def test_property_small_order_refused(encoding: bytes, key_type: str, comment: str) -> None:
    refused(ed_line(encoding, key_type, comment), "key-ed25519-small-order")


@PROPERTY
@given(st.integers(0, 7), st.integers(1, ref.L - 1), ED_TYPES)
@example(torsion=1, scalar=1, key_type="ssh-ed25519")
def test_property_mixed_order_refused(torsion: int, scalar: int, key_type: str) -> None:
    point = ref.add(ref.multiply(scalar, ref.BASE), ref.TORSION[torsion])
    encoding = ref.encode(point)
    if torsion == 0:
        key, _ = parse(ed_line(encoding, key_type))
        assert key.bits == 256
    else:
        refused(ed_line(encoding, key_type), "key-ed25519-mixed-order")


@PROPERTY
@given(st.binary(min_size=32, max_size=32), ED_TYPES)
def test_property_any_32_bytes_agree_with_both_references(data: bytes, key_type: str) -> None:
    verdict = ref.classify(data)
    assert (verdict == "ok") == crypto_core_ed25519_is_valid_point(data)
    if verdict == "ok":
        parse(ed_line(data, key_type))
    else:
        refused(ed_line(data, key_type), ED_CODES[verdict])


@PROPERTY
@given(st.integers(0, 18), st.booleans())
def test_property_y_plus_p_refused(y: int, sign: bool) -> None:
    encoding = ref.raw(y + ref.P, int(sign))
    refused(ed_line(encoding), ED_CODES[ref.classify(encoding)])


@PROPERTY
@given(st.binary(min_size=32, max_size=32), ED_TYPES)
def test_property_genuine_ed25519_keys_accepted(seed: bytes, key_type: str) -> None:
    raw = raw_public(ed25519.Ed25519PrivateKey.from_private_bytes(seed))
    key, _ = parse(ed_line(raw, key_type))
    assert key.blob.endswith(raw) or key_type.startswith("sk-")


def test_generated_ed25519_keys_accepted() -> None:
    for _ in range(200):
        line = ssh_public_line(ed25519.Ed25519PrivateKey.generate(), "gen@test")
        assert parse(line)[0].openssh() == line


# --- RSA -----------------------------------------------------------------------------------


@functools.cache
def prime(bits: int, index: int = 0) -> int:
    """A random prime of the given size (half of an RSA key cryptography generated)."""
    numbers = rsa_private_key(2 * bits, index).private_numbers()
    return numbers.p


def rsa_wire(modulus: int, exponent: int = 65537) -> str:
    return wire_line("ssh-rsa", ssh_mpint(exponent), ssh_mpint(modulus), comment="r@test")


def smallest_prime_factor(n: int) -> int | None:
    return next((q for q in SMALL_PRIMES if n % q == 0), None)


def test_three_times_a_prime_is_refused() -> None:
    # Issue 9, finding 4: n = 3q is factored by a division.
    q = prime(1024) * prime(1024, 1)  # any large odd cofactor will do
    problem = refused(rsa_wire(3 * q), "key-rsa-weak-modulus")
    assert "divisible by 3" in problem.message
    assert "compute the private key" in problem.message


def test_the_largest_prime_below_the_bound_is_found() -> None:
    assert SMALL_PRIMES[-1] == 65521
    q = prime(1024) * prime(1024, 1)
    assert "divisible by 65521" in refused(rsa_wire(65521 * q), "key-rsa-weak-modulus").message
    # A factor above the bound is not trial division's business: 65537 * q passes that test.
    key, _ = parse(rsa_wire(65537 * q))
    assert key.bits == (65537 * q).bit_length()


@PROPERTY
@given(
    st.sampled_from(SMALL_PRIMES),
    st.integers(2000, 4096),
    st.randoms(use_true_random=False),
)
def test_property_small_factor_refused(factor: int, bits: int, rng: object) -> None:
    cofactor = rng.getrandbits(bits) | (1 << (bits - 1)) | 1  # type: ignore[attr-defined]
    modulus = factor * cofactor
    assume(modulus.bit_length() >= 2048)
    problem = refused(rsa_wire(modulus), "key-rsa-weak-modulus")
    assert f"divisible by {smallest_prime_factor(modulus)}:" in problem.message


@PROPERTY
@given(st.sampled_from([2, 3, 4, 5, 6, 7, 11, 13, 31, 64, 101, 127]), st.data())
def test_property_perfect_powers_refused(k: int, data: st.DataObject) -> None:
    low = max(17, -(-2048 // k))
    bits = data.draw(st.integers(low, max(low, 4096 // k)))
    root = data.draw(st.integers(1 << (bits - 1), (1 << bits) - 1)) | 1
    modulus = root**k
    assume(2048 <= modulus.bit_length() <= 16384)
    problem = refused(rsa_wire(modulus), "key-rsa-weak-modulus")
    small = smallest_prime_factor(root)
    if small is not None:
        assert f"divisible by {small}:" in problem.message
    else:
        assert "perfect power" in problem.message
        # The smallest prime exponent is the one named (a random root is no power itself).
        power = int(problem.message.split("the power ")[1].split(")")[0])
        assert power == smallest_prime_factor(k)


def test_prime_powers_of_real_primes_refused() -> None:
    q = prime(1024)
    assert "the power 2)" in refused(rsa_wire(q * q), "key-rsa-weak-modulus").message
    r = prime(768)
    assert "the power 3)" in refused(rsa_wire(r**3), "key-rsa-weak-modulus").message
    s = prime(512)
    for k in (5, 7, 11, 31):
        assert f"the power {k})" in refused(rsa_wire(s**k), "key-rsa-weak-modulus").message


@PROPERTY
@given(
    st.one_of(
        st.integers(0, 65536),
        st.integers(32769, 1 << 64).map(lambda e: 2 * e),
        st.sampled_from([0, 1, 3, 5, 17, 35, 37, 257, 65535, 65536]),
    ),
    st.sampled_from([2048, 3072]),
)
def test_property_bad_exponents_refused(exponent: int, bits: int) -> None:
    modulus = rsa_private_key(bits).public_key().public_numbers().n
    problem = refused(rsa_wire(modulus, exponent), "key-rsa-exponent")
    if exponent < 65537:
        assert f"exponent is {exponent}{':' if exponent == 1 else ';'}" in problem.message
    else:
        assert "even" in problem.message


def test_exponent_not_below_the_modulus_refused() -> None:
    modulus = rsa_private_key(2048).public_key().public_numbers().n
    for exponent in (modulus, modulus + 2):
        problem = refused(rsa_wire(modulus, exponent), "key-rsa-exponent")
        assert "not smaller than its modulus" in problem.message


@PROPERTY
@given(st.sampled_from([(2048, 0), (2048, 1), (2048, 2), (3072, 0), (3072, 1), (4096, 0)]))
def test_property_genuine_rsa_keys_accepted(size: tuple[int, int]) -> None:
    key = rsa_private_key(*size)
    line = ssh_public_line(key, "rsa@test")
    parsed, _ = parse(line)
    assert parsed.bits == size[0]
    assert parsed.openssh() == line


def test_other_odd_exponents_above_65537_accepted() -> None:
    modulus = rsa_private_key(2048).public_key().public_numbers().n
    for exponent in (65539, (1 << 31) - 1, (1 << 255) + 1):
        parse(rsa_wire(modulus, exponent))


# --- comments ------------------------------------------------------------------------------

# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties.txt), independently of the code.
DEFAULT_IGNORABLE = [
    *range(0x00AD, 0x00AE),
    0x034F,
    0x061C,
    0x115F,
    0x1160,
    0x17B4,
    0x17B5,
    *range(0x180B, 0x1810),
    *range(0x200B, 0x2010),
    *range(0x202A, 0x202F),
    *range(0x2060, 0x2070),
    0x3164,
    *range(0xFE00, 0xFE10),
    0xFEFF,
    0xFFA0,
    *range(0xFFF0, 0xFFF9),
    *range(0x1BCA0, 0x1BCA4),
    *range(0x1D173, 0x1D17B),
    *range(0xE0000, 0xE1000),
]
LINE_BREAKS = "\n\r\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
INVISIBLE = st.one_of(
    st.sampled_from(DEFAULT_IGNORABLE).map(chr),
    st.characters(categories=["Cc", "Cf", "Co", "Cn"], exclude_characters="\t" + LINE_BREAKS),
    st.sampled_from(["\U000e0041", "\u061c", "\u00ad", "\u034f", "\u180e", "\ufffb"]),
)
DEFAULT_IGNORABLE_SET = frozenset(DEFAULT_IGNORABLE)


def visible(char: str) -> bool:
    return ord(char) not in DEFAULT_IGNORABLE_SET


VISIBLE: st.SearchStrategy[str] = st.characters(categories=["L", "M", "N", "P", "S", "Zs"]).filter(
    visible
)
GENUINE_LINE = ssh_public_line(ed25519.Ed25519PrivateKey.generate())


@PROPERTY
@given(st.text(VISIBLE, min_size=1, max_size=20), INVISIBLE, st.integers(0, 20))
def test_property_invisible_characters_in_comments_refused(
    comment: str, char: str, where: int
) -> None:
    where %= len(comment) + 1
    line = f"{GENUINE_LINE} x{comment[:where]}{char}{comment[where:]}x"
    problem = refused(line, "key-control-character")
    assert f"U+{ord(char):04X}" in problem.message
    assert char not in problem.message


@PROPERTY
@given(st.text(VISIBLE, min_size=1, max_size=20), st.sampled_from(LINE_BREAKS))
def test_property_line_breaks_in_comments_refused(comment: str, char: str) -> None:
    refused(f"{GENUINE_LINE} a{char}{comment}b", "key-newline")


@PROPERTY
@given(st.text(VISIBLE, min_size=1, max_size=30))
def test_property_visible_comments_accepted(comment: str) -> None:
    assume("AAAA" not in comment)
    text = comment.strip()
    assume(text and unicodedata.category(text[0]) != "Zs")
    key, _ = parse(f"{GENUINE_LINE} {text}")
    assert key.comment == text
