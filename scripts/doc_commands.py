#!/usr/bin/env python3
"""Run the commands the documentation gives, exactly as written, taken from the documents.

A document's commands are the lines of its fenced code blocks: either every block under a
heading (`--heading`), or the one block after a `<!-- doc-commands: NAME -->` comment
(`--marker`). Blank lines and comment lines are skipped, a trailing backslash continues a line.

    python3 scripts/doc_commands.py list docs/operations.md --marker quickstart
    python3 scripts/doc_commands.py rooted docs/operations.md --marker quickstart --root DIR
    python3 scripts/doc_commands.py fresh-clone [--repo DIR] [--keep] [--skip-readme]

`rooted` runs commands meant for a real host into a temporary root instead, touching nothing
outside it: every word that is an absolute path under /etc, /srv, /var, /opt or /run moves
under the root; a `provisioner` command gets `--root ROOT` when it has that option; and
`systemctl enable [--now] UNIT...` becomes `systemctl --root=ROOT enable UNIT...` (systemd
itself is never told). Any other systemctl command is refused: the document must not rely on
one. Words are expanded like double-quoted shell words ($VAR, ${VAR}); pipes and redirections
are not supported.

`fresh-clone` clones the repository into a temporary directory, runs the README's
fresh-machine commands there with bash (as written: `bash scripts/demo`, `bash scripts/test`,
which install packages when run as root), then the operations quick start of the clone's
docs/operations.md rooted as above, with the clone's own provisioner and a declarations
repository made from its examples/ (unless DECLARATIONS_REPOSITORY is set).

Standard library only: it runs before any virtual environment exists.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOST_DIRS = ("/etc", "/srv", "/var", "/opt", "/run")
README_HEADING = "On a fresh machine: two commands"
QUICKSTART = (Path("docs/operations.md"), "quickstart")
# Exit codes that mean success besides 0: `plan` exits 2 when the plan has changes.
_OK_CODES = {"plan": {0, 2}}
_FENCE = re.compile(r"^(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_MARKER = re.compile(r"^<!--\s*doc-commands:\s*([\w.-]+)\s*-->\s*$")


class DocError(Exception):
    """The document does not hold what was asked for, or a command cannot run as written."""


def _lines_of_block(lines: list[str], start: int) -> tuple[list[str], int]:
    """The lines of the fenced block opening at `start`, and the index after its end."""
    fence = _FENCE.match(lines[start])
    assert fence is not None
    out = []
    i = start + 1
    while i < len(lines) and not lines[i].startswith(fence.group(1)):
        out.append(lines[i])
        i += 1
    return out, i + 1


def _commands_of(block: list[str]) -> list[str]:
    commands: list[str] = []
    pending = ""
    for raw in block:
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        commands.append((pending + line.strip()).strip())
        pending = ""
    if pending.strip():
        commands.append(pending.strip())
    return commands


def commands(text: str, *, heading: str | None = None, marker: str | None = None) -> list[str]:
    """The commands of every block under `heading`, or of the block after `marker`."""
    if (heading is None) == (marker is None):
        raise ValueError("give heading or marker")
    lines = text.splitlines()
    if marker is not None:
        return _commands_after_marker(lines, marker)
    assert heading is not None
    return _commands_under_heading(lines, heading)


def _commands_after_marker(lines: list[str], marker: str) -> list[str]:
    i = 0
    while i < len(lines):
        line = lines[i]
        match = _MARKER.match(line)
        if match and match.group(1) == marker:
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j == len(lines) or not _FENCE.match(lines[j]):
                raise DocError(f"no code block right after the marker '{marker}'")
            return _commands_of(_lines_of_block(lines, j)[0])
        # A marker quoted inside a code block is an example, not a marker.
        i = _lines_of_block(lines, i)[1] if _FENCE.match(line) else i + 1
    raise DocError(f"no marker <!-- doc-commands: {marker} -->")


def _commands_under_heading(lines: list[str], heading: str) -> list[str]:
    found: list[str] = []
    level = None
    inside = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            block, i = _lines_of_block(lines, i)
            if inside:
                found.extend(_commands_of(block))
            continue
        match = _HEADING.match(line)
        if match:
            if inside and level is not None and len(match.group(1)) <= level:
                break
            if match.group(2) == heading:
                inside, level = True, len(match.group(1))
        i += 1
    if not inside:
        raise DocError(f"no heading '{heading}'")
    return found


def commands_of_file(
    path: Path, *, heading: str | None = None, marker: str | None = None
) -> list[str]:
    return commands(path.read_text(encoding="utf-8"), heading=heading, marker=marker)


_VAR = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def words(command: str, env: Mapping[str, str]) -> list[str]:
    """A command's words, with $VAR expanded from `env` (an unset variable is an error)."""
    if re.search(r"(?<![\\'\"])[|<>;&`]", command.split(" #", 1)[0]):
        raise DocError(f"pipes, redirections and lists are not supported: {command}")

    def expand(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in env:
            raise DocError(f"{command}: the variable {name} is not set")
        return env[name]

    return [_VAR.sub(expand, word) for word in shlex.split(command, comments=True)]


def _moved(word: str, root: Path) -> str:
    for top in HOST_DIRS:
        if word == top or word.startswith(top + "/"):
            return str(root) + word
        # --option=/etc/...
        if "=" in word:
            key, _, value = word.partition("=")
            if value == top or value.startswith(top + "/"):
                return f"{key}={root}{value}"
    return word


@dataclass(frozen=True)
class Step:
    command: str  # as written in the document
    argv: list[str]  # as run
    ok_codes: frozenset[int]


def rooted_steps(
    written: Sequence[str],
    root: Path,
    *,
    env: Mapping[str, str],
    provisioner: Sequence[str],
    takes_root: set[str] | None = None,
) -> list[Step]:
    """What each command becomes when run into `root` instead of the real host."""
    steps = []
    for command in written:
        argv = [_moved(w, root) for w in words(command, env)]
        ok = frozenset({0})
        if argv[0] == "provisioner":
            sub = next((w for w in argv[1:] if not w.startswith("-")), "")
            argv = [*provisioner, *argv[1:]]
            has_root = sub in takes_root if takes_root is not None else _has_root(provisioner, sub)
            if has_root and "--root" not in argv:
                argv += ["--root", str(root)]
            ok = frozenset(_OK_CODES.get(sub, {0}))
        elif argv[0] == "systemctl":
            rest = argv[1:]
            if not rest or rest[0] != "enable":
                raise DocError(f"only `systemctl enable` can run into a root: {command}")
            units = [w for w in rest[1:] if w != "--now"]
            if not units or any(u.startswith("-") for u in units):
                raise DocError(f"unsupported systemctl options: {command}")
            argv = ["systemctl", f"--root={root}", "enable", *units]
        steps.append(Step(command, argv, ok))
    return steps


_ROOT_CACHE: dict[tuple[str, ...], bool] = {}


def _has_root(provisioner: Sequence[str], sub: str) -> bool:
    key = (*provisioner, sub)
    if key not in _ROOT_CACHE:
        done = subprocess.run(
            [*provisioner, sub, "--help"], capture_output=True, text=True, check=False
        )
        _ROOT_CACHE[key] = "--root" in done.stdout
    return _ROOT_CACHE[key]


def run_steps(
    steps: Sequence[Step], *, cwd: Path, env: Mapping[str, str], echo: bool = True
) -> list[tuple[Step, subprocess.CompletedProcess[str]]]:
    """Run each step; stop at the first that fails. Returns what ran, the failure last."""
    done = []
    for step in steps:
        if echo:
            print(f"$ {step.command}\n  (runs: {shlex.join(step.argv)})", flush=True)
        result = subprocess.run(
            step.argv,
            cwd=cwd,
            env=dict(env),
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        if echo:
            sys.stdout.write(result.stdout[-4000:])
            sys.stderr.write(result.stderr[-4000:])
        done.append((step, result))
        if result.returncode not in step.ok_codes:
            break
    return done


def declarations_repository(examples: Path, where: Path) -> Path:
    """A Git repository holding a copy of examples/, committed: what an operator clones."""
    repo = where / "declarations.git"
    shutil.copytree(examples, repo)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Doc Commands",
        "GIT_AUTHOR_EMAIL": "doc-commands@example.invalid",
        "GIT_COMMITTER_NAME": "Doc Commands",
        "GIT_COMMITTER_EMAIL": "doc-commands@example.invalid",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["commit", "-q", "-m", "declarations"],
    ):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env=env, capture_output=True)
    return repo


def quickstart_env(base: Path, repository: Path, path: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFTP_PROVISIONER_")}
    env.update(
        DECLARATIONS_REPOSITORY=os.environ.get("DECLARATIONS_REPOSITORY", str(repository)),
        XDG_CACHE_HOME=str(base / "cache"),
        XDG_STATE_HOME=str(base / "state"),
        GIT_CONFIG_NOSYSTEM="1",
    )
    if path is not None:
        env["PATH"] = path
    return env


def _report(done: list[tuple[Step, subprocess.CompletedProcess[str]]], expected: int) -> int:
    if done and done[-1][1].returncode not in done[-1][0].ok_codes:
        step, result = done[-1]
        print(f"FAILED (exit {result.returncode}): {step.command}", file=sys.stderr)
        return 1
    if len(done) != expected:
        print("FAILED: not every command ran", file=sys.stderr)
        return 1
    return 0


def fresh_clone(repo: Path, keep: bool, skip_readme: bool, heading: str) -> int:
    base = Path(tempfile.mkdtemp(prefix="fresh-clone-"))
    clone = base / "clone"
    print(f"== git clone {repo} {clone}", flush=True)
    subprocess.run(["git", "clone", "--quiet", str(repo), str(clone)], check=True)
    try:
        if not skip_readme:
            for command in commands_of_file(clone / "README.md", heading=heading):
                print(f"== {command}", flush=True)
                done = subprocess.run(["bash", "-c", command], cwd=clone, check=False)
                if done.returncode != 0:
                    print(f"FAILED (exit {done.returncode}): {command}", file=sys.stderr)
                    return 1
        program = clone / ".venv" / "bin" / "provisioner"
        if not program.exists():
            subprocess.run([sys.executable, "-m", "venv", str(clone / ".venv")], check=True)
            subprocess.run(
                [str(clone / ".venv/bin/python"), "-m", "pip", "install", "-q", str(clone)],
                check=True,
            )
        doc, marker = QUICKSTART
        written = commands_of_file(clone / doc, marker=marker)
        root = base / "root"
        root.mkdir()
        env = quickstart_env(base, declarations_repository(clone / "examples", base))
        print(f"== the operations quick start ({doc}), into {root}", flush=True)
        steps = rooted_steps(written, root, env=env, provisioner=[str(program)])
        code = _report(run_steps(steps, cwd=base, env=env), len(steps))
        if code == 0:
            print("fresh clone: every command succeeded")
        return code
    finally:
        if keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("list", "rooted"):
        p = sub.add_parser(name)
        p.add_argument("document", type=Path)
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--heading")
        group.add_argument("--marker")
        if name == "rooted":
            p.add_argument("--root", type=Path, required=True)
            p.add_argument("--provisioner", default="provisioner")
    p = sub.add_parser("fresh-clone")
    p.add_argument("--repo", type=Path, default=REPO)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--skip-readme", action="store_true")
    p.add_argument("--heading", default=README_HEADING)
    args = parser.parse_args(argv)
    try:
        if args.what == "fresh-clone":
            return fresh_clone(args.repo, args.keep, args.skip_readme, args.heading)
        written = commands_of_file(args.document, heading=args.heading, marker=args.marker)
        if args.what == "list":
            print("\n".join(written))
            return 0
        env = dict(os.environ)
        steps = rooted_steps(written, args.root.resolve(), env=env, provisioner=[args.provisioner])
        return _report(run_steps(steps, cwd=Path.cwd(), env=env), len(steps))
    except DocError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
