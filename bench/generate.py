"""Generate N realistic quality declarations for the benchmarks.

    python bench/generate.py N OUT [--seed S] [--jobs J] [--force]

One YAML file per quality under OUT/qualities/, like examples/qualities/*.yaml: a valid
mod-97 enterprise number, a distinct technical user, a contact with a Belgian phone number,
one to three distinct SSH keys (Ed25519 mostly, some ECDSA inline, some RSA 2048/3072 in .pub
files, some in the mapping form with `from` and `expires`) and a distinct signing certificate:
an EC P-256 end-entity certificate issued by a generated "Citizen CA", written as DER (.cer)
or PEM (.pem, .crt). Some qualities also declare an FTP (or MQLink/WBS) channel and then
choose their preferred channels.

Everything that must be distinct is generated per quality (nothing is reused). Generation
runs in a process pool; the set is cached: when OUT/.generated.json says the same N, seed
and generator version, and the certificates are still far from expiry, nothing is redone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import phonenumbers
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

GENERATOR_VERSION = 3
MARKER = ".generated.json"
# Regenerate when the cached set's certificates could start to expire or warn.
MAX_AGE = dt.timedelta(days=120)

LAST_NAMES = {
    "nl": [
        "Peeters",
        "Janssens",
        "Maes",
        "Jacobs",
        "Mertens",
        "Willems",
        "Claes",
        "Goossens",
        "Wouters",
        "De Smet",
        "Van de Velde",
        "D'Hondt",
        "Vermeulen",
        "Van Damme",
        "Verhoeven",
    ],
    "fr": [
        "Dubois",
        "Lambert",
        "Dupont",
        "Martin",
        "Simon",
        "Laurent",
        "Leclercq",
        "Lejeune",
        "Renard",
        "François",
        "Gérard",
        "Lemaire",
        "Collignon",
        "Delvaux",
        "Hubert",
    ],
    "de": ["Schmitz", "Müller", "Lentz", "Cremer", "Mertes", "Küpper", "Heinen", "Jost"],
}
FIRST_NAMES = {  # (name, title)
    "nl": [
        ("Jan", "mr"),
        ("Els", "mrs"),
        ("Pieter", "mr"),
        ("An", "ms"),
        ("Koen", "mr"),
        ("Sofie", "ms"),
        ("Bart", "mr"),
        ("Lotte", "ms"),
        ("Wim", "mr"),
        ("Inge", "mrs"),
    ],
    "fr": [
        ("Marie", "mrs"),
        ("Luc", "mr"),
        ("Nathalie", "mrs"),
        ("Pierre", "mr"),
        ("Isabelle", "ms"),
        ("Jean", "mr"),
        ("Sophie", "ms"),
        ("Hélène", "mrs"),
        ("Michel", "mr"),
    ],
    "de": [
        ("Stefan", "mr"),
        ("Monika", "mrs"),
        ("Jürgen", "mr"),
        ("Sabine", "ms"),
        ("Klaus", "mr"),
        ("Anja", "ms"),
    ],
}
FUNCTIONS = {
    "nl": [
        "IT Manager",
        "Payroll verantwoordelijke",
        "HR Directeur",
        "EDI coördinator",
        "Boekhouder",
    ],
    "fr": ["Responsable EDI", "Gestionnaire de paie", "Directeur RH", "Informaticien", "Comptable"],
    "de": ["Lohnbuchhalter", "IT-Leiter", "Personalleiter"],
}
COMPANY_WORDS = [
    "ALPHA",
    "BOUW",
    "TRANSPORT",
    "CONSULT",
    "SERVICES",
    "LOGISTICS",
    "MEDICAL",
    "DRUKKERIJ",
    "BOULANGERIE",
    "GARAGE",
    "INFORMATIQUE",
    "TECHNICS",
    "FOODS",
    "SCHOONMAAK",
    "ARCHITECTEN",
    "PHARMA",
    "INVEST",
    "INDUSTRIES",
    "EUROPE",
    "BENELUX",
]
FORMS = ["NV", "BV", "SA", "SRL", "VZW", "ASBL", "CV", "SC"]
DOMAINS = ["example", "example.be", "example.com", "example.org"]
QUALITY_TYPES = [
    ("employer_nsso", 80),
    ("social_secretariat", 8),
    ("service_provider", 7),
    ("employer_provincial_local", 5),
]
APPLICATIONS = [
    "dmfa",
    "social_risks",
    "temporary_unemployment",
    "dimona",
    "unique_work_notifications",
]
# Belgian area codes (one digit: Brussels, Antwerp, Liège, Ghent; two: others) and mobiles.
AREAS_1 = ["2", "3", "4", "9"]
AREAS_2 = [
    "10",
    "11",
    "12",
    "13",
    "14",
    "15",
    "16",
    "19",
    "50",
    "51",
    "52",
    "53",
    "54",
    "55",
    "56",
    "57",
    "58",
    "59",
    "60",
    "61",
    "63",
    "64",
    "65",
    "67",
    "69",
    "71",
    "80",
    "81",
    "82",
    "83",
    "84",
    "85",
    "86",
    "87",
    "89",
]
MOBILES = [
    "470",
    "471",
    "472",
    "473",
    "474",
    "475",
    "476",
    "477",
    "478",
    "479",
    "484",
    "485",
    "486",
    "487",
    "488",
    "489",
    "491",
    "492",
    "493",
    "494",
    "495",
    "496",
    "497",
    "498",
    "499",
]

_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ._@-")


def q(text: str) -> str:
    """A YAML scalar for `text`: plain when obviously safe, else a JSON (= YAML) string."""
    if (
        text
        and set(text) <= _SAFE
        and text[0].isalpha()
        and text.lower() not in ("true", "false", "null", "yes", "no", "on", "off")
    ):
        return text
    return json.dumps(text, ensure_ascii=False)


def enterprise_number(i: int) -> str:
    # 1613 is prime, hence coprime with 2e7: distinct bases for up to 20 million qualities,
    # all below 20,000,000 so the number starts with 0 or 1.
    base = (3_000_000 + i * 1613) % 20_000_000
    check = 97 - base % 97
    return f"{base:08d}{check:02d}"


def dotted(digits: str) -> str:
    return f"{digits[:4]}.{digits[4:7]}.{digits[7:]}"


def phone(rng: random.Random, *, mobile: bool = False) -> str:
    while True:
        if mobile:
            prefix, rest = rng.choice(MOBILES), f"{rng.randrange(10**6):06d}"
            national = f"0{prefix} {rest[:2]} {rest[2:4]} {rest[4:]}"
            intl = f"+32 {prefix} {rest[:2]} {rest[2:4]} {rest[4:]}"
        elif rng.random() < 0.5:
            area, rest = rng.choice(AREAS_1), f"{rng.randrange(2 * 10**6, 10**7):07d}"
            national = f"0{area} {rest[:3]} {rest[3:5]} {rest[5:]}"
            intl = f"+32 {area} {rest[:3]} {rest[3:5]} {rest[5:]}"
        else:
            area, rest = rng.choice(AREAS_2), f"{rng.randrange(2 * 10**5, 10**6):06d}"
            national = f"0{area} {rest[:2]} {rest[2:4]} {rest[4:]}"
            intl = f"+32 {area} {rest[:2]} {rest[2:4]} {rest[4:]}"
        text = rng.choice([national, intl, national.replace(" ", ""), intl])
        if phonenumbers.is_valid_number(phonenumbers.parse(text, "BE")):
            return text


def slug(text: str) -> str:
    return "".join(c for c in text.lower() if c.isascii() and c.isalnum())


# --- keys and certificates -----------------------------------------------------------------

_CA: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None = None


def citizen_ca(now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "200803"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Citizen CA"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "BE"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=3 * 365))
        .not_valid_after(now + dt.timedelta(days=10 * 365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def signature_certificate(
    rng: random.Random, now: dt.datetime, first: str, last: str, company: str | None
) -> x509.Certificate:
    assert _CA is not None
    ca_key, ca_cert = _CA
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "BE")]
    if company:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, company))
    attrs += [
        x509.NameAttribute(NameOID.COMMON_NAME, f"{first} {last} (Signature)"),
        x509.NameAttribute(NameOID.SURNAME, last),
        x509.NameAttribute(NameOID.GIVEN_NAME, first),
        # A national register number shape: yymmdd + 3 + 2 check digits.
        x509.NameAttribute(NameOID.SERIAL_NUMBER, f"{rng.randrange(10**11):011d}"),
    ]
    # eID-like 12-byte serials (10 00 00 00 00 00 …), distinct per certificate.
    serial = (0x10 << 88) | rng.getrandbits(64) << 8 | rng.getrandbits(8)
    not_before = now - dt.timedelta(days=rng.randrange(1, 700))
    # Valid for two to ten years from now: the cached set must not start warning.
    not_after = now + dt.timedelta(days=rng.randrange(2 * 365, 10 * 365))
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, True, False, False, False, False, False, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )


def ssh_line(key: Any) -> str:
    raw: bytes = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return raw.decode("ascii")


# --- one declaration -----------------------------------------------------------------------


def weighted(rng: random.Random, table: list[tuple[str, int]]) -> str:
    return rng.choices([v for v, _ in table], [w for _, w in table])[0]


def make_one(i: int, seed: int, out: Path, now: dt.datetime) -> tuple[int, int]:
    """Write declaration number `i` and its key and certificate files; (#keys, #rsa)."""
    rng = random.Random(seed * 1_000_003 + i)
    en = enterprise_number(i)
    language = weighted(rng, [("nl", 55), ("fr", 40), ("de", 5)])
    last, (first, _) = rng.choice(LAST_NAMES[language]), rng.choice(FIRST_NAMES[language])
    words = rng.sample(COMPANY_WORDS, rng.choice([1, 2, 2, 3]))
    company = f"{' '.join(words)} {rng.choice(FORMS)}"
    domain = f"{slug(words[0])}{i}.{rng.choice(DOMAINS)}"
    # Distinct case-insensitively too: the index is part of the name.
    base_user = slug("".join(words))[:12] or "quality"
    user = f"{base_user}{i:06d}"
    if rng.random() < 0.2:
        user = user.upper()
    user = user[:20]

    lines = ["quality:"]
    lines.append(f"  name: {q(company)}")
    lines.append(f'  enterprise_number: "{dotted(en) if rng.random() < 0.7 else en}"')
    lines.append(f"  type: {weighted(rng, QUALITY_TYPES)}")
    if rng.random() < 0.6:
        nsso = f"{rng.randrange(10**8, 10**9):09d}"
        lines.append(f'  nsso_number: "{nsso[:7]}-{nsso[7:]}"')

    lines.append("administrators:")
    admins = [(f"{first} {last}", f"{slug(first)}.{slug(last)}@{domain}", "local")]
    for k in range(rng.choice([0, 0, 1, 1, 2])):
        lang = rng.choice(list(LAST_NAMES))
        f2, l2 = rng.choice(FIRST_NAMES[lang])[0], rng.choice(LAST_NAMES[lang])
        admins.append(
            (f"{f2} {l2}", f"{slug(f2)}.{slug(l2)}{k}@secsoc{i % 97}.example", "co_local")
        )
    for name, email, role in admins:
        lines += [f"  - name: {q(name)}", f"    email: {email}", f"    role: {role}"]

    lines.append("structured_messages:")
    lines.append(f"  technical_user: {user}")
    c_lang = rng.choice(list(LAST_NAMES)) if rng.random() < 0.2 else language
    c_last, (c_first, c_title) = rng.choice(LAST_NAMES[c_lang]), rng.choice(FIRST_NAMES[c_lang])
    lines += [
        "  contact:",
        f"    last_name: {q(c_last)}",
        f"    first_name: {q(c_first)}",
        f"    title: {c_title}",
        f"    function: {q(rng.choice(FUNCTIONS[c_lang]))}",
        f"    language: {c_lang}",
        f"    phone: {json.dumps(phone(rng))}",
    ]
    if rng.random() < 0.2:
        lines.append(f"    fax: {json.dumps(phone(rng))}")
    if rng.random() < 0.4:
        lines.append(f"    mobile: {json.dumps(phone(rng, mobile=True))}")
    lines.append("    emails:")
    boxes = rng.sample(["edi", "payroll", "batch", "it", "hr", "dmfa"], rng.choice([1, 1, 2, 3]))
    lines += [f"      - {box}@{domain}" for box in boxes]

    lines += ["  channels:", "    sftp:", "      connection: internet", "      ssh_keys:"]
    n_keys = rng.choice([1, 1, 1, 2, 2, 3])
    rsa_count = 0
    for k in range(n_keys):
        comment = f"{rng.choice(['payroll', 'backup', 'edi', 'batch'])}{k}@{slug(words[0])}"
        roll = rng.random()
        if roll < 0.03:
            bits = 2048 if rng.random() < 0.75 else 3072
            line = ssh_line(rsa.generate_private_key(65537, bits)) + f" {comment}"
            rsa_count += 1
            ref = f"{user}-{k}.pub"
            (out / "keys" / ref).write_text(line + "\n", "utf-8")
            lines.append(f"        - ../keys/{ref}")
            continue
        if roll < 0.08:
            line = ssh_line(ec.generate_private_key(ec.SECP256R1())) + f" {comment}"
        else:
            line = ssh_line(ed25519.Ed25519PrivateKey.generate()) + f" {comment}"
        if roll < 0.25:
            ref = f"{user}-{k}.pub"
            (out / "keys" / ref).write_text(line + "\n", "utf-8")
            lines.append(f"        - ../keys/{ref}")
        elif roll < 0.30:
            net = f"192.0.{rng.randrange(256)}.0/24"
            lines += [f"        - key: {line}", "          from:", f'            - "{net}"']
            if rng.random() < 0.5:
                expires = (now + dt.timedelta(days=rng.randrange(200, 900))).date()
                lines.append(f"          expires: {expires.isoformat()}")
        else:
            lines.append(f"        - {line}")

    cert = signature_certificate(rng, now, c_first, c_last, company if rng.random() < 0.7 else None)
    suffix = weighted(rng, [(".cer", 60), (".pem", 30), (".crt", 10)])
    cert_name = f"{user}-signature{suffix}"
    encoding = serialization.Encoding.DER if suffix == ".cer" else serialization.Encoding.PEM
    (out / "certs" / cert_name).write_bytes(cert.public_bytes(encoding))
    lines.append(f"      certificate: ../certs/{cert_name}")

    sftp_apps = [a for a in APPLICATIONS if rng.random() < 0.5] or ["dmfa"]
    if "dmfa" not in sftp_apps and rng.random() < 0.7:
        sftp_apps.insert(0, "dmfa")
    lines.append("      applications:")
    lines += [f"        - {a}" for a in sftp_apps]

    preferred: dict[str, str] = {}
    if rng.random() < 0.15:
        other = weighted(rng, [("ftp", 80), ("mqlink", 10), ("wbs", 10)])
        apps = rng.sample(APPLICATIONS, rng.choice([1, 1, 2]))
        lines += [f"    {other}:", "      applications:"]
        lines += [f"        - {a}" for a in apps]
        for a in apps:
            if a in sftp_apps:
                preferred[a] = rng.choice(["sftp", other])
    if preferred:
        lines.append("  preferred_channels:")
        lines += [f"    {a}: {ch}" for a, ch in preferred.items()]
    (out / "qualities" / f"{en}.yaml").write_text("\n".join(lines) + "\n", "utf-8")
    return n_keys, rsa_count


def _chunk(args: tuple[int, int, int, str, str]) -> tuple[int, int]:
    start, stop, seed, out, now = args
    keys = rsas = 0
    for i in range(start, stop):
        k, r = make_one(i, seed, Path(out), dt.datetime.fromisoformat(now))
        keys += k
        rsas += r
    return keys, rsas


# --- the set -------------------------------------------------------------------------------


def cached(out: Path, n: int, seed: int) -> bool:
    try:
        marker = json.loads((out / MARKER).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    created = dt.datetime.fromisoformat(marker.get("created", "1970-01-01T00:00:00+00:00"))
    fresh = dt.datetime.now(dt.UTC) - created < MAX_AGE
    same = (marker.get("n"), marker.get("seed"), marker.get("version")) == (
        n,
        seed,
        GENERATOR_VERSION,
    )
    return fresh and same and marker.get("complete") is True


def generate(
    n: int, out: Path, *, seed: int = 1, jobs: int | None = None, force: bool = False
) -> dict[str, Any]:
    """Generate (or reuse) the set; returns its marker."""
    global _CA
    if not force and cached(out, n, seed):
        return dict(json.loads((out / MARKER).read_text("utf-8")))
    if out.exists():
        shutil.rmtree(out)
    for sub in ("qualities", "keys", "certs", "ca"):
        (out / sub).mkdir(parents=True)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    _CA = citizen_ca(now)
    (out / "ca" / "citizen-ca.pem").write_bytes(_CA[1].public_bytes(serialization.Encoding.PEM))
    started = time.perf_counter()
    jobs = jobs or len(os.sched_getaffinity(0))
    step = max(50, n // (jobs * 8) or 1)
    chunks = [(s, min(n, s + step), seed, str(out), now.isoformat()) for s in range(0, n, step)]
    # fork: the workers inherit the CA key.
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        counts = pool.map(_chunk, chunks)
    marker = {
        "n": n,
        "seed": seed,
        "version": GENERATOR_VERSION,
        "created": now.isoformat(),
        "keys": sum(k for k, _ in counts),
        "rsa_keys": sum(r for _, r in counts),
        "seconds": round(time.perf_counter() - started, 2),
        "complete": True,
    }
    (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n", "utf-8")
    return marker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, help="number of declarations")
    parser.add_argument("out", type=Path, help="output directory (replaced)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--force", action="store_true", help="regenerate even when cached")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("N must be at least 1")
    marker = generate(args.n, args.out, seed=args.seed, jobs=args.jobs, force=args.force)
    print(
        f"{args.out}: {marker['n']} declarations, {marker['keys']} keys "
        f"({marker['rsa_keys']} RSA), generated in {marker['seconds']} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
