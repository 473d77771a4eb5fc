"""Dates and times as a person reads them: in Europe/Brussels, the portal's time zone.

The gateway is Belgian: a channel registered at 00:30 in Brussels is registered that day, and
a certificate that expires at 23:30 UTC on 29 March expires on 30 March for its owner. So the
overview, the text of `status` and the notification mails show Brussels wall-clock dates and
times. Machine formats (JSON, the audit log, the routing table) keep UTC with its offset.

The zone data comes from the system or, where it has none, from the `tzdata` package (a
dependency): a wrong date shown silently is worse than no date, so there is no UTC fallback.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import cache
from zoneinfo import ZoneInfo

PORTAL_TIMEZONE = "Europe/Brussels"


@cache
def portal_zone() -> ZoneInfo:
    return ZoneInfo(PORTAL_TIMEZONE)


def in_portal_zone(moment: datetime) -> datetime:
    """`moment` on the Brussels wall clock; a naive value is taken as UTC (as the state is)."""
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    return aware.astimezone(portal_zone())


def portal_day(moment: datetime | date) -> date:
    """The calendar date in Brussels; a bare date is already one."""
    if not isinstance(moment, datetime):
        return moment
    return in_portal_zone(moment).date()


def portal_minute(moment: datetime) -> str:
    """`2026-03-30 01:30 CEST`: a time for operators, with the zone it is in."""
    return in_portal_zone(moment).strftime("%Y-%m-%d %H:%M %Z")
