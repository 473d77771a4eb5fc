"""The intake gate's throughput: sets per second, against a floor measured in the same run.

    python bench/intake_bench.py [--sets 1000] [--size 1048576] [--runs 1]

Builds a host tree in a temporary directory (the routing table, one channel with a registered
certificate, the exchange directories), uploads `--sets` sets of one FI of `--size` bytes, its
FS (a detached CMS signature made with cryptography, base64 with CRLF as clients write it) and
the GO, then times `provisioner intake --once` (a subprocess, as cron or systemd runs it).
The floors check the same FI/FS pairs with no gate around them:

- ``verify_detached`` in one Python loop (the library the gate calls: read both files, verify);
- ``openssl cms -verify`` once per set in a shell loop (signer certificate not chained:
  ``-noverify``, the same work of hashing and checking the signature).

Prints a Markdown table; the ratio says what the gate's moves, records, journal, claims and
notices cost on top of verifying.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _measure as m  # noqa: E402

from provisioner.intake.signature import verify_detached  # noqa: E402
from tests.intake_support import IntakeHost, make_host, sender_channel  # noqa: E402


def build(root: Path, sets: int, size: int) -> tuple[IntakeHost, Path]:
    host = make_host(root / "host", intake_set_max_age=86400)
    channel = host.add(sender_channel("BENCHPAYROLL", "100000"))
    signer = channel.signers[0]
    block = os.urandom(1 << 16)
    day = time.strftime("%Y%m%d", time.gmtime())
    pairs = root / "pairs"
    pairs.mkdir()
    for i in range(1, sets + 1):
        data = (block * (size // len(block) + 1))[: size - 16] + f"{i:016d}".encode()
        base = f"DMFA.100000.{day}.{i:05d}.R"
        sig = signer.sign(data)
        host.put(channel.user, "IN", f"FI.{base}.1.1", data, age=120)
        host.put(channel.user, "IN", f"FS.{base}.1.1", sig, age=120)
        host.put(channel.user, "IN", f"GO.{base}.1", b"go", age=120)
        # The same pair for the floors, outside the gate's reach.
        (pairs / f"{i}.fi").write_bytes(data)
        (pairs / f"{i}.der").write_bytes(base64.b64decode(sig))
        (pairs / f"{i}.fs").write_bytes(sig)
    (pairs / "cert.pem").write_bytes(signer.pem)
    settings = host.root / "settings.yaml"
    data = host.settings.model_dump(mode="json", exclude={"root"})
    settings.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in data.items()))
    return host, pairs


def floor_library(pairs: Path, sets: int, cert_pem: bytes) -> float:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem)
    started = time.perf_counter()
    for i in range(1, sets + 1):
        fi = (pairs / f"{i}.fi").read_bytes()
        fs = (pairs / f"{i}.fs").read_bytes()
        at = dt.datetime.now(dt.UTC)
        verdict = verify_detached(fs, fi, [cert], at)
        assert verdict.ok, verdict.reason
    return time.perf_counter() - started


def floor_openssl(pairs: Path, sets: int) -> float:
    script = (
        f"for i in $(seq 1 {sets}); do openssl cms -verify -binary -noverify -inform DER "
        f'-in "{pairs}/$i.der" -content "{pairs}/$i.fi" -out /dev/null 2>/dev/null || exit 1; done'
    )
    started = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sets", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1 << 20)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    rows = []
    caption = m.machine()
    for run in range(args.runs):
        root = Path(tempfile.mkdtemp(prefix="intake-bench-"))
        try:
            print(f"  building {args.sets} sets of {args.size} bytes…", file=sys.stderr)
            host, pairs = build(root, args.sets, args.size)
            # The uploads arrived long before in real life: written out, so that the gate's
            # first fsyncs do not pay for flushing a gigabyte the builder just wrote.
            os.sync()
            cert = (pairs / "cert.pem").read_bytes()
            lib = floor_library(pairs, args.sets, cert)
            ossl = floor_openssl(pairs, args.sets) if shutil.which("openssl") else float("nan")
            gate = m.run(
                [sys.executable, "-m", "provisioner", "intake", "--once", "--settings",
                 str(host.root / "settings.yaml")]
            )  # fmt: skip
            accepted = len(list((host.settings.intake_dir / "R").iterdir()))
            assert accepted == args.sets, f"{accepted} of {args.sets} sets accepted"
            rows.append((gate, lib, ossl))
            print(
                f"  run {run + 1}: gate {gate.wall:.2f} s ({gate.cpu:.2f} s CPU), "
                f"verify_detached loop {lib:.2f} s, openssl loop {ossl:.2f} s",
                file=sys.stderr,
            )
        finally:
            shutil.rmtree(root, ignore_errors=True)
    gate, lib, ossl = sorted(rows, key=lambda r: r[0].wall)[len(rows) // 2]
    n = args.sets
    mib = args.size / 2**20
    print(f"Intake gate, {n:,} sets of one {mib:g} MiB FI + FS + GO; {caption}.")
    print()
    print("| run | wall s | sets/s | CPU s | peak RSS (MiB) | vs. verify_detached loop |")
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| `provisioner intake --once` | {m.fmt(gate.wall)} | {n / gate.wall:,.0f} | "
        f"{m.fmt(gate.cpu)} | {gate.maxrss_mib:.0f} | {gate.wall / lib:.2f}× |"
    )
    print(
        f"| floor: `verify_detached` loop (in process) | {m.fmt(lib)} | {n / lib:,.0f} | | | 1× |"
    )
    print(
        f"| floor: `openssl cms -verify` per set (shell loop) | {m.fmt(ossl)} | {n / ossl:,.0f} "
        f"| | | {ossl / lib:.2f}× |"
    )


if __name__ == "__main__":
    main()
