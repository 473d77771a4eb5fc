"""One apply of a host at a time."""

from __future__ import annotations

import contextlib
from pathlib import Path

from provisioner.runlock import exclusive_lock


def host_lock(path: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive, non-blocking lock; a second run is told who holds it."""
    return exclusive_lock(path, what="run")
