"""Helpers of the operations tests (scheduled reconcile, heartbeat, notifications, watch).

Real things only: a real Git with real SSH commit signatures, real files, real processes. The
clock is the one thing injected, so that "at :00 and :30" is tested without waiting for it.
"""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from provisioner.runner import RunOptions, RunReport, run_once
from provisioner.settings import HostSettings

REPO = Path(__file__).resolve().parents[1]


class FakeClock:
    """A clock that jumps instead of sleeping; `waited` lists every wait target."""

    def __init__(self, start: datetime) -> None:
        self.t = start
        self.waited: list[datetime] = []

    def now(self) -> datetime:
        return self.t

    def advance(self, delta: timedelta) -> None:
        self.t += delta

    def wait_until(self, when: datetime, stop: threading.Event) -> bool:
        if stop.is_set():
            return False
        self.waited.append(when)
        self.t = max(self.t, when.astimezone(self.t.tzinfo))
        return True


def run(
    settings: HostSettings,
    paths: list[Path] | tuple[Path, ...],
    cwd: Path,
    *,
    now: datetime | None = None,
    environ: Mapping[str, str] | None = None,
    **options: Any,
) -> RunReport:
    return run_once(
        settings,
        RunOptions(paths=tuple(paths), cwd=cwd, **options),
        now=now,
        environ=environ if environ is not None else {},
    )


# --- git -----------------------------------------------------------------------------------

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Dieter Expedito",
    "GIT_AUTHOR_EMAIL": "dieter.expedito@onderneming.example",
    "GIT_COMMITTER_NAME": "Dieter Expedito",
    "GIT_COMMITTER_EMAIL": "dieter.expedito@onderneming.example",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(cwd), *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **GIT_ENV},
        timeout=60,
    )
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


class SigningKey:
    """An SSH key made for the test, configured for `git commit -S` and verification."""

    def __init__(self, directory: Path, name: str = "signer") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.private = directory / name
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(self.private)],
            check=True,
            capture_output=True,
        )
        self.public = directory / f"{name}.pub"
        self.allowed_signers = directory / "allowed_signers"
        line = self.public.read_text().split()
        with self.allowed_signers.open("a") as fh:
            fh.write(f'{GIT_ENV["GIT_COMMITTER_EMAIL"]} namespaces="git" {line[0]} {line[1]}\n')

    def sign_in(self, repo: Path) -> None:
        git(repo, "config", "gpg.format", "ssh")
        git(repo, "config", "user.signingkey", str(self.private))

    def trust_in(self, repo: Path) -> None:
        git(repo, "config", "gpg.format", "ssh")
        git(repo, "config", "gpg.ssh.allowedSignersFile", str(self.allowed_signers))


def declarations_repo(base: Path, decls: Path) -> tuple[Path, Path]:
    """`decls` becomes the author's clone of a bare upstream; returns (upstream, checkout).

    The checkout is the host's clone that `reconcile --pull` updates.
    """
    upstream = base / "upstream.git"
    git(base, "init", "-q", "--bare", "-b", "main", str(upstream))
    git(decls, "init", "-q", "-b", "main")
    git(decls, "remote", "add", "origin", str(upstream))
    return upstream, base / "checkout"


def commit_all(repo: Path, message: str, *, sign: bool) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", *(["-S"] if sign else []), "-m", message)
    git(repo, "push", "-q", "origin", "HEAD:main")
    return git(repo, "rev-parse", "HEAD")


def clone(upstream: Path, checkout: Path) -> None:
    git(checkout.parent, "clone", "-q", str(upstream), str(checkout))


# --- mail ----------------------------------------------------------------------------------


def outbox(settings: HostSettings) -> list[Path]:
    directory = settings.outbox_dir
    return sorted(directory.glob("*.eml")) if directory.is_dir() else []


def read_message(path_or_bytes: Path | bytes) -> EmailMessage:
    raw = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def body(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


# --- processes -----------------------------------------------------------------------------


def provisioner_process(
    cwd: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SFTP_PROVISIONER_")}
    environ["PYTHONUNBUFFERED"] = "1"
    environ.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "provisioner", *args],
        cwd=cwd,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )


class Lines:
    """Collects a process's output lines on a thread; `wait_for` returns the first match."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, text: str, *, after: int = 0, timeout: float = 30.0) -> int:
        """Index of the first line at or after `after` containing `text`."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: any(text in line for line in self.lines[after:]), timeout=timeout
            )
            assert ok, f"no line with {text!r} within {timeout}s; output:\n" + "\n".join(self.lines)
            return next(i for i, line in enumerate(self.lines) if i >= after and text in line)

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)
