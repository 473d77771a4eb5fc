"""One run of the intake gate: finish what a killed run left, then every ready set, once.

One run at a time per host (a lock file next to the reconciler's). Inputs: the routing table
and the state database; outputs: moved sets with their records, notices, an audit line per
set, log events and a Prometheus textfile next to the reconciler's.
"""

# Descriptor-relative os calls on purpose (dir_fd, O_NOFOLLOW).

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from provisioner import logs
from provisioner.errors import ProvisionerError
from provisioner.fsutil import write_atomic
from provisioner.intake import claims, moves, notices, rules
from provisioner.intake.anomalies import Finding
from provisioner.intake.names import check_name
from provisioner.intake.routing import Channel, IntakeError, Routing, load_routing
from provisioner.intake.sets import SetFile, UploadSet, survey
from provisioner.intake.uploads import (
    ANSWER_DIR,
    DIR_FLAGS,
    UPLOAD_DIRS,
    Listing,
    list_uploads,
    read_upload,
    upload_of,
)
from provisioner.runlock import exclusive_lock
from provisioner.safefile import shown_name
from provisioner.settings import HostSettings

RECORD_FORMAT = "sftp-provisioner-intake-record"


@dataclass(slots=True)
class RunSummary:
    accepted: int = 0
    refused: int = 0
    refused_by_code: Counter[int] = field(default_factory=Counter)
    recovered: int = 0
    waiting: int = 0
    unstable: int = 0
    ignored: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def lock_file(settings: HostSettings) -> Path:
    return settings.lock_file.with_name("sftp-provisioner-intake.lock")


def metrics_file(settings: HostSettings) -> Path:
    return settings.metrics_file.with_name("sftp_provisioner_intake.prom")


def layout_of(settings: HostSettings) -> moves.Layout:
    return moves.Layout(
        chroot_base=settings.chroot_base,
        intake_dir=settings.intake_dir,
        quarantine_dir=settings.quarantine_dir,
        journal_dir=settings.work_dir / "intake-journal",
    )


def run_lock(path: Path) -> contextlib.AbstractContextManager[None]:
    """One run at a time per host. (The reconciler's lock, in a file of the gate's own: the two
    never wait for each other.)"""
    return exclusive_lock(path, what="intake run")


def _default_verify() -> rules.Verify:
    from provisioner.intake.signature import verify_detached

    return verify_detached


class Gate:
    def __init__(
        self,
        settings: HostSettings,
        *,
        verify: rules.Verify | None = None,
        clock: Callable[[], datetime] | None = None,
        host: str | None = None,
    ) -> None:
        self.settings = settings
        self.verify = verify or _default_verify()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.host = host or settings.host_name or socket.gethostname()
        self.layout = layout_of(settings)
        self._engine: Engine | None = None
        self.routing: Routing | None = None
        self.summary = RunSummary()
        self._audit: list[dict[str, Any]] = []

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> RunSummary:
        with run_lock(lock_file(self.settings)):
            try:
                self._run()
            finally:
                if self._engine is not None:
                    self._engine.dispose()
                self._write_audit()
        self._write_metrics()
        logs.event(
            "intake-run",
            f"{self.summary.accepted} accepted, {self.summary.refused} refused, "
            f"{self.summary.waiting} waiting",
            accepted=self.summary.accepted,
            refused=self.summary.refused,
            waiting=self.summary.waiting,
            recovered=self.summary.recovered,
            ignored=self.summary.ignored,
        )
        return self.summary

    def _run(self) -> None:
        self.routing = load_routing(self.settings.routing_table)
        self.layout.prepare()
        self._check_one_file_system()
        self._engine = claims.open_state(self.settings.state_url)
        for entry in moves.read_journals(self.layout):
            entry["recovered"] = True
            self._finish(entry)
            self.summary.recovered += 1
        try:
            base_fd = os.open(self.settings.chroot_base, DIR_FLAGS)
        except FileNotFoundError:
            return
        try:
            for user in sorted(self.routing.by_user):
                self._scan_user(base_fd, user)
        finally:
            os.close(base_fd)

    def _check_one_file_system(self) -> None:
        if not self.settings.chroot_base.exists():
            return
        dev = self.settings.chroot_base.stat().st_dev
        for path in (self.settings.intake_dir, self.settings.quarantine_dir):
            if path.stat().st_dev != dev:
                raise IntakeError(
                    f"{path} is not on the file system of chroot_base {self.settings.chroot_base}:"
                    " sets move by rename, which cannot cross file systems"
                )

    def _scan_user(self, base_fd: int, user: str) -> None:
        try:
            chroot_fd = os.open(user, DIR_FLAGS, dir_fd=base_fd)
        except (FileNotFoundError, NotADirectoryError):
            return  # declared, not applied yet
        except OSError as exc:
            self.summary.errors.append(f"{user}: chroot unusable ({exc.strerror})")
            return
        try:
            for directory in UPLOAD_DIRS:
                try:
                    fd = os.open(directory, DIR_FLAGS, dir_fd=chroot_fd)
                except OSError:
                    continue
                try:
                    listing = list_uploads(user, directory, fd)
                    self._report_ignored(listing)
                    self._take_ready(listing, fd)
                finally:
                    os.close(fd)
        finally:
            os.close(chroot_fd)

    def _report_ignored(self, listing: Listing) -> None:
        for name, why in listing.ignored:
            self.summary.ignored += 1
            logs.warn(
                "intake-ignored",
                f"{listing.user}/{listing.directory}/{shown_name(name)}: {why}; left alone",
                user=listing.user,
                directory=listing.directory,
            )

    def _take_ready(self, listing: Listing, upload_fd: int) -> None:
        now = self.clock()
        found = survey(
            listing,
            now_ns=int(now.timestamp() * 1e9),
            today=now.date(),
            stability_ns=int(self.settings.intake_stability * 1e9),
            max_age_ns=self.settings.intake_set_max_age * 1_000_000_000,
        )
        self.summary.waiting += found.waiting
        self.summary.unstable += found.unstable
        for upload_set in found.ready:
            if not self._unchanged(upload_set, upload_fd):
                self.summary.waiting += 1
                continue
            entry = self._journal_entry(upload_set, now)
            moves.write_journal(self.layout, entry)
            self._finish(entry, upload_fd=upload_fd)

    @staticmethod
    def _unchanged(upload_set: UploadSet, upload_fd: int) -> bool:
        for f in upload_set.files:
            try:
                st = os.stat(f.name, dir_fd=upload_fd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            if not f.upload.same_as(st) or st.st_nlink != 1:
                return False
        return True

    def _journal_entry(self, upload_set: UploadSet, now: datetime) -> dict[str, Any]:
        token = secrets.token_hex(4)
        label = str(upload_set.key) if upload_set.key else "malformed"
        set_id = f"{now:%Y%m%dT%H%M%S}.{upload_set.user}.{label}.{token}"
        return {
            "set_id": set_id,
            "user": upload_set.user,
            "directory": upload_set.directory,
            "kind": upload_set.kind,
            "names": list(upload_set.names),
            "started_at": now.isoformat(),
            "phase": "moving",
        }

    # -- one set, from the journal -------------------------------------------------------------
    def _finish(self, entry: dict[str, Any], *, upload_fd: int | None = None) -> None:
        """Take the set of a journal entry from wherever a killed run left it to its end.

        The verdict lives in the set's record.json, written into the staging directory before
        the set moves to its final place: a staged set with a record was decided; a final
        directory means only the notice and the journal entry may be left to do.
        """
        set_id: str = entry["set_id"]
        user: str = entry["user"]
        directory: str = entry["directory"]
        if directory not in UPLOAD_DIRS or not set_id.replace(".", "").replace("T", "").isalnum():
            raise IntakeError(f"journal entry {set_id!r} is not this gate's")
        final = self._final_record(set_id)
        if final is not None:
            self._after_final(entry, final)
            return
        with moves.opened_dir(self.layout.staging_dir) as staging_fd:
            moves.make_dir(set_id, staging_fd)
            with moves.opened_dir(set_id, dir_fd=staging_fd) as set_fd:
                record = moves.read_record(set_fd)
                if record is None:
                    moves.make_dir(moves.FILES, set_fd)
                    with moves.opened_dir(moves.FILES, dir_fd=set_fd) as files_fd:
                        names = list(entry["names"])
                        if upload_fd is not None:
                            staged = moves.stage_files(upload_fd, files_fd, names)
                        else:
                            staged = self._restage(user, directory, files_fd, names)
                        if not staged:
                            # The sender deleted the whole set before it moved: nothing to keep.
                            os.rmdir(moves.FILES, dir_fd=set_fd)
                            os.rmdir(set_id, dir_fd=staging_fd)
                            moves.drop_journal(self.layout, set_id)
                            return
                        record = self._decide(entry, staged, files_fd)
                    moves.write_record(set_fd, record)
            with moves.opened_dir(self._destination(record)) as dest_fd:
                moves.finalize(staging_fd, set_id, dest_fd)
        self._after_final(entry, record)

    def _restage(self, user: str, directory: str, files_fd: int, names: list[str]) -> list[str]:
        try:
            with (
                moves.opened_dir(self.settings.chroot_base) as base_fd,
                moves.opened_dir(user, dir_fd=base_fd) as chroot_fd,
                moves.opened_dir(directory, dir_fd=chroot_fd) as upload_fd,
            ):
                return moves.stage_files(upload_fd, files_fd, names)
        except FileNotFoundError:
            return [n for n in names if moves.exists(n, files_fd)]

    def _final_record(self, set_id: str) -> dict[str, Any] | None:
        for top in (
            *(self.layout.accepted_dir(e) for e in ("R", "T", "S")),
            self.layout.quarantine_dir,
        ):
            path = top / set_id / moves.RECORD
            if path.is_file():
                record: dict[str, Any] = json.loads(path.read_text("ascii"))
                return record
        return None

    def _destination(self, record: dict[str, Any]) -> Path:
        if record["status"] == "accepted":
            return self.layout.accepted_dir(record["environment"])
        return self.layout.quarantine_dir

    def _decide(self, entry: dict[str, Any], staged: list[str], files_fd: int) -> dict[str, Any]:
        """The verdict on the staged files, the names claimed when it passes, and the record."""
        assert self.routing is not None and self._engine is not None
        now = self.clock()
        user: str = entry["user"]
        channel: Channel | None = self.routing.by_user.get(user)
        files: list[SetFile] = []
        for name in staged:
            st = os.stat(name, dir_fd=files_fd, follow_symlinks=False)
            files.append(SetFile(upload_of(name, st), check_name(name, today=now.date())))
        kind = entry["kind"]
        parsed = [f.check.parsed for f in files if f.check.parsed]
        key = parsed[0].key if parsed and kind != "malformed" else None
        if kind == "go" and not any(f.kind == "GO" for f in files):
            kind = "no-go"  # the sender deleted its GO between the scan and the move
        upload_set = UploadSet(user, entry["directory"], kind, key, tuple(files))
        cap = self.settings.intake_max_file_size
        contents: dict[str, bytes] = {}

        def read(f: SetFile) -> bytes:
            if f.name not in contents:
                contents[f.name] = read_upload(files_fd, f.upload, cap)
            return contents[f.name]

        outcome = rules.evaluate(
            upload_set, channel, read=read, verify=self.verify, max_file_size=cap
        )
        findings = list(outcome.findings)
        accepted = outcome.accepted and kind in ("go", "td") and channel is not None
        if not files:
            accepted = False
        if accepted and channel is not None:
            taken = claims.claim(
                self._engine,
                set_id=entry["set_id"],
                sender=channel.sender_number,
                names=[f.name for f in files],
                host=self.host,
                now=now,
            )
            if taken:
                accepted = False
                findings += [Finding(n, 133, "already accepted before") for n in taken]
        if not accepted and entry.get("recovered"):
            claims.release(self._engine, entry["set_id"])
        hashes = []
        for f in files:
            digest = (
                hashlib.sha256(contents[f.name]).hexdigest()
                if f.name in contents
                else _sha256(files_fd, f, cap)
            )
            hashes.append(
                {
                    "name": f.name,
                    "sha256": digest,
                    "size": f.upload.size,
                    "uploaded_at": _iso(f.upload.mtime_ns),
                }
            )
        record = {
            "format": RECORD_FORMAT,
            "version": 1,
            "set_id": entry["set_id"],
            "status": "accepted" if accepted else "refused",
            "set": str(key) if key else None,
            "user": user,
            "sender_number": channel.sender_number if channel else None,
            "quality": channel.quality if channel else None,
            "purpose": key.purpose if key else None,
            "environment": key.env if key and key.env in ("R", "T", "S") else None,
            "date": key.date if key else None,
            "sequence": key.seq if key else None,
            "directory": entry["directory"],
            "kind": kind,
            "certificate_fingerprint": outcome.fingerprints[0] if outcome.fingerprints else None,
            "certificate_fingerprints": list(outcome.fingerprints),
            "files": hashes,
            "findings": [
                {"name": f.name, "code": f.code, "detail": f.detail} for f in sorted(findings)
            ],
            "received_at": _iso(max((f.upload.mtime_ns for f in files), default=0)),
            "checked_at": now.isoformat(),
            "host": self.host,
        }
        return record

    def _after_final(self, entry: dict[str, Any], record: dict[str, Any]) -> None:
        accepted = record["status"] == "accepted"
        if not accepted and entry.get("phase") != "noticed":
            self._notify(entry["set_id"], record)
            entry["phase"] = "noticed"
            moves.write_journal(self.layout, entry)
        moves.drop_journal(self.layout, entry["set_id"])
        codes = sorted({f["code"] for f in record["findings"]})
        if accepted:
            self.summary.accepted += 1
        else:
            self.summary.refused += 1
            self.summary.refused_by_code.update(codes)
        event = "intake-accepted" if accepted else "intake-refused"
        logs.event(
            event,
            f"{record['user']}/{record['directory']}: set {entry['set_id']} "
            + ("accepted" if accepted else f"refused ({', '.join(map(str, codes))})"),
            set=entry["set_id"],
            user=record["user"],
            codes=codes,
        )
        self._audit.append(
            {
                "time": self.clock().isoformat(),
                "event": event,
                "host": self.host,
                "set": entry["set_id"],
                "user": record["user"],
                "sender_number": record["sender_number"],
                "directory": record["directory"],
                "codes": codes,
                "files": [{"name": f["name"], "sha256": f["sha256"]} for f in record["files"]],
            }
        )

    def _notify(self, set_id: str, record: dict[str, Any]) -> None:
        assert self.routing is not None
        channel = self.routing.by_user.get(record["user"])
        findings = [Finding(f["name"], f["code"], f["detail"]) for f in record["findings"]]
        label = record.get("set") or "(a file name outside the grammar)"
        text = notices.render_notice(
            set_label=label,
            directory=record["directory"],
            findings=findings,
            language=channel.language if channel else None,
            checked_at=datetime.fromisoformat(record["checked_at"]),
        )
        name = notices.notice_name(
            set_id, record["directory"], datetime.fromisoformat(record["checked_at"])
        )
        try:
            with (
                moves.opened_dir(self.settings.chroot_base) as base_fd,
                moves.opened_dir(record["user"], dir_fd=base_fd) as chroot_fd,
                moves.opened_dir(ANSWER_DIR[record["directory"]], dir_fd=chroot_fd) as out_fd,
            ):
                notices.write_notice(out_fd, name, text)
        except OSError as exc:
            self.summary.errors.append(f"notice for {set_id} not written: {exc.strerror}")
            logs.error("intake-notice-failed", f"set {set_id}: {exc.strerror}")

    # -- outputs ---------------------------------------------------------------------------
    def _write_audit(self) -> None:
        if not self._audit:
            return
        path = self.settings.audit_log
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o640)
        with os.fdopen(fd, "a", encoding="ascii") as fh:
            for line in self._audit:
                fh.write(json.dumps(line, ensure_ascii=True, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._audit.clear()

    def _write_metrics(self) -> None:
        counters_path = self.settings.work_dir / "intake-counters.json"
        totals: dict[str, Any] = {"accepted": 0, "refused": {}}
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(counters_path.read_text("ascii"))
            if isinstance(loaded, dict):
                totals.update(loaded)
        totals["accepted"] = int(totals.get("accepted", 0)) + self.summary.accepted
        refused = {str(k): int(v) for k, v in dict(totals.get("refused", {})).items()}
        for code, n in self.summary.refused_by_code.items():
            refused[str(code)] = refused.get(str(code), 0) + n
        totals["refused"] = refused
        totals["refused_sets"] = int(totals.get("refused_sets", 0)) + self.summary.refused
        write_atomic(counters_path, json.dumps(totals).encode("ascii"), 0o600, dir_mode=0o700)
        write_atomic(
            metrics_file(self.settings), render_metrics(totals, self.summary, self.clock()).encode()
        )


def render_metrics(totals: dict[str, Any], summary: RunSummary, now: datetime) -> str:
    p = "sftp_provisioner_intake_"
    lines = [
        f"# HELP {p}sets_accepted_total File sets the intake gate accepted.",
        f"# TYPE {p}sets_accepted_total counter",
        f"{p}sets_accepted_total {totals['accepted']}",
        f"# HELP {p}sets_refused_total File sets the intake gate refused.",
        f"# TYPE {p}sets_refused_total counter",
        f"{p}sets_refused_total {totals['refused_sets']}",
        f"# HELP {p}refusals_total Refused sets per anomaly code (a set counts once per code).",
        f"# TYPE {p}refusals_total counter",
    ]
    lines += [
        f'{p}refusals_total{{code="{code}"}} {n}'
        for code, n in sorted(totals["refused"].items(), key=lambda kv: int(kv[0]))
    ]
    lines += [
        f"# HELP {p}sets_waiting Sets (and lone files) left in the upload directories this run.",
        f"# TYPE {p}sets_waiting gauge",
        f"{p}sets_waiting {summary.waiting}",
        f"# HELP {p}ignored_entries Symbolic links, hard links, directories and other non-files seen in upload directories this run.",
        f"# TYPE {p}ignored_entries gauge",
        f"{p}ignored_entries {summary.ignored}",
        f"# HELP {p}last_run_timestamp_seconds When the last intake run finished.",
        f"# TYPE {p}last_run_timestamp_seconds gauge",
        f"{p}last_run_timestamp_seconds {int(now.timestamp())}",
        f"# HELP {p}last_run_ok 1 when the last intake run had no error.",
        f"# TYPE {p}last_run_ok gauge",
        f"{p}last_run_ok {1 if summary.ok else 0}",
    ]
    return "\n".join(lines) + "\n"


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat()


def _sha256(files_fd: int, f: SetFile, cap: int) -> str:
    """Streamed: a file over the cap is refused (184) but still hashed for its record."""
    del cap
    h = hashlib.sha256()
    fd = os.open(f.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=files_fd)
    try:
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()


def run_once(settings: HostSettings, **kwargs: Any) -> RunSummary:
    return Gate(settings, **kwargs).run()


def serve(
    settings: HostSettings,
    *,
    poll: bool,
    stop: threading.Event,
    run: Callable[[], RunSummary] | None = None,
) -> int:
    """Run, then wait for an upload (inotify through watchfiles) or `intake_poll_interval`
    seconds, whichever comes first, until `stop` is set; returns the number of runs.

    The timed wake-up is needed in both modes: a file becomes stable, and a set without its GO
    old enough for 130, without any new file event. ``poll``: no file events at all (NFS,
    where writes of another client raise no inotify event).
    """
    job = run or (lambda: run_once(settings))
    interval = settings.intake_poll_interval
    runs = 0

    def one() -> None:
        nonlocal runs
        try:
            job()
        except ProvisionerError as exc:
            # A missing routing table or a held lock: said, and tried again next time.
            logs.error("intake-run-failed", str(exc))
        runs += 1

    one()
    if poll:
        while not stop.wait(interval):
            one()
        return runs
    import watchfiles

    def uploads_only(_change: watchfiles.Change, path: str) -> bool:
        return Path(path).parent.name in UPLOAD_DIRS

    settings.chroot_base.mkdir(parents=True, exist_ok=True)
    for _changes in watchfiles.watch(
        settings.chroot_base,
        watch_filter=uploads_only,
        stop_event=stop,
        yield_on_timeout=True,
        rust_timeout=int(interval * 1000),
        raise_interrupt=False,
    ):
        if stop.is_set():
            break
        one()
    return runs
