"""The sshd / authorized_keys / extrausers templates, proven against the REAL OpenSSH server.

The technical users are provisioned BY HAND here: the templates are rendered with small
hand-built contexts (the project's render/apply code will reuse tests/sshd_harness.py).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jinja2
import paramiko
import pytest

from provisioner.encoding import register
from provisioner.template_contexts import (
    Account,
    AuthorizedKeys,
    Group,
    GroupFile,
    Passwd,
    Shadow,
    SshdDropin,
    TemplateContext,
)
from provisioner.template_contexts import KeyLine as Key

# the harness is also a pytest plugin (fixtures); let pytest rewrite its asserts
pytest.register_assert_rewrite("sshd_harness")

from sshd_harness import (  # noqa: E402
    EXTRAUSERS_DIR,
    LEGACY_NO_ETM,
    LEGACY_SSH_RSA_ONLY,
    NSSWITCH,
    KeyPair,
    SshdServer,
    SyslogCapture,
    extrausers,
    free_port,
    generate_keypair,
    getent,
    make_dir,
    paramiko_sftp,
    paramiko_transport,
    refused_local_forward,
    running_sshd,
    sftp_batch,
    ssh_argv,
    ssh_command,
    ssh_query,
    sshd_check,
    sshd_effective,
    syslog_socket,
    write_file,
    write_main_config,
)

pytest_plugins = ("sshd_harness",)

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
GENERATED_BY = "sftp-provisioner 0.1.0 — do not edit, changes are overwritten"
FORCE_COMMAND = (
    "internal-sftp -l INFO -f AUTHPRIV -u 0027 -P setstat,fsetstat,lsetstat,symlink,hardlink"
)
UPLOAD_NAME = "FI.DMFA.101380.20261129.00001.T.1.1"
RETURN_NAME = "FO.ACRF.999999.20261129.00001.T.1.1"
IN_DIRS = ("IN", "INTEST", "INTEST-S")
OUT_DIRS = ("OUT", "OUTTEST", "OUTTEST-S")
JAIL_ROOT = sorted(("dev", *IN_DIRS, *OUT_DIRS))  # what a technical user sees at "/"

# What an ordinary main sshd_config may say AFTER the Include; the drop-in must win anyway.
HOSTILE_MAIN = """\
# --- after the Include: must NOT weaken the drop-in (sshd keeps the first value) ---
PasswordAuthentication yes
KbdInteractiveAuthentication yes
X11Forwarding yes
AllowTcpForwarding yes
PermitTTY yes
Ciphers aes128-cbc,aes256-ctr
MACs hmac-sha1
"""


def env() -> jinja2.Environment:
    # The templates' check filters (one per target syntax) are part of the templates' contract.
    return register(
        jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
        )
    )


def render(context: TemplateContext) -> str:
    return env().get_template(context.template).render(**context.variables())


def account_files(accounts: list[Account], group: Group) -> tuple[str, str, str]:
    """passwd, group and shadow, as render_host writes them."""
    return render(Passwd(accounts)), render(GroupFile(group)), render(Shadow(accounts))


# ---- hand-built settings (same attribute names as HostSettings) -------------------------


@dataclass(frozen=True)
class Settings:
    sftp_group: str = "sftpusers"
    chroot_base: str = "/srv/sftp/chroot"
    keys_dir: str = "/etc/sftp-provisioner/keys"
    listen_address: str | None = None
    port: int | None = None
    legacy_ssh_rsa: bool = False
    host_password_logins: bool = False
    log_level: str = "VERBOSE"
    sftp_log_level: str = "INFO"
    max_auth_tries: int = 3
    login_grace_time: int = 30
    max_startups: str = "10:30:100"
    per_source_max_startups: int = 10
    per_source_net_block_size: str = "32:64"
    per_source_penalties: str = "crash:90s authfail:5s noauth:1s grace-exceeded:20s max:10m min:15s"
    sftp_denied_requests: tuple[str, ...] = (
        "setstat",
        "fsetstat",
        "lsetstat",
        "symlink",
        "hardlink",
    )
    sftp_umask: str = "0027"


def render_dropin(s: Settings, version: tuple[int, int]) -> str:
    return render(SshdDropin(s=s, openssh_version=version, generated_by=GENERATED_BY))


def directives(config: str) -> list[tuple[str, str]]:
    """(keyword, value) of every non-comment line; keyword lower-case."""
    out = []
    for raw in config.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out.append((key.lower(), value.strip()))
    return out


def global_part(config: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in directives(config):
        if key == "match":
            break
        result.setdefault(key, value)
    return result


# =========================================================================================
# Rendering (no root needed)
# =========================================================================================


@pytest.mark.parametrize("legacy", [False, True])
def test_dropin_crypto_policy(legacy: bool) -> None:
    conf = render_dropin(Settings(legacy_ssh_rsa=legacy), (9, 2))
    g = global_part(conf)
    assert g["kexalgorithms"].split(",")[:2] == [
        "sntrup761x25519-sha512@openssh.com",
        "curve25519-sha256",
    ]
    assert not any("sha1" in k or "nistp" in k for k in g["kexalgorithms"].split(","))
    assert g["ciphers"].split(",")[:3] == [
        "chacha20-poly1305@openssh.com",
        "aes256-gcm@openssh.com",
        "aes128-gcm@openssh.com",
    ]
    assert not any("cbc" in c for c in g["ciphers"].split(","))
    macs = g["macs"].split(",")
    assert all(m.endswith("-etm@openssh.com") for m in macs[:3])
    assert ("hmac-sha2-256" in macs) is legacy
    assert not any("sha1" in m or "md5" in m for m in macs)
    for kw in ("hostkeyalgorithms", "pubkeyacceptedalgorithms"):
        algos = g[kw].split(",")
        assert algos[0] == "ssh-ed25519"
        assert {
            "sk-ssh-ed25519@openssh.com",
            "ecdsa-sha2-nistp256",
            "rsa-sha2-512",
            "rsa-sha2-256",
        } <= set(algos)
        assert ("ssh-rsa" in algos) is legacy
        if legacy:
            assert algos[-1] == "ssh-rsa"  # least preferred
    assert g["requiredrsasize"] == "2048"
    # global-only keywords come before the (single) Match block
    keys = [k for k, _ in directives(conf)]
    assert keys.count("match") == 1
    assert keys.index("kexalgorithms") < keys.index("match")
    assert "ssh-rsa" not in conf.split("Match Group", 1)[1]


@pytest.mark.parametrize(
    ("version", "present", "absent"),
    [
        (
            (8, 4),
            ["PubkeyAcceptedKeyTypes"],
            ["PubkeyAcceptedAlgorithms", "sntrup761", "RequiredRSASize", "mlkem"],
        ),
        (
            (8, 9),
            ["PubkeyAcceptedAlgorithms", "sntrup761x25519-sha512@openssh.com"],
            ["RequiredRSASize", "mlkem"],
        ),
        ((9, 2), ["RequiredRSASize 2048"], ["mlkem", "sntrup761x25519-sha512,"]),
        ((9, 9), ["KexAlgorithms mlkem768x25519-sha256,sntrup761x25519-sha512,sntrup761"], []),
        ((10, 0), ["mlkem768x25519-sha256"], ["PubkeyAcceptedKeyTypes"]),
    ],
)
def test_dropin_version_gates(
    version: tuple[int, int], present: list[str], absent: list[str]
) -> None:
    conf = render_dropin(Settings(), version)
    for text in present:
        assert text in conf
    for text in absent:
        assert text not in conf


@pytest.mark.parametrize(
    ("version", "present", "absent"),
    [
        ((8, 4), ["MaxStartups 10:30:100"], ["PerSource"]),
        (
            (9, 2),
            ["MaxStartups 10:30:100", "PerSourceMaxStartups 10", "PerSourceNetBlockSize 32:64"],
            ["PerSourcePenalties"],
        ),
        (
            (9, 8),
            [
                "PerSourceMaxStartups 10",
                "PerSourcePenalties crash:90s authfail:5s noauth:1s grace-exceeded:20s max:10m",
            ],
            [],
        ),
    ],
)
def test_dropin_connection_throttling(
    version: tuple[int, int], present: list[str], absent: list[str]
) -> None:
    """ssh-audit's DHEat test found no throttling: one source could open hundreds of
    connections a second. The limits are global keywords, so they must precede Match."""
    conf = render_dropin(Settings(), version)
    for text in present:
        assert f"\n{text}" in conf
    for text in absent:
        assert text not in conf
    g = global_part(conf)
    assert g["maxstartups"] == "10:30:100"
    if version >= (8, 5):
        assert g["persourcemaxstartups"] == "10"
    conf = render_dropin(
        Settings(per_source_max_startups=3, max_startups="20:50:60", per_source_penalties="no"),
        (9, 9),
    )
    g = global_part(conf)
    assert (g["persourcemaxstartups"], g["maxstartups"], g["persourcepenalties"]) == (
        "3",
        "20:50:60",
        "no",
    )


def test_dropin_upload_requests() -> None:
    """A sender could chmod 6755 an upload and chmod 0777 its IN: the attribute-setting
    requests are refused, the denied list and umask come from the settings."""
    conf = render_dropin(Settings(), (9, 2))
    block = dict(directives(conf.split("\nMatch ", 1)[1])[1:])
    assert block["forcecommand"].endswith(" -u 0027 -P setstat,fsetstat,lsetstat,symlink,hardlink")
    conf = render_dropin(Settings(sftp_denied_requests=(), sftp_umask="077"), (9, 2))
    block = dict(directives(conf.split("\nMatch ", 1)[1])[1:])
    assert block["forcecommand"] == "internal-sftp -l INFO -f AUTHPRIV -u 077"


def test_dropin_match_block_and_listen() -> None:
    s = Settings(
        sftp_group="sftpusers",
        chroot_base="/srv/sftp/chroot",
        keys_dir="/etc/sftp-provisioner/keys",
        sftp_log_level="VERBOSE",
    )
    conf = render_dropin(s, (9, 2))
    assert conf.startswith(f"# {GENERATED_BY}\n")
    assert conf.endswith("\n") and not conf.endswith("\n\n")
    assert "{{" not in conf and "{%" not in conf
    assert not {"listenaddress", "port"} & {k for k, _ in directives(conf)}
    match = directives(conf.split("\nMatch ", 1)[1])
    block = dict(match[1:])
    assert match[0] == ("group", "sftpusers")
    assert block["chrootdirectory"] == "/srv/sftp/chroot/%u"
    assert block["authorizedkeysfile"] == "/etc/sftp-provisioner/keys/%u"
    assert block["forcecommand"] == (
        "internal-sftp -l VERBOSE -f AUTHPRIV -u 0027 -P setstat,fsetstat,lsetstat,symlink,hardlink"
    )
    expected = {
        "authenticationmethods": "publickey",
        "passwordauthentication": "no",
        "kbdinteractiveauthentication": "no",
        "allowtcpforwarding": "no",
        "allowstreamlocalforwarding": "no",
        "allowagentforwarding": "no",
        "x11forwarding": "no",
        "permittunnel": "no",
        "permittty": "no",
        "gatewayports": "no",
        "permituserrc": "no",
        "permitlisten": "none",
        "permitopen": "none",
        "disableforwarding": "yes",
        "trustedusercakeys": "/dev/null",
    }
    assert {k: block.get(k) for k in expected} == expected
    # the block does not grow with the number of users
    assert "%u" in block["chrootdirectory"]

    conf = render_dropin(replace(s, listen_address="192.0.2.10", port=2222), (9, 2))
    g = global_part(conf)
    assert g["listenaddress"] == "192.0.2.10" and g["port"] == "2222"


def test_dropin_requires_every_setting() -> None:
    @dataclass(frozen=True)
    class Partial:
        sftp_group: str = "g"

    with pytest.raises(jinja2.UndefinedError):
        render(SshdDropin(s=Partial(), openssh_version=(9, 2), generated_by="x"))


def test_authorized_keys_template() -> None:
    keys = [
        Key(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDBYdm64pbtqhndcl7rdo08W333RrQUUj8mhzX5ZYUlR"
            " edi@secsoc",
            "SHA256:abc",
        ),
        Key(
            "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC80at0 payroll@onderneming",
            "SHA256:def",
            from_=["192.0.2.0/24", "198.51.100.7/32"],
            expiry_time="202612312359Z",
        ),
        Key("ssh-ed25519 AAAAC3Nza other", "SHA256:ghi", expiry_time="202701010000Z"),
    ]
    text = render(AuthorizedKeys(user="secsocexemple01", keys=keys, generated_by=GENERATED_BY))
    lines = text.splitlines()
    assert lines[0] == f"# {GENERATED_BY}"
    key_lines = [ln for ln in lines if ln and not ln.startswith("#")]
    assert key_lines == [
        f"restrict {keys[0].line}",
        f'restrict,from="192.0.2.0/24,198.51.100.7/32",expiry-time="202612312359Z" {keys[1].line}',
        f'restrict,expiry-time="202701010000Z" {keys[2].line}',
    ]
    assert "SHA256:def" in text and "secsocexemple01" in text
    empty = render(AuthorizedKeys(user="u", keys=[], generated_by="g"))
    assert all(ln.startswith("#") for ln in empty.splitlines())


def test_account_templates() -> None:
    accounts = [
        Account("secsocexemple01", 61001, 61000, "SECRETARIAT SOCIAL EXEMPLE"),
        Account("Payroll2026ab", 61002, 61000, ""),
    ]
    group = Group("sftpusers", 61000, [a.name for a in accounts])
    passwd = render(Passwd(accounts))
    assert passwd == (
        "secsocexemple01:x:61001:61000:SECRETARIAT SOCIAL EXEMPLE:/:/usr/sbin/nologin\n"
        "Payroll2026ab:x:61002:61000::/:/usr/sbin/nologin\n"
    )
    assert render(GroupFile(group)) == ("sftpusers:x:61000:secsocexemple01,Payroll2026ab\n")
    assert render(Shadow(accounts)) == ("secsocexemple01:*:::::::\nPayroll2026ab:*:::::::\n")
    assert render(GroupFile(Group("g", 1))) == "g:x:1:\n"
    assert render(Passwd([])) == ""
    for line in passwd.splitlines():
        assert len(line.split(":")) == 7
    for line in render(Shadow(accounts)).splitlines():
        fields = line.split(":")
        assert len(fields) == 9 and fields[1] == "*"


# =========================================================================================
# Against the real sshd (root; skipped without sshd - FAILS under CI=true)
# =========================================================================================


@pytest.mark.sshd
@pytest.mark.root
@pytest.mark.parametrize("legacy", [False, True])
def test_sshd_t_accepts_dropin(
    legacy: bool, openssh_version_installed: tuple[int, int], tmp_path: Path
) -> None:
    s = Settings(
        legacy_ssh_rsa=legacy,
        listen_address="127.0.0.1",
        port=2222,
        chroot_base="/srv/sftp/chroot",
        keys_dir="/srv/sftp/keys",
    )
    dropin = write_file(
        tmp_path / "sftp-provisioner.conf", render_dropin(s, openssh_version_installed), 0o644
    )
    config = write_main_config(tmp_path, dropin, port=2201, main_extra=HOSTILE_MAIN)
    out = sshd_check(config)
    assert out.returncode == 0, out.stderr
    # every algorithm named is known to this OpenSSH build
    g = global_part(dropin.read_text())
    for keyword, query in (
        ("kexalgorithms", "kex"),
        ("ciphers", "cipher"),
        ("macs", "mac"),
        ("hostkeyalgorithms", "HostKeyAlgorithms"),
        ("pubkeyacceptedalgorithms", "PubkeyAcceptedAlgorithms"),
    ):
        unknown = set(g[keyword].split(",")) - ssh_query(query)
        assert not unknown, f"{keyword}: {unknown}"
    # the rendered lists are what sshd really uses, despite the hostile main config
    eff = sshd_effective(config, "root")
    for keyword in (
        "kexalgorithms",
        "ciphers",
        "macs",
        "hostkeyalgorithms",
        "pubkeyacceptedalgorithms",
    ):
        assert eff[keyword] == g[keyword]
    # ...and the Match block does not leak to non-members
    assert eff["chrootdirectory"] == "none"
    assert eff["forcecommand"] == "none"


# ---- the provisioned gateway (module scope) ------------------------------------------


@dataclass
class TechUser:
    name: str
    uid: int
    key: KeyPair
    chroot: Path
    syslog: SyslogCapture  # what internal-sftp wrote to <chroot>/dev/log


@dataclass
class Gateway:
    area: Path
    settings: Settings
    version: tuple[int, int]
    dropin: Path
    server: SshdServer
    group: Group
    users: dict[str, TechUser]
    stranger_key: KeyPair
    work: Path

    @property
    def port(self) -> int:
        return self.server.port

    def write_dropin(self, **changes: Any) -> None:
        self.settings = replace(self.settings, **changes)
        write_file(self.dropin, render_dropin(self.settings, self.version), 0o644)


def _free_ids(count: int, start: int = 61000) -> list[int]:
    """ids unused both as uid and gid (looked up through NSS)."""
    ids: list[int] = []
    candidate = start + secrets.randbelow(500)
    while len(ids) < count:
        with contextlib.suppress(KeyError):
            pwd.getpwuid(candidate)
            candidate += 1
            continue
        with contextlib.suppress(KeyError):
            grp.getgrgid(candidate)
            candidate += 1
            continue
        ids.append(candidate)
        candidate += 1
    return ids


def build_chroot(chroot_base: Path, user: str, uid: int, gid: int) -> Path:
    """<chroot_base>/<user> root:root 0755 (sshd's rule; the user cannot write at its root)
    with the six exchange directories owned by the user, 0700, and dev/ root:root 0755:

    * dev/log: internal-sftp opens syslog AFTER the chroot, so its audit trail (-l/-f of the
      ForceCommand) is lost unless a syslog socket exists at <chroot>/dev/log (rsyslog
      imuxsock / a bind mount of /dev/log in production; a test listener here).

    * IN, INTEST, INTEST-S: the user creates, overwrites and deletes its uploads; the
      gateway (root) reads and removes them.
    * OUT, OUTTEST, OUTTEST-S: the gateway (root) drops files, the user reads AND deletes
      them. Deleting needs write permission on the directory, so the user must own it (or
      share a group with write); a shared group would be the SFTP group of ALL technical
      users, so per-user ownership is the only isolation that does not rest on the chroot
      alone. Consequence accepted: the user could also upload into OUT (harmless).
    """
    jail = make_dir(chroot_base / user, 0o755)
    make_dir(jail / "dev", 0o755)
    for name in (*IN_DIRS, *OUT_DIRS):
        make_dir(jail / name, 0o700, uid, gid)
    return jail


@pytest.fixture(scope="module")
def gateway(sftp_area: Path, openssh_version_installed: tuple[int, int]) -> Iterator[Gateway]:
    area = sftp_area
    token = secrets.token_hex(3)
    gid, uid_a, uid_b = _free_ids(3)
    group_name = f"sftpt{token}"
    # technical usernames: 8-20 letters/digits, case-sensitive
    name_a, name_b = f"ExpDemo{token}", f"payroll{token}"
    work = make_dir(area / "client", 0o700)
    key_a = generate_keypair(work / "id_ed25519_a", "ed25519", comment="edi@secsoc")
    key_b = generate_keypair(work / "id_rsa_b", "rsa", bits=2048, comment="payroll@onderneming")
    stranger = generate_keypair(work / "id_ed25519_stranger", "ed25519", comment="stranger")

    settings = Settings(
        sftp_group=group_name,
        chroot_base=str(make_dir(area / "chroot", 0o755)),
        keys_dir=str(make_dir(area / "keys", 0o755)),
        log_level="VERBOSE",
        sftp_log_level="INFO",
    )
    accounts = [
        Account(name_a, uid_a, gid, "SECRETARIAT SOCIAL EXEMPLE"),
        Account(name_b, uid_b, gid, "Payroll client RSA 2048"),
    ]
    group = Group(group_name, gid, [a.name for a in accounts])
    users = {}
    stack = contextlib.ExitStack()
    for account, key in ((accounts[0], key_a), (accounts[1], key_b)):
        jail = build_chroot(Path(settings.chroot_base), account.name, account.uid, gid)
        authorized = render(
            AuthorizedKeys(
                user=account.name, keys=[Key(key.line, key.fingerprint)], generated_by=GENERATED_BY
            )
        )
        write_file(Path(settings.keys_dir) / account.name, authorized, 0o644)
        capture = stack.enter_context(syslog_socket(jail / "dev" / "log"))
        users[account.name] = TechUser(account.name, account.uid, key, jail, capture)

    sshd_dir = make_dir(area / "sshd", 0o700)
    dropin = write_file(
        sshd_dir / "sftp-provisioner.conf",
        render_dropin(settings, openssh_version_installed),
        0o644,
    )
    with (
        stack,
        extrausers(
            *account_files(accounts, group),
            check_users=[name_a, name_b],
        ),
        running_sshd(dropin, workdir=sshd_dir, main_extra=HOSTILE_MAIN) as server,
    ):
        yield Gateway(
            area=area,
            settings=settings,
            version=openssh_version_installed,
            dropin=dropin,
            server=server,
            group=group,
            users=users,
            stranger_key=stranger,
            work=work,
        )


def _a(gw: Gateway) -> TechUser:
    return next(u for u in gw.users.values() if u.name.startswith("ExpDemo"))


def _b(gw: Gateway) -> TechUser:
    return next(u for u in gw.users.values() if u.name.startswith("payroll"))


def _place_return_file(user: TechUser, name: str = RETURN_NAME) -> bytes:
    """What the gateway does: a root-owned 0644 file in OUT (no chown needed: the user reads
    it as 'other' inside its own 0700 directory and may delete it as directory owner)."""
    data = f"acknowledgement for {user.name} {secrets.token_hex(8)}\n".encode()
    write_file(user.chroot / "OUT" / name, data, 0o644)
    return data


# ---- effective configuration -----------------------------------------------------------


@pytest.mark.sshd
@pytest.mark.root
def test_sshd_T_for_member_and_non_member(gateway: Gateway) -> None:
    a = _a(gateway)
    eff = sshd_effective(gateway.server.config_path, a.name)
    assert eff["chrootdirectory"] == f"{gateway.settings.chroot_base}/%u"
    assert eff["authorizedkeysfile"] == f"{gateway.settings.keys_dir}/%u"
    assert eff["forcecommand"] == FORCE_COMMAND
    # the throttling of unauthenticated connections is in force (global keywords)
    assert eff["persourcemaxstartups"] == "10"
    assert eff["maxstartups"] == "10:30:100"
    assert eff["authenticationmethods"] == "publickey"
    for keyword in (
        "permittty",
        "allowtcpforwarding",
        "passwordauthentication",
        "kbdinteractiveauthentication",
        "x11forwarding",
        "allowagentforwarding",
        "allowstreamlocalforwarding",
        "permittunnel",
        "permituserrc",
    ):
        assert eff[keyword] == "no", keyword
    assert eff["disableforwarding"] == "yes"
    assert eff["permitopen"] == "none" and eff["permitlisten"] == "none"
    assert eff["trustedusercakeys"] == "/dev/null"
    assert eff["authorizedkeyscommand"] == "none"
    assert "ssh-rsa" not in eff["pubkeyacceptedalgorithms"].split(",")
    # a non-member (root exists everywhere) is not affected by the Match block, while the
    # hostile main config's values were ignored globally (first value wins)
    other = sshd_effective(gateway.server.config_path, "root")
    assert other["chrootdirectory"] == "none" and other["forcecommand"] == "none"
    assert other["ciphers"] == eff["ciphers"] and "cbc" not in other["ciphers"]


# ---- file exchange -----------------------------------------------------------------------


@pytest.mark.sshd
@pytest.mark.root
def test_openssh_sftp_exchange(gateway: Gateway) -> None:
    a = _a(gateway)
    local = gateway.work / "upload-openssh"
    local.write_bytes(b"<DmfA>declaration</DmfA>\n")
    expected_return = _place_return_file(a)
    download = make_dir(gateway.work / "download-openssh", 0o700)
    mark = gateway.server.mark()

    out = sftp_batch(
        a.name,
        a.key.private,
        gateway.port,
        [
            "cd /INTEST",
            f"put {local} {UPLOAD_NAME}",
            "ls -1 /INTEST",
            "ls -1 /OUT",
            f"get /OUT/{RETURN_NAME} {download}/",
            f"rm /OUT/{RETURN_NAME}",
            "ls -1 /OUT",
            "pwd",
        ],
    )
    assert out.returncode == 0, out.stderr
    assert UPLOAD_NAME in out.stdout and RETURN_NAME in out.stdout

    uploaded = a.chroot / "INTEST" / UPLOAD_NAME
    assert uploaded.read_bytes() == local.read_bytes()
    assert uploaded.stat().st_uid == a.uid
    assert (download / RETURN_NAME).read_bytes() == expected_return
    assert not (a.chroot / "OUT" / RETURN_NAME).exists()
    # the audit trail of internal-sftp (-l INFO -f AUTHPRIV, priority 86 = authpriv.info)
    a.syslog.wait_for(
        rf'<86>.*internal-sftp\[\d+\]: open "/INTEST/{re.escape(UPLOAD_NAME)}" '
        r"flags WRITE,CREATE,TRUNCATE"
    )
    a.syslog.wait_for(rf'<86>.*remove name "/OUT/{re.escape(RETURN_NAME)}"')
    a.syslog.wait_for(rf'close "/OUT/{re.escape(RETURN_NAME)}" bytes read {len(expected_return)}')
    gateway.server.wait_for_log(
        rf"Accepted publickey for {a.name} from 127\.0\.0\.1 .* ED25519 "
        rf"{re.escape(a.key.fingerprint)}",
        since=mark,
    )
    assert "error" not in gateway.server.log(mark).lower(), gateway.server.log(mark)
    uploaded.unlink()


@pytest.mark.sshd
@pytest.mark.root
def test_paramiko_sftp_exchange(gateway: Gateway) -> None:
    a = _a(gateway)
    expected_return = _place_return_file(a)
    sftp, transport = paramiko_sftp(a.name, a.key.private, gateway.port)
    try:
        assert sorted(sftp.listdir("/")) == JAIL_ROOT
        assert sftp.normalize("..") == "/"  # the jail has no way up
        with sftp.open(f"/INTEST/{UPLOAD_NAME}", "wb") as f:
            f.write(b"declaration via paramiko\n")
        assert UPLOAD_NAME in sftp.listdir("/INTEST")
        assert RETURN_NAME in sftp.listdir("/OUT")
        with sftp.open(f"/OUT/{RETURN_NAME}", "rb") as f:
            assert f.read() == expected_return
        sftp.remove(f"/OUT/{RETURN_NAME}")
        assert RETURN_NAME not in sftp.listdir("/OUT")
        # the user may clean up its own uploads too
        sftp.remove(f"/INTEST/{UPLOAD_NAME}")
    finally:
        transport.close()
    assert not (a.chroot / "INTEST" / UPLOAD_NAME).exists()


@pytest.mark.sshd
@pytest.mark.root
def test_chroot_root_is_not_writable(gateway: Gateway) -> None:
    a = _a(gateway)
    local = gateway.work / "stray"
    local.write_bytes(b"x")
    out = sftp_batch(a.name, a.key.private, gateway.port, [f"put {local} /stray"])
    assert out.returncode != 0
    assert "Permission denied" in out.stderr
    sftp, transport = paramiko_sftp(a.name, a.key.private, gateway.port)
    try:
        with pytest.raises(PermissionError):
            sftp.open("/stray", "wb")
        with pytest.raises(PermissionError):
            sftp.mkdir("/NEWDIR")
        with pytest.raises(PermissionError):
            sftp.rmdir("/IN")
        with pytest.raises(PermissionError):
            sftp.rename("/OUT", "/OUT2")
        with pytest.raises(PermissionError):
            sftp.open("/dev/stray", "wb")
    finally:
        transport.close()
    assert sorted(p.name for p in a.chroot.iterdir()) == JAIL_ROOT
    assert sorted(p.name for p in (a.chroot / "dev").iterdir()) == ["log"]


# ---- refusals ------------------------------------------------------------------------------


@pytest.mark.sshd
@pytest.mark.root
def test_undeclared_key_is_refused(gateway: Gateway) -> None:
    a, b = _a(gateway), _b(gateway)
    out = sftp_batch(a.name, gateway.stranger_key.private, gateway.port, ["ls /"])
    assert out.returncode != 0
    assert "Permission denied (publickey)" in out.stderr
    with pytest.raises(paramiko.AuthenticationException):
        paramiko_transport(a.name, gateway.stranger_key.private, gateway.port)
    # a declared key only opens its own account
    with pytest.raises(paramiko.AuthenticationException):
        paramiko_transport(b.name, a.key.private, gateway.port)


@pytest.mark.sshd
@pytest.mark.root
def test_no_shell_no_command_no_tty(gateway: Gateway) -> None:
    a = _a(gateway)
    out = ssh_command(a.name, a.key.private, gateway.port, "id")
    assert "uid=" not in out.stdout + out.stderr
    out = ssh_command(a.name, a.key.private, gateway.port, None, tty=True)
    assert "PTY allocation request failed" in out.stderr
    assert "uid=" not in out.stdout
    transport = paramiko_transport(a.name, a.key.private, gateway.port)
    try:
        chan = transport.open_session()
        chan.settimeout(10)
        with pytest.raises(paramiko.SSHException):
            chan.get_pty()
    finally:
        transport.close()


@pytest.mark.sshd
@pytest.mark.root
def test_forwarding_is_refused(gateway: Gateway) -> None:
    a = _a(gateway)
    transport = paramiko_transport(a.name, a.key.private, gateway.port)
    try:
        with pytest.raises(paramiko.ChannelException):
            transport.open_channel(
                "direct-tcpip", ("127.0.0.1", gateway.port), ("127.0.0.1", 40000), timeout=10
            )
        with pytest.raises(paramiko.SSHException):
            transport.request_port_forward("127.0.0.1", 0)
    finally:
        transport.close()
    # OpenSSH client: a remote forward is refused by the server ...
    lport = free_port()
    out = ssh_command(
        a.name,
        a.key.private,
        gateway.port,
        None,
        options=[
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            f"127.0.0.1:{lport}:127.0.0.1:22",
        ],
        timeout=20,
    )
    assert out.returncode != 0
    assert "remote port forwarding failed" in out.stderr
    # ... and a local forward: the client listens, but the server refuses every channel
    argv = ssh_argv(
        a.name,
        a.key.private,
        gateway.port,
        [
            "-o",
            "LogLevel=INFO",
            "-N",
            "-L",
            f"127.0.0.1:{lport}:127.0.0.1:{gateway.port}",
        ],
    )
    err = refused_local_forward(argv, "127.0.0.1", lport)
    assert "administratively prohibited" in err


@pytest.mark.sshd
@pytest.mark.root
def test_key_options_are_enforced(gateway: Gateway) -> None:
    """from= and expiry-time= written by the authorized_keys template are honoured."""
    a = _a(gateway)
    keys_file = Path(gateway.settings.keys_dir) / a.name
    original = keys_file.read_bytes()

    def declare(**options: Any) -> None:
        text = render(
            AuthorizedKeys(
                user=a.name,
                keys=[Key(a.key.line, a.key.fingerprint, **options)],
                generated_by=GENERATED_BY,
            )
        )
        write_file(keys_file, text, 0o644)

    try:
        declare(expiry_time="202001010000Z")
        mark = gateway.server.mark()
        with pytest.raises(paramiko.AuthenticationException):
            paramiko_transport(a.name, a.key.private, gateway.port)
        gateway.server.wait_for_log(r"Refused by key options", since=mark)
        declare(from_=["192.0.2.0/24", "198.51.100.7/32"])
        with pytest.raises(paramiko.AuthenticationException):
            paramiko_transport(a.name, a.key.private, gateway.port)
        declare(from_=["192.0.2.0/24", "127.0.0.1/32"], expiry_time="209912312359Z")
        paramiko_transport(a.name, a.key.private, gateway.port).close()
    finally:
        write_file(keys_file, original, 0o644)


# ---- legacy ssh-rsa ----------------------------------------------------------------------


def _legacy_login(gw: Gateway, user: TechUser) -> list[str]:
    """Log in like a legacy payroll client (ssh-rsa/SHA-1 signature) and list "/"."""
    sftp, transport = paramiko_sftp(
        user.name, user.key.private, gw.port, LEGACY_SSH_RSA_ONLY, ignore_server_sig_algs=True
    )
    try:
        assert transport._agreed_pubkey_algorithm == "ssh-rsa"  # type: ignore[attr-defined]
        return sorted(sftp.listdir("/"))
    finally:
        transport.close()


@pytest.mark.sshd
@pytest.mark.root
@pytest.mark.slow
def test_legacy_ssh_rsa_off_then_on(gateway: Gateway) -> None:
    b = _b(gateway)
    server = gateway.server
    assert gateway.settings.legacy_ssh_rsa is False

    # legacy OFF: the RSA 2048 key works with SHA-2 signatures ...
    paramiko_transport(b.name, b.key.private, gateway.port).close()
    # ... but a client that signs only with ssh-rsa (SHA-1) is refused BY THE SERVER
    mark = server.mark()
    with pytest.raises(paramiko.AuthenticationException):
        _legacy_login(gateway, b)
    server.wait_for_log(r"signature algorithm ssh-rsa not in PubkeyAcceptedAlgorithms", since=mark)
    # ... and so is a client without AES-GCM/ChaCha20 and without -etm MACs
    with pytest.raises(paramiko.SSHException):
        paramiko_transport(b.name, b.key.private, gateway.port, LEGACY_NO_ETM).close()
    out = sftp_batch(
        b.name,
        b.key.private,
        gateway.port,
        ["ls /"],
        options=["-o", "PubkeyAcceptedAlgorithms=ssh-rsa"],
    )
    assert out.returncode != 0

    try:
        gateway.write_dropin(legacy_ssh_rsa=True)
        server.reload()
        eff = sshd_effective(server.config_path, b.name)
        assert eff["pubkeyacceptedalgorithms"].split(",")[-1] == "ssh-rsa"
        assert _legacy_login(gateway, b) == JAIL_ROOT
        server.wait_for_log(rf"Accepted publickey for {b.name} .* RSA ", since=mark)
        paramiko_transport(b.name, b.key.private, gateway.port, LEGACY_NO_ETM).close()
        # OpenSSH's own client, forced to ssh-rsa, gets in as well
        out = sftp_batch(
            b.name,
            b.key.private,
            gateway.port,
            ["ls /"],
            options=["-o", "PubkeyAcceptedAlgorithms=ssh-rsa"],
        )
        assert out.returncode == 0, out.stderr
    finally:
        gateway.write_dropin(legacy_ssh_rsa=False)
        server.reload()
    with pytest.raises(paramiko.AuthenticationException):
        _legacy_login(gateway, b)


# ---- UsePAM yes --------------------------------------------------------------------------


@pytest.mark.sshd
@pytest.mark.root
def test_login_with_use_pam_yes(gateway: Gateway) -> None:
    """Debian's main sshd_config has UsePAM yes: the extrausers account with shadow '*' must
    pass PAM's account and session stacks as well."""
    a = _a(gateway)
    workdir = make_dir(gateway.area / "sshd-pam", 0o700)
    with running_sshd(gateway.dropin, workdir=workdir, use_pam=True) as server:
        out = sftp_batch(a.name, a.key.private, server.port, ["ls -1 /"])
        assert out.returncode == 0, out.stderr + server.log()
        assert "OUTTEST-S" in out.stdout
        server.wait_for_log(rf"Accepted publickey for {a.name} ")
        assert "error" not in server.log().lower(), server.log()


@pytest.mark.sshd
@pytest.mark.root
def test_main_config_must_define_sftp_subsystem(gateway: Gateway) -> None:
    """Documented requirement of the drop-in: without any "Subsystem sftp" in the main
    sshd_config the login succeeds but the sftp request is refused (ForceCommand comes too
    late to help)."""
    a = _a(gateway)
    workdir = make_dir(gateway.area / "sshd-nosubsystem", 0o700)
    with running_sshd(gateway.dropin, workdir=workdir, sftp_subsystem=None) as server:
        out = sftp_batch(a.name, a.key.private, server.port, ["ls -1 /"])
        assert out.returncode != 0
        server.wait_for_log(r"subsystem request for sftp by user .* failed, subsystem not found")


@pytest.mark.sshd
@pytest.mark.root
def test_file_modes_of_area(gateway: Gateway) -> None:
    keys_dir = Path(gateway.settings.keys_dir)
    for user in gateway.users.values():
        st = (keys_dir / user.name).stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o644)
        st = user.chroot.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o755)
        st = (user.chroot / "dev").stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)
        for name in (*IN_DIRS, *OUT_DIRS):
            st = (user.chroot / name).stat()
            assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (user.uid, 0o700)
    assert os.stat(keys_dir).st_uid == 0


# ---- the harness restores system state ---------------------------------------------------


@pytest.mark.root
@pytest.mark.sshd
def test_extrausers_state_is_restored_even_on_failure(sshd_environment: Path) -> None:
    nsswitch = NSSWITCH.read_bytes()
    extra = {p.name: p.read_bytes() for p in EXTRAUSERS_DIR.iterdir() if p.is_file()}
    gid, uid = _free_ids(2)
    name = f"Restore{secrets.token_hex(3)}"
    accounts = [Account(name, uid, gid, "restore test")]
    group = Group(f"sftpr{secrets.token_hex(3)}", gid, [name])

    class Boom(Exception):
        pass

    with (
        pytest.raises(Boom),
        extrausers(
            *account_files(accounts, group),
            check_users=[name],
        ),
    ):
        assert "extrausers" in NSSWITCH.read_text()
        assert getent("passwd", name) == f"{name}:x:{uid}:{gid}:restore test:/:/usr/sbin/nologin"
        assert (getent("shadow", name) or "").startswith(f"{name}:*:")
        raise Boom
    assert NSSWITCH.read_bytes() == nsswitch
    assert {p.name: p.read_bytes() for p in EXTRAUSERS_DIR.iterdir() if p.is_file()} == extra
    assert getent("passwd", name) is None
