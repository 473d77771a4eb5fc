"""The operations quick start works on a fresh host exactly as written.

The commands are taken from docs/operations.md (the block after `<!-- doc-commands:
quickstart -->`), not retyped here, and run into a temporary root by scripts/doc_commands.py:
absolute host paths move under the root, `provisioner` commands get `--root`, `systemctl
enable` becomes `systemctl --root`. Nothing outside the temporary directory is touched.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import require, require_sshd

REPO = Path(__file__).resolve().parents[1]
# What a real quick start writes on the real host; the test must leave all of it alone.
REAL_PATHS = (
    Path("/etc/sftp-provisioner/settings.yaml"),
    Path("/srv/declarations"),
    Path("/etc/systemd/system/sftp-provisioner.timer"),
    Path("/etc/systemd/system/sftp-provisioner.service"),
    Path("/etc/ssh/sshd_config.d/00-sftp-provisioner.conf"),
)


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("doc_commands", REPO / "scripts/doc_commands.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["doc_commands"] = module
    spec.loader.exec_module(module)
    return module


doc_commands = _load()


def quickstart() -> list[str]:
    doc, marker = doc_commands.QUICKSTART
    written: list[str] = doc_commands.commands_of_file(REPO / doc, marker=marker)
    return written


def provisioner_program() -> list[str]:
    script = Path(sys.executable).parent / "provisioner"
    return [str(script)] if script.exists() else [sys.executable, "-m", "provisioner"]


def test_the_quick_start_is_the_documented_sequence() -> None:
    written = quickstart()
    # From nothing: the settings file first, the timer last.
    assert written[0] == "provisioner init"
    assert written[-1].startswith("systemctl enable --now sftp-provisioner.timer")
    assert any(c.startswith("git clone ") for c in written)


def test_the_quick_start_runs_into_a_temporary_root(tmp_path: Path) -> None:
    # The quick start's apply checks the configuration with sshd -t.
    require_sshd()
    require(
        shutil.which("systemctl") is not None, "needs systemctl (the quick start enables a timer)"
    )
    before = {p: p.exists() for p in REAL_PATHS}
    root = tmp_path / "root"
    root.mkdir()
    env = doc_commands.quickstart_env(
        tmp_path, doc_commands.declarations_repository(REPO / "examples", tmp_path)
    )
    steps = doc_commands.rooted_steps(
        quickstart(), root, env=env, provisioner=provisioner_program()
    )
    done = doc_commands.run_steps(steps, cwd=tmp_path, env=env, echo=False)
    for step, result in done:
        assert result.returncode in step.ok_codes, (
            f"{step.command}\n(ran {step.argv})\nexit {result.returncode}\n"
            + result.stdout[-3000:]
            + result.stderr[-3000:]
        )
    assert len(done) == len(steps)

    settings = root / "etc/sftp-provisioner/settings.yaml"
    assert settings.is_file()
    assert (root / "srv/declarations/qualities/0403170701.yaml").is_file()
    # The apply reached the host tree, and the units are installed and enabled.
    assert (root / "etc/ssh/sshd_config.d/00-sftp-provisioner.conf").is_file()
    assert (root / "var/lib/sftp-provisioner/state.db").is_file()
    assert (root / "etc/systemd/system/sftp-provisioner.service").is_file()
    assert (root / "etc/systemd/system/timers.target.wants/sftp-provisioner.timer").is_symlink()
    # The plan was a first plan (exit 2: changes) and the apply applied.
    by_command = {
        step.command.split()[1]: result for step, result in done if "provisioner" in step.command
    }
    assert by_command["plan"].returncode == 2
    assert by_command["apply"].returncode == 0
    assert {p: p.exists() for p in REAL_PATHS} == before, "the quick start touched the real host"


def test_commands_are_moved_into_the_root_and_nothing_else(tmp_path: Path) -> None:
    steps = doc_commands.rooted_steps(
        [
            "provisioner init",
            'git clone "$REPO" /srv/declarations  # a comment',
            "provisioner validate /srv/declarations",
            "systemctl enable --now a.timer",
        ],
        tmp_path,
        env={"REPO": "https://forge.example/d.git"},
        provisioner=["provisioner"],
        takes_root={"init"},
    )
    assert [s.argv for s in steps] == [
        ["provisioner", "init", "--root", str(tmp_path)],
        ["git", "clone", "https://forge.example/d.git", f"{tmp_path}/srv/declarations"],
        ["provisioner", "validate", f"{tmp_path}/srv/declarations"],
        ["systemctl", f"--root={tmp_path}", "enable", "a.timer"],
    ]
    for refused in ("systemctl restart ssh", "echo x > /etc/passwd", "git clone $UNSET /srv/x"):
        with pytest.raises(doc_commands.DocError):
            doc_commands.rooted_steps(
                [refused], tmp_path, env={}, provisioner=["p"], takes_root=set()
            )


def test_a_quick_start_in_the_readme_is_the_tested_one() -> None:
    # The README may repeat the quick start under the same marker: then word for word.
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    # The README stands alone: it carries the quick start itself.
    assert "<!-- doc-commands: quickstart -->" in readme
    assert doc_commands.commands(readme, marker="quickstart") == quickstart()


def test_readme_fresh_machine_commands_are_found() -> None:
    # The lead runs `python3 scripts/doc_commands.py fresh-clone` (it installs packages);
    # here only that the extraction finds what it would run.
    written = doc_commands.commands_of_file(REPO / "README.md", heading=doc_commands.README_HEADING)
    assert written and all(c.startswith("bash scripts/") for c in written)
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts/doc_commands.py"), "list", "README.md",
         "--heading", doc_commands.README_HEADING],
        cwd=REPO, capture_output=True, text=True, check=False, env=dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.split("\n")[: len(written)] == written
