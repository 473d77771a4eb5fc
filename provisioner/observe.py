"""Observing the host: what each managed path is now. Read-only; symlinks are never followed."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ObservedKind = Literal["missing", "file", "dir", "symlink", "other"]

# Managed files are small (the routing table is the largest); reading more than this is a
# sign that something else sits at the path, and its content is then only hashed.
MAX_CONTENT = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Observed:
    path: Path
    kind: ObservedKind
    owner: int = -1
    group: int = -1
    mode: int = 0
    size: int = 0
    sha256: str = ""
    content: bytes | None = None

    @property
    def exists(self) -> bool:
        return self.kind != "missing"

    def fingerprint(self) -> str:
        return f"{self.path}|{self.kind}|{self.owner}|{self.group}|{self.mode:o}|{self.sha256}"


@dataclass(frozen=True, slots=True)
class Stat:
    """What lstat says of a path, named as in `os.stat_result`: enough for the host record to
    tell that a path is still as it was recorded (see provisioner.hostrecord)."""

    st_mode: int
    st_uid: int
    st_gid: int
    st_size: int
    st_ino: int
    st_mtime_ns: int
    st_ctime_ns: int


# How the host record stats a path: `lstat` here on the real host, a recorded host's in tests.
Lstat = Callable[[str], "Stat | None"]


def lstat(path: str) -> Stat | None:
    """The path's own lstat (a symlink is not followed); None when it cannot be had."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return Stat(
        st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns
    )


def observe_path(path: Path, *, read: bool = True) -> Observed:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return Observed(path, "missing")
    except NotADirectoryError:
        return Observed(path, "missing")
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        digest = hashlib.sha256(target.encode()).hexdigest()
        return Observed(path, "symlink", st.st_uid, st.st_gid, mode, 0, digest)
    if stat.S_ISDIR(st.st_mode):
        return Observed(path, "dir", st.st_uid, st.st_gid, mode)
    if not stat.S_ISREG(st.st_mode):
        return Observed(path, "other", st.st_uid, st.st_gid, mode)
    content = None
    digest = ""
    if read and st.st_size <= MAX_CONTENT:
        try:
            # O_NOFOLLOW: a symlink swapped in after the lstat above is not followed.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as fh:
                content = fh.read()
            digest = hashlib.sha256(content).hexdigest()
        except OSError:
            content = None
    return Observed(path, "file", st.st_uid, st.st_gid, mode, st.st_size, digest, content)


def observe(paths: Iterable[Path]) -> dict[Path, Observed]:
    return {p: observe_path(p) for p in paths}


def list_dir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def tree_size(path: Path) -> tuple[int, int]:
    """Bytes and files under `path`, without following symlinks."""
    total = files = 0
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(Path(dirpath) / name).st_size
                files += 1
            except OSError:
                continue
    return total, files
