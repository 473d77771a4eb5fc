"""A plan a reviewer reads: a Markdown summary that fits a pull-request comment, `--summary`
in every format, owners, groups and modes of new paths, and `--no-diff` on apply too.

Golden summaries of the examples' first plan are in tests/golden/plan-summary/ (computed,
read-only, for the fixed root of tests/test_golden_tree.py); refresh them with
`UPDATE_GOLDEN=1 pytest tests/test_plan_review.py` and review the diff.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import NOW, REPO, USER_SECSOC, Host, require_root

from provisioner import planformat
from provisioner.plan import (
    ChannelAction,
    ChannelPlan,
    Fingerprints,
    PathAction,
    PathChange,
    PathState,
    Plan,
)
from provisioner.reconcile import compute
from provisioner.settings import load_settings
from provisioner.state import StateSnapshot

GOLDEN = REPO / "tests" / "golden" / "plan-summary"
PLAN_ROOT = Path("/srv/sftp-provisioner-golden")
LIMIT = 60_000


# --- a synthetic plan of any size ------------------------------------------------------------


def _key_diff(path: str, user: str) -> str:
    return (
        f"--- {path} (now)\n+++ {path} (planned)\n@@ -0,0 +1,2 @@\n"
        f"+# authorized_keys of {user}\n"
        f"+restrict ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{'x' * 43} {user}@example\n"
    )


def synthetic_plan(n: int, *, refused: int = 0, removed: int = 0, host_lines: int = 400) -> Plan:
    """`n` new channels like a first apply's (a chroot, six exchange directories, keys), the
    host-wide files with their diffs, then `refused` refusals and `removed` removals listed
    last, so that a summary must bring them forward."""
    root = "/srv/sftp-provisioner-big"
    channels: list[ChannelPlan] = []
    changes: list[PathChange] = []
    big = "".join(f"+line {i} of a large host file\n" for i in range(host_lines))
    for role in ("passwd", "group", "shadow", "routing", "sshd-dropin"):
        path = f"{root}/host/{role}"
        changes.append(
            PathChange(
                path,
                PathAction.CREATE,
                "file",
                None,
                PathState("file", 0, 0, 0o644, "0" * 64, 10),
                None,
                role,
                diff=f"--- {path} (now)\n+++ {path} (planned)\n@@ -0,0 +1,{host_lines} @@\n{big}",
            )
        )
    for i in range(n):
        en, user = f"{i:010d}", f"USER{i:08d}"
        channels.append(
            ChannelPlan(en, user, f"{100000 + i}", ChannelAction.CREATE, f"q/{en}.yaml")
        )
        chroot = f"{root}/srv/sftp/{user}"
        changes.append(
            PathChange(
                chroot,
                PathAction.CREATE,
                "dir",
                None,
                PathState("dir", 0, 0, 0o755),
                en,
                "chroot",
            )
        )
        for sub in ("IN", "INTEST", "INTEST-S", "OUT", "OUTTEST", "OUTTEST-S"):
            changes.append(
                PathChange(
                    f"{chroot}/{sub}",
                    PathAction.CREATE,
                    "dir",
                    None,
                    PathState("dir", 200000 + i, 0, 0o2770),
                    en,
                    "exchange",
                )
            )
        keys = f"{root}/etc/ssh/keys/{user}"
        changes.append(
            PathChange(
                keys,
                PathAction.CREATE,
                "file",
                None,
                PathState("file", 0, 0, 0o644, "1" * 64, 120),
                en,
                "authorized-keys",
                diff=_key_diff(keys, user),
            )
        )
    for i in range(refused):
        channels.append(
            ChannelPlan(
                f"9{i:09d}",
                f"REFUSED{i:04d}",
                None,
                ChannelAction.REFUSED,
                f"q/refused-{i}.yaml",
                (f"q/refused-{i}.yaml:3:5: error[invalid-value] not a valid phone number",),
            )
        )
    for i in range(removed):
        en, user = f"8{i:09d}", f"GONE{i:04d}"
        channels.append(ChannelPlan(en, user, f"{900000 + i}", ChannelAction.REMOVE))
        changes.append(
            PathChange(
                f"{root}/srv/sftp/{user}",
                PathAction.ARCHIVE,
                "dir",
                PathState("dir", 0, 0, 0o755),
                None,
                en,
                "chroot",
                details=("3 files, 1234 bytes kept",),
            )
        )
    return Plan(
        created_at=NOW.isoformat(),
        root=root,
        fingerprints=Fingerprints("d" * 64, 0, "o" * 64, "s" * 64, None),
        channels=channels,
        changes=changes,
    )


def _balanced(md: str) -> None:
    assert md.count("<details>") == md.count("</details>")
    depth = 0
    for line in md.splitlines():
        if line == "<details>":
            assert depth == 0, "details nested"
            depth += 1
        elif line == "</details>":
            depth -= 1
        elif re.fullmatch(r"`{3,}diff", line):
            assert depth == 1, "a diff outside a folded block"
    assert depth == 0


def test_markdown_of_10000_channels_fits_a_comment_and_says_where_the_rest_is() -> None:
    plan = synthetic_plan(10_000, refused=3, removed=2)
    full = planformat.render_markdown(plan, max_chars=0)
    assert len(full) > 2_000_000  # what a reviewer was given before
    md = planformat.render_markdown(plan, full_plan="plan.json")
    assert len(md) < LIMIT
    _balanced(md)
    lines = md.splitlines()
    assert lines[0].startswith("### sftp-provisioner plan: 10000 to create, 0 to change, ")
    # The counts are complete, whatever was left out.
    assert "| 10,000 | 0 | 2 | 0 | 3 | 80,007 | 0 |" in lines
    # Refusals and removals come first, although the plan lists them last.
    rows = [ln for ln in lines if ln.startswith("| ") and "**" in ln]
    assert [r.split("**")[1] for r in rows[:5]] == ["refused"] * 3 + ["remove"] * 2
    assert "- :no_entry: **REFUSED0002** refused:" in lines
    assert (
        "- archive `/srv/sftp-provisioner-big/srv/sftp/GONE0001` (3 files, 1234 bytes kept)" in md
    )
    note = lines[-1]
    assert note.startswith("> :scissors: **Shortened to stay under 60,000 characters**: ")
    assert re.search(r": [\d,]+ channels, .*not shown \(the counts above are complete\)", note)
    assert "the full plan (JSON, every diff): `plan.json`" in note


def test_a_shortened_plan_names_a_ci_artifact_url() -> None:
    md = planformat.render_markdown(
        synthetic_plan(2_000), full_plan="https://ci.example/run/7/artifacts/plan.json"
    )
    assert len(md) < LIMIT
    assert "the full plan: [https://ci.example/run/7/artifacts/plan.json](https://" in md


def test_without_a_saved_plan_the_note_says_how_to_get_one() -> None:
    md = planformat.render_markdown(synthetic_plan(2_000))
    assert "save it with `--out PLAN.json`" in md.splitlines()[-1]


def test_a_small_plan_is_not_shortened_and_keeps_every_diff() -> None:
    plan = synthetic_plan(3, host_lines=20)
    md = planformat.render_markdown(plan)
    assert md == planformat.render_markdown(plan, max_chars=0)
    assert ":scissors:" not in md
    assert md.count("```diff") == sum(1 for c in plan.changes if c.diff)
    _balanced(md)


def test_a_channel_whose_diffs_do_not_fit_keeps_its_owners_and_modes() -> None:
    plan = synthetic_plan(1)
    md = planformat.render_markdown(plan, max_chars=6_000)
    assert len(md) < 6_000
    assert "(diffs left out)" in md
    assert "(owner 200000:0, mode 2770)" in md


def test_summary_markdown_has_no_details_and_stays_under_the_limit() -> None:
    md = planformat.render_markdown(synthetic_plan(10_000), summary_only=True)
    assert len(md) < LIMIT
    assert "<details>" not in md
    assert "80,005 path changes not shown in this summary" in md


@pytest.mark.slow
def test_a_real_10000_channel_plan_fits_a_comment(tmp_path: Path) -> None:
    """Generated declarations, planned by the command against an empty --root (no state)."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        generate: Any = importlib.import_module("generate")
    finally:
        sys.path.remove(str(REPO / "bench"))
    decls = tmp_path / "decls"
    generate.generate(10_000, decls)
    host = Host(tmp_path / "host")
    done = host.cli(
        "plan",
        str(decls),
        "--root",
        "root",
        "--settings",
        "settings.yaml",
        "--format",
        "markdown",
        "--out",
        "plan.json",
    )
    assert done.returncode == 2, done.stderr[-2000:]
    md = done.stdout
    print(f"10,000 channels: markdown plan of {len(md):,} characters")
    assert len(md) < LIMIT
    assert "| 10,000 | 0 | 0 | 0 | 0 |" in md
    assert "the full plan (JSON, every diff): `plan.json`" in md
    saved = json.loads((host.base / "plan.json").read_text("utf-8"))
    assert saved["counts"]["create"] == 10_000
    assert not host.root.exists()  # planned, nothing created


# --- owners, groups and modes ---------------------------------------------------------------


def test_new_paths_show_owner_group_and_mode_in_text_markdown_and_json(host: Host) -> None:
    plan = host.plan()
    text = planformat.render_text(plan)
    assert re.search(
        rf"  create   dir  \S+/srv/sftp/{USER_SECSOC}/IN \(owner 200000:0, mode 2770\)", text
    )
    assert re.search(rf"  create   dir  \S+/srv/sftp/{USER_SECSOC} \(owner 0:0, mode 0755\)", text)
    assert re.search(r"  create   file \S+/extrausers/shadow \(owner 0:0, mode 0640\)", text)
    md = planformat.render_markdown(plan)
    assert f"/srv/sftp/{USER_SECSOC}/IN` (owner 200000:0, mode 2770)" in md
    data = json.loads(planformat.render_json(plan))
    inbox = next(c for c in data["changes"] if c["path"].endswith(f"{USER_SECSOC}/IN"))
    assert (inbox["after"]["owner"], inbox["after"]["group"], inbox["after"]["mode"]) == (
        200000,
        0,
        0o2770,
    )


def test_a_changed_file_shows_what_it_keeps_and_what_moves(host: Host) -> None:
    host.apply()
    keys = host.root / "etc/ssh/sftp-provisioner/authorized_keys" / USER_SECSOC
    keys.chmod(0o666)
    with keys.open("a") as fh:
        fh.write("# extra\n")
    text = planformat.render_text(host.plan())
    assert re.search(rf"  update   file \S+/{USER_SECSOC} \(mode 0666 -> 0644\)", text)


# --- --summary in every format, as golden files ---------------------------------------------


SUFFIX = {"json": "json", "markdown": "md", "text": "txt"}


def _golden_plan(host: Host) -> Plan:
    settings = load_settings(host.settings_file, root=PLAN_ROOT, environ={})
    return compute(settings, [host.decls], StateSnapshot.empty(), now=NOW, cwd=host.base).plan


@pytest.mark.parametrize("fmt", ["json", "markdown", "text"])
def test_first_plan_summary_matches_golden(host: Host, fmt: str) -> None:
    require_root()  # as a normal user the plan says owners are not managed: another plan
    plan = _golden_plan(host)
    text = planformat.render(plan, fmt, summary_only=True)
    if fmt == "json":
        data = json.loads(text)
        assert data["summary"] is True and "changes" not in data
        data["fingerprints"] = dict.fromkeys(data["fingerprints"], "<masked>")
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    golden = GOLDEN / f"first-apply.{SUFFIX[fmt]}"
    import os

    if os.environ.get("UPDATE_GOLDEN", "") not in ("", "0"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, "utf-8")
    assert text == golden.read_text("utf-8"), f"{golden} differs (UPDATE_GOLDEN=1 refreshes)"


@pytest.mark.parametrize("fmt", ["text", "json", "markdown"])
def test_plan_summary_on_the_command_line(host: Host, fmt: str) -> None:
    done = host.run("plan", "--summary", "--format", fmt, "--out", "plan.json")
    assert done.returncode == 2, done.stderr
    assert "+restrict" not in done.stdout and "/IN" not in done.stdout
    assert USER_SECSOC in done.stdout
    if fmt == "json":
        assert json.loads(done.stdout)["counts"]["create"] == 2
    # --out still saves the whole plan, loadable by apply --plan.
    saved = json.loads((host.base / "plan.json").read_text("utf-8"))
    assert len(saved["changes"]) == 30 and Plan.from_json(saved).has_changes


# --- apply prints the plan it applies; --no-diff and --summary ------------------------------


def test_apply_prints_the_diff_unless_told_not_to(host: Host) -> None:
    done = host.run("apply")
    assert done.returncode == 0, done.stderr
    assert "+restrict ssh-ed25519 " in done.stdout
    assert "Applied 30 change(s)." in done.stdout


def test_apply_no_diff_lists_paths_without_diffs(host: Host) -> None:
    done = host.run("apply", "--no-diff")
    assert done.returncode == 0, done.stderr
    assert "Changes on the host:" in done.stdout and "+restrict" not in done.stdout
    assert "Applied 30 change(s)." in done.stdout


def test_apply_summary_lists_channels_only(host: Host) -> None:
    done = host.run("apply", "--summary")
    assert done.returncode == 0, done.stderr
    assert "Changes on the host:" not in done.stdout
    assert "(30 path changes on the host not shown)" in done.stdout
    assert "Applied 30 change(s)." in done.stdout
