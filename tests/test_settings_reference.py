"""The settings reference and `provisioner init` are read off the settings model.

docs/settings.md must say what the model says (every setting, its type, default, environment
variable and meaning), and the file `init` writes must load with the settings loader and give
the defaults it claims to.
"""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_provisioner

from provisioner.settings import HostSettings, load_settings
from provisioner.settings_reference import (
    REFERENCE_FILE,
    missing_descriptions,
    render_reference,
    render_settings_file,
    settings,
)

REPO = Path(__file__).resolve().parents[1]


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_provisioner(*args, cwd=cwd, timeout=120)


def test_every_setting_says_what_it_means() -> None:
    assert missing_descriptions() == []
    for name, info in HostSettings.model_fields.items():
        text = info.description or ""
        # A sentence that says what it means, not a word.
        assert len(text.split()) >= 4, name


def test_docs_settings_md_is_what_the_generator_writes() -> None:
    written = (REPO / REFERENCE_FILE).read_text(encoding="utf-8")
    assert written == render_reference(), (
        "docs/settings.md is out of date: run `python -m provisioner.settings_reference`"
    )


def test_the_reference_lists_every_setting_with_type_default_and_variable() -> None:
    text = render_reference()
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"^\| `([a-z_0-9]+)` \|.*$", text, flags=re.MULTILINE)
    }
    assert set(rows) == set(HostSettings.model_fields)
    assert (
        "| `sftp_gid` | integer 1000 to 2147483646 | `2900` | `SFTP_PROVISIONER_SFTP_GID` |"
        in (rows["sftp_gid"])
    )
    assert "| `notify_transport` | outbox or smtp | `outbox` |" in rows["notify_transport"]
    assert "| `port` | integer 1 to 65535, or null | `null` |" in rows["port"]
    # The machine's own name is described, never printed: the file is the same everywhere.
    assert "the machine's host name" in rows["host_name"]
    assert "`/srv/sftp`" in rows["chroot_base"]


def test_the_generator_refuses_a_setting_without_a_description(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "provisioner.settings_reference", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    stale = tmp_path / "settings.md"
    stale.write_text("# old\n")
    done = subprocess.run(
        [sys.executable, "-m", "provisioner.settings_reference", "--check", str(stale)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1 and "out of date" in done.stdout


# --- provisioner init ----------------------------------------------------------------------


def test_init_writes_a_file_that_loads_and_keeps_every_default(tmp_path: Path) -> None:
    target = tmp_path / "etc" / "settings.yaml"
    done = cli(tmp_path, "init", "--out", str(target))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    loaded = load_settings(target, environ={})
    defaults = load_settings(None, root=None, environ={}, overrides={})
    assert loaded.declarations == Path("/srv/declarations")
    assert loaded.model_dump(exclude={"declarations"}) == defaults.model_dump(
        exclude={"declarations"}
    )
    text = target.read_text()
    # Every setting but --root's is there, with its meaning, commented out but for the
    # declarations checkout.
    for s in settings():
        if s.name == "root":
            assert "root:" not in text
            continue
        assert re.search(rf"^(# )?{s.name}: ", text, flags=re.MULTILINE), s.name
        assert s.description.split()[-1] in text
    uncommented = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert uncommented == ["declarations: /srv/declarations"]


def test_every_default_written_by_init_reads_back_as_the_default(tmp_path: Path) -> None:
    # Uncomment every line: each value written must be the default, read back exactly.
    lines = []
    for line in render_settings_file().splitlines():
        match = re.match(r"^# ([a-z_0-9]+): (.*)$", line)
        if match and match.group(1) in HostSettings.model_fields:
            line = f"{match.group(1)}: {match.group(2)}"
        lines.append(line)
    target = tmp_path / "all.yaml"
    target.write_text("\n".join(lines) + "\n")
    loaded = load_settings(target, environ={})
    defaults = load_settings(None, environ={})
    assert loaded.model_dump(exclude={"declarations"}) == defaults.model_dump(
        exclude={"declarations"}
    )


def test_init_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    target = tmp_path / "settings.yaml"
    target.write_text("port: 2222\n")
    done = cli(tmp_path, "init", "--out", str(target))
    assert done.returncode == 1
    assert f"{target}: a settings file is already there" in done.stderr
    assert "--force" in done.stderr and "Traceback" not in done.stderr
    assert target.read_text() == "port: 2222\n"
    done = cli(tmp_path, "init", "--out", str(target), "--force", "--declarations", "/srv/d")
    assert done.returncode == 0, done.stderr
    assert load_settings(target, environ={}).declarations == Path("/srv/d")


def test_init_under_a_root_is_where_the_host_commands_look(tmp_path: Path) -> None:
    root = tmp_path / "root"
    done = cli(tmp_path, "init", "--root", str(root))
    assert done.returncode == 0, done.stderr
    written = root / "etc/sftp-provisioner/settings.yaml"
    assert written.is_file()
    assert done.stdout.strip() == f"wrote {written}"
    text = written.read_text().replace("# port: null", "port: 2222")
    written.write_text(text)
    # `--root DIR` without --settings reads DIR's settings file, never the real host's.
    assert load_settings(None, root=root, environ={}).port == 2222


@pytest.mark.parametrize("value", ["a: b", "yes", "0027", "10:30:100", "x # y", "é"])
def test_written_text_values_read_back_as_text(tmp_path: Path, value: str) -> None:
    from provisioner.settings_reference import yaml_value

    target = tmp_path / "s.yaml"
    target.write_text(f"smtp_host: {yaml_value(value)}\n")
    assert load_settings(target, environ={}).smtp_host == value
