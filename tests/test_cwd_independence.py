"""The same plan from any directory, however the declarations path is typed.

After an apply from one directory, `plan` from another has nothing to change, its
fingerprints are the same, and a plan saved in one directory is applied from another
(relative and absolute declaration paths alike). Before, the saved plan went stale: its
declarations fingerprint named the files as typed, relative to the working directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import Host


def cli(host: Host, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFTP_PROVISIONER_")}
    return subprocess.run(
        [
            *(sys.executable, "-m", "provisioner", *args),
            *("--root", str(host.root), "--settings", str(host.settings_file)),
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_plan_saved_in_one_directory_is_applied_from_another(host: Host) -> None:
    elsewhere = host.base / "deep" / "er"
    elsewhere.mkdir(parents=True)
    first = cli(host, host.base, "apply", "examples")
    assert first.returncode == 0, first.stdout + first.stderr
    # The same declarations, typed four ways from two directories.
    ways = [
        (host.base, "examples"),
        (host.base, "./examples/"),
        (elsewhere, "../../examples"),
        (elsewhere, str(host.decls)),
    ]
    fingerprints = []
    for n, (cwd, typed) in enumerate(ways):
        out = host.base / f"plan-{n}.json"
        done = cli(host, cwd, "plan", typed, "--format", "json", "--out", str(out))
        assert done.returncode == 0, (typed, done.stdout, done.stderr)  # nothing to change
        fingerprints.append(json.loads(out.read_text("utf-8"))["fingerprints"])
    assert all(f == fingerprints[0] for f in fingerprints), fingerprints
    # Saved in the base directory with a relative path, applied from elsewhere with an
    # absolute one, and the other way round.
    for cwd, typed, saved in (
        (elsewhere, str(host.decls), "plan-0.json"),
        (host.base, "examples", "plan-2.json"),
    ):
        done = cli(host, cwd, "apply", typed, "--plan", str(host.base / saved))
        assert done.returncode == 0, (typed, saved, done.stdout, done.stderr)
        assert "stale" not in done.stdout + done.stderr


def test_the_rendered_tree_and_audit_do_not_name_the_working_directory(host: Host) -> None:
    elsewhere = host.base / "elsewhere"
    elsewhere.mkdir()
    done = cli(host, elsewhere, "apply", "../examples")
    assert done.returncode == 0, done.stdout + done.stderr
    tree = host.tree()
    for rel, entry in tree.items():
        if entry.content is not None:
            assert b"elsewhere" not in entry.content, rel
            assert b"../examples" not in entry.content, rel
    audit = host.settings().audit_log.read_text("utf-8")
    assert "elsewhere" not in audit and "../examples" not in audit
    # From the base directory, nothing changes and no file is rewritten.
    again = cli(host, host.base, "apply", "examples")
    assert again.returncode == 0 and "Applied 0 change(s)." in again.stdout
    assert {k: v.ino for k, v in host.tree().items()} == {k: v.ino for k, v in tree.items()}
