"""Certificates reach the intake gate: the routing table names each channel's registered
certificates, and the reconciler installs each as a PEM file named by its fingerprint.

Real applies into a temporary --root; the gate's side reads the files back with cryptography.
"""

from __future__ import annotations

import hashlib
import json
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

from conftest import EN_ONDERNEMING, EN_SECSOC, NOW, Host
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fixtures_crypto import make_certificate, pem

from provisioner.certificates import certificate_der
from provisioner.plan import PathAction

DEFAULT_DIR = "/var/lib/sftp-gateway/certificates"


def _routing(host: Host) -> dict[str, dict[str, Any]]:
    table = json.loads(host.settings().routing_table.read_text("utf-8"))
    assert table["version"] == 2
    return {e["enterprise_number"]: e for e in table["senders"].values()}


def _declared_der(host: Host, name: str) -> bytes:
    return certificate_der((host.decls / "certs" / name).read_bytes())


def _pem_files(host: Host) -> set[str]:
    directory = host.settings().certificates_dir
    return {p.name for p in directory.iterdir()} if directory.exists() else set()


def _renew(host: Host) -> x509.Certificate:
    """ONDERNEMING declares a next certificate next to its current one."""
    renewed = make_certificate(serial=0x4242, not_before=NOW - timedelta(days=1))
    (host.decls / "certs" / "renewed.pem").write_bytes(pem(renewed))
    host.edit(
        EN_ONDERNEMING,
        "      certificate: ../certs/expeditortest-signature.cer\n",
        "      certificate: ../certs/expeditortest-signature.cer\n"
        "      next_certificate: ../certs/renewed.pem\n",
    )
    return renewed


def test_each_channel_s_certificate_is_in_the_routing_table_and_installed(host: Host) -> None:
    host.apply()
    settings = host.settings()
    assert settings.certificates_dir == host.path(DEFAULT_DIR)
    routing = _routing(host)
    for en, name in (
        (EN_ONDERNEMING, "expeditortest-signature.cer"),
        (EN_SECSOC, "dupont-signature.pem"),
    ):
        der = _declared_der(host, name)
        declared = x509.load_der_x509_certificate(der)
        (entry,) = routing[en]["certificates"]
        sha256 = hashlib.sha256(der).hexdigest()
        assert entry == {
            "sha256": sha256,
            "not_before": declared.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "not_after": declared.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "pem_path": str(settings.certificates_dir / f"{sha256}.pem"),
        }
        installed = Path(entry["pem_path"])
        # What the gate loads is the declared certificate, whatever encoding it was declared in.
        loaded = x509.load_pem_x509_certificate(installed.read_bytes())
        assert loaded.public_bytes(serialization.Encoding.DER) == der
        assert installed.read_bytes() == declared.public_bytes(serialization.Encoding.PEM)
        assert stat.S_IMODE(installed.stat().st_mode) == 0o644
    assert stat.S_IMODE(settings.certificates_dir.stat().st_mode) == 0o755
    # Idempotent: a second run changes nothing.
    assert host.plan().changes == []


def test_a_renewal_installs_both_and_the_finished_renewal_removes_the_old_one(host: Host) -> None:
    host.apply()
    old = hashlib.sha256(_declared_der(host, "expeditortest-signature.cer")).hexdigest()
    renewed = _renew(host)
    new = hashlib.sha256(renewed.public_bytes(serialization.Encoding.DER)).hexdigest()

    plan = host.plan()
    created = {c.path for c in plan.changes if c.action is PathAction.CREATE}
    assert str(host.settings().certificate_file(new)) in created
    host.apply()
    entries = _routing(host)[EN_ONDERNEMING]["certificates"]
    assert [e["sha256"] for e in entries] == [old, new]
    assert {f"{old}.pem", f"{new}.pem"} <= _pem_files(host)

    # The renewal is finished: the next certificate becomes the certificate.
    host.edit(
        EN_ONDERNEMING,
        "      certificate: ../certs/expeditortest-signature.cer\n"
        "      next_certificate: ../certs/renewed.pem\n",
        "      certificate: ../certs/renewed.pem\n",
    )
    plan = host.plan()
    (removal,) = [c for c in plan.changes if c.action is PathAction.DELETE]
    assert removal.path == str(host.settings().certificate_file(old))
    assert removal.role == "certificate"
    host.apply()
    assert f"{old}.pem" not in _pem_files(host)
    assert [e["sha256"] for e in _routing(host)[EN_ONDERNEMING]["certificates"]] == [new]
    assert host.plan().changes == []


def test_a_removed_quality_s_certificate_is_removed(host: Host) -> None:
    host.apply()
    secsoc = hashlib.sha256(_declared_der(host, "dupont-signature.pem")).hexdigest()
    assert f"{secsoc}.pem" in _pem_files(host)
    host.quality(EN_SECSOC).unlink()
    host.apply()
    assert f"{secsoc}.pem" not in _pem_files(host)
    assert EN_SECSOC not in _routing(host)


def test_a_held_quality_keeps_its_certificate(host: Host) -> None:
    host.apply()
    secsoc = hashlib.sha256(_declared_der(host, "dupont-signature.pem")).hexdigest()
    # A refused declaration: the channel keeps its last good configuration, certificate included.
    host.edit(EN_SECSOC, "language:", "language: xx\n    # was:")
    host.apply()
    assert f"{secsoc}.pem" in _pem_files(host)
    (entry,) = _routing(host)[EN_SECSOC]["certificates"]
    assert entry["sha256"] == secsoc


def test_other_files_in_the_certificates_directory_are_reported_never_deleted(
    host: Host,
) -> None:
    host.apply()
    directory = host.settings().certificates_dir
    (directory / "README").write_text("the operator's note\n", "utf-8")
    stray = "f" * 64 + ".pem"
    (directory / stray).write_bytes(b"not ours\n")
    plan = host.plan()
    assert str(directory / "README") in plan.unknown
    # A file under a certificate's name that no routing entry names is a leftover: removed.
    assert [c.path for c in plan.changes if c.action is PathAction.DELETE] == [
        str(directory / stray)
    ]
    host.apply()
    assert (directory / "README").exists()
    assert not (directory / stray).exists()


def test_two_qualities_registering_one_certificate_share_its_file(host: Host) -> None:
    host.edit(EN_SECSOC, "../certs/dupont-signature.pem", "../certs/expeditortest-signature.cer")
    host.apply()
    shared = hashlib.sha256(_declared_der(host, "expeditortest-signature.cer")).hexdigest()
    routing = _routing(host)
    assert routing[EN_SECSOC]["certificates"] == routing[EN_ONDERNEMING]["certificates"]
    assert _pem_files(host) == {f"{shared}.pem"}
    # One of them drops it: the file stays for the other.
    host.edit(EN_SECSOC, "../certs/expeditortest-signature.cer", "../certs/dupont-signature.pem")
    host.apply()
    assert f"{shared}.pem" in _pem_files(host)
    assert host.plan().changes == []
