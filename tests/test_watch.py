"""`provisioner watch` in a real process: it reacts to an edit saved by rename, never applies."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from conftest import EN_ONDERNEMING, Host
from ops_support import Lines, provisioner_process

REACTION_SECONDS = 20.0  # bounded: a debounced reaction normally takes well under a second


def save_by_rename(path: Path, old: str, new: str) -> None:
    """What editors do: write a temporary file next to it, then rename it over the original."""
    text = path.read_text("utf-8")
    assert old in text
    tmp = path.with_name(f"{path.name}.swp-{os.getpid()}~")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text.replace(old, new, 1))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "poll"])
def test_watch_reacts_to_a_save_by_rename(host: Host, poll: bool) -> None:
    proc = provisioner_process(
        host.base,
        "watch",
        "examples",
        "--root",
        "root",
        "--settings",
        "settings.yaml",
        "--no-diff",
        *(["--poll"] if poll else []),
    )
    lines = Lines(proc)
    try:
        ready = lines.wait_for("watching ", timeout=120)
        assert "(polling)" in lines.lines[ready] if poll else "(inotify)" in lines.lines[ready]
        assert "Plan: 2 to create" in lines.text()

        # A valid edit: one key less for the quality; the plan shows the change to come.
        path = host.quality(EN_ONDERNEMING)
        backup = next(line for line in path.read_text().splitlines() if "backup@" in line)
        started = time.monotonic()
        save_by_rename(path, backup + "\n", "")
        at = lines.wait_for(
            f"changed: qualities/{EN_ONDERNEMING}.yaml", after=ready, timeout=REACTION_SECONDS
        )
        assert time.monotonic() - started < REACTION_SECONDS
        lines.wait_for("Plan: 2 to create", after=at)
        done = lines.wait_for("watching ", after=at)
        assert "backup@" not in path.read_text()

        # An invalid edit: the diagnostics say where, and the quality is refused in the plan.
        if poll:
            time.sleep(1.1)  # polling compares modification times to the second
        save_by_rename(path, "technical_user: EXPDEMOONDERNEMING", "technical_user: EXP")
        at = lines.wait_for("changed:", after=done + 1, timeout=REACTION_SECONDS)
        lines.wait_for(f"qualities/{EN_ONDERNEMING}.yaml:", after=at)
        lines.wait_for("error[", after=at)
        lines.wait_for("1 refused", after=at)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, lines.text()
    # Never applies: nothing was provisioned under the root.
    settings = host.settings()
    assert not settings.routing_table.exists()
    assert not settings.chroot_base.exists()


def test_watch_ignores_what_is_not_a_declaration_change(host: Host) -> None:
    proc = provisioner_process(
        host.base, "watch", "examples", "--root", "root", "--settings", "settings.yaml"
    )
    lines = Lines(proc)
    try:
        ready = lines.wait_for("watching ", timeout=120)
        (host.decls / ".git").mkdir()
        (host.decls / ".git" / "index").write_text("x")
        (host.decls / "qualities" / ".0403170701.yaml.swp").write_text("x")
        time.sleep(2.0)
        assert "changed:" not in "\n".join(lines.lines[ready:])
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    assert code == 0, lines.text()
