"""Login speed against the real sshd: does a login get slower as the gateway grows?

    sudo .venv/bin/python bench/login_bench.py [--small 10] [--large 10000] [--logins 30]

One run, one sshd: the declarations of SMALL technical users are applied with the real
`provisioner apply` (tests/e2e_support.py: test area under /srv, /var/lib/extrausers and
/etc/nsswitch.conf backed up and restored), then N logins of one of them are timed; then the
set grows to LARGE users, apply runs again (sshd is reloaded by it), and the same user's
logins are timed again. A login = TCP connect, key exchange, public-key authentication,
SFTP channel, listing of "/", close - with paramiko (what payroll software embeds) and, for
comparison, OpenSSH's ``sftp -b``. The measured user is the LAST entry of the extrausers
passwd file (its name sorts last), the worst place for a linear lookup.

Prints a Markdown table with both medians and their ratio (target: < 1.3).

Needs root, openssh-server/-client and libnss-extrausers, like the e2e tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import paramiko  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: E402
from e2e_support import (  # noqa: E402
    HOST,
    JAIL_ROOT,
    Gateway,
    enterprise_number,
    listed_names,
    openssh_sftp,
    provisioned_gateway,
)
from sshd_harness import (  # noqa: E402
    KeyPair,
    generate_keypair,
    load_private_key,
    missing_requirements,
    openssh_version,
    sftp_test_area,
)

MEASURED = "zzzbenchlogin01"  # sorts after every filler name: last line of passwd
CERTIFICATE = REPO / "examples" / "certs" / "dupont-signature.pem"
QUALITY = """\
quality:
  name: BENCH QUALITY {n}
  enterprise_number: "{en}"
  type: employer_nsso
administrators:
  - name: Bench Administrator
    email: admin{n}@bench.example
    role: local
structured_messages:
  technical_user: {user}
  contact:
    last_name: Peeters
    first_name: Jan
    title: mr
    function: Payroll
    language: nl
    phone: "025455078"
    emails:
      - edi{n}@bench.example
  channels:
    sftp:
      connection: internet
      ssh_keys:
        - {key}
      certificate: ../certs/shared.pem
      applications:
        - dmfa
"""


def write_quality(decls: Path, n: int, user: str, key_line: str) -> None:
    en = enterprise_number(3_000_000 + n)
    text = QUALITY.format(n=n, en=en, user=user, key=key_line)
    (decls / "qualities" / f"{en}.yaml").write_text(text, "utf-8")


def write_fillers(decls: Path, start: int, stop: int) -> None:
    """Technical users bench0000001... with a distinct Ed25519 key each (no private key
    kept: nobody logs in with them) and one shared certificate file."""
    for n in range(start, stop):
        public = Ed25519PrivateKey.generate().public_key()
        line = public.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
        write_quality(decls, n, f"bench{n:07d}", f"{line} filler{n}@bench")


def paramiko_login(gw: Gateway, pkey: paramiko.PKey, auth_times: list[float]) -> None:
    sock = socket.create_connection((HOST, gw.port), timeout=15)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=15)
        started = time.perf_counter()
        transport.auth_publickey(MEASURED, pkey)
        # the phase where sshd looks the user up (NSS, Match Group, keys file)
        auth_times.append(time.perf_counter() - started)
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert sftp is not None
        assert sorted(sftp.listdir("/")) == JAIL_ROOT
        sftp.close()
    finally:
        transport.close()


def openssh_login(gw: Gateway, key: KeyPair) -> None:
    out = openssh_sftp(gw, MEASURED, key, ["ls -1 /"])
    assert out.returncode == 0, out.stderr
    assert listed_names(out.stdout) == JAIL_ROOT


def timed(fn: Callable[[], None], n: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def measure(gw: Gateway, key: KeyPair, pkey: paramiko.PKey, n: int) -> dict[str, float]:
    auth: list[float] = []
    para = timed(lambda: paramiko_login(gw, pkey, auth), n)
    ossh = timed(lambda: openssh_login(gw, key), n)
    return {
        "paramiko": statistics.median(para),
        "paramiko_p90": sorted(para)[int(0.9 * (n - 1))],
        "auth": statistics.median(auth[-n:]),
        "openssh": statistics.median(ossh),
    }


def passwd_lines() -> int:
    with contextlib.suppress(FileNotFoundError):
        return len(Path("/var/lib/extrausers/passwd").read_text().splitlines())
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=10)
    parser.add_argument("--large", type=int, default=10_000)
    parser.add_argument("--logins", type=int, default=30)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a host setting for both runs, e.g. templates_dir='\"/path\"' (repeatable)",
    )
    args = parser.parse_args()
    overrides = {}
    for item in args.overrides:
        name, _, value = item.partition("=")
        try:
            overrides[name] = json.loads(value)
        except ValueError:
            overrides[name] = value
    missing = missing_requirements()
    if missing:
        print("login_bench needs: " + ", ".join(missing), file=sys.stderr)
        return 1
    if not 1 <= args.small < args.large:
        parser.error("need 1 <= --small < --large")

    rows = []
    load = os.getloadavg()
    with sftp_test_area() as area, tempfile.TemporaryDirectory(prefix="login-bench-") as tmp:
        decls = Path(tmp) / "declarations"
        (decls / "qualities").mkdir(parents=True)
        (decls / "certs").mkdir()
        shutil.copyfile(CERTIFICATE, decls / "certs" / "shared.pem")
        keydir = area / "bench-client"
        keydir.mkdir(mode=0o700)
        key = generate_keypair(keydir / "id_ed25519", "ed25519", comment="bench")
        pkey = load_private_key(key.private)
        write_quality(decls, 0, MEASURED, key.line)
        write_fillers(decls, 1, args.small)

        with provisioned_gateway(
            area, decls, lambda _work: [], max_users=args.large + 10, settings=overrides
        ) as gw:
            first_apply = gw.last_apply_seconds
            assert passwd_lines() == args.small
            rows.append((args.small, first_apply, measure(gw, key, pkey, args.logins)))

            write_fillers(decls, args.small, args.large)
            out = gw.apply()
            grow_apply = gw.last_apply_seconds
            assert "sshd reloaded" in out.stdout
            assert passwd_lines() == args.large
            rows.append((args.large, grow_apply, measure(gw, key, pkey, args.logins)))

    (small, _, a), (large, _, b) = rows
    print(
        f"\nLogin + listing of / (median of {args.logins}), OpenSSH "
        f"{'.'.join(map(str, openssh_version()))}, {os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"paramiko {paramiko.__version__}, load average before "
        f"{' '.join(f'{x:.1f}' for x in load)}"
        + (f", settings {overrides}" if overrides else "")
        + "\n"
    )
    print(
        "| technical users | apply before | paramiko median | paramiko p90 "
        "| of which auth (median) | OpenSSH sftp median |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for users, apply_time, m in rows:
        print(
            f"| {users:,} | {apply_time:.1f} s | {m['paramiko'] * 1000:.1f} ms | "
            f"{m['paramiko_p90'] * 1000:.1f} ms | {m['auth'] * 1000:.1f} ms | "
            f"{m['openssh'] * 1000:.1f} ms |"
        )
    ratio = b["paramiko"] / a["paramiko"]
    print(
        f"| ratio {large:,} / {small:,} | | **{ratio:.2f}** | | "
        f"{b['auth'] / a['auth']:.2f} | {b['openssh'] / a['openssh']:.2f} |\n\n"
        f"Target: ratio < 1.3 -> {'met' if ratio < 1.3 else 'NOT met'}"
    )
    return 0 if ratio < 1.3 else 2


if __name__ == "__main__":
    sys.exit(main())
