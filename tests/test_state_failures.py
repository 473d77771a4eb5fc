"""A state database that fails after it was opened is a user error: exit 1 and a sentence.

Every state error derives from `ProvisionerError` (issue 11): the CLI says what happened,
naming the database URL with its password hidden, and exits 1. Exit 3 and the crash log are
for bugs only, and the crash log carries the versions a bug report needs.

The PostgreSQL tests run a server of their own (tests/pg.py starts it) and stop it with
`pg_ctl stop -m immediate` in the middle of a real `provisioner apply` or `status`: the shared
session server must stay up for the other tests.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from conftest import REPO, Host

from provisioner import crashlog
from provisioner.cli import main
from provisioner.errors import ProvisionerError
from provisioner.settings import load_settings
from provisioner.state import (
    StaleState,
    StateConflict,
    StateError,
    StateMissing,
    StateSchemaTooNew,
    StateStore,
    StateUnavailable,
    UnknownRegistration,
    UsernameTaken,
)
from tests.test_apply_signals import _declare, _difference, tree

if TYPE_CHECKING:
    from pg import PostgresServer

# Imported by pytest (the assertions in tests/pg.py are rewritten), not by this module.
pytest_plugins = ("pg",)

TIMEOUT = 180.0
APPLY = (sys.executable, "-m", "provisioner", "apply", "decls")


# --- the error root ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    [
        StateError,
        StaleState,
        StateConflict,
        StateMissing,
        StateSchemaTooNew,
        StateUnavailable,
        UnknownRegistration,
        UsernameTaken,
    ],
)
def test_every_state_error_is_a_user_error(kind: type[StateError]) -> None:
    error = kind("state database sqlite:////var/lib/x.db is unavailable: disk I/O error")
    assert isinstance(error, ProvisionerError) and isinstance(error, StateError)
    assert error.code == "state"
    assert str(error) == "state database sqlite:////var/lib/x.db is unavailable: disk I/O error"
    # Still told apart where it matters: a stale state is retried, a missing one is a new host.
    assert issubclass(StateMissing, StateUnavailable)
    assert issubclass(UnknownRegistration, LookupError)


def _broken_snapshot(exc: BaseException) -> Any:
    def read(self: StateStore, conn: sa.Connection) -> Any:
        raise exc

    return read


def test_a_database_failing_after_it_was_opened_exits_1_with_a_sentence(
    host: Host, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    host.write_settings(sshd_check=False, notifications=False)
    host.apply()
    monkeypatch.setenv("XDG_STATE_HOME", str(host.base / "xdg-state"))
    lost = sa.exc.OperationalError(
        "SELECT ...", {}, Exception("disk I/O error while reading the registrations")
    )
    monkeypatch.setattr(StateStore, "_read_snapshot", _broken_snapshot(lost))
    code = main(["status", "--root", str(host.root), "--settings", str(host.settings_file)])
    err = capsys.readouterr().err
    assert code == 1, err
    # Named as the engine names it: the driver is part of the URL.
    url = host.settings().state_url.replace("sqlite:", "sqlite+pysqlite:", 1)
    assert f"state database {url} is unavailable: disk I/O error" in err
    assert "check the file and its directory" in err
    assert "bug in sftp-provisioner" not in err and "Traceback" not in err
    assert not (host.base / "xdg-state").exists(), "a user error writes no crash log"


def test_a_bug_writes_a_crash_log_with_the_versions(
    host: Host, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    host.write_settings(sshd_check=False, notifications=False)
    host.apply()
    monkeypatch.setenv("XDG_STATE_HOME", str(host.base / "xdg-state"))
    monkeypatch.setattr(StateStore, "_read_snapshot", _broken_snapshot(RuntimeError("boom")))
    code = main(["status", "--root", str(host.root), "--settings", str(host.settings_file)])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "internal error: RuntimeError: boom" in err
    (log,) = (host.base / "xdg-state" / "sftp-provisioner").glob("crash-*.log")
    assert f"details are in {log}" in err
    text = log.read_text("utf-8")
    assert re.search(r"^Python 3\.\d+\.\d+ ", text, re.MULTILINE), text
    assert re.search(r"^OpenSSH: ", text, re.MULTILINE), text
    assert re.search(r"^SQLAlchemy 2\.", text, re.MULTILINE), text
    url = host.settings().state_url.replace("sqlite:", "sqlite+pysqlite:", 1)
    assert re.search(
        rf"^state database {re.escape(url)}: dialect sqlite\+pysqlite, driver sqlite 3\.",
        text,
        re.MULTILINE,
    ), text
    assert "RuntimeError: boom" in text


def test_the_versions_name_ssh_as_ssh_V_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert "OpenSSH: no ssh on PATH" in crashlog.versions()


# --- a real PostgreSQL that stops ----------------------------------------------------------


@dataclass
class Server:
    """A PostgreSQL server of this module only, stopped and started again by the tests."""

    pg: PostgresServer

    def stop(self) -> None:
        done = self.pg.stop()
        assert done.returncode == 0, done.stderr + self.pg.log_tail()

    def running(self) -> bool:
        return self.pg.running()

    def start(self) -> None:
        if self.running():
            return
        done = self.pg.start()
        assert done.returncode == 0, done.stderr + self.pg.log_tail()


@pytest.fixture(scope="module")
def own_server() -> Iterator[Server]:
    # A server of its own: stopping the session's would break the other tests.
    from pg import own_postgres

    with own_postgres() as pg:
        yield Server(pg)


@pytest.fixture
def server(own_server: Server) -> Server:
    own_server.start()
    return own_server


def _shown(server: Server, url: str) -> str:
    """The URL as messages show it."""
    return url.replace(f":{server.pg.password}@", ":***@")


@pytest.mark.postgres
def test_status_exits_1_when_postgres_stops_after_the_store_was_opened(
    host: Host,
    server: Server,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = server.pg.url(server.pg.create_database())
    host.write_settings(sshd_check=False, notifications=False, state_url=url)
    host.apply()
    monkeypatch.setenv("XDG_STATE_HOME", str(host.base / "xdg-state"))
    opened = StateStore.open

    def open_then_stop(state_url: str, *, create: bool = True) -> StateStore:
        store = opened(state_url, create=create)
        server.stop()
        return store

    monkeypatch.setattr(StateStore, "open", staticmethod(open_then_stop))
    code = main(["status", "--root", str(host.root), "--settings", str(host.settings_file)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"error: state database {_shown(server, url)} is unavailable: " in err
    assert "check that the database server is running and reachable" in err
    assert server.pg.password not in err
    assert "bug in sftp-provisioner" not in err and "Traceback" not in err
    assert not (host.base / "xdg-state").exists()


TOTAL = 150
BASELINE = 130
REMOVED = 8


@dataclass
class Site:
    base: Path
    root: Path
    decls: Path
    all_decls: Path
    settings_file: Path
    names: list[str]

    def popen(self, *extra: str) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SFTP_PROVISIONER_")}
        env["XDG_STATE_HOME"] = str(self.base / "xdg-state")
        return subprocess.Popen(
            [*APPLY, "--root", "root", "--settings", "settings.yaml", *extra],
            cwd=self.base,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def apply(self) -> subprocess.CompletedProcess[str]:
        process = self.popen()
        out, err = process.communicate(timeout=TIMEOUT)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.fixture(scope="module")
def declarations(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        generate: Any = importlib.import_module("generate")
    finally:
        sys.path.remove(str(REPO / "bench"))
    out = tmp_path_factory.mktemp("generated") / "all"
    generate.generate(TOTAL, out, jobs=1)
    return out


def _site(base: Path, all_decls: Path, url: str) -> Site:
    decls = base / "decls"
    for sub in ("keys", "certs", "ca"):
        shutil.copytree(all_decls / sub, decls / sub)
    (decls / "qualities").mkdir()
    settings_file = base / "settings.yaml"
    settings_file.write_text(
        'openssh_version: "9.2"\nhostname: test-host\nsshd_check: false\n'
        f"notifications: false\nstate_url: {url}\n",
        "utf-8",
    )
    (base / "root").mkdir()
    names = sorted(p.name for p in (all_decls / "qualities").glob("*.yaml"))
    return Site(base, base / "root", decls, all_decls, settings_file, names)


def _wait_for_stage(process: subprocess.Popen[str], lines: list[str]) -> str:
    """The first progress line of the plan: the state was read and the run is rendering."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        seen = [line for line in lines if line.startswith("provisioner: rendering channels: ")]
        if seen:
            return seen[0]
        assert process.poll() is None, f"apply ended before it rendered: {lines}"
        assert time.monotonic() < deadline, "apply never rendered"
        time.sleep(0.001)


@pytest.mark.postgres
@pytest.mark.slow
def test_apply_exits_1_when_postgres_stops_in_the_middle_of_the_run(
    tmp_path: Path, server: Server, declarations: Path
) -> None:
    url = server.pg.url(server.pg.create_database())
    site = _site(tmp_path, declarations, url)
    settings = load_settings(site.settings_file, root=site.root, environ={})
    _declare(site.all_decls, site.decls, site.names[:BASELINE])
    first = site.apply()
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr
    before = tree(settings, site.root)

    # The next run adds 20 channels and removes 8; the server stops while it renders.
    _declare(site.all_decls, site.decls, site.names[REMOVED:])
    process = site.popen("--no-cache", "--progress", "log", "--progress-every", "0")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr or []), daemon=True)
    reader.start()
    try:
        _wait_for_stage(process, lines)
        server.stop()
        stdout = process.stdout.read() if process.stdout else ""
        process.wait(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    reader.join(timeout=30)
    stderr = "".join(lines)
    now = tree(settings, site.root)

    assert process.returncode == 1, stdout[-2000:] + stderr
    (message,) = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert f"state database {_shown(server, url)} is unavailable: " in message, message
    assert message.rstrip().endswith(
        "check that the database server is running and reachable, then run again"
    )
    assert server.pg.password not in stdout + stderr
    assert "Traceback" not in stderr and "bug in sftp-provisioner" not in stderr
    assert not (site.base / "xdg-state").exists(), "a user error writes no crash log"
    work = settings.work_dir
    assert not work.exists() or not any(e.startswith("staging-") for e in os.listdir(work))

    # The host is as before the run, or as a complete run leaves it: never in between.
    server.start()
    again = site.apply()
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr
    after = tree(settings, site.root)
    assert after != before
    assert now in (before, after), (
        f"against before: {_difference(now, before)}; against after: {_difference(now, after)}"
    )
