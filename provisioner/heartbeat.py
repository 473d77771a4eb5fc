"""The heartbeat: after every run, a JSON status file and a Prometheus textfile-collector file.

Both carry the same figures: when the last run finished and how it ended, when the last
successful one finished, the revision applied, the channels per status, the duration and the
errors. A failing reconciler shows in `last_run_ok`; a dead one in a `last_run_timestamp_seconds`
that stops moving (alert on `time() - sftp_provisioner_last_run_timestamp_seconds > 3600`).
Both files are replaced atomically, so a reader never sees half of one.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisioner.fsutil import write_atomic
from provisioner.state.model import CHANNEL_STATUSES, RUN_OUTCOMES

if TYPE_CHECKING:
    from provisioner.rules import FileSummary

FORMAT = 1
PREFIX = "sftp_provisioner_"
# The channel actions of a plan (provisioner.plan.ChannelAction), each always written.
PLAN_ACTIONS = ("change", "create", "refused", "remove", "unchanged")


@dataclass(slots=True)
class Heartbeat:
    """What the status file holds; counters carry over from the previous file."""

    host: str
    last_run: datetime
    outcome: str
    duration_seconds: float
    revision: str | None
    errors: list[str]
    channels: dict[str, int]
    last_success: datetime | None = None
    last_success_revision: str | None = None
    runs_total: int = 0
    failed_runs_total: int = 0
    applied_changes: int = 0
    plan: dict[str, int] = field(default_factory=dict)
    notifications: dict[str, int] = field(default_factory=dict)
    next_run: datetime | None = None
    # Removals the last run put off because of a file it could not attribute, and those files.
    removals_deferred: int = 0
    deferred_by: list[str] = field(default_factory=list)
    # The mass-removal guard refused the last run (nothing applied), and the removals it refused.
    removal_guard_tripped: bool = False
    removals_refused: int = 0
    # Per SFTP login: when its certificate stops being valid, and when its first key with an
    # `expires:` date stops working (Unix time); what the expiry alerts look at.
    certificate_expiry: dict[str, float] = field(default_factory=dict)
    key_expiry: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def to_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "format": FORMAT,
            "host": self.host,
            "last_run": iso(self.last_run),
            "outcome": self.outcome,
            "ok": self.ok,
            "last_success": iso(self.last_success),
            "last_success_revision": self.last_success_revision,
            "revision": self.revision,
            "channels": dict(sorted(self.channels.items())),
            "duration_seconds": round(self.duration_seconds, 3),
            "errors": list(self.errors),
            "applied_changes": self.applied_changes,
            "plan": dict(self.plan),
            "notifications": dict(self.notifications),
            "runs_total": self.runs_total,
            "failed_runs_total": self.failed_runs_total,
            "next_run": iso(self.next_run),
            "removals_deferred": self.removals_deferred,
            "deferred_by": list(self.deferred_by),
            "removal_guard_tripped": self.removal_guard_tripped,
            "removals_refused": self.removals_refused,
        }


def read_status(path: Path) -> dict[str, Any] | None:
    """The previous status file, or None when missing or unreadable (a fresh start)."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def carry_over(beat: Heartbeat, previous: dict[str, Any] | None, *, success: bool) -> None:
    """Counters and the last success come from the previous file; this run is added."""
    prev = previous or {}
    runs = prev.get("runs_total")
    failed = prev.get("failed_runs_total")
    beat.runs_total = (runs if isinstance(runs, int) else 0) + 1
    beat.failed_runs_total = (failed if isinstance(failed, int) else 0) + (0 if success else 1)
    if success:
        beat.last_success = beat.last_run
        beat.last_success_revision = beat.revision
    else:
        stamp = prev.get("last_success")
        if isinstance(stamp, str):
            with contextlib.suppress(ValueError):
                beat.last_success = datetime.fromisoformat(stamp)
        rev = prev.get("last_success_revision")
        beat.last_success_revision = rev if isinstance(rev, str) else None
    if not beat.channels and isinstance(prev.get("channels"), dict):
        # The state could not be read this run: the last known figures, not zeros.
        beat.channels = {k: v for k, v in prev["channels"].items() if isinstance(v, int)}


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render_metrics(beat: Heartbeat) -> str:
    """The Prometheus text exposition format (0.0.4), every metric with HELP and TYPE."""
    lines: list[str] = []

    def metric(
        name: str, kind: str, help_: str, samples: list[tuple[dict[str, str], float]]
    ) -> None:
        full = PREFIX + name
        lines.append(f"# HELP {full} {help_}")
        lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            shown = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
            lines.append(
                f"{full}{{{shown}}} {_number(value)}" if shown else f"{full} {_number(value)}"
            )

    metric(
        "last_run_timestamp_seconds",
        "gauge",
        "Unix time at which the last reconcile run finished, successful or not.",
        [({}, beat.last_run.timestamp())],
    )
    metric(
        "last_success_timestamp_seconds",
        "gauge",
        "Unix time at which the last successful reconcile run finished (0: never).",
        [({}, beat.last_success.timestamp() if beat.last_success else 0)],
    )
    metric(
        "last_run_ok",
        "gauge",
        "1 when the last run applied everything declared; 0 when it failed, was degraded "
        "(a refused file or quality, deferred removals) or could not notify.",
        [({}, 1 if beat.ok else 0)],
    )
    metric(
        "run_duration_seconds",
        "gauge",
        "How long the last reconcile run took.",
        [({}, round(beat.duration_seconds, 3))],
    )
    metric(
        "last_run_errors",
        "gauge",
        "Number of errors the last run reported.",
        [({}, len(beat.errors))],
    )
    metric(
        "runs_total",
        "counter",
        "Reconcile runs since the status file was created.",
        [({}, beat.runs_total)],
    )
    metric(
        "run_errors_total",
        "counter",
        "Failed reconcile runs since the status file was created.",
        [({}, beat.failed_runs_total)],
    )
    statuses = sorted(CHANNEL_STATUSES | set(beat.channels))
    metric(
        "channels",
        "gauge",
        "Registered channels per status after the last run.",
        [({"status": s}, beat.channels.get(s, 0)) for s in statuses],
    )
    metric(
        "removals_deferred",
        "gauge",
        "Removals the last run deferred because a declaration file could not be attributed "
        "to a quality (departed qualities keep their logins until it is fixed).",
        [({}, beat.removals_deferred)],
    )
    metric(
        "removal_guard_tripped",
        "gauge",
        "1 when the mass-removal guard refused the last run: it would have removed more "
        "channels than max_removals / max_removals_percent allow; nothing was applied.",
        [({}, 1 if beat.removal_guard_tripped else 0)],
    )
    metric(
        "removals_refused",
        "gauge",
        "Channel removals the mass-removal guard refused in the last run (0 when it passed).",
        [({}, beat.removals_refused)],
    )
    metric(
        "applied_changes",
        "gauge",
        "Path changes the last run applied.",
        [({}, beat.applied_changes)],
    )
    metric(
        "last_run_outcome",
        "gauge",
        "1 for the outcome of the last run (ok, partial: a notification not delivered, "
        "degraded: a refused file or quality or deferred removals, failed: nothing applied), "
        "0 for the others.",
        [({"outcome": o}, 1 if beat.outcome == o else 0) for o in sorted(RUN_OUTCOMES)],
    )
    metric(
        "plan_channels",
        "gauge",
        "Channels per action in the last run's plan; refused: declarations the gate refused.",
        [({"action": a}, beat.plan.get(a, 0)) for a in sorted(set(PLAN_ACTIONS) | set(beat.plan))],
    )
    if beat.certificate_expiry:
        metric(
            "certificate_expiry_timestamp_seconds",
            "gauge",
            "Unix time at which the signature certificate of the channel's quality expires.",
            [({"user": u}, t) for u, t in sorted(beat.certificate_expiry.items())],
        )
    if beat.key_expiry:
        metric(
            "key_expiry_timestamp_seconds",
            "gauge",
            "Unix time at which the channel's first SSH key with an expires: date stops working.",
            [({"user": u}, t) for u, t in sorted(beat.key_expiry.items())],
        )
    if beat.notifications:
        metric(
            "notifications",
            "gauge",
            "Notifications of the last run: queued in the outbox, sent by SMTP, failed.",
            [({"state": k}, v) for k, v in sorted(beat.notifications.items())],
        )
    if beat.revision:
        metric(
            "revision_info",
            "gauge",
            "The declarations revision of the last run (value always 1).",
            [({"revision": beat.revision}, 1)],
        )
    if beat.next_run is not None:
        metric(
            "next_run_timestamp_seconds",
            "gauge",
            "Unix time of the next scheduled run (loop mode only).",
            [({}, beat.next_run.timestamp())],
        )
    return "\n".join(lines) + "\n"


def expiries(summaries: Iterable[FileSummary]) -> tuple[dict[str, float], dict[str, float]]:
    """Certificate and first key expiry per SFTP login, from the validated declarations.

    Only valid declarations with an SFTP channel count: their technical user is checked, so a
    label never carries a hostile value, and a refused file shows as `refused` already.
    """
    certificates: dict[str, float] = {}
    keys: dict[str, float] = {}
    for summary in summaries:
        user = summary.facts.technical_user
        if not summary.sftp or user is None:
            continue
        # During a renewal the channel can sign until the later of its two certificates ends.
        dates = [c.not_after for c in (summary.certificate, summary.next_certificate) if c]
        if dates:
            certificates[user] = max(dates).timestamp()
        dated = [k.expires.timestamp() for k in summary.keys if k.expires is not None]
        if dated:
            keys[user] = min(dated)
    return certificates, keys


def write(beat: Heartbeat, status_file: Path, metrics_file: Path | None) -> None:
    text = json.dumps(beat.to_json(), indent=2, ensure_ascii=False) + "\n"
    write_atomic(status_file, text.encode("utf-8"))
    if metrics_file is not None:
        write_atomic(metrics_file, render_metrics(beat).encode("utf-8"))
