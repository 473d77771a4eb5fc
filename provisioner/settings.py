"""Host settings: where the reconciler writes, which accounts and ids it uses, how sshd runs.

One YAML file (default /etc/sftp-provisioner/settings.yaml), validated like a declaration,
overridden by environment variables (SFTP_PROVISIONER_<FIELD>) and then by command-line flags.
`--root DIR` prefixes every managed path, so a run can target a staging tree, a test area or
a demo directory; the rendered files then point at the prefixed paths.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from provisioner.diagnostics import Location
from provisioner.errors import SettingsError

if TYPE_CHECKING:
    from provisioner.source import SourceDocument

DEFAULT_SETTINGS_FILE = Path("/etc/sftp-provisioner/settings.yaml")
DEFAULT_STATE_URL = "sqlite:////var/lib/sftp-provisioner/state.db"
DEFAULT_RELOAD = ("systemctl", "reload", "ssh")
DEFAULT_SYSLOG_RELOAD = ("systemctl", "restart", "rsyslog")
ENV_PREFIX = "SFTP_PROVISIONER_"
SMTP_USERNAME_ENV = ENV_PREFIX + "SMTP_USERNAME"
SMTP_PASSWORD_ENV = ENV_PREFIX + "SMTP_PASSWORD"


def _absolute(value: Path) -> Path:
    if not value.is_absolute():
        raise ValueError(f"must be an absolute path (found {value})")
    if ".." in value.parts:
        raise ValueError(f"must not contain '..' (found {value})")
    return value


AbsPath = Annotated[Path, AfterValidator(_absolute)]


class HostSettings(BaseModel):
    """Everything host-specific, with Debian defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state_url: str = Field(
        DEFAULT_STATE_URL,
        description=(
            "Where the state lives (sender numbers, the ledger of usernames, channel statuses): "
            "sqlite:////path for the embedded database, postgresql+psycopg://host/db when several"
            " hosts share it; a URL with a password belongs in the environment file, not here."
        ),
    )
    chroot_base: AbsPath = Field(
        Path("/srv/sftp"),
        description=(
            "The directory that holds one chroot per technical user, <chroot_base>/<user>."
        ),
    )
    archive_dir: AbsPath = Field(
        Path("/srv/sftp-archive"),
        description=(
            "Where the chroot of a removed channel is moved, with the files in it: uploaded data "
            "is never deleted."
        ),
    )
    keys_dir: AbsPath = Field(
        Path("/etc/ssh/sftp-provisioner/authorized_keys"),
        description=(
            "The root-owned directory of the authorized_keys files, one per technical user: "
            "<keys_dir>/<user>."
        ),
    )
    # "00-" so that Debian's "Include /etc/ssh/sshd_config.d/*.conf" reads it first: sshd
    # keeps the first value of most keywords.
    sshd_dropin: AbsPath = Field(
        Path("/etc/ssh/sshd_config.d/00-sftp-provisioner.conf"),
        description=(
            "The sshd configuration drop-in that holds the Match block for the technical users."
        ),
    )
    extrausers_dir: AbsPath = Field(
        Path("/var/lib/extrausers"),
        description=(
            "The libnss-extrausers directory whose passwd, group and shadow files hold the "
            "technical users."
        ),
    )
    # Outside work_dir: the state directory is 0700, and the gateway need not run as root.
    routing_table: AbsPath = Field(
        Path("/var/lib/sftp-gateway/routing.json"),
        description=(
            "The routing table for the gateway's intake: per sender number the username, quality,"
            " applications and certificates."
        ),
    )
    certificates_dir: AbsPath = Field(
        Path("/var/lib/sftp-gateway/certificates"),
        description=(
            "Where the reconciler installs each registered signing certificate as a PEM file "
            "(<sha256>.pem, root-owned, 0644) for the intake gate; the routing table names it."
        ),
    )
    work_dir: AbsPath = Field(
        Path("/var/lib/sftp-provisioner"),
        description=(
            "The reconciler's private directory (mode 0700): staging, backups during an apply, "
            "the contacts of the last run."
        ),
    )
    # Checked declarations, so that a run re-reads only the files that changed (JSON, owned
    # by the reconciler's user and closed to others; see provisioner/cache.py).
    cache_dir: AbsPath = Field(
        Path("/var/cache/sftp-provisioner"),
        description=(
            "Checked declarations and the record of the last apply, which only make runs faster; "
            "safe to delete."
        ),
    )
    audit_log: AbsPath = Field(
        Path("/var/log/sftp-provisioner/audit.jsonl"),
        description=(
            "The audit log: one JSON line per change applied (time, revision, channel, hashes "
            "before and after)."
        ),
    )
    lock_file: AbsPath = Field(
        Path("/run/lock/sftp-provisioner.lock"),
        description="The lock that keeps two runs on this host from overlapping.",
    )

    sftp_group: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] = Field(
        "sftpbatch",
        description=(
            "The group of every technical user; the sshd Match block applies to its members."
        ),
    )
    sftp_gid: Annotated[int, Field(ge=1000, le=2**31 - 2)] = Field(
        2900, description="The gid of sftp_group."
    )
    # The group of the gateway process that reads IN and writes OUT (0: it runs as root).
    gateway_gid: Annotated[int, Field(ge=0, le=2**31 - 2)] = Field(
        0,
        description=(
            "The group of the exchange directories, that of the gateway process which reads IN "
            "and writes OUT (0: it runs as root)."
        ),
    )
    uid_min: Annotated[int, Field(ge=1000, le=2**31 - 2)] = Field(
        200000, description="The lowest uid given to a technical user."
    )
    uid_max: Annotated[int, Field(ge=1000, le=2**31 - 2)] = Field(
        299999, description="The highest uid given to a technical user."
    )
    sender_start: Annotated[int, Field(ge=0, le=999999)] = Field(
        100000,
        description=(
            "The first sender number handed out; numbers are never reused, and 999999 is never "
            "handed out."
        ),
    )
    shell: AbsPath = Field(
        Path("/usr/sbin/nologin"),
        description="The login shell of the technical users, which never get a shell (SFTP only).",
    )

    sshd_binary: AbsPath = Field(
        Path("/usr/sbin/sshd"),
        description=(
            "The sshd that checks the staged configuration (sshd -t) and tells which OpenSSH "
            "version to render for."
        ),
    )
    # Checking the staged drop-in with `sshd -t` needs the binary; only a --root demo on a
    # machine without OpenSSH may turn it off, and the plan then says so.
    sshd_check: bool = Field(
        True,
        description=(
            "Check the staged sshd configuration with sshd -t before anything live changes; turn "
            "it off only for a --root trial on a machine without OpenSSH."
        ),
    )
    # Empty: no reload (the default under --root, where no live sshd reads the files).
    reload_command: list[str] = Field(
        default_factory=lambda: list(DEFAULT_RELOAD),
        description=(
            "The command that makes sshd read its configuration again; empty for no reload (the "
            "default under --root)."
        ),
    )
    # "9.2": render for this OpenSSH version instead of asking the installed sshd.
    openssh_version: Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]+$")] | None = Field(
        None,
        description=(
            "The OpenSSH version to render for, as MAJOR.MINOR (9.2); null asks the installed sshd."
        ),
    )
    listen_address: str | None = Field(
        None,
        description=(
            "An address sshd listens on in addition to those of the main sshd_config "
            "(ListenAddress); null adds none."
        ),
    )
    port: Annotated[int, Field(ge=1, le=65535)] | None = Field(
        None,
        description=(
            "A port sshd listens on in addition to those of the main sshd_config (Port), and the "
            "port senders are told; null adds none (senders are told 22)."
        ),
    )
    legacy_ssh_rsa: bool = Field(
        False,
        description=(
            "Accept the legacy ssh-rsa (SHA-1) signature algorithm that some payroll clients "
            "still need."
        ),
    )
    # Whether the host's own users may still log in with a password on this sshd. Off by
    # default: the drop-in then turns passwords off globally (see the template for why).
    host_password_logins: bool = Field(
        False,
        description=(
            "Let the host's own users still log in with a password on this sshd; off, the drop-in"
            " turns passwords off for everybody."
        ),
    )
    log_level: str = Field(
        "VERBOSE",
        description=(
            "sshd's LogLevel (VERBOSE logs the fingerprint of the key used for each login)."
        ),
    )
    sftp_log_level: str = Field(
        "INFO",
        description=(
            "The log level of internal-sftp (-l): INFO logs every file opened, written, renamed "
            "or removed."
        ),
    )
    max_auth_tries: Annotated[int, Field(ge=1, le=10)] = Field(
        3, description="sshd's MaxAuthTries: authentication attempts per connection."
    )
    login_grace_time: Annotated[int, Field(ge=5, le=600)] = Field(
        30,
        description="sshd's LoginGraceTime: seconds an unauthenticated connection may stay open.",
    )
    # Connection throttling (DHEat: one source opening hundreds of connections a second
    # starves everybody's key exchanges). Unauthenticated connections from one source
    # (address, or network of PerSourceNetBlockSize) beyond per_source_max_startups are
    # dropped (OpenSSH >= 8.5); max_startups is sshd's "start:rate:full" for all sources.
    max_startups: Annotated[str, Field(pattern=r"^[0-9]{1,5}(:[0-9]{1,3}:[0-9]{1,5})?$")] = Field(
        "10:30:100",
        description=(
            "sshd's MaxStartups (start:rate:full): unauthenticated connections from all sources "
            "together."
        ),
    )
    per_source_max_startups: Annotated[int, Field(ge=1, le=10000)] = Field(
        10,
        description=(
            "sshd's PerSourceMaxStartups: unauthenticated connections at a time from one source."
        ),
    )
    # IPv4:IPv6 prefix lengths that count as one source; /64 because an IPv6 client
    # usually holds a whole /64 and would otherwise be 2^64 sources.
    per_source_net_block_size: Annotated[
        str, Field(pattern=r"^(3[0-2]|[12]?[0-9]):(12[0-8]|1[01][0-9]|[1-9]?[0-9])$")
    ] = Field(
        "32:64",
        description=(
            "sshd's PerSourceNetBlockSize (IPv4:IPv6 prefix lengths): which addresses count as "
            "one source."
        ),
    )
    # OpenSSH >= 9.8 only (ignored when rendering for older versions): "no", "yes" or
    # sshd's list of penalties; the default spells out upstream's own defaults.
    per_source_penalties: Annotated[
        str,
        Field(
            pattern=r"^(no|yes|((crash|authfail|noauth|grace-exceeded|max|min):[0-9]+[smhdw]?"
            r"|max-sources[46]:[0-9]+|overflow6?:(deny-all|permissive))"
            r"( ((crash|authfail|noauth|grace-exceeded|max|min):[0-9]+[smhdw]?"
            r"|max-sources[46]:[0-9]+|overflow6?:(deny-all|permissive)))*)$"
        ),
    ] = Field(
        "crash:90s authfail:5s noauth:1s grace-exceeded:20s max:10m min:15s",
        description=(
            "sshd's PerSourcePenalties (OpenSSH >= 9.8): how long a source that crashes, fails or"
            " times out is refused; no, yes or a list of penalties."
        ),
    )
    # Uploads: what internal-sftp refuses (-P). setstat/fsetstat/lsetstat are what chmod,
    # chown, utime and truncate-by-attributes use: refusing them keeps a sender from setting
    # set-uid bits on an upload or changing the mode of its exchange directories (it owns
    # them); clients that preserve times/modes (`put -p`, paramiko chmod/utime) get
    # "permission denied" for that step only. symlink/hardlink: see the template.
    sftp_denied_requests: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,30}$")]] = Field(
        default_factory=lambda: ["setstat", "fsetstat", "lsetstat", "symlink", "hardlink"],
        description=(
            "The SFTP requests internal-sftp refuses (-P): by default no chmod, chown, utime or "
            "links."
        ),
    )
    # internal-sftp's umask (-u): new uploads are at most rwxr-x--- (never world-readable,
    # never group-writable), whatever mode the client asks for.
    sftp_umask: Annotated[str, Field(pattern=r"^0?[0-7]{3}$")] = Field(
        "0027",
        description=(
            "internal-sftp's umask for uploads (-u): 0027 makes new files at most rwxr-x---."
        ),
    )

    # internal-sftp logs every file operation to syslog from inside the chroot, so each
    # chroot gets a dev/ directory and rsyslog a listening socket there (one drop-in listing
    # them all); without it the audit trail of uploads and downloads is lost.
    syslog_sockets: bool = Field(
        True,
        description=(
            "Give each chroot a dev/log socket (one rsyslog drop-in lists them), so that "
            "internal-sftp's log of every file operation reaches syslog."
        ),
    )
    rsyslog_dropin: AbsPath = Field(
        Path("/etc/rsyslog.d/50-sftp-provisioner.conf"),
        description="The rsyslog drop-in that opens a log socket in each chroot.",
    )
    syslog_reload_command: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SYSLOG_RELOAD),
        description=(
            "The command that makes rsyslog read its drop-in again; empty for none (the default "
            "under --root)."
        ),
    )

    templates_dir: AbsPath | None = Field(
        None,
        description=(
            "A directory of site templates that override the shipped ones of the same name (sshd,"
            " accounts, notifications...); null uses the shipped ones."
        ),
    )
    hostname: str = Field(
        default_factory=socket.getfqdn,
        description=(
            "The host name written into the rendered files and mails; default: the machine's "
            "fully qualified name."
        ),
    )
    # This host's name in a state database that several hosts share: in the runs it records,
    # the revisions it serves per channel (`status`) and its heartbeat. Never rendered.
    host_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")] = Field(
        default_factory=socket.gethostname,
        description=(
            "This host's name in a state that several hosts share (runs, heartbeat, which host "
            "serves which revision); default: the machine's host name."
        ),
    )
    # Hosts sharing the state fire in the same slot; the one whose commit finds the state
    # moved on by another plans again and retries, up to this many attempts in all, after a
    # random pause that grows from state_retry_min_delay up to state_retry_max_delay.
    state_retries: Annotated[int, Field(ge=1, le=20)] = Field(
        5,
        description=(
            "Attempts in all when another host moved the shared state on during a run (it plans "
            "again each time)."
        ),
    )
    state_retry_min_delay: Annotated[float, Field(ge=0, le=60)] = Field(
        0.2, description="The shortest random pause before such a retry, in seconds."
    )
    state_retry_max_delay: Annotated[float, Field(ge=0, le=300)] = Field(
        2.0, description="The longest random pause before such a retry, in seconds."
    )

    # --- operations: scheduled reconcile, heartbeat, notifications -------------------------
    # The declarations checkout that `reconcile`, `status` and `systemd` use when none is given.
    declarations: AbsPath | None = Field(
        None,
        description=(
            "The checkout of the declarations repository that reconcile, status and systemd use "
            "when none is given."
        ),
    )
    # The wall-clock interval of the reconcile runs ("30m": at :00 and :30).
    reconcile_every: Annotated[str, Field(pattern=r"^[0-9]+[smh]$")] = Field(
        "30m",
        description=(
            "The interval of the scheduled runs on the wall clock (30m: at :00 and :30); it must "
            "divide an hour or a day in whole hours."
        ),
    )
    # Heartbeat: written after every run, so that a dead reconciler is noticed.
    status_file: AbsPath = Field(
        Path("/var/lib/sftp-provisioner/status.json"),
        description="The heartbeat file (JSON) written after every run, successful or not.",
    )
    # Read by the Prometheus node exporter's textfile collector (Debian's default directory).
    metrics_file: AbsPath = Field(
        Path("/var/lib/prometheus/node-exporter/sftp_provisioner.prom"),
        description=(
            "The Prometheus metrics written after every run, for the node exporter's textfile "
            "collector."
        ),
    )
    # The ledger CI reads (`validate --ledger`): written after every run, next to the heartbeat.
    ledger_file: AbsPath = Field(
        Path("/var/lib/sftp-provisioner/ledger.json"),
        description=(
            "The ledger written after every run (JSON, mode 0644): per quality its sender "
            "number, technical user and status, and every retired or reserved username, for "
            "`provisioner validate --ledger` in the pull requests. No contact data, no keys."
        ),
    )
    ledger_max_age: Annotated[str, Field(pattern=r"^[1-9][0-9]*[mhd]$")] = Field(
        "2h",
        description=(
            "A ledger older than this (90m, 2h, 1d) is a warning where one is read: a run "
            "writes it every reconcile_every, so an older one means the host stopped publishing."
        ),
    )
    # Notifications to the contacts: one .eml file each in the outbox ("outbox"), or sent
    # through an SMTP relay ("smtp"; the outbox then holds what could not be sent yet).
    notifications: bool = Field(
        True,
        description=(
            "Send notifications to the contacts (channel active or removed, certificates and keys"
            " expiring, quality refused)."
        ),
    )
    notify_transport: Literal["outbox", "smtp"] = Field(
        "outbox",
        description=(
            "How notifications leave: outbox (one .eml file per message in outbox_dir) or smtp "
            "(sent through smtp_host)."
        ),
    )
    outbox_dir: AbsPath = Field(
        Path("/var/spool/sftp-provisioner/outbox"),
        description=(
            "Where messages are written (outbox) or queued until the relay takes them (smtp)."
        ),
    )
    mail_from: Annotated[str, Field(pattern=r"^[^@\s<>]+@[^@\s<>]+$")] | None = Field(
        None,
        description="The sender address of the notifications; null: sftp-provisioner@<hostname>.",
    )
    smtp_host: str | None = Field(
        None,
        description=(
            "The SMTP relay (required with notify_transport: smtp); credentials come from the "
            "environment only."
        ),
    )
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = Field(
        587, description="The SMTP relay's port."
    )
    smtp_starttls: bool = Field(
        True,
        description=(
            "Use STARTTLS with the relay, verifying its certificate; credentials are never sent "
            "without it."
        ),
    )
    # A CA bundle for the relay's certificate (default: the system's trust store).
    smtp_ca_file: AbsPath | None = Field(
        None,
        description=(
            "A CA bundle that verifies the relay's certificate; null uses the system's trust store."
        ),
    )
    smtp_timeout: Annotated[int, Field(ge=1, le=600)] = Field(
        30, description="Seconds to wait for the SMTP relay."
    )
    # What a sender is told to connect to (default: hostname and port).
    public_host: str | None = Field(
        None,
        description=(
            "The host name senders are told to connect to in the channel-active message; null: "
            "hostname."
        ),
    )
    public_port: Annotated[int, Field(ge=1, le=65535)] | None = Field(
        None, description="The port senders are told to connect to; null: port, else 22."
    )
    # The mass-removal guard: a plan that would remove more channels than the larger of
    # max_removals and max_removals_percent % of the registered (not removed) channels is
    # refused as a whole by apply and reconcile, nothing removed and nothing applied, unless
    # `--allow-removals N` accepts that many this run. An emptied checkout, a bad merge or a
    # wrong path must never take the gateway down; raise these for a planned mass removal.
    max_removals: Annotated[int, Field(ge=0)] = Field(
        10,
        description=(
            "The mass-removal guard: a plan removing more channels than this (or than "
            "max_removals_percent, whichever is larger) is refused whole."
        ),
    )
    max_removals_percent: Annotated[float, Field(ge=0, le=100)] = Field(
        5.0,
        description=(
            "The mass-removal guard's threshold as a percentage of the registered channels."
        ),
    )
    # --- the intake gate (`provisioner intake`) ---------------------------------------------
    # Sets move by rename, so both directories must be on the file system of chroot_base.
    intake_dir: AbsPath = Field(
        Path("/srv/sftp-intake"),
        description=(
            "Where the intake gate moves accepted file sets, one directory per environment "
            "(R, T, S) holding one directory per set with its files and record.json; must be on "
            "the file system of chroot_base."
        ),
    )
    quarantine_dir: AbsPath = Field(
        Path("/srv/sftp-quarantine"),
        description=(
            "Where the intake gate moves refused file sets (never deleted), one directory per "
            "set with its files and record.json; must be on the file system of chroot_base."
        ),
    )
    intake_set_max_age: Annotated[int, Field(ge=60)] = Field(
        86400,
        description=(
            "Seconds a set without its GO file is left alone; after that it is refused "
            "(anomaly 130) and moved to the quarantine."
        ),
    )
    intake_max_file_size: Annotated[int, Field(ge=1)] = Field(
        1 << 30,
        description="The largest uploaded file the intake gate accepts, in bytes (anomaly 184).",
    )
    intake_stability: Annotated[float, Field(ge=0, le=3600)] = Field(
        10.0,
        description=(
            "Seconds a file's size, modification and change times must have stood still "
            "before the intake gate takes it: a file still being written is never taken."
        ),
    )
    intake_poll_interval: Annotated[float, Field(gt=0, le=3600)] = Field(
        5.0,
        description=(
            "Seconds between two scans of the upload directories in `provisioner intake "
            "--poll` (network file systems, where file events are not seen)."
        ),
    )
    # SMTP credentials are never settings: they come from the environment only
    # (SMTP_USERNAME_ENV, SMTP_PASSWORD_ENV), so they stay out of files and logs.
    # Set by --root; recorded so that plans made for one root are not applied to another.
    root: AbsPath | None = Field(
        None,
        description=(
            "Set by --root, not in a settings file: the trial root that prefixes every managed "
            "path, recorded so that a plan made for one root is not applied to another."
        ),
    )

    @property
    def uid_range(self) -> tuple[int, int]:
        return (self.uid_min, self.uid_max)

    @property
    def staging_dir(self) -> Path:
        return self.work_dir / "staging"

    @property
    def backup_dir(self) -> Path:
        return self.work_dir / "backup"

    def chroot(self, user: str) -> Path:
        return self.chroot_base / user

    def keys_file(self, user: str) -> Path:
        return self.keys_dir / user

    def certificate_file(self, sha256: str) -> Path:
        return self.certificates_dir / f"{sha256}.pem"

    @property
    def sender_host(self) -> str:
        return self.public_host or self.hostname

    @property
    def sender_port(self) -> int:
        return self.public_port or self.port or 22

    @property
    def mail_sender(self) -> str:
        return self.mail_from or f"sftp-provisioner@{self.hostname}"

    def rooted(self, root: Path) -> HostSettings:
        """The same settings with every managed path under `root`."""
        root = root.resolve()
        updates: dict[str, Any] = {"root": root}
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if name in ("root", "shell", "sshd_binary", "templates_dir"):
                continue
            if isinstance(value, Path) and info.annotation in (AbsPath, Path):
                updates[name] = root / PurePosixPath(value).relative_to("/")
        if tuple(self.reload_command) == DEFAULT_RELOAD:
            updates["reload_command"] = []
        if tuple(self.syslog_reload_command) == DEFAULT_SYSLOG_RELOAD:
            updates["syslog_reload_command"] = []
        if self.state_url == DEFAULT_STATE_URL:
            db = root / "var/lib/sftp-provisioner/state.db"
            updates["state_url"] = f"sqlite:///{db}"
        return self.model_copy(update=updates)


_ENV_LIST_FIELDS = {"reload_command", "syslog_reload_command", "sftp_denied_requests"}


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in HostSettings.model_fields:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        values[name] = raw.split() if name in _ENV_LIST_FIELDS else raw
    return values


def load_settings(
    path: Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    root: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> HostSettings:
    """File, then environment, then flags; `root` last so it prefixes the final paths."""
    environ = os.environ if environ is None else environ
    path, explicit = _settings_file(path, root, environ)
    display = str(path) if path else "(defaults)"
    doc = _read_settings_file(path, display, explicit) if path is not None else None
    data: dict[str, Any] = dict(doc.data) if doc is not None else {}
    data.update(_from_env(environ))
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        settings = HostSettings.model_validate(data)
    except ValidationError as exc:
        raise _refusal(exc, display, doc, environ) from None
    if settings.uid_min > settings.uid_max:
        raise SettingsError("uid_min must not be greater than uid_max", location=Location(display))
    if root is not None:
        settings = settings.rooted(root)
    return settings


def _settings_file(
    path: Path | None, root: Path | None, environ: Mapping[str, str]
) -> tuple[Path | None, bool]:
    """The settings file to read, if any, and whether it was asked for (a file asked for
    must exist; a default one may be absent)."""
    if path is not None:
        return path, True
    if environ.get(ENV_PREFIX + "SETTINGS"):
        return Path(environ[ENV_PREFIX + "SETTINGS"]), True
    if root is None:
        return (DEFAULT_SETTINGS_FILE if DEFAULT_SETTINGS_FILE.exists() else None), False
    # A trial root is a host of its own: its settings file is the one `provisioner init
    # --root` writes there, never the real host's.
    rooted_default = root / DEFAULT_SETTINGS_FILE.relative_to("/")
    return (rooted_default if rooted_default.is_file() else None), False


def _read_settings_file(path: Path, display: str, explicit: bool) -> SourceDocument | None:
    """The settings file's document, or None when it holds only comments (every setting
    keeps its default)."""
    from provisioner.source import load_document

    if not path.exists() and explicit:
        raise SettingsError("the settings file does not exist", location=Location(display))
    doc, problems = load_document(path, display)
    if not problems:
        return doc
    first = problems[0]
    # The loader speaks of declarations; say what a settings file must be instead.
    if first.code == "empty-file":
        return None
    if first.code == "not-a-mapping":
        raise SettingsError(
            "a settings file is a mapping of setting names to values (name: value)",
            location=first.location,
            code=first.code,
        )
    raise SettingsError(first.message, location=first.location, code=first.code)


def _refusal(
    exc: ValidationError,
    display: str,
    doc: SourceDocument | None,
    environ: Mapping[str, str],
) -> SettingsError:
    """The first setting at fault, named where it was given: the file, or the environment."""
    err = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in err["loc"])
    where = Location(display, yaml_path=field)
    unknown = err["type"] == "extra_forbidden"
    if doc is not None and err["loc"]:
        # An unknown name is shown at the name, a bad value at the value.
        where = doc.location(tuple(err["loc"])[:1], key=unknown)
    if unknown:
        return _unknown_setting(field, where)
    given = {k[len(ENV_PREFIX) :] for k in environ if k.startswith(ENV_PREFIX)}
    if field.upper() in given:
        source = "environment variable " + ENV_PREFIX + field.upper()
    else:
        source = f"setting '{field}'"
    return SettingsError(f"{source}: {err['msg']}", location=where)


def _unknown_setting(field: str, where: Location) -> SettingsError:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", field):
        # Not a setting's name at all: the file given is some other file (a link to
        # /etc/shadow), whose content is not ours to print.
        return SettingsError(
            "this is not a settings file: its first key is no setting name", location=where
        )
    close = difflib.get_close_matches(field, list(HostSettings.model_fields), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return SettingsError(f"unknown setting '{field}'{hint}", location=where)
