"""The gateway of the end-to-end tests: a REAL `provisioner apply`, the REAL sshd, real clients.

What :func:`provisioned_gateway` does to the machine (root only; everything is undone on exit,
also when a test fails - see tests/sshd_harness.py for the mechanics):

* a test area ``/srv/sftp-provisioner-test-<random>`` (root 0755, because sshd refuses a
  chroot below a directory that is not root-owned or that others can write): the settings
  point chroot_base, archive_dir, keys_dir, sshd_dropin, rsyslog_dropin, work_dir,
  audit_log, lock_file, routing table and the SQLite state there;
* ``extrausers`` is added to /etc/nsswitch.conf and ``/var/lib/extrausers`` is the settings'
  extrausers_dir: `apply` writes passwd/group/shadow there itself. The harness saves the
  originals first (also to a crash backup) and restores them byte for byte afterwards;
* its own sshd (host keys, main sshd_config shaped like Debian's: ``Include`` of the rendered
  drop-in first, a ``Subsystem sftp`` line). The main config listens on an "admin" port; the
  batch port the clients use is the one the settings render into the drop-in (``Port`` and
  ``ListenAddress``), so the rendered listener is proven too. The settings' reload_command
  sends SIGHUP to that sshd through its pid file, as ``systemctl reload ssh`` would.

`apply`, `plan` and `status` run through ``python -m provisioner ... --settings FILE``: the
command an operator types.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import grp
import io
import json
import os
import pwd
import secrets
import shlex
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from fixtures_crypto import make_certificate, x509_name
from ruamel.yaml import YAML
from sshd_harness import (
    LEGACY_SSH_RSA_ONLY,
    KeyPair,
    SshdServer,
    SyslogCapture,
    extrausers,
    generate_keypair,
    make_dir,
    paramiko_sftp,
    port_accepts,
    running_sshd,
    sftp_batch,
    syslog_socket,
)

UPLOAD_DIRS = ("IN", "INTEST", "INTEST-S")
DOWNLOAD_DIRS = ("OUT", "OUTTEST", "OUTTEST-S")
# What a sender sees at "/" of its jail: the exchange directories and dev/ (the log socket).
JAIL_ROOT = sorted(("dev", *UPLOAD_DIRS, *DOWNLOAD_DIRS))
# The environment letter of the file names, per upload directory.
ENVIRONMENT = {"IN": "R", "INTEST": "T", "INTEST-S": "S"}
CLIENTS = ("openssh", "paramiko")

HOST = "127.0.0.1"


# --- ids and names ------------------------------------------------------------------------


def enterprise_number(base: int) -> str:
    """A valid enterprise number (10 digits, starts with 0 or 1, mod-97 check digits)."""
    if not 0 < base < 20_000_000:
        raise ValueError(f"base {base} gives no enterprise number starting with 0 or 1")
    head = f"{base:08d}"
    return f"{head}{97 - int(head) % 97:02d}"


def free_id_range(count: int, start: int) -> int:
    """The first id >= start such that start..start+count-1 are unused as uid and gid (NSS)."""
    candidate = start
    while True:
        clash = next((i for i in range(candidate, candidate + count) if _id_used(i)), None)
        if clash is None:
            return candidate
        candidate = clash + 1


def _id_used(value: int) -> bool:
    try:
        pwd.getpwuid(value)
        return True
    except KeyError:
        pass
    try:
        grp.getgrgid(value)
        return True
    except KeyError:
        return False


def file_name(
    kind: str, sender: str, directory: str, seq: int, *, day: dt.date | None = None
) -> str:
    """``TYPE.PURPOSE.SENDER.YYYYMMDD.SEQ.ENV.PARTS.PART`` of a DmfA upload."""
    day = day or dt.datetime.now(dt.UTC).date()
    return f"{kind}.DMFA.{sender}.{day:%Y%m%d}.{seq:05d}.{ENVIRONMENT[directory]}.1.1"


# --- a sender: declaration, client keys, signing certificate ------------------------------


@dataclass
class Sender:
    """A quality declared by the tests, with the private keys of its payroll software."""

    en: str
    user: str
    name: str
    keys: list[KeyPair]
    signing_key: ec.EllipticCurvePrivateKey
    certificate_pem: bytes
    # Extra attributes per key (by index): {"from": [...]} / {"expires": "2020-01-01"}.
    key_options: dict[int, dict[str, Any]] = field(default_factory=dict)

    def key_entries(self) -> list[Any]:
        entries: list[Any] = []
        for i, key in enumerate(self.keys):
            options = self.key_options.get(i)
            entries.append({"key": key.line, **options} if options else key.line)
        return entries

    def document(self) -> dict[str, Any]:
        return {
            "quality": {
                "name": self.name,
                "enterprise_number": f"{self.en[:4]}.{self.en[4:7]}.{self.en[7:]}",
                "type": "employer_nsso",
            },
            "administrators": [
                {
                    "name": "E2E Administrator",
                    "email": f"admin@{self.user.lower()}.example",
                    "role": "local",
                }
            ],
            "structured_messages": {
                "technical_user": self.user,
                "contact": {
                    "last_name": "Peeters",
                    "first_name": "Jan",
                    "title": "mr",
                    "function": "Payroll",
                    "language": "nl",
                    "phone": "025455078",
                    "emails": [f"edi@{self.user.lower()}.example"],
                },
                "channels": {
                    "sftp": {
                        "connection": "internet",
                        "ssh_keys": self.key_entries(),
                        "certificate": f"../certs/{self.user}.pem",
                        "applications": ["dmfa", "dimona"],
                    }
                },
            },
        }

    def sign(self, data: bytes) -> bytes:
        """The FS file of `data`: detached CMS signature, SHA-256, base64 with CR line ends."""
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(self.certificate_pem)
        der = (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(data)
            .add_signer(cert, self.signing_key, hashes.SHA256())
            .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature])
        )
        return base64.encodebytes(der).replace(b"\n", b"\r")


def make_sender(
    work: Path,
    en: str,
    user: str,
    *,
    key_types: Sequence[tuple[str, int | None]] = (("ed25519", None),),
) -> Sender:
    """A sender with fresh client keys (ssh-keygen) and its own signing certificate."""
    keys = [
        generate_keypair(work / f"{user}-{i}", key_type, bits=bits, comment=f"payroll{i}@{user}")
        for i, (key_type, bits) in enumerate(key_types)
    ]
    signing_key = ec.generate_private_key(ec.SECP256R1())
    cert = make_certificate(
        subject=x509_name(
            (NameOID.COUNTRY_NAME, "BE"),
            (NameOID.COMMON_NAME, f"Jan Peeters {user} (Signature)"),
            (NameOID.SURNAME, "Peeters"),
            (NameOID.GIVEN_NAME, "Jan"),
            (NameOID.SERIAL_NUMBER, "85073003328"),
        ),
        serial=secrets.randbits(96),
        key=signing_key,
    )
    return Sender(
        en=en,
        user=user,
        name=f"E2E QUALITY {user.upper()}",
        keys=keys,
        signing_key=signing_key,
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM),
    )


def dump_yaml(data: Any) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue()


# --- the gateway ----------------------------------------------------------------------------


@dataclass
class Gateway:
    area: Path
    decls: Path
    work: Path
    settings_path: Path
    settings: dict[str, Any]
    port: int  # the batch port rendered into the drop-in (the clients use it)
    sshd_workdir: Path
    server: SshdServer | None = None
    senders: dict[str, Sender] = field(default_factory=dict)
    syslogs: dict[str, SyslogCapture] = field(default_factory=dict)
    last_apply_seconds: float = 0.0  # wall time of the last `provisioner apply` command

    # -- paths ---------------------------------------------------------------------------------
    @property
    def chroot_base(self) -> Path:
        return Path(self.settings["chroot_base"])

    @property
    def archive_dir(self) -> Path:
        return Path(self.settings["archive_dir"])

    @property
    def dropin(self) -> Path:
        return Path(self.settings["sshd_dropin"])

    def chroot(self, user: str) -> Path:
        return self.chroot_base / user

    def keys_file(self, user: str) -> Path:
        return Path(self.settings["keys_dir"]) / user

    def quality_file(self, sender: Sender) -> Path:
        return self.decls / "qualities" / f"{sender.en}.yaml"

    @property
    def sshd(self) -> SshdServer:
        assert self.server is not None, "sshd not started"
        return self.server

    # -- declarations and settings ---------------------------------------------------------
    def declare(self, sender: Sender) -> None:
        (self.decls / "certs").mkdir(parents=True, exist_ok=True)
        (self.decls / "qualities").mkdir(parents=True, exist_ok=True)
        (self.decls / "certs" / f"{sender.user}.pem").write_bytes(sender.certificate_pem)
        self.quality_file(sender).write_text(dump_yaml(sender.document()), "utf-8")
        self.senders[sender.user] = sender

    def undeclare(self, sender: Sender) -> None:
        self.quality_file(sender).unlink()
        (self.decls / "certs" / f"{sender.user}.pem").unlink()

    def write_settings(self, **changes: Any) -> None:
        self.settings.update(changes)
        self.settings_path.write_text(
            "".join(f"{k}: {json.dumps(v)}\n" for k, v in self.settings.items()), "utf-8"
        )

    # -- the operator's commands -------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SFTP_PROVISIONER_")}
        return subprocess.run(
            [sys.executable, "-m", "provisioner", *args, "--settings", str(self.settings_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.decls,
            env=env,
        )

    def apply(self, *, expect: int = 0) -> subprocess.CompletedProcess[str]:
        """``provisioner apply DECLS``; when it reloaded sshd, wait until sshd listens again."""
        mark = self.server.mark() if self.server else 0
        started = time.perf_counter()
        out = self.cli("apply", str(self.decls))
        self.last_apply_seconds = time.perf_counter() - started
        assert out.returncode == expect, f"apply exited {out.returncode}:\n{out.stdout}{out.stderr}"
        if self.server is not None and "sshd reloaded" in out.stdout:
            self.wait_reloaded(mark)
        return out

    def plan(self) -> tuple[int, dict[str, Any]]:
        out = self.cli("plan", str(self.decls), "--format", "json")
        assert out.returncode in (0, 1, 2), out.stdout + out.stderr
        plan: dict[str, Any] = json.loads(out.stdout)
        return out.returncode, plan

    def status(self) -> dict[str, dict[str, Any]]:
        """``provisioner status --format json``, per technical user."""
        out = self.cli("status", "--format", "json")
        assert out.returncode == 0, out.stdout + out.stderr
        rows = json.loads(out.stdout)["channels"]
        return {row["username"]: row for row in rows}

    def sender_number(self, sender: Sender) -> str:
        number: str = self.status()[sender.user]["sender_number"]
        assert len(number) == 6 and number.isdigit(), number
        return number

    # -- sshd -------------------------------------------------------------------------------------
    def wait_reloaded(self, since: int, timeout: float = 20.0) -> None:
        """The reload of `apply` reached our sshd (SIGHUP in its log) and it listens again on
        both ports. A connection accepted before the re-exec would still get the OLD config."""
        server = self.sshd
        server.wait_for_log(r"Received SIGHUP", since=since, timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:
            after = server.log(since).split("Received SIGHUP", 1)[1]
            if (
                f"port {self.port}." in after
                and f"port {server.port}." in after
                and port_accepts(HOST, self.port)
            ):
                return
            if not server.running() or time.monotonic() > deadline:
                raise AssertionError(f"sshd did not come back after the reload:\n{after}")
            time.sleep(0.05)


@contextlib.contextmanager
def provisioned_gateway(
    area: Path,
    decls: Path,
    make_senders: Any,
    *,
    admin_port: int | None = None,
    batch_port: int | None = None,
    capture_syslog_of: Sequence[str] = (),
    settings: dict[str, Any] | None = None,
    max_users: int = 200,
) -> Iterator[Gateway]:
    """Declare the senders ``make_senders(work)`` returns (declarations already in `decls`
    count too), run the first real apply into the test `area`, start sshd on the rendered
    drop-in; undo everything afterwards. ``max_users``: size of the uid range."""
    from sshd_harness import free_port

    work = make_dir(area / "client", 0o700)
    sshd_workdir = make_dir(area / "sshd", 0o700)
    pid_file = sshd_workdir / "sshd.pid"
    token = secrets.token_hex(3)
    gid = free_id_range(2, 52000 + secrets.randbelow(4000))
    uid_min = free_id_range(max_users, 460000 + secrets.randbelow(20000) * 10)
    batch_port = batch_port or free_port(HOST)
    data: dict[str, Any] = {
        "state_url": f"sqlite:///{area}/var/lib/sftp-provisioner/state.db",
        "chroot_base": str(area / "srv/sftp"),
        "archive_dir": str(area / "srv/sftp-archive"),
        "keys_dir": str(area / "etc/ssh/sftp-provisioner/authorized_keys"),
        "sshd_dropin": str(area / "etc/ssh/sshd_config.d/00-sftp-provisioner.conf"),
        "rsyslog_dropin": str(area / "etc/rsyslog.d/50-sftp-provisioner.conf"),
        # The real one: the harness backs it up and restores it.
        "extrausers_dir": "/var/lib/extrausers",
        "routing_table": str(area / "var/lib/sftp-provisioner/routing.json"),
        "work_dir": str(area / "var/lib/sftp-provisioner"),
        "audit_log": str(area / "var/log/sftp-provisioner/audit.jsonl"),
        "lock_file": str(area / "run/sftp-provisioner.lock"),
        "status_file": str(area / "var/lib/sftp-provisioner/status.json"),
        "metrics_file": str(area / "var/lib/node-exporter/sftp_provisioner.prom"),
        "outbox_dir": str(area / "var/spool/sftp-provisioner/outbox"),
        "notifications": False,
        "sftp_group": f"sftpe2e{token}",
        "sftp_gid": gid,
        # The gateway's own group: uploads must carry it (setgid exchange directories).
        "gateway_gid": gid + 1,
        "uid_min": uid_min,
        "uid_max": uid_min + max_users - 1,
        "sender_start": 6400,
        "hostname": "e2e-test-gateway",
        "listen_address": HOST,
        "port": batch_port,
        "log_level": "VERBOSE",
        "sftp_log_level": "INFO",
        # `systemctl reload ssh` for the test's own sshd (no pid file yet: nothing to reload).
        "reload_command": [
            "sh",
            "-c",
            f"if [ -s {shlex.quote(str(pid_file))} ]; then "
            f'kill -HUP "$(cat {shlex.quote(str(pid_file))})"; fi',
        ],
        # No rsyslog here: the tests listen on <chroot>/dev/log themselves (like imuxsock).
        "syslog_reload_command": [],
    }
    data.update(settings or {})
    decls.mkdir(parents=True, exist_ok=True)
    gw = Gateway(
        area=area,
        decls=decls,
        work=work,
        settings_path=area / "settings.yaml",
        settings={},
        port=batch_port,
        sshd_workdir=sshd_workdir,
    )
    gw.write_settings(**data)
    for sender in make_senders(work):
        gw.declare(sender)
    # Empty passwd/group/shadow to start with; `apply` writes its own. Restored afterwards.
    with contextlib.ExitStack() as stack:
        stack.enter_context(extrausers("", "", ""))
        gw.apply()
        gw.server = stack.enter_context(
            running_sshd(gw.dropin, workdir=sshd_workdir, host=HOST, port=admin_port)
        )
        deadline = time.monotonic() + 10
        while not port_accepts(HOST, batch_port):
            assert time.monotonic() < deadline, gw.sshd.log()
            time.sleep(0.05)
        for user in capture_syslog_of:
            # rsyslog's imuxsock would create this socket from the rendered drop-in.
            gw.syslogs[user] = stack.enter_context(syslog_socket(gw.chroot(user) / "dev" / "log"))
        yield gw


# --- clients -------------------------------------------------------------------------------------


class Refused(AssertionError):
    """The server refused the login (publickey authentication failed)."""


def openssh_sftp(
    gw: Gateway, user: str, key: KeyPair, commands: Sequence[str], *, options: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    return sftp_batch(user, key.private, gw.port, commands, host=HOST, options=options)


@contextlib.contextmanager
def paramiko_session(
    gw: Gateway, user: str, key: KeyPair, *, legacy: bool = False
) -> Iterator[paramiko.SFTPClient]:
    """A paramiko SFTP session (``legacy``: a client that signs only with ssh-rsa/SHA-1)."""
    if legacy:
        sftp, transport = paramiko_sftp(
            user, key.private, gw.port, LEGACY_SSH_RSA_ONLY, host=HOST, ignore_server_sig_algs=True
        )
    else:
        sftp, transport = paramiko_sftp(user, key.private, gw.port, host=HOST)
    try:
        yield sftp
    finally:
        transport.close()


def login_listing(
    gw: Gateway,
    client: str,
    user: str,
    key: KeyPair,
    *,
    legacy: bool = False,
) -> list[str]:
    """Log in with `client` and list "/"; raises :class:`Refused` when the key is refused
    (and AssertionError for anything else that goes wrong)."""
    if client == "openssh":
        options = ["-o", "PubkeyAcceptedAlgorithms=ssh-rsa"] if legacy else []
        out = openssh_sftp(gw, user, key, ["ls -1 /"], options=options)
        if out.returncode != 0:
            # "(publickey)" for a technical user; an unknown name may be offered more methods
            if "Permission denied (publickey" in out.stderr:
                raise Refused(out.stderr)
            raise AssertionError(f"sftp failed for another reason: {out.stderr}")
        return listed_names(out.stdout)
    try:
        with paramiko_session(gw, user, key, legacy=legacy) as sftp:
            return sorted(sftp.listdir("/"))
    except paramiko.AuthenticationException as exc:
        raise Refused(str(exc)) from exc


def listed_names(stdout: str) -> list[str]:
    """Names listed by ``sftp -b`` (``ls -1 DIR``), without the echoed commands."""
    return sorted(
        line.strip().rstrip("/").rsplit("/", 1)[-1]
        for line in stdout.splitlines()
        if line.strip() and not line.startswith("sftp>")
    )


def accepted(gw: Gateway, client: str, user: str, key: KeyPair, *, legacy: bool = False) -> bool:
    """True: logged in and saw exactly its jail; False: refused at authentication."""
    try:
        listing = login_listing(gw, client, user, key, legacy=legacy)
    except Refused:
        return False
    assert listing == JAIL_ROOT, listing
    return True


def logins(gw: Gateway, user: str, key: KeyPair, *, legacy: bool = False) -> dict[str, bool]:
    """{client: accepted} for both clients."""
    return {c: accepted(gw, c, user, key, legacy=legacy) for c in CLIENTS}


def mode_of(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)
