"""The staging area: every file this run will write, rendered there first for `sshd -t`."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from provisioner.reconcile import Reconciliation

STAGING_PREFIX = "staging-"

# The logger's name is the event operators see (provisioner.logs): it stayed the module's name
# when apply became a package.
_log = logging.getLogger("provisioner.apply")


class Staging:
    """A private (0700) `staging-<pid>-<random>` directory under work_dir, removed on the
    way out whatever the way (it holds copies of passwd and shadow); what a kill -9 leaves,
    the next run removes (`remove_stale_staging`)."""

    def __init__(self, work_dir: Path) -> None:
        work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=work_dir))

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *_exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def remove_stale_staging(work_dir: Path) -> list[str]:
    """Remove the staging directories of earlier runs (a kill -9, a crash, a power cut).

    Called under the host lock: no other apply of this host can be using one, so every
    `staging-*` there is stale, whatever its pid says (pids are reused)."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(work_dir))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not entry.name.startswith(STAGING_PREFIX):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                # rmtree does not follow symbolic links inside it.
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError as exc:
            _log.warning("could not remove the stale staging directory %s: %s", entry.path, exc)
            continue
        removed.append(entry.path)
    return removed


def stage(rec: Reconciliation, staging: Path) -> Path:
    """Write every file this run will write under `staging`, mirroring the live layout.

    The sshd drop-in always (`sshd -t` checks it); other files only when they change: the
    ones that stay are live already, and writing 10,000 unchanged authorized_keys files to
    stage one changed key took seconds.
    """
    dropin = rec.settings.sshd_dropin
    changing = {Path(c.path) for c in rec.plan.changes} | {dropin}
    for node in rec.tree:
        if node.kind != "file" or node.content is None or node.path not in changing:
            continue
        target = staging / node.path.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(node.content)
    return staging / dropin.relative_to("/")
