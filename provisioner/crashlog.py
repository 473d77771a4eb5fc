"""The crash log: what an internal error (exit 3) leaves for whoever has to fix the bug.

The CLI prints a short message and the path of this log; the log holds the traceback and the
versions a bug report needs (this release, Python, OpenSSH, SQLAlchemy and the state
database's dialect). User errors (`ProvisionerError`, state errors included) never come here.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import traceback
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from provisioner import __version__


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "sftp-provisioner"


def _openssh() -> list[str]:
    ssh = shutil.which("ssh")
    if ssh is None:
        return ["OpenSSH: no ssh on PATH"]
    try:
        done = subprocess.run([ssh, "-V"], capture_output=True, text=True, timeout=2, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return [f"OpenSSH: ssh -V failed: {exc}"]
    # ssh -V writes to standard error.
    text = " ".join((done.stderr or done.stdout).split())
    return [f"OpenSSH: {text or '(ssh -V said nothing)'}"]


def _sqlalchemy() -> list[str]:
    try:
        lines = [f"SQLAlchemy {metadata.version('SQLAlchemy')}"]
    except metadata.PackageNotFoundError:
        lines = ["SQLAlchemy: not installed"]
    if "provisioner.state._db" in sys.modules:
        # Only when this run opened a state database: a crash log imports nothing new.
        from provisioner.state._db import engine_versions

        lines.extend(engine_versions())
    return lines


def versions() -> list[str]:
    """The versions a bug report needs, one per line; a probe that fails says so."""
    lines = [
        f"Python {platform.python_version()} ({platform.python_implementation()}) "
        f"on {platform.platform()}",
    ]
    for probe in (_openssh, _sqlalchemy):
        try:
            lines.extend(probe())
        except Exception as exc:  # a crash log must be written whatever fails
            lines.append(f"(version probe failed: {type(exc).__name__}: {exc})")
    return lines


def write_crash_log() -> str:
    """Write the exception being handled, with the versions; returns the log's path."""
    text = f"sftp-provisioner {__version__} {datetime.now(UTC).isoformat()}\n"
    text += f"argv: {sys.argv!r}\n" + "".join(f"{line}\n" for line in versions())
    text += traceback.format_exc()
    for directory in (state_dir(), Path(tempfile.gettempdir())):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix="crash-", suffix=".log", dir=directory)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            return name
        except OSError:
            continue
    return "(no writable log directory)"
