"""The host as the planner sees it: every read `reconcile.compute` makes of the host goes
through a `HostView`.

`LIVE` is this host (its file system, NSS, sshd, the euid) and what `compute` uses unless told
otherwise. `RecordedHost` is a host made of data, loaded from and dumped to JSON, which also
notes every path the planner read: a planner case is then a declarations tree, a state, and a
recorded host, and a test can say "no channel was read again" without a real tree or root.
`record_host` captures a real (applied) tree as a recorded host.

Apply never reads through a view: what it changes is the real file system.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from provisioner.cache import read_private_file
from provisioner.errors import SettingsError
from provisioner.hostaccounts import NameDatabases
from provisioner.hostrecord import RECORD_NAME, HostRecord
from provisioner.observe import (
    MAX_CONTENT,
    Observed,
    ObservedKind,
    Stat,
    list_dir,
    lstat,
    observe_path,
    tree_size,
)
from provisioner.render import host_file_paths, openssh_version
from provisioner.settings import HostSettings

FORMAT = 1
ROOT = "$ROOT"


class HostView(Protocol):
    """What the planner reads of a host. Paths are absolute, as the settings give them."""

    def observe(self, path: Path, *, read: bool = True) -> Observed:
        """The path itself (a symlink is not followed); a file's content when `read`."""

    def lstat(self, path: str) -> Stat | None:
        """The stamp the host record compares; None when the path is missing."""

    def readlink(self, path: Path) -> str | None:
        """A symlink's target; None when the path is not a symlink."""

    def list_dir(self, path: Path) -> list[str]:
        """The names in a directory, sorted; none when it is missing or not one."""

    def tree_size(self, path: Path) -> tuple[int, int]:
        """Bytes and files under a directory (what archiving a chroot keeps)."""

    def owners_managed(self) -> bool:
        """Whether owners and groups can be set (the run is root's)."""

    def openssh_version(self, settings: HostSettings) -> tuple[int, int]:
        """The OpenSSH sshd runs (the `openssh_version` setting wins)."""

    def name_databases(self) -> NameDatabases:
        """The host's own passwd and group names (see provisioner.hostaccounts)."""

    def host_record(self, settings: HostSettings) -> bytes | None:
        """The content of the record of the last apply, if one can be trusted."""


class LiveHost:
    """This host: the file system, NSS, sshd and the euid of the run."""

    def observe(self, path: Path, *, read: bool = True) -> Observed:
        return observe_path(path, read=read)

    def lstat(self, path: str) -> Stat | None:
        return lstat(path)

    def readlink(self, path: Path) -> str | None:
        try:
            return str(path.readlink())
        except OSError:
            return None

    def list_dir(self, path: Path) -> list[str]:
        return list_dir(path)

    def tree_size(self, path: Path) -> tuple[int, int]:
        return tree_size(path)

    def owners_managed(self) -> bool:
        # Only root can give files away; a normal user's run into --root reports owners.
        return os.geteuid() == 0

    def openssh_version(self, settings: HostSettings) -> tuple[int, int]:
        return openssh_version(settings)

    def name_databases(self) -> NameDatabases:
        return NameDatabases.of_host()

    def host_record(self, settings: HostSettings) -> bytes | None:
        return read_private_file(HostRecord.location(settings), RECORD_NAME)


LIVE: HostView = LiveHost()


# --- a host made of data -------------------------------------------------------------------

_TYPE_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK, "other": 0}
_DEFAULT_MODE = {"file": 0o644, "dir": 0o755, "symlink": 0o777, "other": 0o644}


@dataclass(frozen=True, slots=True)
class RecordedPath:
    """One path of a recorded host. `stamp`: inode, mtime and ctime (ns) for the host record
    to compare; a path without one never matches a recorded stamp, and is read again."""

    kind: ObservedKind
    owner: int = 0
    group: int = 0
    mode: int = 0
    content: bytes | None = None
    target: str | None = None
    stamp: tuple[int, int, int] | None = None

    @property
    def size(self) -> int:
        if self.kind == "file":
            return len(self.content or b"")
        if self.kind == "symlink":
            return len((self.target or "").encode("utf-8", "surrogateescape"))
        return 0

    def to_json(self, prefix: str = "") -> dict[str, Any]:
        """As JSON, `prefix` (the settings root) written `$ROOT` in text and targets."""
        out: dict[str, Any] = {"kind": self.kind, "owner": self.owner, "group": self.group}
        out["mode"] = f"{self.mode:04o}"
        if self.kind == "file":
            try:
                out["text"] = _rooted((self.content or b"").decode("utf-8"), prefix)
            except UnicodeDecodeError:
                out["base64"] = base64.b64encode(self.content or b"").decode("ascii")
        if self.kind == "symlink":
            out["target"] = _rooted(self.target or "", prefix)
        if self.stamp is not None:
            out["stamp"] = list(self.stamp)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], prefix: str = "") -> RecordedPath:
        kind = data.get("kind", "file")
        if kind in ("fifo", "socket", "device"):
            kind = "other"  # what a recorded tree may call them; the planner sees "other"
        if kind not in ("file", "dir", "symlink", "other", "missing"):
            raise ValueError(f"unknown kind {kind!r}")
        content = None
        if kind == "file":
            if "base64" in data:
                content = base64.b64decode(data["base64"], validate=True)
            else:
                content = _unrooted(str(data.get("text", "")), prefix).encode("utf-8")
        mode = data.get("mode", _DEFAULT_MODE.get(kind, 0))
        stamp = data.get("stamp")
        return cls(
            kind,
            int(data.get("owner", 0)),
            int(data.get("group", 0)),
            int(mode, 8) if isinstance(mode, str) else int(mode),
            content,
            _unrooted(str(data["target"]), prefix) if kind == "symlink" else None,
            (int(stamp[0]), int(stamp[1]), int(stamp[2])) if stamp else None,
        )


@dataclass(slots=True)
class RecordedHost:
    """A host from data (see the module docstring; the JSON format is `to_json`'s).

    Keys are absolute paths, the settings root written `$ROOT`; a missing key is a missing
    path. What the planner read is noted, as `$ROOT` paths: `reads` (file contents), `stats`
    (kind, owner, mode or stamp only) and `listed` (directories listed).
    """

    root: Path | None
    paths: dict[str, RecordedPath] = field(default_factory=dict)
    owners: bool = False
    openssh: tuple[int, int] | None = None
    names: dict[str, dict[str, set[int]]] = field(
        default_factory=lambda: {"passwd": {}, "group": {}}
    )
    record: bytes | None = None
    reads: set[str] = field(default_factory=set)
    stats: set[str] = field(default_factory=set)
    listed: set[str] = field(default_factory=set)
    _children: dict[str, set[str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for key in self.paths:
            self._index(key)

    # -- building --

    def _prefix(self) -> str:
        return str(self.root) if self.root is not None else ""

    def shown(self, path: str | Path) -> str:
        """`path` as a key: the settings root written `$ROOT`."""
        text, prefix = str(path), self._prefix()
        if prefix and (text == prefix or text.startswith(prefix + "/")):
            return ROOT + text[len(prefix) :]
        return text

    def real(self, key: str) -> str:
        """A key as the planner asks for it: `$ROOT` replaced by the settings root."""
        return self._prefix() + key[len(ROOT) :] if key.startswith(ROOT) else key

    def _index(self, real: str) -> None:
        parent, _, name = real.rpartition("/")
        self._children.setdefault(parent or "/", set()).add(name)

    def put(self, path: str | Path, entry: RecordedPath) -> None:
        """Add or replace a path (`path` absolute, or a `$ROOT` key)."""
        real = self.real(str(path))
        self.paths[real] = entry
        self._index(real)

    def forget_reads(self) -> None:
        self.reads.clear()
        self.stats.clear()
        self.listed.clear()

    def read_under(self, prefix: str) -> set[str]:
        """Contents read at `prefix` (a `$ROOT` key) or below it."""
        return {p for p in self.reads if p == prefix or p.startswith(prefix.rstrip("/") + "/")}

    def _entry(self, path: str) -> RecordedPath | None:
        entry = self.paths.get(path)
        return None if entry is None or entry.kind == "missing" else entry

    # -- HostView --

    def observe(self, path: Path, *, read: bool = True) -> Observed:
        entry = self._entry(str(path))
        if entry is None or entry.kind != "file":
            self.stats.add(self.shown(path))
        if entry is None:
            return Observed(path, "missing")
        if entry.kind == "symlink":
            digest = hashlib.sha256((entry.target or "").encode()).hexdigest()
            return Observed(path, "symlink", entry.owner, entry.group, entry.mode, 0, digest)
        if entry.kind != "file":
            return Observed(path, entry.kind, entry.owner, entry.group, entry.mode)
        content = entry.content or b""
        if not read or len(content) > MAX_CONTENT:
            self.stats.add(self.shown(path))
            return Observed(path, "file", entry.owner, entry.group, entry.mode, len(content))
        self.reads.add(self.shown(path))
        digest = hashlib.sha256(content).hexdigest()
        return Observed(
            path, "file", entry.owner, entry.group, entry.mode, len(content), digest, content
        )

    def lstat(self, path: str) -> Stat | None:
        self.stats.add(self.shown(path))
        entry = self._entry(path)
        if entry is None:
            return None
        ino, mtime, ctime = entry.stamp or (0, 0, 0)
        mode = _TYPE_BITS[entry.kind] | entry.mode
        return Stat(mode, entry.owner, entry.group, entry.size, ino, mtime, ctime)

    def readlink(self, path: Path) -> str | None:
        entry = self._entry(str(path))
        return entry.target if entry is not None and entry.kind == "symlink" else None

    def list_dir(self, path: Path) -> list[str]:
        self.listed.add(self.shown(path))
        entry = self._entry(str(path))
        if entry is None or entry.kind != "dir":
            return []
        text = str(path)
        return sorted(n for n in self._children.get(text, ()) if self._entry(f"{text}/{n}"))

    def tree_size(self, path: Path) -> tuple[int, int]:
        prefix = str(path).rstrip("/") + "/"
        total = files = 0
        for key, entry in self.paths.items():
            if key.startswith(prefix) and entry.kind not in ("dir", "missing"):
                self.stats.add(self.shown(key))
                total += entry.size
                files += 1
        return total, files

    def owners_managed(self) -> bool:
        return self.owners

    def openssh_version(self, settings: HostSettings) -> tuple[int, int]:
        if settings.openssh_version or self.openssh is None:
            # The setting wins, as on a real host (which also says what is missing).
            if not settings.openssh_version:
                raise SettingsError("cannot tell the OpenSSH version: the recorded host has none")
            return openssh_version(settings)
        return self.openssh

    def name_databases(self) -> NameDatabases:
        # A recorded listing is the whole database: nothing is looked up on its own.
        listed = {db: {n: set(ids) for n, ids in names.items()} for db, names in self.names.items()}
        return NameDatabases(listed, {"passwd": True, "group": True}, lambda _db, _name: None)

    def host_record(self, settings: HostSettings) -> bytes | None:
        self.reads.add(self.shown(HostRecord.location(settings) / RECORD_NAME))
        return self.record

    # -- JSON --

    def to_json(self) -> dict[str, Any]:
        record = None
        if self.record is not None:
            record = _rooted(self.record.decode("utf-8", "surrogateescape"), self._prefix())
        return {
            "format": FORMAT,
            "owners_managed": self.owners,
            "openssh": f"{self.openssh[0]}.{self.openssh[1]}" if self.openssh else None,
            "names": {
                db: {
                    n: sorted(ids)[0] if len(ids) == 1 else sorted(ids) for n, ids in names.items()
                }
                for db, names in sorted(self.names.items())
            },
            "host_record": record,
            "paths": {
                self.shown(p): e.to_json(self._prefix()) for p, e in sorted(self.paths.items())
            },
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, data: dict[str, Any], root: Path | None) -> RecordedHost:
        """A recorded host whose `$ROOT` is `root` (the settings root of the run)."""
        if data.get("format", FORMAT) != FORMAT:
            raise ValueError(f"recorded host format {data.get('format')!r}, not {FORMAT}")
        host = cls(root)
        # A root run, as in production, unless the case says otherwise.
        host.owners = bool(data.get("owners_managed", True))
        version = data.get("openssh")
        if version:
            major, minor = str(version).split(".")
            host.openssh = (int(major), int(minor))
        for db in ("passwd", "group"):
            names = data.get("names", {}).get(db, {})
            host.names[db] = {
                n: set(v) if isinstance(v, list) else {int(v)} for n, v in names.items()
            }
        record = data.get("host_record")
        if record is not None:
            host.record = _unrooted(str(record), host._prefix()).encode("utf-8", "surrogateescape")
        try:
            for key, value in data.get("paths", {}).items():
                host.put(key, RecordedPath.from_json(value, host._prefix()))
        except (binascii.Error, KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"recorded host path {key!r}: {exc}") from None
        return host

    @classmethod
    def loads(cls, text: str, root: Path | None) -> RecordedHost:
        return cls.from_json(json.loads(text), root)

    @classmethod
    def load(cls, path: Path, root: Path | None) -> RecordedHost:
        return cls.loads(path.read_text("utf-8"), root)


def _rooted(text: str, prefix: str) -> str:
    # Rendered files name managed paths (rsyslog's sockets, sshd's directories): written from
    # $ROOT, a case is the same case under any root.
    return text.replace(prefix, ROOT) if prefix else text


def _unrooted(text: str, prefix: str) -> str:
    return text.replace(ROOT, prefix)


# --- capturing a host ----------------------------------------------------------------------


def managed_areas(settings: HostSettings) -> tuple[list[Path], list[Path]]:
    """The directories (walked whole) and the files the planner can look at."""
    dirs = [
        settings.chroot_base,
        settings.keys_dir,
        settings.extrausers_dir,
        settings.certificates_dir,
    ]
    files = [*host_file_paths(settings).values(), settings.sshd_dropin, settings.rsyslog_dropin]
    return dirs, files


def record_host(settings: HostSettings, host: HostView = LIVE) -> RecordedHost:
    """The managed areas of `host` (this one by default) as a recorded host: every path under
    the chroots, keys, accounts and certificates directories, the host-wide files, the host
    record, the owners rule, the OpenSSH version and the host's own names."""
    recorded = RecordedHost(settings.root)
    dirs, files = managed_areas(settings)
    for path in _walk(host, dirs):
        _capture(recorded, host, path)
    for path in files:
        _capture(recorded, host, path)
    recorded.owners = host.owners_managed()
    recorded.openssh = host.openssh_version(settings)
    recorded.names = host.name_databases().listed
    recorded.record = host.host_record(settings)
    recorded.forget_reads()
    return recorded


def _walk(host: HostView, tops: Iterable[Path]) -> Iterable[Path]:
    pending = list(tops)
    while pending:
        path = pending.pop()
        yield path
        if host.observe(path, read=False).kind == "dir":
            pending.extend(path / name for name in host.list_dir(path))


def _capture(recorded: RecordedHost, host: HostView, path: Path) -> None:
    seen = host.observe(path)
    if not seen.exists:
        return
    st = host.lstat(str(path))
    stamp = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns) if st is not None else None
    target = host.readlink(path) if seen.kind == "symlink" else None
    recorded.put(
        path,
        RecordedPath(seen.kind, seen.owner, seen.group, seen.mode, seen.content, target, stamp),
    )
