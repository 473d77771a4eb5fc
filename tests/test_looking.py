"""Looking changes nothing: `status` on a host without a state database creates none.

A mistyped `--state-url` or `--root` used to open (and create) an empty database and answer
"no channels registered yet"; an unknown URL scheme was reported as an internal error.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Host


def files_under(path: Path) -> set[Path]:
    return set(path.rglob("*")) if path.exists() else set()


def test_status_without_a_database_is_an_error_and_creates_nothing(host: Host) -> None:
    before = files_under(host.base)
    done = host.run("status")
    assert done.returncode == 1
    assert "there is no state database at" in done.stderr
    assert "state.db" in done.stderr
    assert "Traceback" not in done.stderr
    assert files_under(host.base) == before
    assert not host.root.exists()


def test_a_mistyped_state_url_names_the_url_and_creates_no_directory(host: Host) -> None:
    missing = host.base / "no-such-dir" / "state.db"
    done = host.cli("status", "--state-url", f"sqlite:///{missing}")
    assert done.returncode == 1
    assert str(missing) in done.stderr
    assert not missing.parent.exists()


def test_before_the_first_sync_every_declared_channel_is_pending(host: Host) -> None:
    before = files_under(host.base)
    done = host.run("status", "--declarations", "examples", "--format", "json")
    assert done.returncode == 0, done.stderr
    statuses = {r["enterprise_number"]: r["status"] for r in json.loads(done.stdout)["channels"]}
    assert statuses == {"0200065765": "pending", "0403170701": "pending"}
    assert files_under(host.base) == before


def test_an_unknown_url_scheme_is_a_user_error_with_the_accepted_forms(host: Host) -> None:
    done = host.cli("status", "--state-url", "foo://")
    assert done.returncode == 1
    assert "unsupported database 'foo'" in done.stderr
    assert "sqlite:////" in done.stderr and "postgresql+psycopg://" in done.stderr
    assert "bug" not in done.stderr


def test_after_an_apply_status_reads_the_database(host: Host) -> None:
    host.apply()
    done = host.run("status")
    assert done.returncode == 0, done.stderr
    assert "EXPDEMOONDERNEMING" in done.stdout


# --- plan and show look too -------------------------------------------------------------------


def test_a_first_plan_on_a_fresh_host_says_there_is_no_state_and_creates_nothing(
    host: Host,
) -> None:
    before = files_under(host.base)
    done = host.run("plan", "--no-diff")
    assert done.returncode == 2, done.stderr
    db = host.root / "var/lib/sftp-provisioner/state.db"
    assert f"note: no state yet at sqlite:///{db}: every channel would be new" in done.stdout
    assert "+ create    100000  secsocexemple01" in done.stdout
    assert files_under(host.base) == before
    assert not host.root.exists()


def test_plan_with_a_mistyped_state_url_names_it_and_creates_no_directory(host: Host) -> None:
    missing = host.base / "no-such-dir" / "state.db"
    done = host.run("plan", "--state-url", f"sqlite:///{missing}", "--format", "json")
    assert done.returncode == 2, done.stderr
    notes = json.loads(done.stdout)["notes"]
    assert f"no state yet at sqlite:///{missing}: every channel would be new" in notes
    assert not missing.parent.exists()


def test_plan_with_an_unknown_url_scheme_is_a_user_error(host: Host) -> None:
    done = host.run("plan", "--state-url", "foo://")
    assert done.returncode == 1
    assert "unsupported database 'foo'" in done.stderr
    assert "Traceback" not in done.stderr and "bug" not in done.stderr
    assert not host.root.exists()


def test_a_plan_saved_before_the_first_apply_can_be_applied(host: Host) -> None:
    out = host.base / "first.json"
    assert host.run("plan", "--out", str(out)).returncode == 2
    assert not host.root.exists()
    done = host.run("apply", "--plan", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert host.run("plan").returncode == 0


def test_show_with_a_root_but_no_state_creates_nothing(host: Host) -> None:
    before = files_under(host.base)
    done = host.cli("show", "examples/qualities/0200065765.yaml", "--root", "root")
    assert "Traceback" not in done.stderr
    assert files_under(host.base) == before
    assert not host.root.exists()
