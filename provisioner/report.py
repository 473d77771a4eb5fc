"""Renderings of a validation report: text for people, JSON for tools, GitHub annotations."""

from __future__ import annotations

import json
import re
from typing import Any

from provisioner.diagnostics import Diagnostic, Location
from provisioner.validate import ValidationReport

FORMATS = ("text", "json", "github")


# Line breaks and other control characters (including ESC) a declaration can smuggle into a
# message, a YAML path or a file name: in the line-oriented text report they would forge
# diagnostics that CI problem matchers pick up, or drive the terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _one_line(text: str) -> str:
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\u{ord(m.group()):04x}"), text)


def _where(loc: Location) -> str:
    return _one_line(str(loc))


def render_text(report: ValidationReport, *, color: bool = False) -> str:
    lines = []
    for d in report.diagnostics:
        sev = d.severity.value
        if color:
            sev = f"\x1b[1;31m{sev}\x1b[0m" if d.is_error else f"\x1b[1;33m{sev}\x1b[0m"
        path = f" [{_one_line(d.location.yaml_path)}]" if d.location.yaml_path else ""
        lines.append(f"{_where(d.location)}: {sev}[{d.code}] {_one_line(d.message)}{path}")
        lines.extend(
            f"{_where(r)}: note: see also here"
            for r in d.related
            if r.file != d.location.file or r.line != d.location.line
        )
    lines.append(summary_line(report))
    return "\n".join(lines) + "\n"


def summary_line(report: ValidationReport) -> str:
    n = len(report.files)
    files = f"{n} declaration{'s' if n != 1 else ''}"
    e, w = report.errors, report.warnings
    verdict = "valid" if e == 0 else "invalid"
    return (
        f"{files} checked: {verdict}, {e} error{'s' if e != 1 else ''}, "
        f"{w} warning{'s' if w != 1 else ''}"
    )


def _loc_json(loc: Location) -> dict[str, Any]:
    return {"file": loc.file, "line": loc.line, "column": loc.column, "path": loc.yaml_path}


def _diag_json(d: Diagnostic) -> dict[str, Any]:
    return {
        "severity": d.severity.value,
        "code": d.code,
        "message": d.message,
        **_loc_json(d.location),
        "related": [_loc_json(r) for r in d.related],
    }


def render_json(report: ValidationReport) -> str:
    doc = {
        "version": 1,
        "valid": report.ok,
        "files": report.files,
        "errors": report.errors,
        "warnings": report.warnings,
        "diagnostics": [_diag_json(d) for d in report.diagnostics],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(report: ValidationReport) -> str:
    """GitHub Actions workflow commands: annotations on the pull request's files."""
    lines = []
    for d in report.diagnostics:
        props = [f"file={_escape_property(d.location.file)}"]
        if d.location.line > 0:
            props += [f"line={d.location.line}", f"col={d.location.column}"]
        props.append(f"title={_escape_property(d.code)}")
        message = d.message + (f" [{d.location.yaml_path}]" if d.location.yaml_path else "")
        lines.append(f"::{d.severity.value} {','.join(props)}::{_escape_data(message)}")
    lines.append(f"::notice::{_escape_data(summary_line(report))}")
    return "\n".join(lines) + "\n"


def render(report: ValidationReport, fmt: str, *, color: bool = False) -> str:
    if fmt == "json":
        return render_json(report)
    if fmt == "github":
        return render_github(report)
    return render_text(report, color=color)
