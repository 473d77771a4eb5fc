"""`provisioner status` as text: a table with a header, every time on the Brussels clock.

The rows are the ones `status --format json` prints (instants in UTC with their offset); this
module only lays them out for a person. "Last sync" is the last run of this host, whatever it
changed; "changed" is when the channel's configuration was last applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from provisioner.channel_status import StatusReport
from provisioner.portaltime import PORTAL_TIMEZONE, in_portal_zone
from provisioner.state import RunRecord

# (caption, width); the last column is not padded.
_COLUMNS = (
    ("SENDER", 6),
    ("USERNAME", 20),
    ("ENTERPRISE", 10),
    ("STATUS", 8),
    ("REGISTERED", 12),
    ("CHANGED", 16),
    ("LAST SYNC", 16),
    ("NEXT SYNC", 0),
)


def _minute(text: str | None) -> str:
    if not text:
        return "never"
    return in_portal_zone(datetime.fromisoformat(text)).strftime("%Y-%m-%d %H:%M")


def _day(text: str | None) -> str:
    if not text:
        return "at next sync"
    return in_portal_zone(datetime.fromisoformat(text)).strftime("%Y-%m-%d")


def _line(cells: Sequence[str]) -> str:
    parts = [
        cell.ljust(width) if width else cell
        for cell, (_, width) in zip(cells, _COLUMNS, strict=True)
    ]
    return "  ".join(parts).rstrip()


def header(host: str, last_run: RunRecord | None, next_sync: datetime) -> str:
    """`host sftp-a: last run 2026-03-30 02:30 (ok), next at 03:00; times in Europe/Brussels`."""
    nxt = in_portal_zone(next_sync)
    if last_run is None:
        ran = "no run yet"
    else:
        ran = f"last run {_minute(last_run.started_at.isoformat())} ({last_run.outcome})"
    return (
        f"host {host}: {ran}, next run {nxt:%Y-%m-%d %H:%M}; times in {PORTAL_TIMEZONE} ({nxt:%Z})"
    )


def status_text(report: StatusReport, *, host: str) -> str:
    """The header, the column captions, then one line per channel and what it has to say.
    With several hosts sharing the state, each channel says which host serves which revision."""
    rows = report.rows
    out = [header(host, report.this_run, report.next_sync)]
    if not rows:
        out.append("no channels registered yet")
        return "\n".join(out) + "\n"
    out.append(_line([caption for caption, _ in _COLUMNS]))
    # An enterprise may hold several qualities: its rows then say which one each is.
    per_enterprise: dict[str, int] = {}
    for r in rows:
        per_enterprise[r.enterprise_number] = per_enterprise.get(r.enterprise_number, 0) + 1
    several_hosts = report.several_hosts
    for r in rows:
        out.append(
            _line(
                [
                    r.sender_number or "------",
                    r.username or "",
                    r.enterprise_number,
                    r.status,
                    _day(r.registered_at),
                    _minute(r.changed_at),
                    _minute(r.last_sync),
                    f"{in_portal_zone(datetime.fromisoformat(r.next_sync)):%H:%M}",
                ]
            )
        )
        if r.reason and not r.message:
            # degraded and failed say it in their sentence, with since when.
            out.append(f"        reason: {r.reason}")
        if several_hosts and r.hosts:
            out.append(f"        served by {served_text(r.hosts)}")
        if r.message:
            out.append(f"        {r.message}")
        if per_enterprise[r.enterprise_number] > 1 and r.quality_type:
            out.append(f"        quality type: {r.quality_type}")
    return "\n".join(out) + "\n"


def served_text(hosts: list[dict[str, Any]]) -> str:
    """`h1, h2 at 3f2a9c1b07de; h3 at 91c0e4aa2b6f`: hosts grouped by the revision they serve."""
    by_revision: dict[str, list[str]] = {}
    for h in hosts:
        shown = h["revision"][:12] if h["revision"] else "(no revision)"
        by_revision.setdefault(shown, []).append(h["host"])
    return "; ".join(f"{', '.join(names)} at {rev}" for rev, names in sorted(by_revision.items()))
