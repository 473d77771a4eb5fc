"""The field's file-name grammar: ``TYPE.PURPOSE.SENDER.YYYYMMDD.SEQ.ENV[.PARTS[.PART]]``.

``FI`` (a declaration) and ``FS`` (its detached signature) carry PARTS and PART
(``FI.DMFA.112768.20250109.00014.R.1.1``); ``GO`` (starts processing) and ``TD`` (cancels)
carry PARTS only (``GO.DMFA.112768.20250109.00014.R.1``); ``FO`` (a file sent back by the
gateway, sender ``999999``) has six elements and its SEQ may hold uppercase letters.

:func:`check_name` never raises: whatever the name (control characters, bytes that are not
UTF-8, thousands of dots), it returns a :class:`NameCheck` with the anomaly codes of the name.
A name is decided from its text only; no path is built from it here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final, Literal

from provisioner.intake.anomalies import Finding

Kind = Literal["FI", "FS", "GO", "TD", "FO"]
UPLOAD_KINDS: Final = ("FI", "FS", "GO", "TD")
RETURN_SENDER: Final = "999999"
ENVIRONMENTS: Final = ("R", "T", "S")
MAX_NAME_LENGTH: Final = 128
# How far back a date in a name may lie (code 126); the field's own limit is not public, and a
# year covers the quarterly declarations and their corrections.
DEFAULT_MAX_DATE_AGE: Final = timedelta(days=366)
# One day of slack for the future (code 111): a sender a time zone ahead names tomorrow's date.
FUTURE_SLACK: Final = timedelta(days=1)

_FIELDS: Final[dict[str, int]] = {"FI": 8, "FS": 8, "GO": 7, "TD": 7, "FO": 6}
_MALFORMED: Final[dict[str, int]] = {"FI": 131, "FS": 132, "GO": 107, "TD": 107, "FO": 129}
_PURPOSE = re.compile(r"[A-Z0-9]{4}")
_SENDER = re.compile(r"[0-9]{6}")
_TOKEN = re.compile(r"[A-Za-z0-9]{1,16}")
_NUMBER = re.compile(r"[0-9]{1,4}")


@dataclass(frozen=True, slots=True)
class SetKey:
    """What makes files one set: purpose, sender, date, sequence number, environment."""

    purpose: str
    sender: str
    date: str
    seq: str
    env: str

    def __str__(self) -> str:
        return f"{self.purpose}.{self.sender}.{self.date}.{self.seq}.{self.env}"


@dataclass(frozen=True, slots=True)
class FileName:
    """A name whose set can be told (its key fields are plain tokens), as its raw fields."""

    kind: str
    purpose: str
    sender: str
    date: str
    seq: str
    env: str
    parts: str | None = None
    part: str | None = None

    @property
    def key(self) -> SetKey:
        return SetKey(self.purpose, self.sender, self.date, self.seq, self.env)

    @property
    def parts_number(self) -> int | None:
        return int(self.parts) if self.parts is not None and self.parts.isdigit() else None

    @property
    def part_number(self) -> int | None:
        return int(self.part) if self.part is not None and self.part.isdigit() else None

    def __str__(self) -> str:
        fields = [self.kind, self.purpose, self.sender, self.date, self.seq, self.env]
        fields += [f for f in (self.parts, self.part) if f is not None]
        return ".".join(fields)


@dataclass(frozen=True, slots=True)
class NameCheck:
    """The verdict on one name: ``parsed`` when its set can be told, and its findings."""

    name: str
    parsed: FileName | None
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def codes(self) -> tuple[int, ...]:
        return tuple(sorted({f.code for f in self.findings}))


def _bad(name: str, code: int, detail: str) -> NameCheck:
    return NameCheck(name, None, (Finding(name, code, detail),))


# A finding before it is tied to its name: the field checks below only see their field.
_Anomaly = tuple[int, str]


def check_name(
    name: str,
    *,
    today: date,
    max_date_age: timedelta = DEFAULT_MAX_DATE_AGE,
    uploaded: bool = True,
) -> NameCheck:
    """Check `name` against the grammar; `uploaded` names may not be ``FO`` and have digit SEQs.

    The key fields must be plain ASCII tokens for the file to belong to a set; a name whose
    set cannot be told gets ``parsed=None`` and is refused on its own.
    """
    unreadable = _refusal_for_characters(name, uploaded)
    if unreadable is not None:
        return unreadable
    fields = name.split(".")
    refusal = _refusal_for_key(name, fields, uploaded)
    if refusal is not None:
        return refusal
    kind, purpose, sender, day, seq, env = fields[:6]
    parts = fields[6] if len(fields) > 6 else None
    part = fields[7] if len(fields) > 7 else None
    parsed = FileName(kind, purpose, sender, day, seq, env, parts, part)
    anomalies = [
        *_date_anomalies(day, today, max_date_age),
        *_sequence_anomalies(seq, kind),
        *_environment_anomalies(env),
        *_parts_anomalies(parts),
        *_part_anomalies(part, parts),
    ]
    return NameCheck(name, parsed, tuple(Finding(name, c, d) for c, d in anomalies))


def _refusal_for_characters(name: str, uploaded: bool) -> NameCheck | None:
    """A name too long or outside printable ASCII is refused before it is split at all."""
    if len(name) <= MAX_NAME_LENGTH and name.isascii() and name.isprintable():
        return None
    kind = name[:2] if name[:2] in _FIELDS else None
    code = _MALFORMED[kind] if kind and (kind != "FO" or not uploaded) else 129
    return _bad(name, code, "the name holds characters outside printable ASCII or is too long")


def _refusal_for_key(name: str, fields: list[str], uploaded: bool) -> NameCheck | None:
    """Refuse a name whose set cannot be told: unknown type, element count, key tokens."""
    kind = fields[0]
    if kind not in _FIELDS or (uploaded and kind == "FO"):
        return _bad(name, 129, "unknown file type")
    malformed = _MALFORMED[kind]
    if len(fields) != _FIELDS[kind]:
        return _bad(name, malformed, f"{len(fields)} elements instead of {_FIELDS[kind]}")
    purpose, sender, day, seq, env = fields[1:6]
    if not _PURPOSE.fullmatch(purpose):
        return _bad(name, malformed, "the purpose is not 4 uppercase letters or digits")
    if not _SENDER.fullmatch(sender):
        return _bad(name, malformed, "the sender is not 6 digits")
    if kind == "FO" and sender != RETURN_SENDER:
        return _bad(name, malformed, "files sent back carry sender 999999")
    if not all(_TOKEN.fullmatch(f) for f in (day, seq, env)):
        return _bad(name, malformed, "an element is empty or not letters and digits")
    return None


def _date_anomalies(day: str, today: date, max_date_age: timedelta) -> list[_Anomaly]:
    """Codes 109 (not 8 digits), 110 (no such day), 111 (future) and 126 (too old)."""
    if not re.fullmatch(r"[0-9]{8}", day):
        return [(109, "the date is not 8 digits")]
    try:
        when = date(int(day[:4]), int(day[4:6]), int(day[6:]))
    except ValueError:
        return [(110, "the date does not exist")]
    if when > today + FUTURE_SLACK:
        return [(111, "the date is in the future")]
    if when < today - max_date_age:
        return [(126, "the date is too old")]
    return []


def _sequence_anomalies(seq: str, kind: str) -> list[_Anomaly]:
    """Codes 112 (length), 127 (characters; ``FO`` may use uppercase letters) and 113."""
    seq_chars = r"[0-9A-Z]" if kind == "FO" else r"[0-9]"
    if len(seq) != 5:
        return [(112, "the sequence number is not 5 characters")]
    if not re.fullmatch(seq_chars + "{5}", seq):
        return [(127, "the sequence number holds other characters than digits")]
    if seq == "00000":
        return [(113, "the sequence number is 00000")]
    return []


def _environment_anomalies(env: str) -> list[_Anomaly]:
    """Code 117: the environment is one of R, T or S."""
    if env not in ENVIRONMENTS:
        return [(117, "the environment is not R, T or S")]
    return []


def _parts_anomalies(parts: str | None) -> list[_Anomaly]:
    """Codes 114 (not a number) and 116 (zero) for PARTS, when the kind carries it."""
    if parts is None:
        return []
    if not _NUMBER.fullmatch(parts):
        return [(114, "the number of parts is not a number")]
    if int(parts) == 0:
        return [(116, "the number of parts is zero")]
    return []


def _part_anomalies(part: str | None, parts: str | None) -> list[_Anomaly]:
    """Codes 115, 116 and 128 (a PART above a readable, non-zero PARTS) for PART."""
    if part is None:
        return []
    if not _NUMBER.fullmatch(part):
        return [(115, "the part number is not a number")]
    if int(part) == 0:
        return [(116, "the part number is zero")]
    if parts is not None and _NUMBER.fullmatch(parts) and 0 < int(parts) < int(part):
        return [(128, "the part number is above the number of parts")]
    return []
