"""A harness around the REAL OpenSSH server, for tests that must prove sshd behaviour.

Everything here changes real system state and therefore needs root; every change is undone
on exit, also when the test fails:

* :func:`running_sshd` starts ``/usr/sbin/sshd -D -e -f <main config>`` on 127.0.0.1 with
  its own host keys; the main config ``Include``s the drop-in under test FIRST (as Debian's
  sshd_config does) and may append hostile settings after it (``main_extra``).
* :func:`nsswitch_extrausers` / :func:`extrausers` enable libnss-extrausers and install
  passwd/group/shadow files in /var/lib/extrausers, restoring the originals byte for byte.
* :func:`sftp_test_area` creates a root-owned 0755 directory under /srv (sshd refuses chroot
  paths with group/world-writable or non-root components, so not /tmp).
* client helpers: :func:`sftp_batch`, :func:`ssh_command` (OpenSSH) and
  :func:`paramiko_sftp` / :func:`paramiko_transport` (paramiko, including an emulation of
  legacy clients that sign with ``ssh-rsa``/SHA-1, which paramiko >= 4 no longer does).

Use it from a test module with ``pytest_plugins = ("sshd_harness",)`` to get the fixtures
(``sshd_environment``, ``openssh_version_installed``, ``sftp_area``, ``sshd_factory``), or
call the context managers directly. Tests are skipped when the environment is missing
(not root, no sshd, no libnss-extrausers) - except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import paramiko
import pytest
from conftest import require
from cryptography.hazmat.primitives import hashes

SSHD = Path(os.environ.get("SFTP_PROVISIONER_TEST_SSHD", "/usr/sbin/sshd"))
NSSWITCH = Path("/etc/nsswitch.conf")
EXTRAUSERS_DIR = Path("/var/lib/extrausers")
EXTRAUSERS_FILES: dict[str, tuple[int, str]] = {
    # name: (mode, group owner)
    "passwd": (0o644, "root"),
    "group": (0o644, "root"),
    "shadow": (0o640, "shadow"),
}
TEST_AREA_PARENT = Path("/srv")
TEST_AREA_PREFIX = "sftp-provisioner-test-"
# Serialises every change of system state (nsswitch.conf, /var/lib/extrausers) between test
# processes that run at the same time, and keeps a crash backup next to it.
STATE_DIR = Path("/run/sftp-provisioner-test")
PRIVSEP_DIR = Path("/run/sshd")
DEBIAN_SFTP_SUBSYSTEM = "/usr/lib/openssh/sftp-server"

# A paramiko client that behaves like the legacy payroll clients: it can only sign with
# ssh-rsa (RSA + SHA-1). Pass together with ignore_server_sig_algs=True, see paramiko_sftp.
LEGACY_SSH_RSA_ONLY: dict[str, list[str]] = {"pubkeys": ["rsa-sha2-256", "rsa-sha2-512"]}
# ... and one that knows neither AES-GCM/ChaCha20 nor encrypt-then-MAC (old Java stacks).
LEGACY_NO_ETM: dict[str, list[str]] = {
    "ciphers": ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"],
    "macs": ["hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com"],
}

_SSH_CLIENT_OPTIONS: tuple[str, ...] = (
    "-F",
    "/dev/null",  # neither ~/.ssh/config nor /etc/ssh/ssh_config
    *itertools.chain.from_iterable(
        ("-o", option)
        for option in (
            "BatchMode=yes",
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "GlobalKnownHostsFile=/dev/null",
            "IdentitiesOnly=yes",
            "IdentityAgent=none",
            "LogLevel=ERROR",
            "ConnectTimeout=10",
        )
    ),
)


# --------------------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------------------


def missing_requirements() -> list[str]:
    """What keeps the real-sshd tests from running here (empty list: all present)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root privileges")
    if not (SSHD.is_file() and os.access(SSHD, os.X_OK)):
        missing.append(f"{SSHD} (apt package openssh-server)")
    missing.extend(
        f"{tool} (apt package openssh-client)"
        for tool in ("ssh", "sftp", "ssh-keygen")
        if shutil.which(tool) is None
    )
    if shutil.which("getent") is None:
        missing.append("getent")
    if not any(
        Path(d, "libnss_extrausers.so.2").exists()
        for d in ("/usr/lib", "/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu")
    ):
        missing.append("libnss_extrausers.so.2 (apt package libnss-extrausers)")
    return missing


def require_sshd_environment() -> Path:
    """Skip the test when the environment lacks something; FAIL instead under CI=true."""
    missing = missing_requirements()
    if missing:
        require(False, "real-sshd test needs: " + ", ".join(missing))
    # sshd refuses to start (even -t) without its privilege separation directory; on a
    # systemd host RuntimeDirectory= creates it, in containers nobody does.
    if not PRIVSEP_DIR.is_dir():
        PRIVSEP_DIR.mkdir(mode=0o755)
    return SSHD


def openssh_version(sshd: Path = SSHD) -> tuple[int, int]:
    """(major, minor) of the installed sshd, e.g. (9, 2).

    OpenSSH < 9.8 has no ``-V``; the usage message it prints instead starts with the version.
    """
    out = subprocess.run([str(sshd), "-V"], capture_output=True, text=True, check=False, timeout=10)
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", out.stdout + out.stderr)
    if m is None:
        raise RuntimeError(f"cannot read the OpenSSH version from {sshd}: {out.stderr!r}")
    return int(m.group(1)), int(m.group(2))


def ssh_query(what: str) -> set[str]:
    """``ssh -Q <what>``: algorithm names of the installed OpenSSH build.

    sshd has no ``-Q``; client and server come from the same source package and share
    the list, so this is the way to check a name before ``sshd -t`` does.
    """
    out = subprocess.run(["ssh", "-Q", what], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def refused_local_forward(argv: Sequence[str], host: str, lport: int) -> str:
    """Run `ssh -N -L host:lport:...` (`argv`), connect to its local end once, and return
    what the client wrote to stderr. The server must refuse the channel: the connection is
    closed at once, without the target's banner."""
    with subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            deadline = time.monotonic() + 15
            while not port_accepts(host, lport):
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
            with socket.create_connection((host, lport), timeout=10) as conn:
                assert conn.recv(100) == b""  # no SSH banner of the target: closed at once
        finally:
            proc.terminate()
            try:
                _, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                # The OpenSSH client sometimes lets a SIGTERM that arrives while it handles
                # a refused channel go by and keeps running: a CI run then hung in Popen's
                # wait. Kill it; what it wrote so far is still read.
                proc.kill()
                _, err = proc.communicate(timeout=10)
    return err


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path
    line: str  # canonical "algo base64 comment"
    fingerprint: str  # "SHA256:..."
    key_type: str  # "ssh-ed25519", "ssh-rsa", ...


def generate_keypair(
    path: Path, key_type: str = "ed25519", *, bits: int | None = None, comment: str = ""
) -> KeyPair:
    """``ssh-keygen`` a new unencrypted key pair at ``path`` / ``path.pub``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", comment, "-f", str(path)]
    if bits is not None:
        cmd[4:4] = ["-b", str(bits)]
    subprocess.run(cmd, check=True, capture_output=True)
    return load_keypair(path)


def load_keypair(path: Path) -> KeyPair:
    pub = Path(f"{path}.pub")
    line = pub.read_text().strip()
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)],
        check=True,
        capture_output=True,
        text=True,
    )
    return KeyPair(
        private=path,
        public=pub,
        line=line,
        fingerprint=out.stdout.split()[1],
        key_type=line.split()[0],
    )


def write_file(path: Path, content: str | bytes, mode: int, uid: int = 0, gid: int = 0) -> Path:
    """Create/replace ``path`` atomically with exact mode and ownership."""
    data = content.encode() if isinstance(content, str) else content
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chown(tmp, uid, gid)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def make_dir(path: Path, mode: int, uid: int = 0, gid: int = 0) -> Path:
    """mkdir with exact mode (no umask) and ownership; existing dirs are adjusted."""
    path.mkdir(exist_ok=True)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


def assert_root_owned_path(path: Path) -> None:
    """The check sshd applies to a ChrootDirectory: every component from / down to ``path``
    must be owned by root and not writable by group or others."""
    p = path.resolve()
    for component in [p, *p.parents]:
        st = component.stat()
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise AssertionError(
                f"{component} is uid {st.st_uid} mode {stat.filemode(st.st_mode)}: sshd would "
                "refuse a chroot below it (needs root-owned, not group/world-writable)"
            )


# --------------------------------------------------------------------------------------
# system state: lock, nsswitch.conf, /var/lib/extrausers, test area
# --------------------------------------------------------------------------------------

_lock_guard = threading.Lock()
_lock_depth = 0
_lock_file: IO[bytes] | None = None


@contextlib.contextmanager
def system_state_lock() -> Iterator[None]:
    """Inter-process lock (flock on /run/sftp-provisioner-test/lock), re-entrant in-process."""
    global _lock_depth, _lock_file
    with _lock_guard:
        if _lock_depth == 0:
            STATE_DIR.mkdir(mode=0o700, exist_ok=True)
            f = open(STATE_DIR / "lock", "ab")  # noqa: SIM115 - closed on last release
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                _recover_stale_backups()
            except BaseException:
                f.close()  # releases the flock
                raise
            _lock_file = f
        _lock_depth += 1
    try:
        yield
    finally:
        with _lock_guard:
            _lock_depth -= 1
            if _lock_depth == 0 and _lock_file is not None:
                fcntl.flock(_lock_file.fileno(), fcntl.LOCK_UN)
                _lock_file.close()
                _lock_file = None


@dataclass(frozen=True)
class _Saved:
    path: Path
    data: bytes | None  # None: the file did not exist
    mode: int = 0
    uid: int = 0
    gid: int = 0

    @classmethod
    def take(cls, path: Path) -> _Saved:
        try:
            st = path.stat()
        except FileNotFoundError:
            return cls(path, None)
        return cls(path, path.read_bytes(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)

    def restore(self) -> None:
        if self.data is None:
            self.path.unlink(missing_ok=True)
        else:
            write_file(self.path, self.data, self.mode, self.uid, self.gid)


_active_backups: set[str] = set()


def _recover_stale_backups() -> None:
    """Restore what a killed test run left changed (called when the lock is first taken)."""
    for backup in sorted(STATE_DIR.glob("backup-*")):
        if backup.name.removeprefix("backup-") in _active_backups:
            continue
        manifest = backup / "manifest"
        if manifest.exists():
            for i, entry in enumerate(manifest.read_text().splitlines()):
                original, uid, gid, mode = entry.split("\t")
                if (backup / str(i)).exists():
                    data = (backup / str(i)).read_bytes()
                    write_file(Path(original), data, int(mode, 8), int(uid), int(gid))
                else:
                    Path(original).unlink(missing_ok=True)
        shutil.rmtree(backup)


@contextlib.contextmanager
def _preserved(paths: Sequence[Path], tag: str) -> Iterator[None]:
    """Save ``paths`` (also to a crash backup in STATE_DIR) and restore them afterwards.

    A backup left behind by a killed test run is restored the next time the lock is taken.
    Nested use (same tag already active in this process) only saves and restores in memory.
    """
    with system_state_lock():
        nested = tag in _active_backups
        backup = STATE_DIR / f"backup-{tag}"
        saved = [_Saved.take(p) for p in paths]
        if not nested:
            backup.mkdir(mode=0o700)
            for i, s in enumerate(saved):
                if s.data is not None:  # no copy: the file did not exist
                    write_file(backup / str(i), s.data, 0o600)
            (backup / "manifest").write_text(
                "".join(f"{s.path}\t{s.uid}\t{s.gid}\t{s.mode:o}\n" for s in saved)
            )
            _active_backups.add(tag)
        try:
            yield
        finally:
            for s in saved:
                s.restore()
            if not nested:
                _active_backups.discard(tag)
                shutil.rmtree(backup, ignore_errors=True)


def _with_extrausers(nsswitch: str, databases: Sequence[str]) -> str:
    out = []
    for line in nsswitch.splitlines(keepends=True):
        m = re.match(r"^(\s*)([a-z]+)(\s*:)([^\n#]*)(.*)$", line, re.DOTALL)
        if m and m.group(2) in databases and "extrausers" not in m.group(4).split():
            body = m.group(4).rstrip()
            tail = m.group(4)[len(body) :]
            line = f"{m.group(1)}{m.group(2)}{m.group(3)}{body} extrausers{tail}{m.group(5)}"
        out.append(line)
    text = "".join(out)
    for db in databases:  # database missing entirely: add it
        if not re.search(rf"^\s*{db}\s*:", text, re.MULTILINE):
            text += ("" if text.endswith("\n") or not text else "\n") + f"{db}: files extrausers\n"
    return text


@contextlib.contextmanager
def nsswitch_extrausers(
    databases: Sequence[str] = ("passwd", "group", "shadow"),
) -> Iterator[Path]:
    """Append ``extrausers`` to those lines of /etc/nsswitch.conf; restore it byte for byte.

    glibc >= 2.33 re-reads nsswitch.conf when it changes and there is no nscd here, so
    ``getent`` and every new sshd connection (sshd re-execs per connection) see it at once.
    """
    with _preserved([NSSWITCH], "nsswitch"):
        original = NSSWITCH.read_text()
        st = NSSWITCH.stat()
        write_file(
            NSSWITCH,
            _with_extrausers(original, databases),
            stat.S_IMODE(st.st_mode),
            st.st_uid,
            st.st_gid,
        )
        yield NSSWITCH


def getent(database: str, key: str) -> str | None:
    """``getent <database> <key>``: the entry as NSS sees it, or None."""
    out = subprocess.run(["getent", database, key], capture_output=True, text=True, check=False)
    return out.stdout.strip() if out.returncode == 0 else None


@contextlib.contextmanager
def extrausers(
    passwd: str, group: str, shadow: str, *, check_users: Sequence[str] = ()
) -> Iterator[Path]:
    """Install passwd/group/shadow into /var/lib/extrausers (modes 0644/0644/0640 root:shadow)
    with nsswitch enabled; afterwards restore (or remove) whatever was there before.

    ``check_users`` must then resolve through ``getent passwd`` and ``getent shadow``.
    """
    paths = [EXTRAUSERS_DIR / name for name in EXTRAUSERS_FILES]
    with system_state_lock(), nsswitch_extrausers(), _preserved(paths, "extrausers"):
        EXTRAUSERS_DIR.mkdir(mode=0o755, exist_ok=True)
        shadow_gid = int((getent("group", "shadow") or "shadow:x:0:").split(":")[2])
        for name, content in (("passwd", passwd), ("group", group), ("shadow", shadow)):
            mode, owner_group = EXTRAUSERS_FILES[name]
            gid = shadow_gid if owner_group == "shadow" else 0
            write_file(EXTRAUSERS_DIR / name, content, mode, 0, gid)
        for user in check_users:
            if getent("passwd", user) is None or getent("shadow", user) is None:
                raise AssertionError(
                    f"getent does not see {user!r} through libnss-extrausers "
                    f"(nsswitch.conf: {NSSWITCH.read_text()!r})"
                )
        yield EXTRAUSERS_DIR


@contextlib.contextmanager
def sftp_test_area(
    parent: Path = TEST_AREA_PARENT, prefix: str = TEST_AREA_PREFIX
) -> Iterator[Path]:
    """A fresh ``/srv/sftp-provisioner-test-<random>``, root 0755, removed afterwards.

    Not under /tmp: sshd refuses a ChrootDirectory whose path has a component that is not
    root-owned or is group/world-writable (/tmp is 1777).
    """
    parent.mkdir(mode=0o755, exist_ok=True)
    area = parent / f"{prefix}{secrets.token_hex(4)}"
    area.mkdir(mode=0o755)
    try:
        os.chown(area, 0, 0)
        os.chmod(area, 0o755)
        assert_root_owned_path(area)
        yield area
    finally:
        shutil.rmtree(area, ignore_errors=True)


class SyslogCapture:
    """Datagrams received on a fake /dev/log (see :func:`syslog_socket`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[str] = []
        self._lock = threading.Lock()

    def _add(self, message: str) -> None:
        with self._lock:
            self.messages.append(message)

    def text(self) -> str:
        with self._lock:
            return "\n".join(self.messages)

    def wait_for(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.text())
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no syslog message {pattern!r} at {self.path}:\n{self.text()}"
                )
            time.sleep(0.05)


@contextlib.contextmanager
def syslog_socket(path: Path) -> Iterator[SyslogCapture]:
    """Listen on ``path`` as if it were /dev/log (AF_UNIX datagrams, mode 0666).

    internal-sftp logs through syslog(3) AFTER the chroot, i.e. to ``<chroot>/dev/log``;
    in production rsyslog/journald must provide that socket, here the test collects it.
    """
    capture = SyslogCapture(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path.unlink(missing_ok=True)
    sock.bind(str(path))
    os.chmod(path, 0o666)  # the session runs as the technical user
    sock.settimeout(0.1)
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            capture._add(data.decode(errors="replace"))

    thread = threading.Thread(target=pump, name=f"syslog:{path}", daemon=True)
    thread.start()
    try:
        yield capture
    finally:
        stop.set()
        thread.join(5)
        sock.close()
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------
# sshd
# --------------------------------------------------------------------------------------


def ensure_host_keys(directory: Path) -> list[Path]:
    """Fresh ed25519 + RSA 3072 host keys in ``directory`` (kept if already there)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys = []
    for key_type, bits in (("ed25519", None), ("rsa", 3072)):
        path = directory / f"ssh_host_{key_type}_key"
        if not path.exists():
            generate_keypair(path, key_type, bits=bits, comment=f"test-host-{key_type}")
        keys.append(path)
    return keys


def write_main_config(
    workdir: Path,
    dropin: Path,
    *,
    port: int,
    host: str = "127.0.0.1",
    use_pam: bool = False,
    sftp_subsystem: str | None = DEBIAN_SFTP_SUBSYSTEM,
    main_extra: str = "",
) -> Path:
    """The main sshd_config of the harness, shaped like Debian's: Include of the drop-in
    FIRST, then what the test environment needs, a ``Subsystem sftp`` line (None: none -
    then sftp requests fail even with ForceCommand internal-sftp), then ``main_extra`` (e.g.
    hostile settings that the drop-in must win over). Test scaffolding only - the project's
    own sshd syntax lives in templates/."""
    host_keys = ensure_host_keys(workdir / "hostkeys")
    lines = [
        "# main sshd_config of the sftp-provisioner test harness",
        f"Include {dropin}",
        f"ListenAddress {host}:{port}",
        *(f"HostKey {k}" for k in host_keys),
        f"PidFile {workdir / 'sshd.pid'}",
        f"UsePAM {'yes' if use_pam else 'no'}",
        "StrictModes yes",
        "PermitRootLogin no",
        "AuthorizedKeysFile none",
        f"Subsystem sftp {sftp_subsystem}" if sftp_subsystem else "",
        main_extra,
    ]
    return write_file(workdir / "sshd_config", "\n".join(lines).rstrip("\n") + "\n", 0o644)


def sshd_check(config: Path, *, sshd: Path = SSHD) -> subprocess.CompletedProcess[str]:
    """``sshd -t -f config`` (returncode 0: config valid)."""
    return subprocess.run(
        [str(sshd), "-t", "-f", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def sshd_effective(
    config: Path,
    user: str,
    *,
    host: str = "localhost",
    addr: str = "127.0.0.1",
    sshd: Path = SSHD,
) -> dict[str, str]:
    """``sshd -T -C user=..,host=..,addr=..``: effective settings for that connection.

    Keys are lower-case keywords; a keyword printed several times (hostkey, listenaddress…)
    has its values joined with newlines. The user must exist (Match Group looks it up).
    """
    out = subprocess.run(
        [str(sshd), "-T", "-f", str(config), "-C", f"user={user},host={host},addr={addr}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if out.returncode != 0:
        raise AssertionError(f"sshd -T failed ({out.returncode}): {out.stderr}")
    result: dict[str, str] = {}
    for line in out.stdout.splitlines():
        key, _, value = line.partition(" ")
        result[key] = f"{result[key]}\n{value}" if key in result else value
    return result


class SshdServer:
    """A running ``sshd -D -e``; its log (stderr, incl. internal-sftp) goes to ``log_path``."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        workdir: Path,
        config_path: Path,
        dropin: Path,
        sshd: Path = SSHD,
    ) -> None:
        self.host = host
        self.port = port
        self.workdir = workdir
        self.config_path = config_path
        self.dropin = dropin
        self.sshd = sshd
        self.log_path = workdir / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- log ------------------------------------------------------------------------------
    def log(self, since: int = 0) -> str:
        """The log text from byte offset ``since`` (see :meth:`mark`)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def mark(self) -> int:
        """Current end of the log, to look only at what comes after."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def wait_for_log(self, pattern: str, *, since: int = 0, timeout: float = 10.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.log(since))
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"sshd log has no {pattern!r} after {timeout}s:\n{self.log(since)}"
                )
            time.sleep(0.05)

    # -- life cycle -------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        assert self.proc is not None, "sshd not started"
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        since = self.mark()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.sshd), "-D", "-e", "-f", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self._wait_listening(since, timeout)

    def _wait_listening(self, since: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise RuntimeError(
                    f"sshd exited ({self.proc and self.proc.returncode}):\n{self.log(since)}"
                )
            if "Server listening on" in self.log(since) and port_accepts(self.host, self.port):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd not listening after {timeout}s:\n{self.log(since)}")
            time.sleep(0.05)

    def check_config(self) -> None:
        out = sshd_check(self.config_path, sshd=self.sshd)
        if out.returncode != 0:
            raise AssertionError(f"sshd -t refuses {self.config_path}: {out.stderr}")

    def reload(self, timeout: float = 15.0) -> None:
        """Validate (``sshd -t``, as systemd's ExecReload does), then SIGHUP and wait until the
        re-executed sshd listens again. A SIGHUP with a broken config would kill sshd."""
        self.check_config()
        since = self.mark()
        os.kill(self.pid, signal.SIGHUP)
        self.wait_for_log(r"Received SIGHUP", since=since, timeout=timeout)
        self._wait_listening(since, timeout)

    def _connection_children(self) -> list[int]:
        """pids of the per-connection sshd processes forked by this server."""
        children = []
        for stat_file in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat_file.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.pid:
                children.append(int(stat_file.parent.name))
        return children

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        children = self._connection_children()
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
        for pid in children:  # sessions that outlived their client
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


@contextlib.contextmanager
def running_sshd(
    dropin: Path,
    *,
    workdir: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    use_pam: bool = False,
    sftp_subsystem: str | None = DEBIAN_SFTP_SUBSYSTEM,
    main_extra: str = "",
    sshd: Path = SSHD,
) -> Iterator[SshdServer]:
    """Start the real sshd with a main config that includes ``dropin``; stop it afterwards.

    ``workdir`` (created 0700) holds host keys, sshd_config, pid file and sshd.log. With
    ``port=None`` a free port is chosen (and re-chosen if another process grabbed it).
    """
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        chosen = port if port is not None else free_port(host)
        config = write_main_config(
            workdir,
            dropin,
            port=chosen,
            host=host,
            use_pam=use_pam,
            sftp_subsystem=sftp_subsystem,
            main_extra=main_extra,
        )
        server = SshdServer(
            host=host, port=chosen, workdir=workdir, config_path=config, dropin=dropin, sshd=sshd
        )
        server.check_config()
        try:
            server.start()
        except RuntimeError as e:
            server.stop()
            if "Address already in use" in str(e) and attempt + 1 < attempts:
                continue
            raise
        break
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------------------
# clients
# --------------------------------------------------------------------------------------


def sftp_batch(
    user: str,
    key_path: Path,
    port: int,
    commands: Sequence[str],
    *,
    host: str = "127.0.0.1",
    options: Sequence[str] = (),
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """OpenSSH ``sftp -b -`` with the given batch commands (non-zero exit: a command failed
    or the login was refused; a command prefixed with '-' may fail). ``options`` come
    first, so they win over the harness defaults (ssh keeps the first value)."""
    cmd = [
        "sftp",
        "-b",
        "-",
        *options,
        *_SSH_CLIENT_OPTIONS,
        "-i",
        str(key_path),
        "-P",
        str(port),
        f"{user}@{host}",
    ]
    return subprocess.run(
        cmd,
        input="".join(f"{c}\n" for c in commands),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def ssh_argv(
    user: str,
    key_path: Path,
    port: int,
    options: Sequence[str] = (),
    *,
    host: str = "127.0.0.1",
) -> list[str]:
    """argv of a non-interactive OpenSSH ``ssh`` (for Popen); ``options`` win over defaults."""
    return [
        "ssh",
        *options,
        *_SSH_CLIENT_OPTIONS,
        "-i",
        str(key_path),
        "-p",
        str(port),
        f"{user}@{host}",
    ]


def ssh_command(
    user: str,
    key_path: Path,
    port: int,
    command: str | None = None,
    *,
    tty: bool = False,
    host: str = "127.0.0.1",
    options: Sequence[str] = (),
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """OpenSSH ``ssh`` trying a command (or a shell when ``command`` is None); stdin is empty,
    ``tty=True`` insists on a terminal (``-tt``)."""
    cmd = ssh_argv(user, key_path, port, [*options, "-tt" if tty else "-T"], host=host)
    if command is not None:
        cmd += ["--", command]
    return subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


class _LegacyCapableRSAKey(paramiko.RSAKey):
    """paramiko >= 4 dropped ssh-rsa (SHA-1) signatures; legacy payroll clients still send
    them. This key can produce them again, for tests of the server's policy only."""

    HASHES = {  # type: ignore[misc]  # noqa: RUF012
        **paramiko.RSAKey.HASHES,
        "ssh-rsa": hashes.SHA1,
    }


class _HarnessTransport(paramiko.Transport):
    # "ssh-rsa" last: modern negotiation still picks rsa-sha2-*; only a client that disables
    # those (LEGACY_SSH_RSA_ONLY) falls back to it.
    _preferred_pubkeys = (
        *paramiko.Transport._preferred_pubkeys,  # type: ignore[attr-defined]
        "ssh-rsa",
    )
    ignore_server_sig_algs = False

    def _parse_ext_info(self, msg: paramiko.Message) -> None:
        super()._parse_ext_info(msg)  # type: ignore[misc]
        if self.ignore_server_sig_algs:
            # Clients older than RFC 8308 never read server-sig-algs; without this paramiko
            # would give up locally instead of letting the server judge the signature.
            self.server_extensions.pop("server-sig-algs", None)  # type: ignore[attr-defined]


def load_private_key(key: Path | str | paramiko.PKey) -> paramiko.PKey:
    if isinstance(key, paramiko.RSAKey) and not isinstance(key, _LegacyCapableRSAKey):
        return _LegacyCapableRSAKey(key=key.key)
    if isinstance(key, paramiko.PKey):
        return key
    pkey = paramiko.PKey.from_path(Path(key))
    if isinstance(pkey, paramiko.RSAKey):
        return _LegacyCapableRSAKey(key=pkey.key)
    return pkey


def paramiko_transport(
    user: str,
    key: Path | str | paramiko.PKey,
    port: int,
    disabled_algorithms: dict[str, list[str]] | None = None,
    *,
    host: str = "127.0.0.1",
    timeout: float = 15.0,
    ignore_server_sig_algs: bool = False,
) -> paramiko.Transport:
    """An authenticated paramiko Transport (raises paramiko.AuthenticationException or
    paramiko.SSHException on refusal). The host key is not verified (test server)."""
    pkey = load_private_key(key)
    sock = socket.create_connection((host, port), timeout=timeout)
    transport = _HarnessTransport(sock, disabled_algorithms=disabled_algorithms)
    transport.ignore_server_sig_algs = ignore_server_sig_algs
    try:
        transport.start_client(timeout=timeout)
        transport.auth_publickey(user, pkey)
        if not transport.is_authenticated():
            raise paramiko.AuthenticationException(f"{user}: not authenticated")
    except BaseException:
        transport.close()
        raise
    return transport


def paramiko_sftp(
    user: str,
    key: Path | str | paramiko.PKey,
    port: int,
    disabled_algorithms: dict[str, list[str]] | None = None,
    *,
    host: str = "127.0.0.1",
    timeout: float = 15.0,
    ignore_server_sig_algs: bool = False,
) -> tuple[paramiko.SFTPClient, paramiko.Transport]:
    """A connected paramiko SFTPClient and its Transport (close the transport when done).

    To emulate a legacy client that signs only with ssh-rsa (SHA-1):
    ``paramiko_sftp(user, rsa_key, port, LEGACY_SSH_RSA_ONLY, ignore_server_sig_algs=True)``.
    """
    transport = paramiko_transport(
        user,
        key,
        port,
        disabled_algorithms,
        host=host,
        timeout=timeout,
        ignore_server_sig_algs=ignore_server_sig_algs,
    )
    try:
        sftp = paramiko.SFTPClient.from_transport(transport)
        if sftp is None:
            raise paramiko.SSHException("no SFTP channel")
    except BaseException:
        transport.close()
        raise
    return sftp, transport


# --------------------------------------------------------------------------------------
# pytest fixtures (pytest_plugins = ("sshd_harness",))
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sshd_environment() -> Path:
    """Path of sshd; skips (fails under CI=true) when root/sshd/extrausers are missing."""
    return require_sshd_environment()


@pytest.fixture(scope="session")
def openssh_version_installed(sshd_environment: Path) -> tuple[int, int]:
    return openssh_version(sshd_environment)


@pytest.fixture(scope="module")
def sftp_area(sshd_environment: Path) -> Iterator[Path]:
    """A root-owned /srv/sftp-provisioner-test-<random> for the module, removed afterwards."""
    with sftp_test_area() as area:
        yield area


SshdFactory = Callable[..., SshdServer]


@pytest.fixture
def sshd_factory(sshd_environment: Path, tmp_path: Path) -> Iterator[SshdFactory]:
    """``start(dropin, **running_sshd_kwargs) -> SshdServer``; all stopped at teardown.

    The sshd workdir defaults to a fresh directory under pytest's tmp_path (fine for host
    keys and the log; chroots and keys_dir must be under :func:`sftp_area`)."""
    with contextlib.ExitStack() as stack:

        def start(dropin: Path, **kwargs: Any) -> SshdServer:
            kwargs.setdefault("workdir", tmp_path / f"sshd-{secrets.token_hex(3)}")
            return stack.enter_context(running_sshd(dropin, **kwargs))

        yield start
