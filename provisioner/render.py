"""Rendering: accepted channels and their registrations become the desired tree of the host.

Pure: no file is read or written here except the templates. Every byte of OpenSSH and file
syntax comes from `templates/`; this module only builds the template contexts and decides the
owner and mode of each path.
"""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, partial
from pathlib import Path
from typing import Any, Literal

import jinja2

from provisioner.authorized_keys import ExpectedKey
from provisioner.catalogue import load_catalogue
from provisioner.certificates import CertificateInfo
from provisioner.declarations import FileResult, ResolvedKey
from provisioner.encoding import register
from provisioner.errors import SettingsError
from provisioner.quality_id import QualityId
from provisioner.resources import shipped
from provisioner.settings import HostSettings
from provisioner.state.model import Registration
from provisioner.template_contexts import (
    Account,
    AuthorizedKeys,
    CertificatePem,
    Group,
    GroupFile,
    KeyLine,
    Passwd,
    Routing,
    Rsyslog,
    Shadow,
    SshdDropin,
    TemplateContext,
)

# The exchange directories a sender sees in its chroot (names fixed by the gateway).
UPLOAD_DIRS = ("IN", "INTEST", "INTEST-S")
DOWNLOAD_DIRS = ("OUT", "OUTTEST", "OUTTEST-S")

Kind = Literal["file", "dir"]


@dataclass(frozen=True, slots=True)
class Desired:
    """One managed path as it should be."""

    path: Path
    kind: Kind
    owner: int
    group: int
    mode: int
    content: bytes | None = None
    # The channel a path belongs to (`str` of its QualityId); None for host-wide files.
    channel: str | None = None
    role: str = ""
    # A file not rendered in this run because its inputs and the live file are as the last
    # apply left them (see `render_host`): its content's hash and size stand for the content.
    digest: str = ""
    size: int = 0


class Channel:
    """An accepted declaration with its registration: what gets provisioned.

    The whole checked result (model, keys) is needed only to render the channel; a channel
    the last apply left as it should be is recognised without it, so it may be read lazily.
    """

    __slots__ = ("_load", "_result", "display", "registration")

    def __init__(
        self,
        registration: Registration,
        display: str,
        result: FileResult | None = None,
        load: Callable[[], FileResult] | None = None,
    ) -> None:
        if result is None and load is None:
            raise ValueError("a channel needs its result or a way to load it")
        self.registration = registration
        self.display = display
        self._result = result
        self._load = load

    @property
    def result(self) -> FileResult:
        if self._result is None:
            assert self._load is not None
            self._result = self._load()
        return self._result

    @property
    def user(self) -> str:
        return self.registration.technical_user

    @property
    def enterprise_number(self) -> str:
        return self.registration.enterprise_number

    @property
    def qid(self) -> QualityId:
        return self.registration.qid

    @property
    def key(self) -> str:
        """The channel's name in paths, records and plans: its quality identity as text."""
        return str(self.registration.qid)


@dataclass(slots=True)
class DesiredTree:
    nodes: dict[Path, Desired] = field(default_factory=dict)

    def add(self, node: Desired) -> None:
        self.nodes[node.path] = node

    def __iter__(self) -> Any:
        return iter(self.nodes.values())


def template_environment(settings: HostSettings) -> jinja2.Environment:
    return _environment(str(settings.templates_dir) if settings.templates_dir else None)


@cache
def _environment(override: str | None) -> jinja2.Environment:
    # A site's override directory comes first; templates it lacks come from the shipped set.
    paths = [override] if override else []
    paths.append(str(shipped("templates")))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(paths),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        # Config files, not HTML: nothing is escaped. Values are validated upstream, and the
        # templates pass each one through the check filter of its target syntax
        # (provisioner.encoding), which raises instead of escaping.
        autoescape=False,  # noqa: S701
    )
    return register(env)


def _render(env: jinja2.Environment, context: TemplateContext) -> bytes:
    name = context.template
    try:
        return env.get_template(name).render(**context.variables()).encode("utf-8")
    except jinja2.TemplateNotFound as exc:
        raise SettingsError(f"template {exc.name} not found in {env.loader}") from None
    except jinja2.TemplateError as exc:
        raise SettingsError(f"template {name} cannot be rendered: {exc}") from None


_VERSION = re.compile(r"OpenSSH_(\d+)\.(\d+)")


@cache
def _detect_openssh(binary: str) -> tuple[int, int] | None:
    for command in ([binary, "-V"], ["ssh", "-V"]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        match = _VERSION.search(done.stderr + done.stdout)
        if match:
            return int(match.group(1)), int(match.group(2))
    return None


def openssh_version(settings: HostSettings) -> tuple[int, int]:
    if settings.openssh_version:
        major, minor = settings.openssh_version.split(".")
        return int(major), int(minor)
    found = _detect_openssh(str(settings.sshd_binary))
    if found is None:
        raise SettingsError(
            f"cannot tell the OpenSSH version: {settings.sshd_binary} is missing; install "
            "openssh-server or set openssh_version in the settings"
        )
    return found


def _expiry_time(k: ResolvedKey) -> str | None:
    return k.expires.astimezone(UTC).strftime("%Y%m%d%H%MZ") if k.expires else None


def _key_lines(keys: Sequence[ResolvedKey]) -> list[KeyLine]:
    # The key line goes as validated: keys.py refused line breaks in the comment, and the
    # template's check filter stops the rendering if one ever got through (never replaced).
    return [
        KeyLine(
            k.key.openssh(comment=True),
            k.key.fingerprint,
            list(k.from_) if k.from_ else None,
            _expiry_time(k),
        )
        for k in keys
    ]


def expected_keys(keys: Sequence[ResolvedKey]) -> list[ExpectedKey]:
    """What the authorized_keys file of these keys must read back as (see authorized_keys)."""
    return [
        ExpectedKey(
            k.key.algorithm, k.key.blob, tuple(k.from_) if k.from_ else None, _expiry_time(k)
        )
        for k in keys
    ]


def routing_entry(channel: Channel, settings: HostSettings) -> dict[str, Any]:
    """One sender of the routing table (version 2): every quality with structured messages,
    whatever its channels; `username` is null for one without an SFTP channel, which has no
    account on this host but sends files with its sender number all the same."""
    decl = channel.result.declaration
    assert decl is not None  # accepted channels always have a model
    catalogue = load_catalogue()
    sm = decl.structured_messages
    channels = sm.channels.declared()
    applications = []
    seen: set[str] = set()
    for carrier in channels.values():
        for app in carrier.applications:
            if app in seen:
                continue
            seen.add(app)
            carriers = [name for name, ch in channels.items() if app in ch.applications]
            preferred = sm.preferred_channels.get(app) or carriers[0]
            applications.append(
                {
                    "application": app,
                    "purpose_codes": [p.code for p in catalogue.applications[app].purpose_codes],
                    # Which channels carry it: the intake gate refuses (154) an SFTP upload for
                    # an application the quality sends over FTP only.
                    "channels": carriers,
                    "preferred_channel": preferred,
                }
            )
    return {
        "sender_number": channel.registration.sender,
        "username": channel.user if "sftp" in channels else None,
        "enterprise_number": channel.enterprise_number,
        "quality": decl.quality.name,
        "quality_type": decl.quality.type,
        "channels": list(channels),
        # The contact's language: the intake gate's notices are written in it.
        "language": sm.contact.language,
        "applications": applications,
        "certificates": routing_certificates(channel, settings),
    }


def routing_certificates(channel: Channel, settings: HostSettings) -> list[dict[str, Any]]:
    """The certificates the intake gate checks this sender's signatures against:
    `[{sha256, not_before, not_after, pem_path}]`, sha256 the lower-case hex of the DER, the
    dates in UTC, pem_path the PEM file the reconciler installs (see `render_channel`)."""
    return [
        {
            "sha256": sha256,
            "not_before": _utc_text(info.not_before),
            "not_after": _utc_text(info.not_after),
            "pem_path": str(settings.certificate_file(sha256)),
        }
        for info, sha256, _der in channel_certificates(channel.result)
    ]


def channel_certificates(result: FileResult) -> list[tuple[CertificateInfo, str, bytes]]:
    """(figures, SHA-256 of the DER, DER) of each certificate a channel registers: the
    current one, and during a renewal the next one."""
    infos = [c for c in (result.certificate, result.next_certificate) if c is not None]
    ders = result.certificate_ders
    if len(infos) != len(ders):
        # Only an accepted declaration is rendered, and it has both or neither of each.
        raise ValueError(f"{result.display}: certificates and their DER do not pair up")
    return [
        (info, hashlib.sha256(der).hexdigest(), der) for info, der in zip(infos, ders, strict=True)
    ]


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pem_lines(der: bytes) -> list[str]:
    text = base64.b64encode(der).decode("ascii")
    return [text[i : i + 64] for i in range(0, len(text), 64)]


# Host-wide files whose size grows with the number of channels: rendering them is worth
# skipping when nothing they are made of changed (the sshd drop-in is always rendered: it is
# small, and `sshd -t` checks it before every apply).
MEMO_ROLES = ("passwd", "group", "shadow", "routing", "rsyslog")


def host_file_paths(settings: HostSettings) -> dict[str, Path]:
    """The path of each big host-wide file by role: where `render_host` puts it, and what
    `compute` reads to see whether it may be taken from `known`."""
    eu = settings.extrausers_dir
    paths = {
        "passwd": eu / "passwd",
        "group": eu / "group",
        "shadow": eu / "shadow",
        "routing": settings.routing_table,
    }
    if settings.syslog_sockets:
        paths["rsyslog"] = settings.rsyslog_dropin
    return paths


def render_host(
    settings: HostSettings,
    registrations: Iterable[Registration],
    routing: dict[str, dict[str, Any]],
    known: dict[str, tuple[str, int]] | None = None,
    openssh: tuple[int, int] | None = None,
) -> list[Desired]:
    """The host-wide paths: sshd drop-in, accounts, routing table, rsyslog, managed dirs.

    `registrations`: every channel with an account (accepted and held); `routing`: their
    entries by sender number. `known`: (hash, size) by role of files whose content is known
    to be what rendering would give (the caller vouches for it); they are not rendered.
    `openssh`: the OpenSSH version the planner's host view reported (else this host's).
    """
    known = known or {}
    paths = host_file_paths(settings)
    env = template_environment(settings)
    version = openssh or openssh_version(settings)
    nodes: list[Desired] = []
    root = 0

    nodes.append(
        Desired(
            settings.sshd_dropin,
            "file",
            root,
            root,
            0o644,
            _render(env, SshdDropin(s=settings, openssh_version=version)),
            role="sshd-dropin",
        )
    )

    def file(path: Path, mode: int, role: str, render: Callable[[], bytes]) -> Desired:
        if role in known:
            digest, size = known[role]
            return Desired(
                path, "file", root, root, mode, None, role=role, digest=digest, size=size
            )
        return Desired(path, "file", root, root, mode, render(), role=role)

    registrations = sorted(registrations, key=lambda r: r.technical_user)
    accounts = [
        Account(
            r.technical_user,
            _uid(r),
            settings.sftp_gid,
            f"sftp-provisioner {r.qid}",
            "/",
            str(settings.shell),
        )
        for r in registrations
    ]
    # The SFTP group is every technical user's primary group, which is all `Match Group`
    # needs. Listing 10,000 members on its line made each group lookup sshd does while
    # authenticating parse 200 KB: logins got 40 % slower with the number of channels.
    group = Group(settings.sftp_group, settings.sftp_gid, [])
    eu = settings.extrausers_dir
    nodes.append(Desired(eu, "dir", root, root, 0o755, role="extrausers"))
    # shadow is not world-readable even though it holds no hash: least privilege.
    contexts: tuple[tuple[str, int, TemplateContext], ...] = (
        ("passwd", 0o644, Passwd(accounts)),
        ("group", 0o644, GroupFile(group)),
        ("shadow", 0o640, Shadow(accounts)),
    )
    for name, mode, context in contexts:
        nodes.append(file(paths[name], mode, name, partial(_render, env, context)))

    nodes.append(
        file(
            paths["routing"],
            0o644,
            "routing",
            lambda: _render(env, Routing([routing[k] for k in sorted(routing)])),
        )
    )

    if settings.syslog_sockets:

        def rsyslog() -> bytes:
            base = str(settings.chroot_base)
            sockets = [f"{base}/{r.technical_user}/dev/log" for r in registrations]
            return _render(env, Rsyslog(sockets))

        nodes.append(file(paths["rsyslog"], 0o644, "rsyslog", rsyslog))

    nodes.append(Desired(settings.keys_dir, "dir", root, root, 0o755, role="keys-dir"))
    # The intake gate reads the PEM files here; a file no routing entry names any more is
    # removed (reconcile.stale_certificates).
    nodes.append(
        Desired(settings.certificates_dir, "dir", root, root, 0o755, role="certificates-dir")
    )
    nodes.append(Desired(settings.chroot_base, "dir", root, root, 0o755, role="chroot-base"))
    return nodes


def _uid(registration: Registration) -> int:
    # Only qualities with an SFTP channel are rendered, and allocate gives each a uid.
    if registration.uid is None:
        raise ValueError(f"quality {registration.qid} has an SFTP channel but no uid")
    return registration.uid


def render_channel(settings: HostSettings, channel: Channel) -> list[Desired]:
    """The paths of one channel: its authorized_keys file, its certificates for the intake
    gate and its chroot."""
    env = template_environment(settings)
    gateway_gid = settings.gateway_gid
    user, uid, en = channel.user, _uid(channel.registration), channel.key
    keys = _render(env, AuthorizedKeys(user, _key_lines(channel.result.keys)))
    # Root-owned and not writable by the user: a technical user cannot add keys of its own.
    nodes = [Desired(settings.keys_file(user), "file", 0, 0, 0o644, keys, en, "authorized-keys")]
    for _info, sha256, der in channel_certificates(channel.result):
        # Named by fingerprint: two channels registering one certificate share its file.
        pem = _render(env, CertificatePem(_pem_lines(der)))
        path = settings.certificate_file(sha256)
        nodes.append(Desired(path, "file", 0, 0, 0o644, pem, en, "certificate"))
    chroot = settings.chroot(user)
    # sshd refuses a chroot that is not root-owned or that others can write.
    nodes.append(Desired(chroot, "dir", 0, 0, 0o755, channel=en, role="chroot"))
    if settings.syslog_sockets:
        # rsyslog creates the log socket here; root-owned so the sender cannot replace it.
        nodes.append(Desired(chroot / "dev", "dir", 0, 0, 0o755, channel=en, role="chroot-dev"))
    for name in UPLOAD_DIRS + DOWNLOAD_DIRS:
        # The sender writes (IN*) or reads and deletes (OUT*); the gateway's group reads IN*
        # and writes OUT*. setgid keeps the gateway's group on every file a sender uploads.
        nodes.append(
            Desired(
                chroot / name,
                "dir",
                uid,
                gateway_gid,
                0o2770,
                channel=en,
                role="upload-dir" if name in UPLOAD_DIRS else "download-dir",
            )
        )
    return nodes
