"""Notifications through the outbox: every event, every language, each event once."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    EN_ONDERNEMING,
    EN_SECSOC,
    EN_THIRD,
    NOW,
    Q_ONDERNEMING,
    Q_SECSOC,
    Q_THIRD,
    USER_ONDERNEMING,
    USER_SECSOC,
    Host,
)
from fixtures_crypto import make_certificate, pem
from ops_support import body, outbox, read_message, run

import provisioner.notify
from provisioner.declarations import FileResult
from provisioner.notify import Contact, Event, compose, contact_book
from provisioner.notify.events import EVENT_KINDS
from provisioner.settings import load_settings
from provisioner.validate import ValidationReport

SUBJECTS = {
    ("channel-active", "nl"): "Uw SFTP-kanaal is actief",
    ("channel-active", "fr"): "Votre canal SFTP est actif",
    ("channel-active", "de"): "Ihr SFTP-Kanal ist aktiv",
    ("channel-removed", "nl"): "Uw SFTP-kanaal is verwijderd",
    ("channel-removed", "fr"): "Votre canal SFTP a été supprimé",
    ("channel-removed", "de"): "Ihr SFTP-Kanal wurde entfernt",
    ("certificate-expiring", "nl"): "Uw certificaat voor de gestructureerde berichten vervalt",
    ("certificate-expiring", "fr"): "Votre certificat pour les messages structurés expire",
    ("certificate-expiring", "de"): "Ihr Zertifikat für die strukturierten Nachrichten läuft",
    ("certificate-expired", "nl"): "is vervallen op",
    ("certificate-expired", "fr"): "a expiré le",
    ("certificate-expired", "de"): "ist am",
    ("key-expiring", "nl"): "Een SSH-sleutel van gebruiker",
    ("key-expiring", "fr"): "Une clé SSH de l'utilisateur",
    ("key-expiring", "de"): "Ein SSH-Schlüssel des Benutzers",
    ("quality-refused", "nl"): "werd geweigerd",
    ("quality-refused", "fr"): "a été refusé",
    ("quality-refused", "de"): "wurde abgelehnt",
}
GREETINGS = {"nl": "Geachte heer Expeditortest,", "fr": "Monsieur Expeditortest,"}
GREETINGS["de"] = "Sehr geehrter Herr Expeditortest,"


def by_kind(host: Host) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for path in outbox(host.settings()):
        kind = read_message(path)["X-Sftp-Provisioner-Event"].split(":")[0]
        out.setdefault(kind, []).append(path)
    return out


def event_facts(kind: str) -> dict[str, object]:
    expires = datetime(2026, 12, 20, tzinfo=UTC)
    return {
        "technical_user": USER_ONDERNEMING,
        "sender_number": "100001",
        "registered_at": NOW,
        "active_since": NOW,
        "removed_at": NOW,
        "certificate_owner": "Jan Peeters",
        "certificate_issuer": "SERIALNUMBER=200803, CN=Citizen CA, C=BE",
        "certificate_serial": "212676479325587081654357723800",
        "certificate_serial_hex": "10 00 00 00 00 00 0b 7a 21 df 5c 29",
        "certificate_fingerprint": "ab" * 32,
        "key_fingerprint": "SHA256:abcdefghijklmnop",
        "key_algorithm": "ssh-ed25519",
        "key_comment": "laptop",
        "expires_on": expires,
        "days_left": 21,
        "source": "qualities/0403170701.yaml",
        "reasons": ["qualities/0403170701.yaml:12:3: certificate-expired: the certificate expired"],
    }


@pytest.mark.parametrize("language", ["nl", "fr", "de"])
@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_every_event_renders_in_every_language(host: Host, kind: str, language: str) -> None:
    host.write_settings(hostname="test-host", public_host="sftp.example.be", public_port=2222)
    settings = host.settings()
    contact = Contact(
        EN_ONDERNEMING,
        "ONDERNEMING",
        "mr",
        "Test",
        "Expeditortest",
        language,
        ("batch@onderneming.example", "it@onderneming.example"),
    )
    event = Event(kind, f"{kind}:{EN_ONDERNEMING}:x", EN_ONDERNEMING, event_facts(kind))  # type: ignore[arg-type]
    msg = compose(settings, event, contact, NOW)
    assert SUBJECTS[(kind, language)] in msg["Subject"]
    assert msg["To"].addresses[1].addr_spec == "it@onderneming.example"
    assert msg["From"] == "sftp-provisioner@test-host"
    assert msg["Content-Language"] == language
    assert msg["Auto-Submitted"] == "auto-generated"
    text = body(msg)
    assert text.startswith(GREETINGS[language])
    assert "0403.170.701" in text and "ONDERNEMING" in text
    assert "{{" not in text and "{%" not in text
    date = {"nl": "20-12-2026", "fr": "20/12/2026", "de": "20.12.2026"}[language]
    if kind == "channel-active":
        for fact in ("100001", USER_ONDERNEMING, "sftp.example.be", "2222", "IN, INTEST, INTEST-S"):
            assert fact in text
        assert "OUT, OUTTEST, OUTTEST-S" in text
    if kind in ("certificate-expiring", "certificate-expired", "key-expiring"):
        assert date in msg["Subject"] and date in text
    if kind.startswith("certificate"):
        assert "212676479325587081654357723800" in text and "0b 7a 21 df 5c 29" in text
    if kind == "key-expiring":
        assert "SHA256:abcdefghijklmnop (laptop)\n\n" in text and "21" in text
    if kind == "quality-refused":
        assert "certificate-expired: the certificate expired" in text


def test_channel_active_in_each_contact_language_through_the_outbox(host: Host) -> None:
    host.write_settings(port=2222)
    run(host.settings(), [host.decls], host.base, now=NOW)
    messages = {
        read_message(p)["Content-Language"]: read_message(p) for p in outbox(host.settings())
    }
    assert set(messages) == {"nl", "fr"}
    nl, fr = messages["nl"], messages["fr"]
    assert nl["To"] == "batch@onderneming.example"
    assert nl["Subject"] == (
        f"Uw SFTP-kanaal is actief: gebruiker {USER_ONDERNEMING}, verzendernummer 100001"
    )
    assert fr["Subject"] == (
        f"Votre canal SFTP est actif : utilisateur {USER_SECSOC}, numéro d'expéditeur 100000"
    )
    assert "Poort:                    2222" in body(nl)
    assert body(fr).startswith("Madame Dupont,")

    # German: the contact changes language; a new quality's activation is told in German.
    host.edit(EN_ONDERNEMING, "language: nl", "language: de")
    (host.decls / "qualities" / f"{EN_ONDERNEMING}.yaml").rename(host.base / "away.yaml")
    run(host.settings(), [host.decls], host.base, now=NOW + timedelta(minutes=30))
    (host.base / "away.yaml").rename(host.decls / "qualities" / f"{EN_ONDERNEMING}.yaml")
    run(host.settings(), [host.decls], host.base, now=NOW + timedelta(minutes=60))
    kinds = by_kind(host)
    german = [read_message(p) for p in kinds["channel-active"]]
    german = [m for m in german if m["Content-Language"] == "de"]
    assert len(german) == 1
    assert german[0]["Subject"].startswith("Ihr SFTP-Kanal ist aktiv: Benutzer EXPDEMOONDERNEMING")
    assert body(german[0]).startswith("Sehr geehrter Herr Expeditortest,")
    # ...and its removal in between went to the contact the last run had seen: the file was
    # gone, and its German version never reached the host before the removal.
    (removed,) = (read_message(p) for p in kinds["channel-removed"])
    assert removed["Content-Language"] == "nl"
    assert removed["To"] == "batch@onderneming.example"
    assert removed["Subject"].startswith("Uw SFTP-kanaal is verwijderd: gebruiker EXPDEMO")


def test_each_event_is_sent_once(host: Host) -> None:
    settings = host.settings()
    run(settings, [host.decls], host.base, now=NOW)
    first = outbox(settings)
    assert len(first) == 2
    for minutes in (30, 60, 90):
        report = run(settings, [host.decls], host.base, now=NOW + timedelta(minutes=minutes))
        assert report.notifications["queued"] == 0
    assert outbox(settings) == first
    with host.store() as store:
        assert store.notification_sent(read_message(first[0])["X-Sftp-Provisioner-Event"])


def _write_certificate(host: Host, not_after: datetime) -> None:
    cert = make_certificate(not_before=NOW - timedelta(days=700), not_after=not_after)
    (host.decls / "certs" / "dupont-signature.pem").write_bytes(pem(cert))


def test_certificate_expiring_within_60_days(host: Host) -> None:
    _write_certificate(host, NOW + timedelta(days=45))
    settings = host.settings()
    run(settings, [host.decls], host.base, now=NOW)
    (path,) = by_kind(host)["certificate-expiring"]
    msg = read_message(path)
    assert msg["To"] == "edi@secsoc.example" and msg["Content-Language"] == "fr"
    assert msg["Subject"] == (
        "Votre certificat pour les messages structurés expire le "
        f"{(NOW + timedelta(days=45)):%d/%m/%Y}"
    )
    assert "dans 45 jours" in body(msg)
    # Not again at the next runs, and not for the other quality, whose certificate is fine.
    run(settings, [host.decls], host.base, now=NOW + timedelta(days=1))
    assert len(by_kind(host)["certificate-expiring"]) == 1

    # A renewed certificate that expires soon again is a new event.
    _write_certificate(host, NOW + timedelta(days=50))
    run(settings, [host.decls], host.base, now=NOW + timedelta(days=2))
    assert len(by_kind(host)["certificate-expiring"]) == 2


def test_certificate_expired_refuses_the_quality_and_says_why(host: Host) -> None:
    _write_certificate(host, NOW - timedelta(days=1))
    settings = host.settings()
    report = run(settings, [host.decls], host.base, now=NOW)
    assert report.outcome == "degraded"  # a refused quality: not a healthy run
    kinds = by_kind(host)
    (expired,) = (read_message(p) for p in kinds["certificate-expired"])
    assert expired["Subject"].startswith("Votre certificat pour les messages structurés a expiré")
    (refused,) = (read_message(p) for p in kinds["quality-refused"])
    assert refused["To"] == "edi@secsoc.example"
    assert "certificate-expired" in body(refused)
    assert "Le canal sera créé dès que l'enregistrement sera corrigé." in body(refused)
    assert EN_SECSOC in refused["X-Sftp-Provisioner-Event"]
    run(settings, [host.decls], host.base, now=NOW + timedelta(minutes=30))
    again = by_kind(host)
    assert len(again["certificate-expired"]) == 1 and len(again["quality-refused"]) == 1


def test_key_expiring_within_14_days(host: Host) -> None:
    expires = (NOW + timedelta(days=5)).date()
    line = next(
        line for line in host.quality(EN_ONDERNEMING).read_text().splitlines() if "backup@" in line
    )
    key = line.strip().removeprefix("- ")
    host.edit(EN_ONDERNEMING, line, f'        - key: "{key}"\n          expires: {expires}')
    settings = host.settings()
    run(settings, [host.decls], host.base, now=NOW)
    (path,) = by_kind(host)["key-expiring"]
    msg = read_message(path)
    assert msg["Content-Language"] == "nl"
    assert msg["Subject"] == (
        f"Een SSH-sleutel van gebruiker {USER_ONDERNEMING} vervalt op {expires:%d-%m-%Y}"
    )
    assert "backup@onderneming" in body(msg) and "binnen 5 dagen" in body(msg)
    run(settings, [host.decls], host.base, now=NOW + timedelta(days=1))
    assert len(by_kind(host)["key-expiring"]) == 1


def test_refused_quality_keeps_its_channel_and_is_told_with_the_reason(host: Host) -> None:
    settings = host.settings()
    run(settings, [host.decls], host.base, now=NOW)
    host.edit(EN_ONDERNEMING, "technical_user: EXPDEMOONDERNEMING", "technical_user: RENAMED2026")
    run(settings, [host.decls], host.base, now=NOW + timedelta(minutes=30))
    (path,) = by_kind(host)["quality-refused"]
    msg = read_message(path)
    assert (
        msg["Subject"]
        == "Uw registratie voor gestructureerde berichten werd geweigerd (0403.170.701)"
    )
    text = body(msg)
    assert "technical-user-immutable" in text and "RENAMED2026" in text
    assert f"gebruiker {USER_ONDERNEMING}\nkan zich blijven aanmelden" in text
    run(settings, [host.decls], host.base, now=NOW + timedelta(minutes=60))
    assert len(by_kind(host)["quality-refused"]) == 1
    # Put right, the channel does not announce itself as new again.
    host.edit(EN_ONDERNEMING, "technical_user: RENAMED2026", "technical_user: EXPDEMOONDERNEMING")
    run(settings, [host.decls], host.base, now=NOW + timedelta(minutes=90))
    assert len(by_kind(host)["channel-active"]) == 2


def test_notifications_can_be_switched_off(host: Host) -> None:
    host.write_settings(notifications=False)
    run(host.settings(), [host.decls], host.base, now=NOW)
    assert outbox(host.settings()) == []


def test_credentials_are_not_settings(host: Host, tmp_path: Path) -> None:
    from provisioner.errors import SettingsError

    path = tmp_path / "s.yaml"
    path.write_text("smtp_password: hunter2\n")
    with pytest.raises(SettingsError, match="smtp_password") as info:
        load_settings(path, environ={})
    assert "hunter2" not in str(info.value)


def test_a_broken_site_template_loses_no_event(host: Host) -> None:
    site = host.base / "site-templates" / "notifications" / "nl"
    site.mkdir(parents=True)
    (site / "channel-active.txt.j2").write_text("{{ no_such_value }}\n")
    host.write_settings(templates_dir=str(host.base / "site-templates"))
    report = run(host.settings(), [host.decls], host.base, now=NOW)
    # Applied all the same; the run says what went wrong.
    assert report.outcome == "partial" and report.channels["active"] == 2
    assert "no_such_value" in report.errors[0]
    assert [read_message(p)["Content-Language"] for p in outbox(host.settings())] == ["fr"]

    # Put right, the next run sends what was not sent: nothing was marked as done.
    (site / "channel-active.txt.j2").unlink()
    report = run(host.settings(), [host.decls], host.base, now=NOW + timedelta(minutes=30))
    assert report.outcome == "ok" and report.notifications["queued"] == 1
    assert sorted(read_message(p)["Content-Language"] for p in outbox(host.settings())) == [
        "fr",
        "nl",
    ]


# --- whole results: read back only where a summary does not say enough ----------------------

ONDERNEMING_FILE = f"examples/qualities/{EN_ONDERNEMING}.yaml"
SECSOC_FILE = f"examples/qualities/{EN_SECSOC}.yaml"


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The files whose whole result notifying asks for, one entry per file and request.

    Counted at `ValidationReport.results_of` (`results` goes through it too), and only while
    `notify_run` runs: what the reconciler reads for the channels it renders is its business.
    """
    files: list[str] = []
    inside = False
    results_of = ValidationReport.results_of
    notify_run = provisioner.notify.notify_run

    def counting(self: ValidationReport, indices: Sequence[int]) -> list[FileResult]:
        indices = list(indices)
        if inside:
            files.extend(self.summaries[i].display for i in indices)
        return results_of(self, indices)

    def notifying(*args: Any, **kwargs: Any) -> Any:
        nonlocal inside
        inside = True
        try:
            return notify_run(*args, **kwargs)
        finally:
            inside = False

    monkeypatch.setattr(ValidationReport, "results_of", counting)
    # The runner imports notify_run when it notifies, from the package.
    monkeypatch.setattr(provisioner.notify, "notify_run", notifying)
    yield files


def test_unchanged_declarations_are_not_read_back_to_notify(host: Host, asked: list[str]) -> None:
    settings = host.settings()
    run(settings, [host.decls], host.base, now=NOW)
    # The first time, the contact book knows no declaration: every contact is read.
    assert sorted(asked) == [SECSOC_FILE, ONDERNEMING_FILE]
    asked.clear()
    report = run(settings, [host.decls], host.base, now=NOW + timedelta(minutes=30))
    assert report.outcome == "ok" and report.notifications["events"] == 0
    assert asked == []

    # A key about to expire: its file is read for the key's algorithm and comment, at every
    # run while it is in the notice window; the other file never.
    expires = (NOW + timedelta(days=5)).date()
    line = next(
        line for line in host.quality(EN_ONDERNEMING).read_text().splitlines() if "backup@" in line
    )
    key = line.strip().removeprefix("- ")
    host.edit(EN_ONDERNEMING, line, f'        - key: "{key}"\n          expires: {expires}')
    run(settings, [host.decls], host.base, now=NOW + timedelta(minutes=60))
    assert set(asked) == {ONDERNEMING_FILE}
    assert len(by_kind(host)["key-expiring"]) == 1
    asked.clear()
    run(settings, [host.decls], host.base, now=NOW + timedelta(minutes=90))
    assert asked == [ONDERNEMING_FILE]
    asked.clear()
    run(settings, [host.decls], host.base, now=NOW + timedelta(days=10))
    assert asked == []  # expired now: out of the window, nothing to say about it


def test_a_changed_contact_address_is_picked_up(host: Host, asked: list[str]) -> None:
    settings = host.settings()
    run(settings, [host.decls], host.base, now=NOW)
    asked.clear()
    host.edit(EN_ONDERNEMING, "- batch@onderneming.example", "- payroll@onderneming.example")
    run(settings, [host.decls], host.base, now=NOW + timedelta(minutes=30))
    assert asked == [ONDERNEMING_FILE]  # only the changed file
    contact = contact_book(settings).get(str(Q_ONDERNEMING))
    assert contact is not None and contact.emails == ("payroll@onderneming.example",)

    # The quality removes its file: its removal goes to the address it declared last.
    (host.quality(EN_ONDERNEMING)).rename(host.base / "away.yaml")
    run(settings, [host.decls], host.base, now=NOW + timedelta(minutes=60))
    (removed,) = (read_message(p) for p in by_kind(host)["channel-removed"])
    assert removed["To"] == "payroll@onderneming.example"


@pytest.mark.parametrize("written_by", ["the format without digests", "other checking code"])
def test_an_older_contact_book_is_read_and_upgraded(
    host: Host, asked: list[str], written_by: str
) -> None:
    settings = host.settings()
    run(settings, [host.decls], host.base, now=NOW)
    path = settings.work_dir / "contacts.json"
    book = json.loads(path.read_text("utf-8"))
    assert set(book["digests"]) == {str(Q_SECSOC), str(Q_ONDERNEMING)}
    # What an older run left: a stale address, and the contact of a quality removed since.
    book["contacts"][str(Q_ONDERNEMING)]["emails"] = ["old@onderneming.example"]
    # The removed quality's entry as books had them before quality identities: keyed by its
    # enterprise number, without a quality type.
    secsoc = {k: v for k, v in book["contacts"][str(Q_SECSOC)].items() if k != "quality_type"}
    book["contacts"][EN_THIRD] = secsoc | {
        "enterprise_number": EN_THIRD,
        "quality_name": "THIRD QUALITY",
        "emails": ["third@third.example"],
    }
    if written_by == "the format without digests":
        book = {"contacts": book["contacts"], "owed": book["owed"]}
    else:  # same digests, but the same file may read into another contact with other code
        book["code"] = "0:other"
    path.write_text(json.dumps(book), "utf-8")
    asked.clear()

    run(settings, [host.decls], host.base, now=NOW + timedelta(minutes=30))
    # Every file counts as changed...
    assert sorted(asked) == [SECSOC_FILE, ONDERNEMING_FILE]
    upgraded = contact_book(settings)
    onderneming = upgraded.get(str(Q_ONDERNEMING))
    assert onderneming is not None
    assert onderneming.emails == ("batch@onderneming.example",)
    # ...the removed quality's contact is kept, and the book is in the new format.
    third = upgraded.get(str(Q_THIRD))
    assert third is not None and third.emails == ("third@third.example",)
    assert set(json.loads(path.read_text("utf-8"))["digests"]) == {
        str(Q_SECSOC),
        str(Q_ONDERNEMING),
    }
    asked.clear()
    run(settings, [host.decls], host.base, now=NOW + timedelta(minutes=60))
    assert asked == []


def test_a_broken_later_file_of_a_quality_does_not_hide_its_contact(host: Host) -> None:
    # A second file claims the same number but is too broken to have a contact (an unknown
    # field): the contact is still the one the valid file declares, at every run.
    settings = host.settings()
    run(settings, [host.decls], host.base, now=NOW)
    text = host.quality(EN_ONDERNEMING).read_text("utf-8")
    broken = text.replace("batch@onderneming.example", "other@onderneming.example")
    (host.decls / "qualities" / "zz-copy.yaml").write_text(
        broken.replace("language: nl", "langue: nl"), "utf-8"
    )
    host.edit(EN_ONDERNEMING, "language: nl", "language: de")
    for minutes in (30, 60):
        run(settings, [host.decls], host.base, now=NOW + timedelta(minutes=minutes))
        contact = contact_book(settings).get(str(Q_ONDERNEMING))
        assert contact is not None
        assert (contact.language, contact.emails) == ("de", ("batch@onderneming.example",))
