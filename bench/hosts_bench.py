"""Several SFTP hosts on one state database, all firing in the same slot.

    python bench/hosts_bench.py --state-url postgresql+psycopg://... [--hosts 3] [--slots 10]
                                [--n 60]

Each host is its own --root with its own settings (`host_name`, the same `state_url`), and
reads the same declarations (a Git checkout). Before every slot the declarations change:
qualities are added, one loses a key (a revocation) and one is removed; then every host runs
`provisioner reconcile --once` in its own subprocess, all started at the same moment, as the
:00/:30 timers of a multi-host setup do. After the slot the bench checks what the test
(tests/test_hosts_converge.py) asserts: every host applied (outcome ok or degraded), all
hosts render the same managed files (authorized_keys, extrausers, routing table, sshd drop-in;
the --root prefix aside), and no sender number or uid is held twice.

Prints a Markdown table: slots applied per host, plans per run (more than one: the host lost
the race and planned again), and the time to converge per slot (from the start of the slot
until the last host finished), median and max. Without --state-url it starts a throw-away
PostgreSQL server the way the tests do (tests/pg.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import _measure as m  # noqa: E402
from generate import generate  # noqa: E402
from hosts_support import managed_files  # noqa: E402

SSHD = Path("/usr/sbin/sshd")
# The managed files every host renders; compared by digest across hosts after each slot.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.org",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.org",
}


@dataclass(slots=True)
class HostRun:
    host: str
    returncode: int
    outcome: str
    attempts: int
    seconds: float
    errors: list[str]


@dataclass(slots=True)
class Slot:
    number: int
    runs: list[HostRun]
    converge_seconds: float
    digests: dict[str, str] = field(default_factory=dict)


class Cluster:
    """`hosts` roots under `base`, one declarations checkout, one state database."""

    def __init__(self, base: Path, state_url: str, *, hosts: int = 3, n: int = 60) -> None:
        self.base = base
        self.state_url = state_url
        self.pool = base / "pool"
        self.decls = base / "decls"
        generate(n, self.pool, seed=10)
        self.waiting = sorted((self.pool / "qualities").iterdir())
        for sub in ("keys", "certs", "ca"):
            shutil.copytree(self.pool / sub, self.decls / sub)
        (self.decls / "qualities").mkdir()
        self._git("init", "-q", "-b", "main")
        self.names = [f"host-{i}" for i in range(hosts)]
        for name in self.names:
            settings = {
                "openssh_version": "9.2",
                "hostname": "sftp.example.org",
                "host_name": name,
                "state_url": state_url,
                "sshd_check": SSHD.exists(),
                "notifications": False,
            }
            (base / f"{name}.yaml").write_text(
                "".join(f"{k}: {json.dumps(v)}\n" for k, v in settings.items()), "utf-8"
            )

    def root(self, name: str) -> Path:
        return self.base / name

    def _git(self, *args: str) -> str:
        return subprocess.run(
            ["git", *args],
            cwd=self.decls,
            env={**os.environ, **GIT_ENV},
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    # --- the declarations change between slots ----------------------------------------------

    def declared(self) -> list[Path]:
        return sorted((self.decls / "qualities").iterdir())

    def add(self, count: int) -> None:
        for _ in range(min(count, len(self.waiting))):
            src = self.waiting.pop(0)
            shutil.copy2(src, self.decls / "qualities" / src.name)

    def revoke_a_key(self) -> bool:
        """Drop one inline key of a quality that has two or more: a revocation."""
        for path in self.declared():
            lines = path.read_text("utf-8").splitlines(keepends=True)
            inline = [i for i, line in enumerate(lines) if line.startswith("        - ssh-")]
            if len(inline) >= 2:
                del lines[inline[0]]
                path.write_text("".join(lines), "utf-8")
                return True
        return False

    def remove(self, count: int) -> None:
        for path in self.declared()[:count]:
            path.unlink()

    def commit(self, message: str) -> None:
        self._git("add", "-A", ".")
        self._git("commit", "-q", "--allow-empty", "-m", message)

    # --- a slot --------------------------------------------------------------------------

    def fire(self, number: int) -> Slot:
        """Every host runs `reconcile --once`, all started at the same moment."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SFTP_PROVISIONER_")}
        started = time.monotonic()
        procs = []
        for name in self.names:
            command = [
                sys.executable,
                "-m",
                "provisioner",
                "reconcile",
                "--once",
                str(self.decls),
                "--settings",
                str(self.base / f"{name}.yaml"),
                "--root",
                str(self.root(name)),
                "--no-notify",
                "--log-format",
                "json",
            ]
            procs.append(
                subprocess.Popen(
                    command,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        runs = []
        ends = []
        for name, proc in zip(self.names, procs, strict=True):
            _out, err = proc.communicate(timeout=600)
            ends.append(time.monotonic())
            status = self.status(name)
            runs.append(
                HostRun(
                    name,
                    proc.returncode,
                    str(status.get("outcome", "none")),
                    _attempts(err),
                    ends[-1] - started,
                    list(status.get("errors", [])) or ([err.strip()[-500:]] if err else []),
                )
            )
        return Slot(number, runs, max(ends) - started, {n: self.digest(n) for n in self.names})

    def status(self, name: str) -> dict[str, Any]:
        path = self.root(name) / "var/lib/sftp-provisioner/status.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        return data

    def digest(self, name: str) -> str:
        """One digest of the managed files of a host, with its --root prefix taken out."""
        root = self.root(name)
        h = hashlib.sha256()
        for path in managed_files(root):
            if not path.exists():
                h.update(f"{path.relative_to(root)}: missing\n".encode())
                continue
            content = path.read_bytes().replace(str(root).encode(), b"<root>")
            h.update(f"{path.relative_to(root)}\n".encode())
            h.update(hashlib.sha256(content).digest())
        return h.hexdigest()

    def duplicates(self) -> list[str]:
        """Sender numbers or uids held by more than one quality."""
        from provisioner.state import StateStore

        with StateStore.open(self.state_url) as store:
            regs = list(store.snapshot().registrations.values())
        problems = []
        for what, values in (
            ("sender number", [r.sender_number for r in regs]),
            ("uid", [r.uid for r in regs if r.uid is not None]),  # None: no SFTP account
        ):
            seen: set[int] = set()
            for v in values:
                if v in seen:
                    problems.append(f"{what} {v} held twice")
                seen.add(v)
        return problems


def _attempts(stderr: str) -> int:
    """Plans the run made: one, plus one per `state-moved-retry` it logged."""
    return 1 + sum(1 for line in stderr.splitlines() if '"state-moved-retry"' in line)


def scenario(cluster: Cluster, slots: int, *, add: int = 4, remove: int = 1) -> Iterator[Slot]:
    """The slots: the first declares a batch, each next one adds, revokes a key and removes."""
    for number in range(1, slots + 1):
        if number == 1:
            cluster.add(max(add * 3, 8))
        else:
            cluster.add(add)
            cluster.revoke_a_key()
            cluster.remove(remove)
        cluster.commit(f"slot {number}")
        yield cluster.fire(number)


@contextmanager
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL server (tests/pg.py), and a database on it."""
    import pg

    bindir = pg.find_bindir()
    if bindir is None:
        raise SystemExit("no PostgreSQL server binaries: pass --state-url")
    server = pg._start(bindir)
    try:
        yield server.url(server.create_database("hosts"))
    finally:
        pg._stop(server)


def report(results: list[Slot], names: list[str], n: int) -> str:
    converge = [s.converge_seconds for s in results]
    lines = [
        f"{len(names)} hosts, one PostgreSQL state, {len(results)} slots "
        f"({n} qualities in the pool; each slot adds, revokes a key and removes) - {m.machine()}",
        "",
        "| host | slots applied | slots failed | plans per run (max) | run time median (max) |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        runs = [r for s in results for r in s.runs if r.host == name]
        applied = sum(1 for r in runs if r.outcome in ("ok", "degraded"))
        times = [r.seconds for r in runs]
        lines.append(
            f"| {name} | {applied}/{len(runs)} | {len(runs) - applied} | "
            f"{max(r.attempts for r in runs)} | {m.fmt(statistics.median(times))} "
            f"({m.fmt(max(times))}) |"
        )
    same = sum(1 for s in results if len(set(s.digests.values())) == 1)
    lines += [
        "",
        f"Time to converge (slot start to the last host done): median "
        f"{m.fmt(statistics.median(converge))}, max {m.fmt(max(converge))}; identical trees "
        f"after {same}/{len(results)} slots.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-url", help="PostgreSQL URL [default: a throw-away server]")
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--slots", type=int, default=10)
    parser.add_argument("--n", type=int, default=60, help="qualities in the pool")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="hosts-bench-"))
    try:
        with postgres() if args.state_url is None else _given(args.state_url) as url:
            cluster = Cluster(base, url, hosts=args.hosts, n=args.n)
            results = []
            for slot in scenario(cluster, args.slots):
                results.append(slot)
                failed = [r for r in slot.runs if r.outcome not in ("ok", "degraded")]
                print(
                    f"slot {slot.number}: {m.fmt(slot.converge_seconds)}, plans "
                    f"{[r.attempts for r in slot.runs]}"
                    + (f", FAILED {[(r.host, r.errors[:1]) for r in failed]}" if failed else ""),
                    file=sys.stderr,
                )
            duplicates = cluster.duplicates()
            print(report(results, cluster.names, args.n), end="")
            if duplicates:
                print(f"duplicates: {duplicates}")
            return 1 if duplicates else 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    raise SystemExit(main())
