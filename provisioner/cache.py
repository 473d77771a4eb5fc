"""Caches of checked declarations, so that an unchanged repository is not parsed again.

Two kinds share one format and one set of rules:

- ``summary``: what the pull-request gate needs (`FileSummary`), in the user's cache
  directory ($XDG_CACHE_HOME/sftp-provisioner by default);
- ``full``: whole `FileResult`s (model, resolved keys, certificate) for the reconciler, in the
  host's ``cache_dir`` setting (/var/cache/sftp-provisioner, under ``--root``).

Exact invalidation. An entry is used only when

- the cache was written by the same code (a digest of the package's files and the versions
  of the libraries whose verdicts matter: pydantic, phonenumbers, email-validator,
  cryptography, ruamel.yaml), for the same declarations root and of the same kind;
- the file is shown under the same name (paths in messages are relative to the working
  directory);
- the file's content hash is the same;
- every file it references resolves to the same place with the same content hash, or is
  missing, too large or not a regular file as before: re-pointing a symlink counts.

Nothing cached depends on the clock: certificate and key dates are judged on every run from
the cached facts (`rules.clock_rules`), so a certificate that expired between two runs is
refused.

Content hashes are recomputed only when a file's stat stamp (device, inode, size, mtime and
ctime in nanoseconds) differs from the one recorded. A stamp is recorded only when the file
had not changed for two seconds before the run started, so a file modified while it was being
read, or within the filesystem's timestamp granularity, is hashed again next time ("racy git").

Safety. The cache is JSON, never pickle, and decoding builds only the classes of
`_classes()`; every stored result carries a checksum. The directory and its files must be owned
by the running user and writable by nobody else (whoever could write them could choose the
keys the reconciler installs), and are opened without following symlinks; otherwise the cache
is neither read nor written. It is created with mode 0700, its files 0600. A missing, damaged
or foreign cache only makes the run slower.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import enum
import hashlib
import json
import os
import re
import stat
import sys
import time
from collections.abc import Callable, Iterable
from datetime import date, datetime
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, cast

from provisioner import __version__
from provisioner.safefile import OutsideRoot, confined_realpath, read_regular, within

if TYPE_CHECKING:
    from provisioner.certificates import CertificateInfo
    from provisioner.declarations import Facts, FileResult
    from provisioner.diagnostics import Location
    from provisioner.rules import FileSummary, KeyFact

FORMAT = 4
Kind = Literal["summary", "full"]
# A file whose mtime or ctime is this close to the start of the run is not stamped.
RACY_NS = 2_000_000_000
# Rewrite the cache for new stamps alone once this many files (or 1 %) were hashed again.
RESTAMP_MIN = 64
# Libraries whose behaviour is part of a verdict: a new phonenumbers release can change
# which numbers are valid.
_DEPENDENCIES = (
    "pydantic",
    "pydantic-core",
    "email-validator",
    "phonenumbers",
    "cryptography",
    "ruamel.yaml",
    "ruamel.yaml.clib",
)

Stamp = list[int]


class RefEntry(NamedTuple):
    """A file a declaration references, as it was when the entry was made: its state
    (`declarations.ref_state`) and, once it had settled, its stat stamp."""

    state: str
    stamp: Stamp | None


class Entry(NamedTuple):
    """The index entry of one checked declaration; stored as a JSON array, in this order."""

    display: str
    digest: str
    stamp: Stamp | None
    refs: dict[str, RefEntry]
    row_sum: str  # checksum of its summary row
    full_sum: str  # checksum of its whole result ("" for the summary kind's entries)

    @classmethod
    def of_json(cls, value: Any) -> Entry:
        """TypeError or ValueError if `value` is not an entry as `save` writes it."""
        display, digest, stamp, refs, row_sum, full_sum = value
        if not isinstance(refs, dict):
            raise TypeError("not an entry")
        return cls(
            display,
            digest,
            stamp,
            {c: RefEntry(*ref) for c, ref in refs.items()},
            row_sum,
            full_sum,
        )


# --- what the cache depends on -------------------------------------------------------------


# The modules whose code decides a file's result; code_digest follows their imports.
_ENTRY_MODULES = ("declarations", "rules", "cache")
_IMPORT = re.compile(
    r"^[ \t]*(?:from[ \t]+provisioner\.([\w.]+)[ \t]+import"
    r"|from[ \t]+provisioner[ \t]+import[ \t]+\(?([\w, \t]+)"
    r"|import[ \t]+provisioner\.([\w.]+))",
    re.MULTILINE,
)


def _module_file(package: Path, dotted: str) -> Path | None:
    base = package.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _source_closure(package: Path) -> list[Path]:
    """The entry modules and every provisioner module they import, transitively."""
    todo = [f for m in _ENTRY_MODULES if (f := _module_file(package, m)) is not None]
    todo.append(package / "__init__.py")
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for match in _IMPORT.finditer(path.read_text("utf-8")):
            dotted, names, imported = match.groups()
            for name in [dotted or imported] if (dotted or imported) else names.split(","):
                found = _module_file(package, name.strip())
                if found is not None:
                    todo.append(found)
    return sorted(seen)


@cache
def code_digest() -> str:
    """The code that judges a declaration: our modules and data, and the libraries' versions.

    Only the modules reachable from the checks count, so that editing, say, the apply step
    does not throw the validation cache away.
    """
    h = hashlib.sha256()
    h.update(f"{FORMAT}|{__version__}|{sys.version}".encode())
    package = Path(__file__).resolve().parent
    data = sorted(p for p in package.iterdir() if p.suffix in (".yaml", ".json"))
    for path in [*_source_closure(package), *data]:
        h.update(str(path.relative_to(package)).encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    for dist in _DEPENDENCIES:
        try:
            h.update(f"{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist}=none".encode())
    return h.hexdigest()


def stamp_of(st: os.stat_result) -> Stamp:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def settled(st: os.stat_result, at_ns: int) -> bool:
    """Whether a stamp taken at `at_ns` can be trusted: the file had not changed for RACY_NS
    before, so a later change cannot keep its mtime and ctime (the "racy git" rule; the
    reconciler's record of the host uses it too)."""
    return max(st.st_mtime_ns, st.st_ctime_ns) < at_ns - RACY_NS


def _checksum(payload: str) -> str:
    return hashlib.blake2b(payload.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


def _digest_of(path: Path | str) -> str:
    """The content hash of a declaration or referenced file: through `safefile`, so that a
    FIFO, a device or a symbolic link put in its place raises OSError instead of blocking or
    being read (the entry is then checked again, and refused there)."""
    from provisioner.source import MAX_FILE_BYTES

    return hashlib.sha256(read_regular(path, MAX_FILE_BYTES)).hexdigest()


# `RefStates._real_dir` of a directory reached through a link leading outside the root.
_OUTSIDE_DIR = "\x00outside"


class RefStates:
    """`declarations.ref_state` for many files at once, with the same results.

    The directory part of a reference is resolved once per run (every declaration points
    into the same few directories); the last component is checked with one `lstat`, and the
    content hashed only when its stamp moved. A symlink as last component, or a `.`/`..`, is
    left to `ref_state` itself.
    """

    def __init__(self, started_ns: int | None = None, root: Path | None = None) -> None:
        self._dirs: dict[str, str | None] = {}
        self.started_ns = time.time_ns() if started_ns is None else started_ns
        # With a root, a path leading outside it is `declarations.OUTSIDE`, never looked at.
        self.root = root

    def _real_dir(self, directory: str) -> str | None:
        if directory not in self._dirs:
            try:
                if self.root is None:
                    self._dirs[directory] = os.path.realpath(directory, strict=True)
                else:
                    # As the check resolves it: a directory reached through a link that
                    # leaves the root is OUTSIDE even when it leads back in (realpath would
                    # land on the same place, and the cached verdict would differ from a
                    # cold one).
                    real = confined_realpath(directory, self.root)
                    self._dirs[directory] = real if os.path.isdir(real) else None  # noqa: PTH112
            except OutsideRoot:
                self._dirs[directory] = _OUTSIDE_DIR
            except (OSError, RuntimeError):
                self._dirs[directory] = None
        return self._dirs[directory]

    def state(self, candidate: str, recorded: str, stamp: Stamp | None) -> str:
        return self.state_and_stamp(candidate, recorded, stamp)[0]

    def state_and_stamp(
        self, candidate: str, recorded: str, stamp: Stamp | None
    ) -> tuple[str, Stamp | None]:
        """The state now, and a stamp to record when the content was hashed afresh."""
        from provisioner.declarations import MAX_REFERENCED_BYTES, OUTSIDE, ref_state

        directory, _, name = candidate.rpartition("/")
        if not directory or name in ("", ".", ".."):
            return ref_state(Path(candidate), self.root), None
        real = self._real_dir(directory)
        if real is None:
            return "missing", None
        if real == _OUTSIDE_DIR:
            return OUTSIDE, None
        resolved = f"{real}/{name}" if real != "/" else f"/{name}"
        if self.root is not None and not within(resolved, str(self.root)):
            return OUTSIDE, None
        try:
            st = os.lstat(resolved)
        except OSError:
            return "missing", None
        if stat.S_ISLNK(st.st_mode):
            return ref_state(Path(candidate), self.root), None
        if not stat.S_ISREG(st.st_mode):
            return f"{resolved}|not-a-file", None
        if st.st_size > MAX_REFERENCED_BYTES:
            return f"{resolved}|large", None
        now = stamp_of(st)
        if stamp is not None and now == stamp:
            return f"{resolved}|{recorded.rpartition('|')[2]}", None
        try:
            state = f"{resolved}|{_digest_of(resolved)}"
        except OSError:
            return "missing", None
        return state, now if settled(st, self.started_ns) else None


# --- JSON encoding of results --------------------------------------------------------------
#
# Compact and positional: a registered dataclass, model or enum becomes {"$Name": [values in
# field order]} (a model's list starts with the bit mask of its fields_set); datetimes, dates,
# bytes, paths and tuples are {"$t": ...}, {"$d": ...}, {"$b": ...}, {"$p": ...}, {"$u": ...}.
# Plain mappings never have a key starting with "$". Decoding builds only registered classes;
# models are rebuilt without validation (their values were validated when the file was
# checked), the way `model_construct` does it. The field order is the code's: a cache
# written by other code is never read (see `code_digest`).


class CacheCorrupt(ValueError):
    """The cache holds something we did not write."""


@cache
def _classes() -> tuple[type, ...]:
    from pydantic import BaseModel

    from provisioner import certificates, declarations, diagnostics, keys, models, rules

    classes: list[type] = [
        diagnostics.Severity,
        diagnostics.Location,
        diagnostics.Diagnostic,
        declarations.Facts,
        declarations.ResolvedKey,
        declarations.FileResult,
        keys.PublicKey,
        certificates.CertificateInfo,
        rules.KeyFact,
        rules.FileSummary,
    ]
    classes += [
        cls
        for cls in vars(models).values()
        if isinstance(cls, type)
        and issubclass(cls, BaseModel)
        and cls.__module__ == models.__name__
    ]
    return tuple(classes)


Encoder = Callable[[Any], Any]


@cache
def _encoders() -> dict[type, Encoder]:
    from pydantic import BaseModel

    table: dict[type, Encoder] = {
        datetime: lambda v: {"$t": v.isoformat()},
        date: lambda v: {"$d": v.isoformat()},
        bytes: lambda v: {"$b": base64.b64encode(v).decode("ascii")},
        tuple: lambda v: {"$u": [encode(x) for x in v]},
        list: lambda v: [encode(x) for x in v],
        dict: _encode_mapping,
        type(Path()): lambda v: {"$p": str(v)},
    }
    for cls in _classes():
        tag = f"${cls.__qualname__}"
        if issubclass(cls, enum.Enum):

            def member(v: Any, tag: str = tag) -> Any:
                return {tag: v.value}

            table[cls] = member
        elif issubclass(cls, BaseModel):
            names = tuple(cls.model_fields)

            def model(v: Any, tag: str = tag, names: tuple[str, ...] = names) -> Any:
                fields = v.__dict__
                if len(fields) != len(names) or v.__pydantic_extra__ or v.__pydantic_private__:
                    raise TypeError(f"cannot cache this {type(v).__name__}")
                done = v.model_fields_set
                mask = sum(1 << i for i, name in enumerate(names) if name in done)
                return {tag: [mask, *[encode(fields[name]) for name in names]]}

            table[cls] = model
        else:
            fields = dataclasses.fields(cast(Any, cls))
            if not all(f.init for f in fields):
                continue

            def record(
                v: Any, tag: str = tag, names: tuple[str, ...] = tuple(f.name for f in fields)
            ) -> Any:
                return {tag: [encode(getattr(v, name)) for name in names]}

            table[cls] = record
    return table


def _encode_mapping(value: dict[Any, Any]) -> dict[str, Any]:
    out = {}
    for k, v in value.items():
        if type(k) is not str or k.startswith("$"):
            raise TypeError("only mappings with plain text keys can be cached")
        out[k] = encode(v)
    return out


_PLAIN = (str, int, float, bool, type(None))


def encode(value: Any) -> Any:
    """A JSON-ready form of a result; `decode_text` gives back an equal object."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    encoder = _encoders().get(kind)
    if encoder is None:
        raise TypeError(f"cannot cache a {kind.__name__}")
    return encoder(value)


@cache
def _decoders() -> dict[str, Callable[[Any], Any]]:
    from pydantic import BaseModel

    set_attr = object.__setattr__
    new = object.__new__
    table: dict[str, Callable[[Any], Any]] = {
        "$t": datetime.fromisoformat,
        "$d": date.fromisoformat,
        "$b": lambda v: base64.b64decode(v, validate=True),
        "$u": tuple,
        "$p": Path,
    }
    for cls in _classes():
        tag = f"${cls.__qualname__}"
        if tag in table:
            raise RuntimeError(f"two classes are cached as {tag}")
        if issubclass(cls, enum.Enum):
            table[tag] = cls
        elif issubclass(cls, BaseModel):
            names = tuple(cls.model_fields)

            def model(v: list[Any], cls: type = cls, names: tuple[str, ...] = names) -> Any:
                mask = v[0]
                if len(v) != len(names) + 1 or type(mask) is not int:
                    raise CacheCorrupt(f"not a {cls.__name__}")
                obj: Any = new(cls)
                set_attr(obj, "__dict__", dict(zip(names, v[1:], strict=True)))
                done = {name for i, name in enumerate(names) if mask >> i & 1}
                set_attr(obj, "__pydantic_fields_set__", done)
                set_attr(obj, "__pydantic_extra__", None)
                set_attr(obj, "__pydantic_private__", None)
                return obj

            table[tag] = model
        elif all(f.init for f in dataclasses.fields(cast(Any, cls))):

            def record(
                v: list[Any], cls: type = cls, count: int = len(dataclasses.fields(cast(Any, cls)))
            ) -> Any:
                if type(v) is not list or len(v) != count:
                    raise CacheCorrupt(f"not a {cls.__name__}")
                return cls(*v)

            table[tag] = record
    return table


def _hook(decoders: dict[str, Callable[[Any], Any]]) -> Callable[[dict[str, Any]], Any]:
    def hook(d: dict[str, Any]) -> Any:
        if len(d) != 1:
            return d
        for tag, value in d.items():
            if tag[:1] != "$":
                return d
            decoder = decoders.get(tag)
            if decoder is None:
                raise CacheCorrupt(f"unknown tag {tag}")
            try:
                return decoder(value)
            except (KeyError, TypeError, ValueError) as exc:
                raise CacheCorrupt(f"cannot rebuild {tag}: {exc}") from None
        return d  # pragma: no cover - one item

    return hook


def encode_text(value: Any) -> str | None:
    """The JSON text of `encode(value)`, or None for what cannot be cached exactly."""
    try:
        return json.dumps(encode(value), separators=(",", ":"))
    except (TypeError, ValueError):
        return None


def decode_text(text: str) -> Any:
    return json.loads(text, object_hook=_hook(_decoders()))


# --- summaries as plain rows -----------------------------------------------------------------
#
# Every run needs the summary of every file (the cross-file rules see them all), so they are
# cached as positional JSON rows that plain `json.loads` reads: rebuilding 10,000 summaries
# through the generic tagged encoding above took 0.9 s, from rows a fraction. The field order
# is the code's; a cache written by other code is never read. The domain classes are imported
# once, on first use (as `_classes` does): `rules` knows nothing of the cache.


class _RowTypes(NamedTuple):
    summary: type[FileSummary]
    key: type[KeyFact]
    facts: type[Facts]
    location: type[Location]
    certificate: type[CertificateInfo]
    cert_fields: tuple[str, ...]
    cert_dates: frozenset[str]


@cache
def _row_types() -> _RowTypes:
    from provisioner.certificates import CertificateInfo
    from provisioner.declarations import Facts
    from provisioner.diagnostics import Location
    from provisioner.rules import FileSummary, KeyFact

    cert = dataclasses.fields(CertificateInfo)
    dates = frozenset(f.name for f in cert if f.type in ("datetime", datetime))
    return _RowTypes(
        FileSummary, KeyFact, Facts, Location, CertificateInfo, tuple(f.name for f in cert), dates
    )


def _entries_of(stored: dict[str, Any]) -> dict[str, Entry]:
    """The index's entries; a damaged one is left out (its file is checked again)."""
    entries = {}
    for key, value in stored.items():
        try:
            entries[key] = Entry.of_json(value)
        except (TypeError, ValueError):
            continue
    return entries


def _loc_row(loc: Location | None, display: str) -> LocRow | None:
    # Most locations are in the file itself: its name is not repeated.
    if loc is None:
        return None
    if loc.file == display:
        return [loc.line, loc.column, loc.yaml_path]
    return [loc.file, loc.line, loc.column, loc.yaml_path]


def _loc(row: LocRow | None, display: str) -> Location | None:
    if row is None:
        return None
    location = _row_types().location
    if len(row) == 3:
        return location(display, row[0], row[1], row[2])
    return location(row[0], row[1], row[2], row[3])


def _at(row: LocRow, display: str) -> Location:
    loc = _loc(row, display)
    if loc is None:
        raise ValueError("a key without its location")
    return loc


LocRow = list[Any]  # [line, column, yaml_path], with the file first when it is another file
CertRow = list[Any]  # the fields of CertificateInfo, in their order, dates as ISO 8601
KeyRow = list[Any]  # [fingerprint, LocRow, expiry or None]


class SummaryRow(NamedTuple):
    """A `FileSummary` as JSON values, stored as an array in this order: the reconciler reads
    10,000 of them on every run, and an array of values decodes much faster than objects."""

    display: str
    digest: str
    refs: dict[str, str]
    diagnostics: str
    enterprise_number: str | None
    enterprise_number_at: LocRow | None
    technical_user: str | None
    technical_user_at: LocRow | None
    administrators: list[str]
    administrators_at: LocRow | None
    keys: list[KeyRow]
    certificate: CertRow | None
    certificate_at: LocRow | None
    next_certificate: CertRow | None
    next_certificate_at: LocRow | None
    quality_type: str | None
    quality_type_at: LocRow | None
    sftp: bool


def summary_row(s: FileSummary) -> SummaryRow:
    """`s` as a row of JSON values; `summary_from_row` gives back an equal summary."""
    diagnostics = encode_text(s.diagnostics) if s.diagnostics else ""
    if diagnostics is None:
        raise TypeError("diagnostics that cannot be cached")
    f = s.facts
    cert_row = _cert_row(s.certificate)
    return SummaryRow(
        s.display,
        s.digest,
        s.refs,
        diagnostics,
        f.enterprise_number,
        _loc_row(f.enterprise_number_at, s.display),
        f.technical_user,
        _loc_row(f.technical_user_at, s.display),
        list(f.administrators),
        _loc_row(f.administrators_at, s.display),
        [
            [
                k.fingerprint,
                _loc_row(k.location, s.display),
                k.expires.isoformat() if k.expires else None,
            ]
            for k in s.keys
        ],
        cert_row,
        _loc_row(s.certificate_at, s.display),
        _cert_row(s.next_certificate),
        _loc_row(s.next_certificate_at, s.display),
        f.quality_type,
        _loc_row(f.quality_type_at, s.display),
        s.sftp,
    )


def _cert_row(cert: CertificateInfo | None) -> CertRow | None:
    if cert is None:
        return None
    types = _row_types()
    return [
        getattr(cert, name).isoformat() if name in types.cert_dates else getattr(cert, name)
        for name in types.cert_fields
    ]


def _cert_of_row(cert: CertRow | None) -> CertificateInfo | None:
    if cert is None:
        return None
    types = _row_types()
    values = dict(zip(types.cert_fields, cert, strict=True))
    for name in types.cert_dates:
        values[name] = datetime.fromisoformat(values[name])
    return types.certificate(**values)


def summary_from_row(row: SummaryRow | list[Any]) -> FileSummary:
    """The summary of a `summary_row` (or of the array it was stored as); KeyError, TypeError
    or ValueError if it is not one."""
    types = _row_types()
    if type(row) not in (list, SummaryRow) or len(row) != len(SummaryRow._fields):
        raise ValueError("not a summary row")
    (display, digest, refs, diags, en, en_at, user, user_at, admins, admins_at, keys, cert,
     cert_at, next_cert, next_at, qtype, qtype_at, sftp) = row  # fmt: skip
    parse = datetime.fromisoformat
    certificate = _cert_of_row(cert)
    diagnostics = decode_text(diags) if diags else []
    if not isinstance(refs, dict) or not isinstance(diagnostics, list):
        raise ValueError("not a summary row")
    return types.summary(
        display=display,
        digest=digest,
        refs=refs,
        diagnostics=diagnostics,
        facts=types.facts(
            en,
            _loc(en_at, display),
            user,
            _loc(user_at, display),
            tuple(admins),
            _loc(admins_at, display),
            qtype,
            _loc(qtype_at, display),
        ),
        keys=[
            types.key(fp, _at(loc, display), parse(exp) if exp else None) for fp, loc, exp in keys
        ],
        certificate=certificate,
        certificate_at=_loc(cert_at, display),
        next_certificate=_cert_of_row(next_cert),
        next_certificate_at=_loc(next_at, display),
        sftp=bool(sftp),
    )


def payload_of(result: FileResult | FileSummary, kind: Kind) -> tuple[str, str] | None:
    """What the cache keeps of a checked file: its summary as a plain row, and (full kind)
    the whole result; None for what cannot be cached exactly."""
    from provisioner.declarations import FileResult

    summary = _row_types().summary.of(result) if isinstance(result, FileResult) else result
    try:
        row = json.dumps(summary_row(summary), separators=(",", ":"))
    except (TypeError, ValueError):
        return None
    if kind == "summary":
        return row, ""
    full = encode_text(result)
    return None if full is None else (row, full)


# --- the cache files -----------------------------------------------------------------------
#
# <kind>-<root>.json          header, per file: display, content hash, stamp, referenced
#                             files; and the memo of the last complete run (summary kind)
# <kind>-<root>.results.json  header, per file: the summary as a plain row
# full-<root>.full.json       header, per file: the whole encoded result
#
# The index is small and read on every run; results are read only when some are needed. Both
# carry a random generation token: a results file from another write is not used.


def open_private_dir(directory: Path, *, create: bool) -> int | None:
    """A descriptor of the cache directory if it is ours and nobody else may write in it."""
    if create:
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError:
            return None
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        os.close(fd)
        return None
    return fd


def read_private(dfd: int, name: str) -> bytes | None:
    """A cache file's bytes if it is a regular file of ours that nobody else may write."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dfd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    except OSError:
        return None
    finally:
        os.close(fd)


def read_private_file(directory: Path, name: str) -> bytes | None:
    """`read_private` of `name` in `directory`, if the directory is ours (`open_private_dir`)."""
    dfd = open_private_dir(directory, create=False)
    if dfd is None:
        return None
    try:
        return read_private(dfd, name)
    finally:
        os.close(dfd)


def write_private(dfd: int, name: str, text: str) -> None:
    tmp = f".{name}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise


class ResultCache:
    """The cache of one declarations root, for one kind of result."""

    def __init__(
        self,
        directory: Path | None,
        root: Path,
        kind: Kind,
        *,
        started_ns: int | None = None,
    ) -> None:
        self.directory = directory
        self.kind = kind
        self.header = {
            "format": FORMAT,
            "kind": kind,
            "code": code_digest() if directory is not None else "",
            "root": str(root),
        }
        base = f"{kind}-{hashlib.sha256(str(root).encode()).hexdigest()[:16]}"
        self.index_name = f"{base}.json"
        # Summaries as rows (both kinds), whole results (full kind): the reconciler needs every
        # summary on every run, but whole results only of the channels it renders.
        self.results_name = f"{base}.results.json"
        # One file per whole result, named by its checksum: a run reads back only the few it
        # renders, and writes only those that changed.
        self.full_dir = None if directory is None else directory / f"{base}.full"
        self.started_ns = time.time_ns() if started_ns is None else started_ns
        self.generation = ""
        self.entries: dict[str, Entry] = {}
        self.memo: dict[str, Any] | None = None
        self.fresh: dict[str, tuple[str, str]] = {}  # (row, whole result) put in this run
        self._stored: dict[str, dict[str, str]] = {}  # file name -> path -> text
        self.seen: set[str] = set()
        self.dirty = False
        self.restamped = 0  # files hashed again and found unchanged
        self.refs = RefStates(self.started_ns, root)
        self.problem: str | None = None
        if directory is not None:
            self._load_index()

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def _load_index(self) -> None:
        assert self.directory is not None
        dfd = open_private_dir(self.directory, create=False)
        if dfd is None:
            if self.directory.exists():
                self.problem = f"{self.directory} is not owned by this user or is open to others"
            return
        try:
            raw = read_private(dfd, self.index_name)
        finally:
            os.close(dfd)
        if raw is None:
            return
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("header") != self.header:
                return
            entries, generation = data["entries"], data["generation"]
            if isinstance(entries, dict) and isinstance(generation, str):
                self.entries, self.generation = _entries_of(entries), generation
                memo = data.get("memo")
                self.memo = memo if isinstance(memo, dict) else None
        except (KeyError, ValueError, RecursionError):
            self.entries = {}  # damaged: start afresh

    def _load_results(self, name: str) -> dict[str, str]:
        """The texts of the file `name` by path, undecoded: each is decoded only when used."""
        if name in self._stored:
            return self._stored[name]
        stored: dict[str, str] = {}
        self._stored[name] = stored
        if self.directory is None or not self.generation:
            return stored
        raw = read_private_file(self.directory, name)
        if raw is None:
            return stored
        try:
            lines = raw.decode("utf-8").split("\n")
            first = json.loads(lines[0])
            if first != {"header": self.header, "generation": self.generation}:
                return stored
            texts = {}
            for line in lines[1:]:
                if line:
                    key, _, text = line.partition("\t")
                    texts[json.loads(key)] = text
            self._stored[name] = texts
        except (ValueError, UnicodeDecodeError, RecursionError):
            pass  # damaged: every file is checked again
        return self._stored[name]

    # checking entries

    def valid(self, path: Path, display: str) -> bool:
        """Whether the entry of `path` still holds: same name, content and references."""
        key = str(path)
        self.seen.add(key)
        entry = self.entries.get(key)
        if entry is None:
            return False
        try:
            if entry.display != display:
                return False
            try:
                st = os.stat(key)  # noqa: PTH116 - str paths: 10,000 Path objects cost
            except OSError:
                return False
            stamp = stamp_of(st)
            if stamp != entry.stamp:
                if _digest_of(key) != entry.digest:
                    return False
                if settled(st, self.started_ns):
                    self.entries[key] = entry = entry._replace(stamp=stamp)
                    self.restamped += 1
            for candidate, ref in entry.refs.items():
                state, new_stamp = self.refs.state_and_stamp(candidate, ref.state, ref.stamp)
                if state != ref.state:
                    return False
                if new_stamp is not None:
                    # A value replaced, no key added: iterating on is safe.
                    entry.refs[candidate] = RefEntry(state, new_stamp)
                    self.restamped += 1
            return True
        except (OSError, TypeError, ValueError, AttributeError):
            self.entries.pop(key, None)  # damaged: replaced by the fresh result
            return False

    def result(self, path: Path, expected: type) -> Any | None:
        """The cached result of a `valid` entry (decoded), or None."""
        return self.results([path], expected)[0]

    def _texts(self, paths: list[Path], full: bool) -> list[str | None]:
        stored = self._load_results(self.results_name) if not full else {}
        ffd = None
        if full and paths and self.full_dir is not None:
            ffd = open_private_dir(self.full_dir, create=False)
        texts: list[str | None] = []
        try:
            for path in paths:
                key = str(path)
                entry = self.entries.get(key)
                text = stored.get(key)
                checksum = None if entry is None else entry.full_sum if full else entry.row_sum
                if full and ffd is not None and isinstance(checksum, str):
                    raw = read_private(ffd, checksum)
                    try:
                        text = None if raw is None else raw.decode("utf-8")
                    except UnicodeDecodeError:
                        text = None
                # A missing or damaged text is a miss (a flipped byte in a key would parse).
                ok = text is not None and checksum is not None and _checksum(text) == checksum
                texts.append(text if ok else None)
        finally:
            if ffd is not None:
                os.close(ffd)
        return texts

    def results(self, paths: list[Path], expected: type) -> list[Any | None]:
        """`result` for many files, decoded in one go (one JSON document, not thousands).

        `expected` is `FileSummary` (any kind: read from the plain rows) or `FileResult`
        (the full kind).
        """
        if expected is _row_types().summary:
            rows = self._texts(paths, full=False)
            try:
                parsed = json.loads("[" + ",".join(r or "null" for r in rows) + "]")
            except (ValueError, RecursionError):
                parsed = [None] * len(rows)
            out: list[Any | None] = []
            for row in parsed:
                try:
                    out.append(None if row is None else summary_from_row(row))
                except (KeyError, TypeError, ValueError, IndexError):
                    out.append(None)
            return out
        if self.kind != "full":
            return [None] * len(paths)
        fulls = self._texts(paths, full=True)
        found: list[Any] = []
        try:
            found = decode_text("[" + ",".join(f or "null" for f in fulls) + "]")
        except (ValueError, RecursionError):
            found = []  # one bad entry: decode them one by one below
        if len(found) != len(fulls):
            found = []
            for full in fulls:
                try:
                    found.append(None if full is None else decode_text(full))
                except (ValueError, RecursionError):
                    found.append(None)
        return [f if isinstance(f, expected) else None for f in found]

    def put(
        self,
        path: Path,
        display: str,
        result: FileResult | FileSummary,
        payload: tuple[str, str] | None = None,
    ) -> None:
        """Remember `result` (`payload`: its `payload_of`, if already made, e.g. by the worker
        that checked the file); files are stamped only if they had been still for a while."""
        if self.directory is None or not result.digest:
            return
        key = str(path)
        self.seen.add(key)
        try:
            st = os.stat(key)  # noqa: PTH116 - as above
        except OSError:
            return
        refs: dict[str, RefEntry] = {}
        for candidate, state in result.refs.items():
            ref_stamp = None
            if state not in ("missing", "outside") and not state.endswith(
                ("|large", "|not-a-file")
            ):
                try:
                    ref_st = os.stat(candidate)  # noqa: PTH116 - as above
                    if settled(ref_st, self.started_ns):
                        ref_stamp = stamp_of(ref_st)
                except OSError:
                    pass
            refs[candidate] = RefEntry(state, ref_stamp)
        if payload is None:
            payload = payload_of(result, self.kind)
        if payload is None:
            return  # something we cannot represent exactly is simply not cached
        stamp = stamp_of(st) if settled(st, self.started_ns) else None
        row, full = payload
        self.entries[key] = Entry(
            display, result.digest, stamp, refs, _checksum(row), _checksum(full)
        )
        self.fresh[key] = payload
        self.dirty = True

    # the memo of a whole run (the gate)

    def run_key(self, files: Iterable[tuple[Path, str]]) -> str:
        """What a run's file-level verdicts depend on: every file's entry, in order."""
        parts = []
        for path, display in files:
            entry = self.entries.get(str(path))
            if entry is None:
                return ""
            refs = "\x1f".join(sorted(f"{c}\x1e{ref.state}" for c, ref in entry.refs.items()))
            parts.append(f"{path}\x1d{display}\x1d{entry.digest}\x1d{refs}")
        return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogateescape")).hexdigest()

    def set_memo(self, key: str, memo: dict[str, Any]) -> None:
        if self.directory is None or not key:
            return
        if self.memo is None or self.memo.get("key") != key:
            self.memo = {"key": key, **memo}
            self.dirty = True

    def get_memo(self, key: str) -> dict[str, Any] | None:
        if key and self.memo is not None and self.memo.get("key") == key:
            return self.memo
        return None

    # saving

    def _save_full(self) -> None:
        """Write the whole results put in this run; drop those no entry names any more."""
        if self.kind != "full" or self.full_dir is None:
            return
        ffd = open_private_dir(self.full_dir, create=True)
        if ffd is None:
            return
        try:
            wanted = {e.full_sum for e in self.entries.values()}
            for key, (_row, full) in self.fresh.items():
                entry = self.entries.get(key)
                if entry is not None and full:
                    write_private(ffd, entry.full_sum, full)
            for name in os.listdir(ffd):  # noqa: PTH208 - by descriptor, no symlink is followed
                if name not in wanted:
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=ffd)
        finally:
            os.close(ffd)

    def save(self) -> None:
        if self.directory is None:
            return
        # Entries of files not seen in this run stay while the file exists: validating one
        # file must not throw away the rest of the repository.
        for key in [k for k in self.entries if k not in self.seen]:
            if not os.path.lexists(key):
                del self.entries[key]
                self.dirty = True
        # New stamps alone are written only when they save real work next time: a run that
        # changes nothing else then leaves the cache file alone.
        if not self.dirty and self.restamped < max(RESTAMP_MIN, len(self.entries) // 100):
            return
        dfd = open_private_dir(self.directory, create=True)
        if dfd is None:
            return
        try:
            if self.fresh or not self.generation:
                rows = dict(self._load_results(self.results_name))
                rows.update({key: row for key, (row, _full) in self.fresh.items()})
                self.generation = os.urandom(8).hex()
                lines = [json.dumps({"header": self.header, "generation": self.generation})]
                lines += [f"{json.dumps(k)}\t{v}" for k, v in rows.items() if k in self.entries]
                write_private(dfd, self.results_name, "\n".join(lines) + "\n")
                self._stored[self.results_name] = rows
                self._save_full()
            index = {
                "header": self.header,
                "generation": self.generation,
                "entries": self.entries,
                "memo": self.memo,
            }
            write_private(dfd, self.index_name, json.dumps(index, separators=(",", ":")))
            self.dirty = False
            self.fresh = {}
        except OSError:
            pass  # a read-only cache must not fail the run
        finally:
            os.close(dfd)
