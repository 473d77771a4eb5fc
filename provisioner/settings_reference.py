"""The settings reference and the commented settings file, both read off the settings model.

`docs/settings.md` (every setting: name, type, default, environment variable, meaning) and
the file `provisioner init` writes come from `HostSettings`' fields and their descriptions, so
that a setting added to the model appears in both without anyone remembering to. A test
compares docs/settings.md with `render_reference()`; refresh it with
`python -m provisioner.settings_reference` (`--check` only compares).
"""

from __future__ import annotations

import json
import re
import socket
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from provisioner import __version__
from provisioner.settings import (
    DEFAULT_SETTINGS_FILE,
    ENV_PREFIX,
    SMTP_PASSWORD_ENV,
    SMTP_USERNAME_ENV,
    HostSettings,
)

REFERENCE_FILE = Path("docs/settings.md")
ENVIRONMENT_FILE = Path("/etc/sftp-provisioner/environment")
# Not a setting one writes: `--root` sets it.
_NOT_IN_FILE = frozenset({"root"})
# A default the machine decides (its host name) is described, never printed: the reference
# must be the same on every machine, and the file `init` writes must not pin it by accident.
_MACHINE_DEFAULTS = {
    socket.getfqdn: "the machine's fully qualified host name",
    socket.gethostname: "the machine's host name",
}
# What a fresh host sets in the file `init` writes; everything else keeps its default.
MUST_SET = ("declarations",)
DEFAULT_DECLARATIONS = Path("/srv/declarations")


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    type: str
    default: str  # as YAML, or a sentence for a machine-dependent default
    default_value: Any  # the value itself, or None for a machine-dependent default
    machine_default: bool
    environment: str | None
    description: str


def _constraint_text(metadata: list[Any]) -> str:
    ge = gt = le = None
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            ge = item.ge
        elif isinstance(item, annotated_types.Gt):
            gt = item.gt
        elif isinstance(item, annotated_types.Le):
            le = item.le
    if ge is not None:
        return f" {ge} to {le}" if le is not None else f" {ge} or more"
    if gt is not None:
        return f" above {gt}" + (f", at most {le}" if le is not None else "")
    return f", at most {le}" if le is not None else ""


def _type_name(annotation: Any, metadata: list[Any] | None = None) -> str:
    metadata = metadata or []
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner, *extra = typing.get_args(annotation)
        nested: list[Any] = []
        for item in extra:
            nested.extend(getattr(item, "metadata", []) or [])
            if isinstance(item, annotated_types.BaseMetadata):
                nested.append(item)
        return _type_name(inner, metadata + nested)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        names = " or ".join(_type_name(a) for a in args)
        return f"{names}, or null" if len(args) < len(typing.get_args(annotation)) else names
    if origin is Literal:
        return " or ".join(str(a) for a in typing.get_args(annotation))
    if origin is list:
        (item,) = typing.get_args(annotation)
        return f"list of {_type_name(item)}"
    if annotation is bool:
        return "true/false"
    if annotation is int:
        return "integer" + _constraint_text(metadata)
    if annotation is float:
        return "number" + _constraint_text(metadata)
    if annotation is str:
        return "text"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "absolute path"
    return getattr(annotation, "__name__", str(annotation))


def yaml_value(value: Any) -> str:
    """One value as YAML the settings loader reads back as the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, list):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    text = str(value)
    # Plain when nothing in it could read as another type or as YAML syntax; else JSON's
    # double-quoted form, which YAML reads the same.
    if re.fullmatch(r"[A-Za-z/][A-Za-z0-9/._+-]*", text) and text.lower() not in (
        "null",
        "true",
        "false",
        "yes",
        "no",
        "on",
        "off",
    ):
        return text
    return json.dumps(text, ensure_ascii=False)


def _field_type(info: FieldInfo) -> str:
    annotation = info.annotation
    metadata = list(info.metadata)
    return _type_name(annotation, metadata)


def settings() -> list[Setting]:
    """Every setting of the model, in the model's order."""
    out = []
    for name, info in HostSettings.model_fields.items():
        factory = info.default_factory
        machine = factory in _MACHINE_DEFAULTS
        if machine:
            assert factory is not None
            default, value = _MACHINE_DEFAULTS[factory], None  # type: ignore[index]
        else:
            value = factory() if factory is not None else info.default  # type: ignore[call-arg]
            if value is PydanticUndefined:
                value = None
            default = yaml_value(value)
        out.append(
            Setting(
                name=name,
                type=_field_type(info),
                default=default,
                default_value=value,
                machine_default=machine,
                environment=None if name in _NOT_IN_FILE else ENV_PREFIX + name.upper(),
                description=info.description or "",
            )
        )
    return out


def missing_descriptions() -> list[str]:
    return [s.name for s in settings() if not s.description.strip()]


def _cell(text: str) -> str:
    # `<user>` would be read as an HTML tag and vanish.
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def render_reference() -> str:
    """docs/settings.md."""
    lines = [
        "# Settings reference",
        "",
        "<!-- Generated from provisioner/settings.py by `python -m provisioner.settings_reference`;"
        " do not edit by hand: a test compares the two. -->",
        "",
        f"The host reads its settings from `{DEFAULT_SETTINGS_FILE}` (`provisioner init` writes "
        "one with every setting commented), or the file given with `--settings FILE` or "
        f"`{ENV_PREFIX}SETTINGS`. A file is a YAML mapping of setting names to values; unknown "
        "names and relative paths are errors with file and line. Each setting can be overridden "
        "by its environment variable (lists: words separated by spaces), and some by "
        "command-line flags (`--state-url`); `--root DIR` then prefixes every managed path.",
        "",
        f"Secrets are never settings: the SMTP credentials come from `{SMTP_USERNAME_ENV}` and "
        f"`{SMTP_PASSWORD_ENV}` only, and a PostgreSQL URL with a password belongs in "
        f"`{ENV_PREFIX}STATE_URL`, in `{ENVIRONMENT_FILE}` (mode 0600), which the systemd service "
        "reads; the settings file and the units are world-readable.",
        "",
        "| setting | type | default | environment variable | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in settings():
        default = s.default if s.machine_default else f"`{s.default}`"
        env = f"`{s.environment}`" if s.environment else "(set by `--root`)"
        lines.append(
            f"| `{s.name}` | {_cell(s.type)} | {_cell(default)} | {env} | {_cell(s.description)} |"
        )
    return "\n".join([*lines, *_change_effects()]) + "\n"


def _change_effects() -> list[str]:
    """What a changed setting costs the next run, read off provisioner.setting_scopes."""
    from provisioner.setting_scopes import PLANS, RENDERS

    order = [s.name for s in settings()]

    def named(scope: frozenset[str]) -> str:
        return ", ".join(f"`{name}`" for name in order if name in scope)

    return [
        "",
        "## What a changed setting costs",
        "",
        f"- Changing one of {named(RENDERS)} changes what is rendered: the next run renders "
        "every channel again and reads its files, and a plan saved before is stale "
        "(`apply --plan` refuses it).",
        f"- Changing one of {named(PLANS)} changes what a plan decides or where it is "
        "applied: a plan saved before is stale, but channels the last apply left as they "
        "should be are not rendered again.",
        "- Every other setting (notifications, the intake gate, status, the ledger, the "
        "timers, the caches, the audit log) leaves both alone: it takes effect at the next "
        "run without re-rendering anything.",
    ]


def _comment(text: str, width: int = 96) -> list[str]:
    import textwrap

    return ["# " + line for line in textwrap.wrap(text, width - 2, break_on_hyphens=False)]


def render_settings_file(values: Mapping[str, Any] | None = None) -> str:
    """The commented settings file for a fresh host (`provisioner init`).

    Every setting is there with its meaning and default; a commented-out line keeps the
    default. `values` are written uncommented: the few a host must set (MUST_SET) and
    whatever the caller chose.
    """
    chosen = {"declarations": DEFAULT_DECLARATIONS, **(values or {})}
    lines = [
        f"# sftp-provisioner settings, written by `provisioner init` (sftp-provisioner "
        f"{__version__}).",
        "#",
        *_comment(
            "Every setting is listed with its meaning; a line that stays commented out keeps "
            "the default shown. The reference with types and environment variables is "
            "docs/settings.md in the sftp-provisioner repository."
        ),
        "#",
        *_comment(
            "This file is world-readable, like the systemd units: secrets never go here. SMTP "
            f"credentials and a PostgreSQL URL with a password go in {ENVIRONMENT_FILE} "
            f"(mode 0600) as {SMTP_USERNAME_ENV}=..., {SMTP_PASSWORD_ENV}=..., "
            f"{ENV_PREFIX}STATE_URL=..."
        ),
    ]
    for s in settings():
        if s.name in _NOT_IN_FILE:
            continue
        lines.append("")
        lines.extend(_comment(s.description))
        if s.machine_default:
            lines.append(f"# Default: {s.default}.")
        if s.name in chosen:
            lines.append(f"{s.name}: {yaml_value(chosen[s.name])}")
        elif s.machine_default:
            factory = HostSettings.model_fields[s.name].default_factory
            assert factory is not None
            lines.append(f"# {s.name}: {yaml_value(factory())}")  # type: ignore[call-arg]
        else:
            lines.append(f"# {s.name}: {s.default}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    rest = [a for a in args if a != "--check"]
    target = Path(rest[0]) if rest else REFERENCE_FILE
    missing = missing_descriptions()
    if missing:
        print("settings without a description: " + ", ".join(missing), file=sys.stderr)
        return 1
    text = render_reference()
    if check:
        current = target.read_text(encoding="utf-8") if target.is_file() else None
        if current != text:
            print(f"{target} is out of date: run python -m provisioner.settings_reference")
            return 1
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
