"""Diagnostics: what the gate says about a declaration, where, and how bad it is."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True, order=True)
class Location:
    """A place in a file. Line and column are 1-based, as editors and GitHub count them."""

    file: str
    line: int = 0
    column: int = 0
    yaml_path: str = ""

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: Severity
    code: str
    message: str
    location: Location
    # Where a second place matters (the other copy of a duplicate key, the first file that
    # claimed a username), it is named here too so renderers can link both.
    related: tuple[Location, ...] = field(default=())

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def sort_key(self) -> tuple[str, int, int, str, str]:
        loc = self.location
        return (loc.file, loc.line, loc.column, self.code, self.message)


def error(code: str, message: str, location: Location, *related: Location) -> Diagnostic:
    return Diagnostic(Severity.ERROR, code, message, location, tuple(related))


def warning(code: str, message: str, location: Location, *related: Location) -> Diagnostic:
    return Diagnostic(Severity.WARNING, code, message, location, tuple(related))


def sort_diagnostics(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    return sorted(set(diagnostics), key=Diagnostic.sort_key)


def has_errors(diagnostics: list[Diagnostic]) -> bool:
    return any(d.is_error for d in diagnostics)
