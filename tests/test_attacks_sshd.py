"""Issue 9, tried as an attacker would, against the REAL sshd after a REAL `provisioner apply`.

Each attack first gets a CONTROL: the line the old renderer produced (or the key itself) is
written by hand into the authorized_keys file of a provisioned user, and the attacker logs
in - so the attack is real on this sshd, and a refusal later is the product's doing. Then
the PRODUCT PATH: the hostile declaration goes through `provisioner validate` (exit 1, the
right code at the right line) and `provisioner apply` (that quality refused, the others
applied), and the attacker's login is refused by the real sshd.

Also here: the throttling of unauthenticated connections (DHEat) and what a sender can do
to the modes of its uploads and exchange directories.

Needs root, openssh-server/-client and libnss-extrausers (see tests/e2e_support.py for what
it changes on the machine and how that is undone).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from paramiko.sftp import CMD_HANDLE, CMD_OPEN, SFTP_FLAG_CREATE, SFTP_FLAG_TRUNC, SFTP_FLAG_WRITE
from paramiko.sftp_attr import SFTPAttributes
from paramiko.sftp_file import SFTPFile

pytest.register_assert_rewrite("sshd_harness", "e2e_support")

from e2e_support import (  # noqa: E402
    HOST,
    JAIL_ROOT,
    Gateway,
    Sender,
    dump_yaml,
    enterprise_number,
    make_sender,
    mode_of,
    openssh_sftp,
    paramiko_session,
    provisioned_gateway,
)
from sshd_harness import (  # noqa: E402
    KeyPair,
    generate_keypair,
    getent,
    paramiko_transport,
    ssh_command,
    sshd_effective,
    write_file,
)

pytest_plugins = ("sshd_harness",)
pytestmark = [pytest.mark.sshd, pytest.mark.root]

TOKEN = secrets.token_hex(3)
VICTIM = f"victim{TOKEN}"  # an honest quality: its changes must be applied next to a refusal
MALLORY = f"mallory{TOKEN}"  # the attacker's own, established quality
CONTROL = f"control{TOKEN}"  # its authorized_keys is written by hand for the controls
EVE = f"eveinject{TOKEN}"  # a new quality declared in a file with a hostile name
EVE_DIR = f"evedirect{TOKEN}"  # ... and one in a directory with a hostile name

# The Ed25519 identity point (y = 1): R = that point, S = 0 verifies for every message.
IDENTITY_ED25519 = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
)
FORGED_ED25519_SIGNATURE = b"\x01" + b"\x00" * 31 + b"\x00" * 32


def _senders(work: Path) -> list[Sender]:
    return [
        make_sender(work, enterprise_number(3_000_001), VICTIM),
        make_sender(work, enterprise_number(3_000_002), MALLORY),
        make_sender(work, enterprise_number(3_000_003), CONTROL),
    ]


@pytest.fixture(scope="module")
def gw(sftp_area: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    decls = tmp_path_factory.mktemp("declarations")
    with provisioned_gateway(sftp_area, decls, _senders) as gateway:
        yield gateway


# =========================================================================================
# attacker tooling
# =========================================================================================


def _ssh_string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _mpint(value: int) -> bytes:
    raw = value.to_bytes(value.bit_length() // 8 + 1, "big")  # leading 0: positive
    return _ssh_string(raw)


class ForgedEd25519Key(paramiko.PKey):
    """A "private key" for the identity point: nobody holds a secret, the signature is a
    constant that verifies for every message."""

    def __init__(self) -> None:
        self._blob = base64.b64decode(IDENTITY_ED25519.split()[1])

    def get_name(self) -> str:
        return "ssh-ed25519"

    @property
    def algorithm_name(self) -> str:
        return "ED25519"

    def get_bits(self) -> int:
        return 256

    def asbytes(self) -> bytes:
        return self._blob

    def can_sign(self) -> bool:
        return True

    def sign_ssh_data(self, data: bytes, algorithm: str | None = None) -> paramiko.Message:
        m = paramiko.Message()
        m.add_string("ssh-ed25519")
        m.add_string(FORGED_ED25519_SIGNATURE)
        return m


_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % d for d in range(2, int(p**0.5) + 1))]


def _probably_prime(n: int, rounds: int = 32) -> bool:
    if any(n % p == 0 for p in _SMALL_PRIMES):
        return n in _SMALL_PRIMES
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(rounds):
        x = pow(secrets.randbelow(n - 3) + 2, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


# DER prefixes of the PKCS#1 v1.5 DigestInfo (RFC 8017, 9.2 note 1).
_DIGEST_INFO = {
    "rsa-sha2-256": (hashlib.sha256, bytes.fromhex("3031300d060960864801650304020105000420")),
    "rsa-sha2-512": (hashlib.sha512, bytes.fromhex("3051300d060960864801650304020305000440")),
}


class WeakRSAKey(paramiko.PKey):
    """RSA with n = 3 * q: anyone who divides the public modulus by 3 can sign."""

    E = 65537

    def __init__(self) -> None:
        low, high = (1 << 2047) // 3 + 1, ((1 << 2048) - 1) // 3  # n = 3q has 2048 bits
        for _ in range(200_000):  # bounded: about 1 in 700 odd numbers here is prime
            q = (low + secrets.randbelow(high - low)) | 1
            if (q - 1) % self.E and _probably_prime(q):
                break
        else:  # pragma: no cover - astronomically unlikely
            raise AssertionError("no prime found")
        self.n = 3 * q
        assert self.n.bit_length() == 2048
        self.d = pow(self.E, -1, (3 - 1) * (q - 1))
        self._blob = _ssh_string(b"ssh-rsa") + _mpint(self.E) + _mpint(self.n)

    def get_name(self) -> str:
        return "ssh-rsa"

    @property
    def algorithm_name(self) -> str:
        return "RSA"

    def get_bits(self) -> int:
        return self.n.bit_length()

    def asbytes(self) -> bytes:
        return self._blob

    def can_sign(self) -> bool:
        return True

    def line(self, comment: str) -> str:
        return f"ssh-rsa {base64.b64encode(self._blob).decode()} {comment}"

    def sign_ssh_data(self, data: bytes, algorithm: str | None = None) -> paramiko.Message:
        algorithm = algorithm if algorithm in _DIGEST_INFO else "rsa-sha2-512"
        hash_fn, prefix = _DIGEST_INFO[algorithm]
        k = (self.n.bit_length() + 7) // 8
        t = prefix + hash_fn(data).digest()
        em = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
        signature = pow(int.from_bytes(em, "big"), self.d, self.n).to_bytes(k, "big")
        m = paramiko.Message()
        m.add_string(algorithm)
        m.add_string(signature)
        return m


def _slashless_key(gw: Gateway, name: str) -> KeyPair:
    """An attacker key whose base64 has no '/': it must fit in a file name and through
    ip_network's '/' split."""
    for i in range(100):
        key = generate_keypair(gw.work / f"{name}-{i}", "ed25519", comment="attacker")
        if "/" not in key.line:
            return key
    raise AssertionError("no key without '/' in 100 tries")


def _login(gw: Gateway, user: str, key: KeyPair | paramiko.PKey) -> bool:
    """paramiko login and a listing of "/": True when sshd let it in."""
    pkey: Any = key if isinstance(key, paramiko.PKey) else key.private
    try:
        transport = paramiko_transport(user, pkey, gw.port, host=HOST)
    except paramiko.AuthenticationException:
        return False
    try:
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert sftp is not None
        assert sorted(sftp.listdir("/")) == JAIL_ROOT
        return True
    finally:
        transport.close()


@contextlib.contextmanager
def _hand_written_keys(gw: Gateway, user: str, extra: str) -> Iterator[Path]:
    """The CONTROL: `extra` appended by hand to `user`'s authorized_keys; restored after."""
    path = gw.keys_file(user)
    original = path.read_bytes()
    try:
        write_file(path, original + extra.encode(), 0o644)
        yield path
    finally:
        write_file(path, original, 0o644)


# --- the product path: validate and apply --------------------------------------------------


def _validate(gw: Gateway) -> tuple[int, list[dict[str, Any]]]:
    """``provisioner validate qualities --format json`` in the declarations checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFTP_PROVISIONER_")}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "provisioner",
            "validate",
            "qualities",
            "--format",
            "json",
            *NO_CACHE,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=gw.decls,
        env=env,
    )
    assert out.returncode in (0, 1), out.stdout + out.stderr
    return out.returncode, json.loads(out.stdout)["diagnostics"]


def _errors_in(diagnostics: list[dict[str, Any]], file_part: str) -> list[dict[str, Any]]:
    return [d for d in diagnostics if d["severity"] == "error" and file_part in d["file"]]


NO_CACHE = ("--no-cache",)
PLACEHOLDER = "HOSTILE-ENTRY-PLACEHOLDER"


def _declare_with_entry(gw: Gateway, sender: Sender, entry: list[str]) -> int:
    """`sender`'s declaration with one more ssh_keys entry written as raw YAML lines (flow
    scalars in JSON syntax, so nothing is folded); returns the line of the entry's last line."""
    doc = sender.document()
    doc["structured_messages"]["channels"]["sftp"]["ssh_keys"].append(PLACEHOLDER)
    lines = dump_yaml(doc).splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.strip() == f"- {PLACEHOLDER}")
    indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
    lines[at : at + 1] = [indent + ("- " if i == 0 else "  ") + ln for i, ln in enumerate(entry)]
    gw.quality_file(sender).write_text("\n".join(lines) + "\n", "utf-8")
    return at + len(entry)


def _honest_change(gw: Gateway, name: str) -> KeyPair:
    """The VICTIM adds a key in the same run: it must be applied despite the refusal."""
    victim = gw.senders[VICTIM]
    new = generate_keypair(gw.work / f"victim-{name}", "ed25519", comment=f"victim-{name}")
    victim.keys = [*victim.keys, new]
    gw.declare(victim)
    return new


def _restore_mallory(gw: Gateway) -> None:
    gw.declare(gw.senders[MALLORY])
    gw.apply()


# =========================================================================================
# a. options and key lines injected through from:
# =========================================================================================

# The literal variant of the issue ends in x="" - an unknown option, for which sshd 9.2
# drops the whole line; the second one closes the quote with command= and logs in.
OPTION_INJECTIONS = [
    '::1%",command="sh -c id",port-forwarding,pty,agent-forwarding,x="',
    '::1%",port-forwarding,pty,agent-forwarding,command="sh -c id',
]


def _old_rendering(options: str, key_line: str) -> str:
    """What the renderer of the old main wrote for a key with `from: [...]`."""
    return f'restrict,from="{options}" {key_line}\n'


def test_control_from_newline_injection_logs_in(gw: Gateway) -> None:
    attacker = _slashless_key(gw, "from-nl")
    own_key = gw.senders[CONTROL].keys[0]
    value = f'fe80::1%"\n{attacker.line}\n#'
    assert not _login(gw, CONTROL, attacker)
    with _hand_written_keys(gw, CONTROL, _old_rendering(value, own_key.line)):
        assert _login(gw, CONTROL, attacker), "the injected, unrestricted key line logs in"
    assert not _login(gw, CONTROL, attacker)


def test_control_from_option_injection_logs_in(gw: Gateway) -> None:
    key = gw.senders[CONTROL].keys[0]
    injected = _old_rendering(f"127.0.0.1,{OPTION_INJECTIONS[1]}", key.line)
    # Only the injected line: the file's own line for the key would be used first.
    path = gw.keys_file(CONTROL)
    original = path.read_bytes()
    try:
        write_file(path, injected, 0o644)
        out = ssh_command(
            CONTROL,
            key.private,
            gw.port,
            "id",
            host=HOST,
            options=["-v", "-o", "LogLevel=DEBUG1"],
        )
        # sshd parsed and granted the options after restrict (it tells the client so)
        assert re.search(r"Remote: .*key options: .*command", out.stderr), out.stderr
        assert re.search(r"Remote: .*key options: .*pty", out.stderr), out.stderr
        assert "Authenticated to" in out.stderr, out.stderr
        # ...and the Match block still wins: internal-sftp, not `sh -c id`
        assert "uid=" not in out.stdout
    finally:
        write_file(path, original, 0o644)


def test_from_newline_injection_refused(gw: Gateway) -> None:
    mallory = gw.senders[MALLORY]
    attacker = _slashless_key(gw, "from-nl-product")
    extra = generate_keypair(gw.work / "mallory-from-nl", "ed25519", comment="mallory-2")
    value = f'fe80::1%"\n{attacker.line}\n#'
    line = _declare_with_entry(
        gw, mallory, [f"key: {json.dumps(extra.line)}", f"from: [{json.dumps(value)}]"]
    )
    try:
        code, diagnostics = _validate(gw)
        assert code == 1
        errors = _errors_in(diagnostics, gw.quality_file(mallory).name)
        assert errors, diagnostics
        assert any(e["line"] == line and e["code"].startswith("key-from") for e in errors), errors
        new_victim_key = _honest_change(gw, "from-nl")
        gw.apply(expect=1)
        text = gw.keys_file(MALLORY).read_text()
        assert attacker.line.split()[1] not in text
        assert not _login(gw, MALLORY, attacker)
        assert _login(gw, MALLORY, mallory.keys[0])  # held: its applied keys still work
        assert _login(gw, VICTIM, new_victim_key)  # the others were applied
    finally:
        _restore_mallory(gw)


@pytest.mark.parametrize("injection", OPTION_INJECTIONS, ids=["issue-literal", "closing-command"])
def test_from_option_injection_refused(gw: Gateway, injection: str) -> None:
    mallory = gw.senders[MALLORY]
    extra = generate_keypair(
        gw.work / f"mallory-opt-{secrets.token_hex(2)}", "ed25519", comment="mallory-opt"
    )
    entry = [f"key: {json.dumps(extra.line)}", f'from: ["127.0.0.1", {json.dumps(injection)}]']
    line = _declare_with_entry(gw, mallory, entry)
    try:
        code, diagnostics = _validate(gw)
        assert code == 1
        errors = _errors_in(diagnostics, gw.quality_file(mallory).name)
        assert any(e["line"] == line and e["code"].startswith("key-from") for e in errors), errors
        new_victim_key = _honest_change(gw, f"opt-{secrets.token_hex(2)}")
        gw.apply(expect=1)
        text = gw.keys_file(MALLORY).read_text()
        assert "command=" not in text and "pty" not in text and "port-forwarding" not in text
        assert not _login(gw, MALLORY, extra)
        assert _login(gw, VICTIM, new_victim_key)
    finally:
        _restore_mallory(gw)


# =========================================================================================
# b. key lines injected through a file name
# =========================================================================================


def test_control_file_name_injection_logs_in(gw: Gateway) -> None:
    attacker = _slashless_key(gw, "name")
    header = f"# Technical user {CONTROL}, keys declared in qualities/x\n{attacker.line}\n#.yaml.\n"
    assert not _login(gw, CONTROL, attacker)
    with _hand_written_keys(gw, CONTROL, header):
        assert _login(gw, CONTROL, attacker)
    assert not _login(gw, CONTROL, attacker)


@pytest.mark.parametrize("where", ["file", "directory"])
def test_file_name_injection_refused(gw: Gateway, where: str) -> None:
    attacker = _slashless_key(gw, f"name-{where}")
    hostile = f"x\n{attacker.line}\n#"
    user = EVE if where == "file" else EVE_DIR
    sender = make_sender(gw.work, enterprise_number(3_000_010 + len(where)), user)
    (gw.decls / "certs").mkdir(exist_ok=True)
    (gw.decls / "certs" / f"{user}.pem").write_bytes(sender.certificate_pem)
    text = dump_yaml(sender.document())
    if where == "file":
        path = gw.decls / "qualities" / f"{hostile}.yaml"
    else:
        path = gw.decls / "qualities" / hostile / f"{sender.en}.yaml"
        path.parent.mkdir()
        text = text.replace("../certs/", "../../certs/")
    path.write_text(text, "utf-8")
    try:
        code, diagnostics = _validate(gw)
        assert code == 1
        errors = [
            d
            for d in diagnostics
            if d["severity"] == "error" and d["file"].startswith("qualities/x")
        ]
        assert [e["code"] for e in errors] == ["file-name-unsafe"], diagnostics
        new_victim_key = _honest_change(gw, f"name-{where}")
        out = gw.apply(expect=1)
        # The name is shown escaped, on one line: nothing line-based reads a key line in it.
        assert not any(
            ln.lstrip().startswith("ssh-") for ln in (out.stdout + out.stderr).splitlines()
        )
        assert getent("passwd", user) is None or attacker.line.split()[1] not in (
            gw.keys_file(user).read_text() if gw.keys_file(user).exists() else ""
        )
        assert not _login(gw, user, attacker)
        assert _login(gw, VICTIM, new_victim_key)
    finally:
        path.unlink()
        if where == "directory":
            path.parent.rmdir()
        (gw.decls / "certs" / f"{user}.pem").unlink()
        gw.apply()


# =========================================================================================
# c. an Ed25519 "key" anyone can use
# =========================================================================================


def test_control_forged_ed25519_logs_in(gw: Gateway) -> None:
    assert not _login(gw, CONTROL, ForgedEd25519Key())
    with _hand_written_keys(gw, CONTROL, f"restrict {IDENTITY_ED25519} anyone\n"):
        assert _login(gw, CONTROL, ForgedEd25519Key()), "no private key, constant signature"
    assert not _login(gw, CONTROL, ForgedEd25519Key())


def test_forged_ed25519_refused(gw: Gateway) -> None:
    mallory = gw.senders[MALLORY]
    line = _declare_with_entry(gw, mallory, [json.dumps(f"{IDENTITY_ED25519} anyone")])
    try:
        code, diagnostics = _validate(gw)
        assert code == 1
        errors = _errors_in(diagnostics, gw.quality_file(mallory).name)
        assert any(e["line"] == line and e["code"].startswith("key-") for e in errors), errors
        new_victim_key = _honest_change(gw, "ed25519")
        gw.apply(expect=1)
        assert IDENTITY_ED25519.split()[1] not in gw.keys_file(MALLORY).read_text()
        assert not _login(gw, MALLORY, ForgedEd25519Key())
        assert _login(gw, VICTIM, new_victim_key)
    finally:
        _restore_mallory(gw)


# =========================================================================================
# d. an RSA key whose private key anyone can compute
# =========================================================================================


@pytest.fixture(scope="module")
def weak_rsa() -> WeakRSAKey:
    return WeakRSAKey()


def test_control_weak_rsa_logs_in(gw: Gateway, weak_rsa: WeakRSAKey) -> None:
    assert not _login(gw, CONTROL, weak_rsa)
    with _hand_written_keys(gw, CONTROL, f"restrict {weak_rsa.line('n-is-3q')}\n"):
        assert _login(gw, CONTROL, weak_rsa), "private key computed from the public modulus"
    assert not _login(gw, CONTROL, weak_rsa)


def test_weak_rsa_refused(gw: Gateway, weak_rsa: WeakRSAKey) -> None:
    mallory = gw.senders[MALLORY]
    line = _declare_with_entry(gw, mallory, [json.dumps(weak_rsa.line("n-is-3q"))])
    try:
        code, diagnostics = _validate(gw)
        assert code == 1
        errors = _errors_in(diagnostics, gw.quality_file(mallory).name)
        assert any(e["line"] == line and e["code"].startswith("key-") for e in errors), errors
        new_victim_key = _honest_change(gw, "rsa")
        gw.apply(expect=1)
        assert weak_rsa.line("").split()[1] not in gw.keys_file(MALLORY).read_text()
        assert not _login(gw, MALLORY, weak_rsa)
        assert _login(gw, VICTIM, new_victim_key)
    finally:
        _restore_mallory(gw)


# =========================================================================================
# uploads: no set-uid bits, no mode changes of the exchange directories
# =========================================================================================


def _suid_bits(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode) & (stat.S_ISUID | stat.S_ISGID)


def test_openssh_sftp_cannot_chmod_uploads_or_directories(gw: Gateway) -> None:
    victim = gw.senders[VICTIM]
    local = gw.work / "payload.sh"
    local.write_bytes(b"#!/bin/sh\nid\n")
    os.chmod(local, 0o755)
    before = mode_of(gw.chroot(VICTIM) / "IN")
    out = openssh_sftp(
        gw, VICTIM, victim.keys[0], [f"put {local} /IN/plain", f"put -p {local} /IN/kept"]
    )
    assert out.returncode == 0, out.stderr  # put -p uploads; only setting the mode/times fails
    for name in ("plain", "kept"):
        uploaded = gw.chroot(VICTIM) / "IN" / name
        assert uploaded.read_bytes() == local.read_bytes()
        assert stat.S_IMODE(os.lstat(uploaded).st_mode) & 0o7027 == 0, oct(
            os.lstat(uploaded).st_mode
        )
    for command in (
        "chmod 6755 /IN/plain",
        "chmod 4755 /IN/plain",
        "chmod 777 /IN",
        "chmod 777 /OUT",
    ):
        out = openssh_sftp(gw, VICTIM, victim.keys[0], [command])
        assert out.returncode != 0, command
        assert "Permission denied" in out.stderr, (command, out.stderr)
    assert _suid_bits(gw.chroot(VICTIM) / "IN" / "plain") == 0
    assert mode_of(gw.chroot(VICTIM) / "IN") == before
    for name in ("plain", "kept"):
        (gw.chroot(VICTIM) / "IN" / name).unlink()


def _raw_create(sftp: paramiko.SFTPClient, path: str, mode: int, data: bytes) -> None:
    """SSH_FXP_OPEN with the attacker's own permissions in the attributes (what paramiko's
    open() never sends), then write `data`."""
    attrs = SFTPAttributes()
    attrs.st_mode = mode
    kind, msg = sftp._request(  # type: ignore[attr-defined]
        CMD_OPEN, path, SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC, attrs
    )
    assert kind == CMD_HANDLE
    with SFTPFile(sftp, msg.get_binary(), "wb") as fh:
        if data:
            fh.write(data)


def test_paramiko_cannot_set_suid_bits_or_chmod_directories(gw: Gateway) -> None:
    victim = gw.senders[VICTIM]
    in_dir = gw.chroot(VICTIM) / "IN"
    before = mode_of(in_dir)
    local = gw.work / "payload-paramiko"
    local.write_bytes(b"#!/bin/sh\nid\n")
    with paramiko_session(gw, VICTIM, victim.keys[0]) as sftp:
        sftp.put(str(local), "/IN/put")  # an ordinary upload works
        attempts: list[tuple[str, Callable[[], object]]] = [
            ("chmod 6755 an upload", lambda: sftp.chmod("/IN/put", 0o6755)),
            ("utime an upload", lambda: sftp.utime("/IN/put", (0, 0))),
            ("chmod 0777 IN", lambda: sftp.chmod("/IN", 0o777)),
            ("chmod 0777 INTEST", lambda: sftp.chmod("/INTEST", 0o777)),
        ]
        for _what, call in attempts:
            with pytest.raises(PermissionError):
                call()
        # asking for 6755 when the file is created: the umask and the kernel take it away
        _raw_create(sftp, "/IN/raw", 0o6755, b"#!/bin/sh\nid\n")
        _raw_create(sftp, "/IN/raw-empty", 0o6755, b"")
    assert (in_dir / "put").read_bytes() == local.read_bytes()
    assert _suid_bits(in_dir / "put") == 0
    assert _suid_bits(in_dir / "raw") == 0, oct(os.lstat(in_dir / "raw").st_mode)
    assert stat.S_IMODE(os.lstat(in_dir / "raw").st_mode) & 0o027 == 0
    # A file created empty may keep a set-uid bit; the first write by the sender clears it.
    if _suid_bits(in_dir / "raw-empty"):
        assert os.lstat(in_dir / "raw-empty").st_size == 0
        with (
            paramiko_session(gw, VICTIM, victim.keys[0]) as sftp,
            sftp.open("/IN/raw-empty", "r+") as fh,
        ):
            fh.write(b"x")
        assert _suid_bits(in_dir / "raw-empty") == 0
    assert mode_of(in_dir) == before
    assert mode_of(gw.chroot(VICTIM) / "INTEST")[2] == 0o2770
    for name in ("put", "raw", "raw-empty"):
        (in_dir / name).unlink()


# =========================================================================================
# connection throttling (DHEat)
# =========================================================================================


def _held_connection(gw: Gateway, source: str = HOST) -> tuple[socket.socket, bytes]:
    """A TCP connection that never sends its SSH banner; returns it and what sshd sent first
    ("SSH-2.0-..." when admitted, "Exceeded MaxStartups" or nothing when dropped)."""
    sock = socket.create_connection((HOST, gw.port), timeout=5, source_address=(source, 0))
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while b"\n" not in data:
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
    return sock, data


def _login_from(gw: Gateway, source: str, key: KeyPair) -> bool:
    sock = socket.create_connection((HOST, gw.port), timeout=10, source_address=(source, 0))
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=10)
        transport.auth_publickey(VICTIM, paramiko.PKey.from_path(key.private))
        return transport.is_authenticated()
    except (paramiko.SSHException, EOFError, OSError):
        return False
    finally:
        transport.close()


def test_unauthenticated_connections_of_one_source_are_limited(gw: Gateway) -> None:
    key = gw.senders[VICTIM].keys[0]
    eff = sshd_effective(gw.sshd.config_path, VICTIM)
    assert (eff["persourcemaxstartups"], eff["maxstartups"]) == ("10", "10:30:100")
    limit = 3  # below MaxStartups' start (10): only the per-source limit can drop here
    gw.write_settings(per_source_max_startups=limit)
    held: list[socket.socket] = []
    try:
        gw.apply()
        assert sshd_effective(gw.sshd.config_path, VICTIM)["persourcemaxstartups"] == str(limit)
        for _ in range(limit):
            sock, first = _held_connection(gw)
            held.append(sock)
            assert first.startswith(b"SSH-2.0-"), first
        mark = gw.sshd.mark()
        for _ in range(5):
            sock, first = _held_connection(gw)
            sock.close()
            assert not first.startswith(b"SSH-2.0-"), first  # dropped before any key exchange
        assert not _login_from(gw, HOST, key)  # the flooding source is refused, honest or not
        gw.sshd.wait_for_log(r"drop connection #\d+ from \[127\.0\.0\.1\]", since=mark)
        # another source is not starved (127.0.0.2 reaches the listener on 127.0.0.1)
        assert _login_from(gw, "127.0.0.2", key)
    finally:
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 15
        while True:  # sshd frees the slots once it sees the held connections end
            sock, first = _held_connection(gw)
            sock.close()
            if first.startswith(b"SSH-2.0-") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        del gw.settings["per_source_max_startups"]
        gw.write_settings()
        gw.apply()
    assert _login_from(gw, HOST, key)
    assert sshd_effective(gw.sshd.config_path, VICTIM)["persourcemaxstartups"] == "10"
