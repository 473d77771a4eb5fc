"""One rule for every value that reaches a rendered file, and a check per target syntax.

Declarations are hostile input: a value that reaches authorized_keys, passwd, a notification
or the overview must be exactly what its target syntax allows. Validation refuses anything
else with file:line (`free_text_problem` for free text; `models.py` for addresses and names);
the check filters registered here in the template environment then verify, at render time,
that every value a template writes is of that shape, and raise `RenderingError` when one is
not. They never escape: a value that reaches a filter unvalidated is a bug, and a bug must
stop the rendering rather than write something sshd or NSS reads differently.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any

import jinja2

from provisioner.errors import InternalError


class RenderingError(InternalError):
    """A value reached a template that its target syntax does not allow: a bug upstream."""


# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties.txt) that are not already of a
# refused general category below: combining grapheme joiner, Hangul fillers, Khmer inherent
# vowels, Mongolian free variation selectors, variation selectors. They render as nothing, so a
# name would read one way in a review and another in a mail or on the overview.
_IGNORABLE_RANGES: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)

_CATEGORY_REASONS = {
    "Cc": "a control character",
    "Cf": "an invisible formatting character",
    "Cs": "a lone surrogate",
    "Co": "a private-use character",
    "Cn": "an unassigned code point",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}

_NAMES = {
    0x00: "NULL",
    0x09: "CHARACTER TABULATION",
    0x0A: "LINE FEED",
    0x0B: "LINE TABULATION",
    0x0C: "FORM FEED",
    0x0D: "CARRIAGE RETURN",
    0x1B: "ESCAPE",
    0x7F: "DELETE",
    0x85: "NEXT LINE",
}


def describe_character(char: str) -> str:
    """``U+000A (LINE FEED)``: how a refused character is named in a message, never echoed."""
    code = ord(char)
    name = _NAMES.get(code) or unicodedata.name(char, "")
    return f"U+{code:04X}" + (f" ({name})" if name else "")


def _refused_reason(char: str) -> str | None:
    code = ord(char)
    if 0x20 <= code < 0x7F:
        return None  # printable ASCII: the common case, decided without a table
    reason = _CATEGORY_REASONS.get(unicodedata.category(char))
    if reason is not None:
        return reason
    if any(low <= code <= high for low, high in _IGNORABLE_RANGES):
        return "an invisible character"
    return None


def character_problem(char: str) -> str | None:
    """Why ``char`` may not appear in text a reviewer reads, or None: the rule of
    `free_text_problem`, for parsers that word their own message (key comments, keys.py)."""
    return _refused_reason(char)


def free_text_problem(value: str) -> str | None:
    """Why `value` cannot be free text (a name, a function), or None when it can.

    Letters of any script, accents, digits, punctuation and spaces are kept; control
    characters (C0, C1, DEL), line and paragraph separators, and invisible, bidirectional
    and other default-ignorable characters are refused. The message names the first such
    character as U+XXXX, never the character itself.
    """
    if value.isascii() and value.isprintable():
        return None
    for char in value:
        reason = _refused_reason(char)
        if reason is not None:
            return (
                f"this text contains {describe_character(char)}, {reason}; write it on one "
                "line, without control, invisible or bidirectional characters"
            )
    return None


# --- check filters -------------------------------------------------------------------------


def _fail(syntax: str, value: object) -> RenderingError:
    # The value is not echoed: it is exactly what must not reach a file or a log unescaped.
    return RenderingError(
        f"a value of type {type(value).__name__} is not a valid {syntax} value; validation "
        "should have refused it (this is a bug)"
    )


def _text(value: object, syntax: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _fail(syntax, value)
    return str(value)


# Option values inside double quotes (expiry-time="..."): sshd's opt_dequote ends the value at
# the first '"' and treats '\' as an escape; nothing here ever needs either, nor a space.
_OPTION_VALUE = re.compile(r"[A-Za-z0-9.:/!+_-]+")
_KEY_TYPE = re.compile(r"[a-z0-9][a-z0-9@.-]*")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
# passwd(5), group(5), shadow(5): ':' separates fields, a newline ends the entry.
_DB_FIELD = re.compile(r"[A-Za-z0-9 ._/@+-]*")
_DB_MEMBER = re.compile(r"[A-Za-z0-9._-]+")


def authorized_keys_option(value: object) -> str:
    """A value inside an authorized_keys option's double quotes."""
    text = _text(value, "authorized_keys option")
    if not _OPTION_VALUE.fullmatch(text):
        raise _fail("authorized_keys option", value)
    return text


def authorized_keys_address(value: object) -> str:
    """One `from=` entry: an address or CIDR network in the normalised form sshd parses."""
    text = _text(value, "authorized_keys from= address")
    body = text[1:] if text.startswith("!") else text
    try:
        canonical = str(ipaddress.ip_network(body, strict=True))
    except ValueError:
        raise _fail("authorized_keys from= address", value) from None
    if canonical != body:
        raise _fail("authorized_keys from= address", value)
    return text


def authorized_keys_key(value: object) -> str:
    """``type base64 [comment]``: the key part of an authorized_keys line."""
    text = _text(value, "authorized_keys key")
    parts = text.split(" ", 2)
    if (
        len(parts) < 2
        or not _KEY_TYPE.fullmatch(parts[0])
        or not _BASE64.fullmatch(parts[1])
        or (len(parts) == 3 and not _key_comment_ok(parts[2]))
    ):
        raise _fail("authorized_keys key", value)
    return text


# What ends or cuts an authorized_keys line (sshd reads up to '\n' and C strings end at NUL),
# and what any other line-based reader (Python's splitlines, an editor) takes as a line break.
LINE_BREAKS = frozenset("\n\r\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def _key_comment_ok(comment: str) -> bool:
    # What a comment may contain beyond that (invisible characters that read differently in a
    # review) is the key rules' business (keys.py); here only the line structure counts.
    return comment == comment.strip() and bool(comment) and not LINE_BREAKS.intersection(comment)


def pem_base64(value: object) -> str:
    """One line of a PEM body: base64, at most 64 characters (RFC 7468)."""
    text = _text(value, "PEM line")
    if len(text) > 64 or not _BASE64.fullmatch(text):
        raise _fail("PEM line", value)
    return text


def passwd_field(value: object) -> str:
    """One field of a passwd, group or shadow entry."""
    text = _text(value, "passwd field")
    if not _DB_FIELD.fullmatch(text):
        raise _fail("passwd field", value)
    return text


def group_member(value: object) -> str:
    """One member of a group(5) member list (',' separates members)."""
    text = _text(value, "group member")
    if not _DB_MEMBER.fullmatch(text):
        raise _fail("group member", value)
    return text


def sshd_token(value: object) -> str:
    """A single sshd_config token: no whitespace, quotes, comment sign or control character."""
    text = _text(value, "sshd_config token")
    if not text or any(c.isspace() or c in "\"'#\\" for c in text) or not text.isprintable():
        raise _fail("sshd_config token", value)
    return text


def mail_text(value: object) -> str:
    """A value in a notification: free text, one line."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        # Dates and numbers are formatted by the template itself.
        return value  # type: ignore[return-value]
    text = str(value)
    if free_text_problem(text) is not None:
        raise _fail("notification", value)
    return text


CHECK_FILTERS: dict[str, Callable[[Any], str]] = {
    "authorized_keys_option": authorized_keys_option,
    "authorized_keys_address": authorized_keys_address,
    "authorized_keys_key": authorized_keys_key,
    "passwd_field": passwd_field,
    "pem_base64": pem_base64,
    "group_member": group_member,
    "sshd_token": sshd_token,
    "mail_text": mail_text,
}


def register(env: jinja2.Environment) -> jinja2.Environment:
    env.filters.update(CHECK_FILTERS)
    return env


def check_all(values: Iterable[object], check: Callable[[Any], str]) -> None:
    for value in values:
        check(value)
