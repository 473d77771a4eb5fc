"""A strict reader of the authorized_keys files this tool renders: the check before staging.

The templates are the only place with OpenSSH syntax, and a site may override them
(`templates_dir`); validation and the render-time check filters are meant to make a wrong
line impossible. This is the last look before a file can reach sshd: a rendered file must read
back as comment lines and, in order, exactly one line per validated key of its channel,

    restrict[,from="<entries>"][,expiry-time="YYYYMMDDHHMMZ"] <type> <base64> [<comment>]

with that key's own blob, addresses and expiry. Anything else (a line sshd would read as a
key or as options we did not write, a key that was not declared, a key twice, a missing key)
is an `AuthorizedKeysMismatch`: an internal error that aborts the channel.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from provisioner.encoding import LINE_BREAKS, RenderingError


class AuthorizedKeysMismatch(RenderingError):
    """A rendered authorized_keys file is not exactly the validated keys of its channel."""


@dataclass(frozen=True, slots=True)
class KeyLine:
    """One key line as read back."""

    from_: tuple[str, ...] | None
    expiry_time: str | None
    algorithm: str
    blob: bytes
    comment: str


@dataclass(frozen=True, slots=True)
class ExpectedKey:
    """What the line of one validated key must say."""

    algorithm: str
    blob: bytes
    from_: tuple[str, ...] | None
    expiry_time: str | None


_KEY_LINE = re.compile(
    r"restrict"
    r'(?:,from="(?P<from>[0-9A-Fa-f.:/!,]+)")?'
    r'(?:,expiry-time="(?P<expiry>[0-9]{12}Z)")?'
    r" (?P<type>[a-z0-9][a-z0-9@.-]*)"
    r" (?P<b64>[A-Za-z0-9+/]+={0,2})"
    r"(?: (?P<comment>\S.*))?"
)
# Comment lines: printable ASCII only (the header and the fingerprints are all we write).
_COMMENT = re.compile(r"#[\x20-\x7e]*")


def _fail(line: int, why: str) -> AuthorizedKeysMismatch:
    # Never the line's content: it may be anything, and this message goes to logs and mail.
    return AuthorizedKeysMismatch(f"line {line}: {why}")


def _address(entry: str, line: int) -> str:
    body = entry[1:] if entry.startswith("!") else entry
    try:
        canonical = str(ipaddress.ip_network(body, strict=True))
    except ValueError:
        raise _fail(line, "a from= entry is not an address or network") from None
    if canonical != body:
        raise _fail(line, "a from= entry is not in its normalised form")
    return entry


def _blob_type(blob: bytes) -> str | None:
    if len(blob) < 4:
        return None
    (size,) = struct.unpack(">I", blob[:4])
    name = blob[4 : 4 + size]
    if len(name) != size:
        return None
    try:
        return name.decode("ascii")
    except UnicodeDecodeError:
        return None


def parse(content: bytes) -> list[KeyLine]:
    """The key lines of a rendered file; raises `AuthorizedKeysMismatch` on any other line."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthorizedKeysMismatch("the file is not UTF-8") from None
    if text and not text.endswith("\n"):
        raise AuthorizedKeysMismatch("the last line does not end with a newline")
    keys: list[KeyLine] = []
    for number, line in enumerate(text.split("\n")[:-1] if text else [], 1):
        if LINE_BREAKS.intersection(line):
            raise _fail(number, "a line holds a line break or NUL that is not a newline")
        if line == "" or _COMMENT.fullmatch(line):
            continue
        match = _KEY_LINE.fullmatch(line)
        if match is None:
            raise _fail(number, "neither a comment nor a restricted key line")
        try:
            blob = base64.b64decode(match["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise _fail(number, "the key data is not base64") from None
        if _blob_type(blob) != match["type"]:
            raise _fail(number, "the key data does not hold a key of the named type")
        from_ = (
            tuple(_address(e, number) for e in match["from"].split(","))
            if match["from"] is not None
            else None
        )
        keys.append(KeyLine(from_, match["expiry"], match["type"], blob, match["comment"] or ""))
    return keys


def check_rendering(content: bytes, expected: Sequence[ExpectedKey]) -> None:
    """Raise `AuthorizedKeysMismatch` unless `content` holds exactly `expected`, in order."""
    found = parse(content)
    blobs = [k.blob for k in found]
    if len(set(blobs)) != len(blobs):
        raise AuthorizedKeysMismatch("a key appears on more than one line")
    if len(found) != len(expected):
        raise AuthorizedKeysMismatch(
            f"{len(found)} key lines where the channel declares {len(expected)} keys"
        )
    for index, (got, want) in enumerate(zip(found, expected, strict=True), 1):
        if (got.algorithm, got.blob) != (want.algorithm, want.blob):
            raise AuthorizedKeysMismatch(f"key line {index} is not the declared key {index}")
        if got.from_ != want.from_ or got.expiry_time != want.expiry_time:
            raise AuthorizedKeysMismatch(
                f"key line {index} does not carry the from= or expiry-time= of its declaration"
            )
