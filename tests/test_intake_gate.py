"""The intake gate on a real tree: hostile uploads, records, notices, crashes, two hosts.

Nothing is mocked but the crash points (an exception thrown right after a real step, as a
kill -9 would stop there) and, in the kill test, nothing at all: a real `provisioner intake
--once` process is killed with SIGKILL at random moments.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from provisioner.errors import LockError
from provisioner.intake import moves, notices
from provisioner.intake.gate import lock_file, metrics_file, run_lock, run_once, serve
from provisioner.intake.names import check_name
from tests.intake_support import IntakeHost, make_host, sender_channel


@pytest.fixture
def host(tmp_path: Path) -> IntakeHost:
    return make_host(tmp_path / "host")


def _files_of(record: dict[str, Any]) -> list[str]:
    return [f["name"] for f in record["files"]]


# --- what an accepted set leaves -------------------------------------------------------------


def test_an_accepted_set_moves_whole_with_its_record(host: IntakeHost) -> None:
    ch = host.add(sender_channel("ACMEPAYROLL", "100000"))
    names = host.upload_set(ch, 1, parts=2)
    contents = {n: (host.upload_dir(ch.user, "IN") / n).read_bytes() for n in names}
    summary = run_once(host.settings)
    assert (summary.accepted, summary.refused) == (1, 0)
    assert list(host.upload_dir(ch.user, "IN").iterdir()) == []
    [record] = host.records("accepted")
    where = host.settings.intake_dir / "R" / record["set_id"]
    assert sorted(p.name for p in (where / "files").iterdir()) == sorted(names)
    assert {f["name"]: f["sha256"] for f in record["files"]} == {
        n: hashlib.sha256(c).hexdigest() for n, c in contents.items()
    }
    assert record["certificate_fingerprint"] == ch.signers[0].sha256
    assert record["sender_number"] == "100000" and record["user"] == ch.user
    assert record["quality"] == "0403170701/employer_nsso"
    assert (record["purpose"], record["environment"]) == ("DMFA", "R")
    assert record["received_at"] and record["checked_at"]
    assert host.notices(ch.user) == {}
    assert list(host.settings.intake_dir.joinpath(".staging").iterdir()) == []
    assert list((host.settings.work_dir / "intake-journal").iterdir()) == []
    audit = [json.loads(line) for line in host.settings.audit_log.read_text().splitlines()]
    assert [a["event"] for a in audit] == ["intake-accepted"]
    assert sorted(f["name"] for f in audit[0]["files"]) == sorted(names)
    prom = metrics_file(host.settings).read_text()
    assert "sftp_provisioner_intake_sets_accepted_total 1" in prom


def test_the_notice_is_the_senders_in_the_grammar_of_files_sent_back(host: IntakeHost) -> None:
    ch = host.add(sender_channel("ACMEPAYROLL", "100000", language="fr"))
    host.upload_set(ch, 2, purpose="ZIMA")
    host.put(ch.user, "IN", "FI.DMFA.100000.20250101.00001.R.1.1\u202e\n", b"x")
    run_once(host.settings)
    found = host.notices(ch.user)
    assert len(found) == 2
    for name, text in found.items():
        check = check_name(name, today=_today(), uploaded=False)
        assert check.ok and check.parsed and check.parsed.kind == "FO", name
        assert check.parsed.sender == "999999" and check.parsed.purpose == "PCHK"
        path = host.chroot(ch.user) / "OUT" / name
        st = path.stat()
        assert stat.S_IMODE(st.st_mode) == 0o640
        assert (st.st_uid, st.st_gid) == (
            (host.chroot(ch.user) / "OUT").stat().st_uid,
            (host.chroot(ch.user) / "OUT").stat().st_gid,
        )
        assert "pas un accusé de réception de la sécurité sociale" in text
        assert "not an acknowledgement of the social security" in text
        assert "\u202e" not in text  # hostile names are shown escaped
    text = "\n".join(found.values())
    assert "154: Ce canal n'est pas enregistré" in text
    assert "\\u202e\\n" in text


def _today() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC).date()


# --- hostile uploads ---------------------------------------------------------------------------


def test_links_directories_and_fifos_are_left_alone_and_reported(
    host: IntakeHost, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ch = host.add(sender_channel("ACMEPAYROLL", "100000"))
    up = host.upload_dir(ch.user, "IN")
    secret = tmp_path / "secret"
    secret.write_text("root:x:0:0\n")
    day = f"{_today():%Y%m%d}"
    (up / f"FI.DMFA.100000.{day}.00003.R.1.1").symlink_to(secret)
    os.link(secret, up / f"FS.DMFA.100000.{day}.00003.R.1.1")
    (up / f"GO.DMFA.100000.{day}.00004.R.1").mkdir()
    os.mkfifo(up / f"FI.DMFA.100000.{day}.00004.R.1.1")
    host.put(ch.user, "IN", f"GO.DMFA.100000.{day}.00003.R.1", b"")
    summary = run_once(host.settings)
    assert summary.ignored == 4
    left = sorted(p.name for p in up.iterdir())
    assert left == sorted(
        [
            f"FI.DMFA.100000.{day}.00003.R.1.1",
            f"FS.DMFA.100000.{day}.00003.R.1.1",
            f"GO.DMFA.100000.{day}.00004.R.1",
            f"FI.DMFA.100000.{day}.00004.R.1.1",
        ]
    )
    assert secret.read_text() == "root:x:0:0\n"
    # The GO's set holds only what is a plain file: nothing to check it against.
    [record] = host.records("refused")
    assert _files_of(record) == [f"GO.DMFA.100000.{day}.00003.R.1"]
    assert {f["code"] for f in record["findings"]} == {120}
    assert "ignored_entries 4" in metrics_file(host.settings).read_text()


def test_a_file_still_being_written_is_not_taken(tmp_path: Path) -> None:
    host = make_host(tmp_path / "h", intake_stability=30)
    ch = host.add(sender_channel("ACMEPAYROLL", "100000"))
    names = host.upload_set(ch, 5)
    # The last write happens now: ctime (which no one can set) is now for every file.
    summary = run_once(host.settings)
    assert (summary.accepted, summary.refused, summary.unstable) == (0, 0, len(names))
    assert sorted(p.name for p in host.upload_dir(ch.user, "IN").iterdir()) == sorted(names)


def test_a_set_without_go_waits(host: IntakeHost) -> None:
    ch = host.add(sender_channel("ACMEPAYROLL", "100000"))
    names = host.upload_set(ch, 6, go=False)
    summary = run_once(host.settings)
    assert (summary.accepted, summary.refused, summary.waiting) == (0, 0, 1)
    assert sorted(p.name for p in host.upload_dir(ch.user, "IN").iterdir()) == sorted(names)


def test_one_run_at_a_time(host: IntakeHost) -> None:
    host.add(sender_channel("ACMEPAYROLL", "100000"))
    with run_lock(lock_file(host.settings)), pytest.raises(LockError, match="holds the lock"):
        run_once(host.settings)


# --- two hosts sharing the state ------------------------------------------------------------


def test_two_hosts_sharing_the_state_accept_a_name_once(tmp_path: Path) -> None:
    a = make_host(tmp_path / "a")
    url = a.settings.state_url
    b = make_host(tmp_path / "b", state_url=url, host_name="intake-b")
    signer = a.add(sender_channel("ACMEPAYROLL", "100000")).signers
    b.add(sender_channel("ACMEPAYROLL", "100000", signer))
    a.upload_set(a.channels["ACMEPAYROLL"], 7)
    b.upload_set(b.channels["ACMEPAYROLL"], 7)
    first, second = run_once(a.settings), run_once(b.settings)
    assert (first.accepted, second.accepted, second.refused_by_code[133]) == (1, 0, 1)


# --- crashes at every step -------------------------------------------------------------------


class Crash(BaseException):
    """Stands for a kill -9: nothing after this point of the run happens."""


def _crash_after(target: Any, name: str, monkeypatch: pytest.MonkeyPatch, *, skip: int = 0) -> None:
    real = getattr(target, name)
    calls = {"n": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] > skip:
            raise Crash
        return result

    monkeypatch.setattr(target, name, wrapper)


def _half_staged(monkeypatch: pytest.MonkeyPatch) -> None:
    real = moves.stage_files

    def half(upload_fd: int, files_fd: int, names: list[str]) -> list[str]:
        real(upload_fd, files_fd, names[: len(names) // 2])
        raise Crash

    monkeypatch.setattr(moves, "stage_files", half)


CRASH_POINTS: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "journal written, nothing moved": lambda mp: _crash_after(moves, "write_journal", mp),
    "half the files moved": _half_staged,
    "all files moved": lambda mp: _crash_after(moves, "stage_files", mp),
    "record written": lambda mp: _crash_after(moves, "write_record", mp),
    "notice journalled": lambda mp: _crash_after(moves, "write_journal", mp, skip=1),
    "set in its final place": lambda mp: _crash_after(moves, "finalize", mp),
    "notice written": lambda mp: _crash_after(notices, "write_notice", mp),
    "journal dropped": lambda mp: _crash_after(moves, "drop_journal", mp),
}


@pytest.mark.parametrize(
    ("point", "refused"),
    [
        pytest.param(point, refused, id=f"{point}-{'refused' if refused else 'accepted'}")
        for point in CRASH_POINTS
        for refused in (False, True)
        # An accepted set gets no notice.
        if refused or point not in ("notice written", "notice journalled")
    ],
)
def test_a_crash_at_any_step_loses_and_doubles_nothing(
    host: IntakeHost, monkeypatch: pytest.MonkeyPatch, point: str, refused: bool
) -> None:
    ch = host.add(sender_channel("ACMEPAYROLL", "100000"))
    names = host.upload_set(ch, 8, parts=3, purpose="ZIMA" if refused else "DMFA")
    before = host.inventory()
    with monkeypatch.context() as mp:
        CRASH_POINTS[point](mp)
        with pytest.raises(Crash):
            run_once(host.settings)
    middle = host.inventory()
    assert sorted(middle) == sorted(before) and all(len(v) == 1 for v in middle.values())
    run_once(host.settings)
    after = host.inventory()
    assert sorted(after) == sorted(before)
    assert all(len(v) == 1 for v in after.values()), after
    where = {w for v in after.values() for w, _ in v}
    assert where == {"quarantine" if refused else "intake"}
    [record] = host.records()
    assert sorted(_files_of(record)) == sorted(names)
    assert len(host.notices(ch.user)) == (1 if refused else 0)
    assert list(host.settings.intake_dir.joinpath(".staging").iterdir()) == []
    assert list((host.settings.work_dir / "intake-journal").glob("*.json")) == []


# --- kill -9 of a real process ---------------------------------------------------------------


def _settings_file(host: IntakeHost) -> Path:
    data = host.settings.model_dump(mode="json", exclude={"root"})
    path = host.root / "settings.yaml"
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in data.items()), "utf-8")
    return path


@pytest.mark.slow
def test_kill_9_at_random_points_over_200_sets_loses_and_doubles_nothing(host: IntakeHost) -> None:
    a = host.add(sender_channel("ACMEPAYROLL", "100000"))
    b = host.add(sender_channel("BETAPAYROLL", "100001"))
    sets = 0
    for i in range(1, 101):
        host.upload_set(a, i, parts=1 + i % 3)
        host.upload_set(b, i, env="S" if i % 2 else "R", purpose="ZIMA" if i % 5 == 0 else "DMFA")
        sets += 2
    assert sets == 200
    before = host.inventory()
    settings = _settings_file(host)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFTP_PROVISIONER_")}
    rng = random.Random(13)
    kills = 0
    for _ in range(25):
        proc = subprocess.Popen(
            [sys.executable, "-m", "provisioner", "intake", "--once", "--settings", str(settings)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        time.sleep(rng.uniform(0.3, 2.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if not any(
            host.upload_dir(u, d).iterdir()
            for u in host.channels
            for d in ("IN", "INTEST", "INTEST-S")
        ):
            break
    assert kills >= 3, "the runs ended before they could be killed: raise the set count"
    final = subprocess.run(
        [sys.executable, "-m", "provisioner", "intake", "--once", "--settings", str(settings)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert final.returncode == 0, final.stderr
    after = host.inventory()
    assert sorted(after) == sorted(before)
    doubled = {k: v for k, v in after.items() if len(v) != 1}
    assert not doubled
    assert all(w != "upload" for v in after.values() for w, _ in v)
    records = host.records()
    assert len(records) == 200
    assert len({r["set"] for r in records if r["user"] == a.user}) == 100
    refused = [r for r in records if r["status"] == "refused"]
    assert {f["code"] for r in refused for f in r["findings"]} == {154}
    sent_back = {**host.notices(b.user, "OUT"), **host.notices(b.user, "OUTTEST-S")}
    assert len(sent_back) == len(refused) == 20  # one each, never two
    assert list(host.settings.intake_dir.joinpath(".staging").iterdir()) == []
    assert list((host.settings.work_dir / "intake-journal").glob("*.json")) == []


# --- the long-running modes -------------------------------------------------------------------


@pytest.mark.parametrize("poll", [False, True], ids=["watch", "poll"])
def test_the_service_takes_a_set_that_arrives_while_it_runs(tmp_path: Path, poll: bool) -> None:
    host = make_host(tmp_path / "h", intake_poll_interval=0.5)
    ch = host.add(sender_channel("ACMEPAYROLL", "100000"))
    stop = threading.Event()
    runs: list[int] = []
    service = threading.Thread(
        target=lambda: runs.append(serve(host.settings, poll=poll, stop=stop)), daemon=True
    )
    service.start()
    try:
        deadline = time.monotonic() + 30
        while not metrics_file(host.settings).exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # the first run, on an empty IN, is over
        host.upload_set(ch, 9)
        deadline = time.monotonic() + 30
        while not host.records() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [r["status"] for r in host.records()] == ["accepted"]
    finally:
        stop.set()
        service.join(timeout=30)
    assert not service.is_alive() and runs and runs[0] >= 2


def test_a_name_that_is_not_utf8_is_refused_and_shown_escaped(host: IntakeHost) -> None:
    ch = host.add(sender_channel("ACMEPAYROLL", "100000"))
    raw = os.fsencode(host.upload_dir(ch.user, "IN")) + b"/FI.\xff\xfe\x1b[31m.x"
    with open(raw, "wb") as fh:
        fh.write(b"<DmfA/>")
    os.utime(raw, (1, 1))
    summary = run_once(host.settings)
    assert summary.refused_by_code == {131: 1}
    [record] = host.records("refused")
    quarantined = os.fsencode(host.settings.quarantine_dir / record["set_id"] / "files")
    assert os.listdir(quarantined) == [b"FI.\xff\xfe\x1b[31m.x"]  # kept byte for byte
    [notice] = host.notices(ch.user).values()
    assert "FI.\\xff\\xfe\\u001b[31m.x" in notice and "\x1b" not in notice
