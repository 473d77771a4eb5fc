"""Moving a set without losing or doubling a file, whatever point a kill -9 strikes.

Every move is a rename on one file system, so at any instant each file has exactly one name:
in its upload directory, in ``<intake_dir>/.staging/<set>/files/``, or in the set's final
directory (``<intake_dir>/<ENV>/<set>/`` or ``<quarantine_dir>/<set>/``). The order:

1. the journal entry ``<work_dir>/intake-journal/<set>.json`` is written (fsync) naming the
   set's user, directory and file names, before the first file moves;
2. each file is renamed from the upload directory into the staging directory (out of the
   sender's reach: the sender can no longer replace or rename it), and the directory fsynced;
3. the set is checked on the staged files, the names claimed in the state if it passes, and
   the record (the verdict) written into the staging directory (fsync);
4. the staging directory is renamed to its final place in one rename;
5. a refused set's notice is written to the sender's ``OUT*``; then the journal entry goes.

A run that finds journal entries (a run killed midway) finishes them first, under the lock:
files still in the upload directory are moved on, a staged record is the verdict (the claim
in the state is the set's own, so deciding again would find it too), and a final directory
that already exists means only the notice may be missing (its name is derived from the set,
so writing it again replaces it instead of adding a second one).
"""

# Descriptor-relative os calls on purpose (dir_fd, O_NOFOLLOW).

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner.fsutil import write_atomic
from provisioner.intake.uploads import DIR_FLAGS

FILES = "files"
RECORD = "record.json"
STAGING = ".staging"


@dataclass(frozen=True, slots=True)
class Layout:
    chroot_base: Path
    intake_dir: Path
    quarantine_dir: Path
    journal_dir: Path

    @property
    def staging_dir(self) -> Path:
        return self.intake_dir / STAGING

    def accepted_dir(self, env: str) -> Path:
        return self.intake_dir / env

    def prepare(self) -> None:
        for path in (
            self.staging_dir,
            *(self.accepted_dir(e) for e in ("R", "T", "S")),
            self.quarantine_dir,
        ):
            path.mkdir(parents=True, exist_ok=True, mode=0o750)
        self.journal_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


def fsync_dir(fd: int) -> None:
    os.fsync(fd)


@contextlib.contextmanager
def opened_dir(path: Path | str, *, dir_fd: int | None = None) -> Iterator[int]:
    fd = os.open(path, DIR_FLAGS, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def exists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def make_dir(name: str, dir_fd: int, mode: int = 0o750) -> None:
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, mode, dir_fd=dir_fd)


# --- the journal -------------------------------------------------------------------------


def journal_path(layout: Layout, set_id: str) -> Path:
    return layout.journal_dir / f"{set_id}.json"


def write_journal(layout: Layout, entry: dict[str, Any]) -> None:
    data = json.dumps(entry, ensure_ascii=True, sort_keys=True).encode("ascii")
    write_atomic(journal_path(layout, entry["set_id"]), data, 0o600, dir_mode=0o700)


def read_journals(layout: Layout) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if not layout.journal_dir.is_dir():
        return out
    for path in sorted(layout.journal_dir.glob("*.json")):
        try:
            entry = json.loads(path.read_text("ascii"))
        except (OSError, ValueError):
            continue  # an interrupted temporary write never carries the .json suffix alone
        if isinstance(entry, dict) and isinstance(entry.get("set_id"), str):
            out.append(entry)
    return out


def drop_journal(layout: Layout, set_id: str) -> None:
    # No fsync: an entry that comes back after a power loss finds its set final and only
    # writes its (deterministic) notice again.
    with contextlib.suppress(FileNotFoundError):
        journal_path(layout, set_id).unlink()


# --- moves -----------------------------------------------------------------------------


def stage_files(upload_fd: int, files_fd: int, names: list[str]) -> list[str]:
    """Rename each of `names` from the upload directory into the staging directory; returns
    the names now staged (a name the sender deleted meanwhile is simply not there)."""
    staged: list[str] = []
    for name in names:
        if exists(name, files_fd):
            staged.append(name)  # moved by the run that was killed
            continue
        try:
            os.rename(name, name, src_dir_fd=upload_fd, dst_dir_fd=files_fd)
        except FileNotFoundError:
            continue
        staged.append(name)
    fsync_dir(files_fd)
    return staged


def write_record(set_fd: int, record: dict[str, Any]) -> None:
    data = json.dumps(record, ensure_ascii=True, indent=2, sort_keys=True).encode("ascii") + b"\n"
    tmp = f".{RECORD}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=set_fd)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640, dir_fd=set_fd)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, RECORD, src_dir_fd=set_fd, dst_dir_fd=set_fd)
    fsync_dir(set_fd)


def read_record(set_fd: int) -> dict[str, Any] | None:
    """The verdict of a set staged by a run that was killed after deciding it, if any."""
    try:
        fd = os.open(RECORD, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=set_fd)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as fh:
        record: dict[str, Any] = json.loads(fh.read())
    return record


def finalize(staging_fd: int, set_id: str, dest_fd: int) -> None:
    """One rename of the whole staged set into its final directory."""
    os.rename(set_id, set_id, src_dir_fd=staging_fd, dst_dir_fd=dest_fd)
    # One fsync: the rename is one entry of the destination; a journal entry replayed after a
    # power loss that finds the set still staged just renames it again.
    fsync_dir(dest_fd)
