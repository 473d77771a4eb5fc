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
