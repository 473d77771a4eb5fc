"""A real, throw-away PostgreSQL server for tests.

Use it from a test module with::

    from pg import postgres_server, postgres_url  # noqa: F401  (pytest fixtures)

``postgres_server`` (session scope) runs initdb into a temporary directory and starts the
server on a free port of 127.0.0.1, with its unix socket in that directory too, so nothing
of the machine's own PostgreSQL is touched. ``postgres_url`` gives each test an empty
database of its own on that server.

PostgreSQL refuses to run as root; when the tests run as root the server runs as the
``postgres`` system user (or ``PG_TEST_USER``) through ``runuser``/``su``.

When the server cannot start, tests are skipped with the reason, except when ``CI=true``:
there the environment is supposed to have PostgreSQL, and a skip would hide a broken CI.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest
from conftest import require

SUPERUSER = "postgres"


def _unavailable(reason: str) -> NoReturn:
    """Skip, or fail when CI promised PostgreSQL (conftest.require)."""
    require(False, f"PostgreSQL test server unavailable: {reason}")
    raise AssertionError("not reached: require(False, ...) skips or fails")


def find_bindir() -> Path | None:
    """PG_BINDIR, else the newest /usr/lib/postgresql/*/bin, else initdb on PATH."""
    explicit = os.environ.get("PG_BINDIR")
    if explicit:
        return Path(explicit)
    candidates = []
    for path in Path("/usr/lib/postgresql").glob("*/bin"):
        try:
            candidates.append((int(path.parent.name), path))
        except ValueError:
            continue
    if candidates:
        return max(candidates)[1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    bindir: Path
    root: Path
    port: int
    password: str
    run_as: str | None
    host: str = "127.0.0.1"
    user: str = SUPERUSER
    _counter: int = field(default=0, repr=False)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres", *, password: str | None = None) -> str:
        """SQLAlchemy URL over TCP with password authentication."""
        secret = self.password if password is None else password
        return f"postgresql+psycopg://{self.user}:{secret}@{self.host}:{self.port}/{database}"

    def conninfo(self, database: str = "postgres") -> str:
        return (
            f"host={self.host} port={self.port} user={self.user} "
            f"password={self.password} dbname={database}"
        )

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool as the server's owner."""
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.run_as is not None:
            if shutil.which("runuser"):
                command = ["runuser", "-u", self.run_as, "--", *command]
            else:
                command = ["su", self.run_as, "-s", "/bin/sh", "-c", shlex.join(command)]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root
        )

    def start(self) -> subprocess.CompletedProcess[str]:
        """`pg_ctl start` on 127.0.0.1:`port`, the socket in our directory, no fsync."""
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        return self.run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.datadir),
            "-l",
            str(self.logfile),
            "-o",
            options,
            timeout=120,
        )

    def stop(self) -> subprocess.CompletedProcess[str]:
        """`pg_ctl stop -m immediate`: as a crash looks to the clients."""
        return self.run("pg_ctl", "stop", "-D", str(self.datadir), "-m", "immediate", "-w")

    def running(self) -> bool:
        return self.run("pg_ctl", "status", "-D", str(self.datadir)).returncode == 0

    def create_database(self, prefix: str = "test") -> str:
        import psycopg

        self._counter += 1
        name = f"{prefix}_{os.getpid()}_{self._counter}"
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


def _start(bindir: Path) -> PostgresServer:
    run_as: str | None = None
    if os.geteuid() == 0:
        run_as = os.environ.get("PG_TEST_USER", "postgres")
        try:
            owner = pwd.getpwnam(run_as)
        except KeyError:
            raise RuntimeError(
                f"running as root and there is no {run_as!r} user to run PostgreSQL as"
            ) from None
    # Not pytest's tmp_path: that lives under a root-only 0700 directory the server's user
    # could not enter.
    root = Path(tempfile.mkdtemp(prefix="provisioner-pg-"))
    server = PostgresServer(
        bindir=bindir, root=root, port=0, password=secrets.token_urlsafe(16), run_as=run_as
    )
    try:
        server.socket_dir.mkdir(mode=0o700)
        pwfile = root / "pwfile"
        pwfile.write_text(server.password + "\n")
        if run_as is not None:
            for path in (root, server.socket_dir, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        init = server.run(
            "initdb",
            "-D",
            str(server.datadir),
            "-U",
            SUPERUSER,
            "--pwfile",
            str(pwfile),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            timeout=180,
        )
        pwfile.unlink()
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
        last_error = ""
        # The free port may be taken between probing and binding; a few tries cover that.
        for _attempt in range(5):
            server.port = _free_port()
            started = server.start()
            if started.returncode == 0:
                return server
            last_error = f"{started.stderr.strip()}\n{server.log_tail()}"
            time.sleep(0.2)
        raise RuntimeError(f"pg_ctl start failed: {last_error}")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _stop(server: PostgresServer) -> None:
    with contextlib.suppress(Exception):
        server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


@contextlib.contextmanager
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the caller's own, removed afterwards (fails under CI=true when
    the binaries or psycopg are missing, skips elsewhere)."""
    bindir = find_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        _unavailable("no PostgreSQL server binaries (install postgresql or set PG_BINDIR)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg 3 is not installed")
    try:
        server = _start(bindir)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        _unavailable(str(exc))
    try:
        yield server
    finally:
        _stop(server)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole test session."""
    with own_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """URL of a fresh, empty database for this test."""
    return postgres_server.url(postgres_server.create_database())
