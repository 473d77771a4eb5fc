"""Rules against history: the immutable technical user, and who may change a quality's file.

`--base REF` compares the work tree with the repository at REF (the pull request's target).
Only the administrators a quality's file names at REF may change or remove it; for a new file,
those it names itself. Checking the base version is what stops an author from adding their
own address to a file in the same pull request that changes it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import posixpath
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisioner.declarations import partial_facts
from provisioner.diagnostics import Diagnostic, Location, error
from provisioner.discovery import display_path
from provisioner.errors import GitError
from provisioner.quality_id import QualityId
from provisioner.safefile import confined_realpath, read_regular
from provisioner.source import MAX_FILE_BYTES, parse_document

if TYPE_CHECKING:
    from provisioner.rules import FileSummary


@dataclass(frozen=True, slots=True)
class BaseQuality:
    path: str  # relative to the work tree
    enterprise_number: str | None
    technical_user: str | None
    administrators: tuple[str, ...]
    # Fingerprints of the keys the file declared (inline or in a referenced .pub file).
    keys: tuple[str, ...] = ()
    quality_type: str | None = None

    @property
    def qid(self) -> QualityId | None:
        if self.enterprise_number is None or self.quality_type is None:
            return None
        return QualityId(self.enterprise_number, self.quality_type)


def _git(root: Path, *args: str, input_: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args],
            input=input_,
            capture_output=True,
            check=False,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"cannot run git: {exc}") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GitError(f"git {args[0]} failed: {message[-1] if message else done.returncode}")
    return done.stdout


def work_tree(root: Path) -> Path:
    return Path(_git(root, "rev-parse", "--show-toplevel").decode().strip())


def resolve_revision(root: Path, ref: str) -> str:
    try:
        return _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").decode().strip()
    except GitError:
        raise GitError(f"the revision '{ref}' does not exist in {root}") from None


def head_revision(root: Path) -> str | None:
    try:
        return _git(root, "rev-parse", "HEAD").decode().strip()
    except GitError:
        return None


# A .pub file is one line; anything bigger at the base revision is not read.
_MAX_BASE_KEY_FILE = 64 * 1024


def _fingerprint(line: str) -> str | None:
    """`SHA256:...` of a key line as ssh-keygen prints it, or None if it has no key data.

    Only who had a key first is asked of the base revision; whether the key is acceptable
    is judged on the work tree."""
    fields = line.split()
    if len(fields) < 2:
        return None
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        return None
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _key_entries(data: Any) -> list[str]:
    for part in ("structured_messages", "channels", "sftp", "ssh_keys"):
        data = data.get(part) if isinstance(data, dict) else None
    entries = []
    for entry in data if isinstance(data, list) else []:
        text = entry.get("key") if isinstance(entry, dict) else entry
        if isinstance(text, str) and text.strip():
            entries.append(text.strip())
    return entries


def _is_key_path(text: str) -> bool:
    # The declarations' own test: a path has no blank and ends in .pub or holds a slash.
    return " " not in text and (text.endswith(".pub") or "/" in text)


def _base_facts(path: str, raw: bytes) -> tuple[BaseQuality, list[str]]:
    """The facts of a file at the base revision, and the key files it references there."""
    doc, _ = parse_document(raw, Path(path), path)
    if doc is None:
        return BaseQuality(path, None, None, ()), []
    facts = partial_facts(doc)
    keys: list[str] = []
    refs: list[str] = []
    for text in _key_entries(doc.data):
        if _is_key_path(text):
            ref = posixpath.normpath(posixpath.join(posixpath.dirname(path), text))
            if not (ref.startswith("../") or ref == ".." or posixpath.isabs(text)):
                refs.append(ref)
        elif (fp := _fingerprint(text)) is not None:
            keys.append(fp)
    quality = BaseQuality(
        path,
        facts.enterprise_number,
        facts.technical_user,
        facts.administrators,
        tuple(keys),
        _quality_type(doc.data),
    )
    return quality, refs


def _quality_type(data: Any) -> str | None:
    quality = data.get("quality") if isinstance(data, dict) else None
    value = quality.get("type") if isinstance(quality, dict) else None
    return value if isinstance(value, str) else None


def _cat(top: Path, revision: str, paths: list[str], max_size: int | None) -> dict[str, bytes]:
    """The content of `paths` at `revision` (missing ones, and bigger ones, left out)."""
    if max_size is not None:
        # Sizes first: an oversized blob is never read at all.
        request = "".join(f"{revision}:{p}\n" for p in paths).encode()
        sizes = _git(top, "cat-file", "--batch-check", input_=request).decode().splitlines()
        kept = []
        for p, line in zip(paths, sizes, strict=False):
            fields = line.split()
            if len(fields) == 3 and fields[1] == "blob" and int(fields[2]) <= max_size:
                kept.append(p)
        paths = kept
    if not paths:
        return {}
    # One `cat-file --batch` for all files: one process instead of one per quality.
    request = "".join(f"{revision}:{p}\n" for p in paths).encode()
    out = _git(top, "cat-file", "--batch", input_=request)
    result: dict[str, bytes] = {}
    pos = 0
    for p in paths:
        header_end = out.index(b"\n", pos)
        header = out[pos:header_end].split()
        if len(header) < 3 or header[1] == b"missing":
            pos = header_end + 1
            continue
        size = int(header[2])
        result[p] = out[header_end + 1 : header_end + 1 + size]
        pos = header_end + 1 + size + 1
    return result


def base_qualities(top: Path, revision: str, prefixes: list[str]) -> dict[str, BaseQuality]:
    """Every YAML file under the declaration paths at `revision`, by path in the work tree."""
    return dict(_base_qualities(top, revision, tuple(prefixes)))


@lru_cache(maxsize=4)
def _base_qualities(top: Path, revision: str, prefixes: tuple[str, ...]) -> dict[str, BaseQuality]:
    # Asked twice in a run (who had a key first, then the other history rules): read once.
    listing = _git(top, "ls-tree", "-r", "-z", "--name-only", revision, "--", *prefixes)
    paths = [
        p
        for p in listing.decode("utf-8", "replace").split("\0")
        if p.endswith((".yaml", ".yml")) and not any(part.startswith(".") for part in p.split("/"))
    ]
    if not paths:
        return {}
    result: dict[str, BaseQuality] = {}
    wanted: dict[str, list[str]] = {}
    for p, body in _cat(top, revision, paths, None).items():
        result[p], wanted[p] = _base_facts(p, body)
    files = _cat(
        top, revision, sorted({r for refs in wanted.values() for r in refs}), _MAX_BASE_KEY_FILE
    )
    for p, refs in wanted.items():
        found = []
        for ref in refs:
            text = files.get(ref, b"").decode("utf-8", "replace").strip()
            if (fp := _fingerprint(text)) is not None:
                found.append(fp)
        if found:
            q = result[p]
            result[p] = BaseQuality(
                q.path,
                q.enterprise_number,
                q.technical_user,
                q.administrators,
                q.keys + tuple(found),
                q.quality_type,
            )
    return result


def _prefixes(top: Path, paths: Sequence[Path], cwd: Path) -> list[str]:
    prefixes = []
    for given in paths:
        absolute = (given if given.is_absolute() else cwd / given).resolve()
        inside = absolute.relative_to(top) if absolute.is_relative_to(top) else Path()
        prefixes.append(str(inside))
    return prefixes


def base_key_owners(
    root: Path, base: str, paths: Sequence[Path], cwd: Path
) -> dict[str, QualityId]:
    """Key fingerprint -> the quality whose file at `base` (`--base`) declared it, for the
    declarations under `paths` (relative to `cwd`). A key two qualities already shared there
    has no single owner: left out."""
    top = work_tree(root)
    revision = resolve_revision(top, base)
    owners: dict[str, QualityId | None] = {}
    for quality in base_qualities(top, revision, _prefixes(top, paths, cwd)).values():
        qid = quality.qid
        if qid is None:
            continue
        for fp in quality.keys:
            owners[fp] = qid if owners.get(fp, qid) == qid else None
    return {fp: qid for fp, qid in owners.items() if qid is not None}


def changed_paths(top: Path, revision: str, prefixes: list[str]) -> dict[str, str]:
    """YAML paths changed since `revision` (committed, staged, unstaged or untracked)."""
    changes = changed_files(top, revision, prefixes)
    return {p: s for p, s in changes.items() if p.endswith((".yaml", ".yml"))}


def changed_files(top: Path, revision: str, prefixes: list[str]) -> dict[str, str]:
    """Every path changed since `revision` under `prefixes` (all when empty): path -> A/M/D."""
    out = _git(top, "diff", "--no-renames", "--name-status", "-z", revision, "--", *prefixes)
    parts = out.decode("utf-8", "replace").split("\0")
    changes: dict[str, str] = {}
    for status, path in zip(parts[0::2], parts[1::2], strict=False):
        if path:
            changes[path] = status[:1]
    untracked = _git(top, "ls-files", "--others", "--exclude-standard", "-z", "--", *prefixes)
    for path in untracked.decode("utf-8", "replace").split("\0"):
        if path:
            changes[path] = "A"
    return changes


def modified_or_renamed(top: Path, revision: str, prefixes: list[str]) -> dict[str, str]:
    """YAML files that existed at `revision` and still do, changed or moved: path now ->
    path at `revision` (Git's rename detection; a file moved without `git add` is not seen
    as moved)."""
    out = _git(top, "diff", "--find-renames", "--name-status", "-z", revision, "--", *prefixes)
    parts = out.decode("utf-8", "replace").split("\0")
    found: dict[str, str] = {}
    i = 0
    while i < len(parts) and parts[i]:
        status = parts[i][:1]
        if status in ("R", "C"):
            old, new = parts[i + 1], parts[i + 2]
            i += 3
        else:
            old = new = parts[i + 1]
            i += 2
        if status in ("M", "R") and new.endswith((".yaml", ".yml")):
            found[new] = old
    return found


def _current_type(top: Path, path: Path, display: str) -> tuple[str | None, Location | None]:
    """The quality type a file declares now, and where: read again, as safely as the gate
    read it, only for files whose identity is compared (changed since the base)."""
    try:
        raw = read_regular(confined_realpath(path, top), MAX_FILE_BYTES)
    except OSError:
        return None, None
    doc, _ = parse_document(raw, path, display)
    if doc is None:
        return None, None
    value = _quality_type(doc.data)
    return value, doc.location(("quality", "type")) if value is not None else None


_MOVE_HINT = (
    "a registration cannot be moved by editing its file: remove this file (the channel is "
    "removed when that change is applied), then add a new file in a separate change"
)


def _identity_rules(
    top: Path,
    revision: str,
    ref: str,
    prefixes: list[str],
    base: dict[str, BaseQuality],
    current: dict[str, FileSummary],
    files: dict[str, Path],
) -> list[Diagnostic]:
    """A file that existed at the base still declares the same quality: the same enterprise
    number and quality type. The state knows a channel by the file that declared it."""
    out: list[Diagnostic] = []
    for rel, old_rel in sorted(modified_or_renamed(top, revision, prefixes).items()):
        summary, before = current.get(rel), base.get(old_rel)
        if summary is None or before is None:
            continue
        moved = f" (as {old_rel})" if old_rel != rel else ""
        facts = summary.facts
        if (
            before.enterprise_number is not None
            and facts.enterprise_number is not None
            and facts.enterprise_number != before.enterprise_number
        ):
            out.append(
                error(
                    "identity-changed",
                    f"this file declares quality {before.enterprise_number} at {ref}{moved}; "
                    f"changing its enterprise number to {facts.enterprise_number} would make it "
                    f"another quality's file. A typo: put {before.enterprise_number} back. "
                    + _MOVE_HINT,
                    facts.enterprise_number_at or Location(summary.display),
                )
            )
        if before.quality_type is None:
            continue
        now_type, at = facts.quality_type, facts.quality_type_at
        if now_type is None:
            now_type, at = _current_type(top, files[rel], summary.display)
        if now_type is not None and now_type != before.quality_type:
            out.append(
                error(
                    "identity-changed",
                    f"this file declares a quality of type '{before.quality_type}' at {ref}"
                    f"{moved}; changing it to '{now_type}' would make it another quality. "
                    + _MOVE_HINT,
                    at or Location(summary.display),
                )
            )
    return out


def _referenced(summary: FileSummary, top: Path) -> set[str]:
    """The key and certificate files a declaration references, relative to the work tree.

    Both the path as written and where it leads count: re-pointing a symlink changes the
    declaration as much as changing the file it points at.
    """
    found: set[str] = set()
    for candidate in summary.refs:
        for path in (Path(os.path.normpath(candidate)), Path(candidate).resolve()):
            if path.is_relative_to(top):
                found.add(str(path.relative_to(top)))
    return found


def history_rules(
    root: Path,
    files: list[Path],
    summaries: list[FileSummary],
    *,
    base: str | None,
    author: str | None,
    paths: Sequence[Path],
    cwd: Path,
) -> list[Diagnostic]:
    """The rules against history for the declarations under `paths` (relative to `cwd`):
    with `base` (`--base`), the immutable technical user and key files; with `author`
    (`--author`), who may change each quality's file, as listed at `base` (else HEAD)."""
    out: list[Diagnostic] = []
    top = work_tree(root)
    ref = base or "HEAD"
    revision = resolve_revision(top, ref)
    prefixes = _prefixes(top, paths, cwd)
    at_base = base_qualities(top, revision, prefixes)
    current, current_files = _in_work_tree(top, files, summaries, cwd)
    if base is not None:
        out.extend(_identity_rules(top, revision, ref, prefixes, at_base, current, current_files))
        out.extend(_technical_user_rules(summaries, at_base, ref))
    if author is not None:
        changed = changed_paths(top, revision, prefixes)
        out.extend(_author_rules(author, changed, current, at_base, ref))
        touched_files = changed_files(top, revision, [])
        out.extend(
            _referenced_file_rules(author, top, changed, touched_files, current, at_base, ref)
        )
    return out


def _in_work_tree(
    top: Path, files: list[Path], summaries: list[FileSummary], cwd: Path
) -> tuple[dict[str, FileSummary], dict[str, Path]]:
    """The checked files inside the work tree, by path relative to it: their summaries, and
    the paths they were read from."""
    by_display = {s.display: s for s in summaries}
    current: dict[str, FileSummary] = {}
    current_files: dict[str, Path] = {}
    for path in files:
        resolved = path.resolve()
        summary = by_display.get(display_path(path, cwd))
        if summary is not None and resolved.is_relative_to(top):
            current[str(resolved.relative_to(top))] = summary
            current_files[str(resolved.relative_to(top))] = path
    return current, current_files


def _technical_user_rules(
    summaries: list[FileSummary], at_base: dict[str, BaseQuality], ref: str
) -> list[Diagnostic]:
    # A quality is its enterprise number and quality type: one enterprise's two qualities
    # each keep their own technical user.
    by_quality = {b.qid: b for b in at_base.values() if b.qid is not None}
    out: list[Diagnostic] = []
    for summary in summaries:
        f = summary.facts
        before = by_quality.get(f.qid) if f.qid is not None else None
        if before is None or f.technical_user is None or before.technical_user is None:
            continue
        if f.technical_user != before.technical_user and f.technical_user_at is not None:
            out.append(
                error(
                    "technical-user-immutable",
                    f"the technical user of this quality is '{before.technical_user}' (at {ref}) "
                    f"and cannot be changed once created; '{f.technical_user}' is refused",
                    f.technical_user_at,
                )
            )
    return out


def _author_rules(
    author: str,
    changed: dict[str, str],
    current: dict[str, FileSummary],
    at_base: dict[str, BaseQuality],
    ref: str,
) -> list[Diagnostic]:
    """Each changed YAML file: a new one by those it names itself, a changed or removed one
    only by those it named at the base."""
    who = author.lower()
    out: list[Diagnostic] = []
    for rel, status in sorted(changed.items()):
        summary = current.get(rel)
        if status == "A":
            allowed = summary.facts.administrators if summary else ()
            verb = "add"
        else:
            old = at_base.get(rel)
            allowed = old.administrators if old else ()
            verb = "remove" if status == "D" else "change"
        if who in allowed:
            continue
        names = ", ".join(allowed) or "nobody"
        where = summary.facts.administrators_at if summary else None
        out.append(
            error(
                "author-not-administrator",
                f"{author} may not {verb} this quality's declaration: only its local or "
                f"co-local administrators ({names}) may"
                + (f", as listed at {ref}" if status != "A" else ""),
                where or Location(summary.display if summary else rel),
            )
        )
    return out


def _referenced_file_rules(
    author: str,
    top: Path,
    changed: dict[str, str],
    touched_files: dict[str, str],
    current: dict[str, FileSummary],
    at_base: dict[str, BaseQuality],
    ref: str,
) -> list[Diagnostic]:
    """A quality's key and certificate files are part of its declaration: swapping the .pub
    file it references puts another key on its login without touching the YAML."""
    who = author.lower()
    out: list[Diagnostic] = []
    for rel, summary in sorted(current.items()):
        old = at_base.get(rel)
        if rel in changed or old is None or who in old.administrators:
            continue  # the YAML itself was judged above, or the author may change it
        touched = sorted(_referenced(summary, top) & touched_files.keys())
        if not touched:
            continue
        names = ", ".join(old.administrators) or "nobody"
        out.append(
            error(
                "author-not-administrator",
                f"{author} may not change {', '.join(touched)}, which this quality's "
                f"declaration references: only its local or co-local administrators "
                f"({names}) may, as listed at {ref}",
                summary.facts.administrators_at or Location(summary.display),
            )
        )
    return out
