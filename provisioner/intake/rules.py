"""The rules a set must pass, each with the social security's anomaly number.

Pure: a set's names, sizes and times, the uploader's channel, and (for 125) a way to read two
files and a signature check. 133 (a name already sent) is decided in the state database by
:mod:`provisioner.intake.claims`, after these rules pass. Which number means what where the
field gives a family of numbers:

- 120: the set holds fewer or more ``FI`` files than the parts its ``GO`` announces;
- 122: an ``FI`` announces another number of parts than its ``GO``;
- 123: an ``FI`` without its ``FS`` (same PARTS.PART); 124: an ``FS`` without its ``FI``;
- 121: any ``FS`` in an ``S`` set (simulation files are not signed);
- 118/119/257: an ``R``/``T``/``S`` file outside ``IN``/``INTEST``/``INTEST-S``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from cryptography import x509

from provisioner.intake.anomalies import Finding
from provisioner.intake.names import SetKey
from provisioner.intake.routing import Channel
from provisioner.intake.sets import SetFile, UploadSet
from provisioner.intake.uploads import DIRECTORY_OF

_WRONG_DIRECTORY = {"R": 118, "T": 119, "S": 257}
_BARE_LF = re.compile(rb"(?<!\r)\n")


class Verdict(Protocol):
    @property
    def ok(self) -> bool: ...
    @property
    def fingerprint(self) -> str | None: ...
    @property
    def reason(self) -> str: ...


Verify = Callable[[bytes, bytes, Sequence[x509.Certificate], datetime], Verdict]
Read = Callable[[SetFile], bytes]


@dataclass(frozen=True, slots=True)
class Outcome:
    findings: tuple[Finding, ...]
    fingerprints: tuple[str, ...]  # certificates that verified the set's signatures

    @property
    def accepted(self) -> bool:
        return not self.findings

    @property
    def codes(self) -> tuple[int, ...]:
        return tuple(sorted({f.code for f in self.findings}))


def _numbering(files: Sequence[SetFile]) -> dict[tuple[str | None, str | None], SetFile]:
    return {
        (f.check.parsed.parts, f.check.parsed.part): f for f in files if f.check.parsed is not None
    }


def structure(
    upload_set: UploadSet, uploader: Channel | None, *, max_file_size: int
) -> list[Finding]:
    """Every rule that names, sizes, the directory and the routing table decide."""
    out = _file_findings(upload_set, max_file_size)
    if upload_set.kind == "malformed" or upload_set.key is None:
        return sorted(set(out))
    key = upload_set.key
    out.extend(_channel_findings(upload_set, key, uploader))
    if upload_set.kind == "no-go":
        out.extend(
            Finding(f.name, 130, "no GO file within the waiting time") for f in upload_set.files
        )
    elif upload_set.kind != "td":
        out.extend(_go_set_findings(upload_set, key))
    return sorted(set(out))


def _file_findings(upload_set: UploadSet, max_file_size: int) -> list[Finding]:
    """What each file says on its own: its name's anomalies and 184 (too large)."""
    out: list[Finding] = []
    for f in upload_set.files:
        out.extend(f.check.findings)
        if f.upload.size > max_file_size:
            out.append(Finding(f.name, 184, f"{f.upload.size} bytes; at most {max_file_size}"))
    return out


def _channel_findings(
    upload_set: UploadSet, key: SetKey, uploader: Channel | None
) -> list[Finding]:
    """108 (sender), 118/119/257 (directory) and 154 (purpose): the set against its uploader."""
    out: list[Finding] = []
    if uploader is None:
        # Not in the routing table any more (removed since it uploaded): nobody's sender.
        out.extend(
            Finding(f.name, 108, "the account has no sender number") for f in upload_set.files
        )
    elif key.sender != uploader.sender_number:
        out.extend(
            Finding(f.name, 108, "another sender number than the uploader's")
            for f in upload_set.files
        )
    code = _WRONG_DIRECTORY.get(key.env)
    if code is not None and DIRECTORY_OF[key.env] != upload_set.directory:
        out.extend(
            Finding(f.name, code, f"uploaded to {upload_set.directory}") for f in upload_set.files
        )
    if uploader is not None and key.purpose not in uploader.purposes:
        out.extend(
            Finding(f.name, 154, "purpose not carried by the channel's applications")
            for f in upload_set.files
        )
    return out


def _go_set_findings(upload_set: UploadSet, key: SetKey) -> list[Finding]:
    """A set its GO starts: 107 (a TD too), then its parts and its signature files."""
    out = [
        Finding(f.name, 107, "a GO and a TD for one set")
        for f in upload_set.files
        if f.kind == "TD"
    ]
    # A "go" set holds its GO by construction (intake/sets.py).
    gos = [f for f in upload_set.files if f.kind == "GO"]
    go = gos[0]
    fis = [f for f in upload_set.files if f.kind == "FI"]
    fss = [f for f in upload_set.files if f.kind == "FS"]
    out.extend(_parts_findings(go, fis))
    out.extend(_pairing_findings(key, fis, fss))
    return out


def _parts_findings(go: SetFile, fis: Sequence[SetFile]) -> list[Finding]:
    """122 (an FI announces other PARTS than the GO) and 120 (missing or extra parts)."""
    announced = go.check.parsed.parts_number if go.check.parsed else None
    if announced is None or announced <= 0:
        return []
    out: list[Finding] = []
    for f in fis:
        n = f.check.parsed.parts_number if f.check.parsed else None
        if n is not None and n != announced:
            out.append(Finding(f.name, 122, f"announces {n} parts, the GO {announced}"))
    present = {f.check.parsed.part_number for f in fis if f.check.parsed}
    if len(fis) != announced or present != set(range(1, announced + 1)):
        out.append(Finding(go.name, 120, f"{len(fis)} declaration files for {announced} parts"))
    return out


def _pairing_findings(key: SetKey, fis: Sequence[SetFile], fss: Sequence[SetFile]) -> list[Finding]:
    """121 (any FS in a simulation set), else 123/124: every FI has its FS and back."""
    if key.env == "S":
        return [Finding(f.name, 121, "simulation files are not signed") for f in fss]
    fi_by, fs_by = _numbering(fis), _numbering(fss)
    missing_fs = [
        Finding(f.name, 123, "no FS with the same numbering")
        for n, f in fi_by.items()
        if n not in fs_by
    ]
    missing_fi = [
        Finding(f.name, 124, "no FI with the same numbering")
        for n, f in fs_by.items()
        if n not in fi_by
    ]
    return missing_fs + missing_fi


def signatures(
    upload_set: UploadSet,
    uploader: Channel,
    *,
    read: Read,
    verify: Verify,
    max_file_size: int,
) -> tuple[list[Finding], list[str]]:
    """125 for every ``FS`` that does not verify its ``FI`` against the uploader's registered
    certificates, valid at the time the ``FI`` was uploaded (its modification time: a sender
    cannot set it, the SFTP server refuses setstat)."""
    if upload_set.kind != "go" or upload_set.key is None or upload_set.key.env == "S":
        return [], []
    fis = _numbering([f for f in upload_set.files if f.kind == "FI"])
    fss = _numbering([f for f in upload_set.files if f.kind == "FS"])
    out: list[Finding] = []
    used: list[str] = []
    for numbering, fs in sorted(fss.items(), key=lambda kv: kv[1].name):
        fi = fis.get(numbering)
        if fi is None or max(fi.upload.size, fs.upload.size) > max_file_size:
            continue  # 124 / 184 already say why
        at = datetime.fromtimestamp(fi.upload.mtime_ns / 1e9, tz=UTC)
        content = read(fi)
        verdict = verify(read(fs), content, uploader.certificates, at)
        if not verdict.ok and b"\n" in content:
            # `openssl smime -sign` without -binary (the field's documented command) signs the
            # S/MIME canonical form, CRLF line ends; `openssl smime -verify` checks that form.
            canonical = _BARE_LF.sub(b"\r\n", content)
            if canonical != content:
                second = verify(read(fs), canonical, uploader.certificates, at)
                verdict = second if second.ok else verdict
        if verdict.ok and verdict.fingerprint:
            used.append(verdict.fingerprint)
        else:
            detail = verdict.reason if uploader.certificates else "no registered certificate"
            out.append(Finding(fs.name, 125, detail))
    return out, sorted(set(used))


def evaluate(
    upload_set: UploadSet,
    uploader: Channel | None,
    *,
    read: Read,
    verify: Verify,
    max_file_size: int,
) -> Outcome:
    found = structure(upload_set, uploader, max_file_size=max_file_size)
    used: list[str] = []
    if uploader is not None:
        bad, used = signatures(
            upload_set, uploader, read=read, verify=verify, max_file_size=max_file_size
        )
        found = sorted(set(found) | set(bad))
    return Outcome(tuple(found), tuple(used))
