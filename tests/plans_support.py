"""The planner corpus as data: load a case of tests/plans/, compute its plan, compare.

A case directory holds what the planner reads and what it must decide:

- `case.yaml`: `why:` (one sentence: what the case proves), optional `now:` (ISO time; the
  default is conftest.NOW), `use_cache:` (default true), `same_plan_as: CASE` (the plan must
  equal that case's, fingerprints included) and `host_record: {settings: {...}}` (the runner
  makes the record the last apply left, with those settings: see `reads_of`);
- `declarations/`: the declaration files, laid out like examples/ (qualities/, certs/, keys/);
- `settings.yaml` (optional): settings on top of DEFAULT_SETTINGS;
- `state.json`: the state snapshot before the run (see `snapshot_to_json`);
- `host.json`: the host as the planner finds it, a `provisioner.hostview.RecordedHost` (every
  path keyed `$ROOT/...`; a path not listed does not exist);
- `expected/plan.json`: the plan, with the root written as `$ROOT` and the opaque digests of
  the fingerprints as `<sha256>`; `expected/reads.json`: what the planner read of the host
  (for cases with `host_record:`).

The planner reads the host through the recorded view: nothing is laid out for it. The root it
is planned for is the same for every case, PLAN_ROOT (sizes and hashes of rendered files, which
hold absolute paths, are then the same on every machine), and the declarations are copied to
PLAN_BASE/declarations, outside any Git work tree (in the checkout the declarations root
would be the repository, and no declared path would be the one the state recorded). The same
host laid out for real must give the same plan (`plan_on_a_real_tree`). One run at a time
uses PLAN_BASE, under a lock, and leaves nothing there.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from provisioner.apply.records import remember
from provisioner.cache import RACY_NS
from provisioner.hostaccounts import NameDatabases
from provisioner.hostview import HostView, LiveHost, RecordedHost, RecordedPath, record_host
from provisioner.plan import Plan
from provisioner.quality_id import QualityId
from provisioner.reconcile import Reconciliation, compute
from provisioner.settings import HostSettings, load_settings
from provisioner.state import Registration, StateSnapshot

PLANS = Path(__file__).resolve().parent / "plans"
ROOT_TOKEN = "$ROOT"
# Where every case is planned. Not a temporary directory: rendered files name the root, and
# their hashes and sizes are part of the expected plans.
PLAN_BASE = Path("/srv/sftp-provisioner-plans")
PLAN_ROOT = PLAN_BASE / "root"
PLAN_LOCK = Path("/run/lock/sftp-provisioner-plans.lock")
# 2026-11-29 20:30 UTC, as conftest.NOW: inside the validity of the example certificates.
DEFAULT_NOW = datetime(2026, 11, 29, 20, 30, tzinfo=UTC)
# What every case runs with unless its settings.yaml says otherwise: a pinned OpenSSH so the
# drop-in does not depend on the installed one, and no `sshd -t` (nothing is applied).
DEFAULT_SETTINGS: dict[str, Any] = {
    "openssh_version": "9.2",
    "hostname": "plans-host",
    "sshd_check": False,
}
_DIGEST = re.compile(r"[0-9a-f]{64}")


def updating() -> bool:
    return os.environ.get("UPDATE_GOLDEN", "") not in ("", "0")


# --- the state snapshot as JSON ------------------------------------------------------------

_TIMES = ("registered_at", "status_since", "last_applied_at")


def _qid_text(qid: QualityId) -> str:
    return f"{qid.enterprise_number}/{qid.quality_type}"


def _qid(text: str) -> QualityId:
    enterprise_number, _, quality_type = text.partition("/")
    return QualityId(enterprise_number, quality_type)


def registration_to_json(reg: Registration) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in Registration.__dataclass_fields__:
        value = getattr(reg, name)
        out[name] = value.isoformat() if isinstance(value, datetime) else value
    return out


def registration_from_json(data: Mapping[str, Any]) -> Registration:
    values = dict(data)
    for name in _TIMES:
        if values.get(name) is not None:
            values[name] = datetime.fromisoformat(values[name])
    return Registration(**values)


def snapshot_to_json(snapshot: StateSnapshot) -> dict[str, Any]:
    """The snapshot as a case stores it: registrations in a list, qualities as `EN/type`."""
    return {
        "version": snapshot.version,
        "next_sender_number": snapshot.next_sender_number,
        "next_uid": snapshot.next_uid,
        "registrations": [
            registration_to_json(r)
            for _, r in sorted(snapshot.registrations.items(), key=lambda kv: kv[1].sender_number)
        ],
        "usernames": {name: _qid_text(q) for name, q in sorted(snapshot.usernames.items())},
        "channel_keys": {fp: _qid_text(q) for fp, q in sorted(snapshot.channel_keys.items())},
        "reserved": sorted(snapshot.reserved),
    }


def snapshot_from_json(data: Mapping[str, Any]) -> StateSnapshot:
    """The StateSnapshot the planner takes, from a case's state.json (absent keys: empty)."""
    regs = [registration_from_json(r) for r in data.get("registrations", [])]
    return StateSnapshot(
        registrations={r.qid: r for r in regs},
        usernames={name: _qid(q) for name, q in data.get("usernames", {}).items()},
        next_sender_number=int(data.get("next_sender_number", 0)),
        next_uid=int(data.get("next_uid", 0)),
        version=int(data.get("version", 0)),
        channel_keys={fp: _qid(q) for fp, q in data.get("channel_keys", {}).items()},
        reserved=frozenset(data.get("reserved", [])),
    )


# --- the host --------------------------------------------------------------------------


def capture(settings: HostSettings) -> dict[str, Any]:
    """host.json of an applied tree: `record_host` without what would tie a case to the
    machine and the moment that made it (stamps, the host record, this host's NSS names).

    Without stamps no channel is vouched for by a host record, and every path is read: the
    plan is the same (see provisioner.hostrecord). A case about reads makes its record in
    the runner instead (`host_record:` in case.yaml); a case about names writes them by hand.
    """
    data = record_host(settings).to_json()
    for entry in data["paths"].values():
        entry.pop("stamp", None)
    data["host_record"] = None
    data["names"] = {"group": {}, "passwd": {}}
    return data


def recorded(host: Mapping[str, Any], root: Path = PLAN_ROOT) -> RecordedHost:
    return RecordedHost.from_json(dict(host), root)


def materialise(host: Mapping[str, Any], root: Path) -> None:
    """Lay a recorded host out for real under `root`, owners and modes included.

    Directories above the recorded paths are made 0755 root:root, as on a Debian host. Modes
    of directories are set last, deepest first, so that one recorded without write
    permission still receives its content.
    """
    view = recorded(host, root)
    root.mkdir(parents=True, exist_ok=True)
    dirs: list[tuple[Path, RecordedPath]] = []
    for key, entry in sorted(view.paths.items()):
        path = Path(key)
        _lay(path, entry)
        if entry.kind == "dir":
            dirs.append((path, entry))
        elif entry.kind == "symlink":
            os.lchown(path, entry.owner, entry.group)
        elif entry.kind != "missing":
            os.chown(path, entry.owner, entry.group)
            os.chmod(path, entry.mode)
    for path, entry in sorted(dirs, key=lambda d: len(d[0].parts), reverse=True):
        os.chown(path, entry.owner, entry.group)
        os.chmod(path, entry.mode)


def _lay(path: Path, entry: RecordedPath) -> None:
    """Make one recorded path (owner and mode are the caller's)."""
    if entry.kind == "missing":
        return
    if entry.kind == "dir":
        path.mkdir(parents=True, exist_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if entry.kind == "symlink":
        os.symlink(entry.target or "", path)
    elif entry.kind == "other":
        os.mkfifo(path)
    else:
        path.write_bytes(entry.content or b"")


@contextmanager
def workplace(
    case: Case,
    *,
    real: bool = False,
    host: Mapping[str, Any] | None = None,
    base: Path = PLAN_BASE,
) -> Iterator[Path]:
    """PLAN_BASE for the time of the block, one run at a time: the case's declarations in
    `declarations/`, and with `real` its host (or `host`) laid out in `root/`. Yields the
    base."""
    PLAN_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(PLAN_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _remove(base)
            base.mkdir(parents=True)
            shutil.copytree(case.declarations, base / "declarations")
            if real or host is not None:
                materialise(host if host is not None else case.host(), base / "root")
            yield base
        finally:
            _remove(base)


def _remove(root: Path) -> None:
    if root.is_symlink():
        root.unlink()
    elif root.exists():
        for dirpath, dirnames, _ in os.walk(root):
            # A recorded directory may have no write permission for its owner.
            for name in dirnames:
                path = Path(dirpath) / name
                if not path.is_symlink():
                    path.chmod(0o700)
        shutil.rmtree(root)


# --- a case --------------------------------------------------------------------------------


def _yaml(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text("utf-8")) if path.exists() else None


@dataclass
class Case:
    directory: Path
    why: str
    now: datetime
    use_cache: bool
    settings: dict[str, Any] = field(default_factory=dict)
    # Another case whose plan this one must equal, fingerprints included (see test_plans).
    same_plan_as: str | None = None
    # The settings of the last apply, whose host record the runner makes (see `reads_of`).
    host_record: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.directory.name

    @property
    def declarations(self) -> Path:
        return self.directory / "declarations"

    @property
    def before(self) -> Path:
        """What the last apply read and left, where it differs from the case (cases about
        reads only): `declarations/`, `host.json`."""
        return self.directory / "before"

    def snapshot(self) -> StateSnapshot:
        path = self.directory / "state.json"
        if not path.exists():
            return StateSnapshot.empty()
        return snapshot_from_json(json.loads(path.read_text("utf-8")))

    def host(self) -> dict[str, Any]:
        path = self.directory / "host.json"
        if not path.exists():
            return {"format": 1, "paths": {}}
        data: dict[str, Any] = json.loads(path.read_text("utf-8"))
        return data

    def host_settings(self, root: Path) -> HostSettings:
        return settings_for(self.settings, root)


def settings_for(extra: Mapping[str, Any], root: Path) -> HostSettings:
    """The settings of a case: DEFAULT_SETTINGS, then the case's own, rooted at `root`."""
    return load_settings(None, overrides={**DEFAULT_SETTINGS, **extra}, root=root, environ={})


def load_case(directory: Path) -> Case:
    meta = _yaml(directory / "case.yaml") or {}
    now = meta.get("now")
    if isinstance(now, str):
        now = datetime.fromisoformat(now)
    if isinstance(now, datetime) and now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return Case(
        directory=directory,
        why=str(meta.get("why", "")),
        now=now or DEFAULT_NOW,
        use_cache=bool(meta.get("use_cache", True)),
        settings=dict(_yaml(directory / "settings.yaml") or {}),
        same_plan_as=meta.get("same_plan_as"),
        host_record=(
            dict(meta["host_record"].get("settings") or {}) if "host_record" in meta else None
        ),
    )


def case_directories() -> list[Path]:
    return sorted(p for p in PLANS.iterdir() if p.is_dir() and (p / "case.yaml").exists())


def reconcile(
    case: Case, base: Path, host: HostView | None, settings: HostSettings | None = None
) -> Reconciliation:
    """compute() for a case in its workplace `base`, run from there."""
    return compute(
        settings or case.host_settings(base / "root"),
        [base / "declarations"],
        case.snapshot(),
        now=case.now,
        cwd=base,
        use_cache=case.use_cache,
        host=host,
    )


def plan_of(case: Case) -> Plan:
    """The plan on the recorded host: nothing is laid out but the declarations."""
    with workplace(case) as base:
        return reconcile(case, base, recorded(case.host(), base / "root")).plan


class RealTree(LiveHost):
    """The real file system (and euid, and sshd), with the user and group names of the case
    instead of this machine's: a case must not depend on the accounts of the host that runs
    it."""

    def __init__(self, case: Case) -> None:
        self._names = recorded(case.host()).name_databases()

    def name_databases(self) -> NameDatabases:
        return self._names


def plan_on_a_real_tree(case: Case) -> Plan:
    """The plan on the recorded host laid out for real, read as a host is read."""
    with workplace(case, real=True) as base:
        return reconcile(case, base, RealTree(case)).plan


def reads_of(case: Case) -> tuple[Plan, dict[str, list[str]]]:
    """The plan, and what the planner read, on a host its last apply left with a host record.

    The record is made here, as apply makes it, and not stored in the case: its keys digest
    the code, so a stored one would be stale at the next commit. The host of the last apply
    (`before/host.json`, or host.json when nothing changed on the host since) is laid out for
    real with the declarations it read (`before/declarations/`, or declarations/), planned
    with the settings of the last apply (case.yaml `host_record: settings:`) and remembered
    once its files are old enough to be stamped. Then the tree is brought to host.json the
    way a hand would (a file rewritten, a mode changed: see `_drift`), recorded, and planned
    with the case's declarations and settings.
    """
    assert case.host_record is not None, f"{case.name}: no host_record in case.yaml"
    before_host = case.before / "host.json"
    before_decls = case.before / "declarations"
    last_host = json.loads(before_host.read_text("utf-8")) if before_host.exists() else None
    with workplace(case, real=True, host=last_host) as base:
        root = base / "root"
        decls = base / "declarations"
        if before_decls.is_dir():
            shutil.rmtree(decls)
            shutil.copytree(before_decls, decls)
        tree = RealTree(case)
        last = reconcile(case, base, tree, settings_for(case.host_record, root))
        # Files younger than the racy window are recorded without a stamp (and read again).
        time.sleep(RACY_NS / 1e9 + 0.1)
        remember(last, [])
        if before_decls.is_dir():
            shutil.rmtree(decls)
            shutil.copytree(case.declarations, decls)
        if last_host is not None:
            _drift(recorded(last_host, root), recorded(case.host(), root))
        settings = case.host_settings(root)
        view = record_host(settings, tree)
        plan = reconcile(case, base, view, settings).plan
        return plan, {"reads": sorted(view.reads), "listed": sorted(view.listed)}


def _drift(was: RecordedHost, now: RecordedHost) -> None:
    """Change the real tree laid out from `was` into `now`, touching only what differs."""
    for key in sorted(set(was.paths) - set(now.paths), reverse=True):
        path = Path(key)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for key, entry in sorted(now.paths.items()):
        old = was.paths.get(key)
        if old == entry:
            continue
        path = Path(key)
        if old is not None and (old.kind != entry.kind or old.content != entry.content):
            if old.kind == "dir":
                shutil.rmtree(path)
            else:
                path.unlink()
            old = None
        if old is None:
            _lay(path, entry)
        if entry.kind == "symlink":
            os.lchown(path, entry.owner, entry.group)
        else:
            os.chown(path, entry.owner, entry.group)
            os.chmod(path, entry.mode)


def normalised(plan: Plan, root: Path = PLAN_ROOT) -> dict[str, Any]:
    """The plan as a case expects it: `$ROOT` for the root, `<sha256>` for opaque digests.

    The fingerprints digest what the plan was computed from (settings dumps, absolute paths):
    their form is checked, their value is not (it changes with every unrelated setting).
    """
    data = exact(plan, root)
    for name, value in data["fingerprints"].items():
        if isinstance(value, str) and _DIGEST.fullmatch(value):
            data["fingerprints"][name] = "<sha256>"
    return data


def exact(plan: Plan, root: Path = PLAN_ROOT) -> dict[str, Any]:
    """The plan with `$ROOT` for the root and nothing else hidden: digests as computed."""
    data = _rooted(plan.to_json(), str(root))
    assert isinstance(data, dict)
    return data


def _rooted(value: Any, root: str) -> Any:
    if isinstance(value, str):
        return value.replace(root, ROOT_TOKEN)
    if isinstance(value, list):
        return [_rooted(v, root) for v in value]
    if isinstance(value, dict):
        return {k: _rooted(v, root) for k, v in value.items()}
    return value


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
