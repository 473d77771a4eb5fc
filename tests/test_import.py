"""`provisioner import`: existing registrations brought into the state, all or nothing.

The rule book is tested as data: each directory `tests/import_cases/<case>/` holds the
`import.csv` an operator would feed, optionally `reserved.txt` (--reserved-usernames), and
what the state already holds as `state.csv` (registrations, same format) and
`state-reserved.txt`; `expected.txt` is exactly what the operator reads: the diagnostics
(`import.csv:LINE:COL: error[code] message`) when the import is refused, else the dry run's
table. The case's name says what it shows; `ok-*` cases must be accepted. Rewrite the golden
files with `UPDATE_GOLDEN=1 pytest tests/test_import.py -k <case>` and review the diff.

The rest goes through the command line and the real store: SQLite and PostgreSQL, the 5,000-row
import, its first apply, idempotence, hostile files.
"""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from conftest import run_provisioner

from provisioner.adoption import (
    Held,
    ImportPlan,
    ReservedName,
    plan_import,
    read_import,
    read_reserved,
    render_diagnostics,
    render_plan,
)
from provisioner.quality_id import QualityId

CASES = Path(__file__).parent / "import_cases"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
TODAY = date(2026, 11, 29)
NOW = datetime(2026, 11, 29, 20, 30, tzinfo=UTC)


def case_dirs() -> list[Path]:
    return sorted(p for p in CASES.iterdir() if p.is_dir())


def held_from_files(case: Path) -> Held:
    registrations: dict[QualityId, tuple[int, str]] = {}
    usernames: dict[str, QualityId | None] = {}
    if (case / "state.csv").exists():
        rows, problems = read_import(case / "state.csv", "state.csv", today=TODAY)
        assert not problems, render_diagnostics(problems)
        for row in rows:
            registrations[row.qid] = (row.sender_number, row.technical_user)
            usernames[row.technical_user] = row.qid
    if (case / "state-reserved.txt").exists():
        names, problems = read_reserved(case / "state-reserved.txt", "state-reserved.txt")
        assert not problems
        usernames.update((n.username, None) for n in names)
    return Held(registrations=registrations, usernames=usernames)


def run_case(case: Path) -> tuple[ImportPlan, str]:
    cwd = Path.cwd()
    os.chdir(case)
    try:
        rows, problems = read_import(Path("import.csv"), "import.csv", today=TODAY)
        reserved: list[ReservedName] = []
        if Path("reserved.txt").exists():
            reserved, more = read_reserved(Path("reserved.txt"), "reserved.txt")
            problems.extend(more)
        plan = plan_import("import.csv", rows, reserved, held_from_files(case), problems)
    finally:
        os.chdir(cwd)
    text = render_plan(plan) if plan.ok else render_diagnostics(plan.diagnostics)
    return plan, text


@pytest.mark.parametrize("case", case_dirs(), ids=lambda p: p.name)
def test_case(case: Path) -> None:
    plan, text = run_case(case)
    golden = case / "expected.txt"
    if UPDATE:
        golden.write_text(text, "utf-8")
    assert golden.exists(), f"{golden} is missing; write it with UPDATE_GOLDEN=1 and review it"
    assert text == golden.read_text("utf-8")
    assert plan.ok == case.name.startswith("ok-"), text


# --- the store: one transaction, SQLite and PostgreSQL --------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


from pg import postgres_server, postgres_url  # noqa: E402, F401  (pytest fixtures)


def test_5000_rows_in_one_transaction_then_nothing(state_url: str, tmp_path: Path) -> None:
    """A portal's 5,000 senders come in at once, one version bump, every number and username
    as exported; the counter moves past them; a second run records nothing."""
    import time

    from import_support import rows, write_csv

    from provisioner.adoption import run_import
    from provisioner.state import StateStore

    csv = write_csv(tmp_path / "export.csv", 5000)
    started = time.perf_counter()
    outcome = run_import(state_url, csv, commit=True, now=NOW)
    elapsed = time.perf_counter() - started
    assert outcome.written and outcome.plan.ok and len(outcome.plan.new) == 5000
    print(f"5,000-row import into {state_url.split(':')[0]}: {elapsed:.2f} s")
    with StateStore.open(state_url) as store:
        snapshot = store.snapshot()
    assert snapshot.version == 1
    assert snapshot.next_sender_number == 105000
    exported = {}
    for line in rows(5000):
        en, qt, sender, user, _day, status = line.split(",")
        exported[QualityId(en, qt)] = (int(sender), user, status)
    got = {
        qid: (reg.sender_number, reg.technical_user, reg.status)
        for qid, reg in snapshot.registrations.items()
    }
    assert got == {
        qid: (n, u, "pending" if s == "active" else "removed")
        for qid, (n, u, s) in exported.items()
    }
    assert all(r.uid is None for r in snapshot.registrations.values())
    assert set(snapshot.usernames) == {u for _, u, _ in exported.values()}
    registered = snapshot.registrations[QualityId("0300000016", "employer_nsso")].registered_at
    assert registered.isoformat() == "2019-02-28T23:00:00+00:00"  # 1 March in Brussels

    again = run_import(state_url, csv, commit=True, now=NOW)
    assert not again.written and not again.plan.changed
    assert len(again.plan.already) == 5000
    assert "nothing to record" in render_plan(again.plan, committed=True)
    with StateStore.open(state_url) as store:
        assert store.version() == 1


def test_a_refused_row_writes_nothing(state_url: str, tmp_path: Path) -> None:
    from import_support import HEADER, rows

    from provisioner.adoption import run_import
    from provisioner.state import StateStore

    good = rows(300)
    bad = [*good[:150], good[10].replace(",2019-03-11,", ",2019-03-12,"), *good[150:]]
    csv = tmp_path / "export.csv"
    csv.write_text(HEADER + "\n" + "\n".join(bad) + "\n")
    outcome = run_import(state_url, csv, commit=True, now=NOW)
    assert not outcome.written and not outcome.plan.ok
    assert [(d.location.line, d.code) for d in outcome.plan.diagnostics] == [
        (152, "quality-duplicate")
    ]
    with StateStore.open(state_url) as store:
        snapshot = store.snapshot()
    assert snapshot.registrations == {} and snapshot.version == 0


def test_the_state_moved_on_between_check_and_write(state_url: str, tmp_path: Path) -> None:
    """Another writer (a reconcile, a second import) committed meanwhile: nothing is written."""
    from provisioner.adoption import held_of, plan_import, read_import, registrations_of
    from provisioner.state import StaleState, StateStore

    csv = tmp_path / "export.csv"
    csv.write_text(
        "enterprise_number,quality_type,sender_number,technical_user,registered_on,status\n"
        "0403170701,employer_nsso,100000,EXPDEMOONDERNEMING,2019-03-01,active\n"
    )
    rows, problems = read_import(csv, today=TODAY)
    with StateStore.open(state_url) as store:
        snapshot = store.snapshot()
        plan = plan_import(str(csv), rows, [], held_of(snapshot), problems)
        store.reserve_usernames(["EXPDEMOONDERNEMING"], NOW)  # the other writer
        with pytest.raises(StaleState):
            store.import_registrations(
                registrations_of(plan, NOW), [], base_version=snapshot.version, now=NOW
            )
        assert store.snapshot().registrations == {}


def test_numbers_allocated_after_an_import_collide_with_none(tmp_path: Path) -> None:
    """A quality declared after the import gets a fresh number; imported numbers, even those
    of removed qualities and those below the counter, are never handed out again."""
    from import_support import write_csv

    from provisioner.adoption import run_import
    from provisioner.state import StateStore, allocate

    url = f"sqlite:///{tmp_path / 'state.db'}"
    # Numbers from 100000 up with gaps: the portal gave 100000-100999 and then 100500 again
    # is not possible, so the import holds every one of them.
    run_import(url, write_csv(tmp_path / "export.csv", 1000), commit=True, now=NOW)
    with StateStore.open(url) as store:
        snapshot = store.snapshot()
    declared = {qid: reg.technical_user for qid, reg in snapshot.registrations.items()}
    newcomer = QualityId("0403170701", "employer_nsso")
    declared[newcomer] = "NEWCOMER2026"
    allocation = allocate(snapshot, declared, now=NOW, sender_start=100000)
    assert [r.qid for r in allocation.new] == [newcomer]
    fresh = allocation.new[0].sender_number
    taken = {r.sender_number for r in snapshot.registrations.values()}
    assert fresh not in taken and fresh == 101000
    # The removed ones return with their own numbers; nobody else is refused.
    assert not allocation.refused


def test_reserved_usernames_are_recorded_and_refused_afterwards(tmp_path: Path) -> None:
    from provisioner.adoption import run_import
    from provisioner.state import StateStore

    url = f"sqlite:///{tmp_path / 'state.db'}"
    csv = tmp_path / "export.csv"
    csv.write_text(
        "enterprise_number,quality_type,sender_number,technical_user,registered_on,status\n"
        "0403170701,employer_nsso,100000,EXPDEMOONDERNEMING,2019-03-01,active\n"
    )
    names = tmp_path / "reserved.txt"
    names.write_text("# portal users\nPORTALUSR1\nLDAPADMIN01  # the directory\n")
    outcome = run_import(url, csv, reserved_path=names, commit=True, now=NOW)
    assert outcome.written and [n.username for n in outcome.plan.reserved] == [
        "PORTALUSR1",
        "LDAPADMIN01",
    ]
    with StateStore.open(url) as store:
        assert store.reserved_usernames() == ["LDAPADMIN01", "PORTALUSR1"]
    # Afterwards an export row with such a name (any case) is refused at its line.
    csv.write_text(
        csv.read_text() + "0200065765,employer_nsso,100001,portalusr1,2019-03-01,active\n"
    )
    again = run_import(url, csv, reserved_path=names, commit=True, now=NOW)
    assert not again.written
    assert [(d.location.line, d.code) for d in again.plan.diagnostics] == [
        (3, "technical-user-similar")
    ]


# --- the command line -------------------------------------------------------------------------


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_provisioner(*args, cwd=cwd)


def test_cli_dry_run_commit_and_again(tmp_path: Path) -> None:
    from import_support import write_csv

    write_csv(tmp_path / "export.csv", 40)
    url = f"sqlite:///{tmp_path / 'state' / 'state.db'}"
    dry = cli("import", "export.csv", "--state-url", url, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[1].split() == [
        "line",
        "enterprise",
        "quality",
        "type",
        "sender",
        "technical",
        "user",
        "registered",
        "status",
    ]
    assert lines[2].split() == [
        "2",
        "0300.000.016",
        "employer_nsso",
        "100000",
        "PORTALSFTP000000",
        "2019-03-01",
        "active",
    ]
    assert "would record 40 registrations (36 active, 4 removed)" in lines[-1]
    assert not (tmp_path / "state").exists(), "a dry run creates no state"
    done = cli("import", "export.csv", "--state-url", url, "--commit", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("recorded 40 registrations")
    again = cli("import", "export.csv", "--state-url", url, "--commit", cwd=tmp_path)
    assert again.returncode == 0
    assert again.stdout.startswith("nothing to record: the state already holds every row")


def test_cli_refusal_names_the_line_and_writes_nothing(tmp_path: Path) -> None:
    from import_support import HEADER, rows

    good = rows(10)
    (tmp_path / "export.csv").write_text(
        HEADER + "\n" + "\n".join([*good[:5], good[2].replace("100002", "999999"), *good[5:]])
    )
    url = f"sqlite:///{tmp_path / 'state.db'}"
    done = cli("import", "export.csv", "--state-url", url, "--commit", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "export.csv:7:26: error[sender-number-reserved] 999999 is the gateway's own sender "
        "number (the files it sends back carry it) and never a quality's",
        "refused: 1 error; nothing was imported",
    ]
    assert done.stdout == ""
    assert not (tmp_path / "state.db").exists()


@pytest.mark.parametrize("kind", ["fifo", "directory", "huge", "missing", "devzero"])
def test_cli_hostile_files_are_refused_unread(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "export.csv"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "huge":
        with path.open("wb") as fh:
            fh.truncate(64 * 1024 * 1024)  # sparse: NUL bytes, over the cap
    elif kind == "devzero":
        path.symlink_to("/dev/zero")
    url = f"sqlite:///{tmp_path / 'state.db'}"
    started = __import__("time").monotonic()
    done = cli("import", "export.csv", "--state-url", url, "--commit", cwd=tmp_path)
    assert __import__("time").monotonic() - started < 60
    assert done.returncode == 1, done.stdout
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    expected = {
        "fifo": "error[file-not-regular] this CSV file is a named pipe (FIFO)",
        "directory": "Error: Invalid value for 'FILE'",
        "huge": "error[file-too-large]",
        "missing": "error[file-not-found]",
        "devzero": "error[file-not-regular] this CSV file is a character device",
    }[kind]
    assert expected in done.stderr
    assert not (tmp_path / "state.db").exists()


def test_cli_state_options_like_the_host_commands(tmp_path: Path) -> None:
    """--root puts the default state under DIR, as plan and apply do; --settings is read."""
    from import_support import write_csv

    write_csv(tmp_path / "export.csv", 3)
    root = tmp_path / "root"
    done = cli("import", "export.csv", "--root", str(root), "--commit", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (root / "var/lib/sftp-provisioner/state.db").is_file()
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"state_url: sqlite:///{tmp_path / 'other.db'}\n")
    done = cli("import", "export.csv", "--settings", str(settings), "--commit", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "other.db").is_file()


# --- adoption, end to end: import, then the first apply --------------------------------------


def test_import_5000_then_first_apply_keeps_every_number_and_username(tmp_path: Path) -> None:
    """The adoption path: the export of 5,000 registrations (and the two example qualities,
    with the numbers the portal gave them) is imported, then the first apply provisions the
    declared ones: not one sender number or username changes, the removed ones stay removed
    and keep theirs, and a quality new to the portal gets a number nobody held."""
    import json

    from conftest import (
        EN_ONDERNEMING,
        EN_SECSOC,
        USER_ONDERNEMING,
        USER_SECSOC,
        Host,
        add_third_quality,
    )
    from import_support import HEADER, rows, write_declarations

    from provisioner.adoption import run_import

    host = Host(tmp_path)
    declared = write_declarations(host.decls / "qualities" / "imported", 5000)
    assert declared == 4500
    examples = [
        f"{EN_ONDERNEMING},employer_nsso,123456,{USER_ONDERNEMING},2016-09-01,active",
        f"{EN_SECSOC},employer_nsso,000777,{USER_SECSOC},2012-01-02,active",
    ]
    csv = tmp_path / "export.csv"
    csv.write_text(HEADER + "\n" + "\n".join([*rows(5000), *examples]) + "\n", "utf-8")
    url = host.settings().state_url
    outcome = run_import(url, csv, commit=True, now=NOW)
    assert outcome.written, render_diagnostics(outcome.plan.diagnostics)
    before = host.snapshot()
    assert len(before.registrations) == 5002

    result = host.apply()
    assert not result.plan.refused, [c.reasons for c in result.plan.refused]
    after = host.snapshot()
    for qid, reg in before.registrations.items():
        now_reg = after.registrations[qid]
        assert (now_reg.sender_number, now_reg.technical_user) == (
            reg.sender_number,
            reg.technical_user,
        ), qid
        expected = "removed" if reg.status == "removed" else "active"
        assert now_reg.status == expected, (qid, now_reg.status)
    # Only the SFTP qualities got an account, with the numbers of the portal.
    passwd = (host.root / "var/lib/extrausers/passwd").read_text()
    assert {line.split(":")[0] for line in passwd.splitlines()} >= {USER_ONDERNEMING, USER_SECSOC}
    assert "PORTALSFTP" not in passwd
    routing = json.loads((host.root / "var/lib/sftp-gateway/routing.json").read_text())
    senders = routing["senders"]
    assert senders["123456"]["username"] == USER_ONDERNEMING
    assert senders["000777"]["username"] == USER_SECSOC
    assert len(senders) == 4502  # every active quality, whatever its channels

    add_third_quality(host)
    host.apply()
    third = host.snapshot()
    newcomer = next(r for q, r in third.registrations.items() if q not in before.registrations)
    held = {r.sender_number for r in before.registrations.values()}
    assert newcomer.sender_number not in held
    assert newcomer.sender_number > max(held)
    assert len(third.registrations) == 5003


# --- properties of the reader ---------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=400))
def test_any_bytes_get_diagnostics_never_an_exception(tmp_path: Path, data: bytes) -> None:
    """Whatever the file holds, the reader answers with rows or located diagnostics."""
    path = tmp_path / "export.csv"
    path.write_bytes(
        b"enterprise_number,quality_type,sender_number,technical_user,registered_on,status\n" + data
    )
    rows, problems = read_import(path, "export.csv", today=TODAY)
    lines = data.count(b"\n") + 2
    for d in problems:
        assert d.location.file == "export.csv"
        assert 0 <= d.location.line <= lines
        assert "\n" not in d.message
    plan = plan_import("export.csv", rows, [], Held(), problems)
    assert plan.ok == (not problems and bool(rows) and not plan.diagnostics)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    delimiter=st.sampled_from([",", ";"]),
    quote=st.lists(st.booleans(), min_size=6, max_size=6),
    pad=st.lists(st.sampled_from(["", " ", "  "]), min_size=6, max_size=6),
    crlf=st.booleans(),
    bom=st.booleans(),
    order=st.permutations(list(range(6))),
)
def test_quoting_spacing_order_and_line_ends_do_not_change_the_row(
    tmp_path: Path,
    delimiter: str,
    quote: list[bool],
    pad: list[str],
    crlf: bool,
    bom: bool,
    order: list[int],
) -> None:
    """What a spreadsheet may do to an export (quotes, padding, column order, CRLF, a BOM,
    semicolons) reads as the same registration."""
    from provisioner.adoption import COLUMNS

    values = [
        "0403.170.701",
        "employer_nsso",
        "000123",
        "EXPDEMOONDERNEMING",
        "2019-03-01",
        "removed",
    ]

    def cell(i: int, text: str) -> str:
        return pad[i] + (f'"{text}"' if quote[i] else text) + pad[i]

    end = "\r\n" if crlf else "\n"
    header = delimiter.join(cell(i, COLUMNS[i]) for i in order)
    row = delimiter.join(cell(i, values[i]) for i in order)
    path = tmp_path / "export.csv"
    path.write_bytes(("\ufeff" if bom else "").encode() + (header + end + row + end).encode())
    rows, problems = read_import(path, "export.csv", today=TODAY)
    assert not problems, render_diagnostics(problems)
    (got,) = rows
    assert (got.qid, got.sender, got.technical_user, str(got.registered_on), got.status) == (
        QualityId("0403170701", "employer_nsso"),
        "000123",
        "EXPDEMOONDERNEMING",
        "2019-03-01",
        "removed",
    )
