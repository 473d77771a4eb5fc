"""The overview the portal shows on its confirmation page, for one quality's declaration.

:func:`build_overview` turns a checked declaration into an :class:`Overview`: plain data, each
code of the declaration format beside its name in the chosen language. Nothing it holds is
secret: keys appear as algorithm, size, SHA256 fingerprint and comment, never their material.
:func:`render_text` lays the overview out with ``templates/overview/overview.txt.j2`` and the
captions of ``labels.yaml``; :func:`render_json` gives the same data to tools.

The sender number and the registration date do not exist when a declaration is validated: the
reconciler assigns them. Until then the overview says "not yet assigned"; `show` passes what
the SFTP host knows (a :class:`Synchronisation`: the registration from the state or the
ledger, anything with ``sender_number``, ``registered_at`` and ``status`` such as
``state.Registration``, and the next sync) to :func:`build_overview`. A channel the host has
not synchronised yet reads as the portal says it: the configuration is in progress, with the
time of the next sync.

Dates and times are shown on the Brussels wall clock (:mod:`provisioner.portaltime`); the JSON
form keeps instants in UTC with their offset.

Building and rendering are pure; only :func:`locate` (find a declaration by file or by technical
user, and validate it) reads the disk.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from datetime import date, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Final, Protocol

import jinja2
import phonenumbers
from ruamel.yaml import YAML

from provisioner.catalogue import LANGUAGES, load_catalogue
from provisioner.certificates import CertificateInfo
from provisioner.declarations import FileResult, ResolvedKey
from provisioner.diagnostics import Diagnostic
from provisioner.errors import DeclarationError
from provisioner.models import Declaration, format_enterprise_number
from provisioner.portaltime import in_portal_zone, portal_day
from provisioner.resources import shipped
from provisioner.safefile import within

TEMPLATE = "overview/overview.txt.j2"
JSON_VERSION = 1
_LABEL_GROUPS = ("labels", "titles", "languages", "connections", "statuses")


# --- labels --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Labels:
    """labels.yaml: captions, and the words for coded values, each in every language."""

    groups: Mapping[str, Mapping[str, Mapping[str, str]]]

    def captions(self, lang: str) -> dict[str, str]:
        return {key: names[lang] for key, names in self.groups["labels"].items()}

    def word(self, group: str, key: str, lang: str) -> str:
        """The word for a coded value; an unknown code is shown as it is."""
        names = self.groups[group].get(key)
        return names[lang] if names is not None else key


@cache
def load_labels() -> Labels:
    text = resources.files("provisioner").joinpath("labels.yaml").read_text("utf-8")
    raw = YAML(typ="safe", pure=False).load(text)
    groups = {
        group: {
            str(key): {lang: str(names[lang]) for lang in LANGUAGES}
            for key, names in raw[group].items()
        }
        for group in _LABEL_GROUPS
    }
    return Labels(groups)


# --- the overview --------------------------------------------------------------------------


class RegistrationLike(Protocol):
    """What the reconciler knows once it has registered the channel (see state.Registration)."""

    @property
    def sender_number(self) -> int | str: ...

    @property
    def registered_at(self) -> datetime | date | None: ...

    @property
    def status(self) -> str: ...


# A removed channel that is declared again comes back at the next sync, as a new one does.
PENDING_STATUSES: Final = frozenset({"pending", "removed"})


@dataclass(frozen=True, slots=True)
class Synchronisation:
    """What the SFTP host knows of one quality (see `pending.synchronisation_from_state`)."""

    registration: RegistrationLike | None  # None: never synchronised
    next_sync: datetime | None  # timezone-aware; None when the source does not say
    # The channel waits for a sync to be created (or to come back after a removal).
    pending: bool


@dataclass(frozen=True, slots=True)
class QualityView:
    name: str
    enterprise_number: str  # dotted, 0403.170.701
    type: str
    type_name: str
    nsso_number: str | None


@dataclass(frozen=True, slots=True)
class ContactView:
    last_name: str
    first_name: str
    title: str
    title_name: str
    function: str
    language: str
    language_name: str
    phone: str  # E.164, as the declaration normalised it
    fax: str | None
    mobile: str | None
    emails: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TechnicalUserView:
    username: str
    # None until the reconciler has registered the channel: "not yet assigned".
    sender_number: str | None  # six digits, as in file names
    registered_at: datetime | date | None
    registration_date: date | None  # the calendar date the portal shows (Brussels time)
    status: str | None
    status_text: str | None
    # Only when the host was asked (`show --state-url` / `--ledger`): "pending" until the
    # channel's first sync, and when that sync is.
    next_sync: datetime | None = None


@dataclass(frozen=True, slots=True)
class KeyView:
    algorithm: str
    bits: int
    fingerprint: str  # SHA256:… as ssh-keygen -l prints it
    comment: str
    file: str | None  # the .pub file it was read from (relative to the root), None if inline
    from_: tuple[str, ...] | None
    expires: datetime | None


@dataclass(frozen=True, slots=True)
class CertificateView:
    owner: str
    company: str  # "Not specified" when the certificate names none, as the portal shows it
    issuer: str
    not_after: datetime
    expiry_date: date  # the calendar date in Brussels, as its owner reads it
    serial_decimal: str
    serial_hex: str
    sha256_fingerprint: str


@dataclass(frozen=True, slots=True)
class ChannelView:
    channel: str
    name: str
    applications: tuple[str, ...]
    connection: str | None = None
    connection_name: str | None = None
    keys: tuple[KeyView, ...] = ()
    certificate: CertificateView | None = None
    # During a renewal: the next certificate, accepted as well until `certificate` expires.
    next_certificate: CertificateView | None = None


@dataclass(frozen=True, slots=True)
class ApplicationView:
    application: str
    name: str
    channels: tuple[str, ...]  # the channels that carry it
    channel_names: tuple[str, ...]
    preferred_channel: str | None  # the chosen one, or the only one
    preferred_channel_name: str | None


@dataclass(frozen=True, slots=True)
class Overview:
    language: str
    source: str
    quality: QualityView
    contact: ContactView
    technical_user: TechnicalUserView
    channels: tuple[ChannelView, ...]
    applications: tuple[ApplicationView, ...]


def overview_of(
    result: FileResult,
    *,
    lang: str | None = None,
    registration: RegistrationLike | None = None,
    synchronisation: Synchronisation | None = None,
) -> Overview:
    """The overview of a checked file; the caller has made sure it has no errors."""
    if result.declaration is None:
        raise ValueError(f"{result.display} has no valid declaration")
    return build_overview(
        result.declaration,
        result.keys,
        result.certificate,
        next_certificate=result.next_certificate,
        source=result.display,
        lang=lang,
        registration=registration,
        synchronisation=synchronisation,
    )


def build_overview(
    declaration: Declaration,
    keys: Sequence[ResolvedKey],
    certificate: CertificateInfo | None,
    *,
    next_certificate: CertificateInfo | None = None,
    source: str,
    lang: str | None = None,
    registration: RegistrationLike | None = None,
    synchronisation: Synchronisation | None = None,
) -> Overview:
    """Everything the portal's overview shows, in `lang` (default: the contact's language).

    `synchronisation` (what the host knows) takes the place of `registration` when given.
    """
    sm = declaration.structured_messages
    contact = sm.contact
    language = lang or contact.language
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; expected one of {', '.join(LANGUAGES)}")
    labels = load_labels()
    catalogue = load_catalogue()
    quality = declaration.quality
    return Overview(
        language=language,
        source=source,
        quality=QualityView(
            name=quality.name,
            enterprise_number=format_enterprise_number(quality.enterprise_number),
            type=quality.type,
            type_name=catalogue.quality_type_name(quality.type, language),
            nsso_number=quality.nsso_number,
        ),
        contact=ContactView(
            last_name=contact.last_name,
            first_name=contact.first_name,
            title=contact.title,
            title_name=labels.word("titles", contact.title, language),
            function=contact.function,
            language=contact.language,
            language_name=labels.word("languages", contact.language, language),
            phone=contact.phone,
            fax=contact.fax,
            mobile=contact.mobile,
            emails=tuple(contact.emails),
        ),
        technical_user=_technical_user(
            sm.technical_user, registration, synchronisation, labels, language
        ),
        channels=_channels(declaration, keys, certificate, next_certificate, labels, language),
        applications=_applications(declaration, language),
    )


def _technical_user(
    username: str,
    registration: RegistrationLike | None,
    synchronisation: Synchronisation | None,
    labels: Labels,
    lang: str,
) -> TechnicalUserView:
    next_sync = None
    status = None
    if synchronisation is not None:
        registration = synchronisation.registration
        if synchronisation.pending:
            status = "pending"
            next_sync = synchronisation.next_sync
    if registration is None:
        if status is None:
            return TechnicalUserView(username, None, None, None, None, None)
        text = labels.word("statuses", status, lang)
        return TechnicalUserView(username, None, None, None, status, text, next_sync)
    number = registration.sender_number
    registered_at = registration.registered_at
    status = status or registration.status
    return TechnicalUserView(
        username=username,
        sender_number=f"{number:06d}" if isinstance(number, int) else number,
        registered_at=registered_at,
        registration_date=None if registered_at is None else portal_day(registered_at),
        status=status,
        status_text=labels.word("statuses", status, lang),
        next_sync=next_sync,
    )


def _channels(
    declaration: Declaration,
    keys: Sequence[ResolvedKey],
    certificate: CertificateInfo | None,
    next_certificate: CertificateInfo | None,
    labels: Labels,
    lang: str,
) -> tuple[ChannelView, ...]:
    catalogue = load_catalogue()
    out: list[ChannelView] = []
    for name, channel in declaration.structured_messages.channels.declared().items():
        view = ChannelView(name, catalogue.channel_name(name, lang), tuple(channel.applications))
        if name == "sftp":
            connection = getattr(channel, "connection", None)
            view = ChannelView(
                name,
                view.name,
                view.applications,
                connection=connection,
                connection_name=labels.word("connections", connection, lang)
                if connection
                else None,
                keys=tuple(_key(k) for k in keys),
                certificate=_certificate(certificate) if certificate is not None else None,
                next_certificate=_certificate(next_certificate)
                if next_certificate is not None
                else None,
            )
        out.append(view)
    return tuple(out)


def _key(resolved: ResolvedKey) -> KeyView:
    key = resolved.key
    return KeyView(
        algorithm=key.algorithm,
        bits=key.bits,
        fingerprint=key.fingerprint,
        comment=key.comment,
        file=None if resolved.source == "inline" else resolved.source,
        from_=resolved.from_,
        expires=resolved.expires,
    )


def _certificate(info: CertificateInfo) -> CertificateView:
    return CertificateView(
        owner=info.owner,
        company=info.company,
        issuer=info.issuer,
        not_after=info.not_after,
        expiry_date=portal_day(info.not_after),
        serial_decimal=info.serial_decimal,
        serial_hex=info.serial_hex,
        sha256_fingerprint=info.sha256_fingerprint,
    )


def _applications(declaration: Declaration, lang: str) -> tuple[ApplicationView, ...]:
    """Every application of the quality, in the catalogue's order, with its preferred channel."""
    catalogue = load_catalogue()
    sm = declaration.structured_messages
    carriers: dict[str, list[str]] = {}
    for name, channel in sm.channels.declared().items():
        for app in channel.applications:
            if name not in carriers.setdefault(app, []):
                carriers[app].append(name)
    order = {key: i for i, key in enumerate(catalogue.applications)}
    out = []
    for app in sorted(carriers, key=lambda a: (order.get(a, len(order)), a)):
        channels = tuple(carriers[app])
        preferred = sm.preferred_channels.get(app) or (channels[0] if len(channels) == 1 else None)
        known = catalogue.applications.get(app)
        out.append(
            ApplicationView(
                application=app,
                name=known.name(lang) if known is not None else app,
                channels=channels,
                channel_names=tuple(catalogue.channel_name(c, lang) for c in channels),
                preferred_channel=preferred,
                preferred_channel_name=catalogue.channel_name(preferred, lang)
                if preferred
                else None,
            )
        )
    return tuple(out)


# --- rendering -----------------------------------------------------------------------------

# Control characters and the invisible format characters that reorder or hide text: a value
# from a declaration must not move the cursor, recolour the terminal or break the layout.
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]"
)


def printable(value: Any) -> Any:
    """Jinja finalizer: None prints as nothing; unprintable characters as \\uXXXX."""
    if value is None:
        return ""
    if isinstance(value, str):
        return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", value)
    return value


def portal_date(value: date | datetime | None) -> str:
    """DD/MM/YYYY, as the portal writes dates; an instant on its date in Brussels."""
    if value is None:
        return ""
    return portal_day(value).strftime("%d/%m/%Y")


def portal_time(value: datetime | None) -> str:
    """DD/MM/YYYY HH:MM on the Brussels wall clock."""
    if value is None:
        return ""
    return in_portal_zone(value).strftime("%d/%m/%Y %H:%M")


def phone_display(value: str | None) -> str:
    """Belgian numbers in national notation (02 545 50 78), others in international notation."""
    if not value:
        return ""
    try:
        number = phonenumbers.parse(value, "BE")
    except phonenumbers.NumberParseException:
        return value
    style = (
        phonenumbers.PhoneNumberFormat.NATIONAL
        if number.country_code == 32
        else phonenumbers.PhoneNumberFormat.INTERNATIONAL
    )
    return str(phonenumbers.format_number(number, style))


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(shipped("templates"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=printable,
        autoescape=False,  # noqa: S701 - terminal text, not HTML; see `printable`
    )
    env.filters["portal_date"] = portal_date
    env.filters["portal_time"] = portal_time
    env.filters["phone"] = phone_display
    return env


def render_text(overview: Overview) -> str:
    template = _environment().get_template(TEMPLATE)
    return template.render(o=overview, t=load_labels().captions(overview.language))


def to_data(value: Any) -> Any:
    """The overview as JSON values: dates in ISO 8601, `from_` spelled `from` as in declarations."""
    if is_dataclass(value) and not isinstance(value, type):
        return {
            ("from" if f.name == "from_" else f.name): to_data(getattr(value, f.name))
            for f in fields(value)
        }
    if isinstance(value, tuple | list):
        return [to_data(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def render_json(overview: Overview) -> str:
    data = {"version": JSON_VERSION, **to_data(overview)}
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


# --- finding a declaration -----------------------------------------------------------------


@dataclass(slots=True)
class Located:
    result: FileResult
    # The validation diagnostics located in this file (own rules and cross-file ones).
    diagnostics: list[Diagnostic]
    root: Path

    @property
    def ok(self) -> bool:
        return self.result.declaration is not None and not any(d.is_error for d in self.diagnostics)


def _looks_like_path(target: str) -> bool:
    return "/" in target or "\\" in target or target.endswith((".yaml", ".yml"))


def locate(target: str, declarations: Path, *, cwd: Path | None = None) -> Located:
    """The declaration FILE, or the one under `declarations` whose technical user is USERNAME.

    Usernames are case-sensitive, as on the SFTP host. Raises DeclarationError when nothing
    matches.
    """
    from provisioner.validate import ValidateSettings, validate

    base = cwd or Path.cwd()
    as_path = Path(target) if Path(target).is_absolute() else base / target
    if as_path.is_file():
        root = _declarations_root(as_path, declarations, base)
        report = validate(ValidateSettings(paths=(as_path,), cwd=base, root=root), full=True)
        if not report.results:  # unreachable for an existing file; kept for type safety
            raise DeclarationError(f"{target}: cannot be read as a declaration")
        result = report.results[0]
        return Located(result, _diagnostics_of(result, report.diagnostics), report.root)
    if as_path.is_dir():
        raise DeclarationError(
            f"{target} is a directory: give a declaration file, or a technical username "
            "with --declarations DIR"
        )
    if _looks_like_path(target):
        raise DeclarationError(f"{target}: no such file")

    root = declarations if declarations.is_absolute() else base / declarations
    if not root.is_dir():
        raise DeclarationError(f"{declarations}: no such directory (see --declarations)")
    report = validate(ValidateSettings(paths=(root,), cwd=base), full=True)
    matches = [r for r in report.results if r.facts.technical_user == target]
    if len(matches) > 1:
        files = ", ".join(r.display for r in matches)
        raise DeclarationError(
            f"the technical user '{target}' is declared in several files ({files}); "
            "run `provisioner validate`"
        )
    if not matches:
        similar = sorted(
            r.facts.technical_user
            for r in report.results
            if r.facts.technical_user is not None
            and r.facts.technical_user.lower() == target.lower()
        )
        hint = (
            f"; did you mean '{similar[0]}'? Technical usernames are case-sensitive"
            if similar
            else ""
        )
        raise DeclarationError(
            f"no declaration under {declarations} has the technical user '{target}'{hint}"
        )
    result = matches[0]
    return Located(result, _diagnostics_of(result, report.diagnostics), report.root)


def _declarations_root(file: Path, declarations: Path, base: Path) -> Path | None:
    """The root `validate` finds for the --declarations directory, when it holds `file`.

    So that `show qualities/x.yaml` judges `../keys/a.pub` as `validate` does run from the
    same directory, inside a Git work tree or not (outside one, `find_root` of the file alone
    would be `qualities/`). None: the file is elsewhere, and its own root applies.
    """
    from provisioner.discovery import find_root

    directory = declarations if declarations.is_absolute() else base / declarations
    if not directory.is_dir():
        return None
    root = find_root([directory])
    return root if within(os.path.realpath(file), str(root)) else None


def _diagnostics_of(result: FileResult, diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diagnostics if d.location.file == result.display]
