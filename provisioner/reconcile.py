"""The pure core of a reconcile: declarations + state + host -> plan.

load (validate) -> allocate (state, pure) -> render (templates) -> observe (read-only) -> plan.
Nothing here writes; `apply.py` is the only place with side effects.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from provisioner.diagnostics import Diagnostic
from provisioner.errors import DeclarationError
from provisioner.observe import Observed, list_dir, observe, observe_path, tree_size
from provisioner.plan import (
    ChannelAction,
    ChannelPlan,
    Fingerprints,
    PathAction,
    PathChange,
    PathState,
    Plan,
    canonical_json,
    digest_of,
    tree_changes,
)
from provisioner.render import (
    Channel,
    DesiredTree,
    render_tree,
)
from provisioner.settings import HostSettings
from provisioner.state import Allocation, Registration, StateSnapshot, allocate
from provisioner.validate import ValidateSettings, ValidationReport, validate


@dataclass(slots=True)
class Reconciliation:
    """Everything a plan was computed from; apply works from this, never from the plan text."""

    settings: HostSettings
    report: ValidationReport
    snapshot: StateSnapshot
    allocation: Allocation
    accepted: list[Channel]
    held: list[Registration]
    removed: list[Registration]
    tree: DesiredTree
    observed: dict[Path, Observed]
    plan: Plan
    refusals: dict[str, list[str]] = field(default_factory=dict)


def _owners_managed() -> bool:
    # Only root can give files away; a normal user's run into --root reports owners instead.
    return os.geteuid() == 0


def _reasons(diags: Sequence[Diagnostic]) -> list[str]:
    return [f"{d.location}: {d.code}: {d.message}" for d in diags if d.is_error]


def compute(
    settings: HostSettings,
    paths: Sequence[Path],
    snapshot: StateSnapshot,
    *,
    now: datetime | None = None,
    revision: str | None = None,
    cwd: Path | None = None,
    jobs: int | None = None,
    write_cache: bool = False,
) -> Reconciliation:
    now = now or datetime.now(UTC)
    # Checked declarations are read back from settings.cache_dir; only apply writes there,
    # so that a plan leaves the host as it found it.
    vsettings = ValidateSettings(
        paths=tuple(paths),
        now=now,
        cwd=cwd or Path.cwd(),
        cache_dir=settings.cache_dir,
        cache_write=write_cache,
    )
    if jobs:
        vsettings = replace(vsettings, jobs=jobs)
    report = validate(vsettings, full=True)
    if not report.results:
        # An empty or mistyped path must never read as "every quality was removed".
        problems = "; ".join(f"{d.location}: {d.message}" for d in report.diagnostics)
        raise DeclarationError(f"no declarations to reconcile ({problems or 'none found'})")

    errors_by_file: dict[str, list[Diagnostic]] = {}
    for d in report.diagnostics:
        if d.is_error:
            errors_by_file.setdefault(d.location.file, []).append(d)

    accepted_results = {}
    refusals: dict[str, list[str]] = {}
    sources: dict[str, str] = {}
    identity_unknown: list[str] = []
    unidentified: list[str] = []
    for result in report.results:
        en = result.facts.enterprise_number
        errors = errors_by_file.get(result.display, [])
        if en is None:
            if errors:
                identity_unknown.append(result.display)
                # Refused like any invalid declaration: its reasons shown, the exit code 1.
                unidentified.extend(_reasons(errors))
            continue
        sources[en] = result.display
        if errors or result.declaration is None:
            refusals.setdefault(en, []).extend(_reasons(errors) or ["invalid declaration"])
            continue
        if result.declaration.structured_messages.channels.sftp is None:
            continue  # served by other channels only: nothing to provision on this host
        accepted_results[en] = result

    declared = {en: r.facts.technical_user or "" for en, r in accepted_results.items()}
    # A quality whose file is refused keeps its registration: a typo must not cut off a
    # working channel. When a broken file cannot even say whose it is, nobody is removed.
    held_ens = set(refusals) | (set(snapshot.registrations) if identity_unknown else set())
    allocation = allocate(
        snapshot,
        declared,
        now=now,
        sender_start=settings.sender_start,
        uid_range=settings.uid_range,
        held=held_ens,
    )
    for refusal in allocation.refused:
        en = refusal.enterprise_number
        where = sources.get(en, en)
        declared_at = (
            accepted_results[en].facts.technical_user_at if en in accepted_results else None
        )
        if refusal.code.startswith("technical-user") and declared_at is not None:
            # Point at the line that declares the user, as the gate does for its own findings.
            where = str(declared_at)
        refusals.setdefault(en, []).append(f"{where}: {refusal.code}: {refusal.message}")
        accepted_results.pop(en, None)

    fresh = {r.enterprise_number: r for r in (*allocation.new, *allocation.returning)}
    regs = snapshot.registrations
    accepted = []
    for en, result in sorted(accepted_results.items()):
        reg = fresh.get(en) or regs.get(en)
        if reg is None:  # pragma: no cover - allocate() registers every accepted quality
            continue
        accepted.append(Channel(result, reg))

    notes: list[str] = []
    held = [regs[en] for en in sorted(refusals) if en in regs and regs[en].status != "removed"]
    accepted_ens = {c.enterprise_number for c in accepted}
    gone = [r for en, r in sorted(regs.items()) if en not in accepted_ens and en not in refusals]
    if identity_unknown:
        # A file too broken to tell whose it is might be any quality: remove nobody this run.
        notes.append(
            "removals deferred: cannot tell which quality these files declare: "
            + ", ".join(identity_unknown)
        )
        held.extend(r for r in gone if r.status != "removed")
        gone = []

    held_routing = _held_routing(settings, {r.enterprise_number for r in held})
    tree = render_tree(settings, accepted, held=held, held_routing=held_routing)

    removal_paths: dict[Path, str] = {}
    for reg in gone:
        removal_paths[settings.keys_file(reg.technical_user)] = reg.enterprise_number
        removal_paths[settings.chroot(reg.technical_user)] = reg.enterprise_number
    observed = observe(list(tree.nodes) + list(removal_paths))
    owners = _owners_managed()
    changes = tree_changes(tree, observed, owners=owners)
    changes.extend(_removal_changes(removal_paths, observed))

    held_paths = {settings.keys_file(r.technical_user) for r in held} | {
        settings.chroot(r.technical_user) for r in held
    }
    unknown = _unknown(settings, tree, set(removal_paths) | held_paths, accepted)

    channels = _channel_plans(
        accepted, held, gone, refusals, allocation, changes, sources, snapshot
    )
    if not owners:
        notes.append("not running as root: owners and groups are not compared or set")
    fingerprints = Fingerprints(
        declarations=digest_of(
            sorted(f"{r.display}|{r.digest}|{canonical_json(r.refs)}" for r in report.results)
        ),
        state_version=snapshot.version,
        observed=digest_of(sorted(o.fingerprint() for o in observed.values()) + sorted(unknown)),
        settings=digest_of([settings.model_dump_json()]),
        revision=revision,
    )
    plan = Plan(
        created_at=now.isoformat(),
        root=str(settings.root) if settings.root else None,
        fingerprints=fingerprints,
        channels=channels,
        changes=changes,
        unknown=unknown,
        owners_managed=owners,
        notes=notes,
        unidentified=unidentified,
    )
    return Reconciliation(
        settings, report, snapshot, allocation, accepted, held, gone, tree, observed, plan, refusals
    )


def _held_routing(settings: HostSettings, held: set[str]) -> dict[str, dict[str, Any]]:
    """Routing entries of refused channels, carried over from the live table."""
    if not held:
        return {}
    current = observe_path(settings.routing_table)
    if current.content is None:
        return {}
    try:
        senders = json.loads(current.content)["senders"]
    except (ValueError, KeyError, TypeError):
        return {}
    return {
        k: v
        for k, v in senders.items()
        if isinstance(v, dict) and v.get("enterprise_number") in held
    }


def _removal_changes(paths: dict[Path, str], observed: dict[Path, Observed]) -> list[PathChange]:
    changes = []
    for path, en in sorted(paths.items()):
        o = observed[path]
        if not o.exists:
            continue
        before = PathState.of_observed(o)
        if o.kind == "dir":
            size, files = tree_size(path)
            changes.append(
                PathChange(
                    str(path),
                    PathAction.ARCHIVE,
                    "dir",
                    before,
                    None,
                    en,
                    "chroot",
                    details=(f"{files} files, {size} bytes kept",),
                )
            )
        else:
            changes.append(
                PathChange(
                    str(path), PathAction.DELETE, o.kind, before, None, en, "authorized-keys"
                )
            )
    return changes


def _unknown(
    settings: HostSettings, tree: DesiredTree, expected: set[Path], accepted: list[Channel]
) -> list[str]:
    """Files in managed directories that nobody declared: reported, never deleted."""
    known = set(tree.nodes) | expected
    dirs = [settings.keys_dir, settings.chroot_base, settings.extrausers_dir]
    dirs += [settings.chroot(c.user) for c in accepted]
    out = []
    for directory in dirs:
        for name in list_dir(directory):
            path = directory / name
            if path not in known:
                out.append(str(path))
    return sorted(out)


def _channel_plans(
    accepted: list[Channel],
    held: list[Registration],
    gone: list[Registration],
    refusals: dict[str, list[str]],
    allocation: Allocation,
    changes: list[PathChange],
    sources: dict[str, str],
    snapshot: StateSnapshot,
) -> list[ChannelPlan]:
    touched = {c.channel for c in changes if c.channel}
    fresh = {r.enterprise_number for r in (*allocation.new, *allocation.returning)}
    plans = []
    for ch in accepted:
        en = ch.enterprise_number
        why: tuple[str, ...] = ()
        if en in fresh:
            action = ChannelAction.CREATE
        elif en in touched:
            action = ChannelAction.CHANGE
        elif ch.registration.status != "active":
            # The files already match (a refused declaration put back, a retried failure):
            # only the status moves, and the plan says so rather than showing a bare "change".
            action = ChannelAction.CHANGE
            why = (f"status {ch.registration.status} -> active (the files already match)",)
        else:
            action = ChannelAction.UNCHANGED
        plans.append(
            ChannelPlan(en, ch.user, ch.registration.sender, action, ch.result.display, why)
        )
    for en, reasons in sorted(refusals.items()):
        reg = snapshot.registrations.get(en)
        keeps = (
            " (keeps its last good configuration)"
            if any(h.enterprise_number == en for h in held)
            else ""
        )
        plans.append(
            ChannelPlan(
                en,
                reg.technical_user if reg else None,
                reg.sender if reg else None,
                ChannelAction.REFUSED,
                sources.get(en),
                tuple(r + keeps for r in reasons[:1]) + tuple(reasons[1:]),
            )
        )
    for reg in gone:
        en = reg.enterprise_number
        if en in touched or reg.status != "removed":
            plans.append(ChannelPlan(en, reg.technical_user, reg.sender, ChannelAction.REMOVE))
    return sorted(plans, key=lambda p: (p.technical_user or "", p.enterprise_number))
