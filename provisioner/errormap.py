"""Turning pydantic's validation errors into diagnostics an administrator understands."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from provisioner.diagnostics import Diagnostic, Location, error
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
    unknown = _unknown_names(doc, errors)
    for err in errors:
        path, is_key = _walk(doc.data, tuple(err["loc"]))
        if err["type"] == "missing" and _said_by_misspelling(path, unknown):
            continue
        if path in seen:
            continue  # the other branches of a union say the same thing again
        seen.add(path)
        out.append(_diagnostic(doc, err, path, is_key, field_names))
    return out


def _unknown_names(doc: SourceDocument, errors: list[ErrorDetails]) -> dict[YamlPath, list[str]]:
    """Per mapping, the unknown names in it."""
    unknown: dict[YamlPath, list[str]] = {}
    for err in errors:
        if err["type"] == "extra_forbidden":
            where, _ = _walk(doc.data, tuple(err["loc"]))
            if where:
                unknown.setdefault(where[:-1], []).append(str(where[-1]))
    return unknown


def _said_by_misspelling(path: YamlPath, unknown: dict[YamlPath, list[str]]) -> bool:
    """A required field that is missing because it was misspelt is said once, by the "did you
    mean" of the misspelling, not twice."""
    name = str(path[-1]) if path else ""
    return bool(difflib.get_close_matches(name, unknown.get(path[:-1], []), n=1))


def _diagnostic(
    doc: SourceDocument,
    err: ErrorDetails,
    path: YamlPath,
    is_key: bool,
    field_names: dict[YamlPath, list[str]],
) -> Diagnostic:
    kind = err["type"]
    if kind == "missing":
        return _missing_field(doc, path)
    if kind == "extra_forbidden":
        return _unknown_field(doc, path, field_names)
    loc = doc.location(path, key=is_key)
    value = err.get("input")
    if kind in _EXPECTED:
        return error("wrong-type", _wrong_type_message(kind, value), loc)
    if kind in ("literal_error", "enum"):
        expected = err.get("ctx", {}).get("expected", "")
        return error("invalid-value", f"{value!r} is not allowed here; expected {expected}", loc)
    if kind in ("too_short", "too_long"):
        return _wrong_count(doc, err, path, loc)
    if kind == "string_too_short":
        return error("invalid-value", "this value must not be empty", loc)
    if kind == "string_too_long":
        limit = err.get("ctx", {}).get("max_length")
        return error("invalid-value", f"this value is too long (at most {limit} characters)", loc)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return error("wrong-type", "expected a key line or a mapping with 'key'", loc)
    # Our own validators raise PydanticCustomError whose type is the diagnostic code.
    code = kind if "-" in kind else "invalid-value"
    return error(code, err["msg"], loc)


def _missing_field(doc: SourceDocument, path: YamlPath) -> Diagnostic:
    """Reported at the parent mapping (the field has no node of its own), naming the field."""
    name = path[-1] if path else ""
    loc = doc.location(path[:-1], key=True)
    loc = type(loc)(loc.file, loc.line, loc.column, _fmt(path))
    return error("missing-field", f"the field '{name}' is required here", loc)


def _unknown_field(
    doc: SourceDocument, path: YamlPath, field_names: dict[YamlPath, list[str]]
) -> Diagnostic:
    name = path[-1] if path else ""
    loc = doc.location(path, key=True)
    known = field_names.get(_schema_path(path[:-1]), [])
    hint = ""
    close = difflib.get_close_matches(str(name), known, n=1)
    if close:
        hint = f"; did you mean '{close[0]}'?"
    elif known:
        hint = f"; expected one of: {', '.join(known)}"
    return error("unknown-field", f"unknown field '{name}'{hint}", loc)


def _wrong_type_message(kind: str, value: Any) -> str:
    if kind.startswith("date"):
        return f"expected {_EXPECTED[kind]}, found {value!r}"
    message = f"expected {_EXPECTED[kind]}, found {_describe(value)}"
    if kind == "string_type" and isinstance(value, bool):
        # bool is an int too: test it first.
        message += " (put the value in quotes: YAML reads true and false as a yes/no value)"
    elif kind == "string_type" and isinstance(value, int | float):
        message += " (put the value in quotes: YAML reads it as a number and drops leading zeros)"
    return message


def _wrong_count(
    doc: SourceDocument, err: ErrorDetails, path: YamlPath, loc: Location
) -> Diagnostic:
    name = path[-1] if path else ""
    ctx = err.get("ctx", {})
    value = err.get("input")
    if err["type"] == "too_short":
        count = ctx.get("min_length")
        return error("wrong-count", f"'{name}' needs at least {count} {_items(count)}", loc)
    count = ctx.get("max_length")
    if isinstance(count, int) and isinstance(value, list):
        # Point at the first item too many, not at the start of the list.
        message = f"'{name}' takes at most {count} {_items(count)}; this is item {count + 1}"
        return error("wrong-count", message, doc.location((*path, count)))
    return error("wrong-count", f"'{name}' needs at most {count} {_items(count)}", loc)


def _items(count: object) -> str:
    return "item" if count == 1 else "items"


def _fmt(path: YamlPath) -> str:
    from provisioner.source import format_path

    return format_path(path)


def _schema_path(path: YamlPath) -> YamlPath:
    """Lists and free-form mapping keys collapse so field tables are looked up by shape."""
    return tuple("*" if isinstance(p, int) else p for p in path)
