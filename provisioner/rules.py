"""Rules over several declarations at once, and rules that depend on the clock.

They work on `FileSummary`, the small, cacheable digest of a checked file, so that an unchanged
repository is re-validated without parsing anything, while a certificate that expired since
the last run is still refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

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


# --- summaries as plain rows -----------------------------------------------------------------
#
# Every run needs the summary of every file (the cross-file rules see them all), so they are
# cached as positional JSON rows that plain `json.loads` reads: rebuilding 10,000 summaries
# through the generic tagged encoding of `provisioner.cache` took 0.9 s, from rows a fraction.
# The field order is the code's; a cache written by other code is never read.


def _loc_row(loc: Location | None, display: str) -> list[Any] | None:
    # Most locations are in the file itself: its name is not repeated.
    if loc is None:
        return None
    if loc.file == display:
        return [loc.line, loc.column, loc.yaml_path]
    return [loc.file, loc.line, loc.column, loc.yaml_path]


def _loc(row: list[Any] | None, display: str) -> Location | None:
    if row is None:
        return None
    if len(row) == 3:
        return Location(display, row[0], row[1], row[2])
    return Location(row[0], row[1], row[2], row[3])


def _at(row: list[Any], display: str) -> Location:
    loc = _loc(row, display)
    if loc is None:
        raise ValueError("a key without its location")
    return loc


def summary_row(s: FileSummary) -> list[Any]:
    """`s` as a row of JSON values; `summary_from_row` gives back an equal summary."""
    from provisioner.cache import encode_text

    diagnostics = encode_text(s.diagnostics) if s.diagnostics else ""
    if diagnostics is None:
        raise TypeError("diagnostics that cannot be cached")
    f = s.facts
    cert_row = _cert_row(s.certificate)
    return [
        s.display,
        s.digest,
        s.refs,
        diagnostics,
        f.enterprise_number,
        _loc_row(f.enterprise_number_at, s.display),
        f.technical_user,
        _loc_row(f.technical_user_at, s.display),
        list(f.administrators),
        _loc_row(f.administrators_at, s.display),
        [
            [
                k.fingerprint,
                _loc_row(k.location, s.display),
                k.expires.isoformat() if k.expires else None,
            ]
            for k in s.keys
        ],
        cert_row,
        _loc_row(s.certificate_at, s.display),
        _cert_row(s.next_certificate),
        _loc_row(s.next_certificate_at, s.display),
        f.quality_type,
        _loc_row(f.quality_type_at, s.display),
        s.sftp,
    ]


def _cert_row(cert: CertificateInfo | None) -> list[Any] | None:
    if cert is None:
        return None
    return [
        getattr(cert, name).isoformat() if name in _CERT_DATES else getattr(cert, name)
        for name in _CERT_FIELDS
    ]


def _cert_of_row(cert: list[Any] | None) -> CertificateInfo | None:
    if cert is None:
        return None
    values = dict(zip(_CERT_FIELDS, cert, strict=True))
    for name in _CERT_DATES:
        values[name] = datetime.fromisoformat(values[name])
    return CertificateInfo(**values)


def summary_from_row(row: list[Any]) -> FileSummary:
    """The summary of a `summary_row`; KeyError, TypeError or ValueError if it is not one."""
    from provisioner.cache import decode_text

    if type(row) is not list or len(row) != 18:
        raise ValueError("not a summary row")
    (display, digest, refs, diags, en, en_at, user, user_at, admins, admins_at, keys, cert,
     cert_at, next_cert, next_at, qtype, qtype_at, sftp) = row  # fmt: skip
    parse = datetime.fromisoformat
    certificate = _cert_of_row(cert)
    diagnostics = decode_text(diags) if diags else []
    if not isinstance(refs, dict) or not isinstance(diagnostics, list):
        raise ValueError("not a summary row")
    return FileSummary(
        display=display,
        digest=digest,
        refs=refs,
        diagnostics=diagnostics,
        facts=Facts(
            en,
            _loc(en_at, display),
            user,
            _loc(user_at, display),
            tuple(admins),
            _loc(admins_at, display),
            qtype,
            _loc(qtype_at, display),
        ),
        keys=[KeyFact(fp, _at(loc, display), parse(exp) if exp else None) for fp, loc, exp in keys],
        certificate=certificate,
        certificate_at=_loc(cert_at, display),
        next_certificate=_cert_of_row(next_cert),
        next_certificate_at=_loc(next_at, display),
        sftp=bool(sftp),
    )


_CERT_FIELDS = tuple(f.name for f in fields(CertificateInfo))
_CERT_DATES = frozenset(f.name for f in fields(CertificateInfo) if f.type in ("datetime", datetime))


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
    summaries: Iterable[FileSummary], key_owners: Mapping[str, QualityId] | None = None
) -> list[Diagnostic]:
    """Rules across files. A quality is its enterprise number and quality type: two files
    may declare one enterprise with two types, never the same pair. `key_owners` maps a key
    fingerprint to the quality that already has it: on the host, the channel the last apply put it on; in
    CI, the quality whose file at the base revision declared it. That quality keeps the key
    and every other file declaring it is refused. A key nobody had yet is refused in every
    file that declares it: none of them has a better claim, whichever name sorts first."""
    out: list[Diagnostic] = []
    numbers: dict[QualityId, Location] = {}
    users: dict[str, Location] = {}
    folded: dict[str, tuple[str, Location]] = {}
    keys: dict[str, list[tuple[FileSummary, Location]]] = {}
    for s in sorted(summaries, key=lambda s: s.display):
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
                out.append(
                    error(
                        "duplicate-technical-user",
                        f"the technical user '{f.technical_user}' is already used by {first.file}; "
                        "technical usernames are unique",
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
