"""The planner corpus as data: load a case of tests/plans/, compute its plan, compare.

A case directory holds what the planner reads and what it must decide:

- `case.yaml`: `why:` (one sentence: what the case proves), optional `now:` (ISO time; the
  default is conftest.NOW) and `use_cache:` (default true);
- `declarations/`: the declaration files, laid out like examples/ (qualities/, certs/, keys/);
- `settings.yaml` (optional): settings on top of DEFAULT_SETTINGS;
- `state.json`: the state snapshot before the run (see `snapshot_to_json`);
- `host.json`: the host as the planner finds it, every path under `$ROOT` (see `host_to_json`);
- `expected/plan.json`: the plan, with the root written as `$ROOT` and the opaque digests of
  the fingerprints as `<sha256>`.

Every case is computed in the same fixed place, PLAN_BASE: the host is laid out in its `root/`
(sizes and hashes of rendered files, which hold absolute paths, are then the same on every
machine) and the declarations are copied to its `declarations/`, outside any Git work tree (in
the checkout, the declarations root would be the repository and every declared path would
differ from the one the state recorded). Both are removed after the run, under a lock, so two
runs cannot share them.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import shutil
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

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


# --- the host as JSON ----------------------------------------------------------------------


def host_to_json(root: Path, *, skip: set[Path] | frozenset[Path] = frozenset()) -> dict[str, Any]:
    """Every path under `root` (symlinks not followed), keyed `$ROOT/relative/path`.

    Files carry `text` when they are UTF-8, `base64` otherwise; symlinks their `target`. The
    root inside a text or a target is written `$ROOT` too, and `materialise` puts it back.
    Paths in `skip` (and everything under them) are left out: the state database, the lock,
    the audit log and the caches are the run's bookkeeping, not what the planner looks at.
    """
    entries: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if base / d not in skip)
        for name in sorted([*dirnames, *filenames]):
            path = base / name
            if path in skip:
                continue
            entries[f"{ROOT_TOKEN}/{path.relative_to(root)}"] = _entry(path, str(root))
    return {"format": 1, "paths": dict(sorted(entries.items()))}


def _entry(path: Path, root: str) -> dict[str, Any]:
    # Rendered files name the root they were rendered for: recorded as `$ROOT`.
    st = os.lstat(path)
    entry: dict[str, Any] = {"owner": st.st_uid, "group": st.st_gid}
    entry["mode"] = f"{stat.S_IMODE(st.st_mode):04o}"
    if stat.S_ISLNK(st.st_mode):
        return {"kind": "symlink", **entry, "target": os.readlink(path).replace(root, ROOT_TOKEN)}
    if stat.S_ISDIR(st.st_mode):
        return {"kind": "dir", **entry}
    if stat.S_ISREG(st.st_mode):
        data = path.read_bytes()
        try:
            return {"kind": "file", **entry, "text": data.decode("utf-8").replace(root, ROOT_TOKEN)}
        except UnicodeDecodeError:
            return {"kind": "file", **entry, "base64": base64.b64encode(data).decode()}
    if stat.S_ISFIFO(st.st_mode):
        return {"kind": "fifo", **entry}
    raise ValueError(f"{path}: a case cannot record this kind of file")


def materialise(host: Mapping[str, Any], root: Path) -> None:
    """Lay out a recorded host under `root` (which must not exist), owners and modes included.

    Modes of directories are set last, deepest first, so that a directory recorded without
    write permission still receives its content.
    """
    root.mkdir(parents=True)
    dirs: list[tuple[Path, dict[str, Any]]] = []
    for key, entry in host["paths"].items():
        path = root / key.removeprefix(ROOT_TOKEN + "/")
        kind = entry["kind"]
        if kind == "dir":
            path.mkdir(parents=True, exist_ok=True)
            dirs.append((path, entry))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "symlink":
            os.symlink(entry["target"].replace(ROOT_TOKEN, str(root)), path)
            os.lchown(path, entry["owner"], entry["group"])
            continue
        if kind == "fifo":
            os.mkfifo(path)
        else:
            content = (
                entry["text"].replace(ROOT_TOKEN, str(root)).encode("utf-8")
                if "text" in entry
                else base64.b64decode(entry["base64"])
            )
            path.write_bytes(content)
        os.chown(path, entry["owner"], entry["group"])
        os.chmod(path, int(entry["mode"], 8))
    for path, entry in sorted(dirs, key=lambda d: len(d[0].parts), reverse=True):
        os.chown(path, entry["owner"], entry["group"])
        os.chmod(path, int(entry["mode"], 8))


@contextmanager
def laid_out(case: Case, base: Path = PLAN_BASE) -> Iterator[Path]:
    """The case's host in `base/root` and its declarations in `base/declarations` for the
    time of the block, one run at a time; yields `base`."""
    PLAN_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(PLAN_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _remove(base)
            base.mkdir(parents=True)
            materialise(case.host(), base / "root")
            shutil.copytree(case.declarations, base / "declarations")
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

    @property
    def name(self) -> str:
        return self.directory.name

    @property
    def declarations(self) -> Path:
        return self.directory / "declarations"

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
    )


def case_directories() -> list[Path]:
    return sorted(p for p in PLANS.iterdir() if p.is_dir() and (p / "case.yaml").exists())


def reconcile(case: Case, base: Path) -> Reconciliation:
    """compute() for a case laid out in `base` (see `laid_out`), run from there."""
    return compute(
        case.host_settings(base / "root"),
        [base / "declarations"],
        case.snapshot(),
        now=case.now,
        cwd=base,
        use_cache=case.use_cache,
    )


def plan_of(case: Case) -> Plan:
    with laid_out(case) as base:
        return reconcile(case, base).plan


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
