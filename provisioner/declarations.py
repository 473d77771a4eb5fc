"""One declaration file, checked on its own: YAML, model, referenced key and certificate files.

Everything here depends only on the bytes of the file and of the files it references, so its
result can be cached by content hash and computed in a worker process. Checks that depend on
the clock (certificate validity, key expiry) or on other files live in `rules.py`.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path

from pydantic import ValidationError

from provisioner.certificates import (
    CertificateInfo,
    CertificateProblem,
    certificate_der,
    load_certificate,
)
from provisioner.diagnostics import Diagnostic, Location, error, warning
from provisioner.encoding import free_text_problem
from provisioner.errormap import validation_diagnostics
from provisioner.forge import identities
from provisioner.keys import KeyProblem, PublicKey, parse_public_key
from provisioner.models import (
    Application,
    ChannelName,
    Declaration,
    KeyEntry,
    OtherChannel,
    field_table,
    from_list_problems,
)
from provisioner.portaltime import portal_zone
from provisioner.quality_id import QualityId
from provisioner.safefile import (
    OutsideRoot,
    Refused,
    TooLarge,
    confined_realpath,
    kind_of,
    read_regular,
    shown_name,
    unsafe_part,
    within,
)
from provisioner.source import SourceDocument, YamlPath, parse_document, read_source

_FIELDS = field_table()
_QUALITY_TYPE_CODE = re.compile(r"[a-z0-9_]{1,64}")
CERT_SUFFIXES = (".cer", ".crt", ".pem", ".der")
MAX_REFERENCED_BYTES = 256 * 1024
_KEY_PREFIXES = ("ssh-", "ecdsa-", "sk-")


@dataclass(frozen=True, slots=True)
class ResolvedKey:
    key: PublicKey
    from_: tuple[str, ...] | None
    expires: datetime | None
    location: Location
    source: str  # "inline" or the referenced .pub file, relative to the root


@dataclass(frozen=True, slots=True)
class Facts:
    """What the cross-file rules need, small enough to cache."""

    enterprise_number: str | None = None
    enterprise_number_at: Location | None = None
    technical_user: str | None = None
    technical_user_at: Location | None = None
    administrators: tuple[str, ...] = ()
    administrators_at: Location | None = None
    # With the enterprise number, the quality's identity (provisioner.quality_id).
    quality_type: str | None = None
    quality_type_at: Location | None = None

    @property
    def qid(self) -> QualityId | None:
        """The quality this file declares, when it says both parts of its identity."""
        if self.enterprise_number is None or self.quality_type is None:
            return None
        return QualityId(self.enterprise_number, self.quality_type)


@dataclass(slots=True)
class FileResult:
    display: str
    path: Path
    digest: str
    diagnostics: list[Diagnostic] = field(default_factory=list)
    declaration: Declaration | None = None
    keys: list[ResolvedKey] = field(default_factory=list)
    certificate: CertificateInfo | None = None
    certificate_at: Location | None = None
    # During a renewal, the certificate that follows (see `models.SftpChannel`).
    next_certificate: CertificateInfo | None = None
    next_certificate_at: Location | None = None
    # The DER of each accepted certificate, in declaration order: what the reconciler
    # installs for the intake gate. Only whole results carry it, never the summaries.
    certificate_ders: tuple[bytes, ...] = ()
    facts: Facts = field(default_factory=Facts)
    # Referenced files and their content hashes: part of the cache key.
    refs: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.declaration is not None and not any(d.is_error for d in self.diagnostics)


def check_file(path: Path, display: str, root: Path) -> FileResult:
    """Check one declaration file. Never raises for anything a file can contain."""
    unsafe = unsafe_part(path, root)
    if unsafe is not None:
        # Such a name would break every line-based format it is written into (a report, an
        # annotation, a log line), and the file is not read: its content cannot matter.
        result = FileResult(display, path, "")
        result.diagnostics.append(
            error(
                "file-name-unsafe",
                f"the name '{shown_name(unsafe)}' holds a control, format or other character "
                "that cannot be shown safely; rename it (the file was not read)",
                Location(display, 1, 1),
            )
        )
        return result
    raw, problems = read_source(path, display, root, _confined_directory(str(path.parent), root))
    result = FileResult(display, path, hashlib.sha256(raw).hexdigest() if raw else "")
    result.diagnostics.extend(problems)
    if raw is None:
        return result
    doc, problems = parse_document(raw, path, display)
    result.diagnostics.extend(problems)
    if doc is None:
        return result
    try:
        declaration = Declaration.model_validate(doc.data)
    except ValidationError as exc:
        result.diagnostics.extend(validation_diagnostics(doc, exc, _FIELDS))
        result.facts = partial_facts(doc)
        _salvage_sftp(doc, root, result)
        return result
    result.declaration = declaration
    result.facts = _facts(doc, declaration)
    result.diagnostics.extend(_structure_rules(doc, declaration))
    sftp = declaration.structured_messages.channels.sftp
    if sftp is not None:
        _resolve_keys(doc, enumerate(sftp.ssh_keys), root, result)
        _resolve_certificate(doc, sftp.certificate, root, result)
        if sftp.next_certificate is not None:
            _resolve_certificate(doc, sftp.next_certificate, root, result, "next_certificate")
    return result


# The state of a referenced path that leads outside the declarations root: it is neither
# looked at nor read (not even hashed), and nothing of it is kept in the cache.
OUTSIDE = "outside"


def ref_state(candidate: Path, root: Path | None = None) -> str:
    """What a referenced path points at now: part of the cache key of the declaration.

    The resolved target is included so that re-pointing a symlink invalidates the cache even
    when the new target has the same content hash as an earlier one. With a `root`, a path
    that leads outside it (see `safefile.confined_realpath`) is OUTSIDE.
    """
    if root is not None:
        try:
            resolved = confined_realpath(candidate, root)
        except OutsideRoot:
            return OUTSIDE
        except OSError:
            return "missing"
        if not within(resolved, str(root)):
            return OUTSIDE
        return _state_of_resolved(Path(resolved))
    try:
        return _state_of_resolved(candidate.resolve(strict=True))
    except (OSError, RuntimeError):
        return "missing"


def _state_of_resolved(resolved: Path) -> str:
    """`ref_state` of a path already resolved (without strictness: a missing part shows)."""
    return _probe(resolved).state


@dataclass(frozen=True, slots=True)
class _Probe:
    """One look at a resolved referenced path: its `ref_state`, and what that look saw.

    Checking a declaration needs the same facts again (is it there, a regular file, how
    large, its content); taking them from here spares three stat calls and a second read of
    every key and certificate file.
    """

    state: str
    info: os.stat_result | None = None  # None: the stat failed
    data: bytes | None = None  # the content hashed for `state`, when it could be read


def _probe(resolved: Path, info: os.stat_result | None = None) -> _Probe:
    """The `_Probe` of a resolved path; `info`: its stat, when the caller has just taken it."""
    if info is None:
        try:
            info = resolved.stat()
        except (OSError, RuntimeError):
            return _Probe("missing")
    if not stat.S_ISREG(info.st_mode):
        # A device or FIFO (a symlink to /dev/zero) would be read forever: never opened.
        return _Probe(f"{resolved}|not-a-file", info)
    if info.st_size > MAX_REFERENCED_BYTES:
        return _Probe(f"{resolved}|large", info)
    try:
        # `info` is the stat of a resolved path, that is its lstat: the descriptor must show
        # the same regular file, so a FIFO or a link swapped in meanwhile is not read.
        data = read_regular(resolved, MAX_REFERENCED_BYTES, info=info)
    except TooLarge:
        return _Probe(f"{resolved}|large", info)
    except Refused:
        return _Probe(f"{resolved}|not-a-file", info)
    except (OSError, RuntimeError):
        return _Probe("missing", info)
    return _Probe(f"{resolved}|{hashlib.sha256(data).hexdigest()}", info, data)


# --- resolving referenced paths, each directory once per run ---------------------------------
#
# Resolving "../certs/x.cer" the way Path.resolve() does takes an lstat of every component
# from / down, and a stat: some 30 µs, a tenth of the cost of checking a declaration with a
# certificate and a key file. The declarations of a repository reference files in a few
# directories, so within one run each of those directories is resolved once, and each file
# costs one lstat of its own name.
#
# Only within a run: a process that lives on (watch) must see a re-pointed symlink on its next
# run. A run is a `directories_resolved_once` block, or the life of a pool worker.

# Directory as written (str of the candidate's parent) -> its resolution when that is an
# existing directory, else None (resolve such paths the usual way). None: not in a run.
_run_directories: dict[str, str | None] | None = None


@contextmanager
def directories_resolved_once() -> Iterator[None]:
    """Within this block, each directory holding referenced files is resolved once."""
    global _run_directories
    outer = _run_directories
    if outer is None:
        _run_directories = {}
    try:
        yield
    finally:
        _run_directories = outer


def resolve_directories_once() -> None:
    """The same, for the rest of this process: a pool worker, which lives for one run."""
    global _run_directories
    if _run_directories is None:
        _run_directories = {}


def _confined_directory(directory: str, root: Path) -> str | None:
    """The resolved `directory` when it is an existing directory reached without leaving the
    root (`safefile.confined_realpath`), once per run; else None: resolve the usual way."""
    directories = _run_directories
    if directories is not None and directory in directories:
        return directories[directory]
    try:
        real = _existing_directory(confined_realpath(directory, root))
    except OSError:  # a link leading outside the root, a loop
        real = None
    if directories is not None:
        directories[directory] = real
    return real


def _resolve_in_run(candidate: Path, root: Path) -> tuple[Path, os.stat_result] | None:
    """`candidate.resolve()` and the stat of the result, from the run's resolved directories.

    The result is Path.resolve()'s: realpath resolves a path component by component, so
    resolving the directory and then the last component gives the same path, as long as the
    directory resolved cleanly (it exists, no symlink loop) and the last component is no
    symlink (then its lstat is its stat, and there is no loop for resolve() to report).
    Anything else returns None, and the caller resolves the path the usual way.
    """
    name = candidate.name
    if _run_directories is None or name in ("", ".."):
        return None
    real = _confined_directory(str(candidate.parent), root)
    if real is None:
        return None
    full = Path(real, name)
    try:
        info = full.lstat()
    except OSError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return None
    return full, info


def _existing_directory(real: str) -> str | None:
    try:
        return real if stat.S_ISDIR(Path(real).stat().st_mode) else None
    except OSError:
        return None  # a missing part, a symlink loop, no permission


def _facts(doc: SourceDocument, decl: Declaration) -> Facts:
    sm = ("structured_messages",)
    return Facts(
        enterprise_number=decl.quality.enterprise_number,
        enterprise_number_at=doc.location(("quality", "enterprise_number")),
        technical_user=decl.structured_messages.technical_user,
        technical_user_at=doc.location((*sm, "technical_user")),
        administrators=tuple(
            i
            for a in decl.administrators
            for i in identities(a.email, {"github": a.github, "gitlab": a.gitlab})
        ),
        administrators_at=doc.location(("administrators",), key=True),
        quality_type=decl.quality.type,
        quality_type_at=doc.location(("quality", "type")),
    )


def partial_facts(doc: SourceDocument) -> Facts:
    """Even an invalid file claims its username and number; other files must not take them."""
    data = doc.data
    quality = data.get("quality") if isinstance(data, dict) else None
    sm = data.get("structured_messages") if isinstance(data, dict) else None
    number = quality.get("enterprise_number") if isinstance(quality, dict) else None
    user = sm.get("technical_user") if isinstance(sm, dict) else None
    kind = quality.get("type") if isinstance(quality, dict) else None
    # Only a catalogue-shaped code can be an identity; anything else says nothing.
    kind = kind if isinstance(kind, str) and _QUALITY_TYPE_CODE.fullmatch(kind) else None
    digits = None
    if isinstance(number, str):
        compact = number.replace(".", "").replace(" ", "")
        digits = compact if compact.isdigit() and len(compact) == 10 else None
    admins = data.get("administrators") if isinstance(data, dict) else None
    # Each administrator's e-mail and forge logins (`github:login`), as `--author` compares them.
    emails = (
        tuple(
            i
            for a in admins or []
            if isinstance(a, dict) and isinstance(a.get("email"), str)
            for i in identities(a["email"], a)
        )
        if isinstance(admins, list)
        else ()
    )
    return Facts(
        enterprise_number=digits,
        enterprise_number_at=doc.location(("quality", "enterprise_number")) if digits else None,
        technical_user=user if isinstance(user, str) else None,
        technical_user_at=doc.location(("structured_messages", "technical_user"))
        if isinstance(user, str)
        else None,
        administrators=emails,
        administrators_at=doc.location(("administrators",), key=True),
        quality_type=kind,
        quality_type_at=doc.location(("quality", "type")) if kind else None,
    )


def _salvage_sftp(doc: SourceDocument, root: Path, result: FileResult) -> None:
    """After a schema error elsewhere, still check the keys and the certificate.

    An administrator fixing a missing phone number should learn in the same run that the
    certificate has expired; entries the schema already refused are left to its diagnostics.
    """
    data = doc.data
    for part in ("structured_messages", "channels", "sftp"):
        data = data.get(part) if isinstance(data, dict) else None
    if not isinstance(data, dict):
        return
    entries: list[tuple[int, str | KeyEntry]] = []
    keys = data.get("ssh_keys")
    for i, entry in enumerate(keys if isinstance(keys, list) else []):
        if isinstance(entry, str) and entry:
            entries.append((i, entry))
        elif isinstance(entry, dict):
            try:
                entries.append((i, KeyEntry.model_validate(entry)))
            except ValidationError:
                continue
    _resolve_keys(doc, entries, root, result)
    for name in ("certificate", "next_certificate"):
        certificate = data.get(name)
        if isinstance(certificate, str) and certificate:
            _resolve_certificate(doc, certificate, root, result, name)


def _structure_rules(doc: SourceDocument, decl: Declaration) -> list[Diagnostic]:
    return [
        *_administrator_rules(doc, decl),
        *_contact_rules(doc, decl),
        *_channel_rules(doc, decl),
    ]


def _administrator_rules(doc: SourceDocument, decl: Declaration) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    locals_ = [i for i, a in enumerate(decl.administrators) if a.role == "local"]
    if len(locals_) != 1:
        where = (
            doc.location(("administrators", locals_[1]))
            if len(locals_) > 1
            else doc.location(("administrators",), key=True)
        )
        out.append(
            error(
                "administrators-local",
                "a quality has exactly one local administrator (role: local); "
                f"found {len(locals_)}; the others are co_local",
                where,
            )
        )
    seen_admin: dict[str, int] = {}
    for i, admin in enumerate(decl.administrators):
        email = admin.email.lower()
        if email in seen_admin:
            out.append(
                error(
                    "duplicate-administrator",
                    f"{admin.email} is listed twice as administrator",
                    doc.location(("administrators", i)),
                    doc.location(("administrators", seen_admin[email])),
                )
            )
        seen_admin.setdefault(email, i)
    return out


def _contact_rules(doc: SourceDocument, decl: Declaration) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    at = ("structured_messages", "contact", "emails")
    emails: dict[str, int] = {}
    for i, email in enumerate(decl.structured_messages.contact.emails):
        if email.lower() in emails:
            out.append(
                error(
                    "duplicate-email",
                    f"the e-mail address {email} is listed twice",
                    doc.location((*at, i)),
                    doc.location((*at, emails[email.lower()])),
                )
            )
        emails.setdefault(email.lower(), i)
    return out


def _channel_rules(doc: SourceDocument, decl: Declaration) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    channels = decl.structured_messages.channels.declared()
    if not channels:
        out.append(
            error(
                "no-channel",
                "declare at least one channel (sftp, ftp, mqlink or wbs)",
                doc.location(("structured_messages", "channels"), key=True),
            )
        )
    carriers, repeated = _carriers(doc, channels)
    out.extend(repeated)
    out.extend(_preferred_channel_rules(doc, decl.structured_messages.preferred_channels, carriers))
    return out


def _carriers(
    doc: SourceDocument, channels: dict[str, OtherChannel]
) -> tuple[dict[str, list[str]], list[Diagnostic]]:
    """Application -> the channels that carry it, in declaration order; an application listed
    twice for one channel is refused, and counted once."""
    out: list[Diagnostic] = []
    carriers: dict[str, list[str]] = {}
    for name, channel in channels.items():
        seen_app: dict[str, int] = {}
        for i, app in enumerate(channel.applications):
            if app in seen_app:
                out.append(
                    error(
                        "duplicate-application",
                        f"the application '{app}' is listed twice for {name}",
                        doc.location(("structured_messages", "channels", name, "applications", i)),
                    )
                )
                continue
            seen_app[app] = i
            carriers.setdefault(app, []).append(name)
    return carriers, out


def _preferred_channel_rules(
    doc: SourceDocument,
    preferred: dict[Application, ChannelName],
    carriers: dict[str, list[str]],
) -> list[Diagnostic]:
    """An application carried by two channels needs a preferred one, and a preferred channel
    must carry the application."""
    out: list[Diagnostic] = []
    sm = ("structured_messages",)
    for app, names in carriers.items():
        if len(names) > 1 and app not in preferred:
            out.append(
                error(
                    "preferred-channel-missing",
                    f"the application '{app}' is carried by {' and '.join(names)}; choose its "
                    f"preferred channel under preferred_channels ({app}: {names[0]})",
                    doc.location((*sm, "preferred_channels"), key=True)
                    if "preferred_channels" in doc.data["structured_messages"]
                    else doc.location((*sm, "channels"), key=True),
                )
            )
    for app, chosen in preferred.items():
        names = carriers.get(app, [])
        if chosen not in names:
            carried = f"carried by {', '.join(names)}" if names else "not carried by any channel"
            out.append(
                error(
                    "preferred-channel-invalid",
                    f"the preferred channel of '{app}' is {chosen}, but {chosen} does not carry "
                    f"it ({app} is {carried})",
                    doc.location((*sm, "preferred_channels", app)),
                )
            )
    return out


def _looks_like_path(text: str) -> bool:
    stripped = text.strip()
    if stripped.startswith(_KEY_PREFIXES) or "\n" in stripped or " " in stripped:
        return False
    return stripped.endswith(".pub") or "/" in stripped


def _confine(
    doc: SourceDocument, ref: str, root: Path, at: Location, result: FileResult
) -> tuple[Path, _Probe] | None:
    """Resolve a referenced path; refuse what leads outside the declarations root."""
    if Path(ref).is_absolute():
        result.diagnostics.append(
            error(
                "path-absolute",
                f"'{ref}' is an absolute path; reference files relative to the declaration",
                at,
            )
        )
        return None
    candidate = doc.path.parent / ref
    known = _resolve_in_run(candidate, root)
    outside = False
    if known is not None:
        resolved, info = known
    else:
        info = None
        try:
            # Not strict: whether a path leads outside the root does not depend on what exists
            # there, and the gate has no business telling which files exist outside the
            # repository.
            resolved = Path(confined_realpath(candidate, root))
        except OutsideRoot:
            resolved, outside = root, True
        except OSError as exc:
            result.refs[str(candidate)] = "missing"  # what ref_state says of a symlink loop
            reason = exc.strerror or "symbolic link loop"
            result.diagnostics.append(
                error("file-unreadable", f"cannot read '{ref}': {reason}", at)
            )
            return None
    if outside or not within(str(resolved), str(root)):
        # Judged before the file is looked at: what lies outside is never read, nor hashed.
        result.refs[str(candidate)] = OUTSIDE
        result.diagnostics.append(
            error(
                "path-outside-root",
                f"'{ref}' leads outside the declarations root ({root}); keep keys and certificates "
                "in the repository",
                at,
            )
        )
        return None
    # Where a strict resolution fails, this one leaves a part that does not exist: the same
    # state as ref_state(candidate, root), for one resolution instead of two (a tenth of the
    # time of checking a declaration).
    probe = _probe(resolved, info)
    result.refs[str(candidate)] = probe.state
    if probe.info is not None:
        # The probe's stat succeeded: the file exists, and its mode says whether it is a
        # regular file, as exists() and is_file() would after statting it again.
        regular = stat.S_ISREG(probe.info.st_mode)
    else:
        # The stat failed: exists() and is_file() say why (or raise) exactly as before.
        if not resolved.exists():
            result.diagnostics.append(
                error("file-not-found", f"the file '{ref}' does not exist", at)
            )
            return None
        regular = resolved.is_file()
    if not regular:
        kind = kind_of(probe.info.st_mode) if probe.info is not None else "not a regular file"
        result.diagnostics.append(
            error(
                "file-not-regular",
                f"'{ref}' is {kind}, not a regular file; it was not read",
                at,
            )
        )
        return None
    return resolved, probe


def _read_ref(
    path: Path, ref: str, at: Location, result: FileResult, probe: _Probe
) -> bytes | None:
    if probe.info is not None and probe.info.st_size > MAX_REFERENCED_BYTES:
        size = probe.info.st_size
        result.diagnostics.append(
            error("file-too-large", f"'{ref}' is {size} bytes; at most {MAX_REFERENCED_BYTES}", at)
        )
        return None
    if probe.data is not None:
        return probe.data  # already read, and hashed, by `_confine`
    # The probe could not read it: read again, for the error the administrator needs to see.
    try:
        data = read_regular(path, MAX_REFERENCED_BYTES)
    except TooLarge as exc:
        result.diagnostics.append(
            error("file-too-large", f"'{ref}' is {exc.size} bytes; at most {exc.cap}", at)
        )
        return None
    except Refused as exc:
        result.diagnostics.append(error(exc.code, f"'{ref}' {exc.reason}; it was not read", at))
        return None
    except OSError as exc:
        result.diagnostics.append(
            error("file-unreadable", f"cannot read '{ref}': {exc.strerror}", at)
        )
        return None
    return data


def _expiry(value: date | datetime | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    # A key that "expires 2027-01-31" still works on that day, as its administrator reads the
    # day: on the Brussels wall clock (the portal's zone), not in UTC, which would give it an
    # hour or two of the next day and show it as expiring on 1 February.
    return datetime.combine(value, time(23, 59), tzinfo=portal_zone()).astimezone(UTC)


def _resolve_keys(
    doc: SourceDocument,
    entries: Iterable[tuple[int, str | KeyEntry]],
    root: Path,
    result: FileResult,
) -> None:
    base: YamlPath = ("structured_messages", "channels", "sftp", "ssh_keys")
    seen: dict[str, Location] = {}
    for i, entry in entries:
        text = entry.key if isinstance(entry, KeyEntry) else entry
        path: YamlPath = (*base, i, "key") if isinstance(entry, KeyEntry) else (*base, i)
        at = doc.location(path)
        if isinstance(entry, KeyEntry) and entry.from_:
            for j, code, message, is_error in from_list_problems(entry.from_):
                entry_at = doc.location((*base, i, "from", j))
                if code == "key-from-negation-only":
                    entry_at = doc.location((*base, i, "from"))
                result.diagnostics.append((error if is_error else warning)(code, message, entry_at))
        source = "inline"
        if _looks_like_path(text):
            confined = _confine(doc, text.strip(), root, at, result)
            if confined is None:
                continue
            resolved, probe = confined
            data = _read_ref(resolved, text.strip(), at, result, probe)
            if data is None:
                continue
            try:
                text = data.decode("utf-8").strip()
            except UnicodeDecodeError:
                result.diagnostics.append(
                    error(
                        "key-malformed",
                        f"'{entry if isinstance(entry, str) else entry.key}' is not a text file",
                        at,
                    )
                )
                continue
            source = str(resolved.relative_to(root))
        try:
            key, warnings = parse_public_key(text)
        except KeyProblem as problem:
            where = f" (in {source})" if source != "inline" else ""
            result.diagnostics.append(error(problem.code, problem.message + where, at))
            continue
        for w in warnings:
            result.diagnostics.append(warning(w.code, w.message, at))
        if key.fingerprint in seen:
            first = seen[key.fingerprint]
            result.diagnostics.append(
                error(
                    "duplicate-key",
                    f"this key ({key.fingerprint}) is already declared at line {first.line}",
                    at,
                    first,
                )
            )
            continue
        seen[key.fingerprint] = at
        from_ = tuple(entry.from_) if isinstance(entry, KeyEntry) and entry.from_ else None
        expires = _expiry(entry.expires) if isinstance(entry, KeyEntry) else None
        result.keys.append(ResolvedKey(key, from_, expires, at, source))


def _resolve_certificate(
    doc: SourceDocument,
    ref: str,
    root: Path,
    result: FileResult,
    name: str = "certificate",
) -> None:
    at = doc.location(("structured_messages", "channels", "sftp", name))
    if not ref.lower().endswith(CERT_SUFFIXES):
        result.diagnostics.append(
            error(
                "certificate-file-type",
                f"'{ref}' should be the public certificate, a .cer, .crt or .pem file",
                at,
            )
        )
        return
    confined = _confine(doc, ref, root, at, result)
    if confined is None:
        return
    resolved, probe = confined
    data = _read_ref(resolved, ref, at, result, probe)
    if data is None:
        return
    try:
        info = load_certificate(data)
    except CertificateProblem as problem:
        result.diagnostics.append(error(problem.code, problem.message, at))
        return
    for what, text in (("subject", info.subject), ("issuer", info.issuer)):
        # The names reach the overview and the notification mails, as free text does.
        unfit = free_text_problem(text)
        if unfit is not None:
            result.diagnostics.append(
                error("certificate-name-character", f"the certificate's {what}: {unfit}", at)
            )
            return
    if name == "certificate":
        result.certificate, result.certificate_at = info, at
    else:
        current = result.certificate
        if current is not None and current.sha256_fingerprint == info.sha256_fingerprint:
            result.diagnostics.append(
                error(
                    "certificate-duplicate",
                    "next_certificate is the same certificate as certificate (SHA-256 "
                    f"{info.sha256_fingerprint}): declare the renewed certificate here, or "
                    "remove next_certificate",
                    at,
                    *([result.certificate_at] if result.certificate_at else []),
                )
            )
            return
        result.next_certificate, result.next_certificate_at = info, at
    result.certificate_ders = (*result.certificate_ders, certificate_der(data))
