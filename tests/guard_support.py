"""Many small qualities for the removal-guard and status tests: valid, each its own key."""

from __future__ import annotations

from conftest import EN_SECSOC, EXAMPLES, USER_SECSOC, Host, ssh_key


def enterprise_number(i: int) -> str:
    """A valid enterprise number, dotted, unlike the examples' (first eight digits 0300…)."""
    base = 3000000 + i
    digits = f"{base:08d}{97 - base % 97:02d}"
    return f"{digits[:4]}.{digits[4:7]}.{digits[7:]}"


def add_qualities(host: Host, count: int, *, first: int = 0) -> list[str]:
    """`count` more qualities written like the secsoc example; returns their enterprise
    numbers (undotted, as the state keeps them)."""
    text = (EXAMPLES / "qualities" / f"{EN_SECSOC}.yaml").read_text("utf-8")
    old_key = text.split("        - ssh-ed25519 ", 1)[1].split("\n", 1)[0]
    out = []
    for i in range(first, first + count):
        en = enterprise_number(i)
        body = (
            text.replace('"0200.065.765"', f'"{en}"')
            .replace("SECRETARIAT SOCIAL EXEMPLE", f"GUARD QUALITY {i}")
            .replace(USER_SECSOC, f"guardq{i:04d}")
            .replace("ssh-ed25519 " + old_key, ssh_key(100 + i, f"guard{i}@test"))
        )
        plain = en.replace(".", "")
        host.quality(plain).write_text(body, "utf-8")
        out.append(plain)
    return out
