"""Which uploads form a set, and which sets are ready to be taken.

A set is the files of one (purpose, sender, date, sequence number, environment) in one upload
directory. It is taken only when its ``GO`` (or ``TD``) file is there and every one of its files
has stood still for the stability window: an ``FI`` arriving never starts anything. A set
without a trigger is left alone until its newest file is older than the maximum age, then it
is refused with 130. A name whose set cannot be told at all is refused on its own once it
stands still (it would otherwise sit in IN forever, unexplained).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

from provisioner.intake.names import NameCheck, SetKey, check_name
from provisioner.intake.uploads import Listing, Upload

SetKind = Literal["go", "td", "no-go", "malformed"]


@dataclass(frozen=True, slots=True)
class SetFile:
    upload: Upload
    check: NameCheck

    @property
    def name(self) -> str:
        return self.upload.name

    @property
    def kind(self) -> str | None:
        return self.check.parsed.kind if self.check.parsed else None


@dataclass(frozen=True, slots=True)
class UploadSet:
    user: str
    directory: str
    kind: SetKind
    key: SetKey | None
    files: tuple[SetFile, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.files)


@dataclass(slots=True)
class Survey:
    ready: list[UploadSet]
    waiting: int  # sets (and lone files) not ready yet
    unstable: int  # files still moving


def survey(
    listing: Listing,
    *,
    now_ns: int,
    today: date,
    stability_ns: int,
    max_age_ns: int,
) -> Survey:
    """The sets of one upload directory that are ready now."""
    groups: dict[SetKey, list[SetFile]] = {}
    ready: list[UploadSet] = []
    waiting = 0
    unstable = 0

    def stable(u: Upload) -> bool:
        return now_ns - u.moved_ns >= stability_ns

    for upload in listing.files:
        check = check_name(upload.name, today=today)
        item = SetFile(upload, check)
        if check.parsed is None:
            if stable(upload):
                ready.append(UploadSet(listing.user, listing.directory, "malformed", None, (item,)))
            else:
                unstable += 1
                waiting += 1
            continue
        groups.setdefault(check.parsed.key, []).append(item)
    for key, items in sorted(groups.items(), key=lambda kv: str(kv[0])):
        moving = [i for i in items if not stable(i.upload)]
        triggers = {i.kind for i in items} & {"GO", "TD"}
        if moving:
            unstable += len(moving)
            waiting += 1
            continue
        if "GO" in triggers:
            ready.append(UploadSet(listing.user, listing.directory, "go", key, tuple(items)))
        elif "TD" in triggers:
            # A cancellation is the TD alone; files of the same key wait for their own GO.
            td = tuple(i for i in items if i.kind == "TD")
            ready.append(UploadSet(listing.user, listing.directory, "td", key, td))
            if len(td) < len(items):
                waiting += 1
        # The age of a set is its newest write (mtime): unlike the stability window, an
        # error here only refuses a set sooner, and a sender cannot set mtime (no setstat).
        elif now_ns - max(i.upload.mtime_ns for i in items) >= max_age_ns:
            ready.append(UploadSet(listing.user, listing.directory, "no-go", key, tuple(items)))
        else:
            waiting += 1
    return Survey(ready, waiting, unstable)


def names_of(files: Sequence[SetFile]) -> list[str]:
    return [f.name for f in files]
