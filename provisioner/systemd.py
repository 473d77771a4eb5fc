"""A systemd service and timer for the scheduled reconcile, built from the settings.

The timer fires on the wall-clock slots of `reconcile_every` (`*-*-* *:00,30:00`); the service
runs `provisioner reconcile --once` as a oneshot, hardened: the file system is read-only except
the paths the settings name as managed, and the process keeps only the capabilities it needs to
set owners and modes. The unit text lives in `templates/systemd/`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from provisioner import __version__
from provisioner.render import template_environment
from provisioner.schedule import format_interval, on_calendar
from provisioner.settings import HostSettings

SERVICE = "sftp-provisioner.service"
TIMER = "sftp-provisioner.timer"
# The intake gate: a long-running service of its own, next to the reconciler's timer.
INTAKE_SERVICE = "sftp-provisioner-intake.service"
UNIT_DIR = Path("/etc/systemd/system")
ENVIRONMENT_FILE = Path("/etc/sftp-provisioner/environment")
# Where a private home could hide the checkout or the program: then only read-only.
_HOMES = (Path("/home"), Path("/root"), Path("/run/user"))


@dataclass(frozen=True, slots=True)
class UnitOptions:
    declarations: Path
    every: timedelta
    settings_file: Path | None = None
    pull: bool = False
    verify_signatures: bool = False
    log_format: str = "text"
    command: tuple[str, ...] | None = None


def program() -> tuple[str, ...]:
    """How to start this installation of the provisioner, as an absolute command."""
    # Not resolved: a venv's python is a symlink, and resolving it would leave the venv.
    script = Path(sys.executable).parent / "provisioner"
    if script.is_file() and os.access(script, os.X_OK):
        return (str(script),)
    return (sys.executable, "-m", "provisioner")


def quote(arg: str) -> str:
    """One ExecStart= word: systemd specifiers (%) and variables ($) escaped, quoted if needed."""
    text = arg.replace("%", "%%").replace("$", "$$")
    if text and not any(c.isspace() or c in "\"'\\;" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sqlite_dir(url: str) -> Path | None:
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    path = Path(url[len(prefix) :].split("?", 1)[0])
    return path.parent if path.is_absolute() else None


# Path settings the service only reads; every other path setting is somewhere it writes.
_READ_ONLY = frozenset(
    {"shell", "sshd_binary", "templates_dir", "declarations", "smtp_ca_file", "root"}
)
# Written by the intake gate only: not in the reconciler's ReadWritePaths.
_INTAKE_ONLY = frozenset({"intake_dir", "quarantine_dir"})


def managed_dirs(settings: HostSettings) -> set[Path]:
    """The directories behind every path setting a run writes: a directory setting (`*_dir`,
    `*_base`) itself, a file setting its parent. Derived from the fields, so that a path setting
    added later is writable without touching this module."""
    out = set()
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if name in _READ_ONLY or name in _INTAKE_ONLY or not isinstance(value, Path):
            continue
        out.add(value if name.endswith(("_dir", "_base")) else value.parent)
    return out


def writable_paths(settings: HostSettings, declarations: Path, pull: bool) -> list[Path]:
    """Every directory a run writes to, without one that lies inside another."""
    # sshd -t wants its privilege separation directory.
    wanted = managed_dirs(settings) | {Path("/run/sshd")}
    state = _sqlite_dir(settings.state_url)
    if state is not None:
        wanted.add(state)
    if pull:
        # git fetch and the fast-forward write the checkout and its .git.
        wanted.add(declarations)
    ordered = sorted(wanted, key=lambda p: (len(p.parts), str(p)))
    kept: list[Path] = []
    for path in ordered:
        if not any(path.is_relative_to(k) for k in kept):
            kept.append(path)
    return sorted(kept)


def _protect_home(paths: Sequence[Path]) -> str:
    return "read-only" if any(p.is_relative_to(h) for p in paths for h in _HOMES) else "yes"


def exec_start(options: UnitOptions) -> list[str]:
    args = [*(options.command or program()), "reconcile", "--once"]
    if options.settings_file is not None:
        args += ["--settings", str(options.settings_file)]
    if options.pull:
        args.append("--pull")
    if options.verify_signatures:
        args.append("--verify-signatures")
    if options.log_format != "text":
        args += ["--log-format", options.log_format]
    args += ["--every", format_interval(options.every), str(options.declarations)]
    return args


def render_units(settings: HostSettings, options: UnitOptions) -> dict[str, str]:
    """{unit name: text} for the service and the timer."""
    env = template_environment(settings)
    command = exec_start(options)
    private = [options.declarations, Path(command[0])]
    if options.settings_file is not None:
        private.append(options.settings_file)
    # Signature checks may need a keyring in root's home, pulls a deploy key: read-only then.
    needs_home = options.pull or options.verify_signatures
    context = {
        "generated_by": f"Generated by sftp-provisioner {__version__}",
        "settings_source": str(options.settings_file or "the default settings"),
        "declarations": options.declarations,
        "exec_start": " ".join(quote(a) for a in command),
        "environment_file": ENVIRONMENT_FILE,
        "environment": [("HOME", "/root")] if needs_home else [],
        "timeout_start": f"{int(options.every.total_seconds() // 60)}min",
        "writable": writable_paths(settings, options.declarations, options.pull),
        "protect_home": "read-only" if needs_home else _protect_home(private),
        "every": format_interval(options.every),
        "on_calendar": on_calendar(options.every),
        "service": SERVICE,
    }
    intake = {
        **context,
        "exec_start": " ".join(quote(a) for a in intake_exec_start(options)),
        "writable": intake_writable_paths(settings),
        "protect_home": _protect_home(private[1:]),
    }
    return {
        SERVICE: env.get_template("systemd/sftp-provisioner.service.j2").render(**context),
        TIMER: env.get_template("systemd/sftp-provisioner.timer.j2").render(**context),
        INTAKE_SERVICE: env.get_template("systemd/sftp-provisioner-intake.service.j2").render(
            **intake
        ),
    }


def intake_exec_start(options: UnitOptions) -> list[str]:
    args = [*(options.command or program()), "intake"]
    if options.settings_file is not None:
        args += ["--settings", str(options.settings_file)]
    if options.log_format != "text":
        args += ["--log-format", options.log_format]
    return args


def intake_writable_paths(settings: HostSettings) -> list[Path]:
    """What the intake gate writes: the exchange directories (sets leave IN*, notices go to
    OUT*), the intake and quarantine directories, its journal, lock, metrics, audit log and
    the state database's directory."""
    wanted = {
        settings.chroot_base,
        settings.intake_dir,
        settings.quarantine_dir,
        settings.work_dir,
        settings.lock_file.parent,
        settings.metrics_file.parent,
        settings.audit_log.parent,
    }
    state = _sqlite_dir(settings.state_url)
    if state is not None:
        wanted.add(state)
    ordered = sorted(wanted, key=lambda p: (len(p.parts), str(p)))
    kept: list[Path] = []
    for path in ordered:
        if not any(path.is_relative_to(k) for k in kept):
            kept.append(path)
    return sorted(kept)


def install(settings: HostSettings, options: UnitOptions, unit_dir: Path = UNIT_DIR) -> list[str]:
    """Write the units, create the managed directories they name, reload systemd.

    `ReadWritePaths=` cannot make a directory that does not exist yet writable, and under
    `ProtectSystem=strict` the service could not create it: so they are created here, once.
    Returns what was done, for the operator.
    """
    from provisioner.fsutil import write_atomic

    done = []
    for name, text in render_units(settings, options).items():
        write_atomic(unit_dir / name, text.encode("utf-8"), 0o644)
        done.append(f"wrote {unit_dir / name}")
    private = {settings.work_dir, settings.archive_dir, settings.quarantine_dir}
    every_path = set(writable_paths(settings, options.declarations, options.pull))
    every_path |= set(intake_writable_paths(settings))
    for path in sorted(every_path):
        if path not in (options.declarations, Path("/run/sshd")) and not path.exists():
            path.mkdir(parents=True, mode=0o700 if path in private else 0o755)
            done.append(f"created {path}")
    if unit_dir == UNIT_DIR and Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        subprocess.run(["systemctl", "daemon-reload"], check=True, timeout=120)
        done.append("systemctl daemon-reload")
    return done
