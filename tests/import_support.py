"""Generated portal exports for the import tests: valid enterprise numbers, unique names."""

from __future__ import annotations

from pathlib import Path

HEADER = "enterprise_number,quality_type,sender_number,technical_user,registered_on,status"


def enterprise_number(i: int) -> str:
    """The i-th valid enterprise number (10 digits, first 0, mod-97 check digits)."""
    base = 3_000_000 + i
    return f"{base:08d}{97 - base % 97:02d}"


def username(i: int) -> str:
    return f"PORTALSFTP{i:06d}"


def rows(n: int, *, first_sender: int = 100000, removed_every: int = 10) -> list[str]:
    """`n` rows; every `removed_every`-th quality has left (status removed). Every 7th
    enterprise holds a second quality, of another type, with its own number and user."""
    out: list[str] = []
    qualities = ("employer_nsso", "employer_provincial_local")
    i = 0
    enterprise = 0
    while len(out) < n:
        for quality_type in qualities[: 2 if enterprise % 7 == 0 else 1]:
            if len(out) == n:
                break
            status = "removed" if i % removed_every == removed_every - 1 else "active"
            out.append(
                f"{enterprise_number(enterprise)},{quality_type},{first_sender + i:06d},"
                f"{username(i)},2019-03-{1 + i % 28:02d},{status}"
            )
            i += 1
        enterprise += 1
    return out


def write_csv(path: Path, n: int, **kwargs: int) -> Path:
    path.write_text(HEADER + "\n" + "\n".join(rows(n, **kwargs)) + "\n", "utf-8")
    return path


DECLARATION = """\
# Passing: generated for the import tests (an FTP-only quality: a number, no account).
quality:
  name: IMPORTED {i}
  enterprise_number: "{en}"
  type: {quality_type}
administrators:
  - name: Ann Admin
    email: ann{i}@imported.example
    role: local
structured_messages:
  technical_user: {user}
  contact:
    last_name: Peeters
    first_name: Jan
    title: mr
    function: Payroll manager
    language: nl
    phone: "02 555 12 34"
    emails:
      - edi{i}@imported.example
  channels:
    ftp:
      applications:
        - dmfa
"""


def write_declarations(directory: Path, n: int, **kwargs: int) -> int:
    """One declaration per active row of `rows(n)`; returns how many were written."""
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for i, line in enumerate(rows(n, **kwargs)):
        en, quality_type, _sender, user, _day, status = line.split(",")
        if status != "active":
            continue
        text = DECLARATION.format(i=i, en=en, quality_type=quality_type, user=user)
        (directory / f"{en}-{quality_type}.yaml").write_text(text, "utf-8")
        count += 1
    return count
