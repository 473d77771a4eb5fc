"""Adoption: bring the registrations a gateway already has into the state (`provisioner import`).

A gateway that adopts this project has thousands of senders whose sender number is printed in
every file they send and whose technical user is configured in their payroll software: both
must survive the move. The portal's export is a CSV file with this header (any order; a
comma or, as a spreadsheet in a Belgian locale writes it, a semicolon between values):

    enterprise_number,quality_type,sender_number,technical_user,registered_on,status

- ``enterprise_number``: 10 digits with the mod-97 check digits (dots, spaces, ``BE`` allowed);
- ``quality_type``: a catalogue code of ``quality.type`` (``employer_nsso``...);
- ``sender_number``: exactly six digits (``000123``, not ``123``), never ``999999``;
- ``technical_user``: the gate's rules (8-20 ASCII letters and digits, a letter, not reserved);
- ``registered_on``: the registration date, ``YYYY-MM-DD`` (Belgian calendar day);
- ``status``: ``active`` or ``removed``; a removed quality keeps its number and its username
  forever, as if it had been registered here and removed.

Reading is pure (`read_import`, `read_reserved`), so is judging the rows against a state
(`plan_import`); only `commit_import` writes, in one transaction. Every refusal names the
file, line and column, and a refusal anywhere means nothing is written: an import is all or
nothing, so it can be corrected and run again. Running it again after a success records
nothing and says so.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

from pydantic_core import PydanticCustomError

from provisioner.catalogue import load_catalogue
from provisioner.diagnostics import Diagnostic, Location, error, has_errors, sort_diagnostics
from provisioner.models import _technical_user, enterprise_number_digits, format_enterprise_number
from provisioner.quality_id import QualityId
from provisioner.safefile import Refused, read_regular

if TYPE_CHECKING:
    from provisioner.state import Registration, StateSnapshot

COLUMNS: tuple[str, ...] = (
    "enterprise_number",
    "quality_type",
    "sender_number",
    "technical_user",
    "registered_on",
    "status",
)
STATUSES = ("active", "removed")
# A portal of a few thousand senders exports well under a megabyte; the caps keep a wrong file
# (a database dump, /dev/zero behind a link) from being read into memory.
MAX_CSV_BYTES = 32 * 1024 * 1024
MAX_ROWS = 200_000
MAX_RESERVED_BYTES = 8 * 1024 * 1024
MAX_RESERVED_NAME = 64
RESERVED_SENDER_NUMBER = 999999
# The calendar of the registration dates a person reads.
BRUSSELS = ZoneInfo("Europe/Brussels")

ImportStatus = Literal["active", "removed"]


@dataclass(frozen=True, slots=True)
class ImportRow:
    """One registration of the export, checked on its own."""

    location: Location
    qid: QualityId
    sender_number: int
    technical_user: str
    registered_on: date
    status: ImportStatus

    @property
    def sender(self) -> str:
        return f"{self.sender_number:06d}"

    @property
    def registered_at(self) -> datetime:
        """Midnight of the Belgian calendar day, as an instant: shown in Brussels, the same day."""
        return datetime.combine(self.registered_on, time(0), BRUSSELS).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class ReservedName:
    location: Location
    username: str


@dataclass(frozen=True, slots=True)
class Held:
    """What the state already holds: numbers, usernames and registrations of qualities.

    ``usernames`` maps every username ever handed out or reserved to its quality (``None``:
    reserved for a user of the portal's access system that is no quality).
    """

    registrations: Mapping[QualityId, tuple[int, str]] = field(default_factory=dict)
    usernames: Mapping[str, QualityId | None] = field(default_factory=dict)

    @property
    def senders(self) -> dict[int, QualityId]:
        return {number: qid for qid, (number, _user) in self.registrations.items()}


@dataclass(frozen=True, slots=True)
class ImportPlan:
    """What an import would record; nothing of it is written while `diagnostics` has errors."""

    file: str
    new: tuple[ImportRow, ...] = ()
    already: tuple[ImportRow, ...] = ()
    reserved: tuple[ReservedName, ...] = ()
    reserved_already: tuple[ReservedName, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = ()

    @property
    def ok(self) -> bool:
        return not has_errors(list(self.diagnostics))

    @property
    def changed(self) -> bool:
        return bool(self.new or self.reserved)


# --- reading -----------------------------------------------------------------------------------


def _read_text(
    path: Path, display: str, cap: int, what: str
) -> tuple[str | None, list[Diagnostic]]:
    """The file's text, or a diagnostic naming why it is not read (never its content)."""
    where = Location(display)
    try:
        # The operator's own file, named on the command line: a symbolic link is followed
        # (wherever it leads, it is still only read if it is a regular file under the cap).
        data = read_regular(path, cap, follow=True)
    except FileNotFoundError:
        return None, [error("file-not-found", "no such file", where)]
    except Refused as exc:
        return None, [error(exc.code, f"this {what} {exc.reason}; it was not read", where)]
    except OSError as exc:
        return None, [error("file-unreadable", f"cannot read this {what}: {exc.strerror}", where)]
    nul = data.find(b"\0")
    if nul >= 0:
        line, col = _position(data, nul)
        return None, [
            error(
                "csv-nul",
                f"this {what} holds a NUL byte: it is not a text file; nothing was read",
                Location(display, line, col),
            )
        ]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _position(data, exc.start)
        return None, [
            error(
                "csv-encoding",
                f"this {what} is not UTF-8 (save it as 'CSV UTF-8'); nothing was read",
                Location(display, line, col),
            )
        ]
    return text.removeprefix("\ufeff"), []


def _position(data: bytes, offset: int) -> tuple[int, int]:
    line = data.count(b"\n", 0, offset) + 1
    start = data.rfind(b"\n", 0, offset) + 1
    return line, offset - start + 1


def _lines(text: str) -> Iterable[tuple[int, str]]:
    for number, line in enumerate(text.split("\n"), start=1):
        yield number, line.removesuffix("\r")


class _SyntaxProblem(Exception):
    def __init__(self, column: int, message: str) -> None:
        super().__init__(message)
        self.column = column
        self.message = message


def _split(line: str, delimiter: str) -> list[tuple[int, str]]:
    """The values of one CSV line with the 1-based column each starts at.

    A value may be quoted ("..." with "" for a quote). A record never spans lines: no value of
    the export holds a line break, so a quote left open is an error, not a reason to read on.
    """
    values: list[tuple[int, str]] = []
    i, n = 0, len(line)
    while True:
        start = i
        while i < n and line[i] == " ":
            i += 1
        if i < n and line[i] == '"':
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise _SyntaxProblem(start + 1, "a quoted value is not closed on this line")
                if line[i] == '"':
                    if i + 1 < n and line[i + 1] == '"':
                        chars.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                chars.append(line[i])
                i += 1
            while i < n and line[i] == " ":
                i += 1
            if i < n and line[i] != delimiter:
                raise _SyntaxProblem(i + 1, "text after a quoted value")
            values.append((start + 1, "".join(chars)))
        else:
            end = line.find(delimiter, i)
            end = n if end < 0 else end
            raw = line[i:end]
            if '"' in raw:
                raise _SyntaxProblem(i + raw.index('"') + 1, "a quote inside an unquoted value")
            values.append((i + 1, raw.strip(" ")))
            i = end
        if i >= n:
            return values
        i += 1  # the delimiter


def _header(line: str, display: str) -> tuple[str, dict[str, int], list[Diagnostic]]:
    """The delimiter and the position of each column, from the header line."""
    delimiter = ";" if ";" in line and "," not in line else ","
    try:
        names = _split(line, delimiter)
    except _SyntaxProblem as exc:
        return delimiter, {}, [error("csv-header", exc.message, Location(display, 1, exc.column))]
    problems: list[Diagnostic] = []
    order: dict[str, int] = {}
    for index, (column, name) in enumerate(names):
        key = name.strip().lower()
        where = Location(display, 1, column)
        if key in order:
            problems.append(error("csv-header", f"the column '{key}' appears twice", where))
        elif key in COLUMNS:
            order[key] = index
        else:
            # The unknown name itself is not repeated: this may be some other file entirely.
            close = difflib.get_close_matches(key, COLUMNS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(
                error(
                    "csv-header",
                    f"column {index + 1} of the header is not a known column{hint}; the header "
                    f"is {','.join(COLUMNS)}",
                    where,
                )
            )
    missing = [name for name in COLUMNS if name not in order]
    if missing:
        problems.append(
            error(
                "csv-header",
                f"the header lacks the column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)}, so no row was read; the header is {','.join(COLUMNS)} "
                "(any order)",
                Location(display, 1, 1),
            )
        )
    return delimiter, order, problems


def _refusal(exc: PydanticCustomError) -> tuple[str, str]:
    return exc.type, exc.message()


def _row(
    number: int, values: list[tuple[int, str]], order: Mapping[str, int], display: str, today: date
) -> tuple[ImportRow | None, list[Diagnostic]]:
    def at(name: str) -> Location:
        return Location(display, number, values[order[name]][0])

    def value(name: str) -> str:
        return values[order[name]][1]

    # Every column is judged, so that one reading of the file names all of a row's faults.
    enterprise = _checked(enterprise_number_digits, value("enterprise_number"))
    quality_type = _quality_type(value("quality_type"))
    sender = _sender_number(value("sender_number"))
    user = _checked(_technical_user, value("technical_user"))
    registered = _registered_on(value("registered_on"), today)
    status = _status(value("status"))
    judged = {
        "enterprise_number": enterprise,
        "quality_type": quality_type,
        "sender_number": sender,
        "technical_user": user,
        "registered_on": registered,
        "status": status,
    }
    problems = [
        error(v.code, v.message, at(name)) for name, v in judged.items() if isinstance(v, _Fault)
    ]
    if problems:
        return None, problems
    assert (
        isinstance(enterprise, str)
        and isinstance(quality_type, str)
        and isinstance(sender, int)
        and isinstance(user, str)
        and isinstance(registered, date)
        and isinstance(status, str)
    )
    return (
        ImportRow(
            Location(display, number, 1),
            QualityId(enterprise, quality_type),
            sender,
            user,
            registered,
            status,
        ),
        [],
    )


@dataclass(frozen=True, slots=True)
class _Fault:
    """A column's refusal; `_row` places it at the column."""

    code: str
    message: str


def _checked(check: Callable[[str], str], raw: str) -> str | _Fault:
    """A column the declarations' own validator judges, with the declarations' words."""
    try:
        return check(raw)
    except PydanticCustomError as exc:
        return _Fault(*_refusal(exc))


def _quality_type(raw: str) -> str | _Fault:
    quality_types = load_catalogue().quality_types
    if raw in quality_types:
        return raw
    return _Fault(
        "unknown-quality-type",
        f"{raw!r} is not a known quality type; expected one of: {', '.join(quality_types)}",
    )


def _sender_number(raw: str) -> int | _Fault:
    if len(raw) != 6 or not raw.isascii() or not raw.isdigit():
        hint = ""
        if raw.isascii() and raw.isdigit() and len(raw) < 6:
            hint = f" (a spreadsheet drops leading zeros: write {int(raw):06d})"
        return _Fault(
            "sender-number-format", f"a sender number has exactly six digits (found {raw!r}){hint}"
        )
    if int(raw) == RESERVED_SENDER_NUMBER:
        return _Fault(
            "sender-number-reserved",
            "999999 is the gateway's own sender number (the files it sends back carry it) "
            "and never a quality's",
        )
    return int(raw)


def _registered_on(raw: str, today: date) -> date | _Fault:
    try:
        if len(raw) != 10:
            raise ValueError(raw)
        registered = date.fromisoformat(raw)
    except ValueError:
        return _Fault(
            "registered-on-format",
            f"a registration date is written YYYY-MM-DD, e.g. 2019-03-01 (found {raw!r})",
        )
    if registered > today:
        return _Fault(
            "registered-on-future",
            f"the registration date {registered.isoformat()} is in the future",
        )
    return registered


def _status(raw: str) -> ImportStatus | _Fault:
    if raw.lower() == "active":
        return "active"
    if raw.lower() == "removed":
        return "removed"
    return _Fault(
        "status-unknown",
        f"the status of an imported registration is 'active' or 'removed' (found {raw!r})",
    )


def read_import(
    path: Path, display: str | None = None, *, today: date | None = None
) -> tuple[list[ImportRow], list[Diagnostic]]:
    """The rows of an export, each checked on its own (the rules between rows and against the
    state are `plan_import`'s). Never raises for anything the file holds."""
    shown = display or str(path)
    today = today or datetime.now(BRUSSELS).date()
    text, problems = _read_text(path, shown, MAX_CSV_BYTES, "CSV file")
    if text is None:
        return [], problems
    lines = _lines(text)
    first = next(((n, line) for n, line in lines if line.strip()), None)
    if first is None:
        return [], [
            error("csv-empty", "this CSV file is empty; expected a header line", Location(shown))
        ]
    if first[0] != 1:
        return [], [
            error("csv-header", "the header must be the first line", Location(shown, first[0], 1))
        ]
    delimiter, order, problems = _header(first[1], shown)
    if problems:
        return [], problems
    rows: list[ImportRow] = []
    count = 0
    for number, line in lines:
        if not line.strip():
            continue
        count += 1
        if count > MAX_ROWS:
            problems.append(
                error(
                    "csv-too-many-rows",
                    f"more than {MAX_ROWS} rows; split the export",
                    Location(shown, number, 1),
                )
            )
            break
        try:
            values = _split(line, delimiter)
        except _SyntaxProblem as exc:
            problems.append(error("csv-syntax", exc.message, Location(shown, number, exc.column)))
            continue
        if len(values) != len(order):
            problems.append(
                error(
                    "csv-columns",
                    f"this row has {len(values)} values; the header names {len(order)} columns",
                    Location(shown, number, 1),
                )
            )
            continue
        row, found = _row(number, values, order, shown, today)
        problems.extend(found)
        if row is not None:
            rows.append(row)
    if not rows and not problems:
        problems.append(
            error("csv-empty", "this CSV file has a header but no rows", Location(shown, 1, 1))
        )
    return rows, problems


def read_reserved(
    path: Path, display: str | None = None
) -> tuple[list[ReservedName], list[Diagnostic]]:
    """Names taken in the portal's access system by users that are no SFTP quality: one a line,
    `#` starts a comment. A name is printable ASCII without spaces, at most 64 characters."""
    shown = display or str(path)
    text, problems = _read_text(path, shown, MAX_RESERVED_BYTES, "file of reserved usernames")
    if text is None:
        return [], problems
    names: list[ReservedName] = []
    seen: dict[str, Location] = {}
    for number, line in _lines(text):
        content = line.split("#", 1)[0]
        name = content.strip()
        if not name:
            continue
        where = Location(shown, number, content.index(name) + 1)
        if (
            len(name) > MAX_RESERVED_NAME
            or not name.isascii()
            or not name.isprintable()
            or any(c.isspace() for c in name)
        ):
            problems.append(
                error(
                    "reserved-username-format",
                    f"a reserved username is one word of at most {MAX_RESERVED_NAME} printable "
                    "ASCII characters a line",
                    where,
                )
            )
            continue
        if name in seen:
            continue  # listed twice: reserved once
        seen[name] = where
        names.append(ReservedName(where, name))
    return names, problems


# --- judging against the state -----------------------------------------------------------------


def _also(location: Location | None) -> tuple[Location, ...]:
    """The earlier line a refusal also names, when it was a line (not the state)."""
    return () if location is None else (location,)


def _where(loc: Location | None) -> str:
    return f"line {loc.line}" if loc is not None else "the state"


def _holder(qid: QualityId | None) -> str:
    return "a user of the portal's access system" if qid is None else f"quality {qid}"


class _Taken:
    """The sender numbers and usernames taken so far, by the state (no location) or by an
    earlier line of the import; usernames also by their lower case, which the portal's
    access system does not tell apart."""

    def __init__(self, held: Held) -> None:
        self.senders: dict[int, tuple[QualityId, Location | None]] = {
            n: (q, None) for n, q in held.senders.items()
        }
        self.users: dict[str, tuple[QualityId | None, Location | None]] = {
            u: (q, None) for u, q in held.usernames.items()
        }
        self.folded: dict[str, tuple[str, QualityId | None, Location | None]] = {}
        for user, (qid, _) in self.users.items():
            self.folded.setdefault(user.lower(), (user, qid, None))

    def refusals(self, row: ImportRow) -> list[Diagnostic]:
        """What stops `row` from being recorded: its sender number or its username (in any
        case) held by another quality."""
        out: list[Diagnostic] = []
        taken = self.senders.get(row.sender_number)
        if taken is not None and taken[0] != row.qid:
            out.append(
                error(
                    "sender-number-taken",
                    f"sender number {row.sender} belongs to quality {taken[0]} "
                    f"({_where(taken[1])}); a sender number is never given twice",
                    row.location,
                    *_also(taken[1]),
                )
            )
        owner = self.users.get(row.technical_user)
        similar = self.folded.get(row.technical_user.lower())
        if owner is not None and owner[0] != row.qid:
            out.append(
                error(
                    "technical-user-taken",
                    f"the technical user '{row.technical_user}' belongs to {_holder(owner[0])} "
                    f"({_where(owner[1])}); a username is never given twice",
                    row.location,
                    *_also(owner[1]),
                )
            )
        elif similar is not None and similar[0] != row.technical_user and similar[1] != row.qid:
            out.append(
                error(
                    "technical-user-similar",
                    f"'{row.technical_user}' differs only in case from '{similar[0]}', which "
                    f"belongs to {_holder(similar[1])} ({_where(similar[2])}); the portal's "
                    "access system does not tell them apart",
                    row.location,
                    *_also(similar[2]),
                )
            )
        return out

    def take(self, row: ImportRow) -> None:
        self.senders[row.sender_number] = (row.qid, row.location)
        self.users[row.technical_user] = (row.qid, row.location)
        self.folded.setdefault(
            row.technical_user.lower(), (row.technical_user, row.qid, row.location)
        )

    def reserved_already(self, name: ReservedName) -> bool:
        """Reserved for a user of the portal already, in this case or another: one is enough."""
        owner = self.users.get(name.username)
        if owner is not None:
            return owner[0] is None
        similar = self.folded.get(name.username.lower())
        return similar is not None and similar[1] is None

    def reservation_refusal(self, name: ReservedName) -> Diagnostic | None:
        """A name not reserved already is refused when a quality holds it, in any case."""
        owner = self.users.get(name.username)
        if owner is not None:
            return error(
                "reserved-username-taken",
                f"'{name.username}' is the technical user of quality {owner[0]} "
                f"({_where(owner[1])}); it cannot also belong to another user of the portal",
                name.location,
                *_also(owner[1]),
            )
        similar = self.folded.get(name.username.lower())
        if similar is not None:
            return error(
                "reserved-username-taken",
                f"'{name.username}' differs only in case from '{similar[0]}', the technical "
                f"user of quality {similar[1]} ({_where(similar[2])})",
                name.location,
                *_also(similar[2]),
            )
        return None

    def reserve(self, name: ReservedName) -> None:
        self.users[name.username] = (None, name.location)
        self.folded.setdefault(name.username.lower(), (name.username, None, name.location))


def plan_import(
    file: str,
    rows: Sequence[ImportRow],
    reserved: Sequence[ReservedName],
    held: Held,
    problems: Sequence[Diagnostic] = (),
) -> ImportPlan:
    """What importing `rows` and `reserved` into a state holding `held` would record.

    Refused, at the row's line: a quality listed twice, a sender number or a username (also
    one differing only by case) held by another quality, in the state or on an earlier line,
    and a quality the state holds with another number or username. A row the state holds as
    it is is not recorded again.
    """
    out = list(problems)
    taken = _Taken(held)
    seen: dict[QualityId, ImportRow] = {}
    new: list[ImportRow] = []
    already: list[ImportRow] = []
    for row in rows:
        if row.qid in seen:
            out.append(_repeated(row, seen[row.qid]))
            continue
        seen[row.qid] = row
        known = held.registrations.get(row.qid)
        if known == (row.sender_number, row.technical_user):
            already.append(row)
        elif known is not None:
            out.append(_registered_otherwise(row, known))
        elif refusals := taken.refusals(row):
            out.extend(refusals)
        else:
            taken.take(row)
            new.append(row)

    fresh: list[ReservedName] = []
    kept: list[ReservedName] = []
    for name in reserved:
        if taken.reserved_already(name):
            kept.append(name)
        elif (refusal := taken.reservation_refusal(name)) is not None:
            out.append(refusal)
        else:
            taken.reserve(name)
            fresh.append(name)
    return ImportPlan(
        file=file,
        new=tuple(new),
        already=tuple(already),
        reserved=tuple(fresh),
        reserved_already=tuple(kept),
        diagnostics=tuple(sort_diagnostics(out)),
    )


def _repeated(row: ImportRow, first: ImportRow) -> Diagnostic:
    """A quality on a second line: the same row twice, or the same quality with other values."""
    same = (first.sender_number, first.technical_user, first.registered_on, first.status)
    if same == (row.sender_number, row.technical_user, row.registered_on, row.status):
        return error(
            "duplicate-row",
            f"this row repeats line {first.location.line}",
            row.location,
            first.location,
        )
    return error(
        "quality-duplicate",
        f"quality {row.qid} is already listed at line {first.location.line} with "
        "other values; a quality has one sender number and one technical user",
        row.location,
        first.location,
    )


def _registered_otherwise(row: ImportRow, known: tuple[int, str]) -> Diagnostic:
    return error(
        "quality-registered",
        f"quality {row.qid} is already registered with sender number "
        f"{known[0]:06d} and technical user '{known[1]}'; a registration is "
        "never changed by an import",
        row.location,
    )


# --- showing -----------------------------------------------------------------------------------


def render_plan(plan: ImportPlan, *, committed: bool = False) -> str:
    """The table of what is (or would be) recorded, and a closing sentence."""
    lines: list[str] = []
    if plan.new:
        header = (
            "line",
            "enterprise",
            "quality type",
            "sender",
            "technical user",
            "registered",
            "status",
        )
        table = [header] + [
            (
                str(r.location.line),
                format_enterprise_number(r.qid.enterprise_number),
                r.qid.quality_type,
                r.sender,
                r.technical_user,
                r.registered_on.isoformat(),
                r.status,
            )
            for r in plan.new
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for row in table:
            lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    if plan.reserved:
        if lines:
            lines.append("")
        lines.append("reserved usernames (the portal's access system):")
        lines.extend(f"  {n.username}" for n in plan.reserved)
    if lines:
        lines.append("")
    active = sum(1 for r in plan.new if r.status == "active")
    parts = []
    if plan.new or plan.reserved:
        verb = "recorded" if committed else "would record"
        parts.append(
            f"{verb} {len(plan.new)} registration{'s' if len(plan.new) != 1 else ''} "
            f"({active} active, {len(plan.new) - active} removed) and {len(plan.reserved)} "
            f"reserved username{'s' if len(plan.reserved) != 1 else ''}"
        )
    else:
        parts.append("nothing to record: the state already holds every row")
    if plan.already or plan.reserved_already:
        parts.append(
            f"{len(plan.already)} registration{'s' if len(plan.already) != 1 else ''} and "
            f"{len(plan.reserved_already)} reserved username"
            f"{'s' if len(plan.reserved_already) != 1 else ''} already in the state"
        )
    summary = "; ".join(parts)
    if not committed and plan.changed:
        summary += " (dry run: nothing written; run again with --commit)"
    lines.append(summary)
    return "\n".join(lines) + "\n"


def render_diagnostics(diagnostics: Iterable[Diagnostic]) -> str:
    """`file:line:col: error[code] message`, one a line (the gate's text format)."""
    return "".join(f"{d.location}: {d.severity.value}[{d.code}] {d.message}\n" for d in diagnostics)


# --- the state ---------------------------------------------------------------------------------


def held_of(snapshot: StateSnapshot) -> Held:
    """What a state snapshot holds, as `plan_import` judges rows against it."""
    usernames: dict[str, QualityId | None] = dict(snapshot.usernames)
    for name in snapshot.reserved:
        usernames.setdefault(name, None)
    return Held(
        registrations={
            qid: (reg.sender_number, reg.technical_user)
            for qid, reg in snapshot.registrations.items()
        },
        usernames=usernames,
    )


def registrations_of(plan: ImportPlan, now: datetime) -> list[Registration]:
    """The registrations an import records. An active one is `pending` until the first apply
    on this host; a removed one keeps its number and username, and never gets an account."""
    from provisioner.state import Registration

    out = []
    for row in plan.new:
        registered = row.registered_at
        out.append(
            Registration(
                enterprise_number=row.qid.enterprise_number,
                quality_type=row.qid.quality_type,
                technical_user=row.technical_user,
                sender_number=row.sender_number,
                uid=None,
                registered_at=registered,
                status="pending" if row.status == "active" else "removed",
                # Since the import: the portal's export says nothing of when a status began.
                status_since=now,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    plan: ImportPlan
    written: bool = False
    # Where nothing could be read (no state yet, in a dry run).
    missing_state: str | None = None


def run_import(
    state_url: str,
    csv_path: Path,
    *,
    reserved_path: Path | None = None,
    commit: bool = False,
    now: datetime | None = None,
) -> ImportOutcome:
    """Read, judge and (with `commit`) write an import in one transaction.

    A dry run creates nothing, not even the state database. Raises `StateError` when the
    database cannot be opened, `StaleState` when another writer moved the state on between
    the reading and the writing (nothing written: run again).
    """
    from provisioner.state import StateMissing, StateSnapshot, StateStore

    now = now or datetime.now(UTC)
    today = now.astimezone(BRUSSELS).date()
    rows, problems = read_import(csv_path, str(csv_path), today=today)
    reserved: list[ReservedName] = []
    if reserved_path is not None:
        reserved, more = read_reserved(reserved_path, str(reserved_path))
        problems.extend(more)
    try:
        store = StateStore.open(state_url, create=False)
    except StateMissing:
        from provisioner.state import redact_url

        plan = plan_import(str(csv_path), rows, reserved, held_of(StateSnapshot.empty()), problems)
        if not commit or not plan.ok or not plan.changed:
            # Refused, or only looking: no database is created for that.
            return ImportOutcome(plan, missing_state=redact_url(state_url))
        store = StateStore.open(state_url, create=True)
    with store:
        snapshot = store.snapshot()
        plan = plan_import(str(csv_path), rows, reserved, held_of(snapshot), problems)
        if not commit or not plan.ok or not plan.changed:
            return ImportOutcome(plan)
        store.import_registrations(
            registrations_of(plan, now),
            [n.username for n in plan.reserved],
            base_version=snapshot.version,
            now=now,
        )
        return ImportOutcome(plan, written=True)
