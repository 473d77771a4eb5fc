"""OpenSSH public key entries, as administrators declare them for an SFTP channel.

An entry is the single line found in a ``.pub`` file: ``type base64 [comment]``. Parsing is
strict, because whatever is accepted here ends up in the SFTP server's ``authorized_keys`` and is
what a payroll package will log in with. Every refusal is a :class:`KeyProblem` whose ``code`` is
stable (tools and tests match on it) and whose ``message`` tells the administrator what to do.

Beyond the syntax, a key must be a key: an entry is refused when its public key lets someone
other than its owner log in (an Ed25519 point of small order, an RSA modulus with a small factor
or a perfect power, a tiny RSA exponent) or was crafted rather than generated (a non-canonical or
mixed-order Ed25519 point, an even exponent), and a comment may not hide invisible or
bidirectional characters.

The module is pure: no I/O, no global state (the small-prime tables are computed once, on first
use), and nothing but :class:`KeyProblem` escapes :func:`parse_public_key` for any ``str``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import itertools
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Final, NoReturn

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from provisioner.encoding import character_problem, describe_character
from provisioner.errors import CodedProblem

__all__ = [
    "ACCEPTED_KEY_TYPES",
    "RSA_MAX_BITS",
    "RSA_MIN_BITS",
    "RSA_RECOMMENDED_BITS",
    "KeyProblem",
    "KeyWarning",
    "PublicKey",
    "parse_public_key",
]

ED25519: Final = "ssh-ed25519"
SK_ED25519: Final = "sk-ssh-ed25519@openssh.com"
SK_ECDSA_P256: Final = "sk-ecdsa-sha2-nistp256@openssh.com"
RSA: Final = "ssh-rsa"
DSA: Final = "ssh-dss"

# Key type -> (curve name inside the blob, curve, field size in bits). The blob repeats the curve
# name after the type; OpenSSH refuses a blob where the two disagree, and so do we.
_ECDSA_CURVES: Final[dict[str, tuple[str, ec.EllipticCurve, int]]] = {
    "ecdsa-sha2-nistp256": ("nistp256", ec.SECP256R1(), 256),
    "ecdsa-sha2-nistp384": ("nistp384", ec.SECP384R1(), 384),
    "ecdsa-sha2-nistp521": ("nistp521", ec.SECP521R1(), 521),
    SK_ECDSA_P256: ("nistp256", ec.SECP256R1(), 256),
}

ACCEPTED_KEY_TYPES: Final[tuple[str, ...]] = (
    ED25519,
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    SK_ED25519,
    SK_ECDSA_P256,
    RSA,
)
_ACCEPTED: Final = frozenset(ACCEPTED_KEY_TYPES)
_ACCEPTED_LIST: Final = ", ".join(ACCEPTED_KEY_TYPES)

RSA_MIN_BITS: Final = 2048
RSA_RECOMMENDED_BITS: Final = 3072
# OpenSSH itself refuses larger moduli (OPENSSH_RSA_MAX_MODULUS_SIZE), so such a key could never
# log in; refusing it here also bounds the big-integer work an entry can cause.
RSA_MAX_BITS: Final = 16384
# Base64 of a 16384-bit RSA blob is under 2,800 characters; anything far larger is not a key and
# must not cost decoding time.
_MAX_BASE64_CHARS: Final = 8192

_GENERATE_HINT: Final = "generate a new key pair with `ssh-keygen -t ed25519`"
_GENERATE_SK_HINT: Final = "generate a new key on the security key with `ssh-keygen -t ed25519-sk`"

# Known type names, including refused ones, so that a second key hidden in the comment is
# recognised whatever its type.
_ALL_KNOWN_TYPES: Final = (
    *ACCEPTED_KEY_TYPES,
    DSA,
    "ssh-ed448",
    "ssh-rsa-cert-v01@openssh.com",
    "ssh-dss-cert-v01@openssh.com",
    "ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
)


def _blob_prefix(key_type: str) -> str:
    """The base64 characters every blob of ``key_type`` starts with.

    Only whole 3-byte groups are kept, since the characters after them depend on the key bytes.
    """
    head = len(key_type).to_bytes(4, "big") + key_type.encode("ascii")
    return base64.b64encode(head[: len(head) // 3 * 3]).decode("ascii")


_BLOB_PREFIXES: Final[tuple[str, ...]] = tuple(_blob_prefix(t) for t in _ALL_KNOWN_TYPES)

# Private keys are recognised by their armour, by PuTTY's header, or by the base64 of
# "openssh-key-v1" that starts an OpenSSH private key even when its BEGIN/END lines were lost.
_PRIVATE_KEY = re.compile(
    r"-{4,5}\s*(?:BEGIN|END)[A-Z0-9 ]*PRIVATE"
    r"|PuTTY-User-Key-File-"
    r"|b3BlbnNzaC1rZXktdjE"
)
_SSH2_PUBLIC = re.compile(r"-{4}\s*BEGIN SSH2 PUBLIC KEY")
_PEM_PUBLIC = re.compile(r"-----\s*BEGIN (?:RSA )?PUBLIC KEY")
_X509 = re.compile(r"-----\s*BEGIN (?:X509 |TRUSTED )?CERTIFICATE")

# Everything str.splitlines() breaks on, plus NUL: any of them inside an authorized_keys entry
# would either split it into two entries or be cut off by the server.
_LINE_BREAK = re.compile("[\n\r\x00\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
# The characters an entry may contain without a closer look: printable ASCII and the tab.
_NOT_PLAIN = re.compile("[^\t\x20-\x7e]")
_KEY_LINE = re.compile(r"(?:^|\s)(?:ssh|ecdsa|sk)-[A-Za-z0-9@.-]+\s+AAAA[A-Za-z0-9+/]")
_SECOND_KEY = re.compile(r"(?:^|\s)(?:ssh|ecdsa|sk|rsa)-[A-Za-z0-9@.-]+\s+AAAA")
_TYPE_IN_BASE64 = re.compile(r"(?:ssh|ecdsa|sk)-[a-z0-9]")
# Only strings of this shape are ever quoted back in a message: they cannot be base64 (which has
# no '-'), so a pasted secret is never echoed.
_TYPE_NAME = re.compile(r"[a-z0-9][a-z0-9@._+]*-[a-z0-9@._+-]*")

_FLAG_OPTIONS: Final = (
    "agent-forwarding|cert-authority|no-agent-forwarding|no-port-forwarding|no-pty|no-user-rc|"
    "no-x11-forwarding|no-touch-required|port-forwarding|pty|restrict|user-rc|verify-required|"
    "x11-forwarding|touch-required"
)
_VALUE_OPTIONS: Final = (
    "command|environment|expiry-time|from|permitlisten|permitopen|principals|tunnel"
)
_OPTIONS = re.compile(
    rf"(?P<flag>{_FLAG_OPTIONS})(?=[,\s]|$)|(?P<value>{_VALUE_OPTIONS})\s*=",
    re.IGNORECASE,
)


class KeyProblem(CodedProblem):
    """A refused key entry. The message never quotes the entry when it looks like a private
    key."""


@dataclass(frozen=True, slots=True)
class KeyWarning:
    """An accepted entry that the administrator should still improve."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class PublicKey:
    """One validated OpenSSH public key."""

    algorithm: str
    blob: bytes
    comment: str
    bits: int

    @property
    def fingerprint(self) -> str:
        """``SHA256:…`` exactly as ``ssh-keygen -lf`` prints it.

        The blob was parsed strictly (minimal integers, no trailing bytes), so it equals the
        re-serialisation ssh-keygen hashes.
        """
        digest = hashlib.sha256(self.blob).digest()
        return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")

    @property
    def base64(self) -> str:
        return base64.b64encode(self.blob).decode("ascii")

    def openssh(self, comment: bool = True) -> str:
        """The canonical ``algorithm base64 [comment]`` line."""
        line = f"{self.algorithm} {self.base64}"
        if comment and self.comment:
            return f"{line} {self.comment}"
        return line


def parse_public_key(text: str) -> tuple[PublicKey, list[KeyWarning]]:
    """Parse one authorized-key entry (a single OpenSSH public key line).

    Surrounding whitespace, including the final newline of a ``.pub`` file and a byte-order mark,
    is ignored. Raises :class:`KeyProblem`.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_public_key expects str, not {type(text).__name__}")
    _refuse_foreign_formats(text)

    entry = text.strip().strip("\ufeff").strip()
    if not entry:
        raise KeyProblem("key-empty", "the SSH key entry is empty: paste the line of the .pub file")
    # isprintable() is false for every line break and control character (and for tabs and
    # non-ASCII spaces, which are fine): one C-speed pass spares the regular expressions for
    # the usual plain-ASCII line.
    if not (entry.isascii() and entry.isprintable()):
        if _LINE_BREAK.search(entry):
            _refuse_line_breaks(entry)
        _refuse_invisible(entry)

    # Any whitespace separates the fields (a non-breaking space pasted from a web page too); the
    # comment keeps its inner spacing.
    fields = entry.split(None, 2)
    key_type = fields[0]
    if key_type not in _ACCEPTED:
        _refuse_key_type(entry, fields)
    if len(fields) < 2:
        raise KeyProblem(
            "key-malformed",
            f"the key data is missing after '{key_type}': an entry reads "
            "'type base64-data [comment]', as in the .pub file",
        )
    encoded = fields[1]
    comment = fields[2] if len(fields) > 2 else ""

    blob = _decode_base64(encoded)
    bits = _parse_blob(key_type, blob)
    _check_comment(comment)

    key = PublicKey(algorithm=key_type, blob=blob, comment=comment, bits=bits)
    return key, _warnings(key)


def _refuse_foreign_formats(text: str) -> None:
    # Cheap substring tests first: the regular expressions only run on the rare entry that has
    # an armour line or a PuTTY header at all.
    if "----" not in text and "PuTTY" not in text and "b3BlbnNzaC1rZXktdjE" not in text:
        return
    if _PRIVATE_KEY.search(text):
        raise KeyProblem(
            "key-private",
            "this is a private key; never share it (consider it compromised now that it was "
            "pasted here) — generate a new key pair and declare only the .pub part",
        )
    if _SSH2_PUBLIC.search(text):
        raise KeyProblem(
            "key-ssh2-format",
            "this public key is in the SSH2 (RFC 4716 / PuTTY export) format, which is not "
            "supported: convert it with `ssh-keygen -i -f key.pub` and declare the resulting "
            "one-line OpenSSH key",
        )
    if _PEM_PUBLIC.search(text):
        raise KeyProblem(
            "key-pem-format",
            "this public key is in PEM format, which is not supported: convert it with "
            "`ssh-keygen -i -m PKCS8 -f key.pem` and declare the resulting one-line OpenSSH key",
        )
    if _X509.search(text):
        raise KeyProblem(
            "key-x509-certificate",
            "this is an X.509 certificate, not an SSH key: declare it as the channel's "
            "certificate, and put the line of the .pub file here",
        )


def _refuse_line_breaks(entry: str) -> NoReturn:
    lines = _LINE_BREAK.split(entry)
    if sum(1 for line in lines if _KEY_LINE.search(line)) >= 2:
        raise KeyProblem(
            "key-multiple",
            "this entry holds more than one key: declare each key as a separate entry",
        )
    raise KeyProblem(
        "key-newline",
        "the SSH key entry contains a line break or NUL character: an OpenSSH public key is a "
        "single line — copy it again without wrapping",
    )


def _refuse_invisible(entry: str) -> None:
    """Refuse control, invisible, bidirectional and default-ignorable characters.

    They can only sit in the comment (or between the fields): the type and the base64 data are
    ASCII. The same rule as for every free-text field of a declaration, tabs aside; the message
    names the character as U+XXXX and never contains it.
    """
    for match in _NOT_PLAIN.finditer(entry):
        char = match.group()
        if unicodedata.category(char) == "Cs":
            continue  # a lone surrogate is not text at all: the comment check says so
        reason = character_problem(char)
        if reason is not None:
            fields = entry.split(None, 2)
            in_comment = len(fields) == 3 and match.start() >= len(entry) - len(fields[2])
            raise KeyProblem(
                "key-control-character",
                f"the SSH key entry contains {describe_character(char)}, {reason}, "
                f"{'in' if in_comment else 'outside'} its comment, which could make the "
                "line read differently in a review than on the server; "
                + (
                    "retype the comment without it"
                    if in_comment
                    else "copy the line of the .pub file again as plain text"
                ),
            )


def _refuse_key_type(entry: str, fields: list[str]) -> NoReturn:
    key_type = fields[0]
    if key_type == DSA:
        raise KeyProblem(
            "key-dsa",
            "DSA (ssh-dss) keys are refused: they are limited to 1024 bits and current OpenSSH "
            f"servers no longer accept them — {_GENERATE_HINT}",
        )
    if key_type.endswith("-cert-v01@openssh.com") and _TYPE_NAME.fullmatch(key_type):
        raise KeyProblem(
            "key-unsupported",
            f"the key type '{key_type}' is an OpenSSH certificate, which is not supported here: "
            "declare the plain public key (the .pub file without -cert)",
        )
    option = _OPTIONS.match(entry)
    if option is not None or (
        any(c in key_type for c in '=,"') and any(t in _ACCEPTED for t in entry.split())
    ):
        found = (
            ""
            if option is None
            else f" (found '{(option.group('flag') or option.group('value') + '=').lower()}')"
        )
        raise KeyProblem(
            "key-options",
            f"options before the key type are not accepted{found}: the provisioner sets the "
            "login options itself, and the allowed source addresses and the expiry date have "
            "their own fields (from, expires); declare only 'type base64-data [comment]'",
        )
    second = fields[1] if len(fields) > 1 else ""
    if _TYPE_NAME.fullmatch(key_type) and len(key_type) <= 64 and second.startswith("AAAA"):
        raise KeyProblem(
            "key-unsupported",
            f"the key type '{key_type}' is not supported; accepted types: {_ACCEPTED_LIST}",
        )
    if key_type.startswith(_BLOB_PREFIXES):
        raise KeyProblem(
            "key-malformed",
            "the key type is missing at the start of the entry: it must read "
            "'type base64-data [comment]', e.g. 'ssh-ed25519 AAAA… comment'",
        )
    raise KeyProblem(
        "key-malformed",
        "this is not an OpenSSH public key: an entry reads 'type base64-data [comment]', "
        "exactly as the single line of the .pub file",
    )


def _decode_base64(encoded: str) -> bytes:
    damaged = KeyProblem(
        "key-malformed",
        "the base64 key data is damaged or incomplete: copy the line of the .pub file again",
    )
    if len(encoded) > _MAX_BASE64_CHARS:
        raise damaged
    try:
        if not encoded.isascii():
            raise binascii.Error
        blob = binascii.a2b_base64(encoded, strict_mode=True)
    except binascii.Error:
        # Two keys pasted without a space between them fail here, with a type name inside.
        if _TYPE_IN_BASE64.search(encoded):
            raise _multiple() from None
        raise damaged from None
    # Re-encoding must give the text back: OpenSSH refuses stray bits after the last byte, and
    # the canonical line we write must be the one the administrator declared.
    if base64.b64encode(blob).decode("ascii") != encoded:
        raise damaged
    return blob


def _multiple() -> KeyProblem:
    return KeyProblem(
        "key-multiple",
        "this entry holds more than one key: declare each key as a separate entry",
    )


class _Truncated(Exception):
    """The blob ended inside a field; turned into ``key-malformed`` by the caller."""


def _read_string(blob: bytes, offset: int) -> tuple[bytes, int]:
    end = offset + 4
    if end > len(blob):
        raise _Truncated
    size = int.from_bytes(blob[offset:end], "big")
    stop = end + size
    if stop > len(blob):
        raise _Truncated
    return blob[end:stop], stop


def _read_mpint(blob: bytes, offset: int) -> tuple[int, int]:
    raw, offset = _read_string(blob, offset)
    if raw and raw[0] & 0x80:
        raise _Truncated  # negative: never valid for a key component
    if len(raw) > 1 and raw[0] == 0 and not raw[1] & 0x80:
        # A non-minimal encoding would make our fingerprint differ from ssh-keygen's, which
        # hashes the re-serialised (minimal) form.
        raise _Truncated
    return int.from_bytes(raw, "big"), offset


def _parse_blob(key_type: str, blob: bytes) -> int:
    """Validate the wire blob of an accepted type; returns the key size in bits."""
    try:
        inner_type, offset = _read_string(blob, 0)
        if inner_type != key_type.encode("ascii"):
            raise _type_mismatch(key_type, inner_type)
        if key_type == RSA:
            bits, offset = _parse_rsa(blob, offset)
        elif key_type in (ED25519, SK_ED25519):
            public, offset = _read_string(blob, offset)
            if len(public) != 32:
                raise _malformed("an Ed25519 key must hold exactly 32 bytes")
            _check_ed25519_point(
                public, _GENERATE_SK_HINT if key_type == SK_ED25519 else _GENERATE_HINT
            )
            bits = 256
        else:
            bits, offset = _parse_ecdsa(key_type, blob, offset)
        if key_type.startswith("sk-"):
            application, offset = _read_string(blob, offset)
            if b"\x00" in application:
                raise _malformed("the security-key application name is invalid")
    except _Truncated:
        raise _malformed("the key data is truncated or damaged") from None
    if offset != len(blob):
        raise _malformed("unexpected bytes follow the key")
    return bits


def _parse_rsa(blob: bytes, offset: int) -> tuple[int, int]:
    exponent, offset = _read_mpint(blob, offset)
    modulus, offset = _read_mpint(blob, offset)
    bits = modulus.bit_length()
    if bits > RSA_MAX_BITS:
        raise KeyProblem(
            "key-rsa-too-long",
            f"this RSA key has {bits} bits, more than OpenSSH accepts ({RSA_MAX_BITS}); "
            f"generate a key of 3072 or 4096 bits, or {_GENERATE_HINT}",
        )
    _check_rsa_exponent(exponent, modulus)
    if bits < RSA_MIN_BITS:
        raise KeyProblem(
            "key-rsa-too-short",
            f"this RSA key has only {bits} bits; at least {RSA_MIN_BITS} are required "
            f"({RSA_RECOMMENDED_BITS} or more recommended) — {_GENERATE_HINT}",
        )
    _check_rsa_modulus(modulus)
    return bits, offset


# ssh-keygen, OpenSSL and cryptography use 65537 (F4) and FIPS 186-5 requires e > 2^16; older
# PuTTYgen versions used 37, so such keys exist and are told apart in the message.
_RSA_MIN_EXPONENT: Final = 65537


def _check_rsa_exponent(exponent: int, modulus: int) -> None:
    if exponent == 1:
        raise KeyProblem(
            "key-rsa-exponent",
            "this RSA key's public exponent is 1: every message is then its own signature, so "
            f"anyone could log in with it — {_GENERATE_HINT}",
        )
    if exponent < _RSA_MIN_EXPONENT:
        raise KeyProblem(
            "key-rsa-exponent",
            f"this RSA key's public exponent is {exponent}; exponents below "
            f"{_RSA_MIN_EXPONENT} are refused, since small exponents open the way to known "
            "signature forgeries (ssh-keygen uses 65537; keys made by older PuTTYgen versions "
            f"have 37) — {_GENERATE_HINT}",
        )
    if exponent % 2 == 0:
        raise KeyProblem(
            "key-rsa-exponent",
            "this RSA key's public exponent is even, so no private key can belong to it: the "
            f"line was crafted or damaged — {_GENERATE_HINT}",
        )
    if exponent >= modulus:
        raise KeyProblem(
            "key-rsa-exponent",
            "this RSA key's public exponent is not smaller than its modulus, which no key "
            f"generator produces: the line was crafted or damaged — {_GENERATE_HINT}",
        )


# Trial division bound: a modulus with a prime factor below it is factored in microseconds.
_SMALL_PRIME_BOUND: Final = 1 << 16


@functools.cache
def _small_primes() -> tuple[int, ...]:
    sieve = bytearray([1]) * _SMALL_PRIME_BOUND
    sieve[:2] = b"\x00\x00"
    for i in range(2, math.isqrt(_SMALL_PRIME_BOUND) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytes(len(range(i * i, _SMALL_PRIME_BOUND, i)))
    return tuple(itertools.compress(range(_SMALL_PRIME_BOUND), sieve))


@functools.cache
def _small_prime_product() -> int:
    # A product tree keeps the multiplications balanced: 3x faster than a running product.
    level = list(_small_primes())
    while len(level) > 1:
        level = [math.prod(level[i : i + 2]) for i in range(0, len(level), 2)]
    return level[0]


@functools.cache
def _power_residue_primes(k: int) -> tuple[int, ...]:
    """Small primes q = 1 (mod k): n mod q is a k-th power residue if n is a k-th power.

    A random modulus passes each test with probability 1/k, so taking enough primes for about
    20 bits of filtering leaves the exact root computation to the rare survivor.
    """
    wanted = math.ceil(20 / math.log2(k))
    return tuple(itertools.islice((q for q in _small_primes() if q % k == 1), wanted))


def _iroot(n: int, k: int) -> int:
    """The integer k-th root of n (k >= 2), rounded down."""
    # A float estimate good to ~40 bits, nudged above the root, then Newton's iteration, which
    # decreases monotonically to the floor of the root from any upper bound.
    estimate = math.log2(n) / k
    shift = max(0, int(estimate) - 60)
    x = int(2.0 ** (estimate - shift)) << shift
    x += (x >> 30) + 2
    while True:
        y = ((k - 1) * x + n // x ** (k - 1)) // k
        if y >= x:
            return x
        x = y


def _perfect_power_exponent(n: int) -> int | None:
    """The prime k with n = m**k for an integer m, or None.

    Only called once n has no prime factor below 2**16, so m >= 2**16 and k <= bits/16; and
    n = m**(a*b) is an a-th power too, so prime exponents suffice.
    """
    limit = n.bit_length() // 16
    for k in itertools.takewhile(lambda k: k <= limit, _small_primes()):
        residues = all(pow(n % q, (q - 1) // k, q) == 1 for q in _power_residue_primes(k))
        if residues and _iroot(n, k) ** k == n:
            return k
    return None


def _check_rsa_modulus(modulus: int) -> None:
    common = math.gcd(modulus, _small_prime_product())
    if common != 1:
        factor = next(q for q in _small_primes() if common % q == 0)
        raise KeyProblem(
            "key-rsa-weak-modulus",
            f"this RSA key's modulus is divisible by {factor}: anyone can divide it out and "
            "compute the private key, so anyone could log in with it — it is not a usable "
            f"key; {_GENERATE_HINT}",
        )
    exponent = _perfect_power_exponent(modulus)
    if exponent is not None:
        raise KeyProblem(
            "key-rsa-weak-modulus",
            f"this RSA key's modulus is a perfect power (a number to the power {exponent}), "
            "not the product of two primes: its private key can be computed from the public "
            f"key, so anyone could log in with it — {_GENERATE_HINT}",
        )


# --- Ed25519 points ------------------------------------------------------------------------
#
# Edwards25519: -x^2 + y^2 = 1 + d x^2 y^2 over GF(p); its group of points is cyclic of order
# 8 * _ED25519_L, and genuine public keys lie in the subgroup of prime order _ED25519_L. The 32
# bytes are y (255 bits, little-endian) and the sign bit of x.
_ED25519_P: Final = 2**255 - 19
_ED25519_L: Final = 2**252 + 27742317777372353535851937790883648493
_ED25519_D: Final = -121665 * pow(121666, -1, _ED25519_P) % _ED25519_P
# The y coordinates of the 8 points whose order divides 8 (the identity, one point of order 2,
# two of order 4, four of order 8). A point is determined by y up to the sign of x, and both
# signs of these y are small-order points, so y alone decides, whatever the sign bit says.
_ED25519_TORSION_Y: Final = frozenset(
    {
        0,
        1,
        _ED25519_P - 1,
        2707385501144840649318225287225658788936804267575313519463743609750303402022,
        55188659117513257062467267217118295137698188065244968500265048394206261417927,
    }
)


# Subgroup membership in one X25519 scalar multiplication (C speed, a few tens of microseconds,
# where pure-Python point arithmetic takes milliseconds). The Montgomery u = (1+y)/(1-y) of the
# point P is multiplied by k = 5L - 1, which X25519's clamping leaves unchanged (bit 254 set,
# k = 0 mod 8). Writing P = Q + T with Q in the prime-order subgroup and T of order dividing 8:
# kP = -Q, since 8 | k and k = -1 mod L. So u(kP) = u(P) exactly when T is the identity. For a
# u that is not on the curve but on its twist (order 4 * prime, the y has no x), u(kP) = u(P)
# would need k +- 1 to be 0 mod that prime, which it is not, so the ladder tells those apart too.
def _subgroup_scalar() -> x25519.X25519PrivateKey | None:
    try:
        return x25519.X25519PrivateKey.from_private_bytes(
            (5 * _ED25519_L - 1).to_bytes(32, "little")
        )
    except UnsupportedAlgorithm:  # an OpenSSL without X25519 (FIPS mode): see below
        return None


_ED25519_SUBGROUP_SCALAR: Final = _subgroup_scalar()


def _check_ed25519_point(public: bytes, hint: str) -> None:
    """Refuse an Ed25519 public key that is not a point of the prime-order subgroup."""
    p = _ED25519_P
    y = int.from_bytes(public, "little") & ((1 << 255) - 1)
    if y % p in _ED25519_TORSION_Y:
        # OpenSSH reduces y modulo p, so a non-canonical encoding of these is just as usable.
        raise KeyProblem(
            "key-ed25519-small-order",
            "this Ed25519 key is a point of small order (the identity or another of the "
            "curve's 8 torsion points), not a real public key: a constant forged signature "
            "verifies against it for every message, so anyone could log in with it without a "
            f"private key — {hint}",
        )
    if y >= p:
        raise KeyProblem(
            "key-ed25519-non-canonical",
            "this Ed25519 key is not canonically encoded (its y coordinate is not reduced "
            "modulo 2^255-19): no key generator writes it, and the same point has a second, "
            f"canonical encoding, so the line was crafted or damaged — {hint}",
        )
    scalar = _ED25519_SUBGROUP_SCALAR
    if scalar is not None:
        u = ((1 + y) * pow(1 - y, -1, p) % p).to_bytes(32, "little")
        try:
            image = scalar.exchange(x25519.X25519PublicKey.from_public_bytes(u))
        except ValueError:  # an all-zero result: small order, which the table already caught
            image = b""
        if image == u:
            return
    # With X25519 the key is refused by now; one square-root test tells off-curve from mixed.
    x_squared = (y * y - 1) * pow(_ED25519_D * y * y + 1, -1, p) % p
    if pow(x_squared, (p - 1) // 2, p) != 1:
        raise _malformed(
            "the Ed25519 key is not a point of the curve, so no signature can ever verify "
            "against it"
        )
    if scalar is None:
        return  # without X25519 only the curve is checked: a mixed-order point gets through
    raise KeyProblem(
        "key-ed25519-mixed-order",
        "this Ed25519 key lies outside the prime-order group every real Ed25519 key belongs to "
        "(a small-order point was added to it): no key generator produces it; OpenSSH would "
        f"still accept it, libsodium refuses it, and so does this check — {hint}",
    )


def _parse_ecdsa(key_type: str, blob: bytes, offset: int) -> tuple[int, int]:
    curve_name, curve, bits = _ECDSA_CURVES[key_type]
    inner_curve, offset = _read_string(blob, offset)
    if inner_curve != curve_name.encode("ascii"):
        raise _type_mismatch(key_type, inner_curve, what="curve")
    point, offset = _read_string(blob, offset)
    # OpenSSH only exchanges uncompressed points (0x04 || X || Y).
    if len(point) != 1 + 2 * ((bits + 7) // 8) or point[0] != 4:
        raise _malformed("the ECDSA public point has the wrong size or encoding")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    except ValueError:
        raise _malformed("the ECDSA public point is not on the curve") from None
    return bits, offset


def _type_mismatch(key_type: str, inner: bytes, what: str = "type") -> KeyProblem:
    shown = inner.decode("ascii", "replace")
    label = f"'{shown}'" if len(shown) <= 64 and _TYPE_NAME.fullmatch(shown) else "something else"
    return KeyProblem(
        "key-type-mismatch",
        f"the entry says '{key_type}' but the key data holds {label} as its {what}: the line "
        "was edited or assembled from two keys — copy it again unchanged from the .pub file",
    )


def _malformed(detail: str) -> KeyProblem:
    return KeyProblem(
        "key-malformed",
        f"the key data is not a valid public key ({detail}): copy the line of the .pub file again",
    )


def _check_comment(comment: str) -> None:
    if "AAAA" in comment and (
        _SECOND_KEY.search(comment)
        or any(token.startswith(_BLOB_PREFIXES) for token in comment.split())
    ):
        raise _multiple()
    if not comment.isascii():
        try:
            comment.encode("utf-8")
        except UnicodeEncodeError:
            raise KeyProblem(
                "key-malformed",
                "the comment after the key is not valid text; retype it or leave it out",
            ) from None


def _warnings(key: PublicKey) -> list[KeyWarning]:
    warnings: list[KeyWarning] = []
    if key.algorithm == RSA and key.bits < RSA_RECOMMENDED_BITS:
        warnings.append(
            KeyWarning(
                "key-rsa-below-3072",
                f"this RSA key has {key.bits} bits: it is accepted, but {RSA_RECOMMENDED_BITS} "
                "bits or more is recommended; plan to replace it, preferably with an Ed25519 "
                "key (`ssh-keygen -t ed25519`)",
            )
        )
    if key.algorithm.startswith("sk-"):
        warnings.append(
            KeyWarning(
                "key-security-key",
                "this key lives on a hardware security key (FIDO): every login needs the token "
                "plugged in and usually touched, which unattended batch transfers cannot do — "
                "make sure the sending software supports it",
            )
        )
    return warnings
