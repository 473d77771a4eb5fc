"""Intake gate cases as data: tests/intake_cases/<case>/case.yaml and its expected.txt.

case.yaml starts with a comment saying accepted/refused and why, then:

- ``files``: the names uploaded (placeholders ``<today>``, ``<future>`` (+10 days), ``<old>``
  (-2 years), ``<sender>`` (the uploader's sender number, 100000) and ``<other>`` (another
  channel's, 100001)); an entry may be a mapping ``{name, size, signature, content}`` where
  ``signature`` (on an FS) is ``valid`` (default: the FI of the same numbering signed with the
  uploader's registered certificate), ``openssl`` (the same, by `openssl smime -sign
  -binary`), ``openssl-text`` (`openssl smime -sign` in its default text mode),
  ``next`` (by the channel's second, renewal certificate), ``tampered`` (the FI changed after
  signing), ``wrong`` (an unregistered certificate), ``expired`` (a registered certificate
  expired before the upload) or ``garbage``;
- ``directory``: the upload directory (default IN); ``age``: seconds since the upload
  (default 60); ``before``: a list of file lists sent (and run through the gate) first;
  ``settings``: setting overrides; ``renewal: true``: the channel has a second certificate.

The real gate runs on a real tree with real signatures (verify_detached). expected.txt is
what it did: each record (status, set, findings), the codes of each notice in OUT*, and
what was left waiting. Refresh with ``UPDATE_GOLDEN=1 .venv/bin/pytest
tests/test_intake_cases.py -k <case>`` and review the diff.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from provisioner.intake.gate import run_once
from tests.intake_support import IntakeHost, Signer, make_host, make_signer, sender_channel

CASES = Path(__file__).parent / "intake_cases"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
UTC = dt.UTC


def _cases() -> list[str]:
    return sorted(p.name for p in CASES.iterdir() if (p / "case.yaml").is_file())


def _substitute(text: str, today: dt.date) -> str:
    return (
        text.replace("<today>", f"{today:%Y%m%d}")
        .replace("<future>", f"{today + dt.timedelta(days=10):%Y%m%d}")
        .replace("<old>", f"{today - dt.timedelta(days=730):%Y%m%d}")
        .replace("<sender>", "100000")
        .replace("<other>", "100001")
    )


def _unsubstitute(text: str, today: dt.date) -> str:
    for day, token in (
        (today, "<today>"),
        (today + dt.timedelta(days=10), "<future>"),
        (today - dt.timedelta(days=730), "<old>"),
    ):
        text = text.replace(f"{day:%Y%m%d}", token)
    return text


def _upload(
    host: IntakeHost,
    user: str,
    directory: str,
    entries: list[Any],
    signers: dict[str, Signer],
    today: dt.date,
    age: float,
) -> None:
    items = [e if isinstance(e, dict) else {"name": e} for e in entries]
    contents: dict[str, bytes] = {}
    for item in items:
        name = _substitute(item["name"], today)
        if name.startswith("FS."):
            continue
        data = item.get("content", f"<declaration>{name}</declaration>\r\n" * 4)
        data = data.encode() if isinstance(data, str) else data
        if "size" in item:
            data = (data * (item["size"] // max(len(data), 1) + 1))[: item["size"]]
        contents[name] = data
        host.put(user, directory, name, data, age=age)
    for item in items:
        name = _substitute(item["name"], today)
        if not name.startswith("FS."):
            continue
        fi = contents.get("FI." + name[3:], b"no declaration")
        how = item.get("signature", "valid")
        if how == "garbage":
            sig = b"MIIBgarbage\r\n"
        elif how == "tampered":
            sig = signers["valid"].sign(fi[:-1] + b"!")
        elif how == "openssl":
            sig = signers["valid"].sign_openssl(fi)
        elif how == "openssl-text":
            sig = signers["valid"].sign_openssl(fi, binary=False)
        else:
            sig = signers[how].sign(fi)
        host.put(user, directory, name, sig, age=age)


def _report(host: IntakeHost, waiting: int) -> str:
    lines = []
    records = sorted(
        host.records(), key=lambda r: (r["status"], str(r["set"]), json.dumps(r["findings"]))
    )
    for rec in records:
        label = rec["set"] or "(lone file)"
        lines.append(f"{rec['status']} {label} ({rec['directory']}, {rec['kind']})")
        fingerprints = rec["certificate_fingerprints"]
        if rec["status"] == "accepted":
            lines.append(f"  files: {len(rec['files'])}, certificates: {len(fingerprints)}")
        lines.extend(
            f"  {f['name'].encode('unicode_escape').decode()}: {f['code']}" for f in rec["findings"]
        )
    notices = []
    for user in sorted(host.channels):
        for out in ("OUT", "OUTTEST", "OUTTEST-S"):
            for name, text in host.notices(user, out).items():
                codes = re.search(r"^Codes: (.*)$", text, re.M)
                shown = re.sub(r"\.[A-Z2-7]{5}\.", ".<seq>.", name)
                notices.append(f"notice {user}/{out}/{shown}: {codes.group(1) if codes else '?'}")
    lines += sorted(notices)
    lines.append(f"waiting: {waiting}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("case", _cases())
def test_intake_case(case: str, tmp_path: Path) -> None:
    directory = CASES / case
    text = (directory / "case.yaml").read_text("utf-8")
    assert (
        text.startswith("# accepted")
        or text.startswith("# refused")
        or text.startswith("# waiting")
    ), "a case starts with a comment: accepted/refused/waiting and why"
    spec: dict[str, Any] = YAML(typ="safe").load(text)
    host = make_host(tmp_path, **spec.get("settings", {}))
    today = dt.datetime.now(UTC).date()
    now = dt.datetime.now(UTC)
    signers = {
        "valid": make_signer(),
        "next": make_signer(),
        "wrong": make_signer(),
        "expired": make_signer(
            not_before=now - dt.timedelta(days=400), not_after=now - dt.timedelta(days=1)
        ),
    }
    registered = [signers["valid"], signers["expired"]]
    if spec.get("renewal"):
        registered.append(signers["next"])
    channel = host.add(sender_channel("ACMEPAYROLL", "100000", registered))
    host.add(sender_channel("OTHERPAYROLL", "100001"))
    for earlier in spec.get("before", []):
        _upload(host, channel.user, spec.get("directory", "IN"), earlier, signers, today, 120)
        run_once(host.settings)
        for out in ("OUT", "OUTTEST", "OUTTEST-S"):
            for notice in host.notices(channel.user, out):
                (host.chroot(channel.user) / out / notice).unlink()
    _upload(
        host,
        channel.user,
        spec.get("directory", "IN"),
        spec["files"],
        signers,
        today,
        float(spec.get("age", 60)),
    )
    summary = run_once(host.settings)
    assert summary.ok, summary.errors
    got = _unsubstitute(_report(host, summary.waiting), today)
    expected_file = directory / "expected.txt"
    if UPDATE:
        expected_file.write_text(got, "utf-8")
    assert expected_file.exists(), f"run UPDATE_GOLDEN=1 pytest {__file__} -k {case}"
    assert got == expected_file.read_text("utf-8")
    first = text.splitlines()[0]
    status = first.split()[1].split("(")[0].strip(":")
    if status == "accepted":
        assert "\nrefused" not in "\n" + got and "accepted" in got
    elif status == "refused":
        assert "refused" in got
