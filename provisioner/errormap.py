"""Turning pydantic's validation errors into diagnostics an administrator understands."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import ValidationError

from provisioner.diagnostics import Diagnostic, error
from provisioner.source import SourceDocument, YamlPath

_TYPE_NAMES = {
    str: "text",
    int: "a number",
    float: "a number",
    bool: "true/false",
    list: "a list",
    dict: "a mapping",
    type(None): "nothing (null)",
}

_EXPECTED = {
    "string_type": "text",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "int_type": "a whole number",
    "bool_type": "true or false",
    "date_type": "a date (YYYY-MM-DD)",
    "date_parsing": "a date (YYYY-MM-DD)",
    "date_from_datetime_parsing": "a date (YYYY-MM-DD)",
    "datetime_type": "a date and time",
    "datetime_parsing": "a date and time",
    "datetime_from_date_parsing": "a date and time",
}


def _walk(data: Any, loc: tuple[Any, ...]) -> tuple[YamlPath, bool]:
    """Follow pydantic's `loc` through the data, skipping union and tag labels."""
    path: list[str | int] = []
    node: Any = data
    is_key = False
    for i, part in enumerate(loc):
        if part == "[key]":
            is_key = True
            break
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        elif (
            isinstance(node, dict)
            and isinstance(part, str)
            and part.endswith("_")
            and part[:-1] in node
        ):
            # `from` is spelled `from_` on the Python side.
            path.append(part[:-1])
            node = node[part[:-1]]
        elif isinstance(node, dict) and isinstance(part, str):
            if i < len(loc) - 1:
                # A tag of a discriminated union (the mapping form of a key is tagged
                # "entry"): not a field, the error lies deeper.
                continue
            # A missing field: report it at its parent, naming the field.
            path.append(part)
            break
    return tuple(path), is_key


def _describe(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _allowed_fields(model_fields: list[str] | None) -> str:
    return ", ".join(model_fields) if model_fields else ""


def validation_diagnostics(
    doc: SourceDocument, exc: ValidationError, field_names: dict[YamlPath, list[str]]
) -> list[Diagnostic]:
    """Map every error to the node at fault; one diagnostic per place."""
    out: list[Diagnostic] = []
    seen: set[YamlPath] = set()
    errors = exc.errors(include_url=False)
    # Per mapping, the unknown names in it: a required field that is missing because it was
    # misspelt is said once, by the "did you mean" of the misspelling, not twice.
    unknown: dict[YamlPath, list[str]] = {}
    for err in errors:
        if err["type"] == "extra_forbidden":
            where, _ = _walk(doc.data, tuple(err["loc"]))
            if where:
                unknown.setdefault(where[:-1], []).append(str(where[-1]))
    for err in errors:
        path, is_key = _walk(doc.data, tuple(err["loc"]))
        kind = err["type"]
        if kind == "missing" and difflib.get_close_matches(
            str(path[-1]) if path else "", unknown.get(path[:-1], []), n=1
        ):
            continue
        if path in seen:
            continue  # the other branches of a union say the same thing again
        seen.add(path)
        value = err.get("input")
        name = path[-1] if path else ""
        if kind == "missing":
            parent = path[:-1]
            loc = doc.location(parent, key=True)
            loc = type(loc)(loc.file, loc.line, loc.column, _fmt(path))
            out.append(error("missing-field", f"the field '{name}' is required here", loc))
            continue
        if kind == "extra_forbidden":
            loc = doc.location(path, key=True)
            known = field_names.get(_schema_path(path[:-1]), [])
            hint = ""
            close = difflib.get_close_matches(str(name), known, n=1)
            if close:
                hint = f"; did you mean '{close[0]}'?"
            elif known:
                hint = f"; expected one of: {', '.join(known)}"
            out.append(error("unknown-field", f"unknown field '{name}'{hint}", loc))
            continue
        loc = doc.location(path, key=is_key)
        if kind in _EXPECTED:
            message = f"expected {_EXPECTED[kind]}, found {_describe(value)}"
            if kind == "string_type" and isinstance(value, bool):
                # bool is an int too: test it first.
                message += " (put the value in quotes: YAML reads true and false as a yes/no value)"
            elif kind == "string_type" and isinstance(value, int | float):
                message += (
                    " (put the value in quotes: YAML reads it as a number and drops leading zeros)"
                )
            elif kind.startswith("date"):
                message = f"expected {_EXPECTED[kind]}, found {value!r}"
            out.append(error("wrong-type", message, loc))
        elif kind in ("literal_error", "enum"):
            expected = err.get("ctx", {}).get("expected", "")
            out.append(
                error("invalid-value", f"{value!r} is not allowed here; expected {expected}", loc)
            )
        elif kind in ("too_short", "too_long"):
            ctx = err.get("ctx", {})
            what = "at least" if kind == "too_short" else "at most"
            count = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
            message = f"'{name}' needs {what} {count} item{'s' if count != 1 else ''}"
            if kind == "too_long" and isinstance(count, int) and isinstance(value, list):
                # Point at the first item too many, not at the start of the list.
                message = f"'{name}' takes at most {count} item{'s' if count != 1 else ''}; this is item {count + 1}"
                loc = doc.location((*path, count))
            out.append(error("wrong-count", message, loc))
        elif kind in ("string_too_short", "string_too_long"):
            ctx = err.get("ctx", {})
            if kind == "string_too_short":
                message = "this value must not be empty"
            else:
                message = f"this value is too long (at most {ctx.get('max_length')} characters)"
            out.append(error("invalid-value", message, loc))
        elif kind == "union_tag_invalid" or kind == "union_tag_not_found":
            out.append(error("wrong-type", "expected a key line or a mapping with 'key'", loc))
        else:
            # Our own validators raise PydanticCustomError whose type is the diagnostic code.
            code = kind if "-" in kind else "invalid-value"
            out.append(error(code, err["msg"], loc))
    return out


def _fmt(path: YamlPath) -> str:
    from provisioner.source import format_path

    return format_path(path)


def _schema_path(path: YamlPath) -> YamlPath:
    """Lists and free-form mapping keys collapse so field tables are looked up by shape."""
    return tuple("*" if isinstance(p, int) else p for p in path)
