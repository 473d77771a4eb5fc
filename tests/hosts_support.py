"""The files every SFTP host renders, compared across hosts sharing one state.

Used by tests/test_hosts_converge.py and bench/hosts_bench.py, which must compare the same set.
"""

from __future__ import annotations

from pathlib import Path

# Relative to a host's --root; a directory stands for every file below it.
MANAGED = (
    "etc/ssh/sftp-provisioner/authorized_keys",
    "var/lib/extrausers/passwd",
    "var/lib/extrausers/group",
    "var/lib/extrausers/shadow",
    "var/lib/sftp-gateway/routing.json",
    "etc/ssh/sshd_config.d/00-sftp-provisioner.conf",
)


def managed_files(root: Path) -> list[Path]:
    """The managed files under `root`, in a stable order (a missing file is listed as is)."""
    out: list[Path] = []
    for rel in MANAGED:
        top = root / rel
        out.extend(sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top])
    return out
