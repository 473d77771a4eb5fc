"""What a person reads of a channel the host knows: `show` with the host's state or ledger,
`status` as text, the certificate as the portal shows it, and dates on the Brussels clock.

The examples are copied into a temporary directory that is not a Git work tree (see the
`host` fixture), so `show` and `validate` must find the same declarations root there.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import EN_ONDERNEMING, EN_SECSOC, USER_ONDERNEMING, USER_SECSOC, Host
from fixtures_crypto import der, make_certificate
from ops_support import run

from provisioner.notify.message import _date_formatter
from provisioner.pending import status_message, synchronisation_from_ledger
from provisioner.quality_id import QualityId
from provisioner.schedule import next_slot

BRUSSELS = ZoneInfo("Europe/Brussels")
# Summer time began at 01:00 UTC that day: 23:30 UTC is 01:30 on 30 March in Brussels.
MIDNIGHT = datetime(2026, 3, 29, 23, 30, tzinfo=UTC)
PENDING = {
    "nl": "De configuratie voor de creatie van het kanaal is aan de gang",
    "fr": "La configuration pour la création du canal est en cours",
    "de": "Die Konfiguration für die Erstellung des Kanals ist im Gange",
}
NEXT_SYNC = {
    "nl": "Volgende synchronisatie",
    "fr": "Prochaine synchronisation",
    "de": "Nächste Synchronisierung",
}
HALF_HOUR = timedelta(minutes=30)


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provisioner", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def one_registered(host: Host) -> None:
    """The state of a run at MIDNIGHT that knew SECSOC only; ONDERNEMING was merged after it."""
    away = host.base / "later.yaml"
    host.quality(EN_ONDERNEMING).rename(away)
    report = run(host.settings(), [host.decls], host.base, now=MIDNIGHT, notify=False)
    assert report.outcome == "ok", report.errors
    away.rename(host.quality(EN_ONDERNEMING))


def next_syncs() -> set[str]:
    """The next :00/:30 as the overview writes it, either side of a slot boundary."""
    now = datetime.now(UTC)
    return {
        f"{next_slot(moment.astimezone(), HALF_HOUR).astimezone(BRUSSELS):%d/%m/%Y %H:%M}"
        for moment in (now, now + timedelta(seconds=20))
    }


def row(out: str, caption: str) -> str:
    """The value of the overview line whose caption is `caption`."""
    found = [line for line in out.splitlines() if line.startswith(caption + " ")]
    assert len(found) == 1, out
    return found[0].split(" : ", 1)[1] if " : " in found[0] else ""


# --- show: pending until the first sync --------------------------------------------------


@pytest.mark.parametrize("lang", ["nl", "fr", "de"])
def test_show_says_the_channel_is_being_created_in_the_contacts_language(
    host: Host, lang: str
) -> None:
    one_registered(host)
    host.edit(EN_ONDERNEMING, "language: nl", f"language: {lang}")
    url = host.settings().state_url
    done = cli(
        host.base, "show", USER_ONDERNEMING, "--declarations", "examples", "--state-url", url
    )
    assert done.returncode == 0, done.stderr
    assert PENDING[lang] in done.stdout
    assert row(done.stdout, NEXT_SYNC[lang]) in next_syncs()
    # No number is promised before the sync hands it out.
    assert (
        done.stdout.count(
            {
                "nl": "nog niet toegekend",
                "fr": "pas encore attribué",
                "de": "noch nicht zugewiesen",
            }[lang]
        )
        == 2
    )

    data = json.loads(
        cli(
            host.base,
            "show",
            USER_ONDERNEMING,
            "--declarations",
            "examples",
            "--state-url",
            url,
            "--format",
            "json",
        ).stdout
    )
    assert data["technical_user"]["status"] == "pending"
    # Machine format: UTC with its offset.
    assert data["technical_user"]["next_sync"].endswith("+00:00")


def test_a_synchronised_channel_shows_its_number_and_brussels_registration_date(
    host: Host,
) -> None:
    one_registered(host)
    done = host.run("show", USER_SECSOC, "--declarations", "examples")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert row(out, "Numéro d'expéditeur") == "100000"
    # Registered at 23:30 UTC on 29 March: 30 March in Brussels.
    assert row(out, "Date d'inscription") == "30/03/2026"
    assert row(out, "Statut") == "Actif"
    assert PENDING["fr"] not in out and "Prochaine synchronisation" not in out
    data = json.loads(
        host.run("show", USER_SECSOC, "--declarations", "examples", "--format", "json").stdout
    )
    assert data["technical_user"]["registered_at"] == "2026-03-29T23:30:00+00:00"
    assert data["technical_user"]["registration_date"] == "2026-03-30"


def test_a_missing_state_is_an_error_naming_it_and_is_not_created(host: Host) -> None:
    missing = host.base / "nowhere" / "state.db"
    done = cli(
        host.base,
        "show",
        USER_SECSOC,
        "--declarations",
        "examples",
        "--state-url",
        f"sqlite:///{missing}",
    )
    assert done.returncode == 1
    assert str(missing) in done.stderr and "Traceback" not in done.stderr
    assert not missing.parent.exists()


def write_ledger(path: Path, next_sync: datetime) -> Path:
    document = {
        "format": "sftp-provisioner-ledger",
        "version": 1,
        "generated_at": (next_sync - HALF_HOUR).isoformat(),
        "host": "sftp-a",
        "revision": None,
        "next_sync": next_sync.isoformat(),
        "qualities": [
            {
                "enterprise_number": EN_SECSOC,
                "quality_type": "employer_nsso",
                "sender_number": "101380",
                "technical_user": USER_SECSOC,
                "status": "active",
                "registered_on": "2026-03-30",
                "status_since": MIDNIGHT.isoformat(),
            }
        ],
        "usernames": [{"username": "PORTALUSR", "state": "reserved"}],
    }
    path.write_text(json.dumps(document), "utf-8")
    return path


def test_show_with_the_ledger_ci_has(host: Host) -> None:
    upcoming = next_slot(datetime.now(UTC), HALF_HOUR) + HALF_HOUR
    ledger = write_ledger(host.base / "ledger.json", upcoming)
    done = cli(
        host.base, "show", USER_ONDERNEMING, "--declarations", "examples", "--ledger", str(ledger)
    )
    assert done.returncode == 0, done.stderr
    assert PENDING["nl"] in done.stdout
    assert (
        row(done.stdout, "Volgende synchronisatie")
        == f"{upcoming.astimezone(BRUSSELS):%d/%m/%Y %H:%M}"
    )

    known = cli(
        host.base, "show", USER_SECSOC, "--declarations", "examples", "--ledger", str(ledger)
    )
    assert known.returncode == 0, known.stderr
    assert row(known.stdout, "Numéro d'expéditeur") == "101380"
    assert row(known.stdout, "Date d'inscription") == "30/03/2026"
    assert PENDING["fr"] not in known.stdout

    # Not a ledger: an error naming the file, never a traceback.
    (host.base / "bogus.json").write_text('{"format": "something else"}', "utf-8")
    bad = cli(
        host.base, "show", USER_SECSOC, "--declarations", "examples", "--ledger", "bogus.json"
    )
    assert bad.returncode == 1 and "bogus.json" in bad.stderr and "Traceback" not in bad.stderr


def test_a_stale_ledger_announces_the_next_slot_not_a_past_one(tmp_path: Path) -> None:
    ledger = write_ledger(tmp_path / "ledger.json", datetime(2026, 3, 29, 23, 0, tzinfo=UTC))
    found = synchronisation_from_ledger(
        ledger, QualityId(EN_ONDERNEMING, "employer_nsso"), now=MIDNIGHT + timedelta(minutes=5)
    )
    assert found.pending and found.registration is None
    assert found.next_sync == datetime(2026, 3, 30, 0, 0, tzinfo=UTC)


# --- the certificate as the portal shows it -------------------------------------------------


def test_issuer_in_rfc_4514_order_serial_in_hex_and_expiry_in_brussels(host: Host) -> None:
    # DER order C, CN, SERIALNUMBER, like the Belgian Citizen CA; it expires at 23:30 UTC on
    # 30 March 2030, which is 00:30 on 31 March in Brussels (summer time starts later that day).
    expires = datetime(2030, 3, 30, 23, 30, tzinfo=UTC)
    certificate = make_certificate(not_after=expires)
    assert [a.rfc4514_string() for a in certificate.issuer] == [
        "C=BE",
        "CN=Citizen CA",
        "2.5.4.5=200803",
    ]
    (host.decls / "certs" / "expeditortest-signature.cer").write_bytes(der(certificate))
    done = cli(host.base, "show", "examples/qualities/0403170701.yaml")
    assert done.returncode == 0, done.stderr
    assert row(done.stdout, "Leverancier van het certificaat") == (
        "SERIALNUMBER=200803, CN=Citizen CA, C=BE"
    )
    assert row(done.stdout, "Reeksnummer (hexadecimaal formaat)") == (
        "10 00 00 00 00 00 0b 7a 21 df 5c 29"
    )
    assert row(done.stdout, "Reeksnummer (decimaal formaat)") == str(0x1000000000000B7A21DF5C29)
    assert row(done.stdout, "Vervaldatum") == "31/03/2030"
    data = json.loads(
        cli(host.base, "show", "examples/qualities/0403170701.yaml", "--format", "json").stdout
    )
    cert = data["channels"][0]["certificate"]
    assert cert["not_after"] == "2030-03-30T23:30:00+00:00" and cert["expiry_date"] == "2030-03-31"


def test_notification_dates_are_brussels_dates() -> None:
    assert _date_formatter("nl")(MIDNIGHT) == "30-03-2026"
    assert _date_formatter("fr")(MIDNIGHT) == "30/03/2026"
    assert _date_formatter("de")(datetime(2026, 10, 24, 22, 30, tzinfo=UTC)) == "25.10.2026"


# --- the same declarations root as validate -------------------------------------------------


def test_show_and_validate_agree_on_a_copy_of_the_examples_outside_git(host: Host) -> None:
    assert not any((p / ".git").exists() for p in (host.decls, *host.decls.parents))
    for cwd, target in (
        (host.decls, "qualities/0403170701.yaml"),
        (host.base, "examples/qualities/0403170701.yaml"),
    ):
        directory = "." if cwd == host.decls else "examples"
        valid = cli(cwd, "validate", directory)
        assert valid.returncode == 0, valid.stdout
        shown = cli(cwd, "show", target, "--declarations", directory)
        assert shown.returncode == 0, shown.stderr
        assert "outside" not in shown.stderr
        assert "bestand: keys/expdemo-payroll-2026.pub" in shown.stdout
    # From the directory of the file itself, `validate .` and `show` both refuse ../keys.
    inner = host.decls / "qualities"
    assert cli(inner, "validate", ".").returncode == 1
    refused = cli(inner, "show", "0403170701.yaml")
    assert refused.returncode == 1 and "path-outside-root" in refused.stderr


# --- status ---------------------------------------------------------------------------------


def test_a_channel_applied_by_hand_after_the_last_run_was_synchronised_then(host: Host) -> None:
    # `apply` records no run, but it synchronised the channel: LAST SYNC is not "never".
    applied = host.run("apply", "--no-diff")
    assert applied.returncode == 0, applied.stderr
    data = json.loads(host.run("status", "--format", "json").stdout)
    for row in data["channels"]:
        assert row["changed_at"] is not None
        assert row["last_sync"] == row["changed_at"], row
    line = next(ln for ln in host.run("status").stdout.splitlines() if USER_SECSOC in ln)
    assert "never" not in line, line


def test_status_has_a_header_and_its_last_sync_is_the_hosts_last_run(host: Host) -> None:
    one_registered(host)
    # An hour later a run applies ONDERNEMING; SECSOC does not change.
    later = MIDNIGHT + timedelta(hours=1)
    run(host.settings(), [host.decls], host.base, now=later, notify=False)

    data = json.loads(host.run("status", "--format", "json").stdout)
    rows = {r["username"]: r for r in data["channels"]}
    secsoc = rows[USER_SECSOC]
    assert secsoc["changed_at"] == MIDNIGHT.isoformat()
    assert secsoc["last_sync"] == later.isoformat()  # machine format: UTC with its offset

    text = host.run("status")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert re.fullmatch(
        r"host \S+: last run 2026-03-30 02:30 \(ok\), next run \d{4}-\d\d-\d\d \d\d:[03]0; "
        r"times in Europe/Brussels \(CES?T\)",
        lines[0],
    ), lines[0]
    assert lines[1].split() == [
        "SENDER",
        "USERNAME",
        "ENTERPRISE",
        "STATUS",
        "REGISTERED",
        "CHANGED",
        "LAST",
        "SYNC",
        "NEXT",
        "SYNC",
    ]
    line = next(line for line in lines if USER_SECSOC in line)
    # Registered and changed at 01:30 on 30 March in Brussels, last run at 02:30.
    assert line.split()[4:9] == ["2026-03-30", "2026-03-30", "01:30", "2026-03-30", "02:30"], line

    # The sentence of a status is a person's too.
    assert (status_message("removed", MIDNIGHT, None) or "").startswith(
        "removed since 2026-03-30 01:30 CEST:"
    )
