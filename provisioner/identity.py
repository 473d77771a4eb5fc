"""Who declared what: the file behind each quality, as the state remembers it.

The reconciler knows a quality by the identity its file declares: its enterprise number and
quality type (provisioner.quality_id). A file that is refused may not say that identity any more (unparsable, a mistyped digit, another number
altogether), and reading it as "this quality is no longer declared" cut off live channels.
So the state records, per quality, the file that declared it at its last successful apply:
its path relative to the declarations root (never as typed, never relative to the working
directory, so that every host and every directory agree) and its content's blob id. A refused
file at that path still holds the quality it declared; a file moved with the same identity is
the same quality under another path.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from provisioner.quality_id import QualityId
from provisioner.safefile import confined_realpath, read_regular
from provisioner.source import MAX_FILE_BYTES
from provisioner.state import Registration


@dataclass(frozen=True, slots=True)
class DeclaredFile:
    """The file a quality is declared in this run."""

    path: str  # relative to the declarations root, '/'-separated
    file: Path  # where it was found
    digest: str  # sha256 of its content, as validated


def root_relative(file: Path, root: Path) -> str | None:
    """`file` relative to the declarations root `root` (which `find_root` resolved).

    The directory is resolved and the name is not: the same file reached through a cwd below
    a symbolic link, or typed as `./x/../x`, gives the same path; a link named like a
    declaration stays its own name."""
    parent = Path(os.path.realpath(file.parent))
    if not parent.is_relative_to(root):
        return None
    return (parent / file.name).relative_to(root).as_posix()


def in_git(root: Path) -> bool:
    return (root / ".git").exists()


def git_blob_id(content: bytes) -> str:
    """What `git hash-object` says of a file with this content (no filters applied)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False).hexdigest()


def blob_of(declared: DeclaredFile, root: Path, git: bool) -> str | None:
    """The blob id of the file as it was validated: its Git blob id in a checkout, else the
    sha256 of its content. None when it cannot be read again as that same content."""
    if not git:
        return declared.digest or None
    try:
        data = read_regular(confined_realpath(declared.file, root), MAX_FILE_BYTES)
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != declared.digest:
        return None  # changed since it was validated: recorded at the next apply
    return git_blob_id(data)


def by_declared_path(registrations: Mapping[QualityId, Registration]) -> dict[str, QualityId]:
    """Declared path -> the live quality whose file it was at its last successful apply."""
    return {
        reg.declared_path: qid
        for qid, reg in sorted(registrations.items())
        if reg.declared_path is not None and reg.status != "removed"
    }


def to_record(
    declared: Mapping[QualityId, DeclaredFile],
    registrations: Mapping[QualityId, Registration],
    root: Path,
    unchanged: Collection[QualityId] = (),
) -> dict[QualityId, tuple[str, str | None]]:
    """(path, blob) per applied quality, for `StateStore.record_declared`.

    A channel the host record vouches for (`unchanged`: same content as at the last apply)
    whose path and blob are recorded already is not read again: in a Git checkout the blob
    id needs the file's bytes, and most runs change nothing."""
    git = in_git(root)
    out: dict[QualityId, tuple[str, str | None]] = {}
    for qid, found in declared.items():
        reg = registrations.get(qid)
        if reg is None:
            continue
        if qid in unchanged and reg.declared_path == found.path and reg.declared_blob:
            continue
        out[qid] = (found.path, blob_of(found, root, git))
    return out
