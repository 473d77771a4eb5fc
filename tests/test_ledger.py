"""The ledger: exported from the state, published with every run, judged by `validate --ledger`.

The pull-request rules are tested as data: each directory `tests/ledger_cases/<case>/` holds a
declarations tree (`qualities/*.yaml`, each starting with a comment that says whether it
passes or is refused and why) and the `ledger.json` the host published; `expected.txt` is the
exact report of `provisioner validate --ledger ledger.json` in that directory, at the fixed
clock of the gate cases. Rewrite with `UPDATE_GOLDEN=1 pytest tests/test_ledger.py -k <case>`
and review the diff.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import run_provisioner

from provisioner.errors import ProvisionerError
from provisioner.ledger import (
    Ledger,
    LedgerQuality,
    LedgerUsername,
    ledger_from_snapshot,
    load_ledger,
    write_ledger,
)
from provisioner.report import render_text
from provisioner.state import StateStore
from provisioner.validate import ValidateSettings, validate

CASES = Path(__file__).parent / "ledger_cases"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
FIXED_NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[1]


def case_dirs() -> list[Path]:
    return sorted(p for p in CASES.iterdir() if p.is_dir())


def run_case(case: Path) -> str:
    ledger = load_ledger(case / "ledger.json", "ledger.json")
    report = validate(
        ValidateSettings(
            paths=(Path("qualities"),),
            cwd=case,
            now=FIXED_NOW,
            cache_dir=None,
            jobs=1,
            ledger=ledger,
        )
    )
    return render_text(report).replace(str(report.root), "<root>")


@pytest.mark.parametrize("case", case_dirs(), ids=lambda p: p.name)
def test_case(case: Path) -> None:
    text = run_case(case)
    golden = case / "expected.txt"
    if UPDATE:
        golden.write_text(text, "utf-8")
    assert golden.exists(), f"{golden} is missing; write it with UPDATE_GOLDEN=1 and review it"
    assert text == golden.read_text("utf-8")
    # The comments and the report agree: what is said to pass passes, what is refused is.
    for path in sorted((case / "qualities").glob("*.yaml")):
        first = path.read_text("utf-8").split("\n", 1)[0]
        shown = f"qualities/{path.name}:"
        lines = [line for line in text.splitlines() if line.startswith(shown)]
        if first.startswith("# Passing"):
            assert not lines, f"{path.name} should pass"
        else:
            assert first.startswith("# Refused"), path
            assert any(": error[" in line for line in lines), f"{path.name} should be refused"


def test_refusals_are_at_the_technical_user_line() -> None:
    """Each refusal names the declaration's `technical_user:` line (line 11 of these files)."""
    text = run_case(CASES / "refused-by-the-ledger")
    codes = {}
    for line in text.splitlines()[:-1]:
        where, _, rest = line.partition(": ")
        codes[where] = rest.split("]", 1)[0] + "]"
    assert codes == {
        "qualities/immutable.yaml:11:19": "error[technical-user-immutable]",
        "qualities/reserved.yaml:11:19": "error[technical-user-reserved]",
        "qualities/retired.yaml:11:19": "error[technical-user-retired]",
        "qualities/taken-case.yaml:11:19": "error[technical-user-taken]",
        "qualities/taken.yaml:11:19": "error[technical-user-taken]",
    }


def test_a_stale_ledger_is_a_warning_only() -> None:
    text = run_case(CASES / "stale-ledger")
    assert "ledger.json: warning[ledger-stale]" in text
    assert text.endswith("valid, 0 errors, 1 warning\n")


def test_without_a_ledger_the_same_files_pass() -> None:
    """The refusals come from the ledger alone: the files are valid on their own."""
    report = validate(
        ValidateSettings(
            paths=(Path("qualities"),),
            cwd=CASES / "refused-by-the-ledger",
            now=FIXED_NOW,
            cache_dir=None,
            jobs=1,
        )
    )
    assert report.ok, render_text(report)


# --- the command line ----------------------------------------------------------------------


def provisioner(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_provisioner(*args, cwd=cwd, timeout=120)


def test_validate_ledger_cli_exit_codes(tmp_path: Path) -> None:
    case = CASES / "refused-by-the-ledger"
    done = provisioner("validate", "qualities", "--no-cache", "--ledger", "ledger.json", cwd=case)
    assert done.returncode == 1, done.stderr
    assert "qualities/retired.yaml:11:19: error[technical-user-retired]" in done.stdout
    # The ledger is hours old by the real clock: with a large enough age it is not stale.
    ok = provisioner(
        "validate",
        "qualities/ok-known-quality.yaml",
        "--no-cache",
        "--ledger",
        "ledger.json",
        "--ledger-max-age",
        "100000d",
        cwd=case,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ledger-stale" not in ok.stdout
    bad_age = provisioner("validate", "--ledger", "ledger.json", "--ledger-max-age", "2x", cwd=case)
    assert bad_age.returncode == 1
    assert "--ledger-max-age" in bad_age.stderr and "Traceback" not in bad_age.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "not JSON"),
        (b"root:x:0:0:root:/root:/bin/bash\n", "not JSON"),
        (b'{"format": "other"}', 'its "format" is not'),
        (b'{"format": "sftp-provisioner-ledger", "version": 9}', "another version"),
        (
            b'{"format": "sftp-provisioner-ledger", "version": 1, "generated_at": "x",'
            b' "qualities": []}',
            "damaged: generated_at",
        ),
        (
            b'{"format": "sftp-provisioner-ledger", "version": 1, '
            b'"generated_at": "2026-11-29T11:00:00+00:00", '
            b'"qualities": [{"enterprise_number": "12"}]}',
            "damaged: qualities.0",
        ),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b"[" * 100_000, "not JSON"),
    ],
)
def test_load_ledger_refuses_what_is_not_a_ledger(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "ledger.json"
    path.write_bytes(content)
    with pytest.raises(ProvisionerError) as caught:
        load_ledger(path, "ledger.json")
    assert expected in str(caught.value)
    assert str(caught.value).startswith("ledger.json: ")
    assert "root:x" not in str(caught.value)


def test_load_ledger_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "ledger.json"
    os.mkfifo(fifo)
    with pytest.raises(ProvisionerError, match="named pipe"):
        load_ledger(fifo)
    done = provisioner("validate", "--ledger", str(fifo), cwd=CASES / "stale-ledger")
    assert done.returncode == 1 and "named pipe" in done.stderr
    assert "Traceback" not in done.stderr


def test_load_ledger_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProvisionerError, match="does not exist"):
        load_ledger(tmp_path / "nope.json")


# --- export --------------------------------------------------------------------------------


def _ledger() -> Ledger:
    return Ledger(
        generated_at=FIXED_NOW,
        qualities=(
            LedgerQuality(
                enterprise_number="0403170701",
                quality_type="employer_nsso",
                sender_number="100000",
                technical_user="EXPDEMOONDERNEMING",
                status="active",
            ),
        ),
        usernames=(LedgerUsername(username="PORTALUSR1", state="reserved"),),
        host="sftp-a",
    )


def test_write_then_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "pub" / "ledger.json"
    write_ledger(path, _ledger())
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    back = load_ledger(path)
    assert back.qualities == _ledger().qualities
    assert back.usernames == _ledger().usernames
    assert back.generated_at == FIXED_NOW and back.host == "sftp-a"
    # Unknown keys are ignored: a later version may add some.
    doc = json.loads(path.read_text())
    doc["extra"] = 1
    doc["qualities"][0]["nsso_number"] = "123"
    path.write_text(json.dumps(doc))
    assert load_ledger(path).qualities == _ledger().qualities


def test_export_from_an_imported_state(tmp_path: Path) -> None:
    """The export lists every quality with its number, user and status, and the retired and
    reserved names; it holds nothing else (no contact data, no keys, no e-mail addresses)."""
    from import_support import write_csv

    from provisioner.adoption import run_import

    url = f"sqlite:///{tmp_path / 'state.db'}"
    csv = write_csv(tmp_path / "export.csv", 20)
    names = tmp_path / "reserved.txt"
    names.write_text("PORTALUSR1\n")
    run_import(url, csv, reserved_path=names, commit=True, now=FIXED_NOW)
    with StateStore.open(url) as store:
        ledger = ledger_from_snapshot(store.snapshot(), generated_at=FIXED_NOW, host="sftp-a")
    assert len(ledger.qualities) == 20
    removed = [q for q in ledger.qualities if q.status == "removed"]
    assert len(removed) == 2
    assert {u.username: u.state for u in ledger.usernames} == {
        **{q.technical_user: "retired" for q in removed},
        "PORTALUSR1": "reserved",
    }
    first = next(q for q in ledger.qualities if q.sender_number == "100000")
    assert (first.technical_user, first.status, str(first.registered_on)) == (
        "PORTALSFTP000000",
        "pending",
        "2019-03-01",
    )
    text = ledger.dumps()
    assert "@" not in text and "ssh-" not in text and "contact" not in text
    out = tmp_path / "ledger.json"
    done = provisioner("ledger", "export", "--state-url", url, "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(load_ledger(out).qualities) == 20


def test_export_without_a_state_creates_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'none' / 'state.db'}"
    done = provisioner("ledger", "export", "--state-url", url, cwd=tmp_path)
    assert done.returncode == 1
    assert "no state database" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "none").exists()


def test_a_run_publishes_the_ledger(tmp_path: Path) -> None:
    """Every reconcile run writes `ledger_file` next to its heartbeat, from the state it left."""
    from conftest import NOW, Host
    from ops_support import run

    host = Host(tmp_path)
    settings = host.settings().model_copy(update={"notifications": False})
    report = run(settings, [host.decls], host.base, now=NOW)
    assert report.outcome == "ok", report.errors
    ledger = load_ledger(settings.ledger_file)
    assert settings.ledger_file.parent == settings.status_file.parent
    assert {q.technical_user for q in ledger.qualities} == {
        "EXPDEMOONDERNEMING",
        "secsocexemple01",
    }
    assert ledger.generated_at >= NOW and ledger.next_sync is not None
    assert stat.S_IMODE(settings.ledger_file.stat().st_mode) == 0o644


def test_stale_warning_threshold() -> None:
    from provisioner.ledger import declared_of, ledger_rules

    ledger = replace(_ledger(), source="ledger.json")
    fresh = ledger_rules(
        declared_of([]), ledger, FIXED_NOW + timedelta(hours=2), timedelta(hours=2)
    )
    stale = ledger_rules(
        declared_of([]), ledger, FIXED_NOW + timedelta(hours=3), timedelta(hours=2)
    )
    assert fresh == []
    assert [d.code for d in stale] == ["ledger-stale"]
    assert "3 hours" in stale[0].message or "180 minutes" in stale[0].message
