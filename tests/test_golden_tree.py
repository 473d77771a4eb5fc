"""Golden rendered tree of the bundled examples, and golden plans.

`tests/golden/examples/tree/` holds every file a first apply of `examples/` writes into an
empty `--root`, and `tests/golden/examples/MANIFEST` every managed path with its kind, owner,
group and mode. `tests/golden/plans/` holds the first plan in JSON, Markdown and text, computed (read-only)
for the fixed root /srv/sftp-provisioner-golden.

Determinism: the clock is fixed (conftest.NOW), `openssh_version: "9.2"` is pinned in the
settings so the drop-in does not depend on the installed OpenSSH, sender numbers and uids
follow from the sorted enterprise numbers, and the temporary root of the applied tree is
written as `<ROOT>` in the golden files (rendered files hold absolute, rooted paths).

Refresh after an intended change of templates or rendering, as root (owners are part of the
manifest), then review the diff:

    UPDATE_GOLDEN=1 pytest tests/test_golden_tree.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import NOW, REPO, Entry, Host, require_root

from provisioner import planformat
from provisioner.plan import Plan
from provisioner.reconcile import compute
from provisioner.settings import load_settings
from provisioner.state import StateSnapshot

GOLDEN = REPO / "tests" / "golden"
TREE_DIR = GOLDEN / "examples" / "tree"
MANIFEST = GOLDEN / "examples" / "MANIFEST"
PLANS = GOLDEN / "plans"
PLACEHOLDER = "<ROOT>"
SUFFIX = {"json": "json", "markdown": "md", "text": "txt"}


def updating() -> bool:
    return os.environ.get("UPDATE_GOLDEN", "") not in ("", "0")


def normalise(text: str, host: Host) -> str:
    return text.replace(str(host.root), PLACEHOLDER)


def _managed(host: Host) -> dict[str, Entry]:
    """The managed paths (the desired tree) as they are under the root.

    The directories above them (`etc`, `var/lib`, ...) exist on a real host and are not
    managed; under a fresh root their modes would follow the umask, so they are left out.
    """
    wanted = set(host.compute().tree.nodes)
    return {rel: e for rel, e in host.tree().items() if host.root / rel in wanted}


def _manifest_lines(host: Host, *, owners: bool) -> list[str]:
    lines = []
    for rel, e in sorted(_managed(host).items()):
        who = f"{e.uid}\t{e.gid}" if owners else "-\t-"
        lines.append(f"{rel}\t{e.kind}\t{who}\t{e.mode:04o}")
    return lines


@pytest.fixture
def applied(host: Host) -> Host:
    result = host.apply()
    assert not result.plan.refused
    return host


def test_rendered_files_match_golden(applied: Host) -> None:
    host = applied
    files = {
        rel: normalise(e.content.decode("utf-8"), host)
        for rel, e in _managed(host).items()
        if e.kind == "file" and e.content is not None
    }
    if updating():
        require_root()
        shutil.rmtree(TREE_DIR, ignore_errors=True)
        for rel, text in files.items():
            target = TREE_DIR / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, "utf-8")
    golden = {
        str(p.relative_to(TREE_DIR)): p.read_text("utf-8")
        for p in TREE_DIR.rglob("*")
        if p.is_file()
    }
    assert sorted(files) == sorted(golden), "the set of rendered files changed"
    for rel, text in files.items():
        assert text == golden[rel], (
            f"{rel} differs from {TREE_DIR / rel} (UPDATE_GOLDEN=1 refreshes)"
        )


def test_manifest_matches_golden(applied: Host) -> None:
    host = applied
    owners = os.geteuid() == 0
    lines = _manifest_lines(host, owners=owners)
    header = "# path\tkind\towner\tgroup\tmode (first apply of examples/ as root)"
    if updating():
        require_root()
        MANIFEST.write_text("\n".join([header, *lines]) + "\n", "utf-8")
    golden = [ln for ln in MANIFEST.read_text("utf-8").splitlines() if not ln.startswith("#")]
    if not owners:
        # As a normal user the files are ours: compare everything but owner and group.
        golden = [re.sub(r"\t\d+\t\d+\t", "\t-\t-\t", ln) for ln in golden]
    assert lines == golden


def test_manifest_owners_as_root(applied: Host) -> None:
    """The manifest's owners are real only as root (CI runs as root: no skip there)."""
    require_root()
    golden = [ln for ln in MANIFEST.read_text("utf-8").splitlines() if not ln.startswith("#")]
    assert _manifest_lines(applied, owners=True) == golden
    # Spot checks that keep the golden file honest.
    rows = {ln.split("\t")[0]: ln.split("\t")[1:] for ln in golden}
    assert rows["srv/sftp/secsocexemple01"] == ["dir", "0", "0", "0755"]
    assert rows["srv/sftp/secsocexemple01/IN"] == ["dir", "200000", "0", "2770"]
    assert rows["srv/sftp/EXPDEMOONDERNEMING/OUT"] == ["dir", "200001", "0", "2770"]
    assert rows["etc/ssh/sftp-provisioner/authorized_keys/secsocexemple01"] == [
        "file",
        "0",
        "0",
        "0644",
    ]
    assert rows["var/lib/extrausers/shadow"] == ["file", "0", "0", "0640"]


# --- golden plans --------------------------------------------------------------------------


# Plans are computed (read-only) for a fixed root that does not exist: every path, size and
# hash in them is then the same on every machine. Nothing is written there.
PLAN_ROOT = Path("/srv/sftp-provisioner-golden")


def _first_plan(host: Host) -> Plan:
    settings = load_settings(host.settings_file, root=PLAN_ROOT, environ={})
    assert not settings.sshd_dropin.exists()
    rec = compute(settings, [host.decls], StateSnapshot.empty(), now=NOW, cwd=host.base)
    return rec.plan


def _plan_json(plan: Plan) -> str:
    data = plan.to_json()
    for name, value in data["fingerprints"].items():
        if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value):
            # Opaque digests over absolute paths of the declarations copy: form, not value.
            data["fingerprints"][name] = "<sha256>"
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("fmt", ["json", "markdown", "text"])
def test_first_plan_matches_golden(host: Host, fmt: str) -> None:
    # As a normal user the plan says that owners are not managed: a different plan.
    require_root()
    plan = _first_plan(host)
    text = _plan_json(plan) if fmt == "json" else planformat.render(plan, fmt)
    golden = PLANS / f"first-apply.{SUFFIX[fmt]}"
    if updating():
        PLANS.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, "utf-8")
    assert text == golden.read_text("utf-8"), f"{golden} differs (UPDATE_GOLDEN=1 refreshes)"


def test_golden_plan_is_a_loadable_saved_plan() -> None:
    data = json.loads((PLANS / "first-apply.json").read_text("utf-8"))
    plan = Plan.from_json(data)
    assert plan.counts()["create"] == 2
    assert plan.has_changes
