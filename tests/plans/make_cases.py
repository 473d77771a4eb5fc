"""(Re)make the inputs of the planner corpus: each case's host, state and declarations.

Each scenario starts from the bundled examples on a real temporary root, applies the "before"
configuration for real (as root: owners are part of the host), then changes the host or the
declarations the way the case says. What the next plan would read is then written into
tests/plans/<case>/: declarations/, state.json, host.json, settings.yaml, case.yaml.

The corpus is data: the runner (tests/test_plans.py) never calls this script. Run it only to
remake inputs after a change of what an apply writes, then refresh and review the plans:

    .venv/bin/python tests/plans/make_cases.py [CASE ...]
    UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_plans.py
    git diff tests/plans/
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from conftest import EXAMPLES, ssh_key  # noqa: E402
from plans_support import (  # noqa: E402
    DEFAULT_NOW,
    PLANS,
    capture,
    dumps,
    settings_for,
    snapshot_to_json,
)

from provisioner.apply import apply  # noqa: E402
from provisioner.settings import HostSettings  # noqa: E402
from provisioner.state import StateSnapshot, StateStore  # noqa: E402

EN_SECSOC, USER_SECSOC = "0200065765", "secsocexemple01"
EN_ONDERNEMING, USER_ONDERNEMING = "0403170701", "EXPDEMOONDERNEMING"
EN_THIRD, USER_THIRD = "0202239951", "thirdquality01"
KEYS = "etc/ssh/sftp-provisioner/authorized_keys"
PASSWD = "var/lib/extrausers/passwd"
# The apply that made the "before" host ran a day before the plan.
APPLIED = DEFAULT_NOW - timedelta(days=1)


class Bench:
    """A temporary host: `root/`, `declarations/` (a copy of examples/), its settings."""

    def __init__(self, base: Path, settings: dict[str, Any] | None = None) -> None:
        self.base = base
        self.root = base / "root"
        self.decls = base / "declarations"
        self.before = base / "before"
        # Names taken by users that are no quality of ours (written into state.json).
        self.reserved: set[str] = set()
        self.before_host: dict[str, Any] | None = None
        # The host's own user and group names (NSS), as host.json records them.
        self.names: dict[str, dict[str, int]] = {"group": {}, "passwd": {}}
        self.extra = dict(settings or {})
        shutil.copytree(EXAMPLES, self.decls)

    def settings(self) -> HostSettings:
        return settings_for(self.extra, self.root)

    def apply(self, now: datetime = APPLIED) -> None:
        with StateStore.open(self.settings().state_url) as store:
            result = apply(self.settings(), [self.decls], store, now=now, cwd=self.base)
        assert not result.plan.refused, result.plan.refused
        # What the last apply read and left: a case about reads makes its host record there.
        shutil.rmtree(self.before, ignore_errors=True)
        shutil.copytree(self.decls, self.before)
        self.before_host = capture(self.settings())

    def quality(self, name: str) -> Path:
        return self.decls / "qualities" / f"{name}.yaml"

    def edit(self, name: str, old: str, new: str) -> None:
        path = self.quality(name)
        text = path.read_text("utf-8")
        assert old in text, f"{old!r} not in {path}"
        path.write_text(text.replace(old, new, 1), "utf-8")

    def at(self, rel: str) -> Path:
        return self.root / rel

    def snapshot_json(self) -> dict[str, Any]:
        settings = self.settings()
        db = Path(settings.state_url.removeprefix("sqlite:///"))
        if not db.exists():
            return snapshot_to_json(StateSnapshot.empty())
        with StateStore.open(settings.state_url) as store:
            data = snapshot_to_json(store.snapshot())
        data["reserved"] = sorted({*data["reserved"], *self.reserved})
        return data


def third_quality_text(*, sftp: bool = True) -> str:
    """A third valid quality, like the secsoc example with its own number, user and key."""
    text = (EXAMPLES / "qualities" / f"{EN_SECSOC}.yaml").read_text("utf-8")
    old_key = text.split("        - ssh-ed25519 ", 1)[1].split("\n", 1)[0]
    text = (
        text.replace('"0200.065.765"', '"0202.239.951"')
        .replace("SECRETARIAT SOCIAL EXEMPLE", "THIRD QUALITY")
        .replace(USER_SECSOC, USER_THIRD)
        .replace("ssh-ed25519 " + old_key, ssh_key(3, "third@test"))
    )
    if not sftp:
        head, _, _ = text.partition("  channels:\n")
        text = head + "  channels:\n    ftp:\n      applications:\n        - dmfa\n"
    return text


def add_key(bench: Bench, name: str, line: str) -> None:
    marker = "      ssh_keys:\n"
    bench.edit(name, marker, f"{marker}        - {line}\n")


# --- the scenarios -------------------------------------------------------------------------
# Each makes the host and declarations of its case on the bench and returns the case's `why`;
# `scenario(name, **settings)` gives the settings of both the "before" apply and the plan.

Scenario = Callable[[Bench], str]
SCENARIOS: dict[str, tuple[dict[str, Any], Scenario]] = {}


def scenario(name: str, **settings: Any) -> Callable[[Scenario], Scenario]:
    def register(fn: Scenario) -> Scenario:
        SCENARIOS[name] = (settings, fn)
        return fn

    return register


@scenario("first-apply")
def first_apply(bench: Bench) -> str:
    return "On an empty host with an empty state every declared channel is created."


@scenario("nothing-changed")
def nothing_changed(bench: Bench) -> str:
    bench.apply()
    return "A host exactly as the last apply left it gives a plan without changes."


@scenario("key-rotated")
def key_rotated(bench: Bench) -> str:
    bench.apply()
    old = (EXAMPLES / "qualities" / f"{EN_SECSOC}.yaml").read_text("utf-8")
    line = old.split("        - ssh-ed25519 ", 1)[1].split("\n", 1)[0]
    bench.edit(EN_SECSOC, "ssh-ed25519 " + line, ssh_key(41, "rotated@secsoc"))
    return "A replaced key changes only its channel's authorized_keys: the old key goes."


@scenario("key-options-changed")
def key_options_changed(bench: Bench) -> str:
    marker = "      ssh_keys:\n"
    limited = (
        f"        - key: {ssh_key(31, 'limited@secsoc')}\n"
        '          from: ["192.0.2.0/24"]\n'
        "          expires: 2027-06-30\n"
    )
    bench.edit(EN_SECSOC, marker, marker + limited)
    bench.apply()
    bench.edit(EN_SECSOC, '["192.0.2.0/24"]', '["192.0.2.0/24", "2001:db8::/32"]')
    bench.edit(EN_SECSOC, "expires: 2027-06-30", "expires: 2027-12-31")
    return "A key's from and expires options changed rewrite its line, not the key."


@scenario("quality-refused-held")
def quality_refused_held(bench: Bench) -> str:
    bench.apply()
    bench.edit(EN_SECSOC, "language: fr", "language: xx")
    add_key(bench, EN_ONDERNEMING, ssh_key(42, "added@onderneming"))
    return (
        "An invalid file refuses its quality, held on its last good configuration, while "
        "the other quality's change is applied."
    )


@scenario("removal-archived")
def removal_archived(bench: Bench) -> str:
    bench.apply()
    upload = bench.at(f"srv/sftp/{USER_ONDERNEMING}/IN/upload.dat")
    upload.write_bytes(b"x" * 10)
    os.chown(upload, 200001, 0)
    bench.quality(EN_ONDERNEMING).unlink()
    return (
        "A deleted declaration removes its account and keys and archives its chroot with "
        "the files in it."
    )


@scenario("rename")
def rename(bench: Bench) -> str:
    bench.apply()
    bench.quality(EN_SECSOC).rename(bench.quality("secretariat-social-exemple"))
    return "A declaration file renamed (the same quality inside) loses nothing."


@scenario("drift-keys-edited")
def drift_keys_edited(bench: Bench) -> str:
    bench.apply()
    with open(bench.at(f"{KEYS}/{USER_SECSOC}"), "a", encoding="utf-8") as fh:
        fh.write(ssh_key(43, "planted@elsewhere") + "\n")
    return "A key added by hand to an authorized_keys file is taken out again."


@scenario("drift-wrong-mode")
def drift_wrong_mode(bench: Bench) -> str:
    bench.apply()
    bench.at(PASSWD).chmod(0o600)
    bench.at(f"srv/sftp/{USER_SECSOC}").chmod(0o750)
    bench.at(f"{KEYS}/{USER_ONDERNEMING}").chmod(0o666)
    return "Managed paths with the wrong mode get their mode back, content untouched."


@scenario("drift-symlink")
def drift_symlink(bench: Bench) -> str:
    bench.apply()
    keys = bench.at(f"{KEYS}/{USER_SECSOC}")
    keys.unlink()
    keys.symlink_to("/etc/shadow")
    upload = bench.at(f"srv/sftp/{USER_ONDERNEMING}/IN")
    shutil.rmtree(upload)
    upload.symlink_to("/etc")
    return "A symlink planted where a managed file or directory belongs is replaced, not followed."


@scenario("drift-stray-file")
def drift_stray_file(bench: Bench) -> str:
    bench.apply()
    bench.at(f"{KEYS}/stranger").write_text(ssh_key(44, "stranger@nowhere") + "\n")
    bench.at(f"srv/sftp/{USER_SECSOC}/notes.txt").write_text("left here by hand\n")
    bench.at("srv/sftp/lost+found").mkdir()
    return "Unknown files in managed directories are reported, never deleted."


@scenario("passwd-hand-edited")
def passwd_hand_edited(bench: Bench) -> str:
    bench.apply()
    passwd = bench.at(PASSWD)
    text = passwd.read_text("utf-8")
    text = text.replace(f"{USER_SECSOC}:x:200000:", f"{USER_SECSOC}:x:0:", 1)
    passwd.write_text(text + "intruder:x:0:0::/root:/bin/sh\n", "utf-8")
    return "A hand-edited accounts file (a uid changed, a user added) is rendered back."


@scenario("uid-range-exhausted", uid_min=200000, uid_max=200001)
def uid_range_exhausted(bench: Bench) -> str:
    bench.apply()
    bench.quality(EN_THIRD).write_text(third_quality_text(), "utf-8")
    return (
        "A quality beyond the uid range is refused (uid-range-exhausted) and the others "
        "keep their accounts."
    )


@scenario("settings-no-render")
def settings_no_render(bench: Bench) -> str:
    bench.apply()
    return (
        "A settings change that renders nothing (mail_from, smtp_timeout) leaves the plan "
        "without changes."
    )


@scenario("quality-added")
def quality_added(bench: Bench) -> str:
    bench.apply()
    bench.quality(EN_THIRD).write_text(third_quality_text(), "utf-8")
    return "A new quality next to existing ones is created; the others keep their numbers."


@scenario("two-qualities-one-enterprise")
def two_qualities_one_enterprise(bench: Bench) -> str:
    bench.apply()
    text = bench.quality(EN_SECSOC).read_text("utf-8")
    old_key = text.split("        - ssh-ed25519 ", 1)[1].split("\n", 1)[0]
    text = (
        text.replace("type: employer_nsso", "type: social_secretariat")
        .replace(USER_SECSOC, "secsocsecond01")
        .replace("ssh-ed25519 " + old_key, ssh_key(5, "second@secsoc"))
    )
    bench.quality(f"{EN_SECSOC}-social-secretariat").write_text(text, "utf-8")
    return "A second quality of one enterprise gets a channel, sender number and uid of its own."


@scenario("ftp-only-quality")
def ftp_only_quality(bench: Bench) -> str:
    bench.apply()
    bench.quality(EN_THIRD).write_text(third_quality_text(sftp=False), "utf-8")
    return "A quality without SFTP gets a sender number and routing entry, but no account."


@scenario("technical-user-change-refused")
def technical_user_change_refused(bench: Bench) -> str:
    bench.apply()
    bench.edit(EN_SECSOC, f"technical_user: {USER_SECSOC}", "technical_user: secsocrenamed01")
    return "A technical user is kept forever: renaming it refuses the quality, which is held."


@scenario("removal-deferred-unparsable")
def removal_deferred_unparsable(bench: Bench) -> str:
    bench.apply()
    bench.quality(EN_ONDERNEMING).unlink()
    bench.quality("unknown").write_text("quality: [unclosed\n", "utf-8")
    return (
        "When a file is too broken to say whose it is, nobody is removed: the removal is deferred."
    )


@scenario("removal-guard", max_removals=1, max_removals_percent=0)
def removal_guard(bench: Bench) -> str:
    bench.apply()
    bench.quality(EN_SECSOC).unlink()
    bench.quality(EN_ONDERNEMING).unlink()
    bench.quality(EN_THIRD).write_text(third_quality_text(), "utf-8")
    return (
        "Two removals over a threshold of one (max_removals) are planned with the guard's "
        "verdict that apply refuses them."
    )


@scenario("key-taken")
def key_taken(bench: Bench) -> str:
    bench.apply()
    text = bench.quality(EN_ONDERNEMING).read_text("utf-8")
    backup = "ssh-ed25519 " + text.split("        - ssh-ed25519 ", 1)[1].split("\n", 1)[0]
    add_key(bench, EN_SECSOC, backup.replace("backup@onderneming", "stolen"))
    return (
        "A key already on a live channel, declared by another quality, refuses the newcomer "
        "(held without it); the owner keeps the key."
    )


@scenario("identity-changed")
def identity_changed(bench: Bench) -> str:
    bench.apply()
    bench.edit(EN_ONDERNEMING, '"0403.170.701"', '"0403.170.702"')
    return (
        "A file that declared a quality and now names another number refuses and holds it: "
        "a typo removes nobody."
    )


@scenario("quality-returns")
def quality_returns(bench: Bench) -> str:
    bench.apply(APPLIED - timedelta(days=1))
    kept = bench.decls.parent / "kept.yaml"
    bench.quality(EN_ONDERNEMING).rename(kept)
    bench.apply()
    kept.rename(bench.quality(EN_ONDERNEMING))
    return "A removed quality declared again gets its sender number and uid back, never new ones."


@scenario("drift-missing")
def drift_missing(bench: Bench) -> str:
    bench.apply()
    bench.at(f"{KEYS}/{USER_SECSOC}").unlink()
    bench.at(f"srv/sftp/{USER_ONDERNEMING}/OUT").rmdir()
    bench.at("var/lib/sftp-gateway/routing.json").unlink()
    return "Managed paths deleted by hand are created again."


@scenario("key-expired")
def key_expired(bench: Bench) -> str:
    marker = "      ssh_keys:\n"
    # 28 November ends at 23:59 in Brussels: valid at the apply, past at the plan.
    limited = f"        - key: {ssh_key(32, 'shortlived@secsoc')}\n          expires: 2026-11-28\n"
    bench.edit(EN_SECSOC, marker, marker + limited)
    bench.apply()
    return (
        "A key whose expires date passed since the last apply changes nothing: its line "
        "carries expiry-time, and sshd refuses it from then on."
    )


@scenario("sender-numbers-exhausted", sender_start=999997)
def sender_numbers_exhausted(bench: Bench) -> str:
    bench.apply()
    bench.quality(EN_THIRD).write_text(third_quality_text(), "utf-8")
    return (
        "A quality beyond the last sender number (999998; 999999 is the gateway's) is refused, "
        "and the others keep theirs."
    )


@scenario("technical-user-taken")
def technical_user_taken(bench: Bench) -> str:
    bench.apply()
    text = third_quality_text().replace(USER_THIRD, USER_ONDERNEMING)
    bench.quality(EN_THIRD).write_text(text, "utf-8")
    return (
        "A new quality declaring the technical user of a live one is refused; the live one is "
        "refused too (duplicate-technical-user) and held on its last good configuration."
    )


@scenario("technical-user-reserved")
def technical_user_reserved(bench: Bench) -> str:
    bench.apply()
    bench.reserved.add(USER_THIRD.upper())
    bench.quality(EN_THIRD).write_text(third_quality_text(), "utf-8")
    return (
        "A technical user the portal's access system already uses (reserved in the state, "
        "whatever its case) is refused to a new quality."
    )


@scenario("host-account-clash")
def host_account_clash(bench: Bench) -> str:
    bench.apply()
    bench.quality(EN_THIRD).write_text(third_quality_text(), "utf-8")
    bench.names["passwd"][USER_THIRD] = 1500
    bench.names["group"]["staff"] = 50
    return (
        "A technical user that is already an account of the host (NSS) is refused for that "
        "quality only: the host's entry would win the login."
    )


@scenario("host-account-added-later")
def host_account_added_later(bench: Bench) -> str:
    bench.apply()
    bench.names["passwd"][USER_SECSOC] = 998
    return (
        "An account of the host that appears later under a live channel's name refuses that "
        "channel, held on its last good configuration."
    )


# --- writing a case ------------------------------------------------------------------------

# Settings a case plans with that differ from those the "before" host was applied with.
PLAN_SETTINGS: dict[str, dict[str, Any]] = {
    "settings-no-render": {"mail_from": "gateway@plans.example", "smtp_timeout": 45},
}


# Cases whose plan must equal another's, fingerprints included.
SAME_PLAN_AS: dict[str, str] = {"settings-no-render": "nothing-changed"}
# Cases about what the planner reads: the runner makes the host record of their last apply,
# which ran with these settings (see plans_support.reads_of).
HOST_RECORD: dict[str, dict[str, Any]] = {
    "nothing-changed": {},
    "settings-no-render": {},
    "key-rotated": {},
    "drift-keys-edited": {},
    "drift-wrong-mode": {},
}


def make(name: str) -> Path:
    settings, fn = SCENARIOS[name]
    target = PLANS / name
    with tempfile.TemporaryDirectory(prefix="plans-") as tmp:
        bench = Bench(Path(tmp), settings)
        why = fn(bench)
        shutil.rmtree(target / "declarations", ignore_errors=True)
        target.mkdir(parents=True, exist_ok=True)
        shutil.copytree(bench.decls, target / "declarations")
        (target / "state.json").write_text(dumps(bench.snapshot_json()), "utf-8")
        host = capture(bench.settings())
        host["names"] = bench.names
        (target / "host.json").write_text(dumps(host), "utf-8")
        shutil.rmtree(target / "before", ignore_errors=True)
        if name in HOST_RECORD:
            if bench.before.exists() and _differ(bench.before, bench.decls):
                shutil.copytree(bench.before, target / "before" / "declarations")
            if bench.before_host is not None and bench.before_host != host:
                (target / "before").mkdir(exist_ok=True)
                (target / "before" / "host.json").write_text(dumps(bench.before_host), "utf-8")
    plan_settings = {**settings, **PLAN_SETTINGS.get(name, {})}
    settings_file = target / "settings.yaml"
    if plan_settings:
        settings_file.write_text(
            "".join(f"{k}: {json.dumps(v)}\n" for k, v in plan_settings.items()), "utf-8"
        )
    elif settings_file.exists():
        settings_file.unlink()
    meta = f"why: {json.dumps(why)}\nnow: {DEFAULT_NOW.isoformat()}\n"
    if name in SAME_PLAN_AS:
        meta += f"same_plan_as: {SAME_PLAN_AS[name]}\n"
    if name in HOST_RECORD:
        meta += f"host_record:\n  settings: {json.dumps(HOST_RECORD[name])}\n"
    (target / "case.yaml").write_text(meta, "utf-8")
    return target


def _differ(a: Path, b: Path) -> bool:
    def files(top: Path) -> dict[str, bytes]:
        return {str(p.relative_to(top)): p.read_bytes() for p in top.rglob("*") if p.is_file()}

    return files(a) != files(b)


def main(argv: list[str]) -> int:
    if os.geteuid() != 0:
        print("make_cases.py runs as root: owners are part of a recorded host", file=sys.stderr)
        return 2
    names = argv or sorted(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown case(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    for name in names:
        print(make(name).relative_to(PLANS.parent.parent))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
