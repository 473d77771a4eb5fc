"""`provisioner apply` run by hand, interrupted: all or nothing, and it says which.

A real `provisioner apply` subprocess on a tree of 220 applied channels that adds 20 and
removes 8 (a real --root, the SQLite state, sshd -t where sshd is installed). Signals go to
its process group, as Ctrl-C at a terminal does, at points found by watching the host, not by
a hook in the code: the lock names the run (rendering), a staging directory exists, the
authorized_keys directory has started to change (journalled live changes). After each run
the managed tree (content, kind, owner, mode of every path) and the channel statuses are
exactly those before the run or exactly those of an uninterrupted run, never in between, and
the output says which. A kill -9 midway leaves a staging directory behind; the next run
removes it and reaches the fully applied tree.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from provisioner.settings import HostSettings, load_settings
from provisioner.state import StateStore
from tests.conftest import REPO, SSHD, on_ci

pytestmark = pytest.mark.slow

TOTAL = 240
BASELINE = 220  # applied before every test
REMOVED = 8  # under the mass-removal guard's threshold (10 channels or 5 %)
TIMEOUT = 180.0
APPLY = (sys.executable, "-m", "provisioner", "apply", "decls")
ARCHIVE_STAMP = re.compile(r"-\d{8}T\d{6}Z(-\d+)?$")

Tree = dict[str, tuple[Any, ...]]
Statuses = dict[str, str]


@dataclass
class Site:
    base: Path
    root: Path
    pristine: Path
    decls: Path
    settings_file: Path
    before: Tree
    before_status: Statuses
    after: Tree
    after_status: Statuses

    def settings(self) -> HostSettings:
        return load_settings(self.settings_file, root=self.root, environ={})

    def reset(self) -> None:
        """The host as the baseline apply left it (owners, modes and the state included)."""
        shutil.rmtree(self.root)
        subprocess.run(["cp", "-a", str(self.pristine), str(self.root)], check=True, timeout=120)

    def popen(self) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SFTP_PROVISIONER_")}
        return subprocess.Popen(
            [*APPLY, "--root", "root", "--settings", "settings.yaml"],
            cwd=self.base,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Its own process group: a signal to the group is what Ctrl-C at a terminal sends.
            start_new_session=True,
        )

    def apply(self) -> subprocess.CompletedProcess[str]:
        process = self.popen()
        out, err = process.communicate(timeout=TIMEOUT)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def staging(self) -> list[str]:
        work = self.settings().work_dir
        return sorted(e for e in os.listdir(work) if e.startswith("staging-"))


def tree(settings: HostSettings, root: Path) -> Tree:
    """Every managed path: kind, owner, group, mode and content digest (not inode or time).
    The state, lock, audit log, caches and work_dir are bookkeeping; archived chroots are
    named with the time of the run, which is left out."""
    skip = {settings.lock_file, settings.audit_log}
    skip_dirs = {settings.cache_dir, settings.work_dir}
    out: Tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip_dirs]
        for name in [*dirnames, *filenames]:
            path = here / name
            if path in skip:
                continue
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                content = None
            shown = str(path.relative_to(root))
            archive = str(settings.archive_dir.relative_to(root))
            if shown.startswith(archive + "/"):
                head, _, rest = shown[len(archive) + 1 :].partition("/")
                shown = f"{archive}/{ARCHIVE_STAMP.sub('', head)}" + (f"/{rest}" if rest else "")
            out[shown] = (
                stat.S_IFMT(st.st_mode),
                st.st_uid,
                st.st_gid,
                stat.S_IMODE(st.st_mode),
                content,
            )
    return out


def statuses(settings: HostSettings) -> Statuses:
    with StateStore.open(settings.state_url) as store:
        regs = store.snapshot().registrations
    return {str(qid): reg.status for qid, reg in regs.items()}


def _declare(all_decls: Path, decls: Path, names: list[str]) -> None:
    qualities = decls / "qualities"
    for old in qualities.glob("*.yaml"):
        if old.name not in names:
            old.unlink()
    for name in names:
        if not (qualities / name).exists():
            shutil.copy2(all_decls / "qualities" / name, qualities / name)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        # bench/generate.py: realistic declarations, keys and certificates.
        generate: Any = importlib.import_module("generate")
    finally:
        sys.path.remove(str(REPO / "bench"))
    base = tmp_path_factory.mktemp("signals")
    all_decls = base / "all"
    generate.generate(TOTAL, all_decls, jobs=1)
    names = sorted(p.name for p in (all_decls / "qualities").glob("*.yaml"))
    decls = base / "decls"
    for sub in ("keys", "certs", "ca"):
        shutil.copytree(all_decls / sub, decls / sub)
    (decls / "qualities").mkdir()
    settings_file = base / "settings.yaml"
    settings_file.write_text(
        'openssh_version: "9.2"\nhostname: test-host\n'
        f"sshd_check: {'true' if SSHD.exists() or on_ci() else 'false'}\n",
        "utf-8",
    )
    root, pristine = base / "root", base / "pristine"
    _declare(all_decls, decls, names[:BASELINE])
    site = Site(base, root, pristine, decls, settings_file, {}, {}, {}, {})
    root.mkdir()
    first = site.apply()
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr
    subprocess.run(["cp", "-a", str(root), str(pristine)], check=True, timeout=120)
    settings = site.settings()
    site.before, site.before_status = tree(settings, root), statuses(settings)
    # The run every test interrupts: 20 channels more, 8 fewer.
    _declare(all_decls, decls, names[REMOVED:])
    full = site.apply()
    assert full.returncode == 0, full.stdout[-2000:] + full.stderr
    assert "20 to create" in full.stdout and f"{REMOVED} to remove" in full.stdout, full.stdout
    site.after, site.after_status = tree(settings, root), statuses(settings)
    assert site.before != site.after
    return site


# --- watching the run ----------------------------------------------------------------------


def _lock_names(site: Site, pid: int) -> bool:
    try:
        return f"pid {pid} " in site.settings().lock_file.read_text("utf-8")
    except OSError:
        return False


def _staging_exists(site: Site, _pid: int) -> bool:
    try:
        return bool(site.staging())
    except OSError:
        return False


def _keys_changing(site: Site, _pid: int) -> bool:
    keys = site.settings().keys_dir
    try:
        return set(os.listdir(keys)) != _BASELINE_KEYS[0]
    except OSError:
        return False


_BASELINE_KEYS: list[set[str]] = [set()]

POINTS: dict[str, Callable[[Site, int], bool]] = {
    "rendering": _lock_names,
    "staging": _staging_exists,
    "changes": _keys_changing,
}


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    seen: dict[str, Any]


def interrupted_run(
    site: Site, point: str, signals: list[signal.Signals], *, kill: bool = False
) -> Outcome:
    """Start apply, wait for `point`, send `signals` to its group (each after the previous
    one was noticed: the kernel merges a signal sent while the same one is pending)."""
    site.reset()
    _BASELINE_KEYS[0] = set(os.listdir(site.settings().keys_dir))
    process = site.popen()
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr or []), daemon=True)
    reader.start()
    seen: dict[str, Any] = {}
    deadline = time.monotonic() + TIMEOUT
    try:
        while not POINTS[point](site, process.pid):
            assert process.poll() is None, f"apply ended before {point}: {lines}"
            assert time.monotonic() < deadline, f"{point} never came"
            time.sleep(0.001)
        if point == "staging":
            work = site.settings().work_dir
            seen["modes"] = {
                name: stat.S_IMODE(os.lstat(work / name).st_mode) for name in site.staging()
            }
        if kill:
            os.killpg(process.pid, signal.SIGKILL)
        for n, sig in enumerate(signals):
            if n:
                while len([line for line in lines if line.startswith("provisioner: ")]) < n:
                    assert process.poll() is None, f"apply ended before signal {n + 1}: {lines}"
                    assert time.monotonic() < deadline
                    time.sleep(0.001)
            os.killpg(process.pid, sig)
        stdout = process.stdout.read() if process.stdout else ""
        process.wait(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    reader.join(timeout=30)
    return Outcome(process.returncode, stdout, "".join(lines), seen)


def assert_all_or_nothing(site: Site, outcome: Outcome, sig: signal.Signals) -> str:
    """The tree and statuses are exactly before or exactly after; the output says which."""
    settings = site.settings()
    now, now_status = tree(settings, site.root), statuses(settings)
    assert outcome.code == 128 + sig, outcome.stderr
    assert site.staging() == [], "a staging directory was left behind"
    name = sig.name
    if f"interrupted ({name}): finished the apply (" in outcome.stderr:
        assert now == site.after, _difference(now, site.after)
        assert now_status == site.after_status
        assert "Applied" in outcome.stdout
        return "finished"
    assert (
        f"interrupted ({name}): rolled back, nothing changed" in outcome.stderr
        or f"interrupted ({name}): stopped before any change, nothing changed" in outcome.stderr
    ), outcome.stderr
    assert now == site.before, _difference(now, site.before)
    # Channels there before keep exactly their status (a rolled-back removal is active
    # again); the new ones are registered (their sender numbers are never reused) and pending.
    assert {en: now_status[en] for en in site.before_status} == site.before_status
    assert {now_status[en] for en in set(now_status) - set(site.before_status)} <= {"pending"}
    return "nothing"


def _difference(a: Tree, b: Tree) -> str:
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    changed = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    return f"only now: {only_a[:5]}, only expected: {only_b[:5]}, different: {changed[:5]}"


# --- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_rendering_stops_with_nothing_changed(
    site: Site, sig: signal.Signals
) -> None:
    outcome = interrupted_run(site, "rendering", [sig])
    assert assert_all_or_nothing(site, outcome, sig) == "nothing"
    assert "stopped before any change, nothing changed" in outcome.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_staging_is_all_or_nothing_and_staging_is_private(
    site: Site, sig: signal.Signals
) -> None:
    outcome = interrupted_run(site, "staging", [sig])
    # The staging window is short: the signal may land just after the first live change,
    # and then the apply finishes. Either is allowed; half is not.
    assert_all_or_nothing(site, outcome, sig)
    assert outcome.seen["modes"] and set(outcome.seen["modes"].values()) == {0o700}
    assert all(re.fullmatch(r"staging-[0-9]+-\w+", n) for n in outcome.seen["modes"])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_changes_finishes_the_apply(site: Site, sig: signal.Signals) -> None:
    outcome = interrupted_run(site, "changes", [sig])
    assert assert_all_or_nothing(site, outcome, sig) == "finished"
    assert "send it again to roll back" in outcome.stderr


@pytest.mark.parametrize(
    "signals",
    [
        [signal.SIGINT, signal.SIGINT],
        [signal.SIGTERM, signal.SIGTERM],
        [signal.SIGTERM, signal.SIGINT],
    ],
    ids=["int-int", "term-term", "term-int"],
)
def test_a_second_signal_during_the_changes_rolls_back(
    site: Site, signals: list[signal.Signals]
) -> None:
    outcome = interrupted_run(site, "changes", signals)
    # The exit code names the first signal.
    assert assert_all_or_nothing(site, outcome, signals[0]) == "nothing"
    assert "rolled back, nothing changed" in outcome.stderr


def test_kill_9_then_a_clean_run_leaves_no_staging_and_applies_everything(site: Site) -> None:
    outcome = interrupted_run(site, "changes", [], kill=True)
    assert outcome.code == -signal.SIGKILL
    left = site.staging()
    assert len(left) == 1, "a kill -9 leaves its staging directory (nothing can run)"
    # Another leftover of the same kind, from an older run: a plain file and a directory.
    work = site.settings().work_dir
    (work / "staging-1-stale").mkdir(mode=0o700)
    (work / "staging-1-stale" / "shadow").write_text("root:*:1::::::\n", "utf-8")
    again = site.apply()
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr
    assert site.staging() == []
    for name in [*left, "staging-1-stale"]:
        assert f"removed {work / name}, the staging directory of an interrupted run" in again.stderr
    settings = site.settings()
    assert tree(settings, site.root) == site.after
    assert statuses(settings) == site.after_status


def test_the_library_installs_no_handler_unless_asked(tmp_path: Path) -> None:
    from provisioner.apply import apply
    from tests.conftest import Host

    host = Host(tmp_path)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    during: list[dict[signal.Signals, Any]] = []
    with host.store() as store:
        apply(
            host.settings(),
            [host.decls],
            store,
            cwd=host.base,
            progress=lambda *_: during.append(
                {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
            ),
        )
    assert during and all(d == before for d in during)
    assert {sig: signal.getsignal(sig) for sig in before} == before
    work = host.settings().work_dir
    assert not [e for e in os.listdir(work) if e.startswith("staging-")]
