"""The pull-request gate: every rule over every declaration, all diagnostics in one run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from provisioner import __version__
from provisioner.certificates import CertificateInfo
from provisioner.declarations import Facts, FileResult, check_file, ref_state
from provisioner.diagnostics import Diagnostic, Location, Severity, error, sort_diagnostics
from provisioner.rules import FileSummary, KeyFact, clock_rules, cross_file_rules

YAML_SUFFIXES = (".yaml", ".yml")
# Below this many files a process pool costs more than it saves.
PARALLEL_THRESHOLD = 400


@dataclass(frozen=True, slots=True)
class ValidateSettings:
    paths: tuple[Path, ...]
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    base: str | None = None
    author: str | None = None
    cache_dir: Path | None = None
    jobs: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    cwd: Path = field(default_factory=Path.cwd)


@dataclass(slots=True)
class ValidationReport:
    root: Path
    files: list[str]
    diagnostics: list[Diagnostic]
    # Full results (models, keys, certificates) when the caller asked for them.
    results: list[FileResult] = field(default_factory=list)
    cached: int = 0

    @property
    def errors(self) -> int:
        return sum(1 for d in self.diagnostics if d.severity is Severity.ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for d in self.diagnostics if d.severity is Severity.WARNING)

    @property
    def ok(self) -> bool:
        return self.errors == 0


# --- discovery -----------------------------------------------------------------------------


def find_root(paths: Sequence[Path]) -> Path:
    """The declarations root: the Git work tree holding the paths, else the directory given."""
    resolved = [p.resolve() for p in paths] or [Path.cwd().resolve()]
    dirs = [p if p.is_dir() else p.parent for p in resolved]
    common = Path(os.path.commonpath([str(d) for d in dirs]))
    for candidate in (common, *common.parents):
        if (candidate / ".git").exists():
            return candidate
    return common


def display_path(path: Path, cwd: Path) -> str:
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)


def discover(paths: Sequence[Path], cwd: Path) -> tuple[list[Path], list[Diagnostic]]:
    found: list[Path] = []
    problems: list[Diagnostic] = []
    for given in paths:
        path = given if given.is_absolute() else cwd / given
        if path.is_dir():
            before = len(found)
            for dirpath, dirnames, filenames in os.walk(path):
                # Hidden directories hold tooling (.git, .github), never declarations.
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                found.extend(
                    Path(dirpath) / name
                    for name in sorted(filenames)
                    if name.endswith(YAML_SUFFIXES) and not name.startswith(".")
                )
            if len(found) == before:
                problems.append(
                    error(
                        "no-declarations",
                        "no declarations (*.yaml, *.yml) found in this directory",
                        Location(display_path(path, cwd)),
                    )
                )
        elif path.is_file():
            found.append(path)
        else:
            problems.append(
                error(
                    "file-not-found", "no such file or directory", Location(display_path(path, cwd))
                )
            )
    unique = sorted({p.absolute(): None for p in found})
    return unique, problems


# --- checking ------------------------------------------------------------------------------


def _check_full(args: tuple[Path, str, Path]) -> FileResult:
    return check_file(*args)


def _check_summary(args: tuple[Path, str, Path]) -> FileSummary:
    return FileSummary.of(check_file(*args))


def _map_parallel(fn: Any, jobs: list[tuple[Path, str, Path]], workers: int) -> list[Any]:
    if workers <= 1 or len(jobs) < PARALLEL_THRESHOLD:
        return [fn(job) for job in jobs]
    ctx = multiprocessing.get_context("fork")
    chunk = max(16, len(jobs) // (workers * 8))
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(pool.map(fn, jobs, chunksize=chunk))


def check_files(files: Sequence[Path], root: Path, cwd: Path, workers: int) -> list[FileResult]:
    jobs = [(p, display_path(p, cwd), root) for p in files]
    return _map_parallel(_check_full, jobs, workers)


def validate(settings: ValidateSettings, *, full: bool = False) -> ValidationReport:
    """Run the gate. `full` keeps every file's model, keys and certificate for the reconciler."""
    cwd = settings.cwd
    root = find_root([p if p.is_absolute() else cwd / p for p in settings.paths])
    files, problems = discover(settings.paths, cwd)
    results: list[FileResult] = []
    cached = 0
    if full:
        results = check_files(files, root, cwd, settings.jobs)
        summaries = [FileSummary.of(r) for r in results]
    else:
        cache = _Cache.open(settings.cache_dir, root)
        summaries = []
        todo: list[tuple[Path, str, Path]] = []
        for path in files:
            hit = cache.get(path)
            if hit is not None:
                summaries.append(hit)
            else:
                todo.append((path, display_path(path, cwd), root))
        cached = len(summaries)
        fresh = _map_parallel(_check_summary, todo, settings.jobs)
        for path_args, summary in zip(todo, fresh, strict=True):
            cache.put(path_args[0], summary)
        summaries.extend(fresh)
        cache.save()
    diagnostics = list(problems)
    for s in summaries:
        diagnostics.extend(s.diagnostics)
        diagnostics.extend(clock_rules(s, settings.now))
    diagnostics.extend(cross_file_rules(summaries))
    if settings.base is not None or settings.author is not None:
        from provisioner.gitbase import history_rules

        diagnostics.extend(history_rules(root, files, summaries, settings))
    return ValidationReport(
        root=root,
        files=[display_path(p, cwd) for p in files],
        diagnostics=sort_diagnostics(diagnostics),
        results=results,
        cached=cached,
    )


# --- cache ---------------------------------------------------------------------------------


def _catalogue_digest() -> str:
    data = resources.files("provisioner").joinpath("catalogue.yaml").read_bytes()
    return hashlib.sha256(data).hexdigest()[:16]


class _Cache:
    """Per-file summaries keyed by content hash of the file and of every file it references.

    Nothing here depends on the clock: certificate and key dates are re-checked on each run
    from the cached facts. A cache written by another version, for another root or another
    catalogue is ignored whole.
    """

    def __init__(self, path: Path | None, header: dict[str, str], entries: dict[str, Any]):
        self.path = path
        self.header = header
        self.entries = entries
        self.dirty = False

    @classmethod
    def open(cls, cache_dir: Path | None, root: Path) -> _Cache:
        header = {"version": __version__, "root": str(root), "catalogue": _catalogue_digest()}
        if cache_dir is None:
            return cls(None, header, {})
        name = hashlib.sha256(str(root).encode()).hexdigest()[:16]
        path = cache_dir / f"validate-{name}.json"
        try:
            raw = json.loads(path.read_text("utf-8"))
            if raw.get("header") == header:
                return cls(path, header, raw.get("entries", {}))
        except (OSError, ValueError):
            pass  # a missing or damaged cache is only a slower run
        return cls(path, header, {})

    def get(self, path: Path) -> FileSummary | None:
        entry = self.entries.get(str(path))
        if entry is None:
            return None
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return None
        if digest != entry["digest"]:
            return None
        for ref, state in entry["refs"].items():
            if ref_state(Path(ref)) != state:
                return None
        try:
            return _summary_from_json(entry)
        except (KeyError, TypeError, ValueError):
            return None

    def put(self, path: Path, summary: FileSummary) -> None:
        if self.path is None or not summary.digest:
            return
        self.entries[str(path)] = _summary_to_json(summary)
        self.dirty = True

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"header": self.header, "entries": self.entries}), "utf-8")
            tmp.replace(self.path)
        except OSError:
            pass  # a read-only cache directory must not fail the gate


def _loc(d: Location | None) -> list[Any] | None:
    return None if d is None else [d.file, d.line, d.column, d.yaml_path]


def _unloc(v: list[Any] | None) -> Location | None:
    return None if v is None else Location(v[0], v[1], v[2], v[3])


def _summary_to_json(s: FileSummary) -> dict[str, Any]:
    cert = None
    if s.certificate is not None:
        cert = {
            k: (v.isoformat() if isinstance(v, datetime) else v)
            for k, v in dataclasses.asdict(s.certificate).items()
        }
    f = s.facts
    return {
        "display": s.display,
        "digest": s.digest,
        "refs": s.refs,
        "diagnostics": [
            [d.severity.value, d.code, d.message, _loc(d.location), [_loc(r) for r in d.related]]
            for d in s.diagnostics
        ],
        "facts": {
            "enterprise_number": f.enterprise_number,
            "enterprise_number_at": _loc(f.enterprise_number_at),
            "technical_user": f.technical_user,
            "technical_user_at": _loc(f.technical_user_at),
            "administrators": list(f.administrators),
            "administrators_at": _loc(f.administrators_at),
        },
        "keys": [
            [k.fingerprint, _loc(k.location), k.expires.isoformat() if k.expires else None]
            for k in s.keys
        ],
        "certificate": cert,
        "certificate_at": _loc(s.certificate_at),
    }


def _summary_from_json(e: dict[str, Any]) -> FileSummary:
    cert = None
    if e["certificate"] is not None:
        values = dict(e["certificate"])
        for name in ("not_before", "not_after"):
            values[name] = datetime.fromisoformat(values[name])
        cert = CertificateInfo(**values)
    f = e["facts"]
    return FileSummary(
        display=e["display"],
        digest=e["digest"],
        refs=e["refs"],
        diagnostics=[
            Diagnostic(
                Severity(d[0]),
                d[1],
                d[2],
                _unloc(d[3]) or Location(""),
                tuple(x for x in (_unloc(r) for r in d[4]) if x is not None),
            )
            for d in e["diagnostics"]
        ],
        facts=Facts(
            enterprise_number=f["enterprise_number"],
            enterprise_number_at=_unloc(f["enterprise_number_at"]),
            technical_user=f["technical_user"],
            technical_user_at=_unloc(f["technical_user_at"]),
            administrators=tuple(f["administrators"]),
            administrators_at=_unloc(f["administrators_at"]),
        ),
        keys=[
            KeyFact(
                k[0], _unloc(k[1]) or Location(""), datetime.fromisoformat(k[2]) if k[2] else None
            )
            for k in e["keys"]
        ],
        certificate=cert,
        certificate_at=_unloc(e["certificate_at"]),
    )


def summaries_of(results: Iterable[FileResult]) -> list[FileSummary]:
    return [FileSummary.of(r) for r in results]
