"""sshd and the services that read what apply writes: the check before, the reloads after."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from provisioner.errors import ApplyError
from provisioner.settings import HostSettings


def sshd_test(settings: HostSettings, dropin: Path, work: Path) -> None:
    """`sshd -t` on a configuration that includes the staged drop-in, before anything live."""
    binary = settings.sshd_binary
    if not binary.exists():
        raise ApplyError(
            f"{binary} is missing, so the rendered sshd configuration cannot be "
            "checked; install openssh-server (or set sshd_check: false for a "
            "--root demo)"
        )
    key = work / "hostkey"
    if not key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
            check=True,
            capture_output=True,
            timeout=60,
            process_group=0,
        )
    config = work / "sshd_config"
    config.write_text(f"Include {dropin}\nHostKey {key}\nPidFile none\n", "utf-8")
    if os.geteuid() == 0:
        # sshd -t insists on its privilege separation directory.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    # Children run in a process group of their own (here and for the reloads): a Ctrl-C at
    # the terminal reaches the provisioner alone, which decides (see Interruption), instead
    # of killing `sshd -t` into a false "refused" or a reload halfway.
    done = subprocess.run(
        [str(binary), "-t", "-f", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        process_group=0,
    )
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip()
        raise ApplyError(
            f"sshd -t refused the rendered configuration, nothing was changed: {message}"
        )


def reload(command: Sequence[str], what: str) -> bool:
    """Run `command` to make `what` (sshd, rsyslog) read its files again; False when the
    host has no such command (a --root demo, a service managed elsewhere)."""
    if not command:
        return False
    done = subprocess.run(
        list(command), capture_output=True, text=True, timeout=120, check=False, process_group=0
    )
    if done.returncode != 0:
        raise ApplyError(
            f"reloading {what} failed ({' '.join(command)}): {(done.stderr or done.stdout).strip()}"
        )
    return True
