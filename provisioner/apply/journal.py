"""Atomic writes and the undo journal: every live change can be put back.

A file is replaced atomically (temporary file, fsync, rename, fsync of its directory), and
every change is journalled before it is made, so a failure midway restores the previous
files, directories, owners and modes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

TMP_SUFFIX = ".sftp-provisioner.tmp"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Owners:
    """chown where we may; as a normal user, remember what could not be set."""

    def __init__(self, manage: bool):
        self.manage = manage
        self.not_set: list[str] = []

    def fchown(self, fd: int, path: Path, owner: int, group: int) -> None:
        if not self.manage:
            self.not_set.append(f"{path} ({owner}:{group})")
            return
        os.fchown(fd, owner, group)

    def lchown(self, path: Path, owner: int, group: int) -> None:
        if not self.manage:
            self.not_set.append(f"{path} ({owner}:{group})")
            return
        os.lchown(path, owner, group)


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_SUFFIX}")


def write_atomic(
    path: Path, content: bytes, mode: int, owner: int, group: int, owners: Owners
) -> None:
    tmp = _temporary_name(path)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(content)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        # Owner and mode are right before the name appears: no window with wrong ones.
        owners.fchown(fd, path, owner, group)
        os.fchmod(fd, mode)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def unused_name(path: Path) -> Path:
    """`path`, or `path-2`, `path-3`...: the first name nothing sits at.

    shutil.move() into an existing directory moves *inside* it: a second archive of the same
    chroot within one second would otherwise end up nested in the first.
    """
    candidate, n = path, 1
    while os.path.lexists(candidate):
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _is_real_dir(path: Path) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)


@dataclass(slots=True)
class _Undo:
    action: str
    path: Path
    backup: Path | None = None
    owner: int = -1
    group: int = -1
    mode: int = 0
    other: Path | None = None


class Journal:
    """What to do to put everything back, newest first."""

    def __init__(self, backup_dir: Path, archive_dir: Path, stamp: str):
        self.backup_dir = backup_dir
        # A directory in the way of a managed file may hold someone's data: it goes to the
        # archive like a removed chroot, never into the temporary backup area.
        self.archive_dir = archive_dir
        self.stamp = stamp
        self.entries: list[_Undo] = []
        self._n = 0

    def _backup(self, path: Path) -> Path:
        self.backup_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._n += 1
        dest = self.backup_dir / f"{self._n:06d}-{path.name}"
        # Symlinks are kept as symlinks: restoring must not turn them into copies.
        shutil.copy2(path, dest, follow_symlinks=False)
        return dest

    def before_file_write(self, path: Path) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self.entries.append(_Undo("remove", path))
            return
        if _is_real_dir(path):
            self._displace(path)
            return
        self.entries.append(
            _Undo("restore", path, self._backup(path), st.st_uid, st.st_gid, st.st_mode & 0o7777)
        )

    def _displace(self, path: Path) -> None:
        """Move the directory in the way of a managed file to the archive."""
        if not os.path.isdir(self.archive_dir):
            self.archive_dir.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(self.archive_dir, 0o700)
            # Journalled like every other directory it creates: a rollback leaves no trace.
            self.created_dir(self.archive_dir)
        moved = unused_name(self.archive_dir / f"{path.name}-displaced-{self.stamp}")
        shutil.move(str(path), str(moved))
        self.entries.append(_Undo("move-back", moved, other=path))

    def created_dir(self, path: Path) -> None:
        self.entries.append(_Undo("rmdir", path))

    def before_metadata(self, path: Path) -> None:
        st = os.lstat(path)
        self.entries.append(
            _Undo("metadata", path, owner=st.st_uid, group=st.st_gid, mode=st.st_mode & 0o7777)
        )

    def moved(self, src: Path, dest: Path) -> None:
        self.entries.append(_Undo("move-back", dest, other=src))

    def rollback(self) -> list[str]:
        """Undo every entry, newest first; the paths that could not be put back, and why."""
        problems = []
        for undo in reversed(self.entries):
            try:
                _undo(undo)
            except OSError as exc:
                problems.append(f"{undo.path}: {exc}")
        return problems


def _undo(undo: _Undo) -> None:
    if undo.action == "remove":
        with contextlib.suppress(FileNotFoundError):
            if _is_real_dir(undo.path):
                os.rmdir(undo.path)
            else:
                os.unlink(undo.path)
    elif undo.action == "restore" and undo.backup is not None:
        _restore(undo.path, undo.backup, undo.owner, undo.group, undo.mode)
    elif undo.action == "rmdir":
        with contextlib.suppress(FileNotFoundError, OSError):
            os.rmdir(undo.path)
    elif undo.action == "metadata":
        with contextlib.suppress(PermissionError):
            os.lchown(undo.path, undo.owner, undo.group)
        os.chmod(undo.path, undo.mode)
    elif undo.action == "move-back" and undo.other is not None:
        _move_back(undo.path, undo.other)


def _restore(path: Path, backup: Path, owner: int, group: int, mode: int) -> None:
    """The backed-up file back at `path`, atomically, with its owner and mode."""
    tmp = _temporary_name(path)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    shutil.copy2(backup, tmp, follow_symlinks=False)
    if not os.path.islink(tmp):
        with contextlib.suppress(PermissionError):
            os.chown(tmp, owner, group)
        os.chmod(tmp, mode)
    os.replace(tmp, path)


def _move_back(moved: Path, original: Path) -> None:
    """What was moved away (archived, displaced) back at `original`, over what took its place."""
    if os.path.lexists(original) and os.path.isdir(original):
        with contextlib.suppress(OSError):
            os.rmdir(original)
    if os.path.lexists(original) and not os.path.isdir(original):
        os.unlink(original)
    shutil.move(str(moved), str(original))
