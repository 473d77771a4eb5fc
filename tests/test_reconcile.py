"""`plan`: exit codes, the JSON and Markdown renderings, saved plans, and bad settings files.

The golden plans themselves are in test_golden_tree.py; here the structure is checked on
plans with every kind of change (create, update, metadata, archive, refused, unknown).
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
from conftest import (
    EN_ONDERNEMING,
    EN_SECSOC,
    EN_THIRD,
    NOW,
    Q_SECSOC,
    USER_ONDERNEMING,
    USER_SECSOC,
    Host,
    add_key,
    add_third_quality,
)

from provisioner import planformat
from provisioner.plan import ChannelAction, PathAction, Plan
from provisioner.reconcile import compute
from provisioner.state import StateSnapshot

KEYS = "etc/ssh/sftp-provisioner/authorized_keys"


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stdout + done.stderr


@pytest.fixture
def busy(host: Host) -> Host:
    """A host whose next plan has one of everything: create, change, remove, refused, drift."""
    host.apply()
    (host.root / "srv/sftp" / USER_ONDERNEMING / "IN" / "upload").write_bytes(b"x" * 10)
    host.quality(EN_ONDERNEMING).unlink()
    add_key(host, EN_SECSOC, 21)
    add_third_quality(host)
    (host.root / KEYS / "stranger").write_text("ssh-ed25519 AAAA stranger\n")
    (host.root / "var/lib/extrausers/passwd").chmod(0o600)
    (host.root / "srv/sftp" / USER_SECSOC).chmod(0o750)
    return host


# --- exit codes ----------------------------------------------------------------------------


def test_exit_codes_changes_none_refused(host: Host) -> None:
    first = host.run("plan")
    assert first.returncode == 2, first.stderr
    assert first.stdout.rstrip().endswith("path changes")
    assert host.run("apply").returncode == 0
    assert host.run("plan").returncode == 0
    host.edit(EN_SECSOC, "language: fr", "language: xx")
    refused = host.run("plan")
    assert refused.returncode == 1
    assert "1 refused" in refused.stdout


def test_no_declarations_is_an_error_not_a_removal(host: Host) -> None:
    host.apply()
    (host.base / "empty").mkdir()
    done = host.cli("plan", "empty", "--root", "root", "--settings", "settings.yaml")
    no_traceback(done)
    assert done.returncode == 1
    assert "no declarations to reconcile" in done.stderr
    mistyped = host.cli("apply", "exmaples", "--root", "root", "--settings", "settings.yaml")
    assert mistyped.returncode == 1
    assert "no such file or directory" in mistyped.stderr
    assert host.snapshot().registrations[Q_SECSOC].status == "active"


# --- the plan as data ----------------------------------------------------------------------


def test_plan_has_one_of_everything(busy: Host) -> None:
    plan = busy.plan()
    actions = {c.enterprise_number: c.action for c in plan.channels}
    assert actions == {
        EN_SECSOC: ChannelAction.CHANGE,
        EN_ONDERNEMING: ChannelAction.REMOVE,
        EN_THIRD: ChannelAction.CREATE,
    }
    kinds = {c.action for c in plan.changes}
    assert kinds >= {
        PathAction.CREATE,
        PathAction.UPDATE,
        PathAction.METADATA,
        PathAction.DELETE,
        PathAction.ARCHIVE,
    }
    assert plan.unknown == [str(busy.root / KEYS / "stranger")]
    # Parents before children: the apply order is the plan order.
    created = [c.path for c in plan.changes if c.action is PathAction.CREATE]
    for i, path in enumerate(created):
        assert not any(path.startswith(later + "/") for later in created[i + 1 :])


def test_json_round_trips_and_has_the_documented_fields(busy: Host) -> None:
    done = busy.run("plan", "--format", "json")
    assert done.returncode == 2, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    assert data["format"] == 1
    assert data["has_changes"] is True
    assert data["counts"] == {
        "create": 1,
        "change": 1,
        "remove": 1,
        "unchanged": 0,
        "refused": 0,
    }
    assert set(data["fingerprints"]) == {
        "declarations",
        "state_version",
        "observed",
        "settings",
        "revision",
    }
    assert data["root"] == str(busy.root)
    for change in data["changes"]:
        assert change["path"].startswith(str(busy.root) + "/")
        assert change["action"] in {a.value for a in PathAction}
        if change["action"] == "archive":
            assert change["details"] == ["1 files, 10 bytes kept"]
    passwd = next(c for c in data["changes"] if c["path"].endswith("extrausers/passwd"))
    assert passwd["action"] == "update"
    assert passwd["details"] == ["mode 0600 -> 0644"]
    assert passwd["diff"].startswith(f"--- {busy.root}/var/lib/extrausers/passwd (now)\n")
    assert f"-{USER_ONDERNEMING}:x:200001:" in passwd["diff"]
    plan = Plan.from_json(data)
    assert planformat.render_json(plan) == done.stdout


def test_saved_plan_equals_the_json_output(busy: Host) -> None:
    out = busy.base / "saved.json"
    done = busy.run("plan", "--out", str(out), "--format", "json")
    assert done.returncode == 2
    saved = json.loads(out.read_text())
    shown = json.loads(done.stdout)
    assert saved["fingerprints"] == shown["fingerprints"]
    assert saved["changes"] == shown["changes"]


def test_markdown_is_fit_for_a_pull_request(busy: Host) -> None:
    busy.edit(EN_SECSOC, "language: fr", "language: <b>|xx")
    done = busy.run("plan", "--format", "markdown")
    assert done.returncode == 1, done.stderr
    md = done.stdout
    lines = md.splitlines()
    assert re.fullmatch(
        r"### sftp-provisioner plan: 1 to create, 0 to change, 1 to remove, 0 unchanged, "
        r"1 refused; \d+ path changes",
        lines[0],
    )
    assert "| | action | sender | technical user | enterprise number | declaration |" in lines
    assert "| + | **create** | 100002 | `thirdquality01` | 0202239951 | " in md
    assert f"| - | **remove** | 100001 | `{USER_ONDERNEMING}` | {EN_ONDERNEMING} |  |" in md
    assert f"| ! | **refused** | 100000 | `{USER_SECSOC}` |" in md
    # Reasons escaped: a table or HTML cannot be broken by a value from a declaration.
    reason = next(ln for ln in lines if ln.startswith("  - ") and "invalid-value" in ln)
    assert "<b>" not in reason and "&lt;b&gt;" in reason and "\\|" in reason
    # Every diff folded away (one block per channel, and one for the host-wide files), balanced.
    assert md.count("<details>") == md.count("</details>") > 0
    inside = 0
    for line in lines:
        inside += {"<details>": 1, "</details>": -1}.get(line, 0)
        assert inside in (0, 1)
        if line.startswith("```") and line.endswith("diff"):
            assert inside == 1, "a diff outside a folded block"
    assert f"- archive `{busy.root}/srv/sftp/{USER_ONDERNEMING}` (1 files, 10 bytes kept)" in md
    assert "**Unknown files** (reported, never deleted):" in md
    assert f"- `{busy.root}/{KEYS}/stranger`" in md


def test_markdown_fences_survive_backticks_in_a_diff(host: Host) -> None:
    host.apply()
    with open(host.root / KEYS / USER_SECSOC, "a") as fh:
        fh.write("# ```\n")
    md = planformat.render_markdown(host.plan())
    assert "````diff" in md


def test_text_lists_channels_changes_and_diffs(busy: Host) -> None:
    text = planformat.render_text(busy.plan())
    assert "  + create    100002  thirdquality01" in text
    assert "  - remove    100001  EXPDEMOONDERNEMING" in text
    assert "  ~ change    100000  secsocexemple01" in text
    assert re.search(
        r"  archive  dir  \S+/srv/sftp/EXPDEMOONDERNEMING \(1 files, 10 bytes kept\)", text
    )
    assert re.search(r"  delete   file \S+/EXPDEMOONDERNEMING\n", text)
    assert "+restrict ssh-ed25519 " in text
    assert "Unknown files in managed directories (reported, never deleted):" in text
    no_diff = planformat.render_text(busy.plan(), diffs=False)
    assert "+restrict" not in no_diff


def test_compute_is_pure(host: Host) -> None:
    """compute() reads only: no managed path appears, and the same inputs give the same plan."""
    settings = host.settings()
    a = compute(settings, [host.decls], StateSnapshot.empty(), now=NOW, cwd=host.base)
    b = compute(settings, [host.decls], StateSnapshot.empty(), now=NOW, cwd=host.base)
    assert a.plan.to_json() == b.plan.to_json()
    assert not host.root.exists()


# --- bad settings files --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("port: 2222\nbogus_setting: 1\n", r"settings\.yaml:2:1: unknown setting 'bogus_setting'"),
        ("chroot_base: srv/sftp\n", r"settings\.yaml:1:14: .*chroot_base.*absolute path"),
        ("keys_dir: /etc/../tmp\n", r"settings\.yaml:1:11: .*must not contain '\.\.'"),
        ("port: 99999\n", r"settings\.yaml:1:7: .*port.*65535"),
        # Reported where the unclosed list opens, with what to add (not at the end of file).
        ("port: [1\n", r"settings\.yaml:1:7: invalid YAML: a list in \[ \] starts here"),
        ("- a\n- b\n", r"settings\.yaml:1:1: a settings file is a mapping"),
        ("reload_command: /bin/true\n", r"settings\.yaml:1:17: .*reload_command.*list"),
        ("uid_min: 5000\nuid_max: 4000\n", r"settings\.yaml: uid_min must not be greater"),
    ],
)
@pytest.mark.parametrize("command", ["plan", "apply", "status"])
def test_bad_settings_exit_1_with_file_and_line(
    host: Host, content: str, expected: str, command: str
) -> None:
    host.settings_file.write_text(content, "utf-8")
    done = host.run(command)
    no_traceback(done)
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"^error: " + expected, done.stderr, re.M), done.stderr
    assert not (host.root / "srv").exists()


def test_unknown_setting_suggests_the_known_one(host: Host) -> None:
    host.settings_file.write_text("chroot_bsae: /srv/sftp\n", "utf-8")
    done = host.run("plan")
    assert done.returncode == 1
    assert "unknown setting 'chroot_bsae' (did you mean 'chroot_base'?)" in done.stderr


def test_an_empty_settings_file_means_defaults(host: Host) -> None:
    host.settings_file.write_text("# every setting at its Debian default\n", "utf-8")
    done = host.run("plan")
    no_traceback(done)
    assert done.returncode == 2, done.stderr


def test_missing_settings_file_and_bad_environment(host: Host) -> None:
    done = host.cli("plan", "examples", "--root", "root", "--settings", "nope.yaml")
    assert done.returncode == 1
    assert "nope.yaml: the settings file does not exist" in done.stderr
    env = host.run("plan", env={"SFTP_PROVISIONER_PORT": "abc"})
    no_traceback(env)
    assert env.returncode == 1
    assert "environment variable SFTP_PROVISIONER_PORT" in env.stderr


def test_markdown_without_changes_has_no_empty_table(host: Host) -> None:
    host.apply()
    md = planformat.render_markdown(host.plan())
    assert md.startswith(
        "### sftp-provisioner plan: 0 to create, 0 to change, 0 to remove, 2 unchanged"
    )
    assert "|---|" not in md


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///relative.db", "relative path"),
        ("mysql://db/x", "unsupported database"),
    ],
)
def test_a_bad_state_url_is_a_clear_error(host: Host, url: str, expected: str) -> None:
    done = host.run("plan", "--state-url", url)
    no_traceback(done)
    assert done.returncode == 1
    assert "the state database cannot be opened" in done.stderr
    assert expected in done.stderr
