"""Reading the upload directories without trusting anything in them.

Every directory is opened relative to its parent's descriptor with O_NOFOLLOW|O_DIRECTORY,
every entry is judged from ``fstatat(..., AT_SYMLINK_NOFOLLOW)``: only a regular file with one
link is an upload. Symbolic links, hard links (a second name of some other file), directories,
FIFOs, sockets and devices are ignored and reported, never opened. Names are never joined
into paths: files are opened and renamed relative to directory descriptors.
"""

# Descriptor-relative os calls on purpose (dir_fd, O_NOFOLLOW); pathlib has no such API.

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Final

from provisioner.safefile import kind_of

UPLOAD_DIRS: Final[dict[str, str]] = {"IN": "R", "INTEST": "T", "INTEST-S": "S"}
DIRECTORY_OF: Final[dict[str, str]] = {env: d for d, env in UPLOAD_DIRS.items()}
ANSWER_DIR: Final[dict[str, str]] = {"IN": "OUT", "INTEST": "OUTTEST", "INTEST-S": "OUTTEST-S"}
DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
# More entries than this in one upload directory: the rest waits for the next run, so that
# one sender flooding its IN cannot make a run last forever for everybody.
MAX_ENTRIES: Final = 20_000


@dataclass(frozen=True, slots=True)
class Upload:
    name: str
    size: int
    mtime_ns: int
    ctime_ns: int
    dev: int
    ino: int

    @property
    def moved_ns(self) -> int:
        """When it last changed: the later of mtime and ctime (nobody can set ctime)."""
        return max(self.mtime_ns, self.ctime_ns)

    def same_as(self, st: os.stat_result) -> bool:
        # Not ctime: the gate's own rename moves it.
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == (
            self.dev,
            self.ino,
            self.size,
            self.mtime_ns,
        )


@dataclass(slots=True)
class Listing:
    user: str
    directory: str
    files: list[Upload] = field(default_factory=list)
    # (name, why): reported, never touched.
    ignored: list[tuple[str, str]] = field(default_factory=list)
    truncated: bool = False


def upload_of(name: str, st: os.stat_result) -> Upload:
    return Upload(name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_dev, st.st_ino)


def open_dir(name: str, *, dir_fd: int | None = None) -> int:
    """A directory descriptor; refuses a symbolic link and anything that is not a directory."""
    return os.open(name, DIR_FLAGS, dir_fd=dir_fd)


def why_ignored(st: os.stat_result) -> str | None:
    if stat.S_ISREG(st.st_mode):
        if st.st_nlink != 1:
            return "a hard link (a second name of another file)"
        return None
    return kind_of(st.st_mode)


def list_uploads(user: str, directory: str, dir_fd: int) -> Listing:
    """The regular files of one upload directory, and what was ignored there."""
    listing = Listing(user, directory)
    with os.scandir(dir_fd) as entries:
        for count, entry in enumerate(entries):
            if count >= MAX_ENTRIES:
                listing.truncated = True
                break
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted by its sender meanwhile
            why = why_ignored(st)
            if why is not None:
                listing.ignored.append((entry.name, why))
                continue
            listing.files.append(upload_of(entry.name, st))
    listing.files.sort(key=lambda u: u.name)
    return listing


def read_upload(dir_fd: int, upload: Upload, cap: int) -> bytes:
    """The content of `upload`, which must still be the file the scan saw (same inode, size,
    times) and at most `cap` bytes; raises OSError (ValueError for a changed file)."""
    fd = os.open(upload.name, FILE_FLAGS, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or not upload.same_as(st):
            raise ValueError("the file changed since it was listed")
        if st.st_size > cap:
            raise ValueError("the file is over the size cap")
        chunks: list[bytes] = []
        left = st.st_size + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) != st.st_size:
            raise ValueError("the file changed while it was read")
        return data
    finally:
        os.close(fd)
