"""Rules over several declarations at once, and rules that depend on the clock.

They work on `FileSummary`, the small, cacheable digest of a checked file, so that an unchanged
repository is re-validated without parsing anything, while a certificate that expired since
the last run is still refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from provisioner.certificates import CertificateInfo, check_certificate
from provisioner.declarations import Facts, FileResult
from provisioner.diagnostics import Diagnostic, Location, Severity, error, warning
from provisioner.models import format_enterprise_number

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

    @classmethod
    def of(cls, result: FileResult) -> FileSummary:
        return cls(
            display=result.display,
            digest=result.digest,
            refs=dict(result.refs),
            diagnostics=list(result.diagnostics),
            facts=result.facts,
            keys=[KeyFact(k.key.fingerprint, k.location, k.expires) for k in result.keys],
            certificate=result.certificate,
            certificate_at=result.certificate_at,
        )


def clock_rules(summary: FileSummary, now: datetime) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    if summary.certificate is not None and summary.certificate_at is not None:
        for finding in check_certificate(summary.certificate, now, CERTIFICATE_WARNING_DAYS):
            severity = Severity(finding.severity)
            out.append(Diagnostic(severity, finding.code, finding.message, summary.certificate_at))
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


def cross_file_rules(summaries: Iterable[FileSummary]) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    numbers: dict[str, Location] = {}
    users: dict[str, Location] = {}
    folded: dict[str, tuple[str, Location]] = {}
    keys: dict[str, Location] = {}
    for s in sorted(summaries, key=lambda s: s.display):
        f = s.facts
        if f.enterprise_number and f.enterprise_number_at:
            first = numbers.setdefault(f.enterprise_number, f.enterprise_number_at)
            if first is not f.enterprise_number_at:
                out.append(
                    error(
                        "duplicate-enterprise-number",
                        "the enterprise number "
                        f"{format_enterprise_number(f.enterprise_number)} is already declared in "
                        f"{first.file}; a quality has one declaration file",
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
            first = keys.setdefault(key.fingerprint, key.location)
            if first is not key.location and first.file != key.location.file:
                out.append(
                    error(
                        "duplicate-key",
                        f"this key ({key.fingerprint}) is already declared in {first.file} line "
                        f"{first.line}; every channel has keys of its own",
                        key.location,
                        first,
                    )
                )
    return out
