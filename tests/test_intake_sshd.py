"""End to end: senders upload over the REAL sshd after a REAL apply; the REAL gate judges.

The declarations carry each sender's signing certificate (one sender renews: `certificate`
and `next_certificate`); `provisioner apply` renders the accounts, the chroots and the routing
table with the certificates; the sets are uploaded with OpenSSH `sftp -b` and paramiko,
signed with `openssl smime -sign` and with cryptography's PKCS7SignatureBuilder;
`provisioner intake --once --settings FILE` runs as the operator would run it; the sender
fetches the notices of refused sets from OUT with `sftp`.

Needs root, openssh-server/-client, libnss-extrausers and openssl: skipped without them,
FAILED under CI=true. What it changes on the machine: see tests/e2e_support.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

pytest.register_assert_rewrite("sshd_harness", "e2e_support")

from e2e_support import (  # noqa: E402
    Gateway,
    Sender,
    enterprise_number,
    listed_names,
    make_dir,
    make_sender,
    openssh_sftp,
    paramiko_session,
    provisioned_gateway,
)
from fixtures_crypto import key_usage, make_certificate, x509_name  # noqa: E402

from tests.intake_support import Signer  # noqa: E402

pytest_plugins = ("sshd_harness",)
pytestmark = [pytest.mark.sshd, pytest.mark.root]

TOKEN = secrets.token_hex(3)
ALICE = f"intakeAlice{TOKEN}"  # signs with its certificate and, renewing, the next one
BOB = f"intakeBob{TOKEN}"  # another sender: ALICE uploads with BOB's number (108)
SHORT = f"intakeShort{TOKEN}"  # a certificate that expires a minute after the apply (125)
SHORT_LIFE = dt.timedelta(seconds=75)
MAX_FILE = 1 << 20


def _signing(user: str, *, not_after: dt.datetime | None = None) -> Signer:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = make_certificate(
        subject=x509_name(
            (NameOID.COUNTRY_NAME, "BE"), (NameOID.COMMON_NAME, f"{user} (Signature)")
        ),
        serial=secrets.randbits(96),
        key=key,
        not_before=now - dt.timedelta(days=1),
        not_after=not_after or now + dt.timedelta(days=700),
        usage=key_usage(digital_signature=True, content_commitment=True),
    )
    return Signer(key, cert)


def _as_sender(sender: Sender, signing: Signer) -> Sender:
    sender.signing_key = signing.key
    sender.certificate_pem = signing.pem
    return sender


SIGNERS: dict[str, Signer] = {}


def _senders(work: Path) -> list[Sender]:
    SIGNERS[ALICE] = _signing(ALICE)
    SIGNERS["next"] = _signing(ALICE)
    SIGNERS[BOB] = _signing(BOB)
    SIGNERS[SHORT] = _signing(SHORT, not_after=dt.datetime.now(dt.UTC) + SHORT_LIFE)
    SIGNERS["stranger"] = _signing("stranger")
    return [
        _as_sender(make_sender(work, enterprise_number(3_000_001), ALICE), SIGNERS[ALICE]),
        _as_sender(make_sender(work, enterprise_number(3_000_002), BOB), SIGNERS[BOB]),
        _as_sender(make_sender(work, enterprise_number(3_000_003), SHORT), SIGNERS[SHORT]),
    ]


@pytest.fixture(scope="module")
def gw(sftp_area: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    decls = tmp_path_factory.mktemp("declarations")
    settings = {
        "intake_dir": str(sftp_area / "srv/sftp-intake"),
        "quarantine_dir": str(sftp_area / "srv/sftp-quarantine"),
        "intake_stability": 0,
        "intake_max_file_size": MAX_FILE,
    }
    original = Sender.document

    def document(self: Sender) -> dict[str, Any]:
        doc = original(self)
        if self.user == ALICE:
            doc["structured_messages"]["channels"]["sftp"]["next_certificate"] = (
                f"../certs/{ALICE}-next.pem"
            )
        return doc

    (decls / "certs").mkdir(parents=True, exist_ok=True)
    mp = pytest.MonkeyPatch()
    mp.setattr(Sender, "document", document)
    try:
        with provisioned_gateway(
            sftp_area, decls, _with_next_certificate(decls), settings=settings
        ) as gateway:
            yield gateway
    finally:
        mp.undo()


def _with_next_certificate(decls: Path) -> Any:
    def make(work: Path) -> list[Sender]:
        senders = _senders(work)
        (decls / "certs" / f"{ALICE}-next.pem").write_bytes(SIGNERS["next"].pem)
        return senders

    return make


# --- helpers ---------------------------------------------------------------------------------


def _day() -> str:
    return f"{dt.datetime.now(dt.UTC).date():%Y%m%d}"


def _set(
    gw: Gateway,
    user: str,
    seq: int,
    *,
    env: str = "R",
    purpose: str = "DMFA",
    sender: str | None = None,
    sign: str = "builder",
    signer: str | None = None,
    tamper: bool = False,
    size: int | None = None,
    go: bool = True,
) -> dict[str, bytes]:
    """{name: content} of a one-part set."""
    number = sender or gw.sender_number(gw.senders[user])
    base = f"{purpose}.{number}.{_day()}.{seq:05d}.{env}"
    data = f'<?xml version="1.0"?><DmfA seq="{seq}" nonce="{secrets.token_hex(8)}"/>\r\n'.encode()
    if size is not None:
        data = (data * (size // len(data) + 1))[:size]
    files = {f"FI.{base}.1.1": data}
    if env != "S":
        signing = SIGNERS[signer or user]
        signed = data + b"<!-- changed -->" if tamper else data
        if sign == "smime-text":
            signed = signed.replace(b"\r\n", b"\n")  # an LF file, signed in text mode
            files[f"FI.{base}.1.1"] = data.replace(b"\r\n", b"\n")
            files[f"FS.{base}.1.1"] = signing.sign_openssl(signed, binary=False)
        else:
            files[f"FS.{base}.1.1"] = (
                signing.sign_openssl(signed) if sign == "smime" else signing.sign(signed)
            )
    if go:
        files[f"GO.{base}.1"] = b"go"
    return files


def _upload(gw: Gateway, user: str, files: dict[str, bytes], client: str, directory: str) -> None:
    key = gw.senders[user].keys[0]
    ordered = sorted(files, key=lambda n: n.startswith("GO."))  # the GO last, as clients do
    if client == "paramiko":
        with paramiko_session(gw, user, key) as sftp:
            for name in ordered:
                sftp.putfo(io.BytesIO(files[name]), f"/{directory}/{name}")
        return
    local = make_dir(gw.work / f"up-{secrets.token_hex(4)}", 0o700)
    commands = []
    for name in ordered:
        (local / name).write_bytes(files[name])
        commands.append(f"put {local / name} /{directory}/{name}")
    out = openssh_sftp(gw, user, key, commands)
    assert out.returncode == 0, out.stderr


def _intake(gw: Gateway) -> subprocess.CompletedProcess[str]:
    out = gw.cli("intake", "--once")
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def _records(gw: Gateway) -> list[dict[str, Any]]:
    roots = [Path(gw.settings["intake_dir"]) / e for e in "RTS"]
    roots.append(Path(gw.settings["quarantine_dir"]))
    return [json.loads(p.read_text()) for r in roots for p in r.glob("*/record.json")]


def _record_of(gw: Gateway, name: str) -> dict[str, Any]:
    found = [r for r in _records(gw) if name in {f["name"] for f in r["files"]}]
    assert found, f"no record holds {name}"
    return max(found, key=lambda r: r["checked_at"])


def _fetch_notices(gw: Gateway, user: str, directory: str = "OUT") -> dict[str, str]:
    """What the sender finds in OUT*: fetched with OpenSSH sftp, then deleted by the sender."""
    key = gw.senders[user].keys[0]
    out = openssh_sftp(gw, user, key, [f"ls -1 /{directory}"])
    assert out.returncode == 0, out.stderr
    names = [n for n in listed_names(out.stdout) if n.startswith("FO.PCHK.999999.")]
    if not names:
        return {}
    down = make_dir(gw.work / f"down-{secrets.token_hex(4)}", 0o700)
    commands = [f"get /{directory}/{n} {down}/" for n in names]
    commands += [f"rm /{directory}/{n}" for n in names]
    out = openssh_sftp(gw, user, key, commands)
    assert out.returncode == 0, out.stderr
    return {n: (down / n).read_text("utf-8") for n in names}


def _notice_for(notices: dict[str, str], set_label: str) -> str:
    found = [t for t in notices.values() if f"Set: {set_label} " in t]
    assert len(found) == 1, (set_label, list(notices.values()))
    return found[0]


def _codes(notice: str) -> set[int]:
    match = re.search(r"^Codes: (.*)$", notice, re.M)
    assert match, notice
    return {int(c) for c in match.group(1).split(", ")}


# --- the tests ---------------------------------------------------------------------------------


def test_sets_signed_both_ways_uploaded_by_both_clients_are_accepted(gw: Gateway) -> None:
    sent: dict[str, bytes] = {}
    seq = 1
    for client in ("openssh", "paramiko"):
        for sign in ("smime", "smime-text", "builder"):
            files = _set(gw, ALICE, seq, sign=sign)
            _upload(gw, ALICE, files, client, "IN")
            sent.update(files)
            seq += 1
    test_set = _set(gw, ALICE, seq, env="T")
    simulation = _set(gw, ALICE, seq + 1, env="S")
    _upload(gw, ALICE, test_set, "paramiko", "INTEST")
    _upload(gw, ALICE, simulation, "openssh", "INTEST-S")
    _intake(gw)
    for name, content in {**sent, **test_set, **simulation}.items():
        record = _record_of(gw, name)
        assert record["status"] == "accepted", record
        assert {f["name"]: f["sha256"] for f in record["files"]}[name] == hashlib.sha256(
            content
        ).hexdigest()
        env = record["environment"]
        where = Path(gw.settings["intake_dir"]) / env / record["set_id"] / "files" / name
        assert where.read_bytes() == content
        if env != "S":
            assert record["certificate_fingerprint"] == SIGNERS[ALICE].sha256
    for directory in ("IN", "INTEST", "INTEST-S"):
        assert not any((gw.chroot(ALICE) / directory).iterdir())
    assert _fetch_notices(gw, ALICE) == {}


def test_a_renewal_overlap_accepts_both_certificates(gw: Gateway) -> None:
    old = _set(gw, ALICE, 20, sign="smime")
    new = _set(gw, ALICE, 21, signer="next")
    _upload(gw, ALICE, old, "openssh", "IN")
    _upload(gw, ALICE, new, "paramiko", "IN")
    _intake(gw)
    first, second = _record_of(gw, next(iter(old))), _record_of(gw, next(iter(new)))
    assert (first["status"], second["status"]) == ("accepted", "accepted")
    assert first["certificate_fingerprint"] == SIGNERS[ALICE].sha256
    assert second["certificate_fingerprint"] == SIGNERS["next"].sha256


def test_refused_sets_each_with_its_code_in_the_notice_the_sender_fetches(gw: Gateway) -> None:
    bob = gw.sender_number(gw.senders[BOB])
    cases: dict[int, list[tuple[str, dict[str, bytes], str]]] = {
        108: [("IN", _set(gw, ALICE, 30, sender=bob), "openssh")],
        118: [("INTEST", _set(gw, ALICE, 31), "paramiko")],
        119: [("IN", _set(gw, ALICE, 32, env="T"), "openssh")],
        257: [("IN", _set(gw, ALICE, 33, env="S"), "paramiko")],
        125: [
            ("IN", _set(gw, ALICE, 34, tamper=True), "openssh"),
            ("IN", _set(gw, ALICE, 35, signer="stranger"), "paramiko"),
        ],
        154: [("IN", _set(gw, ALICE, 36, purpose="ZIMA"), "openssh")],
        184: [("IN", _set(gw, ALICE, 37, size=MAX_FILE + 1), "paramiko")],
    }
    no_go = _set(gw, ALICE, 38, go=False)
    malformed = {f"FI.DMFA.{bob[:5]}.{_day()}.00039.R.1.1": b"<DmfA/>"}
    for items in cases.values():
        for directory, files, client in items:
            _upload(gw, ALICE, files, client, directory)
    _upload(gw, ALICE, no_go, "openssh", "IN")
    _upload(gw, ALICE, malformed, "paramiko", "IN")
    # A day passes for the set without GO (as root: a sender cannot set times, no setstat).
    old = time.time() - 2 * 86400
    for name in no_go:
        os.utime(gw.chroot(ALICE) / "IN" / name, (old, old))
    _intake(gw)
    notices = {**_fetch_notices(gw, ALICE, "OUT"), **_fetch_notices(gw, ALICE, "OUTTEST")}
    for code, items in cases.items():
        for _directory, files, _client in items:
            fi = next(n for n in files if n.startswith("FI."))
            record = _record_of(gw, fi)
            assert record["status"] == "refused"
            notice = _notice_for(notices, record["set"])
            assert code in _codes(notice), (code, notice)
            assert "not an acknowledgement of the social security" in notice
            assert "geen ontvangstbewijs van de sociale zekerheid" in notice  # contact: nl
            quarantined = Path(gw.settings["quarantine_dir"]) / record["set_id"] / "files"
            assert sorted(p.name for p in quarantined.iterdir()) == sorted(files)
    record = _record_of(gw, next(iter(no_go)))
    assert _codes(_notice_for(notices, record["set"])) == {130}
    record = _record_of(gw, next(iter(malformed)))
    assert _codes(_notice_for(notices, "(a file name outside the grammar)")) == {131}
    assert not any((gw.chroot(ALICE) / "IN").iterdir())


def test_a_name_already_sent_is_refused(gw: Gateway) -> None:
    files = _set(gw, ALICE, 40)
    _upload(gw, ALICE, files, "openssh", "IN")
    _intake(gw)
    assert _record_of(gw, next(iter(files)))["status"] == "accepted"
    again = _set(gw, ALICE, 40)  # same names, new content
    _upload(gw, ALICE, again, "paramiko", "IN")
    _intake(gw)
    record = _record_of(gw, next(iter(again)))
    assert record["status"] == "refused"
    assert _codes(_notice_for(_fetch_notices(gw, ALICE), record["set"])) == {133}


def test_a_certificate_expired_at_upload_time_is_refused(gw: Gateway) -> None:
    expiry = SIGNERS[SHORT].certificate.not_valid_after_utc
    wait = (expiry - dt.datetime.now(dt.UTC)).total_seconds() + 2
    if wait > 0:
        time.sleep(wait)  # the certificate was valid at apply; it is not at upload
    files = _set(gw, SHORT, 41, sign="smime")
    _upload(gw, SHORT, files, "openssh", "IN")
    _intake(gw)
    record = _record_of(gw, next(iter(files)))
    assert record["status"] == "refused"
    notice = _notice_for(_fetch_notices(gw, SHORT), record["set"])
    assert _codes(notice) == {125}
