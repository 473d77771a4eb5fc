"""Names the host already uses are not technical users (issue 9, finding 9).

The gate refuses the shipped reserved names (tests/cases/technical-user-host-names); the
reconciler refuses, for that quality only, the configured SFTP group's name and any name the
host's own passwd or group database holds (through NSS), not counting the entries of the
extrausers files it wrote itself. The host accounts here are real: made with useradd/groupadd
for the test and deleted afterwards.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from conftest import (
    EN_SECSOC,
    Q_ONDERNEMING,
    Q_SECSOC,
    USER_SECSOC,
    Host,
    require,
    require_root,
)

from provisioner.hostaccounts import HostName, HostNames, listing_is_complete

KEYS = "etc/ssh/sftp-provisioner/authorized_keys"


def _tool(name: str) -> str:
    path = shutil.which(name) or f"/usr/sbin/{name}"
    require(shutil.which(path) is not None, f"needs {name} (package passwd)")
    return path


@pytest.fixture
def host_account() -> Iterator[str]:
    """A system account (and its group) on this host, made for the test."""
    require_root()
    name = f"hostacct{secrets.randbelow(10**6):06d}"
    subprocess.run(
        [_tool("useradd"), "--system", "--user-group", "--no-create-home",
         "--shell", "/usr/sbin/nologin", name],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield name
    finally:
        subprocess.run([_tool("userdel"), name], check=False, capture_output=True)


@pytest.fixture
def host_group() -> Iterator[str]:
    require_root()
    name = f"hostgrp{secrets.randbelow(10**6):06d}"
    subprocess.run([_tool("groupadd"), "--system", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run([_tool("groupdel"), name], check=False, capture_output=True)


def refused(host: Host) -> dict[str, tuple[str, ...]]:
    return {c.enterprise_number: c.reasons for c in host.apply().plan.refused}


def test_a_host_account_is_refused_for_that_quality_only(host: Host, host_account: str) -> None:
    host.edit(EN_SECSOC, f"technical_user: {USER_SECSOC}", f"technical_user: {host_account}")
    reasons = refused(host)
    assert set(reasons) == {EN_SECSOC}
    (why,) = reasons[EN_SECSOC]
    assert why.startswith(f"examples/qualities/{EN_SECSOC}.yaml:11:19: technical-user-host-account")
    assert f"'{host_account}' is already an account of this host (passwd database, uid " in why
    assert host.snapshot().registrations.keys() == {Q_ONDERNEMING}
    assert not (host.root / KEYS / host_account).exists()


def test_a_host_group_name_is_refused(host: Host, host_group: str) -> None:
    host.edit(EN_SECSOC, f"technical_user: {USER_SECSOC}", f"technical_user: {host_group}")
    (why,) = refused(host)[EN_SECSOC]
    assert f"'{host_group}' is already a group of this host (group database, gid " in why


def test_an_account_the_host_adds_later_holds_the_channel(host: Host) -> None:
    """Our own entry (in the extrausers files we wrote) is ours; a host entry of the same
    name that appears later wins the lookup, so the channel is refused and held."""
    require_root()
    host.apply()
    assert refused(host) == {}  # our own users are not host accounts
    subprocess.run(
        [_tool("useradd"), "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
         "--no-user-group", "--gid", "nogroup", USER_SECSOC],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        (why,) = refused(host)[EN_SECSOC]
        assert "technical-user-host-account" in why
        assert host.snapshot().registrations[Q_SECSOC].status == "degraded"
        assert (host.root / KEYS / USER_SECSOC).exists()  # its last good configuration
    finally:
        subprocess.run([_tool("userdel"), USER_SECSOC], check=False, capture_output=True)


def test_the_sftp_group_name_is_refused(host: Host) -> None:
    host.write_settings(sftp_group="channelgroup")
    host.edit(EN_SECSOC, f"technical_user: {USER_SECSOC}", "technical_user: ChannelGroup")
    (why,) = refused(host)[EN_SECSOC]
    assert "technical-user-reserved: 'ChannelGroup' is the name of this host's SFTP group" in why


def test_entries_of_our_extrausers_files_are_ours(host: Host) -> None:
    """The host's real databases are asked; an entry of our (here: --root prefixed) files
    counts as ours only when NSS reports the same id for it."""
    settings = host.settings()
    settings.extrausers_dir.mkdir(parents=True)
    passwd = settings.extrausers_dir / "passwd"
    assert HostNames(settings).owner("root") is not None
    passwd.write_text("root:x:0:0::/:/usr/sbin/nologin\n")
    assert HostNames(settings).owner("root") == HostName("group", 0)  # that one is not ours
    (settings.extrausers_dir / "group").write_text("root:x:0:\n")
    assert HostNames(settings).owner("root") is None
    passwd.write_text("root:x:123456:2900::/:/usr/sbin/nologin\n")
    hit = HostNames(settings).owner("root")
    assert hit is not None and (hit.database, hit.ident) == ("passwd", 0)
    assert HostNames(settings).owner(f"nosuchname{secrets.randbelow(10**6)}") is None


@pytest.mark.parametrize(
    ("line", "complete"),
    [
        ("passwd: files systemd", True),
        ("passwd:         files extrausers", True),
        ("passwd: compat [NOTFOUND=return] files  # comment", True),
        ("passwd: files ldap", False),
        ("passwd: sss files", False),
        ("group: ldap", True),  # no passwd line: glibc's default, files
    ],
)
def test_which_databases_a_listing_covers(line: str, complete: bool) -> None:
    """With only listable sources, new names are not looked up one by one (0.4 ms each: 4 s
    for the first apply of 10,000 channels); LDAP or SSSD may not list, so then they are."""
    assert listing_is_complete(f"# nsswitch.conf\n{line}\nnetgroup: nis\n", "passwd") is complete
