"""Rules over several declarations at once, and rules that depend on the clock.

They work on `FileSummary`, the small, cacheable digest of a checked file, so that an unchanged
repository is re-validated without parsing anything, while a certificate that expired since
the last run is still refused. How a summary is kept in the cache is the cache's business
(`cache.summary_row`): nothing here knows the cache.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from provisioner.certificates import CertificateInfo, check_certificate
from provisioner.declarations import Facts, FileResult
from provisioner.diagnostics import Diagnostic, Location, Severity, error, warning
from provisioner.models import format_enterprise_number
from provisioner.quality_id import QualityId

KEY_EXPIRY_WARNING = timedelta(days=14)
CERTIFICATE_WARNING_DAYS = 60


@dataclass(frozen=True, slots=True)
class KeyFact:
    fingerprint: str
    location: Location
    expires: datetime | None


@dataclass(slots=True)
class FileSummary:
    display: str
    digest: str
    refs: dict[str, str]
    diagnostics: list[Diagnostic]
    facts: Facts
    keys: list[KeyFact] = field(default_factory=list)
    certificate: CertificateInfo | None = None
    certificate_at: Location | None = None
    next_certificate: CertificateInfo | None = None
    next_certificate_at: Location | None = None
    # A valid declaration with an SFTP channel: what the reconciler provisions. Known here so
    # that an unchanged channel is recognised without loading its whole model.
    sftp: bool = False

    @classmethod
    def of(cls, result: FileResult) -> FileSummary:
        decl = result.declaration
        return cls(
            display=result.display,
            digest=result.digest,
            refs=dict(result.refs),
            diagnostics=list(result.diagnostics),
            facts=result.facts,
            keys=[KeyFact(k.key.fingerprint, k.location, k.expires) for k in result.keys],
            certificate=result.certificate,
            certificate_at=result.certificate_at,
            next_certificate=result.next_certificate,
            next_certificate_at=result.next_certificate_at,
            sftp=decl is not None and decl.structured_messages.channels.sftp is not None,
        )


def clock_rules(summary: FileSummary, now: datetime) -> list[Diagnostic]:
    out: list[Diagnostic] = certificate_rules(summary, now)
    for key in summary.keys:
        if key.expires is None:
            continue
        if key.expires <= now:
            out.append(
                warning(
                    "key-expired",
                    f"this key expired on {key.expires:%Y-%m-%d}; it can no longer log in",
                    key.location,
                )
            )
        elif key.expires - now <= KEY_EXPIRY_WARNING:
            out.append(
                warning(
                    "key-expiring",
                    f"this key expires on {key.expires:%Y-%m-%d}, in {(key.expires - now).days} days;"
                    " declare its successor",
                    key.location,
                )
            )
    return out


def certificate_rules(summary: FileSummary, now: datetime) -> list[Diagnostic]:
    """Each certificate judged at `now`, and the two of a renewal together: the current one
    may expire while the next one is valid (then only a warning says to finish the renewal),
    the next one may be declared before it is valid while the current one still is, and the
    current one's expiry needs no warning once a next one outlasts it."""
    current, at = summary.certificate, summary.certificate_at
    following, next_at = summary.next_certificate, summary.next_certificate_at
    if current is None or at is None:
        return []
    findings = check_certificate(current, now, CERTIFICATE_WARNING_DAYS)
    if following is None or next_at is None:
        return [Diagnostic(Severity(f.severity), f.code, f.message, at) for f in findings]
    next_findings = check_certificate(following, now, CERTIFICATE_WARNING_DAYS)
    next_valid = following.not_before <= now <= following.not_after
    current_valid = current.not_before <= now <= current.not_after
    out: list[Diagnostic] = []
    for f in findings:
        if f.code == "certificate-expired" and next_valid:
            out.append(
                warning(
                    "certificate-renewal-due",
                    f"the certificate expired on {current.not_after:%Y-%m-%d}: only "
                    "next_certificate is accepted now; make it the certificate and remove "
                    "next_certificate",
                    at,
                    next_at,
                )
            )
        elif f.code == "certificate-expiring" and following.not_after > current.not_after:
            continue  # the renewal is declared: nothing to do before the expiry
        else:
            out.append(Diagnostic(Severity(f.severity), f.code, f.message, at))
    for f in next_findings:
        if f.code == "certificate-not-yet-valid" and current_valid:
            if following.not_before > current.not_after:
                out.append(
                    warning(
                        "certificate-renewal-gap",
                        f"next_certificate is valid only from {following.not_before:%Y-%m-%d}, "
                        f"after the certificate expires ({current.not_after:%Y-%m-%d}): files "
                        "signed in between are refused",
                        next_at,
                        at,
                    )
                )
            continue  # declared ahead of its validity while the current one still signs
        out.append(Diagnostic(Severity(f.severity), f.code, f.message, next_at))
    return out


def cross_file_rules(
    summaries: Iterable[FileSummary],
    key_owners: Mapping[str, QualityId] | None = None,
    user_owners: Mapping[str, QualityId] | None = None,
) -> list[Diagnostic]:
    """Rules across files. A quality is its enterprise number and quality type: two files
    may declare one enterprise with two types, never the same pair. `key_owners` maps a key
    fingerprint to the quality that already has it: on the host, the channel the last apply put it on; in
    CI, the quality whose file at the base revision declared it. That quality keeps the key
    and every other file declaring it is refused. A key nobody had yet is refused in every
    file that declares it: none of them has a better claim, whichever name sorts first.

    `user_owners` maps a technical user to the live quality registered with it (the
    reconciler passes the state's): that quality keeps it, and every other file declaring it
    is refused, whatever their names; a file named to sort first cannot take another
    quality's username. Without an owner, the files after the first (by name) are refused."""
    out: list[Diagnostic] = []
    numbers: dict[QualityId, Location] = {}
    ordered = sorted(summaries, key=lambda s: s.display)
    # The registered owner's declaration is where a username is first declared.
    users: dict[str, Location] = _owned_users(ordered, user_owners or {})
    owned = set(users)
    folded: dict[str, tuple[str, Location]] = {}
    keys: dict[str, list[tuple[FileSummary, Location]]] = {}
    for s in ordered:
        f = s.facts
        qid = f.qid
        if qid is not None and f.enterprise_number_at:
            first = numbers.setdefault(qid, f.enterprise_number_at)
            if first is not f.enterprise_number_at:
                out.append(
                    error(
                        "duplicate-enterprise-number",
                        f"the quality {qid.quality_type} of enterprise number "
                        f"{format_enterprise_number(qid.enterprise_number)} is already declared "
                        f"in {first.file}; a quality (enterprise number and quality type) has "
                        "one declaration file",
                        f.enterprise_number_at,
                        first,
                    )
                )
        if f.technical_user and f.technical_user_at:
            first = users.setdefault(f.technical_user, f.technical_user_at)
            if first is not f.technical_user_at:
                registered = f.technical_user in owned
                out.append(
                    error(
                        "duplicate-technical-user",
                        f"the technical user '{f.technical_user}' is "
                        + (
                            f"registered to the channel of {first.file}, which keeps it; "
                            "technical usernames are unique: choose another one"
                            if registered
                            else f"already used by {first.file}; technical usernames are unique"
                        ),
                        f.technical_user_at,
                        first,
                    )
                )
            else:
                other = folded.setdefault(f.technical_user.lower(), (f.technical_user, first))
                if other[0] != f.technical_user:
                    out.append(
                        warning(
                            "similar-technical-user",
                            f"'{f.technical_user}' differs from '{other[0]}' ({other[1].file}) only in "
                            "upper/lower case; usernames are case-sensitive, but people confuse them",
                            f.technical_user_at,
                            other[1],
                        )
                    )
        for key in s.keys:
            keys.setdefault(key.fingerprint, []).append((s, key.location))
    owners = key_owners or {}
    for fingerprint, places in keys.items():
        if len({summary.display for summary, _ in places}) < 2:
            continue
        out.extend(
            _duplicate_key(
                fingerprint, places, owners.get(fingerprint), history=key_owners is not None
            )
        )
    return out


def _owned_users(
    ordered: list[FileSummary], owners: Mapping[str, QualityId]
) -> dict[str, Location]:
    """Technical user -> where its registered owner declares it, for the users whose owner
    still declares them."""
    found: dict[str, Location] = {}
    for s in ordered:
        user, at = s.facts.technical_user, s.facts.technical_user_at
        owner = owners.get(user) if user else None
        if user and at and owner is not None and _owns(s, owner):
            found.setdefault(user, at)
    return found


def _owns(summary: FileSummary, owner: QualityId) -> bool:
    # A registration from before quality types were recorded ('' type) is any quality of its
    # enterprise until a reconcile adopts a type for it.
    if not owner.quality_type:
        return summary.facts.enterprise_number == owner.enterprise_number
    return summary.facts.qid == owner


def _duplicate_key(
    fingerprint: str,
    places: list[tuple[FileSummary, Location]],
    owner: QualityId | None,
    *,
    history: bool,
) -> list[Diagnostic]:
    """One error per file that may not have the key (see `cross_file_rules`)."""
    kept = [at for s, at in places if owner is not None and _owns(s, owner)]
    if kept:
        first = kept[0]
        return [
            error(
                "duplicate-key",
                f"this key ({fingerprint}) already belongs to the channel of {first.file} "
                f"(line {first.line}), which had it first; every channel has keys of its own, "
                "so it is refused here and stays there",
                at,
                first,
            )
            for _s, at in places
            if at is not first and at.file != first.file
        ]
    why = (
        "none of these files had it before, so each of them is refused"
        if history
        else "without --base the gate cannot tell which file had it first, so each file "
        "that declares it is refused"
    )
    out = []
    for _s, at in places:
        others = [o for _, o in places if o.file != at.file]
        named = ", ".join(f"{o.file} line {o.line}" for o in others)
        out.append(
            error(
                "duplicate-key",
                f"this key ({fingerprint}) is also declared in {named}; every channel has keys "
                f"of its own, and {why}",
                at,
                *others,
            )
        )
    return out
