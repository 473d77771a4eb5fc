"""The plan: desired versus observed, as typed changes. Data only; renderings live elsewhere.

A plan carries the fingerprints of everything it was computed from (declarations, state,
observed host, settings), so a saved plan can be refused once any of them moved on.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from provisioner.observe import Observed
from provisioner.quality_id import QualityId
from provisioner.render import Desired, DesiredTree

PLAN_FORMAT = 1
# Diffs of very large files (a routing table of 10,000 senders) are summarised, not printed.
MAX_DIFF_LINES = 400


class ChannelAction(StrEnum):
    CREATE = "create"
    CHANGE = "change"
    REMOVE = "remove"
    UNCHANGED = "unchanged"
    REFUSED = "refused"


class PathAction(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"  # something of another kind (a symlink, a directory) sits there
    METADATA = "metadata"  # owner, group or mode only
    DELETE = "delete"
    ARCHIVE = "archive"


@dataclass(frozen=True, slots=True)
class PathState:
    kind: str
    owner: int
    group: int
    mode: int
    sha256: str = ""
    size: int = 0

    @classmethod
    def of_observed(cls, o: Observed) -> PathState:
        return cls(o.kind, o.owner, o.group, o.mode, o.sha256, o.size)

    @classmethod
    def of_desired(cls, d: Desired) -> PathState:
        if d.content is None:
            return cls(d.kind, d.owner, d.group, d.mode, d.digest, d.size)
        return cls(
            d.kind, d.owner, d.group, d.mode, hashlib.sha256(d.content).hexdigest(), len(d.content)
        )


@dataclass(frozen=True, slots=True)
class PathChange:
    path: str
    action: PathAction
    kind: str
    before: PathState | None
    after: PathState | None
    channel: str | None = None
    role: str = ""
    diff: str = ""
    details: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ChannelPlan:
    enterprise_number: str
    technical_user: str | None
    sender_number: str | None
    action: ChannelAction
    source: str | None = None
    reasons: tuple[str, ...] = ()
    # With the enterprise number, the quality's identity ('' for a registration from before
    # quality types were recorded).
    quality_type: str = ""

    @property
    def qid(self) -> QualityId:
        return QualityId(self.enterprise_number, self.quality_type)


@dataclass(frozen=True, slots=True)
class Fingerprints:
    declarations: str
    state_version: int
    observed: str
    settings: str
    revision: str | None


@dataclass(frozen=True, slots=True)
class RemovalGuard:
    """The mass-removal guard's verdict on a plan (see `provisioner.guard`).

    `threshold` is the larger of `max_removals` and `max_removals_percent` % of the `live`
    (registered, not removed) channels; `allowed` is what `--allow-removals N` accepts.
    """

    removals: int
    threshold: int
    live: int
    max_removals: int
    max_removals_percent: float
    allowed: int | None = None

    @property
    def over(self) -> bool:
        return self.removals > self.threshold

    @property
    def refused(self) -> bool:
        """apply and reconcile refuse the whole plan."""
        return self.over and (self.allowed is None or self.removals > self.allowed)


@dataclass(slots=True)
class Plan:
    created_at: str
    root: str | None
    fingerprints: Fingerprints
    channels: list[ChannelPlan] = field(default_factory=list)
    changes: list[PathChange] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    owners_managed: bool = True
    notes: list[str] = field(default_factory=list)
    # Reasons of invalid declarations that cannot even say which quality they are: refused
    # like the others (exit code 1), and removals wait until they can be read again.
    unidentified: list[str] = field(default_factory=list)
    removal_guard: RemovalGuard | None = None

    @property
    def has_changes(self) -> bool:
        # A channel can change with no path changing (its status moves to active): apply
        # then still has work, so plan exits 2 and does not print "No changes".
        return bool(self.changes) or any(
            c.action in (ChannelAction.CREATE, ChannelAction.CHANGE, ChannelAction.REMOVE)
            for c in self.channels
        )

    @property
    def refused(self) -> list[ChannelPlan]:
        return [c for c in self.channels if c.action is ChannelAction.REFUSED]

    @property
    def has_refusals(self) -> bool:
        """A quality or a declaration file was refused: the exit code is then 1."""
        return bool(self.refused or self.unidentified)

    def counts(self) -> dict[str, int]:
        out = {a.value: 0 for a in ChannelAction}
        for c in self.channels:
            out[c.action.value] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["format"] = PLAN_FORMAT
        data["has_changes"] = self.has_changes
        data["counts"] = self.counts()
        if self.removal_guard is not None:
            data["removal_guard"]["refused"] = self.removal_guard.refused
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        if data.get("format") != PLAN_FORMAT:
            raise ValueError(f"unsupported plan format {data.get('format')!r}")

        def state(v: dict[str, Any] | None) -> PathState | None:
            return None if v is None else PathState(**v)

        return cls(
            created_at=data["created_at"],
            root=data["root"],
            fingerprints=Fingerprints(**data["fingerprints"]),
            channels=[
                ChannelPlan(
                    **{**c, "action": ChannelAction(c["action"]), "reasons": tuple(c["reasons"])}
                )
                for c in data["channels"]
            ],
            changes=[
                PathChange(
                    **{
                        **c,
                        "action": PathAction(c["action"]),
                        "before": state(c["before"]),
                        "after": state(c["after"]),
                        "details": tuple(c["details"]),
                    }
                )
                for c in data["changes"]
            ],
            unknown=list(data["unknown"]),
            owners_managed=bool(data["owners_managed"]),
            notes=list(data["notes"]),
            unidentified=list(data.get("unidentified", [])),
            removal_guard=_removal_guard(data.get("removal_guard")),
        )


def _removal_guard(data: dict[str, Any] | None) -> RemovalGuard | None:
    if data is None:
        return None  # a plan saved before the guard existed
    return RemovalGuard(**{k: v for k, v in data.items() if k != "refused"})


def digest_of(items: list[str]) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(item.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()


def _diff(path: Path, before: bytes | None, after: bytes | None) -> str:
    try:
        old = (before or b"").decode("utf-8").splitlines(keepends=True)
        new = (after or b"").decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return "(binary content differs)\n"
    lines = list(difflib.unified_diff(old, new, f"{path} (now)", f"{path} (planned)", n=2))
    if len(lines) > MAX_DIFF_LINES:
        added = sum(1 for ln in lines if ln.startswith("+") and not ln.startswith("+++"))
        removed = sum(1 for ln in lines if ln.startswith("-") and not ln.startswith("---"))
        return "".join(lines[:MAX_DIFF_LINES]) + (
            f"... diff truncated: {added} lines added, {removed} removed in all\n"
        )
    return "".join(
        ln if ln.endswith("\n") else ln + "\n\\ No newline at end of file\n" for ln in lines
    )


def compare(desired: Desired, observed: Observed, *, owners: bool) -> PathChange | None:
    """The change that turns `observed` into `desired`, or None when they agree."""
    after = PathState.of_desired(desired)
    path = str(desired.path)
    common: dict[str, Any] = {
        "kind": desired.kind,
        "after": after,
        "channel": desired.channel,
        "role": desired.role,
    }
    if not observed.exists:
        diff = _diff(desired.path, None, desired.content) if desired.kind == "file" else ""
        return PathChange(path, PathAction.CREATE, before=None, diff=diff, **common)
    before = PathState.of_observed(observed)
    if observed.kind != desired.kind:
        return PathChange(
            path,
            PathAction.REPLACE,
            before=before,
            details=(f"a {observed.kind} is there, a {desired.kind} is wanted",),
            **common,
        )
    details = []
    if owners and (observed.owner, observed.group) != (desired.owner, desired.group):
        details.append(
            f"owner {observed.owner}:{observed.group} -> {desired.owner}:{desired.group}"
        )
    if observed.mode != desired.mode:
        details.append(f"mode {observed.mode:04o} -> {desired.mode:04o}")
    if desired.kind == "file" and observed.sha256 != after.sha256:
        return PathChange(
            path,
            PathAction.UPDATE,
            before=before,
            diff=_diff(desired.path, observed.content, desired.content),
            details=tuple(details),
            **common,
        )
    if details:
        return PathChange(
            path, PathAction.METADATA, before=before, details=tuple(details), **common
        )
    return None


def tree_changes(
    tree: DesiredTree, observed: dict[Path, Observed], *, owners: bool
) -> list[PathChange]:
    changes = []
    # Parents before children: the apply order is the plan order.
    for node in sorted(tree, key=lambda n: (len(n.path.parts), str(n.path))):
        change = compare(node, observed[node.path], owners=owners)
        if change is not None:
            changes.append(change)
    return changes


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
