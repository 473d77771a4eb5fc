"""What the last apply left on the host, so that the next run need not read it all again.

For every channel it provisioned, a successful apply records

- the channel's key: a digest of everything its paths were rendered from (the declaration's
  content and referenced files, the registration, the host settings rendering reads, the
  templates, the code, and whether owners are managed);
- its routing entry, so that the routing table is rendered without loading the model;
- each of its paths as it was right after the apply: kind, owner, group, mode, and for files
  size, inode, mtime, ctime (nanoseconds) and content hash;
- what else sat in its chroot (reported as unknown) and the chroot's stamp when it was listed.

And for the big host-wide files (passwd, shadow, group, routing table, rsyslog drop-in), the
key of what each was made of and its content hash: while the key holds and the live file has
that hash, it is not rendered (it is always read: a hand edit there is seen by its content).

The next run takes a channel as unchanged when its key is the same and every path still has
the recorded kind, owner, group and mode, and every file the recorded size, inode, mtime and
ctime: such a file has the recorded content. Nothing of that channel is rendered or read. Any
difference, and the channel is rendered and compared in full, as without a record.

Why this is safe: an edit changes a file's ctime, which no user can set (only resetting the
system clock can forge it), and a replaced file has another inode. As with Git's index, a file
changed within the filesystem's timestamp granularity of the moment it was recorded could keep
its stamp, so a file whose mtime or ctime is within two seconds of the recording is recorded
without a stamp and read again next time ("racy" files). `plan --no-cache` ignores the record.

The record lives in the host's cache directory with the same rules as the other caches
(`provisioner.cache`): owned by the running user, writable by nobody else, never followed
through a symlink; a missing, damaged or foreign record only makes the run slower.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, cast

from provisioner import __version__
from provisioner.cache import open_private_dir, read_private_file, settled, write_private
from provisioner.observe import Lstat, Observed, lstat
from provisioner.plan import digest_of
from provisioner.resources import shipped
from provisioner.setting_scopes import rendering_settings
from provisioner.settings import HostSettings

RECORD_FORMAT = 2
RECORD_NAME = "host-record.json"

# A file as recorded: [path, uid, gid, mode, size, inode, mtime_ns, ctime_ns, sha256]; a racy
# file has None for its times and is read again next time. A directory: [name, uid, gid, mode],
# the name relative to the chroot ("" for the chroot itself, absolute when outside it). No
# times for directories: uploads move their mtime all day, and they have no content.
FileEntry = list[Any]
DirEntry = list[Any]


# --- keys ----------------------------------------------------------------------------------


def _tree_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


@cache
def _code_digest(templates: str | None) -> str:
    """Everything in the package and the templates: rendered output depends on all of it."""
    h = hashlib.sha256(f"{RECORD_FORMAT}|{__version__}|{sys.version}".encode())
    package = Path(__file__).resolve().parent
    sources = [(package, p) for p in _tree_files(package) if p.suffix in (".py", ".yaml", ".json")]
    sources += [(shipped("templates"), p) for p in _tree_files(shipped("templates"))]
    if templates:
        sources += [(Path(templates), p) for p in _tree_files(Path(templates))]
    for base, path in sources:
        h.update(f"{base.name}/{path.relative_to(base)}".encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    for dist in ("cryptography", "jinja2", "pydantic"):
        try:
            h.update(f"{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist}=none".encode())
    return h.hexdigest()


def context_key(settings: HostSettings, owners: bool, openssh: tuple[int, int]) -> str:
    """What every channel's rendering depends on besides its own declaration: the code and
    templates, the settings rendering reads (see provisioner.setting_scopes), the owners rule
    and the OpenSSH version."""
    templates = str(settings.templates_dir) if settings.templates_dir else None
    h = hashlib.sha256(_code_digest(templates).encode())
    h.update(rendering_settings(settings).encode())
    h.update(f"|owners={owners}|openssh={openssh}".encode())
    return h.hexdigest()


def channel_key(
    context: str,
    display: str,
    digest: str,
    refs: dict[str, str],
    registration: tuple[str, str, int, str],
) -> str:
    """The key of one channel: its declaration (content and referenced files) and registration
    (enterprise number, technical user, uid, sender number) in `context`."""
    payload = json.dumps(
        [context, display, digest, sorted(refs.items()), list(registration)],
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8", "surrogateescape")).hexdigest()


# --- paths ---------------------------------------------------------------------------------


def routing_digest(entry: dict[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps(entry, sort_keys=True, separators=(",", ":")).encode("utf-8")
    ).hexdigest()


def channel_fingerprint(fingerprints: Iterable[str]) -> str:
    return digest_of(sorted(fingerprints))


def _stamp_file(path: str, recorded_at: int) -> FileEntry | None:
    """A regular file as it is now, for the record; None when it is not one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        # The stamp is taken before reading: a write during the read moves it, and the next
        # run then reads the file again.
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            content = fh.read()
    except OSError:
        return None
    finally:
        os.close(fd)
    racy = not settled(st, recorded_at)
    return [
        path,
        st.st_uid,
        st.st_gid,
        stat.S_IMODE(st.st_mode),
        st.st_size,
        st.st_ino,
        None if racy else st.st_mtime_ns,
        None if racy else st.st_ctime_ns,
        hashlib.sha256(content).hexdigest(),
    ]


def _stamp_dir(path: str, name: str) -> DirEntry | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    return [name, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)]


def stamp(
    path: Path, kind: str, chroot: str, recorded_at: int
) -> tuple[FileEntry | DirEntry, Observed] | None:
    """A channel's path as it is now: its entry for the record, and the same seen as an
    `Observed` (without content) to compare with what was rendered; None when it is not of
    the expected kind."""
    text = str(path)
    if kind == "file":
        entry = _stamp_file(text, recorded_at)
        if entry is None:
            return None
        return entry, Observed(path, "file", entry[1], entry[2], entry[3], entry[4], entry[8])
    name = "" if text == chroot else text.removeprefix(chroot + "/")
    entry = _stamp_dir(text, name)
    if entry is None:
        return None
    return entry, Observed(path, "dir", entry[1], entry[2], entry[3])


def _file_holds(entry: FileEntry, lstat: Lstat) -> bool:
    path, uid, gid, mode, size, ino, mtime, ctime, _sha = entry
    if mtime is None:
        return False
    st = lstat(path)
    if st is None:
        return False
    return (
        st.st_mtime_ns == mtime
        and st.st_ctime_ns == ctime
        and st.st_ino == ino
        and st.st_size == size
        and stat.S_ISREG(st.st_mode)
        and st.st_uid == uid
        and st.st_gid == gid
        and stat.S_IMODE(st.st_mode) == mode
    )


def _dir_holds(path: str, entry: DirEntry, lstat: Lstat) -> bool:
    st = lstat(path)
    if st is None:
        return False
    return (
        stat.S_ISDIR(st.st_mode)
        and st.st_uid == entry[1]
        and st.st_gid == entry[2]
        and stat.S_IMODE(st.st_mode) == entry[3]
    )


def listing_stamp(path: str, lstat: Lstat = lstat) -> list[int] | None:
    """When a directory's entries last changed; None if too recent to rely on."""
    st = lstat(path)
    if st is None:
        return None
    # settled() reads only the two times, which a host view's Stat has as os.stat_result does.
    if not settled(cast(os.stat_result, st), time.time_ns()):
        return None
    return [st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def listing_holds(path: str, recorded: list[int] | None, lstat: Lstat = lstat) -> bool:
    if recorded is None:
        return False
    st = lstat(path)
    if st is None:
        return False
    return [st.st_ino, st.st_mtime_ns, st.st_ctime_ns] == recorded


# --- the record ----------------------------------------------------------------------------


@dataclass(slots=True)
class ChannelRecord:
    key: str
    routing: dict[str, Any]
    routing_digest: str
    files: list[FileEntry]
    dirs: list[DirEntry]
    fingerprint: str
    chroot: str
    # Paths in the chroot nobody declared, and the chroot's listing stamp when they were read.
    unknown: list[str] = field(default_factory=list)
    listing: list[int] | None = None
    # The JSON text this record was read from: written back as it is when nothing changed,
    # so that saving 10,000 channels after one changed does not encode them all again.
    raw: str | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> list[Any]:
        return [
            self.key,
            self.routing,
            self.routing_digest,
            self.files,
            self.dirs,
            self.fingerprint,
            self.chroot,
            self.unknown,
            self.listing,
        ]

    def text(self) -> str:
        if self.raw is None:
            self.raw = json.dumps(self.to_json(), separators=(",", ":"))
        return self.raw

    @classmethod
    def from_json(cls, data: Any, raw: str | None = None) -> ChannelRecord:
        # Checked lazily: a malformed entry makes `holds` false (see there), not the run fail.
        key, routing, routing_digest, files, dirs, fp, chroot, unknown, listing = data
        if not (
            isinstance(key, str)
            and isinstance(routing, dict)
            and isinstance(routing_digest, str)
            and isinstance(files, list)
            and isinstance(dirs, list)
            and isinstance(fp, str)
            and isinstance(chroot, str)
            and isinstance(unknown, list)
        ):
            raise ValueError("not a channel record")
        return cls(key, routing, routing_digest, files, dirs, fp, chroot, unknown, listing, raw)

    def dir_path(self, name: str) -> str:
        if not name:
            return self.chroot
        return name if name.startswith("/") else f"{self.chroot}/{name}"

    def paths(self) -> list[str]:
        return [e[0] for e in self.files] + [self.dir_path(e[0]) for e in self.dirs]

    def holds(self, lstat: Lstat = lstat) -> bool:
        """Every path is still as recorded (a damaged entry never holds)."""
        try:
            return all(_file_holds(e, lstat) for e in self.files) and all(
                _dir_holds(self.dir_path(e[0]), e, lstat) for e in self.dirs
            )
        except (TypeError, ValueError, IndexError, AttributeError):
            return False


@dataclass(slots=True)
class HostRecord:
    context: str
    channels: dict[str, ChannelRecord] = field(default_factory=dict)
    # The big host-wide files (passwd, routing table...) by role: the key of what each was
    # rendered from, and its hash and size.
    host_files: dict[str, list[Any]] = field(default_factory=dict)

    @staticmethod
    def location(settings: HostSettings) -> Path:
        return settings.cache_dir

    @classmethod
    def load(cls, settings: HostSettings, context: str) -> HostRecord:
        """The record of the last apply, if it was made in the same context; else empty."""
        return cls.parse(read_private_file(cls.location(settings), RECORD_NAME), context)

    @classmethod
    def parse(cls, raw: bytes | None, context: str) -> HostRecord:
        """The record in `raw` (the record file's content), if it was made in `context`."""
        record = cls(context)
        if raw is None:
            return record
        # Line 1 the header, then one line per channel: "<enterprise number>\t<JSON>".
        try:
            lines = raw.decode("utf-8").split("\n")
            header = json.loads(lines[0])
            if header.get("format") != RECORD_FORMAT or header.get("context") != context:
                return record
            host_files = header["host"]
            if isinstance(host_files, dict) and all(
                isinstance(v, list) and len(v) == 3 and all(isinstance(x, str) for x in v[:2])
                for v in host_files.values()
            ):
                record.host_files = host_files
            names, texts = [], []
            for line in lines[1:]:
                if line:
                    en, _, text = line.partition("\t")
                    names.append(en)
                    texts.append(text)
            values = json.loads("[" + ",".join(texts) + "]")
            record.channels = {
                en: ChannelRecord.from_json(value, text)
                for en, value, text in zip(names, values, texts, strict=True)
            }
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
            record.channels = {}  # damaged: every channel is rendered and compared again
        return record

    def save(self, settings: HostSettings) -> None:
        dfd = open_private_dir(self.location(settings), create=True)
        if dfd is None:
            return
        try:
            header = {
                "format": RECORD_FORMAT,
                "context": self.context,
                "host": self.host_files,
            }
            lines = [json.dumps(header)]
            lines += [f"{en}\t{c.text()}" for en, c in sorted(self.channels.items())]
            text = "\n".join(lines) + "\n"
            write_private(dfd, RECORD_NAME, text)
        except OSError:
            pass  # a read-only cache must not fail the run
        finally:
            os.close(dfd)
