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
from functools import partial
from pathlib import Path
from typing import Any

from provisioner.diagnostics import Diagnostic
from provisioner.errors import DeclarationError
from provisioner.gcpause import paused_gc
from provisioner.guard import assess
from provisioner.hostrecord import (
    ChannelRecord,
    HostRecord,
    channel_fingerprint,
    channel_key,
    context_key,
    listing_holds,
    listing_stamp,
    routing_digest,
)
from provisioner.identity import DeclaredFile, by_declared_path, root_relative
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
from provisioner.progress import RENDER, ProgressCallback
from provisioner.render import (
    MEMO_ROLES,
    Channel,
    Desired,
    DesiredTree,
    host_file_paths,
    openssh_version,
    render_channel,
    render_host,
    routing_entry,
)
from provisioner.rules import FileSummary
from provisioner.settings import HostSettings
from provisioner.state import Allocation, Registration, StateSnapshot, allocate
from provisioner.validate import (
    ValidateSettings,
    ValidationReport,
    anchored,
    root_name,
    validate,
)


@dataclass(slots=True)
class Reconciliation:
    """Everything a plan was computed from; apply works from this, never from the plan text.

    `tree` holds the host-wide paths and the paths of the channels rendered in this run;
    channels the last apply left as they should be (`unchanged`, see `provisioner.hostrecord`)
    are not rendered again, and `managed_paths()` lists every path all the same.
    """

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
    record: HostRecord | None = None
    # Per channel (enterprise number): its key, and for unchanged ones the record that holds.
    keys: dict[str, str] = field(default_factory=dict)
    unchanged: dict[str, ChannelRecord] = field(default_factory=dict)
    routing: dict[str, dict[str, Any]] = field(default_factory=dict)  # by enterprise number
    # What each big host-wide file is made of, and each channel's routing entry (as digests).
    host_keys: dict[str, str] = field(default_factory=dict)
    routing_digests: dict[str, str] = field(default_factory=dict)
    # The paths of each channel rendered in this run.
    channel_nodes: dict[str, list[Desired]] = field(default_factory=dict)
    # Unknown paths in each channel's chroot, and the listing stamp they were read at.
    chroot_unknown: dict[str, tuple[list[str], list[int] | None]] = field(default_factory=dict)
    # Per accepted channel, the fingerprints of its keys: recorded once it is applied, so
    # that a key stays with the channel that had it first.
    channel_keys: dict[str, list[str]] = field(default_factory=dict)
    # Registrations this run would have removed, but did not, because a file too broken to
    # say whose it is might still declare them; and those files.
    deferred: list[Registration] = field(default_factory=list)
    deferred_by: list[str] = field(default_factory=list)
    # Per accepted channel, the file that declares it: recorded once it is applied, so that
    # the file still says whose it was when it is refused later (see provisioner.identity).
    declared: dict[str, DeclaredFile] = field(default_factory=dict)

    @property
    def degraded(self) -> bool:
        """The host may still serve what the declarations no longer say, or not yet what
        they do: removals deferred, a quality refused (held on its last good configuration),
        or a file refused."""
        return bool(self.deferred or self.deferred_by or self.plan.has_refusals)

    def managed_paths(self) -> list[Path]:
        paths = list(self.tree.nodes)
        for record in self.unchanged.values():
            paths.extend(Path(p) for p in record.paths())
        return paths


def _owners_managed() -> bool:
    # Only root can give files away; a normal user's run into --root reports owners instead.
    return os.geteuid() == 0


def _fingerprint_line(summary: FileSummary, cwd: Path, root: Path) -> str:
    # Named from the declarations root, not the working directory: a saved plan stays valid
    # when applied from another directory, or with the path typed another way.
    refs = {root_name(k, cwd, root): v for k, v in summary.refs.items()}
    return f"{root_name(summary.display, cwd, root)}|{summary.digest}|{canonical_json(refs)}"


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
    use_cache: bool = True,
    progress: ProgressCallback | None = None,
) -> Reconciliation:
    """The plan. `use_cache=False` checks every declaration and renders and reads every path,
    ignoring what earlier runs recorded (the result is the same, only slower). `progress` is
    called as declarations are checked and channels rendered (see provisioner.progress)."""
    with paused_gc():
        return _compute(
            settings, paths, snapshot, now, revision, cwd, jobs, write_cache, use_cache, progress
        )


def _compute(
    settings: HostSettings,
    paths: Sequence[Path],
    snapshot: StateSnapshot,
    now: datetime | None,
    revision: str | None,
    cwd: Path | None,
    jobs: int | None,
    write_cache: bool,
    use_cache: bool,
    progress: ProgressCallback | None = None,
) -> Reconciliation:
    now = now or datetime.now(UTC)
    regs = snapshot.registrations
    # A key stays with the live channel the last apply put it on (see rules.cross_file_rules).
    key_owners = {
        fp: en
        for fp, en in snapshot.channel_keys.items()
        if en in regs and regs[en].status != "removed"
    }
    base = cwd or Path.cwd()
    # The paths as typed, made absolute; fingerprints name files relative to `decls_root`.
    given, decls_root = anchored(paths, base)
    # Checked declarations are read back from settings.cache_dir; only apply writes there,
    # so that a plan leaves the host as it found it.
    vsettings = ValidateSettings(
        paths=given,
        now=now,
        cwd=base,
        cache_dir=settings.cache_dir if use_cache else None,
        cache_write=write_cache and use_cache,
        key_owners=key_owners,
        progress=progress,
    )
    if jobs:
        vsettings = replace(vsettings, jobs=jobs)
    report = validate(vsettings, full=True)
    if not report.summaries:
        # An empty or mistyped path must never read as "every quality was removed".
        problems = "; ".join(f"{d.location}: {d.message}" for d in report.diagnostics)
        raise DeclarationError(f"no declarations to reconcile ({problems or 'none found'})")

    errors_by_file: dict[str, list[Diagnostic]] = {}
    for d in report.diagnostics:
        if d.is_error:
            errors_by_file.setdefault(d.location.file, []).append(d)

    accepted_files: dict[str, int] = {}  # enterprise number -> index in report.summaries
    refusals: dict[str, list[str]] = {}
    sources: dict[str, str] = {}
    identity_unknown: list[str] = []
    unidentified: list[str] = []
    # Who declared what at the last successful apply (see provisioner.identity).
    rel_paths = [root_relative(p, report.root) for p in report.paths]
    whose = by_declared_path(regs)
    named = {s.facts.enterprise_number for s in report.summaries}
    for index, summary in enumerate(report.summaries):
        en = summary.facts.enterprise_number
        errors = errors_by_file.get(summary.display, [])
        prior = whose.get(rel_paths[index] or "") if rel_paths else None
        if prior is not None and en != prior and prior not in named:
            # The file that declared `prior` still exists but no longer says so (unparsable,
            # a mistyped number, another number): it holds `prior`, which keeps its last good
            # configuration, and nothing else is deferred because of it.
            sources[prior] = summary.display
            reasons = _reasons(errors)
            if en is not None:
                reasons.append(_identity_changed(summary, prior, en, regs[prior]))
                if en in regs and regs[en].status != "removed":
                    sources.setdefault(en, summary.display)
                    refusals.setdefault(en, []).extend(reasons)
            refusals.setdefault(prior, []).extend(reasons)
            continue
        if en is None:
            if errors:
                identity_unknown.append(summary.display)
                # Refused like any invalid declaration: its reasons shown, the exit code 1.
                unidentified.extend(_reasons(errors))
            continue
        sources[en] = summary.display
        if errors:
            refusals.setdefault(en, []).extend(_reasons(errors))
            continue
        if not summary.sftp:
            continue  # served by other channels only: nothing to provision on this host
        accepted_files[en] = index

    summaries = report.summaries
    for en, reasons in _host_names(settings, summaries, accepted_files).items():
        refusals.setdefault(en, []).extend(reasons)
        accepted_files.pop(en, None)
    while True:
        declared = {en: summaries[i].facts.technical_user or "" for en, i in accepted_files.items()}
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
        # A held channel keeps the keys it has: one who declares one of them is refused,
        # and that may hold another channel in turn (rarely more than one round).
        refused_now = set(refusals) | {r.enterprise_number for r in allocation.refused}
        taken = _keys_taken(
            summaries, accepted_files, key_owners, refused_now, bool(identity_unknown), sources
        )
        if not taken:
            break
        for en, reasons in taken.items():
            refusals.setdefault(en, []).extend(reasons)
            accepted_files.pop(en, None)
    for refusal in allocation.refused:
        en = refusal.enterprise_number
        where = sources.get(en, en)
        declared_at = (
            summaries[accepted_files[en]].facts.technical_user_at if en in accepted_files else None
        )
        if refusal.code.startswith("technical-user") and declared_at is not None:
            # Point at the line that declares the user, as the gate does for its own findings.
            where = str(declared_at)
        refusals.setdefault(en, []).append(f"{where}: {refusal.code}: {refusal.message}")
        accepted_files.pop(en, None)

    fresh = {r.enterprise_number: r for r in (*allocation.new, *allocation.returning)}
    accepted = []
    for en, index in sorted(accepted_files.items()):
        reg = fresh.get(en) or regs.get(en)
        if reg is None:  # pragma: no cover - allocate() registers every accepted quality
            continue
        accepted.append(Channel(reg, summaries[index].display, load=partial(report.result, index)))

    notes: list[str] = []
    held = [regs[en] for en in sorted(refusals) if en in regs and regs[en].status != "removed"]
    accepted_ens = {c.enterprise_number for c in accepted}
    gone = [r for en, r in sorted(regs.items()) if en not in accepted_ens and en not in refusals]
    deferred: list[Registration] = []
    if identity_unknown:
        # A file too broken to tell whose it is might be any quality: remove nobody this run.
        deferred = [r for r in gone if r.status != "removed"]
        notes.append(
            f"removals deferred ({len(deferred)}): cannot tell which quality these files "
            "declare: " + ", ".join(identity_unknown)
        )
        held.extend(deferred)
        gone = []

    owners = _owners_managed()
    context = context_key(settings, owners, openssh_version(settings))
    record = HostRecord.load(settings, context) if use_cache else HostRecord(context)
    r = _render(
        settings, report, accepted, accepted_files, held, record, context, progress=progress
    )

    removal_paths: dict[Path, str] = {}
    for reg in gone:
        removal_paths[settings.keys_file(reg.technical_user)] = reg.enterprise_number
        removal_paths[settings.chroot(reg.technical_user)] = reg.enterprise_number
    observed = r.observed
    observed.update(observe(p for p in (*r.tree.nodes, *removal_paths) if p not in observed))
    changes = tree_changes(r.tree, observed, owners=owners)
    changes.extend(_removal_changes(removal_paths, observed))

    held_paths = {settings.keys_file(h.technical_user) for h in held} | {
        settings.chroot(h.technical_user) for h in held
    }
    known = {str(p) for p in (*r.tree.nodes, *removal_paths, *held_paths)}
    unknown, chroot_unknown = _unknown(settings, known, accepted, r.unchanged)

    channels = _channel_plans(
        accepted, held, gone, refusals, allocation, changes, sources, snapshot
    )
    if not owners:
        notes.append("not running as root: owners and groups are not compared or set")
    fingerprints = Fingerprints(
        declarations=digest_of(sorted(_fingerprint_line(s, base, decls_root) for s in summaries)),
        state_version=snapshot.version,
        observed=_observed_digest(observed, r.channel_nodes, r.unchanged, unknown),
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
        removal_guard=assess(settings, snapshot, channels),
    )
    return Reconciliation(
        settings,
        report,
        snapshot,
        allocation,
        accepted,
        held,
        gone,
        r.tree,
        observed,
        plan,
        refusals,
        record=record,
        keys=r.keys,
        unchanged=r.unchanged,
        routing=r.routing,
        host_keys=r.host_keys,
        routing_digests=r.routing_digests,
        channel_nodes=r.channel_nodes,
        chroot_unknown=chroot_unknown,
        channel_keys={
            c.enterprise_number: [
                k.fingerprint for k in summaries[accepted_files[c.enterprise_number]].keys
            ]
            for c in accepted
        },
        deferred=deferred,
        deferred_by=identity_unknown,
        declared=_declared_files(accepted, accepted_files, report, rel_paths),
    )


def _declared_files(
    accepted: list[Channel],
    accepted_files: dict[str, int],
    report: ValidationReport,
    rel_paths: list[str | None],
) -> dict[str, DeclaredFile]:
    out = {}
    for channel in accepted:
        index = accepted_files[channel.enterprise_number]
        rel = rel_paths[index]
        if rel is not None:
            out[channel.enterprise_number] = DeclaredFile(
                rel, report.paths[index], report.summaries[index].digest
            )
    return out


def _identity_changed(summary: FileSummary, prior: str, en: str, reg: Registration) -> str:
    where = summary.facts.enterprise_number_at or summary.display
    return (
        f"{where}: identity-changed: this file declared quality {prior} (technical user "
        f"'{reg.technical_user}', sender number {reg.sender}) at its last successful apply and "
        f"now declares {en}; a file cannot change whose it is, so it is refused and {prior} "
        f"keeps its last good configuration. A typo: put {prior} back. To move the "
        f"registration: remove this file (quality {prior} is removed at the next apply), then "
        f"add a file for {en} in a separate change"
    )


def _host_names(
    settings: HostSettings, summaries: list[FileSummary], accepted_files: dict[str, int]
) -> dict[str, list[str]]:
    """Technical users the host already uses: the SFTP group's name, and any account or
    group of the host's own databases (ours, in the extrausers files, do not count)."""
    from provisioner.hostaccounts import HostNames

    users = {
        en: (summaries[i].facts.technical_user, summaries[i].facts.technical_user_at)
        for en, i in accepted_files.items()
    }
    out: dict[str, list[str]] = {}
    names = HostNames(settings)
    for en, (user, at) in sorted(users.items()):
        if not user:
            continue
        where = str(at) if at is not None else summaries[accepted_files[en]].display
        if user.lower() == settings.sftp_group.lower():
            out[en] = [
                f"{where}: technical-user-reserved: '{user}' is the name of this host's SFTP "
                "group (sftp_group); choose another technical user"
            ]
            continue
        hit = names.owner(user)
        if hit is not None:
            out[en] = [
                f"{where}: technical-user-host-account: '{user}' is already {hit.describe()}; "
                "the host's entry would win and the channel could never log in. Choose "
                "another technical user"
            ]
    return out


def _keys_taken(
    summaries: list[FileSummary],
    accepted_files: dict[str, int],
    key_owners: dict[str, str],
    refused: set[str],
    hold_all: bool,
    sources: dict[str, str],
) -> dict[str, list[str]]:
    """Qualities declaring a key that stays on another channel this run: that channel is
    held (its file is refused, or removals are deferred) and keeps its keys. A key whose
    channel is accepted without it, or removed, is free again."""
    out: dict[str, list[str]] = {}
    for en, index in sorted(accepted_files.items()):
        if en in refused:
            continue
        for key in summaries[index].keys:
            owner = key_owners.get(key.fingerprint)
            if owner is None or owner == en:
                continue
            if owner in refused or (hold_all and owner not in accepted_files):
                shown = sources.get(owner, f"quality {owner}")
                out.setdefault(en, []).append(
                    f"{key.location}: key-taken: this key ({key.fingerprint}) is applied on the "
                    f"channel of {shown}, which keeps its last good configuration this run; "
                    "a key stays with the channel that had it first, so it is refused here"
                )
    return out


@dataclass(slots=True)
class _Rendered:
    tree: DesiredTree
    keys: dict[str, str]
    unchanged: dict[str, ChannelRecord]
    channel_nodes: dict[str, list[Desired]]
    routing: dict[str, dict[str, Any]]
    routing_digests: dict[str, str]
    host_keys: dict[str, str]
    observed: dict[Path, Observed]


def _render(
    settings: HostSettings,
    report: ValidationReport,
    accepted: list[Channel],
    accepted_files: dict[str, int],
    held: list[Registration],
    record: HostRecord,
    context: str,
    progress: ProgressCallback | None = None,
) -> _Rendered:
    """The desired tree, rendering only what the record cannot vouch for (see hostrecord)."""
    summaries = report.summaries
    keys: dict[str, str] = {}
    unchanged: dict[str, ChannelRecord] = {}
    to_render: list[Channel] = []
    for channel in accepted:
        en, reg = channel.enterprise_number, channel.registration
        summary = summaries[accepted_files[en]]
        keys[en] = channel_key(
            context,
            summary.display,
            summary.digest,
            summary.refs,
            (en, reg.technical_user, reg.uid, reg.sender),
        )
        kept = record.channels.get(en)
        if kept is not None and kept.key == keys[en] and kept.holds():
            unchanged[en] = kept
        else:
            to_render.append(channel)
    # Whole results are read back only for the channels rendered, in one go.
    report.results_of([accepted_files[c.enterprise_number] for c in to_render])

    routing = {en: unchanged[en].routing for en in unchanged}
    routing.update({c.enterprise_number: routing_entry(c) for c in to_render})
    digests = {en: unchanged[en].routing_digest for en in unchanged}
    digests.update(
        {c.enterprise_number: routing_digest(routing[c.enterprise_number]) for c in to_render}
    )
    held_routing = _held_routing(settings, {h.enterprise_number for h in held})
    by_sender = dict(held_routing)
    by_sender.update({c.registration.sender: routing[c.enterprise_number] for c in accepted})

    # The big host-wide files are rendered only when something they are made of changed, or
    # when the live file is not what the last apply wrote. Accounts are made of the
    # registrations; the routing table of the routing entries.
    accounts_key = digest_of(
        [
            context,
            *sorted(
                f"{reg.enterprise_number}|{reg.technical_user}|{reg.uid}"
                for reg in [*(c.registration for c in accepted), *held]
            ),
        ]
    )
    routing_key = digest_of(
        [
            context,
            canonical_json(held_routing),
            *sorted(f"{c.registration.sender}={digests[c.enterprise_number]}" for c in accepted),
        ]
    )
    host_keys = dict.fromkeys(MEMO_ROLES, accounts_key) | {"routing": routing_key}
    observed: dict[Path, Observed] = {}
    known_files: dict[str, tuple[str, int]] = {}
    for role, path in host_file_paths(settings).items():
        memo = record.host_files.get(role)
        if memo is None or memo[0] != host_keys[role]:
            continue
        observed[path] = seen = observe_path(path)
        if seen.kind == "file" and seen.sha256 == memo[1]:
            known_files[role] = (memo[1], memo[2])

    tree = DesiredTree()
    registrations = [c.registration for c in accepted] + held
    for node in render_host(settings, registrations, by_sender, known_files):
        tree.add(node)
    channel_nodes: dict[str, list[Desired]] = {}
    ordered = sorted(to_render, key=lambda c: c.user)
    for done, channel in enumerate(ordered):
        if progress is not None:
            progress(RENDER, done, len(ordered))
        channel_nodes[channel.enterprise_number] = render_channel(settings, channel)
        for node in channel_nodes[channel.enterprise_number]:
            tree.add(node)
    if progress is not None and ordered:
        progress(RENDER, len(ordered), len(ordered))
    return _Rendered(tree, keys, unchanged, channel_nodes, routing, digests, host_keys, observed)


def _unknown(
    settings: HostSettings,
    known: set[str],
    accepted: list[Channel],
    unchanged: dict[str, ChannelRecord],
) -> tuple[list[str], dict[str, tuple[list[str], list[int] | None]]]:
    """Files in managed directories that nobody declared (reported, never deleted), and per
    channel those in its chroot with the listing stamp they were read at. A chroot whose
    entries did not change since the last apply listed it is not listed again."""
    for record in unchanged.values():
        known.update(record.paths())
    chroot_unknown: dict[str, tuple[list[str], list[int] | None]] = {}
    for channel in accepted:
        en = channel.enterprise_number
        chroot = str(settings.chroot(channel.user))
        kept = unchanged.get(en)
        if kept is not None and listing_holds(chroot, kept.listing):
            chroot_unknown[en] = (kept.unknown, kept.listing)
        else:
            stamp = listing_stamp(chroot)
            chroot_unknown[en] = (unknown_in(chroot, known), stamp)
    unknown = [
        *unknown_in(str(settings.keys_dir), known),
        *unknown_in(str(settings.chroot_base), known),
        *unknown_in(str(settings.extrausers_dir), known),
    ]
    for names, _stamp in chroot_unknown.values():
        unknown.extend(names)
    return sorted(unknown), chroot_unknown


def _observed_digest(
    observed: dict[Path, Observed],
    channel_nodes: dict[str, list[Desired]],
    unchanged: dict[str, ChannelRecord],
    unknown: list[str],
) -> str:
    """What the plan saw of the host. The paths of a channel count as one fingerprint, so that
    an unchanged channel's comes from the record without reading anything: the digest is the
    same either way."""
    in_channels = {n.path for nodes in channel_nodes.values() for n in nodes}
    prints = sorted(o.fingerprint() for p, o in observed.items() if p not in in_channels)
    channel_prints = {en: kept.fingerprint for en, kept in unchanged.items()}
    for en, nodes in channel_nodes.items():
        channel_prints[en] = channel_fingerprint(observed[n.path].fingerprint() for n in nodes)
    return digest_of(prints + sorted(f"{en}={fp}" for en, fp in channel_prints.items()) + unknown)


def unknown_in(directory: str, known: set[str] | frozenset[str]) -> list[str]:
    """Entries of `directory` that nobody declared: reported, never deleted."""
    prefix = directory.rstrip("/") + "/"
    return [prefix + name for name in list_dir(Path(directory)) if prefix + name not in known]


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
        plans.append(ChannelPlan(en, ch.user, ch.registration.sender, action, ch.display, why))
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
