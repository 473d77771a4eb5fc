"""One run at a time per host: an exclusive, non-blocking flock that says who holds it.

The reconciler and the intake gate each take one, in files of their own, so that they never
wait for each other; both are told who holds theirs (pid, host, since when).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from provisioner.errors import LockError


@contextlib.contextmanager
def exclusive_lock(path: Path, *, what: str = "run") -> Iterator[None]:
    """Hold the lock at `path` or raise LockError naming `what` and the holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_NOFOLLOW: a lock file swapped for a symlink must not make us truncate its target.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "r+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "an unknown process"
            raise LockError(f"another {what} holds the lock {path}: {holder}") from None
        fh.seek(0)
        fh.truncate()
        fh.write(
            f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}\n"
        )
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)
