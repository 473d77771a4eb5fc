"""`provisioner systemd`: a hardened oneshot service and a timer at :00 and :30."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import Host, require

from provisioner import systemd
from provisioner.schedule import parse_interval
from provisioner.settings import load_settings


def units_of(output: str) -> dict[str, str]:
    units: dict[str, list[str]] = {}
    current = None
    for line in output.splitlines():
        if line.startswith("# --- "):
            current = line.removeprefix("# --- ")
            units[current] = []
        elif current is not None:
            units[current].append(line)
    return {name: "\n".join(lines) + "\n" for name, lines in units.items()}


def directives(text: str) -> dict[str, list[str]]:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


@pytest.fixture
def printed(host: Host) -> dict[str, str]:
    done = host.cli("systemd", "examples", "--settings", "settings.yaml", "--pull")
    assert done.returncode == 0, done.stderr
    return units_of(done.stdout)


def test_timer_fires_on_the_wall_clock(printed: dict[str, str]) -> None:
    timer = directives(printed[systemd.TIMER])
    assert timer["OnCalendar"] == ["*-*-* *:00,30:00"]
    assert timer["Persistent"] == ["true"]
    assert timer["AccuracySec"] == ["1s"]
    assert timer["Unit"] == [systemd.SERVICE]
    assert timer["WantedBy"] == ["timers.target"]


def test_service_runs_once_with_the_settings_and_is_hardened(
    host: Host, printed: dict[str, str]
) -> None:
    service = directives(printed[systemd.SERVICE])
    assert service["Type"] == ["oneshot"]
    (exec_start,) = service["ExecStart"]
    words = exec_start.split()
    assert words[1:4] == ["reconcile", "--once", "--settings"]
    assert words[4] == str(host.settings_file)
    assert "--pull" in words and words[-3:] == ["--every", "30m", str(host.decls)]
    assert Path(words[0]).is_absolute()
    for key, value in {
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "ProtectKernelModules": "yes",
        "KillMode": "mixed",
    }.items():
        assert service[key] == [value], key
    # A pull needs the deploy key in root's home: readable, not writable.
    assert service["ProtectHome"] == ["read-only"]
    # Setgid exchange directories must stay possible.
    assert "RestrictSUIDSGID" not in service
    assert "CAP_FSETID" in service["CapabilityBoundingSet"][0]
    assert service["EnvironmentFile"] == [f"-{systemd.ENVIRONMENT_FILE}"]
    # Credentials never in the unit.
    assert "PASSWORD" not in printed[systemd.SERVICE].replace("SFTP_PROVISIONER_SMTP_PASSWORD)", "")


def test_every_managed_path_is_writable_and_nothing_more(
    host: Host, printed: dict[str, str]
) -> None:
    service = directives(printed[systemd.SERVICE])
    writable = [Path(p.removeprefix("-")) for p in service["ReadWritePaths"]]
    settings = load_settings(host.settings_file, environ={})
    must_write = [
        settings.chroot(user="x"),
        settings.archive_dir / "x",
        settings.keys_file("x"),
        settings.sshd_dropin,
        settings.extrausers_dir / "passwd",
        settings.routing_table,
        settings.audit_log,
        settings.lock_file,
        settings.status_file,
        settings.metrics_file,
        settings.outbox_dir / "x.eml",
        settings.staging_dir,
        Path(settings.state_url.removeprefix("sqlite:///")),
        host.decls / ".git" / "FETCH_HEAD",  # --pull
    ]
    # ...and whatever path setting comes next (a syslog drop-in, a cache), without a list here.
    must_write += [p / "x" for p in systemd.managed_dirs(settings)]
    for path in must_write:
        assert any(path.is_relative_to(w) for w in writable), path
    for read_only in (settings.sshd_binary, settings.shell):
        assert not any(read_only.is_relative_to(w) for w in writable), read_only
    for broad in (Path("/"), Path("/etc"), Path("/var"), Path("/srv"), Path("/usr")):
        assert broad not in writable


def test_a_plain_service_hides_home_entirely(host: Host) -> None:
    settings = load_settings(host.settings_file, environ={})
    units = systemd.render_units(
        settings,
        systemd.UnitOptions(
            declarations=Path("/srv/declarations"),
            every=parse_interval("15m"),
            command=("/usr/bin/provisioner",),
        ),
    )
    service = directives(units[systemd.SERVICE])
    assert service["ProtectHome"] == ["yes"]
    assert service["ExecStart"] == [
        "/usr/bin/provisioner reconcile --once --every 15m /srv/declarations"
    ]
    assert directives(units[systemd.TIMER])["OnCalendar"] == ["*-*-* *:00,15,30,45:00"]
    assert "/srv/declarations" not in [p.removeprefix("-") for p in service["ReadWritePaths"]]


def test_exec_start_quotes_what_systemd_would_split_or_expand() -> None:
    assert systemd.quote("/srv/decl arations") == '"/srv/decl arations"'
    assert systemd.quote("50%") == "50%%"
    assert systemd.quote("$HOME") == "$$HOME"


def test_install_writes_the_units_and_creates_the_managed_directories(
    host: Host, tmp_path: Path
) -> None:
    base = tmp_path / "sys"
    defaults = load_settings(None, environ={})
    # Every path setting under the test area: the install must not create anything outside.
    moved = {
        name: str(base / getattr(defaults, name).relative_to("/"))
        for name in type(defaults).model_fields
        if isinstance(getattr(defaults, name), Path)
        and name not in ("shell", "sshd_binary", "templates_dir", "declarations", "root")
    }
    host.write_settings(**moved, state_url=f"sqlite:///{base}/var/lib/sftp-provisioner/state.db")
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    done = host.cli(
        "systemd", "examples", "--settings", "settings.yaml", "--install", "--unit-dir",
        str(unit_dir),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in unit_dir.iterdir()) == sorted(
        [systemd.SERVICE, systemd.TIMER, systemd.INTAKE_SERVICE]
    )
    for sub in (
        "srv/sftp",
        "srv/sftp-archive",
        "var/spool/sftp-provisioner/outbox",
        "var/lib/prometheus/node-exporter",
    ):
        assert (base / sub).is_dir(), sub
    assert (base / "var/lib/sftp-provisioner").stat().st_mode & 0o777 == 0o700
    assert "systemctl enable --now sftp-provisioner.timer" in done.stderr


def test_secrets_and_trial_roots_stay_out_of_units(host: Host) -> None:
    done = host.cli(
        "systemd", "examples", "--settings", "settings.yaml", "--state-url",
        "postgresql+psycopg://u:pw@db/state",
    )  # fmt: skip
    assert done.returncode == 1 and "world-readable" in done.stderr
    assert "pw@db" not in done.stdout


def test_a_trial_root_gets_its_own_units_and_systemd_is_not_told(host: Host) -> None:
    # Units installed under a --root (the operations quick start's test) stay under it.
    done = host.cli(
        "systemd", "examples", "--settings", "settings.yaml", "--root", "root", "--install"
    )
    assert done.returncode == 0, done.stderr
    units = host.root / "etc/systemd/system"
    assert sorted(p.name for p in units.iterdir()) == sorted(
        [systemd.SERVICE, systemd.TIMER, systemd.INTAKE_SERVICE]
    )
    assert "daemon-reload" not in done.stdout
    service = directives((units / systemd.SERVICE).read_text())
    assert f"-{host.root.resolve()}/srv/sftp" in service["ReadWritePaths"]
    assert (host.root / "srv/sftp").is_dir()


def test_the_intake_gate_runs_as_a_service_writing_only_its_directories(
    host: Host, printed: dict[str, str]
) -> None:
    settings = load_settings(host.settings_file, environ={})
    service = directives(printed[systemd.INTAKE_SERVICE])
    command = service["ExecStart"][0].split()
    assert command[-3:] == ["intake", "--settings", str(host.settings_file.absolute())]
    assert service["Type"] == ["simple"] and service["Restart"] == ["on-failure"]
    writable = [Path(p.removeprefix("-")) for p in service["ReadWritePaths"]]
    for path in (
        settings.chroot_base / "u" / "IN",
        settings.intake_dir / "R",
        settings.quarantine_dir,
        settings.work_dir / "intake-journal",
        settings.metrics_file,
        settings.audit_log,
    ):
        assert any(path.is_relative_to(w) for w in writable), path
    for private in (settings.keys_dir, settings.extrausers_dir, settings.sshd_dropin):
        assert not any(private.is_relative_to(w) for w in writable), private
    # ...and the reconciler does not write the gate's directories.
    reconciler = [
        Path(p.removeprefix("-")) for p in directives(printed[systemd.SERVICE])["ReadWritePaths"]
    ]
    assert not any(settings.intake_dir.is_relative_to(w) for w in reconciler)


def test_systemd_analyze_accepts_the_units(printed: dict[str, str], tmp_path: Path) -> None:
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze is not installed")
    for name, text in printed.items():
        (tmp_path / name).write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / n) for n in printed)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # Unknown or misspelt directives are only warnings: none may appear.
    assert done.stderr.strip() == "", done.stderr
    calendar = subprocess.run(
        ["systemd-analyze", "calendar", "--iterations", "3", "*-*-* *:00,30:00"],
        capture_output=True,
        text=True,
        check=True,
    )
    times = [line.split()[-2] for line in calendar.stdout.splitlines() if "Iter" in line]
    assert all(t.endswith((":00:00", ":30:00")) for t in times), calendar.stdout
