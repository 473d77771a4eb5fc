"""A quality is its enterprise number and its quality type, end to end.

One enterprise may hold two qualities (here the social secretariat of the secsoc example next
to its NSSO employer quality): each passes the gate, gets its own sender number, account and
routing entry, and `status` and `show` tell them apart. A quality whose only channel is FTP
gets a sender number and a routing entry, but no account, keys or chroot on this host.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import (
    EN_SECSOC,
    EN_THIRD,
    EXAMPLES,
    NOW,
    Q_SECSOC,
    USER_SECSOC,
    Host,
    ssh_key,
)

from provisioner.plan import ChannelAction
from provisioner.quality_id import QualityId

KEYS = "etc/ssh/sftp-provisioner/authorized_keys"
PASSWD = "var/lib/extrausers/passwd"
ROUTING = "var/lib/sftp-gateway/routing.json"
CHROOTS = "srv/sftp"

SECOND = QualityId(EN_SECSOC, "social_secretariat")
USER_SECOND = "secsocsecond01"
FTP_ONLY = QualityId(EN_THIRD, "employer_nsso")
USER_FTP = "ftponlyuser01"


def secsoc_text() -> str:
    return (EXAMPLES / "qualities" / f"{EN_SECSOC}.yaml").read_text("utf-8")


def add_second_quality(host: Host) -> Path:
    """The secsoc enterprise's second quality: same number, another type, user and key."""
    text = secsoc_text()
    old_key = text.split("        - ssh-ed25519 ", 1)[1].split("\n", 1)[0]
    text = (
        text.replace("type: employer_nsso", "type: social_secretariat")
        .replace(USER_SECSOC, USER_SECOND)
        .replace("ssh-ed25519 " + old_key, ssh_key(5, "second@secsoc"))
    )
    path = host.decls / "qualities" / f"{EN_SECSOC}-social-secretariat.yaml"
    path.write_text(text, "utf-8")
    return path


def ftp_only_text() -> str:
    text = secsoc_text().replace('"0200.065.765"', '"0202.239.951"')
    text = text.replace(USER_SECSOC, USER_FTP).replace("SECRETARIAT SOCIAL EXEMPLE", "FTP ONLY")
    head, _, _ = text.partition("  channels:\n")
    return head + "  channels:\n    ftp:\n      applications:\n        - dmfa\n        - dimona\n"


def routing(host: Host) -> dict[str, dict[str, Any]]:
    senders: dict[str, dict[str, Any]] = json.loads((host.root / ROUTING).read_bytes())["senders"]
    return senders


def passwd_users(host: Host) -> set[str]:
    return {line.split(":", 1)[0] for line in (host.root / PASSWD).read_text().splitlines()}


def status_rows(host: Host) -> list[dict[str, Any]]:
    done = host.run("status", "--format", "json")
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)["channels"]
    return rows


def test_two_qualities_of_one_enterprise_end_to_end(host: Host) -> None:
    add_second_quality(host)
    validated = host.cli("validate", "examples")
    assert validated.returncode == 0, validated.stdout + validated.stderr

    result = host.apply()
    assert not result.plan.refused
    creates = [c for c in result.plan.channels if c.action is ChannelAction.CREATE]
    assert {c.qid for c in creates} >= {Q_SECSOC, SECOND}

    regs = host.snapshot().registrations
    first, second = regs[Q_SECSOC], regs[SECOND]
    assert (first.technical_user, second.technical_user) == (USER_SECSOC, USER_SECOND)
    assert first.sender != second.sender and first.uid != second.uid
    assert first.status == second.status == "active"

    assert {USER_SECSOC, USER_SECOND} <= passwd_users(host)
    assert (host.root / KEYS / USER_SECOND).is_file()
    assert (host.root / CHROOTS / USER_SECOND / "IN").is_dir()
    table = routing(host)
    mine = {s: e for s, e in table.items() if e["enterprise_number"] == EN_SECSOC}
    assert {(s, e["quality_type"], e["username"]) for s, e in mine.items()} == {
        (first.sender, "employer_nsso", USER_SECSOC),
        (second.sender, "social_secretariat", USER_SECOND),
    }

    rows = {r["username"]: r for r in status_rows(host) if r["enterprise_number"] == EN_SECSOC}
    assert {u: (r["quality_type"], r["sender_number"]) for u, r in rows.items()} == {
        USER_SECSOC: ("employer_nsso", first.sender),
        USER_SECOND: ("social_secretariat", second.sender),
    }
    text = host.run("status").stdout
    assert "quality type: employer_nsso" in text and "quality type: social_secretariat" in text
    shown = host.cli(
        "show", USER_SECOND, "--declarations", "examples", "--format", "json",
        "--root", "root", "--settings", "settings.yaml",
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert second.sender in shown.stdout and first.sender not in shown.stdout

    # Nothing is left to do, and the other quality of the enterprise is untouched when one
    # of them goes.
    assert not host.plan().has_changes
    (host.decls / "qualities" / f"{EN_SECSOC}-social-secretariat.yaml").unlink()
    host.apply()
    regs = host.snapshot().registrations
    assert (regs[SECOND].status, regs[Q_SECSOC].status) == ("removed", "active")
    assert USER_SECOND not in passwd_users(host) and USER_SECSOC in passwd_users(host)


def test_an_ftp_only_quality_gets_a_sender_number_and_no_account(host: Host) -> None:
    (host.decls / "qualities" / f"{EN_THIRD}.yaml").write_text(ftp_only_text(), "utf-8")
    plan = host.plan()
    (planned,) = [c for c in plan.channels if c.qid == FTP_ONLY]
    assert planned.action is ChannelAction.CREATE
    assert "no SFTP channel" in planned.reasons[0]

    host.apply()
    reg = host.snapshot().registrations[FTP_ONLY]
    assert reg.technical_user == USER_FTP
    assert reg.uid is None and reg.status == "active"
    entry = routing(host)[reg.sender]
    assert entry["username"] is None
    assert entry["channels"] == ["ftp"]
    assert [a["preferred_channel"] for a in entry["applications"]] == ["ftp", "ftp"]
    assert USER_FTP not in passwd_users(host)
    assert not (host.root / KEYS / USER_FTP).exists()
    assert not (host.root / CHROOTS / USER_FTP).exists()
    (row,) = [r for r in status_rows(host) if r["username"] == USER_FTP]
    assert (row["sender_number"], row["status"]) == (reg.sender, "active")
    assert not host.plan().has_changes

    # It adds an SFTP channel later: the same sender number, an account now.
    text = ftp_only_text().replace(
        "  channels:\n",
        "  channels:\n    sftp:\n      connection: internet\n      ssh_keys:\n"
        f"        - {ssh_key(6, 'ftp@third')}\n"
        "      certificate: ../certs/dupont-signature.pem\n"
        "      applications:\n        - dimona\n",
    ) + ("  preferred_channels:\n    dimona: sftp\n")
    (host.decls / "qualities" / f"{EN_THIRD}.yaml").write_text(text, "utf-8")
    assert not host.apply(now=NOW).plan.refused
    later = host.snapshot().registrations[FTP_ONLY]
    assert later.sender == reg.sender and later.uid is not None
    assert USER_FTP in passwd_users(host)
    assert routing(host)[reg.sender]["username"] == USER_FTP


def test_two_qualities_of_one_enterprise_never_share_a_notification_key(host: Host) -> None:
    from provisioner.notify.events import state_events
    from provisioner.state import StateSnapshot

    add_second_quality(host)
    host.apply()
    after = host.snapshot()
    events = state_events(StateSnapshot.empty(), after)
    mine = [e for e in events if e.enterprise_number == EN_SECSOC]
    assert {e.qid for e in mine} == {Q_SECSOC, SECOND}
    assert len({e.key for e in mine}) == 2
    assert all(str(e.qid) in e.key for e in mine)
