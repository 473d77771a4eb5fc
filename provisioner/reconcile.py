"""The pure core of a reconcile: declarations + state + host -> plan.

load (validate) -> allocate (state, pure) -> render (templates) -> observe (read-only) -> plan.
Nothing here writes; `apply` is the only place with side effects. Every read of the host goes
through a host view (`provisioner.hostview`): this host unless `compute` is given another.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from provisioner.diagnostics import Diagnostic
from provisioner.discovery import anchored, root_name
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
from provisioner.hostview import LIVE, HostView
from provisioner.identity import DeclaredFile, by_declared_path, root_relative
from provisioner.observe import Observed
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
from provisioner.quality_id import QualityId
from provisioner.render import (
    MEMO_ROLES,
    Channel,
    Desired,
    DesiredTree,
    host_file_paths,
    render_channel,
    render_host,
    routing_entry,
)
from provisioner.rules import FileSummary
from provisioner.setting_scopes import planning_settings
from provisioner.settings import HostSettings
from provisioner.state import (
    Allocation,
    Refusal,
    Registration,
    StateSnapshot,
    adopt,
    allocate,
    legacy_adoptions,
)
from provisioner.validate import ValidateSettings, ValidationReport, validate


@dataclass(slots=True)
class HostMemo:
    """What this run proved about the host, for the record apply writes after it
    (`apply.records.remember`, see `provisioner.hostrecord`); nothing else reads it. A run
    without the record (`--no-cache`) plans the same with `record` None."""

    record: HostRecord | None = None
    # Per channel (quality): its key, and for unchanged ones the record that holds.
    keys: dict[QualityId, str] = field(default_factory=dict)
    unchanged: dict[QualityId, ChannelRecord] = field(default_factory=dict)
    routing: dict[QualityId, dict[str, Any]] = field(default_factory=dict)
    # What each big host-wide file is made of, and each channel's routing entry (as digests).
    host_keys: dict[str, str] = field(default_factory=dict)
    routing_digests: dict[QualityId, str] = field(default_factory=dict)
    # Unknown paths in each channel's chroot, and the listing stamp they were read at.
    chroot_unknown: dict[QualityId, tuple[list[str], list[int] | None]] = field(
        default_factory=dict
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
    refusals: dict[QualityId, list[str]] = field(default_factory=dict)
    memo: HostMemo = field(default_factory=HostMemo)
    # The paths of each channel rendered in this run.
    channel_nodes: dict[QualityId, list[Desired]] = field(default_factory=dict)
    # Per accepted channel, the fingerprints of its keys: recorded once it is applied, so
    # that a key stays with the channel that had it first.
    channel_keys: dict[QualityId, list[str]] = field(default_factory=dict)
    # Registrations this run would have removed, but did not, because a file too broken to
    # say whose it is might still declare them; and those files.
    deferred: list[Registration] = field(default_factory=list)
    deferred_by: list[str] = field(default_factory=list)
    # Per accepted channel, the file that declares it: recorded once it is applied, so that
    # the file still says whose it was when it is refused later (see provisioner.identity).
    declared: dict[QualityId, DeclaredFile] = field(default_factory=dict)
    # Valid qualities without an SFTP channel: a sender number and a routing entry, no
    # account, keys or chroot on this host.
    routed: list[Channel] = field(default_factory=list)

    @property
    def degraded(self) -> bool:
        """The host may still serve what the declarations no longer say, or not yet what
        they do: removals deferred, a quality refused (held on its last good configuration),
        or a file refused."""
        return bool(self.deferred or self.deferred_by or self.plan.has_refusals)

    @property
    def unchanged(self) -> dict[QualityId, ChannelRecord]:
        """The channels the last apply left as they should be: not rendered in this run."""
        return self.memo.unchanged

    def managed_paths(self) -> list[Path]:
        paths = list(self.tree.nodes)
        for record in self.unchanged.values():
            paths.extend(Path(p) for p in record.paths())
        return paths


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
    host: HostView | None = None,
) -> Reconciliation:
    """The plan. `use_cache=False` checks every declaration and renders and reads every path,
    ignoring what earlier runs recorded (the result is the same, only slower). `progress` is
    called as declarations are checked and channels rendered (see provisioner.progress).
    `host`: what the host is read through (see provisioner.hostview); this host by default."""
    with paused_gc():
        return _compute(
            settings,
            paths,
            snapshot,
            now,
            revision,
            cwd,
            jobs,
            write_cache,
            use_cache,
            progress,
            host or LIVE,
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
    progress: ProgressCallback | None,
    host: HostView,
) -> Reconciliation:
    now = now or datetime.now(UTC)
    base = cwd or Path.cwd()
    key_owners = _key_owners(snapshot)
    report, decls_root = _validated(
        settings,
        paths,
        now,
        base,
        jobs,
        write_cache,
        use_cache,
        key_owners,
        progress,
        user_owners=_user_owners(snapshot),
    )
    # Registrations made before quality types were recorded take the type of the file they
    # belong to (see state.model.legacy_adoptions); the commit writes it.
    snapshot = adopt(snapshot, legacy_adoptions(snapshot, _claimed_users(report)))
    files = _sort_files(report, snapshot.registrations)
    for qid, reasons in _host_names(settings, report.summaries, files.accepted, host).items():
        files.refuse(qid, reasons)
    allocation = _allocate(settings, snapshot, report.summaries, files, key_owners, now)
    accepted, routed = _channels(report, files, allocation, snapshot.registrations)
    removals = _removals(snapshot.registrations, accepted, routed, files)

    owners = host.owners_managed()
    context = context_key(settings, owners, host.openssh_version(settings))
    record = (
        HostRecord.parse(host.host_record(settings), context) if use_cache else HostRecord(context)
    )
    r = _render(
        settings,
        report,
        accepted,
        files.accepted,
        removals.held,
        record,
        context,
        host,
        routed,
        progress=progress,
    )
    seen = _compare(settings, r, removals, accepted, host, owners)

    channels = _channel_plans(
        accepted,
        removals.held,
        removals.gone,
        files.refusals,
        allocation,
        seen.changes,
        files.sources,
        snapshot,
        routed,
    )
    notes = list(removals.notes)
    if not owners:
        notes.append("not running as root: owners and groups are not compared or set")
    fingerprints = Fingerprints(
        declarations=digest_of(
            sorted(_fingerprint_line(s, base, decls_root) for s in report.summaries)
        ),
        state_version=snapshot.version,
        observed=_observed_digest(seen.observed, r.channel_nodes, r.unchanged, seen.unknown),
        settings=digest_of([planning_settings(settings)]),
        revision=revision,
    )
    plan = Plan(
        created_at=now.isoformat(),
        root=str(settings.root) if settings.root else None,
        fingerprints=fingerprints,
        channels=channels,
        changes=seen.changes,
        unknown=seen.unknown,
        owners_managed=owners,
        notes=notes,
        unidentified=files.unidentified,
        removal_guard=assess(settings, snapshot, channels),
    )
    return Reconciliation(
        settings,
        report,
        snapshot,
        allocation,
        accepted,
        removals.held,
        removals.gone,
        r.tree,
        seen.observed,
        plan,
        files.refusals,
        memo=HostMemo(
            record,
            r.keys,
            r.unchanged,
            r.routing,
            r.host_keys,
            r.routing_digests,
            seen.chroot_unknown,
        ),
        channel_nodes=r.channel_nodes,
        channel_keys={
            c.qid: [k.fingerprint for k in report.summaries[files.accepted[c.qid]].keys]
            for c in accepted
        },
        deferred=removals.deferred,
        deferred_by=files.identity_unknown,
        declared=_declared_files(
            [*accepted, *routed], {**files.accepted, **files.routed}, report, files.rel_paths
        ),
        routed=routed,
    )


def _key_owners(snapshot: StateSnapshot) -> dict[str, QualityId]:
    """Key fingerprint -> the live channel the last apply put it on: a key stays there (see
    rules.cross_file_rules)."""
    regs = snapshot.registrations
    return {
        fp: qid
        for fp, qid in snapshot.channel_keys.items()
        if qid in regs and regs[qid].status != "removed"
    }


def _user_owners(snapshot: StateSnapshot) -> dict[str, QualityId]:
    """Technical user -> the live quality registered with it: another file declaring it
    cannot take it away, whatever its name (see rules.cross_file_rules)."""
    return {
        reg.technical_user: qid
        for qid, reg in snapshot.registrations.items()
        if reg.status != "removed" and reg.technical_user
    }


def _validated(
    settings: HostSettings,
    paths: Sequence[Path],
    now: datetime,
    base: Path,
    jobs: int | None,
    write_cache: bool,
    use_cache: bool,
    key_owners: dict[str, QualityId],
    progress: ProgressCallback | None,
    *,
    user_owners: dict[str, QualityId],
) -> tuple[ValidationReport, Path]:
    """The declarations checked, and the root fingerprints name files from."""
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
        user_owners=user_owners,
        progress=progress,
    )
    if jobs:
        vsettings = replace(vsettings, jobs=jobs)
    report = validate(vsettings, full=True)
    if not report.summaries:
        # An empty or mistyped path must never read as "every quality was removed".
        problems = "; ".join(f"{d.location}: {d.message}" for d in report.diagnostics)
        raise DeclarationError(f"no declarations to reconcile ({problems or 'none found'})")
    return report, decls_root


def _claimed_users(report: ValidationReport) -> dict[QualityId, str]:
    return {
        q: s.facts.technical_user or "" for s in report.summaries if (q := s.facts.qid) is not None
    }


@dataclass(slots=True)
class _Files:
    """The declaration files sorted by what this run does with them; qualities map to their
    index in `report.summaries`."""

    accepted: dict[QualityId, int] = field(default_factory=dict)  # SFTP channels
    routed: dict[QualityId, int] = field(default_factory=dict)  # the same, without SFTP
    refusals: dict[QualityId, list[str]] = field(default_factory=dict)
    sources: dict[QualityId, str] = field(default_factory=dict)  # quality -> its file
    # Files too broken to say whose they are, and their reasons.
    identity_unknown: list[str] = field(default_factory=list)
    unidentified: list[str] = field(default_factory=list)
    rel_paths: list[str | None] = field(default_factory=list)

    def note(self, qid: QualityId, reasons: Sequence[str]) -> None:
        self.refusals.setdefault(qid, []).extend(reasons)

    def refuse(self, qid: QualityId, reasons: Sequence[str]) -> None:
        """Refuse a quality that had passed so far: it is no SFTP channel this run."""
        self.note(qid, reasons)
        self.accepted.pop(qid, None)


def _sort_files(report: ValidationReport, regs: Mapping[QualityId, Registration]) -> _Files:
    """Accepted (with SFTP or routed only), refused, or unidentified, file by file."""
    files = _Files()
    errors_by_file: dict[str, list[Diagnostic]] = {}
    for d in report.diagnostics:
        if d.is_error:
            errors_by_file.setdefault(d.location.file, []).append(d)
    # Who declared what at the last successful apply (see provisioner.identity).
    files.rel_paths = [root_relative(p, report.root) for p in report.paths]
    whose = by_declared_path(regs)
    named = {q for s in report.summaries if (q := s.facts.qid) is not None}
    for index, summary in enumerate(report.summaries):
        errors = errors_by_file.get(summary.display, [])
        prior = whose.get(files.rel_paths[index] or "") if files.rel_paths else None
        if prior is not None and summary.facts.qid != prior and prior not in named:
            _refuse_changed_identity(files, summary, prior, errors, regs)
        else:
            _sort_file(files, index, summary, errors)
    return files


def _refuse_changed_identity(
    files: _Files,
    summary: FileSummary,
    prior: QualityId,
    errors: list[Diagnostic],
    regs: Mapping[QualityId, Registration],
) -> None:
    """The file that declared `prior` still exists but no longer says so (unparsable, a
    mistyped number or type, another quality): it holds `prior`, which keeps its last good
    configuration, and nothing else is deferred because of it."""
    qid = summary.facts.qid
    files.sources[prior] = summary.display
    reasons = _reasons(errors)
    if qid is not None:
        reasons.append(_identity_changed(summary, prior, qid, regs[prior]))
        if qid in regs and regs[qid].status != "removed":
            files.sources.setdefault(qid, summary.display)
            files.note(qid, reasons)
    files.note(prior, reasons)


def _sort_file(files: _Files, index: int, summary: FileSummary, errors: list[Diagnostic]) -> None:
    qid = summary.facts.qid
    if qid is None:
        if errors:
            files.identity_unknown.append(summary.display)
            # Refused like any invalid declaration: its reasons shown, the exit code 1.
            files.unidentified.extend(_reasons(errors))
        return
    files.sources[qid] = summary.display
    if errors:
        files.note(qid, _reasons(errors))
    elif not summary.sftp:
        # Served by other channels only: a sender number and a routing entry, but nothing
        # to provision on this host.
        files.routed[qid] = index
    else:
        files.accepted[qid] = index


def _allocate(
    settings: HostSettings,
    snapshot: StateSnapshot,
    summaries: list[FileSummary],
    files: _Files,
    key_owners: dict[str, QualityId],
    now: datetime,
) -> Allocation:
    """Uids and sender numbers for the valid qualities; what allocation refuses is refused."""
    while True:
        allocation = _allocation(settings, snapshot, summaries, files, now)
        # A held channel keeps the keys it has: one who declares one of them is refused,
        # and that may hold another channel in turn (rarely more than one round).
        refused_now = set(files.refusals) | {r.qid for r in allocation.refused}
        taken = _keys_taken(
            summaries,
            files.accepted,
            key_owners,
            refused_now,
            bool(files.identity_unknown),
            files.sources,
        )
        if not taken:
            break
        for qid, reasons in taken.items():
            files.refuse(qid, reasons)
    for refusal in allocation.refused:
        files.refuse(refusal.qid, [_allocation_refusal(refusal, summaries, files)])
        files.routed.pop(refusal.qid, None)
    return allocation


def _allocation(
    settings: HostSettings,
    snapshot: StateSnapshot,
    summaries: list[FileSummary],
    files: _Files,
    now: datetime,
) -> Allocation:
    valid = {**files.accepted, **files.routed}
    declared = {q: summaries[i].facts.technical_user or "" for q, i in valid.items()}
    # A quality whose file is refused keeps its registration: a typo must not cut off a
    # working channel. When a broken file cannot even say whose it is, nobody is removed.
    held_ids = set(files.refusals)
    if files.identity_unknown:
        held_ids |= set(snapshot.registrations)
    return allocate(
        snapshot,
        declared,
        now=now,
        sender_start=settings.sender_start,
        uid_range=settings.uid_range,
        held=held_ids,
        sftp=set(files.accepted),
    )


def _allocation_refusal(refusal: Refusal, summaries: list[FileSummary], files: _Files) -> str:
    qid = refusal.qid
    where = files.sources.get(qid, str(qid))
    index_of = files.accepted.get(qid, files.routed.get(qid))
    declared_at = summaries[index_of].facts.technical_user_at if index_of is not None else None
    if refusal.code.startswith("technical-user") and declared_at is not None:
        # Point at the line that declares the user, as the gate does for its own findings.
        where = str(declared_at)
    return f"{where}: {refusal.code}: {refusal.message}"


def _channels(
    report: ValidationReport,
    files: _Files,
    allocation: Allocation,
    regs: Mapping[QualityId, Registration],
) -> tuple[list[Channel], list[Channel]]:
    """The accepted SFTP channels and the routed-only qualities, with their registrations."""
    fresh = {r.qid: r for r in (*allocation.new, *allocation.returning, *allocation.accounts)}

    def channels(indexes: dict[QualityId, int]) -> list[Channel]:
        out = []
        for qid, index in sorted(indexes.items()):
            reg = fresh.get(qid) or regs.get(qid)
            if reg is None:  # pragma: no cover - allocate() registers every accepted quality
                continue
            summary = report.summaries[index]
            out.append(Channel(reg, summary.display, load=partial(report.result, index)))
        return out

    return channels(files.accepted), channels(files.routed)


@dataclass(slots=True)
class _Removals:
    held: list[Registration]  # refused qualities that keep their last good configuration
    gone: list[Registration]  # registrations whose account goes
    deferred: list[Registration]
    notes: list[str]


def _removals(
    regs: Mapping[QualityId, Registration],
    accepted: list[Channel],
    routed: list[Channel],
    files: _Files,
) -> _Removals:
    """Who is held, whose account goes, and whose removal waits for a readable file."""
    refusals = files.refusals
    held = [regs[q] for q in sorted(refusals) if q in regs and regs[q].status != "removed"]
    accepted_ids = {c.qid for c in accepted}
    routed_ids = {c.qid for c in routed}
    # Registrations whose account goes: no longer declared, or declared without SFTP now.
    gone = [
        r
        for q, r in sorted(regs.items())
        if q not in accepted_ids and q not in refusals and not (q in routed_ids and r.uid is None)
    ]
    if not files.identity_unknown:
        return _Removals(held, gone, [], [])
    # A file too broken to tell whose it is might be any quality: remove nobody this run.
    deferred = [r for r in gone if r.status != "removed"]
    note = (
        f"removals deferred ({len(deferred)}): cannot tell which quality these files "
        "declare: " + ", ".join(files.identity_unknown)
    )
    return _Removals([*held, *deferred], [], deferred, [note])


@dataclass(slots=True)
class _Seen:
    """The host compared with the desired tree."""

    observed: dict[Path, Observed]
    changes: list[PathChange]
    unknown: list[str]
    chroot_unknown: dict[QualityId, tuple[list[str], list[int] | None]]


def _compare(
    settings: HostSettings,
    r: _Rendered,
    removals: _Removals,
    accepted: list[Channel],
    host: HostView,
    owners: bool,
) -> _Seen:
    """What must change: the rendered paths, the removed channels' paths and the certificates
    nobody names any more; and what nobody declared."""
    removal_paths: dict[Path, str] = {}
    for reg in removals.gone:
        removal_paths[settings.keys_file(reg.technical_user)] = str(reg.qid)
        removal_paths[settings.chroot(reg.technical_user)] = str(reg.qid)
    observed = r.observed
    observed.update(
        {p: host.observe(p) for p in (*r.tree.nodes, *removal_paths) if p not in observed}
    )
    changes = tree_changes(r.tree, observed, owners=owners)
    changes.extend(_removal_changes(removal_paths, observed, host))

    held_paths = {settings.keys_file(h.technical_user) for h in removals.held} | {
        settings.chroot(h.technical_user) for h in removals.held
    }
    known = {str(p) for p in (*r.tree.nodes, *removal_paths, *held_paths)}
    unknown, chroot_unknown = _unknown(settings, known, accepted, r.unchanged, host)
    stale, unknown_certificates = stale_certificates(settings, known, r.certificate_paths, host)
    observed.update({p: host.observe(p) for p in stale})
    changes.extend(
        PathChange(
            str(p),
            PathAction.DELETE,
            "file",
            PathState.of_observed(observed[p]),
            None,
            None,
            "certificate",
        )
        for p in stale
        if observed[p].kind == "file"
    )
    # Anything else under a certificate's name (a directory, a link) is reported, not touched.
    unknown_certificates += [str(p) for p in stale if observed[p].kind != "file"]
    return _Seen(observed, changes, sorted([*unknown, *unknown_certificates]), chroot_unknown)


def _declared_files(
    accepted: list[Channel],
    accepted_files: dict[QualityId, int],
    report: ValidationReport,
    rel_paths: list[str | None],
) -> dict[QualityId, DeclaredFile]:
    out = {}
    for channel in accepted:
        index = accepted_files[channel.qid]
        rel = rel_paths[index]
        if rel is not None:
            out[channel.qid] = DeclaredFile(
                rel, report.paths[index], report.summaries[index].digest
            )
    return out


def _shown(qid: QualityId) -> str:
    # A registration from before quality types (see state.model.legacy_adoptions).
    return qid.enterprise_number if not qid.quality_type else str(qid)


def _identity_changed(
    summary: FileSummary, prior: QualityId, qid: QualityId, reg: Registration
) -> str:
    where = summary.facts.enterprise_number_at or summary.display
    if qid.enterprise_number == prior.enterprise_number and summary.facts.quality_type_at:
        where = summary.facts.quality_type_at
    was, now = _shown(prior), _shown(qid)
    return (
        f"{where}: identity-changed: this file declared quality {was} (technical user "
        f"'{reg.technical_user}', sender number {reg.sender}) at its last successful apply and "
        f"now declares {now}; a file cannot change whose it is, so it is refused and {was} "
        f"keeps its last good configuration. A typo: put {was} back. To move the "
        f"registration: remove this file (quality {was} is removed at the next apply), then "
        f"add a file for {now} in a separate change"
    )


def _host_names(
    settings: HostSettings,
    summaries: list[FileSummary],
    accepted_files: dict[QualityId, int],
    host: HostView,
) -> dict[QualityId, list[str]]:
    """Technical users the host already uses: the SFTP group's name, and any account or
    group of the host's own databases (ours, in the extrausers files, do not count)."""
    from provisioner.hostaccounts import HostNames

    users = {
        q: (summaries[i].facts.technical_user, summaries[i].facts.technical_user_at)
        for q, i in accepted_files.items()
    }
    out: dict[QualityId, list[str]] = {}
    names = HostNames(settings, host.name_databases(), host.observe)
    for q, (user, at) in sorted(users.items()):
        if not user:
            continue
        where = str(at) if at is not None else summaries[accepted_files[q]].display
        if user.lower() == settings.sftp_group.lower():
            out[q] = [
                f"{where}: technical-user-reserved: '{user}' is the name of this host's SFTP "
                "group (sftp_group); choose another technical user"
            ]
            continue
        hit = names.owner(user)
        if hit is not None:
            out[q] = [
                f"{where}: technical-user-host-account: '{user}' is already {hit.describe()}; "
                "the host's entry would win and the channel could never log in. Choose "
                "another technical user"
            ]
    return out


def _keys_taken(
    summaries: list[FileSummary],
    accepted_files: dict[QualityId, int],
    key_owners: dict[str, QualityId],
    refused: set[QualityId],
    hold_all: bool,
    sources: dict[QualityId, str],
) -> dict[QualityId, list[str]]:
    """Qualities declaring a key that stays on another channel this run: that channel is
    held (its file is refused, or removals are deferred) and keeps its keys. A key whose
    channel is accepted without it, or removed, is free again."""
    out: dict[QualityId, list[str]] = {}
    for qid, index in sorted(accepted_files.items()):
        if qid in refused:
            continue
        for key in summaries[index].keys:
            owner = key_owners.get(key.fingerprint)
            if owner is None or owner == qid:
                continue
            if owner in refused or (hold_all and owner not in accepted_files):
                shown = sources.get(owner, f"quality {_shown(owner)}")
                out.setdefault(qid, []).append(
                    f"{key.location}: key-taken: this key ({key.fingerprint}) is applied on the "
                    f"channel of {shown}, which keeps its last good configuration this run; "
                    "a key stays with the channel that had it first, so it is refused here"
                )
    return out


@dataclass(slots=True)
class _Rendered:
    tree: DesiredTree
    keys: dict[QualityId, str]
    unchanged: dict[QualityId, ChannelRecord]
    channel_nodes: dict[QualityId, list[Desired]]
    routing: dict[QualityId, dict[str, Any]]
    routing_digests: dict[QualityId, str]
    host_keys: dict[str, str]
    observed: dict[Path, Observed]
    # The certificate files the routing table names: kept, every other one is removed.
    certificate_paths: set[str]


def _render(
    settings: HostSettings,
    report: ValidationReport,
    accepted: list[Channel],
    accepted_files: dict[QualityId, int],
    held: list[Registration],
    record: HostRecord,
    context: str,
    host: HostView,
    routed: Sequence[Channel] = (),
    progress: ProgressCallback | None = None,
) -> _Rendered:
    """The desired tree, rendering only what the record cannot vouch for (see hostrecord).
    `routed`: valid qualities without an SFTP channel, in the routing table only."""
    summaries = report.summaries
    keys: dict[QualityId, str] = {}
    unchanged: dict[QualityId, ChannelRecord] = {}
    to_render: list[Channel] = []
    for channel in accepted:
        qid, reg = channel.qid, channel.registration
        summary = summaries[accepted_files[qid]]
        keys[qid] = channel_key(
            context,
            summary.display,
            summary.digest,
            summary.refs,
            (channel.key, reg.technical_user, reg.uid or 0, reg.sender),
        )
        kept = record.channels.get(channel.key)
        if kept is not None and kept.key == keys[qid] and kept.holds(host.lstat):
            unchanged[qid] = kept
        else:
            to_render.append(channel)
    # Whole results are read back only for the channels rendered, in one go; those of the
    # qualities without SFTP, for their routing entries, too (they are few).
    report.results_of([accepted_files[c.qid] for c in to_render])

    routing = {qid: unchanged[qid].routing for qid in unchanged}
    routing.update({c.qid: routing_entry(c, settings) for c in to_render})
    digests = {qid: unchanged[qid].routing_digest for qid in unchanged}
    digests.update({c.qid: routing_digest(routing[c.qid]) for c in to_render})
    routed_entries = {c.registration.sender: routing_entry(c, settings) for c in routed}
    held_routing = _held_routing(settings, {h.sender for h in held}, host)
    by_sender = dict(held_routing)
    by_sender.update(routed_entries)
    by_sender.update({c.registration.sender: routing[c.qid] for c in accepted})

    # The big host-wide files are rendered only when something they are made of changed, or
    # when the live file is not what the last apply wrote. Accounts are made of the
    # registrations; the routing table of the routing entries.
    accounts_key = digest_of(
        [
            context,
            *sorted(
                f"{reg.qid}|{reg.technical_user}|{reg.uid}"
                for reg in [*(c.registration for c in accepted), *held]
                if reg.uid is not None
            ),
        ]
    )
    routing_key = digest_of(
        [
            context,
            canonical_json(held_routing),
            canonical_json(routed_entries),
            *sorted(f"{c.registration.sender}={digests[c.qid]}" for c in accepted),
        ]
    )
    host_keys = dict.fromkeys(MEMO_ROLES, accounts_key) | {"routing": routing_key}
    observed: dict[Path, Observed] = {}
    known_files: dict[str, tuple[str, int]] = {}
    for role, path in host_file_paths(settings).items():
        memo = record.host_files.get(role)
        if memo is None or memo[0] != host_keys[role]:
            continue
        observed[path] = seen = host.observe(path)
        if seen.kind == "file" and seen.sha256 == memo[1]:
            known_files[role] = (memo[1], memo[2])

    tree = DesiredTree()
    # Accounts: the SFTP channels only (a held quality that never had one has no uid).
    registrations = [c.registration for c in accepted] + [h for h in held if h.uid is not None]
    openssh = host.openssh_version(settings)
    for node in render_host(settings, registrations, by_sender, known_files, openssh):
        tree.add(node)
    channel_nodes: dict[QualityId, list[Desired]] = {}
    ordered = sorted(to_render, key=lambda c: c.user)
    for done, channel in enumerate(ordered):
        if progress is not None:
            progress(RENDER, done, len(ordered))
        channel_nodes[channel.qid] = render_channel(settings, channel)
        for node in channel_nodes[channel.qid]:
            tree.add(node)
    if progress is not None and ordered:
        progress(RENDER, len(ordered), len(ordered))
    return _Rendered(
        tree,
        keys,
        unchanged,
        channel_nodes,
        routing,
        digests,
        host_keys,
        observed,
        _certificate_paths(by_sender),
    )


def _certificate_paths(by_sender: dict[str, dict[str, Any]]) -> set[str]:
    """The PEM files the routing table names (held entries come from the live table)."""
    paths: set[str] = set()
    for entry in by_sender.values():
        certificates = entry.get("certificates")
        for c in certificates if isinstance(certificates, list) else ():
            if isinstance(c, dict) and isinstance(c.get("pem_path"), str):
                paths.add(c["pem_path"])
    return paths


_PEM_NAME = re.compile(r"[0-9a-f]{64}\.pem")


def stale_certificates(
    settings: HostSettings, known: set[str], referenced: set[str], host: HostView = LIVE
) -> tuple[list[Path], list[str]]:
    """PEM files in `certificates_dir` that no routing entry names any more (removed: the
    gate must not accept a certificate the declarations dropped), and other entries nobody
    declared (reported, never deleted)."""
    stale: list[Path] = []
    unknown: list[str] = []
    for path in unknown_in(str(settings.certificates_dir), known | referenced, host):
        if _PEM_NAME.fullmatch(Path(path).name):
            stale.append(Path(path))
        else:
            unknown.append(path)
    return stale, unknown


def _unknown(
    settings: HostSettings,
    known: set[str],
    accepted: list[Channel],
    unchanged: dict[QualityId, ChannelRecord],
    host: HostView,
) -> tuple[list[str], dict[QualityId, tuple[list[str], list[int] | None]]]:
    """Files in managed directories that nobody declared (reported, never deleted), and per
    channel those in its chroot with the listing stamp they were read at. A chroot whose
    entries did not change since the last apply listed it is not listed again."""
    for record in unchanged.values():
        known.update(record.paths())
    chroot_unknown: dict[QualityId, tuple[list[str], list[int] | None]] = {}
    for channel in accepted:
        qid = channel.qid
        chroot = str(settings.chroot(channel.user))
        kept = unchanged.get(qid)
        if kept is not None and listing_holds(chroot, kept.listing, host.lstat):
            chroot_unknown[qid] = (kept.unknown, kept.listing)
        else:
            stamp = listing_stamp(chroot, host.lstat)
            chroot_unknown[qid] = (unknown_in(chroot, known, host), stamp)
    unknown = [
        *unknown_in(str(settings.keys_dir), known, host),
        *unknown_in(str(settings.chroot_base), known, host),
        *unknown_in(str(settings.extrausers_dir), known, host),
    ]
    for names, _stamp in chroot_unknown.values():
        unknown.extend(names)
    return sorted(unknown), chroot_unknown


def _observed_digest(
    observed: dict[Path, Observed],
    channel_nodes: dict[QualityId, list[Desired]],
    unchanged: dict[QualityId, ChannelRecord],
    unknown: list[str],
) -> str:
    """What the plan saw of the host. The paths of a channel count as one fingerprint, so that
    an unchanged channel's comes from the record without reading anything: the digest is the
    same either way."""
    in_channels = {n.path for nodes in channel_nodes.values() for n in nodes}
    prints = sorted(o.fingerprint() for p, o in observed.items() if p not in in_channels)
    channel_prints = {str(q): kept.fingerprint for q, kept in unchanged.items()}
    for q, nodes in channel_nodes.items():
        channel_prints[str(q)] = channel_fingerprint(observed[n.path].fingerprint() for n in nodes)
    return digest_of(prints + sorted(f"{en}={fp}" for en, fp in channel_prints.items()) + unknown)


def unknown_in(
    directory: str, known: set[str] | frozenset[str], host: HostView = LIVE
) -> list[str]:
    """Entries of `directory` that nobody declared: reported, never deleted."""
    prefix = directory.rstrip("/") + "/"
    return [prefix + name for name in host.list_dir(Path(directory)) if prefix + name not in known]


def _held_routing(
    settings: HostSettings, held: set[str], host: HostView
) -> dict[str, dict[str, Any]]:
    """Routing entries of refused channels (by sender number), carried over from the live
    table."""
    if not held:
        return {}
    current = host.observe(settings.routing_table)
    if current.content is None:
        return {}
    try:
        senders = json.loads(current.content)["senders"]
    except (ValueError, KeyError, TypeError):
        return {}
    return {k: v for k, v in senders.items() if k in held and isinstance(v, dict)}


def _removal_changes(
    paths: dict[Path, str], observed: dict[Path, Observed], host: HostView
) -> list[PathChange]:
    changes = []
    for path, en in sorted(paths.items()):
        o = observed[path]
        if not o.exists:
            continue
        before = PathState.of_observed(o)
        if o.kind == "dir":
            size, files = host.tree_size(path)
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
    refusals: dict[QualityId, list[str]],
    allocation: Allocation,
    changes: list[PathChange],
    sources: dict[QualityId, str],
    snapshot: StateSnapshot,
    routed: Sequence[Channel] = (),
) -> list[ChannelPlan]:
    touched = {c.channel for c in changes if c.channel}
    fresh = {r.qid for r in (*allocation.new, *allocation.returning)}
    plans = [_sftp_plan(ch, fresh, touched) for ch in accepted]
    plans += [_routed_plan(ch, fresh, touched) for ch in routed]
    plans += _refused_plans(refusals, {h.qid for h in held}, sources, snapshot)
    plans += _removal_plans(gone, {c.qid for c in routed}, touched)
    return sorted(plans, key=lambda p: (p.technical_user or "", p.enterprise_number))


def _sftp_plan(ch: Channel, fresh: set[QualityId], touched: set[str]) -> ChannelPlan:
    why: tuple[str, ...] = ()
    if ch.qid in fresh:
        action = ChannelAction.CREATE
    elif ch.key in touched:
        action = ChannelAction.CHANGE
    elif ch.registration.status != "active":
        # The files already match (a refused declaration put back, a retried failure): only
        # the status moves, and the plan says so rather than showing a bare "change".
        action = ChannelAction.CHANGE
        why = (f"status {ch.registration.status} -> active (the files already match)",)
    else:
        action = ChannelAction.UNCHANGED
    return _plan(ch.qid, ch.user, ch.registration.sender, action, ch.display, why)


_NO_SFTP = "no SFTP channel: a sender number and a routing entry, no account on this host"


def _routed_plan(ch: Channel, fresh: set[QualityId], touched: set[str]) -> ChannelPlan:
    why: tuple[str, ...] = ()
    if ch.qid in fresh:
        action, why = ChannelAction.CREATE, (_NO_SFTP,)
    elif ch.key in touched:
        action, why = ChannelAction.CHANGE, ("the SFTP channel is removed; " + _NO_SFTP,)
    elif ch.registration.status != "active":
        action = ChannelAction.CHANGE
        why = (f"status {ch.registration.status} -> active; {_NO_SFTP}",)
    else:
        action = ChannelAction.UNCHANGED
    return _plan(ch.qid, ch.user, ch.registration.sender, action, ch.display, why)


def _refused_plans(
    refusals: dict[QualityId, list[str]],
    held_ids: set[QualityId],
    sources: dict[QualityId, str],
    snapshot: StateSnapshot,
) -> list[ChannelPlan]:
    plans = []
    for qid, reasons in sorted(refusals.items()):
        reg = snapshot.registrations.get(qid)
        keeps = " (keeps its last good configuration)" if qid in held_ids else ""
        plans.append(
            _plan(
                qid,
                reg.technical_user if reg else None,
                reg.sender if reg else None,
                ChannelAction.REFUSED,
                sources.get(qid),
                tuple(r + keeps for r in reasons[:1]) + tuple(reasons[1:]),
            )
        )
    return plans


def _removal_plans(
    gone: list[Registration], routed_ids: set[QualityId], touched: set[str]
) -> list[ChannelPlan]:
    # A routed quality is planned with the routed ones: it stays, only its SFTP channel goes.
    return [
        _plan(reg.qid, reg.technical_user, reg.sender, ChannelAction.REMOVE)
        for reg in gone
        if reg.qid not in routed_ids and (str(reg.qid) in touched or reg.status != "removed")
    ]


def _plan(
    qid: QualityId,
    user: str | None,
    sender: str | None,
    action: ChannelAction,
    source: str | None = None,
    reasons: tuple[str, ...] = (),
) -> ChannelPlan:
    return ChannelPlan(
        qid.enterprise_number, user, sender, action, source, reasons, quality_type=qid.quality_type
    )
