"""The declaration format: one YAML file per quality. Field names are a public contract.

Rules that need only one value live here as pydantic validators, so that the JSON Schema and
the gate agree. Rules that need several places at once (preferred channels, files on disk,
uniqueness across files) live in `rules.py`, where source positions are at hand.
"""

from __future__ import annotations

import contextlib
import importlib
import ipaddress
from datetime import date, datetime
from functools import cache, lru_cache
from typing import Annotated, Any, Literal

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from provisioner.catalogue import load_catalogue
from provisioner.encoding import free_text_problem
from provisioner.forge import GITHUB_PATTERN, GITLAB_PATTERN, Forge, login_problem

CHANNELS = ("sftp", "ftp", "mqlink", "wbs")
ChannelName = Literal["sftp", "ftp", "mqlink", "wbs"]


class Model(BaseModel):
    # A typo in a field name must not pass silently: unknown fields are errors.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- single values -------------------------------------------------------------------------


def _refuse(code: str, message: str) -> PydanticCustomError:
    """A validation error whose type is the diagnostic code.

    The message is formatted here, not by pydantic: pydantic substitutes only plain ``{name}``
    placeholders (``{value!r}`` would reach the administrator verbatim), and it would also expand
    placeholders found inside the declared value itself.
    """
    return PydanticCustomError(code, message)


def enterprise_number_digits(value: str) -> str:
    """Normalise "0403.170.701" / "0403 170 701" / "BE0403170701" to ten digits, checked."""
    raw = value.strip()
    compact = raw.replace(".", "").replace(" ", "")
    if compact[:2].upper() == "BE":
        compact = compact[2:]
    if not compact.isdigit() or not compact.isascii() or len(compact) != 10:
        raise _refuse(
            "enterprise-number-format",
            f"an enterprise number has 10 digits, e.g. 0403.170.701 (found {value!r})",
        )
    if compact[0] not in "01":
        raise _refuse(
            "enterprise-number-format",
            f"an enterprise number starts with 0 or 1 (found {value!r})",
        )
    base, check = int(compact[:8]), int(compact[8:])
    if 97 - base % 97 != check:
        raise _refuse(
            "enterprise-number-checksum",
            f"{value} is not a valid enterprise number: its check digits should be "
            f"{97 - base % 97:02d} (mod 97); check for a typing error",
        )
    return compact


def format_enterprise_number(digits: str) -> str:
    return f"{digits[:4]}.{digits[4:7]}.{digits[7:]}"


def _nsso_number(value: str) -> str:
    # The NSSO registration number's check-digit rule is not public enough to confirm, so
    # only its shape is checked: digits with optional separators, at most 10 digits.
    compact = value.replace("-", "").replace(" ", "").replace(".", "").replace("/", "")
    if not compact.isdigit() or not compact.isascii() or not 3 <= len(compact) <= 10:
        raise _refuse(
            "nsso-number-format",
            f"an NSSO registration number has up to 10 digits (found {value!r})",
        )
    return compact


def _technical_user(value: str) -> str:
    if not (8 <= len(value) <= 20) or not value.isascii() or not value.isalnum():
        raise _refuse(
            "technical-user-format",
            "a technical username has 8 to 20 characters, ASCII letters and digits only, "
            f"no spaces (found {value!r})",
        )
    if value.isdigit():
        # chown, sshd and getent read an all-digit name as a uid, so such a login cannot be
        # provisioned safely on a Unix host.
        raise _refuse(
            "technical-user-format",
            f"a technical username must contain at least one letter: {value!r} would be read "
            "as a numeric user id by the SFTP host",
        )
    if value.lower() in load_catalogue().reserved_usernames:
        raise _refuse(
            "technical-user-reserved",
            f"{value!r} is a reserved account name; choose another technical username",
        )
    return value


def _phone(value: str) -> str:
    try:
        number = phonenumbers.parse(value, "BE")
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        raise _refuse(
            "phone-invalid",
            f"{value!r} is not a valid phone number; write a Belgian number (02 555 12 34) or "
            "an international one (+32 2 555 12 34)",
        )
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _memoise_email_domains() -> None:
    """Check each e-mail domain once per process, not once per address.

    Checking the part after the @ (character classes, IDNA, special-use names) is two thirds
    of the cost of `validate_email`, and declarations repeat a few domains in many addresses:
    an administrator's and the contact's, a social secretariat's in hundreds of files.
    `validate_email` looks `validate_email_domain_name` up in its module on every call, so the
    memoised function is put there. It is a pure function of its arguments (and of
    email-validator's list of special-use names, which nothing here changes); a refused domain
    raises, is not memoised, and is checked again, with the same message. Each caller gets a
    copy of the memoised dict, in case it changes what it gets.
    """
    module = importlib.import_module("email_validator.validate_email")
    original = getattr(module, "validate_email_domain_name", None)
    if original is None or getattr(original, "__wrapped__", None) is not None:
        return  # not the layout this was written for, or already done

    memo = lru_cache(maxsize=16384)(original)

    def validate_email_domain_name(
        domain: str, test_environment: bool = False, globally_deliverable: bool = True
    ) -> Any:
        return dict(memo(domain, test_environment, globally_deliverable))

    validate_email_domain_name.__wrapped__ = original  # type: ignore[attr-defined]
    module.validate_email_domain_name = validate_email_domain_name  # type: ignore[attr-defined]


_memoise_email_domains()


def _email(value: str) -> str:
    try:
        # No DNS: the gate runs in CI without network, and a domain's mail setup is not the
        # declaration's concern.
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        # email-validator writes whole sentences ("An email address must have an @-sign.");
        # ours continues after a colon.
        reason = str(exc).rstrip(".")
        reason = reason[:1].lower() + reason[1:]
        raise _refuse(
            "email-invalid", f"{value!r} is not a valid e-mail address: {reason}"
        ) from None
    return str(checked.normalized)


def _catalogue_check(kind: str) -> Any:
    def check(value: str) -> str:
        cat = load_catalogue()
        known = cat.applications if kind == "application" else cat.quality_types
        if value not in known:
            raise _refuse(
                f"unknown-{kind.replace('_', '-')}",
                f"{value!r} is not a known {kind.replace('_', ' ')}; "
                f"expected one of: {', '.join(known)}",
            )
        return value

    return check


@cache
def _enum(kind: str) -> list[str]:
    cat = load_catalogue()
    return list(cat.applications if kind == "application" else cat.quality_types)


def _free_text(value: str) -> str:
    problem = free_text_problem(value)
    if problem is not None:
        raise _refuse("text-character", problem)
    return value


# What the JSON Schema can say cheaply: no C0/C1 control, DEL, line or paragraph separator, nor
# the common invisible and bidirectional characters; the validator refuses the rest
# (`provisioner.encoding.free_text_problem`).
_TEXT_PATTERN = (
    "^[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f"
    "\\u2028-\\u202e\\u2060-\\u206f\\ufeff]*$"
)
Text = Annotated[
    str,
    # In the schema only: the validator's own message names the character and its code point.
    Field(min_length=1, max_length=200, json_schema_extra={"pattern": _TEXT_PATTERN}),
    AfterValidator(_free_text),
]
EnterpriseNumber = Annotated[
    str,
    AfterValidator(enterprise_number_digits),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(BE ?)?[01][0-9]{3}[. ]?[0-9]{3}[. ]?[0-9]{3}$",
            "description": "10 digits, dotted or not, first digit 0 or 1, mod-97 check digits",
        }
    ),
]
TechnicalUser = Annotated[
    str,
    AfterValidator(_technical_user),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[A-Za-z0-9]{8,20}$",
            "description": "SFTP login: 8-20 ASCII letters and digits, case-sensitive, immutable",
        }
    ),
]
Phone = Annotated[
    str,
    AfterValidator(_phone),
    WithJsonSchema({"type": "string", "description": "Belgian or international phone number"}),
]
Email = Annotated[
    str, AfterValidator(_email), WithJsonSchema({"type": "string", "format": "email"})
]
Application = Annotated[
    str,
    AfterValidator(_catalogue_check("application")),
    WithJsonSchema({"type": "string", "enum": _enum("application")}),
]
QualityType = Annotated[
    str,
    AfterValidator(_catalogue_check("quality_type")),
    WithJsonSchema({"type": "string", "enum": _enum("quality_type")}),
]


def _forge_login(forge: Forge) -> Any:
    def check(value: str) -> str:
        problem = login_problem(forge, value)
        if problem is not None:
            raise _refuse(f"{forge}-login", problem)
        return value

    return check


GitHubLogin = Annotated[
    str,
    AfterValidator(_forge_login("github")),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": GITHUB_PATTERN,
            "maxLength": 39,
            "description": "GitHub login: 1-39 letters, digits and single inner hyphens",
        }
    ),
]
GitLabLogin = Annotated[
    str,
    AfterValidator(_forge_login("gitlab")),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": GITLAB_PATTERN,
            "maxLength": 255,
            "description": "GitLab username: letters, digits and single inner '_', '.' or '-'",
        }
    ),
]


# sshd's from= (addrmatch.c, addr_pton_cidr) reads an address or `address/prefix-length` with a
# decimal length; anything else is matched as a host-name pattern, which never matches an
# address.
_CIDR_CHARACTERS = frozenset("0123456789abcdefABCDEF.:/")


def _address_pattern(value: str) -> str:
    """One `from:` entry, written back in the normalised form `str(ip_network(v, strict=True))`.

    Refused: anything sshd would not read as the same address or network (host names, zone
    ids, netmasks, host bits set), so that the entry written is exactly the one validated.
    """
    negated = value.startswith("!")
    body = value[1:] if negated else value
    sign = "!" if negated else ""
    if "%" in body:
        raise _refuse(
            "key-from-zone-id",
            "this entry has a zone id (the part from '%' on): a zone id names a link-local "
            "interface of the SFTP host, which no sender on the internet connects through; "
            "write the address or network without it",
        )
    if not body or not _CIDR_CHARACTERS.issuperset(body):
        raise _refuse(
            "key-from-invalid",
            f"{value!r} is not an IP address or network (CIDR); host names are not accepted "
            "because the SFTP host does not resolve them",
        )
    address, slash, length = body.partition("/")
    if slash and not (length.isascii() and length.isdigit()):
        hint = ""
        with contextlib.suppress(ValueError):
            hint = f"; did you mean {sign}{ipaddress.ip_network(body, strict=False)}?"
        raise _refuse(
            "key-from-netmask",
            f"{value!r}: write a network as address/prefix-length (CIDR); sshd does not read a "
            f"netmask after the '/'{hint}",
        )
    try:
        loose = ipaddress.ip_network(body, strict=False)
    except ValueError:
        raise _refuse(
            "key-from-invalid",
            f"{value!r} is not an IP address or network (CIDR); host names are not accepted "
            "because the SFTP host does not resolve them",
        ) from None
    if loose.network_address != ipaddress.ip_address(address):
        raise _refuse(
            "key-from-host-bits",
            f"{value!r} has host bits set, and sshd refuses the whole from= list of such a key "
            f"(it could never log in); did you mean {sign}{loose}? (for the single address, "
            f"write {sign}{address})",
        )
    if isinstance(loose, ipaddress.IPv6Network) and loose.network_address.ipv4_mapped:
        raise _refuse(
            "key-from-invalid",
            f"{value!r} is an IPv4-mapped IPv6 address; sshd sees IPv4 clients with their IPv4 "
            f"address, so write {sign}{loose.network_address.ipv4_mapped}"
            + (f"/{loose.prefixlen - 96}" if loose.prefixlen < 128 else ""),
        )
    return sign + str(loose)


def from_list_problems(entries: list[str]) -> list[tuple[int, str, str, bool]]:
    """Rules over a whole (normalised) `from:` list: (index, code, message, is_error)."""
    problems: list[tuple[int, str, str, bool]] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        body = entry.removeprefix("!")
        if body in seen:
            problems.append(
                (
                    i,
                    "key-from-duplicate",
                    f"{entry} is already listed as entry {seen[body] + 1} of this from list",
                    True,
                )
            )
            continue
        seen[body] = i
        if body in ("0.0.0.0/0", "::/0") and not entry.startswith("!"):
            problems.append(
                (
                    i,
                    "key-from-anywhere",
                    f"{entry} means any {'IPv4' if '.' in body else 'IPv6'} address: this key is "
                    "not restricted by address; list the sender's own addresses instead",
                    False,
                )
            )
    if entries and all(e.startswith("!") for e in entries):
        problems.append(
            (
                0,
                "key-from-negation-only",
                "a from list made only of negated entries (!...) matches no client at all: sshd "
                "lets a key log in only from an address a positive entry lists; add the "
                "sender's addresses",
                True,
            )
        )
    return problems


AddressPattern = Annotated[
    str,
    AfterValidator(_address_pattern),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^!?[0-9A-Fa-f.:]+(/[0-9]{1,3})?$",
            "description": "an IP address or a network as address/prefix-length (CIDR), "
            "without host bits; '!' in front excludes it",
        }
    ),
]


# --- structure -----------------------------------------------------------------------------


class Quality(Model):
    name: Text
    enterprise_number: EnterpriseNumber
    type: QualityType
    nsso_number: Annotated[str, AfterValidator(_nsso_number)] | None = None


class Administrator(Model):
    name: Text
    email: Email
    role: Literal["local", "co_local"]
    # Forge logins (optional): CODEOWNERS names the administrator by them, and `validate
    # --author` accepts them, since a CI job knows a pull request's author by login only.
    github: GitHubLogin | None = None
    gitlab: GitLabLogin | None = None


class Contact(Model):
    last_name: Text
    first_name: Text
    title: Literal["mr", "mrs", "ms"]
    function: Text
    language: Literal["nl", "fr", "de"]
    phone: Phone
    fax: Phone | None = None
    mobile: Phone | None = None
    emails: Annotated[list[Email], Field(min_length=1, max_length=3)]


class KeyEntry(Model):
    """A key with restrictions, rendered as `from=` and `expiry-time=` options."""

    key: Annotated[str, Field(min_length=1, description="OpenSSH public key line or .pub path")]
    from_: list[AddressPattern] | None = Field(default=None, alias="from", min_length=1)
    expires: date | datetime | None = None


def _key_kind(value: Any) -> str:
    return "entry" if isinstance(value, dict) else "line"


KeyRef = Annotated[
    Annotated[str, Tag("line"), Field(min_length=1)] | Annotated[KeyEntry, Tag("entry")],
    Discriminator(_key_kind),
]


class OtherChannel(Model):
    """FTP, MQLink and WBS are served elsewhere; they matter here for preferred channels."""

    applications: Annotated[list[Application], Field(min_length=1)]


class SftpChannel(OtherChannel):
    connection: Literal["internet"]
    ssh_keys: Annotated[list[KeyRef], Field(min_length=1)]
    certificate: Annotated[str, Field(min_length=1, description="path to a .cer/.crt/.pem file")]
    # During a renewal: the certificate that follows `certificate`. Both are accepted until
    # `certificate` expires; a separate key (not a list) keeps `certificate: path` the same
    # contract and says which one is the renewal.
    next_certificate: (
        Annotated[
            str,
            Field(
                min_length=1,
                description="during a renewal, the next certificate (.cer/.crt/.pem): both "
                "are accepted until `certificate` expires",
            ),
        ]
        | None
    ) = None


class Channels(Model):
    sftp: SftpChannel | None = None
    ftp: OtherChannel | None = None
    mqlink: OtherChannel | None = None
    wbs: OtherChannel | None = None

    def declared(self) -> dict[str, OtherChannel]:
        return {name: ch for name in CHANNELS if (ch := getattr(self, name)) is not None}


class StructuredMessages(Model):
    technical_user: TechnicalUser
    contact: Contact
    channels: Channels
    preferred_channels: dict[Application, ChannelName] = Field(default_factory=dict)


class Declaration(Model):
    """One quality's registration for structured messages."""

    model_config = ConfigDict(
        title="sftp-provisioner quality declaration",
        json_schema_extra={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://sftp-provisioner.invalid/schemas/quality.schema.json",
        },
    )

    quality: Quality
    administrators: Annotated[list[Administrator], Field(min_length=1)]
    structured_messages: StructuredMessages


def json_schema() -> dict[str, Any]:
    return Declaration.model_json_schema(by_alias=True)


def field_table() -> dict[tuple[str | int, ...], list[str]]:
    """Field names by YAML shape, for "did you mean" hints on unknown fields."""
    table: dict[tuple[str | int, ...], list[str]] = {}

    def add(path: tuple[str | int, ...], model: type[BaseModel]) -> None:
        table[path] = [f.alias or name for name, f in model.model_fields.items()]

    sm = ("structured_messages",)
    add((), Declaration)
    add(("quality",), Quality)
    add(("administrators", "*"), Administrator)
    add(sm, StructuredMessages)
    add((*sm, "contact"), Contact)
    add((*sm, "channels"), Channels)
    add((*sm, "channels", "sftp"), SftpChannel)
    for other in ("ftp", "mqlink", "wbs"):
        add((*sm, "channels", other), OtherChannel)
    add((*sm, "channels", "sftp", "ssh_keys", "*"), KeyEntry)
    return table
