"""Small atomic file writes for the operations side (heartbeat, outbox, contact book).

The managed host tree has its own journalled writer in apply/journal.py; these are files the
reconciler keeps for itself and for monitoring, where "old or new, never half" is enough.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o644, *, dir_mode: int = 0o755) -> None:
    """Temporary file in the same directory, fsync, rename, fsync of the directory.

    The temporary name starts with a dot and ends in `.tmp`, so a reader that lists `*.prom`
    or `*.eml` never picks it up.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
