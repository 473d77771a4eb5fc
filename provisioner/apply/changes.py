"""One planned change made on the live host, journalled before it is made.

Uploaded data is never deleted: a removed channel's chroot moves to the archive.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path

from provisioner.apply.journal import Journal, Owners, unused_name, write_atomic
from provisioner.apply.result import ApplyResult
from provisioner.plan import PathAction, PathChange
from provisioner.render import Desired
from provisioner.settings import HostSettings

_WRITES = (PathAction.CREATE, PathAction.UPDATE, PathAction.REPLACE)


def apply_change(
    change: PathChange,
    node: Desired | None,
    settings: HostSettings,
    journal: Journal,
    owners: Owners,
    now: datetime,
    result: ApplyResult,
) -> None:
    path = Path(change.path)
    if change.action in _WRITES:
        assert node is not None
        _ensure_parents(path, journal)
        _write(path, node, change.action, journal, owners)
    elif change.action is PathAction.METADATA:
        assert node is not None
        journal.before_metadata(path)
        owners.lchown(path, node.owner, node.group)
        os.chmod(path, node.mode)
    elif change.action is PathAction.DELETE:
        journal.before_file_write(path)
        os.unlink(path)
    elif change.action is PathAction.ARCHIVE:
        dest = _archive(path, settings.archive_dir, now, journal)
        result.archived.append((str(path), str(dest), change.details[0] if change.details else ""))
    result.applied.append(change)


def _ensure_parents(path: Path, journal: Journal) -> None:
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        os.mkdir(directory, 0o755)
        os.chmod(directory, 0o755)
        journal.created_dir(directory)


def _write(path: Path, node: Desired, action: PathAction, journal: Journal, owners: Owners) -> None:
    """A file written atomically, or a directory made (REPLACE: what stood there goes first)."""
    if node.kind == "file":
        assert node.content is not None
        journal.before_file_write(path)
        write_atomic(path, node.content, node.mode, node.owner, node.group, owners)
        return
    if action is PathAction.REPLACE:
        journal.before_file_write(path)
        if os.path.lexists(path):
            os.unlink(path)
    os.mkdir(path, 0o700)
    journal.created_dir(path)
    owners.lchown(path, node.owner, node.group)
    os.chmod(path, node.mode)


def _archive(path: Path, archive: Path, now: datetime, journal: Journal) -> Path:
    """Move a removed channel's chroot into the archive, under a name of its own."""
    if not archive.exists():
        _ensure_parents(archive, journal)
        os.mkdir(archive, 0o700)
        journal.created_dir(archive)
    dest = unused_name(archive / f"{path.name}-{now:%Y%m%dT%H%M%SZ}")
    shutil.move(str(path), str(dest))
    journal.moved(path, dest)
    return dest
