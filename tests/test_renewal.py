"""A renewal: a declaration names its certificate and the next one, both accepted until the
first expires; the contact is told about each certificate's expiry.

The gate's verdicts on each combination are the case `tests/cases/certificate-renewal`; here the
same verdicts survive the caches, and the notices name the renewal.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import EN_ONDERNEMING, NOW, Host
from ops_support import body

from provisioner.cache import summary_from_row, summary_row
from provisioner.notify import Contact, Event, compose
from provisioner.notify.events import declaration_events
from provisioner.state.model import StateSnapshot
from provisioner.validate import ValidateSettings, validate

CASES = Path(__file__).parent / "cases"
RENEWAL = CASES / "certificate-renewal"
FIXED_NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _tree(tmp_path: Path, *names: str) -> Path:
    """The named renewal cases, with the material they reference, in a fresh tree."""
    root = tmp_path / "decls"
    (root / "renewal" / "qualities").mkdir(parents=True)
    shutil.copytree(CASES / "_material", root / "_material")
    for name in names:
        shutil.copy(RENEWAL / "qualities" / f"{name}.yaml", root / "renewal" / "qualities")
    # A declarations repository: its work tree is the root the references stay inside.
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


def _verdicts(root: Path, now: datetime, cache: Path | None) -> list[str]:
    report = validate(
        ValidateSettings(paths=(Path(),), cwd=root / "renewal", now=now, cache_dir=cache, jobs=1)
    )
    return [f"{d.severity.value}:{d.code}:{d.location.line}" for d in report.diagnostics]


@pytest.mark.parametrize("name", ["overlap", "old-expired", "gap", "both-unusable"])
def test_the_cached_verdicts_of_a_renewal_are_the_fresh_ones(tmp_path: Path, name: str) -> None:
    root = _tree(tmp_path, name)
    cache = tmp_path / "cache"
    fresh = _verdicts(root, FIXED_NOW, None)
    assert _verdicts(root, FIXED_NOW, cache) == fresh  # writes the cache
    assert _verdicts(root, FIXED_NOW, cache) == fresh  # replays the memo
    # The clock moves on: both certificates are judged again from the cached rows.
    later = FIXED_NOW + timedelta(days=40)
    assert _verdicts(root, later, cache) == _verdicts(root, later, None)


def test_once_the_current_certificate_expires_the_renewal_is_due(tmp_path: Path) -> None:
    root = _tree(tmp_path, "overlap")
    # overlap: expiring.cer (until 2026-12-29) and signature.cer (until 2030).
    assert _verdicts(root, FIXED_NOW, None) == []
    assert _verdicts(root, datetime(2027, 1, 2, tzinfo=UTC), tmp_path / "c") == [
        "warning:certificate-renewal-due:27"
    ]


def test_a_summary_row_keeps_both_certificates(tmp_path: Path) -> None:
    root = _tree(tmp_path, "overlap")
    report = validate(
        ValidateSettings(
            paths=(Path(),), cwd=root / "renewal", now=FIXED_NOW, cache_dir=None, jobs=1
        )
    )
    (summary,) = report.summaries
    assert summary.certificate is not None and summary.next_certificate is not None
    back = summary_from_row(summary_row(summary))
    assert back.certificate == summary.certificate
    assert back.next_certificate == summary.next_certificate
    assert back.next_certificate_at == summary.next_certificate_at


def _no_state() -> StateSnapshot:
    return StateSnapshot(registrations={}, usernames={}, next_sender_number=100000,
                         next_uid=200000, version=0)  # fmt: skip


def test_each_certificate_of_a_renewal_has_its_expiry_notice(tmp_path: Path) -> None:
    root = _tree(tmp_path, "overlap")
    report = validate(
        ValidateSettings(
            paths=(Path(),), cwd=root / "renewal", now=FIXED_NOW, cache_dir=None, jobs=1
        )
    )
    (summary,) = report.summaries
    assert summary.certificate is not None and summary.next_certificate is not None
    events = declaration_events(report, _no_state(), FIXED_NOW)
    (expiring,) = events
    assert expiring.kind == "certificate-expiring"
    assert summary.certificate.sha256_fingerprint in expiring.key
    assert expiring.facts["renewal_serial"] == summary.next_certificate.serial_decimal
    # Near the next certificate's own expiry, it has its own notice (its own id).
    late = summary.next_certificate.not_after - timedelta(days=30)
    ids = {e.key for e in declaration_events(report, _no_state(), late)}
    assert any(summary.next_certificate.sha256_fingerprint in i for i in ids)
    assert any(summary.certificate.sha256_fingerprint in i for i in ids)  # expired by then


RENEWAL_SENTENCES = {
    "nl": "is al geregistreerd",
    "fr": "est déjà enregistré",
    "de": "ist bereits registriert",
}


@pytest.mark.parametrize("language", ["nl", "fr", "de"])
@pytest.mark.parametrize("kind", ["certificate-expiring", "certificate-expired"])
def test_the_notice_names_the_registered_next_certificate(
    host: Host, kind: str, language: str
) -> None:
    host.write_settings(hostname="test-host")
    contact = Contact(
        EN_ONDERNEMING, "ONDERNEMING", "mr", "Test", "Expeditortest", language, ("a@b.example",)
    )
    facts: dict[str, object] = {
        "technical_user": "EXPDEMOONDERNEMING",
        "sender_number": "100001",
        "certificate_owner": "Jan Peeters",
        "certificate_issuer": "SERIALNUMBER=200803, CN=Citizen CA, C=BE",
        "certificate_serial": "1111",
        "certificate_serial_hex": "04 57",
        "certificate_fingerprint": "ab" * 32,
        "expires_on": datetime(2026, 12, 20, tzinfo=UTC),
        "days_left": 21,
        "source": "qualities/0403170701.yaml",
    }
    plain = body(compose(host.settings(), Event(kind, "x", EN_ONDERNEMING, facts), contact, NOW))  # type: ignore[arg-type]
    renewed = facts | {
        "renewal_serial": "987654321",
        "renewal_valid_from": datetime(2026, 11, 1, tzinfo=UTC),
    }
    text = body(compose(host.settings(), Event(kind, "x", EN_ONDERNEMING, renewed), contact, NOW))  # type: ignore[arg-type]
    assert "987654321" in text and "987654321" not in plain
    assert "{{" not in text and "{%" not in text
    if kind == "certificate-expiring":
        assert RENEWAL_SENTENCES[language] in text


def test_the_expiry_metric_of_a_renewing_channel_is_the_later_certificate(tmp_path: Path) -> None:
    from provisioner.heartbeat import expiries

    root = _tree(tmp_path, "overlap")
    report = validate(
        ValidateSettings(
            paths=(Path(),), cwd=root / "renewal", now=FIXED_NOW, cache_dir=None, jobs=1
        )
    )
    (summary,) = report.summaries
    assert summary.certificate is not None and summary.next_certificate is not None
    certificates, _keys = expiries(report.summaries)
    assert certificates == {"renewoverlap": summary.next_certificate.not_after.timestamp()}
