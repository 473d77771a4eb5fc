"""Shared helpers of the reconciler tests: a temporary host root with a copy of the examples.

`require_root()` skips a test when not running as root, and FAILS it under `CI=true`: CI runs
as root on purpose, and a silent skip there would hide that owners were never checked.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from provisioner.apply import ApplyResult, apply
from provisioner.plan import Plan
from provisioner.quality_id import QualityId
from provisioner.reconcile import Reconciliation, compute
from provisioner.settings import HostSettings, load_settings
from provisioner.state import StateSnapshot, StateStore

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
# A fixed clock: inside the validity of the example certificates.
NOW = datetime(2026, 11, 29, 20, 30, tzinfo=UTC)
SSHD = Path("/usr/sbin/sshd")

# The example qualities (enterprise number -> technical user).
EN_SECSOC, USER_SECSOC = "0200065765", "secsocexemple01"
EN_ONDERNEMING, USER_ONDERNEMING = "0403170701", "EXPDEMOONDERNEMING"
# A third quality some tests add (valid enterprise number, its own user and key).
EN_THIRD, USER_THIRD = "0202239951", "thirdquality01"
# Their identities (enterprise number and quality type: see provisioner.quality_id).
Q_SECSOC = QualityId(EN_SECSOC, "employer_nsso")
Q_ONDERNEMING = QualityId(EN_ONDERNEMING, "employer_nsso")
Q_THIRD = QualityId(EN_THIRD, "employer_nsso")


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require(condition: bool, reason: str) -> None:
    """Skip when the environment lacks something; fail instead under CI=true."""
    if condition:
        return
    if on_ci():
        pytest.fail(f"{reason} (CI=true: this is an error, not a skip)", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI=true no test may skip, whichever helper or marker asked for it.

    CI installs everything the suite needs and runs as root; a skip there means a missing
    package or privilege would have hidden a whole area of tests. This catches skipif markers
    and helpers that forgot to consult `on_ci()`.
    """
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if on_ci() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which must not happen: {report.longrepr}"


def run_provisioner(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = (),
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """`python -m provisioner ARGS` in `cwd`; SFTP_PROVISIONER_* variables come from `env`
    only, never from the environment of the test run."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SFTP_PROVISIONER_")}
    environ.update(env or {})
    return subprocess.run(
        [*prefix, sys.executable, "-m", "provisioner", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def require_root() -> None:
    require(os.geteuid() == 0, "needs root (owners, chattr, runuser)")


@pytest.fixture
def needs_root() -> None:
    """For `@pytest.mark.usefixtures("needs_root")`: skips without root, fails under CI."""
    require_root()


def require_sshd() -> None:
    require(SSHD.exists(), f"needs OpenSSH's sshd at {SSHD} (install openssh-server)")


@dataclass(frozen=True, slots=True)
class Entry:
    """One path under the root as seen by the tests (never through the code under test)."""

    kind: str
    uid: int
    gid: int
    mode: int
    ino: int
    mtime_ns: int
    content: bytes | None

    def same_metadata(self, other: Entry) -> bool:
        return (self.kind, self.uid, self.gid, self.mode, self.content) == (
            other.kind,
            other.uid,
            other.gid,
            other.mode,
            other.content,
        )


class Host:
    """A temporary host: `root/` (the --root), `examples/` (a copy), `settings.yaml`."""

    def __init__(self, base: Path):
        self.base = base
        self.root = base / "root"
        self.decls = base / "examples"
        self.settings_file = base / "settings.yaml"
        shutil.copytree(EXAMPLES, self.decls)
        self.write_settings()

    # --- settings -----------------------------------------------------------------------

    def write_settings(self, **extra: Any) -> None:
        data: dict[str, Any] = {
            "openssh_version": "9.2",
            "hostname": "test-host",
            "sshd_check": SSHD.exists() or on_ci(),
        }
        data.update(extra)
        self.settings_file.write_text(
            "".join(f"{k}: {json.dumps(v)}\n" for k, v in data.items()), "utf-8"
        )

    def settings(self) -> HostSettings:
        return load_settings(self.settings_file, root=self.root, environ={})

    # --- the library --------------------------------------------------------------------

    def store(self) -> StateStore:
        return StateStore.open(self.settings().state_url)

    def snapshot(self) -> StateSnapshot:
        with self.store() as store:
            return store.snapshot()

    def compute(self, *, now: datetime = NOW, use_cache: bool = True) -> Reconciliation:
        with self.store() as store:
            snapshot = store.snapshot()
        return compute(
            self.settings(), [self.decls], snapshot, now=now, cwd=self.base, use_cache=use_cache
        )

    def plan(self, *, now: datetime = NOW) -> Plan:
        return self.compute(now=now).plan

    def apply(
        self, *, now: datetime = NOW, saved_plan: Plan | None = None, revision: str | None = None
    ) -> ApplyResult:
        with self.store() as store:
            return apply(
                self.settings(),
                [self.decls],
                store,
                saved_plan=saved_plan,
                now=now,
                revision=revision,
                cwd=self.base,
            )

    # --- the command line ---------------------------------------------------------------

    def cli(
        self, *args: str, prefix: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`python -m provisioner ARGS` in the host's base directory (see run_provisioner)."""
        return run_provisioner(*args, cwd=self.base, prefix=prefix, env=env)

    def run(
        self, command: str, *extra: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`provisioner COMMAND examples --root root --settings settings.yaml EXTRA...`."""
        args = [command] + (["examples"] if command in ("plan", "apply") else [])
        return self.cli(*args, "--root", "root", "--settings", "settings.yaml", *extra, env=env)

    # --- declarations -------------------------------------------------------------------

    def quality(self, en: str) -> Path:
        return self.decls / "qualities" / f"{en}.yaml"

    def edit(self, en: str, old: str, new: str) -> None:
        path = self.quality(en)
        text = path.read_text("utf-8")
        assert old in text, f"{old!r} not in {path}"
        path.write_text(text.replace(old, new, 1), "utf-8")

    # --- the tree -----------------------------------------------------------------------

    def path(self, live: Path | str) -> Path:
        """The path under the root of an absolute path as the host sees it."""
        return self.root / Path(live).relative_to("/")

    def bookkeeping(self) -> set[Path]:
        """Files a run writes besides the managed tree: state, lock, audit log, cache."""
        s = self.settings()
        db = Path(s.state_url.removeprefix("sqlite:///"))
        extra = {db.with_name(db.name + suffix) for suffix in ("-journal", "-wal", "-shm")}
        # The cache of checked declarations (apply rewrites it when a declaration changed).
        cache = {s.cache_dir, *s.cache_dir.rglob("*")} if s.cache_dir.exists() else set()
        return {db, s.lock_file, s.audit_log, *extra, *cache}

    def tree(self, *, bookkeeping: bool = False) -> dict[str, Entry]:
        """Every path under the root (relative), without following symlinks."""
        skip = set() if bookkeeping else self.bookkeeping()
        out: dict[str, Entry] = {}
        for path in sorted(_walk(self.root)):
            if path in skip:
                continue
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                kind, content = "dir", None
            elif stat.S_ISLNK(st.st_mode):
                kind, content = "symlink", os.readlink(path).encode()
            else:
                kind, content = "file", path.read_bytes()
            out[str(path.relative_to(self.root))] = Entry(
                kind,
                st.st_uid,
                st.st_gid,
                stat.S_IMODE(st.st_mode),
                st.st_ino,
                st.st_mtime_ns,
                content,
            )
        return out

    def audit(self) -> list[dict[str, Any]]:
        path = self.settings().audit_log
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def ssh_key(seed: int, comment: str) -> str:
    """A deterministic ed25519 public key line (every channel needs keys of its own)."""
    private = Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
    public = private.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    return f"{public.decode()} {comment}"


def add_key(host: Host, en: str, seed: int) -> str:
    """Declare one more key for a quality; returns the key line."""
    line = ssh_key(seed, f"added-{seed}@test")
    text = host.quality(en).read_text("utf-8")
    marker = "      ssh_keys:\n"
    assert marker in text
    host.quality(en).write_text(text.replace(marker, f"{marker}        - {line}\n", 1), "utf-8")
    return line


def add_third_quality(host: Host) -> None:
    """A third valid quality, written like the secsoc example with its own number, user, key."""
    text = (EXAMPLES / "qualities" / f"{EN_SECSOC}.yaml").read_text("utf-8")
    old_key = text.split("        - ssh-ed25519 ", 1)[1].split("\n", 1)[0]
    text = (
        text.replace('"0200.065.765"', '"0202.239.951"')
        .replace("SECRETARIAT SOCIAL EXEMPLE", "THIRD QUALITY")
        .replace(USER_SECSOC, USER_THIRD)
        .replace("ssh-ed25519 " + old_key, ssh_key(3, "third@test"))
    )
    host.quality(EN_THIRD).write_text(text, "utf-8")


def _walk(top: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(top):
        base = Path(dirpath)
        for name in dirnames + filenames:
            yield base / name


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    h = Host(tmp_path)
    yield h
    # chattr +i and foreign owners must not keep pytest from cleaning up.
    if shutil.which("chattr") and os.geteuid() == 0 and h.root.exists():
        subprocess.run(["chattr", "-R", "-i", str(h.root)], capture_output=True, check=False)
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def recorded_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    """The examples applied, with the host record vouching for every channel at once."""
    from provisioner import cache

    # No racy window: the record vouches for the channels right after the apply.
    monkeypatch.setattr(cache, "RACY_NS", 0)
    h = Host(tmp_path)
    h.apply()
    # Coarse filesystem clocks tick every few milliseconds: an edit made within the same tick
    # as the apply could keep its mtime, which is exactly what the racy rule guards against.
    time.sleep(0.05)
    yield h
