"""End to end: a REAL `provisioner apply`, the REAL OpenSSH server, REAL SFTP clients.

The declarations are written by the tests (fresh keys from ssh-keygen, a signing certificate
per sender), applied with ``python -m provisioner apply DECLS --settings FILE`` into a test
area under /srv, and sshd runs on the drop-in that apply rendered. Every sender scenario runs
with OpenSSH's ``sftp -b`` and with paramiko (what payroll software embeds).

Needs root, openssh-server/-client and libnss-extrausers: skipped without them, FAILED under
CI=true. What it changes on the machine and how it is undone: see tests/e2e_support.py.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import re
import secrets
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

pytest.register_assert_rewrite("sshd_harness", "e2e_support")

from e2e_support import (  # noqa: E402
    CLIENTS,
    DOWNLOAD_DIRS,
    HOST,
    JAIL_ROOT,
    UPLOAD_DIRS,
    Gateway,
    Refused,
    Sender,
    enterprise_number,
    file_name,
    listed_names,
    login_listing,
    logins,
    make_sender,
    mode_of,
    openssh_sftp,
    paramiko_session,
    provisioned_gateway,
)
from sshd_harness import (  # noqa: E402
    assert_root_owned_path,
    free_port,
    generate_keypair,
    getent,
    make_dir,
    paramiko_transport,
    refused_local_forward,
    ssh_argv,
    ssh_command,
    sshd_effective,
    write_file,
)

pytest_plugins = ("sshd_harness",)
pytestmark = [pytest.mark.sshd, pytest.mark.root]

# What every technical user runs: refused attribute changes (chmod, utime), umask, no links.
FORCE_COMMAND = (
    "internal-sftp -l INFO -f AUTHPRIV -u 0027 -P setstat,fsetstat,lsetstat,symlink,hardlink"
)
TOKEN = secrets.token_hex(3)
# Technical users: 8-20 letters and digits, case-sensitive.
ALICE = f"ExpAlice{TOKEN}"  # the main sender (its internal-sftp log is captured)
BOB = f"bobsender{TOKEN}"  # another sender: must stay invisible to ALICE
PAYROLL = f"payroll{TOKEN}"  # an RSA 2048 payroll client (legacy ssh-rsa scenario)
RESTRICT = f"restrict{TOKEN}"  # four keys: kept, from=, expired, removed
ROTATE = f"rotate{TOKEN}"  # key rotation
LEAVER = f"leaver{TOKEN}"  # removes its registration: archived
NEWCOMER = f"newcomer{TOKEN}"  # declared later


def _senders(work: Path) -> list[Sender]:
    ed = ("ed25519", None)
    return [
        make_sender(work, enterprise_number(2_000_001), ALICE),
        make_sender(work, enterprise_number(2_000_002), BOB),
        make_sender(work, enterprise_number(2_000_003), PAYROLL, key_types=[("rsa", 2048)]),
        make_sender(work, enterprise_number(2_000_004), RESTRICT, key_types=[ed, ed, ed, ed]),
        make_sender(work, enterprise_number(2_000_005), ROTATE),
        make_sender(work, enterprise_number(2_000_006), LEAVER),
    ]


@pytest.fixture(scope="module")
def gw(sftp_area: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    decls = tmp_path_factory.mktemp("declarations")
    with provisioned_gateway(sftp_area, decls, _senders, capture_syslog_of=[ALICE]) as gateway:
        yield gateway


def _uid(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def _gateway_gid(gw: Gateway) -> int:
    return int(gw.settings["gateway_gid"])


def _place_return_file(gw: Gateway, user: str, name: str, directory: str = "OUT") -> bytes:
    """What the gateway does: a file (root, gateway group, 0644) in the sender's OUT."""
    data = f"<ack for={user} nonce={secrets.token_hex(8)}/>\n".encode()
    write_file(gw.chroot(user) / directory / name, data, 0o644, 0, _gateway_gid(gw))
    return data


def _declaration(user: str, seq: int) -> bytes:
    return f'<?xml version="1.0"?>\n<DmfA user="{user}" seq="{seq}"/>\n'.encode()


# =========================================================================================
# the provisioned host
# =========================================================================================


def test_first_apply_provisions_every_sender(gw: Gateway) -> None:
    status = gw.status()
    assert set(status) == set(gw.senders)
    numbers = [row["sender_number"] for row in status.values()]
    assert len(set(numbers)) == len(numbers)
    assert all(len(n) == 6 and n.isdigit() for n in numbers), numbers
    gateway_gid = _gateway_gid(gw)
    for user in gw.senders:
        row = status[user]
        assert row["status"] == "active", row
        assert row["message"] is None
        entry = getent("passwd", user)
        assert entry is not None and entry.endswith(":/:/usr/sbin/nologin"), entry
        assert (getent("shadow", user) or "").startswith(f"{user}:*:")
        uid = _uid(user)
        chroot = gw.chroot(user)
        assert_root_owned_path(chroot)  # what sshd demands of a ChrootDirectory
        assert mode_of(chroot) == (0, 0, 0o755)
        assert mode_of(chroot / "dev") == (0, 0, 0o755)
        for name in (*UPLOAD_DIRS, *DOWNLOAD_DIRS):
            assert mode_of(chroot / name) == (uid, gateway_gid, 0o2770), name
        assert mode_of(gw.keys_file(user)) == (0, 0, 0o644)
        assert f"restrict {gw.senders[user].keys[0].line}" in gw.keys_file(user).read_text()
    assert mode_of(gw.dropin) == (0, 0, 0o644)
    # the rsyslog drop-in names one socket per chroot (rsyslog itself is not run here)
    rsyslog = Path(gw.settings["rsyslog_dropin"]).read_text()
    for user in gw.senders:
        assert f'Socket="{gw.chroot(user)}/dev/log"' in rsyslog
    # idempotent: a second run changes nothing and does not reload sshd
    mark = gw.sshd.mark()
    out = gw.apply()
    assert "Applied 0 change(s)." in out.stdout
    assert "sshd reloaded" not in out.stdout
    assert "Received SIGHUP" not in gw.sshd.log(mark)
    code, _ = gw.plan()
    assert code == 0


def test_sshd_T_for_every_provisioned_user(gw: Gateway) -> None:
    """``sshd -T -C user=…,host=localhost,addr=127.0.0.1``: the effective settings of a
    connection, for every provisioned user, with the main config that includes the drop-in."""
    keys_dir = gw.settings["keys_dir"]
    active = [user for user, row in gw.status().items() if row["status"] == "active"]
    assert set(gw.senders) <= set(active) | {LEAVER, NEWCOMER}
    for user in active:
        eff = sshd_effective(gw.sshd.config_path, user, host="localhost", addr="127.0.0.1")
        assert eff["chrootdirectory"] == f"{gw.chroot_base}/%u", user
        assert eff["forcecommand"] == FORCE_COMMAND, user
        assert eff["authenticationmethods"] == "publickey", user
        assert eff["pubkeyauthentication"] == "yes"
        assert eff["passwordauthentication"] == "no"
        assert eff["kbdinteractiveauthentication"] == "no"
        assert eff["authorizedkeysfile"] == f"{keys_dir}/%u"
        for keyword in ("permittty", "allowtcpforwarding", "x11forwarding", "permittunnel"):
            assert eff[keyword] == "no", (user, keyword)
        assert eff["disableforwarding"] == "yes"
        # the listener rendered from the settings is live (next to the harness' admin port)
        assert str(gw.port) in eff["port"].split("\n")
        # the %u of ChrootDirectory resolves to a directory sshd accepts
        assert_root_owned_path(Path(eff["chrootdirectory"].replace("%u", user)))
    # not a member of the SFTP group: the Match block does not apply
    other = sshd_effective(gw.sshd.config_path, "root")
    assert other["chrootdirectory"] == "none" and other["forcecommand"] == "none"


# =========================================================================================
# login
# =========================================================================================


@pytest.mark.parametrize("client", CLIENTS)
def test_declared_key_logs_in_undeclared_key_refused(gw: Gateway, client: str) -> None:
    alice, bob = gw.senders[ALICE], gw.senders[BOB]
    stranger = generate_keypair(gw.work / f"stranger-{client}", "ed25519", comment="stranger")
    mark = gw.sshd.mark()
    assert login_listing(gw, client, ALICE, alice.keys[0]) == JAIL_ROOT
    gw.sshd.wait_for_log(
        rf"Accepted publickey for {ALICE} from 127\.0\.0\.1 .*"
        rf"{re.escape(alice.keys[0].fingerprint)}",
        since=mark,
    )
    with pytest.raises(Refused):
        login_listing(gw, client, ALICE, stranger)
    # a declared key opens its own account only
    with pytest.raises(Refused):
        login_listing(gw, client, ALICE, bob.keys[0])
    with pytest.raises(Refused):
        login_listing(gw, client, f"nosuchuser{TOKEN}", alice.keys[0])
    assert f"Accepted publickey for {ALICE} from 127.0.0.1 port" in gw.sshd.log(mark)
    assert len(re.findall(r"Accepted publickey", gw.sshd.log(mark))) == 1


def _offered_methods(gw: Gateway, user: str) -> list[str]:
    """What the server offers `user` before any authentication (the "none" method)."""
    sock = socket.create_connection((HOST, gw.port), timeout=15)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=15)
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            transport.auth_none(user)
        return sorted(refused.value.allowed_types)
    finally:
        transport.close()


def test_technical_usernames_cannot_be_told_from_unknown_ones(gw: Gateway) -> None:
    # With passwords on for other logins, an unknown name was offered "password" and a
    # technical user only "publickey": the answer revealed which usernames exist.
    assert _offered_methods(gw, ALICE) == ["publickey"]
    assert _offered_methods(gw, f"nosuchuser{TOKEN}") == ["publickey"]


# =========================================================================================
# the exchange of files
# =========================================================================================


def _upload_set(gw: Gateway, sender: Sender, number: str, seq: int) -> dict[str, bytes]:
    """FI (declaration), FS (its detached CMS signature), GO (empty, starts processing) per
    upload directory, named with the sender number; GO last, as the gateway expects."""
    files: dict[str, bytes] = {}
    for offset, directory in enumerate(UPLOAD_DIRS):
        data = _declaration(sender.user, seq + offset)
        for kind, content in (("FI", data), ("FS", sender.sign(data)), ("GO", b"")):
            files[f"{directory}/{file_name(kind, number, directory, seq + offset)}"] = content
    return files


@pytest.mark.parametrize("client", CLIENTS)
def test_sender_uploads_lists_downloads_and_deletes(gw: Gateway, client: str) -> None:
    alice = gw.senders[ALICE]
    key = alice.keys[0]
    number = gw.sender_number(alice)
    seq = 1 if client == "openssh" else 11
    files = _upload_set(gw, alice, number, seq)
    assert all(f".{number}." in name for name in files)
    day = dt.datetime.now(dt.UTC).date()
    back = f"FO.ACRF.999999.{day:%Y%m%d}.{seq:05d}.R.1.1"
    returned = _place_return_file(gw, ALICE, back)
    syslog = gw.syslogs[ALICE]

    if client == "openssh":
        local = make_dir(gw.work / f"up-{client}", 0o700)
        download = make_dir(gw.work / f"down-{client}", 0o700)
        commands = []
        for remote, content in files.items():
            source = local / remote.replace("/", "_")
            source.write_bytes(content)
            commands.append(f"put {source} /{remote}")
        commands += [
            "ls -1 /OUT",
            f"get /OUT/{back} {download}/",
            f"rm /OUT/{back}",
            "ls -1 /OUT",
            "ls -1 /IN",
        ]
        out = openssh_sftp(gw, ALICE, key, commands)
        assert out.returncode == 0, out.stderr
        listings = out.stdout.split("sftp> ls -1 ")
        assert back in listed_names(listings[1])
        assert back not in listed_names(listings[2])
        assert {n.split("/")[1] for n in files if n.startswith("IN/")} <= set(
            listed_names(listings[3])
        )
        assert (download / back).read_bytes() == returned
    else:
        with paramiko_session(gw, ALICE, key) as sftp:
            for remote, content in files.items():
                with sftp.open(f"/{remote}", "wb") as fh:
                    fh.write(content)
            assert back in sftp.listdir("/OUT")
            with sftp.open(f"/OUT/{back}", "rb") as fh:
                assert fh.read() == returned
            sftp.remove(f"/OUT/{back}")
            assert back not in sftp.listdir("/OUT")
            for directory in UPLOAD_DIRS:
                listed = set(sftp.listdir(f"/{directory}"))
                assert {n.split("/")[1] for n in files if n.startswith(f"{directory}/")} <= listed

    # what the gateway finds: the exact bytes, owned by the sender, in the gateway's group
    uid, gateway_gid = _uid(ALICE), _gateway_gid(gw)
    for remote, content in files.items():
        path = gw.chroot(ALICE) / remote
        assert path.read_bytes() == content, remote
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (uid, gateway_gid), remote
        assert stat.S_ISREG(st.st_mode)
    assert not (gw.chroot(ALICE) / "OUT" / back).exists()
    # the audit trail of internal-sftp reaches the log socket in the rendered <chroot>/dev
    first = next(iter(files))
    syslog.wait_for(rf'open "/{re.escape(first)}" flags WRITE,CREATE,TRUNCATE')
    syslog.wait_for(rf'remove name "/OUT/{re.escape(back)}"')
    # the gateway consumes the uploads
    for remote in files:
        (gw.chroot(ALICE) / remote).unlink()


@pytest.mark.parametrize("client", CLIENTS)
def test_sender_cannot_write_outside_its_exchange_directories(gw: Gateway, client: str) -> None:
    """The jail's root and dev/ are root's: no file, directory, removal or rename there. The
    sender owns its six exchange directories (it must delete in OUT*), so it may also write
    into OUT* - accepted by design (render.py), the gateway only reads what it put there."""
    key = gw.senders[ALICE].keys[0]
    local = gw.work / f"stray-{client}"
    local.write_bytes(b"stray")
    stray_out = f"stray-{client}"
    if client == "openssh":
        for command in (
            f"put {local} /stray",
            "mkdir /NEWDIR",
            f"put {local} /dev/stray",
            "rmdir /IN",
            "rename /OUT /OUT2",
            "rm /dev",
            "chmod 777 /",
        ):
            out = openssh_sftp(gw, ALICE, key, [command])
            assert out.returncode != 0, command
            assert re.search(r"Permission denied|Couldn't|Failure", out.stderr), (command, out)
        out = openssh_sftp(gw, ALICE, key, [f"put {local} /OUT/{stray_out}"])
        assert out.returncode == 0, out.stderr
    else:
        with paramiko_session(gw, ALICE, key) as sftp:
            with pytest.raises(PermissionError):
                sftp.open("/stray", "wb")
            with pytest.raises(PermissionError):
                sftp.mkdir("/NEWDIR")
            with pytest.raises(PermissionError):
                sftp.open("/dev/stray", "wb")
            with pytest.raises(OSError):
                sftp.rmdir("/IN")
            with pytest.raises(PermissionError):
                sftp.rename("/OUT", "/OUT2")
            with pytest.raises(OSError):
                sftp.rmdir("/dev")
            with pytest.raises(PermissionError):
                sftp.chmod("/", 0o777)
            with sftp.open(f"/OUT/{stray_out}", "wb") as fh:
                fh.write(b"stray")
    chroot = gw.chroot(ALICE)
    assert sorted(p.name for p in chroot.iterdir()) == JAIL_ROOT
    assert mode_of(chroot) == (0, 0, 0o755)
    assert not any(p.name.startswith("stray") for p in (chroot / "dev").iterdir())
    (chroot / "OUT" / stray_out).unlink()


@pytest.mark.parametrize("client", CLIENTS)
def test_sender_sees_only_its_own_jail(gw: Gateway, client: str) -> None:
    key = gw.senders[ALICE].keys[0]
    secret = f"FI.DMFA.{gw.sender_number(gw.senders[BOB])}.20261129.00001.R.1.1"
    write_file(gw.chroot(BOB) / "IN" / secret, b"bob's payroll", 0o640, _uid(BOB), 0)
    bob_path = f"/../{BOB}/IN/{secret}"
    absolute_bob = str(gw.chroot(BOB) / "IN" / secret)
    link = f"/IN/link-{client}"
    try:
        if client == "openssh":
            out = openssh_sftp(
                gw, ALICE, key, ["ls -1 /", "cd ..", "pwd", "cd /IN/../..", "pwd", "ls -1 ../.."]
            )
            assert out.returncode == 0, out.stderr
            parts = out.stdout.split("sftp> ")
            assert listed_names(parts[1].split("\n", 1)[1]) == JAIL_ROOT
            assert "Remote working directory: /\n" in parts[3]
            assert "Remote working directory: /\n" in parts[5]
            assert listed_names(parts[6].split("\n", 1)[1]) == JAIL_ROOT
            for command in (
                "get /etc/passwd /dev/null",
                "ls /srv",
                f"get {bob_path} /dev/null",
                f"get {absolute_bob} /dev/null",
                f"ls /../{BOB}",
            ):
                out = openssh_sftp(gw, ALICE, key, [command])
                assert out.returncode != 0, command
                assert "not found" in out.stderr, (command, out.stderr)
            # Creating links is refused (internal-sftp -P symlink,hardlink): seen from the
            # host, a link in IN to /etc/passwd would point at the real file.
            out = openssh_sftp(gw, ALICE, key, [f"symlink /etc/passwd {link}"])
            assert out.returncode != 0, out.stdout
            assert "Permission denied" in out.stderr, out.stderr
            source = gw.chroot(ALICE) / "IN" / "hardlink-source"
            source.write_text("x")
            try:
                out = openssh_sftp(gw, ALICE, key, [f"ln /IN/{source.name} {link}"])
                assert out.returncode != 0, out.stdout
                # A denied extension is not even advertised to the client.
                assert "does not support hardlink" in out.stderr, out.stderr
                assert not os.path.lexists(gw.chroot(ALICE) / link.lstrip("/"))
            finally:
                source.unlink()
        else:
            with paramiko_session(gw, ALICE, key) as sftp:
                assert sorted(sftp.listdir("/")) == JAIL_ROOT
                assert sftp.normalize("..") == "/"
                assert sftp.normalize("/IN/../../..") == "/"
                assert sorted(sftp.listdir("/../..")) == JAIL_ROOT
                for path in ("/etc/passwd", "/srv", bob_path, absolute_bob, f"/../{BOB}"):
                    with pytest.raises(FileNotFoundError):
                        sftp.stat(path)
                with pytest.raises(PermissionError):
                    sftp.symlink("/etc/passwd", link)
        assert not os.path.lexists(gw.chroot(ALICE) / link.lstrip("/"))
    finally:
        (gw.chroot(BOB) / "IN" / secret).unlink()
        (gw.chroot(ALICE) / link.lstrip("/")).unlink(missing_ok=True)


@pytest.mark.parametrize("client", CLIENTS)
def test_no_shell_no_command_no_tty(gw: Gateway, client: str) -> None:
    key = gw.senders[ALICE].keys[0]
    mark = gw.sshd.mark()
    if client == "openssh":
        out = ssh_command(ALICE, key.private, gw.port, "id; echo PWNED", host=HOST)
        assert "uid=" not in out.stdout + out.stderr and "PWNED" not in out.stdout
        out = ssh_command(ALICE, key.private, gw.port, None, tty=True, host=HOST)
        assert "PTY allocation request failed" in out.stderr
        assert "uid=" not in out.stdout
    else:
        transport = paramiko_transport(ALICE, key.private, gw.port, host=HOST)
        try:
            chan = transport.open_session(timeout=10)
            chan.settimeout(10)
            chan.exec_command("id; echo PWNED")
            chan.shutdown_write()  # internal-sftp, not a shell, reads stdin: EOF ends it
            output = b""
            while chunk := chan.recv(4096):
                output += chunk
            assert b"uid=" not in output and b"PWNED" not in output
            chan.close()
            chan = transport.open_session(timeout=10)
            chan.settimeout(10)
            with pytest.raises(paramiko.SSHException):
                chan.get_pty()
        finally:
            transport.close()
    # whatever was asked for, the server ran internal-sftp
    gw.sshd.wait_for_log(
        rf"Starting session: forced-command \(config\) '{re.escape(FORCE_COMMAND)}' for {ALICE}",
        since=mark,
    )
    assert "Starting session: command" not in gw.sshd.log(mark)
    assert "Starting session: shell" not in gw.sshd.log(mark)


@pytest.mark.parametrize("client", CLIENTS)
def test_no_port_forwarding(gw: Gateway, client: str) -> None:
    key = gw.senders[ALICE].keys[0]
    if client == "paramiko":
        transport = paramiko_transport(ALICE, key.private, gw.port, host=HOST)
        try:
            with pytest.raises(paramiko.ChannelException):
                transport.open_channel(
                    "direct-tcpip", (HOST, gw.sshd.port), ("127.0.0.1", 40000), timeout=10
                )
            with pytest.raises(paramiko.SSHException):
                transport.request_port_forward(HOST, 0)
        finally:
            transport.close()
        return
    lport = free_port()
    out = ssh_command(
        ALICE,
        key.private,
        gw.port,
        None,
        host=HOST,
        options=["-N", "-o", "ExitOnForwardFailure=yes", "-R", f"{HOST}:{lport}:{HOST}:22"],
        timeout=20,
    )
    assert out.returncode != 0
    assert "remote port forwarding failed" in out.stderr
    # a local forward: the client listens, but the server refuses every channel
    argv = ssh_argv(
        ALICE,
        key.private,
        gw.port,
        ["-o", "LogLevel=INFO", "-N", "-L", f"{HOST}:{lport}:{HOST}:{gw.sshd.port}"],
        host=HOST,
    )
    err = refused_local_forward(argv, HOST, lport)
    assert "administratively prohibited" in err


def test_sender_drift_on_its_directories_is_repaired(gw: Gateway) -> None:
    """The sender owns its exchange directories but cannot chmod them (setstat is refused);
    a mode changed on the host all the same is put back by the next apply."""
    key = gw.senders[ALICE].keys[0]
    path = gw.chroot(ALICE) / "INTEST-S"
    with paramiko_session(gw, ALICE, key) as sftp, pytest.raises(PermissionError):
        sftp.chmod("/INTEST-S", 0o777)
    assert mode_of(path) == (_uid(ALICE), _gateway_gid(gw), 0o2770)
    os.chmod(path, 0o777)
    code, plan = gw.plan()
    assert code == 2
    assert [c["path"] for c in plan["changes"]] == [str(path)]
    gw.apply()
    assert mode_of(path) == (_uid(ALICE), _gateway_gid(gw), 0o2770)


# =========================================================================================
# changes of the declarations, after the next apply
# =========================================================================================


def test_removed_restricted_and_expired_keys_refused_after_apply(gw: Gateway) -> None:
    sender = gw.senders[RESTRICT]
    kept, restricted, expired, removed = sender.keys
    for key in sender.keys:
        assert logins(gw, RESTRICT, key) == {"openssh": True, "paramiko": True}

    sender.key_options = {
        1: {"from": ["192.0.2.0/24", "198.51.100.7"]},  # 127.0.0.1 is not in it
        2: {"expires": "2020-01-01"},
    }
    sender.keys = [kept, restricted, expired]
    gw.declare(sender)
    # declared, not applied yet: nothing changed on the host
    assert logins(gw, RESTRICT, removed) == {"openssh": True, "paramiko": True}

    gw.apply()  # exit 0: an expired key is a warning of the declaration, not a refusal
    keys_text = gw.keys_file(RESTRICT).read_text()
    # written in normalised form (issue 9): str(ip_network(v, strict=True))
    assert f'restrict,from="192.0.2.0/24,198.51.100.7/32" {restricted.line}' in keys_text
    assert re.search(
        r'restrict,expiry-time="2020010[12]\d{4}Z" ' + re.escape(expired.line), keys_text
    )
    assert removed.line not in keys_text

    mark = gw.sshd.mark()
    assert logins(gw, RESTRICT, kept) == {"openssh": True, "paramiko": True}
    for key in (restricted, expired, removed):
        assert logins(gw, RESTRICT, key) == {"openssh": False, "paramiko": False}, key.line
    log = gw.sshd.log(mark)
    assert "not from a permitted host" in log
    assert re.search(r"expired|Refused by key options", log)
    for key in (restricted, expired, removed):
        assert not re.search(
            rf"Accepted publickey for {RESTRICT} .*{re.escape(key.fingerprint)}", log
        )
    assert gw.status()[RESTRICT]["status"] == "active"


def test_key_rotation(gw: Gateway) -> None:
    sender = gw.senders[ROTATE]
    old = sender.keys[0]
    new = generate_keypair(gw.work / f"{ROTATE}-new", "ed25519", comment="payroll-2027")
    assert logins(gw, ROTATE, new) == {"openssh": False, "paramiko": False}

    sender.keys = [old, new]
    gw.declare(sender)
    gw.apply()
    assert logins(gw, ROTATE, old) == {"openssh": True, "paramiko": True}
    assert logins(gw, ROTATE, new) == {"openssh": True, "paramiko": True}

    sender.keys = [new]
    gw.declare(sender)
    gw.apply()
    assert logins(gw, ROTATE, old) == {"openssh": False, "paramiko": False}
    assert logins(gw, ROTATE, new) == {"openssh": True, "paramiko": True}


def test_removed_quality_is_refused_and_its_data_archived_intact(gw: Gateway) -> None:
    sender = gw.senders[LEAVER]
    key = sender.keys[0]
    number = gw.sender_number(sender)
    uploaded: dict[str, bytes] = {}
    # one upload with each client, and a file the gateway put in OUT and nobody fetched
    openssh_name = f"IN/{file_name('FI', number, 'IN', 1)}"
    local = gw.work / "leaver-upload"
    uploaded[openssh_name] = _declaration(LEAVER, 1) * 1000
    local.write_bytes(uploaded[openssh_name])
    out = openssh_sftp(gw, LEAVER, key, [f"put {local} /{openssh_name}"])
    assert out.returncode == 0, out.stderr
    paramiko_name = f"INTEST/{file_name('FI', number, 'INTEST', 2)}"
    uploaded[paramiko_name] = secrets.token_bytes(200_000)
    with paramiko_session(gw, LEAVER, key) as sftp, sftp.open(f"/{paramiko_name}", "wb") as fh:
        fh.write(uploaded[paramiko_name])
    uploaded["OUT/FO.ACRF.999999.20261129.00001.R.1.1"] = _place_return_file(
        gw, LEAVER, "FO.ACRF.999999.20261129.00001.R.1.1"
    )
    chroot = gw.chroot(LEAVER)

    gw.undeclare(sender)
    out = gw.apply()
    m = re.search(
        rf"archived {re.escape(str(chroot))} -> (\S+) \((\d+) files, (\d+) bytes kept\)", out.stdout
    )
    assert m, out.stdout
    archive = Path(m.group(1))
    assert archive.parent == gw.archive_dir
    assert int(m.group(2)) == len(uploaded)
    assert int(m.group(3)) == sum(len(v) for v in uploaded.values())

    assert logins(gw, LEAVER, key) == {"openssh": False, "paramiko": False}
    assert getent("passwd", LEAVER) is None
    assert not gw.keys_file(LEAVER).exists()
    assert not chroot.exists()
    # the data, intact, in a place no sender reaches
    for name, content in uploaded.items():
        assert (archive / name).read_bytes() == content, name
    assert mode_of(gw.archive_dir)[0] == 0 and mode_of(gw.archive_dir)[2] & 0o077 == 0
    row = gw.status()[LEAVER]
    assert row["status"] == "removed" and row["sender_number"] == number


def test_new_quality_refused_until_its_first_apply(gw: Gateway) -> None:
    sender = make_sender(gw.work, enterprise_number(2_000_007), NEWCOMER)
    key = sender.keys[0]
    gw.declare(sender)
    # declared (merged), not applied yet: "the configuration ... is in progress"
    assert logins(gw, NEWCOMER, key) == {"openssh": False, "paramiko": False}
    code, plan = gw.plan()
    assert code == 2
    channel = next(c for c in plan["channels"] if c["technical_user"] == NEWCOMER)
    assert channel["action"] == "create"
    predicted = channel["sender_number"]
    row = gw.status().get(NEWCOMER)
    assert row is None or row["status"] == "pending", row
    assert getent("passwd", NEWCOMER) is None

    gw.apply()
    row = gw.status()[NEWCOMER]
    assert row["status"] == "active" and row["sender_number"] == predicted
    assert logins(gw, NEWCOMER, key) == {"openssh": True, "paramiko": True}


def test_legacy_ssh_rsa_refused_by_default_accepted_when_enabled(gw: Gateway) -> None:
    sender = gw.senders[PAYROLL]
    key = sender.keys[0]
    assert key.key_type == "ssh-rsa"
    assert (
        "2048"
        in subprocess.run(
            ["ssh-keygen", "-l", "-f", str(key.public)], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    )
    # the RSA 2048 key itself is fine with SHA-2 signatures
    assert logins(gw, PAYROLL, key) == {"openssh": True, "paramiko": True}
    mark = gw.sshd.mark()
    assert logins(gw, PAYROLL, key, legacy=True) == {"openssh": False, "paramiko": False}
    gw.sshd.wait_for_log(r"signature algorithm ssh-rsa not in PubkeyAcceptedAlgorithms", since=mark)

    try:
        gw.write_settings(legacy_ssh_rsa=True)
        out = gw.apply()
        assert "sshd reloaded" in out.stdout
        eff = sshd_effective(gw.sshd.config_path, PAYROLL)
        assert eff["pubkeyacceptedalgorithms"].split(",")[-1] == "ssh-rsa"
        assert logins(gw, PAYROLL, key, legacy=True) == {"openssh": True, "paramiko": True}
        # really SHA-1: what paramiko agreed to sign with
        with paramiko_session(gw, PAYROLL, key, legacy=True) as sftp:
            transport = sftp.get_channel().get_transport()  # type: ignore[union-attr]
            assert transport._agreed_pubkey_algorithm == "ssh-rsa"  # type: ignore[union-attr]
    finally:
        gw.write_settings(legacy_ssh_rsa=False)
        gw.apply()
    assert logins(gw, PAYROLL, key, legacy=True) == {"openssh": False, "paramiko": False}
    assert logins(gw, PAYROLL, key) == {"openssh": True, "paramiko": True}


def test_every_user_still_works_at_the_end(gw: Gateway) -> None:
    """After all the applies above, the senders nobody changed still log in."""
    for user in (ALICE, BOB, PAYROLL):
        assert logins(gw, user, gw.senders[user].keys[0]) == {"openssh": True, "paramiko": True}
    assert os.path.exists(gw.settings["audit_log"])
