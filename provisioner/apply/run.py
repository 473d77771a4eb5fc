"""Apply: the only place with side effects.

One run at a time (a lock that names its holder). Everything is rendered to a staging area and
`sshd -t` checks the complete staged configuration before anything live changes. Files are
replaced atomically (temporary file, fsync, rename); every change is journalled first, so a
failure midway restores the previous files, directories, owners and modes. Uploaded data is
never deleted: a removed channel's chroot moves to the archive.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any, ParamSpec

from provisioner import logs
from provisioner.authorized_keys import AuthorizedKeysMismatch, check_rendering
from provisioner.cache import RACY_NS, RESTAMP_MIN
from provisioner.errors import ApplyError, PlanError
from provisioner.gcpause import paused_gc
from provisioner.guard import enforce
from provisioner.hostrecord import (
    ChannelRecord,
    HostRecord,
    channel_fingerprint,
    listing_stamp,
    stamp,
)
from provisioner.identity import to_record
from provisioner.pending import REMOVAL_ROLLED_BACK, ROLLED_BACK
from provisioner.plan import (
    ChannelAction,
    ChannelPlan,
    PathAction,
    PathChange,
    PathState,
    Plan,
    compare,
)
from provisioner.progress import APPLY, ProgressCallback
from provisioner.quality_id import QualityId
from provisioner.reconcile import Reconciliation, compute, unknown_in
from provisioner.render import MEMO_ROLES, Channel, Desired, expected_keys
from provisioner.runlock import exclusive_lock
from provisioner.settings import HostSettings
from provisioner.state import (
    ChannelStatus,
    Registration,
    StaleState,
    StateSnapshot,
    StateStore,
)
from provisioner.state.store import StatusUpdate

TMP_SUFFIX = ".sftp-provisioner.tmp"


@dataclass(slots=True)
class ApplyResult:
    plan: Plan
    # What the plan was computed from, so callers (notifications) need not compute it again.
    reconciliation: Reconciliation | None = None
    applied: list[PathChange] = field(default_factory=list)
    owners_not_set: list[str] = field(default_factory=list)
    archived: list[tuple[str, str, str]] = field(default_factory=list)
    reloaded: bool = False
    sshd_checked: bool = False
    # Channels whose rendered authorized_keys did not read back as their validated keys: an
    # internal error (a bug, or a site's template override); nothing of them was written.
    aborted: list[str] = field(default_factory=list)
    # How many times the run planned and tried to commit (more than 1: another host sharing
    # the state committed first, see `_converging`).
    attempts: int = 1
    # Set when SIGINT/SIGTERM came during the apply and it finished (see Interruption).
    interrupted: int | None = None
    # Staging directories of earlier runs (killed) that this run removed.
    stale_staging: list[str] = field(default_factory=list)


# --- the lock ------------------------------------------------------------------------------


def host_lock(path: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive, non-blocking lock; a second run is told who holds it."""
    return exclusive_lock(path, what="run")


# --- low-level writes ----------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Owners:
    """chown where we may; as a normal user, remember what could not be set."""

    def __init__(self, manage: bool):
        self.manage = manage
        self.not_set: list[str] = []

    def fchown(self, fd: int, path: Path, owner: int, group: int) -> None:
        if not self.manage:
            self.not_set.append(f"{path} ({owner}:{group})")
            return
        os.fchown(fd, owner, group)

    def lchown(self, path: Path, owner: int, group: int) -> None:
        if not self.manage:
            self.not_set.append(f"{path} ({owner}:{group})")
            return
        os.lchown(path, owner, group)


def write_atomic(
    path: Path, content: bytes, mode: int, owner: int, group: int, owners: _Owners
) -> None:
    tmp = path.with_name(f".{path.name}{TMP_SUFFIX}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(content)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        # Owner and mode are right before the name appears: no window with wrong ones.
        owners.fchown(fd, path, owner, group)
        os.fchmod(fd, mode)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def unused_name(path: Path) -> Path:
    """`path`, or `path-2`, `path-3`...: the first name nothing sits at.

    shutil.move() into an existing directory moves *inside* it: a second archive of the same
    chroot within one second would otherwise end up nested in the first.
    """
    candidate, n = path, 1
    while os.path.lexists(candidate):
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


# --- the journal ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Undo:
    action: str
    path: Path
    backup: Path | None = None
    owner: int = -1
    group: int = -1
    mode: int = 0
    other: Path | None = None


class Journal:
    """What to do to put everything back, newest first."""

    def __init__(self, backup_dir: Path, archive_dir: Path, stamp: str):
        self.backup_dir = backup_dir
        # A directory in the way of a managed file may hold someone's data: it goes to the
        # archive like a removed chroot, never into the temporary backup area.
        self.archive_dir = archive_dir
        self.stamp = stamp
        self.entries: list[_Undo] = []
        self._n = 0

    def _backup(self, path: Path) -> Path:
        self.backup_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._n += 1
        dest = self.backup_dir / f"{self._n:06d}-{path.name}"
        # Symlinks are kept as symlinks: restoring must not turn them into copies.
        shutil.copy2(path, dest, follow_symlinks=False)
        return dest

    def before_file_write(self, path: Path) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self.entries.append(_Undo("remove", path))
            return
        if os.path.isdir(path) and not os.path.islink(path):
            if not os.path.isdir(self.archive_dir):
                self.archive_dir.parent.mkdir(parents=True, exist_ok=True)
                os.mkdir(self.archive_dir, 0o700)
                # Journalled like every other directory it creates: a rollback leaves no trace.
                self.created_dir(self.archive_dir)
            moved = unused_name(self.archive_dir / f"{path.name}-displaced-{self.stamp}")
            shutil.move(str(path), str(moved))
            self.entries.append(_Undo("move-back", moved, other=path))
            return
        self.entries.append(
            _Undo("restore", path, self._backup(path), st.st_uid, st.st_gid, st.st_mode & 0o7777)
        )

    def created_dir(self, path: Path) -> None:
        self.entries.append(_Undo("rmdir", path))

    def before_metadata(self, path: Path) -> None:
        st = os.lstat(path)
        self.entries.append(
            _Undo("metadata", path, owner=st.st_uid, group=st.st_gid, mode=st.st_mode & 0o7777)
        )

    def moved(self, src: Path, dest: Path) -> None:
        self.entries.append(_Undo("move-back", dest, other=src))

    def rollback(self) -> list[str]:
        problems = []
        for undo in reversed(self.entries):
            try:
                if undo.action == "remove":
                    with contextlib.suppress(FileNotFoundError):
                        if os.path.isdir(undo.path) and not os.path.islink(undo.path):
                            os.rmdir(undo.path)
                        else:
                            os.unlink(undo.path)
                elif undo.action == "restore" and undo.backup is not None:
                    tmp = undo.path.with_name(f".{undo.path.name}{TMP_SUFFIX}")
                    with contextlib.suppress(FileNotFoundError):
                        tmp.unlink()
                    shutil.copy2(undo.backup, tmp, follow_symlinks=False)
                    if not os.path.islink(tmp):
                        with contextlib.suppress(PermissionError):
                            os.chown(tmp, undo.owner, undo.group)
                        os.chmod(tmp, undo.mode)
                    os.replace(tmp, undo.path)
                elif undo.action == "rmdir":
                    with contextlib.suppress(FileNotFoundError, OSError):
                        os.rmdir(undo.path)
                elif undo.action == "metadata":
                    with contextlib.suppress(PermissionError):
                        os.lchown(undo.path, undo.owner, undo.group)
                    os.chmod(undo.path, undo.mode)
                elif undo.action == "move-back" and undo.other is not None:
                    if os.path.lexists(undo.other) and os.path.isdir(undo.other):
                        with contextlib.suppress(OSError):
                            os.rmdir(undo.other)
                    if os.path.lexists(undo.other) and not os.path.isdir(undo.other):
                        os.unlink(undo.other)
                    shutil.move(str(undo.path), str(undo.other))
            except OSError as exc:
                problems.append(f"{undo.path}: {exc}")
        return problems


# --- sshd ----------------------------------------------------------------------------------


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


def _run_reload(command: list[str], what: str) -> None:
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False, process_group=0
    )
    if done.returncode != 0:
        raise ApplyError(
            f"reloading {what} failed ({' '.join(command)}): {(done.stderr or done.stdout).strip()}"
        )


def reload_sshd(settings: HostSettings) -> bool:
    if not settings.reload_command:
        return False
    done = subprocess.run(
        settings.reload_command,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        process_group=0,
    )
    if done.returncode != 0:
        raise ApplyError(
            f"reloading sshd failed ({' '.join(settings.reload_command)}): "
            f"{(done.stderr or done.stdout).strip()}"
        )
    return True


# --- signals and staging -------------------------------------------------------------------


class ApplyInterrupted(Exception):
    """SIGINT or SIGTERM ended an apply with nothing changed: it stopped before its first
    live change, or a second signal rolled it back. `problems`: paths a rollback could not
    restore."""

    def __init__(self, signum: int, *, rolled_back: bool) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.rolled_back = rolled_back
        self.problems: list[str] = []


class Interruption:
    """SIGINT and SIGTERM during an apply, for a caller that asks for it (`provisioner
    apply`; the library installs no handler unasked, and `reconcile` has its own Stopper).

    Policy. Before the first live change (rendering, staging, `sshd -t`, the state commit) a
    signal stops the apply at the next step, with nothing changed; a second one stops it at
    once. Once live changes have begun, a first signal lets the apply finish: every change is
    journalled and a few milliseconds long, so finishing is bounded, and a finished apply is
    a consistent host. A second signal rolls the journal back at the next change and puts the
    statuses back. After the reloads the apply is complete: later signals only end the
    process afterwards. Either way the caller is told which (`ApplyResult.interrupted`, or
    `ApplyInterrupted`) and exits with 128 + the first signal's number.
    """

    def __init__(self, notice: Callable[[str], None] | None = None) -> None:
        self.signals: list[int] = []
        # Called from the handler: it must not take locks (os.write is fine, print is not).
        self.notice = notice
        self.phase = "prepare"  # -> "commit" -> "changes" -> "done"
        self._pid = os.getpid()

    @property
    def requested(self) -> bool:
        return bool(self.signals)

    @property
    def rollback(self) -> bool:
        return len(self.signals) >= 2

    @property
    def signum(self) -> int:
        return self.signals[0]

    def _say(self, message: str) -> None:
        if self.notice is not None:
            self.notice(message)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if os.getpid() != self._pid:
            # A forked validation worker: the parent decides, and it finishes its share.
            return
        self.signals.append(signum)
        name = signal.Signals(signum).name
        if len(self.signals) == 1:
            if self.phase in ("prepare", "commit"):
                self._say(f"{name}: stopping before anything changes")
            elif self.phase == "changes":
                self._say(f"{name}: finishing the apply, then stopping; send it again to roll back")
            else:
                self._say(f"{name}: the apply is complete; stopping once it is recorded")
        elif len(self.signals) == 2:
            if self.phase == "prepare":
                # Nothing live is touched before the commit: no need to wait for the step.
                raise ApplyInterrupted(self.signum, rolled_back=False)
            if self.phase in ("commit", "changes"):
                self._say(f"{name}: rolling back")

    def check(self) -> None:
        """A safe point before the first live change: stop there if a signal came."""
        if self.signals:
            raise ApplyInterrupted(self.signum, rolled_back=False)

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interruption]:
        """Handle SIGINT and SIGTERM inside the block (main thread only); restore afterwards."""
        previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


STAGING_PREFIX = "staging-"


class _Staging:
    """A private (0700) `staging-<pid>-<random>` directory under work_dir, removed on the
    way out whatever the way (it holds copies of passwd and shadow); what a kill -9 leaves,
    the next run removes (`remove_stale_staging`)."""

    def __init__(self, work_dir: Path) -> None:
        work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=work_dir))

    def __enter__(self) -> _Staging:
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
            logging.getLogger(__name__).warning(
                "could not remove the stale staging directory %s: %s", entry.path, exc
            )
            continue
        removed.append(entry.path)
    return removed


# --- apply ---------------------------------------------------------------------------------


def _ensure_parents(path: Path, journal: Journal, owners: _Owners) -> None:
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        os.mkdir(directory, 0o755)
        os.chmod(directory, 0o755)
        journal.created_dir(directory)


def _apply_change(
    change: PathChange,
    node: Desired | None,
    settings: HostSettings,
    journal: Journal,
    owners: _Owners,
    now: datetime,
    result: ApplyResult,
) -> None:
    path = Path(change.path)
    if change.action in (PathAction.CREATE, PathAction.UPDATE, PathAction.REPLACE):
        assert node is not None
        _ensure_parents(path, journal, owners)
        if node.kind == "file":
            assert node.content is not None
            journal.before_file_write(path)
            write_atomic(path, node.content, node.mode, node.owner, node.group, owners)
        else:
            if change.action is PathAction.REPLACE:
                journal.before_file_write(path)
                if os.path.lexists(path):
                    os.unlink(path)
            os.mkdir(path, 0o700)
            journal.created_dir(path)
            owners.lchown(path, node.owner, node.group)
            os.chmod(path, node.mode)
    elif change.action is PathAction.METADATA:
        assert node is not None
        journal.before_metadata(path)
        owners.lchown(path, node.owner, node.group)
        os.chmod(path, node.mode)
    elif change.action is PathAction.DELETE:
        journal.before_file_write(path)
        os.unlink(path)
    elif change.action is PathAction.ARCHIVE:
        archive = settings.archive_dir
        if not archive.exists():
            _ensure_parents(archive, journal, owners)
            os.mkdir(archive, 0o700)
            journal.created_dir(archive)
        dest = unused_name(archive / f"{path.name}-{now:%Y%m%dT%H%M%SZ}")
        shutil.move(str(path), str(dest))
        journal.moved(path, dest)
        result.archived.append((str(path), str(dest), change.details[0] if change.details else ""))
    result.applied.append(change)


def _abort_misrendered(rec: Reconciliation) -> list[str]:
    """Read every rendered authorized_keys file back before anything is staged.

    A file that is not exactly its channel's validated keys (see provisioner.authorized_keys)
    must never reach sshd: the channel is taken out of this run, refused with the reason, and
    keeps what it had. Channels not rendered in this run were checked when they were.
    """
    aborted: list[str] = []
    for channel in list(rec.accepted):
        for node in rec.channel_nodes.get(channel.qid, []):
            if node.role != "authorized-keys" or node.content is None:
                continue
            try:
                check_rendering(node.content, expected_keys(channel.result.keys))
            except AuthorizedKeysMismatch as exc:
                reason = (
                    f"internal error: the rendered authorized_keys of {channel.user} is not "
                    f"its validated keys ({exc}); nothing of this channel was written"
                )
                logging.getLogger(__name__).error("%s", reason)
                _take_out(rec, channel, reason)
                aborted.append(reason)
    return aborted


def _take_out(rec: Reconciliation, channel: Channel, reason: str) -> None:
    qid = channel.qid
    for node in rec.channel_nodes.pop(qid, []):
        rec.tree.nodes.pop(node.path, None)
    rec.plan.changes = [c for c in rec.plan.changes if c.channel != channel.key]
    rec.accepted.remove(channel)
    # Its keys were not applied: recording them would give them to a channel that never had them.
    rec.channel_keys.pop(qid, None)
    rec.refusals[qid] = [reason]
    rec.plan.channels = [
        ChannelPlan(
            qid.enterprise_number,
            channel.user,
            channel.registration.sender,
            ChannelAction.REFUSED,
            channel.display,
            (reason,),
            quality_type=qid.quality_type,
        )
        if p.qid == qid
        else p
        for p in rec.plan.channels
    ]


def _stage(rec: Reconciliation, staging: Path) -> Path:
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


def _audit(settings: HostSettings, entries: Sequence[dict[str, Any]]) -> None:
    if not entries:
        return
    path = settings.audit_log
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o640)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        _write_lines(fh, entries)
        fh.flush()
        os.fsync(fh.fileno())


def _write_lines(fh: IO[str], entries: Sequence[dict[str, Any]]) -> None:
    for entry in entries:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")


class StateMoved(PlanError):
    """Another writer (a second host sharing the database) committed between this run's
    snapshot and its commit; nothing live was changed yet."""


_P = ParamSpec("_P")


def _converging(fn: Callable[_P, ApplyResult]) -> Callable[_P, ApplyResult]:
    """Plan again and retry when another host moved the state on, within the same run.

    Hosts sharing one database fire in the same slot; all but the first find the state moved
    on at their commit. Their next plan starts from what the first committed (the same sender
    numbers and uids), so it commits nothing new and goes through: without a retry the
    losers skipped every slot in which anything was allocated. Bounded (`state_retries`
    attempts), with a random pause that grows, so that hosts do not collide again in step.
    A saved plan is never re-planned: what the operator reviewed is stale, and they are told.
    Only this case is retried; any other error ends the run as before.
    """

    @functools.wraps(fn)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> ApplyResult:
        settings = args[0] if args else kwargs["settings"]
        assert isinstance(settings, HostSettings)
        attempts = 1 if kwargs.get("saved_plan") is not None else settings.state_retries
        for attempt in range(1, attempts + 1):
            try:
                result = fn(*args, **kwargs)
            except StateMoved as exc:
                if attempt == attempts:
                    if attempts == 1:
                        raise
                    raise StateMoved(
                        f"{exc.message} (gave up after {attempts} attempts: other hosts kept "
                        "committing first)"
                    ) from None
                ceiling = min(
                    settings.state_retry_max_delay,
                    settings.state_retry_min_delay * 2**attempt,
                )
                pause = random.uniform(settings.state_retry_min_delay, max(ceiling, 0.0))
                logs.warn(
                    "state-moved-retry",
                    f"another host changed the state first; planning again in {pause:.2f}s "
                    f"(attempt {attempt + 1} of {attempts})",
                    host=settings.host_name,
                    attempt=attempt + 1,
                    attempts=attempts,
                    pause=round(pause, 3),
                )
                time.sleep(pause)
                continue
            result.attempts = attempt
            return result
        raise AssertionError("unreachable: the last attempt returns or raises")

    return run


def _stale(saved: Plan, fresh: Plan) -> list[str]:
    a, b = saved.fingerprints, fresh.fingerprints
    moved = []
    if a.declarations != b.declarations:
        moved.append("the declarations changed")
    if a.state_version != b.state_version:
        moved.append(f"the state moved on (version {a.state_version} -> {b.state_version})")
    if a.observed != b.observed:
        moved.append("the files on the host changed")
    if a.settings != b.settings:
        moved.append("the host settings changed")
    if saved.root != fresh.root:
        moved.append(f"the plan is for root {saved.root}, not {fresh.root}")
    return moved


@_converging
def apply(
    settings: HostSettings,
    paths: Sequence[Path],
    store: StateStore,
    *,
    saved_plan: Plan | None = None,
    now: datetime | None = None,
    revision: str | None = None,
    cwd: Path | None = None,
    progress: Callable[[int, int, PathChange], None] | None = None,
    report_progress: ProgressCallback | None = None,
    use_cache: bool = True,
    allow_removals: int | None = None,
    interrupt: Interruption | None = None,
) -> ApplyResult:
    """Reconcile the host; `progress(done, total, change)` is called after each change.
    `interrupt`: an installed `Interruption`, for the signal policy it describes.
    `use_cache=False`: compare everything in full, trusting no cache (see `compute`).
    `allow_removals`: how many removals over the mass-removal guard's threshold this run
    accepts (see `provisioner.guard`); a plan over it raises before anything is committed.
    `report_progress(stage, done, total)`: the steps of the plan and of the changes, for a
    progress bar or log (see `provisioner.progress`)."""
    now = now or datetime.now(UTC)
    with host_lock(settings.lock_file), paused_gc():
        if interrupt is not None:
            interrupt.phase = "prepare"  # again when `_converging` plans a second time
        stale_staging = remove_stale_staging(settings.work_dir)
        snapshot = store.snapshot()
        rec = compute(
            settings,
            paths,
            snapshot,
            now=now,
            revision=revision,
            cwd=cwd,
            write_cache=True,
            use_cache=use_cache,
            progress=report_progress,
        )
        if saved_plan is not None:
            moved = _stale(saved_plan, rec.plan)
            if moved:
                raise PlanError(
                    "the saved plan is stale and was not applied: "
                    + "; ".join(moved)
                    + "; make a new plan"
                )
        # Before the state, the staging area or any live file is touched: a refused mass
        # removal removes nothing and applies nothing.
        if rec.plan.removal_guard is not None:
            rec.plan.removal_guard = replace(rec.plan.removal_guard, allowed=allow_removals)
        enforce(rec.plan.removal_guard)
        result = ApplyResult(rec.plan, rec)
        result.stale_staging = stale_staging
        result.aborted = _abort_misrendered(rec)
        owners = _Owners(rec.plan.owners_managed)
        result.owners_not_set = owners.not_set
        if interrupt is not None:
            interrupt.check()
        with _Staging(settings.work_dir) as stage:
            staging = stage.path
            if rec.plan.changes:
                staged_dropin = _stage(rec, staging / "tree")
                if settings.sshd_check:
                    sshd_test(settings, staged_dropin, staging)
                    result.sshd_checked = True
            if interrupt is not None:
                interrupt.check()
                interrupt.phase = "commit"
            committed = rec.snapshot
            try:
                if rec.allocation.changed or rec.allocation.refused:
                    committed = store.commit(rec.allocation, revision=revision, now=now)
            except StaleState as exc:
                # Before anything live changed: `apply` plans again and retries (see _converging).
                raise StateMoved(f"{exc}") from None
            journal = Journal(staging / "backup", settings.archive_dir, f"{now:%Y%m%dT%H%M%SZ}")
            syslog_reloaded = False
            try:
                total = len(rec.plan.changes)
                for done, change in enumerate(rec.plan.changes, 1):
                    if interrupt is not None:
                        # Phase first: a signal from here on is told the apply finishes.
                        interrupt.phase = "changes"
                        if interrupt.rollback or (interrupt.requested and done == 1):
                            raise ApplyInterrupted(interrupt.signum, rolled_back=done > 1)
                    _apply_change(
                        change,
                        rec.tree.nodes.get(Path(change.path)),
                        settings,
                        journal,
                        owners,
                        now,
                        result,
                    )
                    if progress is not None:
                        progress(done, total, change)
                    if report_progress is not None:
                        report_progress(APPLY, done, total)
                if interrupt is not None and interrupt.rollback:
                    raise ApplyInterrupted(interrupt.signum, rolled_back=True)
                if rec.plan.changes and any(
                    c.role == "sshd-dropin" or c.role in ("passwd", "group", "shadow")
                    for c in rec.plan.changes
                ):
                    result.reloaded = reload_sshd(settings)
                if settings.syslog_reload_command and any(
                    c.role == "rsyslog" for c in rec.plan.changes
                ):
                    _run_reload(settings.syslog_reload_command, "rsyslog")
                    syslog_reloaded = True
                if interrupt is not None:
                    interrupt.phase = "done"
                    if interrupt.rollback:
                        raise ApplyInterrupted(interrupt.signum, rolled_back=True)
            except (ApplyInterrupted, KeyboardInterrupt) as stop:
                # A second signal (or Ctrl-C without handlers): everything goes back, the
                # statuses the commit moved too, so the host is exactly as before the run.
                problems = journal.rollback()
                if result.reloaded:
                    with contextlib.suppress(ApplyError):
                        reload_sshd(settings)
                if syslog_reloaded:
                    with contextlib.suppress(ApplyError):
                        _run_reload(settings.syslog_reload_command, "rsyslog")
                if rec.allocation.changed:
                    store.restore_statuses(_uncommitted(rec))
                if isinstance(stop, ApplyInterrupted):
                    stop.rolled_back = stop.rolled_back or bool(journal.entries)
                    stop.problems = problems
                raise
            except Exception as exc:
                problems = journal.rollback()
                _record_failure(store, rec, str(exc), revision, now)
                detail = f"; restoring also failed for: {', '.join(problems)}" if problems else ""
                if isinstance(exc, ApplyError):
                    raise ApplyError(
                        f"{exc.message}; the previous files were restored{detail}"
                    ) from exc
                if isinstance(exc, OSError):
                    raise ApplyError(
                        f"applying failed at {getattr(exc, 'filename', '?')}: "
                        f"{exc.strerror or exc}; the previous files were restored"
                        f"{detail}"
                    ) from exc
                raise
        _record_success(store, rec, revision, now, committed)
        # Which channel has which key now: a quality that declares one of them later is refused.
        # A quality that keeps only its other channels has no keys here any more.
        released = [*rec.allocation.removed, *(c.qid for c in rec.routed)]
        store.record_channel_keys(rec.channel_keys, released, now=now)
        # Which revision this host serves per channel (`status` shows it for every host);
        # held and deferred channels still serve what they served, the rest is gone.
        store.record_host_channels(
            settings.host_name,
            {c.qid: revision for c in (*rec.accepted, *rec.routed)},
            keep={*rec.refusals, *(r.qid for r in (*rec.held, *rec.deferred))},
            now=now,
        )
        _audit(settings, _audit_entries(rec, result, revision, now))
        _remember(rec, result.applied)
        if interrupt is not None and interrupt.requested:
            result.interrupted = interrupt.signum
        return result


def _remember(rec: Reconciliation, applied: Sequence[PathChange]) -> None:
    """Record what this apply left on the host, so that the next run need not read it all
    again (see `provisioner.hostrecord`). Only channels whose paths are now as rendered are
    recorded; the others are rendered and compared in full next time.

    Like the declarations cache, the record is rewritten for new stamps alone (files that
    were too recent to stamp last time) only once that saves real work: an apply that
    changes nothing leaves every file alone, this one included."""
    if rec.record is None:
        return
    written = sum(
        1 for c in applied if c.channel is not None and c.kind == "file" and c.after is not None
    )
    if written > RESTAMP_MIN:
        # Files written in the last two seconds cannot be stamped (see hostrecord), and the
        # next runs would render their channels and read them again: after a first apply,
        # thousands. Waiting out the window once here is cheaper than that.
        time.sleep(RACY_NS / 1e9)
    at = time.time_ns()
    owners = rec.plan.owners_managed
    old = rec.record.channels
    new = HostRecord(rec.record.context)
    changed = set(old) != {c.key for c in rec.accepted}
    restamped = 0
    for channel in rec.accepted:
        en = channel.qid
        unknown, listing = rec.chroot_unknown.get(en, ([], None))
        kept = rec.unchanged.get(en)
        if kept is not None:
            # Untouched by this apply: what compute saw still holds.
            changed = changed or unknown != kept.unknown
            if (unknown, listing) != (kept.unknown, kept.listing):
                restamped += 1
                kept = replace(kept, unknown=unknown, listing=listing, raw=None)
            new.channels[channel.key] = kept
            continue
        nodes = rec.channel_nodes.get(en, [])
        chroot = str(rec.settings.chroot(channel.user))
        files: list[list[Any]] = []
        dirs: list[list[Any]] = []
        prints = []
        for node in nodes:
            stamped = stamp(node.path, node.kind, chroot, at)
            if stamped is None or compare(node, stamped[1], owners=owners) is not None:
                changed = True
                break
            entry, observed = stamped
            (files if node.kind == "file" else dirs).append(entry)
            prints.append(observed.fingerprint())
        else:
            fresh = ChannelRecord(
                key=rec.keys[en],
                routing=rec.routing[en],
                routing_digest=rec.routing_digests[en],
                files=files,
                dirs=dirs,
                fingerprint=channel_fingerprint(prints),
                chroot=chroot,
                unknown=unknown_in(chroot, frozenset(str(n.path) for n in nodes)),
                listing=listing_stamp(chroot),
            )
            before = old.get(channel.key)
            if before is not None and _same_but_stamps(before, fresh):
                restamped += 1
            else:
                changed = True
            new.channels[channel.key] = fresh
    for node in rec.tree:
        if node.role in MEMO_ROLES and node.kind == "file":
            state = PathState.of_desired(node)
            new.host_files[node.role] = [rec.host_keys[node.role], state.sha256, state.size]
    changed = changed or new.host_files != rec.record.host_files
    if changed or restamped >= max(RESTAMP_MIN, len(new.channels) // 100):
        new.save(rec.settings)


def _same_but_stamps(a: ChannelRecord, b: ChannelRecord) -> bool:
    """The same record but for stamps of files that were too recent to stamp before (a file
    rewritten since has another inode or ctime: a real change, recorded at once)."""
    return (
        (a.key, a.routing_digest, a.dirs, a.fingerprint, a.chroot, a.unknown)
        == (b.key, b.routing_digest, b.dirs, b.fingerprint, b.chroot, b.unknown)
        and len(a.files) == len(b.files)
        and all(
            x[:5] == y[:5] and x[8] == y[8] and (x[6] is None or x[5:8] == y[5:8])
            for x, y in zip(a.files, b.files, strict=True)
        )
    )


def _uncommitted(rec: Reconciliation) -> list[Registration]:
    """The registrations this run's commit moved (removed, returning) as they were before."""
    before = rec.snapshot.registrations
    moved = [*rec.allocation.removed, *(r.qid for r in rec.allocation.returning)]
    return [before[q] for q in moved if q in before]


def _record_failure(
    store: StateStore, rec: Reconciliation, reason: str, revision: str | None, now: datetime
) -> None:
    regs = store.snapshot().registrations
    # The rollback put back what was served before: a channel applied before serves its last
    # good configuration (`degraded`); `failed` is for a channel never applied.
    updates = {
        channel.qid: StatusUpdate(
            channel.qid,
            _held_status(regs[channel.qid]),
            ROLLED_BACK + reason,
            revision,
        )
        for channel in (*rec.accepted, *rec.routed)
        if channel.qid in regs
    }
    # The state already says "removed", but the rollback put the account, keys and chroot
    # back: say so. The next run, still not declared, removes it again.
    for qid in rec.allocation.removed:
        if qid in regs:
            updates[qid] = StatusUpdate(
                qid, _held_status(regs[qid]), REMOVAL_ROLLED_BACK + reason, revision
            )
    # One transaction for all of them: one per channel took 10 s for 10,000 channels.
    store.set_statuses(updates.values(), now=now)


def _record_success(
    store: StateStore,
    rec: Reconciliation,
    revision: str | None,
    now: datetime,
    known: StateSnapshot,
) -> None:
    # `known` is the state as this run left it; read it again only if another writer (a
    # second host sharing the database) moved it on since.
    regs = (known if store.version() == known.version else store.snapshot()).registrations
    updates: dict[QualityId, StatusUpdate] = {}
    # A quality without SFTP is live once its routing entry is.
    for channel in (*rec.accepted, *rec.routed):
        current = regs.get(channel.qid)
        if current is not None and (current.status != "active" or current.revision != revision):
            updates[channel.qid] = StatusUpdate(channel.qid, "active", None, revision)
    for en, reasons in rec.refusals.items():
        current = regs.get(en)
        reason = "; ".join(reasons)
        if current is None or current.status == "removed":
            continue
        # Refused after it was applied: its files are still served (`degraded`, since the
        # first refused run: status_since moves only with the status). Never applied: `failed`.
        status = _held_status(current)
        if current.status != status or current.status_reason != reason:
            updates[en] = StatusUpdate(en, status, reason, None)
    store.set_statuses(updates.values(), now=now)
    # Which file declares each applied channel: when it is refused later, it still says whose.
    store.record_declared(
        to_record(rec.declared, regs, rec.report.root, unchanged=rec.unchanged.keys())
    )


def _held_status(reg: Registration) -> ChannelStatus:
    """The status of a channel this run did not apply: what a sender sees of it. A quality
    coming back after a removal is `pending` again, and serves nothing until applied."""
    served = reg.last_applied_at is not None and reg.status != "pending"
    return "degraded" if served else "failed"


def _audit_entries(
    rec: Reconciliation, result: ApplyResult, revision: str | None, now: datetime
) -> list[dict[str, Any]]:
    users = {c.key: c.user for c in rec.accepted}
    users.update({str(r.qid): r.technical_user for r in rec.removed})
    out = []
    for change in result.applied:
        out.append(
            {
                "time": now.isoformat(),
                "revision": revision,
                "channel": change.channel,
                "user": users.get(change.channel or ""),
                "change": change.action.value,
                "path": change.path,
                "before": change.before.sha256 if change.before else None,
                "after": change.after.sha256 if change.after else None,
                "details": list(change.details),
            }
        )
    for ch in rec.plan.channels:
        if ch.action.value in ("create", "remove", "refused"):
            out.append(
                {
                    "time": now.isoformat(),
                    "revision": revision,
                    "channel": str(ch.qid),
                    "user": ch.technical_user,
                    "change": f"channel-{ch.action.value}",
                    "sender": ch.sender_number,
                    "reasons": list(ch.reasons),
                }
            )
    return out
