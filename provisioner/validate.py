"""The pull-request gate: every rule over every declaration, all diagnostics in one run."""

from __future__ import annotations

import dataclasses
import gc
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisioner.cache import ResultCache, decode_text, encode, payload_of
from provisioner.certificates import CertificateInfo
from provisioner.declarations import (
    Facts,
    FileResult,
    check_file,
    directories_resolved_once,
    resolve_directories_once,
)
from provisioner.diagnostics import Diagnostic, Location, Severity, sort_diagnostics
from provisioner.discovery import discover, display_path, find_root
from provisioner.errors import DeclarationError
from provisioner.gcpause import collecting, paused_gc
from provisioner.progress import CHECK, ProgressCallback, report_all
from provisioner.quality_id import QualityId
from provisioner.rules import FileSummary, KeyFact, clock_rules, cross_file_rules

if TYPE_CHECKING:
    from provisioner.ledger import Ledger

# Below this many files a process pool costs more than it saves.
PARALLEL_THRESHOLD = 400
# Files per message to a pool worker. A declaration takes well under a millisecond, so a
# message costs little next to 32 of them, and the workers finish within milliseconds of each
# other: with chunks of a sixteenth of the run, as before, one worker could sit idle for up to
# a tenth of a 10,000-file run while the other checked its last chunk.
POOL_CHUNK = 32


@dataclass(frozen=True, slots=True)
class ValidateSettings:
    paths: tuple[Path, ...]
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    base: str | None = None
    author: str | None = None
    cache_dir: Path | None = None
    # False: read the cache but leave it as it is (a plan must not write on the host).
    cache_write: bool = True
    jobs: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    cwd: Path = field(default_factory=Path.cwd)
    # Key fingerprint -> the quality that already has it (the reconciler passes the state's;
    # `base` adds the base revision's): see `rules.cross_file_rules`.
    key_owners: Mapping[str, QualityId] | None = None
    # Technical user -> the live quality registered with it (the reconciler passes the
    # state's): see `rules.cross_file_rules`.
    user_owners: Mapping[str, QualityId] | None = None
    # Called after each declaration checked (see provisioner.progress); never prints.
    progress: ProgressCallback | None = field(default=None, compare=False)
    # The declarations root when the caller found it already (`show FILE` takes the one
    # `find_root` finds for its --declarations directory); None: `find_root` of `paths`.
    root: Path | None = None
    # The host's published ledger (`validate --ledger`): retired, reserved and immutable
    # usernames judged in the pull request; older than `ledger_max_age` is a warning.
    ledger: Ledger | None = None
    ledger_max_age: timedelta = timedelta(hours=2)


@dataclass(slots=True)
class ValidationReport:
    root: Path
    files: list[str]
    diagnostics: list[Diagnostic]
    # One per file (empty when an unchanged repository was judged from the memo).
    summaries: list[FileSummary] = field(default_factory=list)
    cached: int = 0
    # The file of each summary, as found (absolute, not resolved): `files` are for showing.
    paths: list[Path] = field(default_factory=list)
    # Whole results (models, keys, certificates) when the caller asked for them: the files
    # checked in this run, and the cached ones read back only when somebody needs them.
    _full: list[FileResult | None] = field(default_factory=list, repr=False)
    _loader: Callable[[list[int]], list[FileResult]] | None = field(default=None, repr=False)

    def results_of(self, indices: Sequence[int]) -> list[FileResult]:
        """The whole results of the files at `indices` (positions in `summaries`)."""
        missing = [i for i in indices if self._full[i] is None]
        if missing:
            if self._loader is None:  # pragma: no cover - full runs always have a loader
                raise RuntimeError("this report was made without whole results")
            for i, result in zip(missing, self._loader(missing), strict=True):
                self._full[i] = result
        return [r for i in indices if (r := self._full[i]) is not None]

    def result(self, index: int) -> FileResult:
        return self.results_of([index])[0]

    @property
    def results(self) -> list[FileResult]:
        """Every whole result (full runs only): reads all of them back from the cache."""
        return self.results_of(range(len(self._full)))

    @property
    def errors(self) -> int:
        return sum(1 for d in self.diagnostics if d.severity is Severity.ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for d in self.diagnostics if d.severity is Severity.WARNING)

    @property
    def ok(self) -> bool:
        return self.errors == 0


# --- checking ------------------------------------------------------------------------------


def _check_full(args: tuple[Path, str, Path]) -> FileResult:
    return check_file(*args)


def _check_summary(args: tuple[Path, str, Path]) -> FileSummary:
    return FileSummary.of(check_file(*args))


# With a cache, the workers also encode what they checked: in parallel, not in the parent.


def _check_full_encoded(
    args: tuple[Path, str, Path],
) -> tuple[FileResult, tuple[str, str] | None]:
    result = check_file(*args)
    return result, payload_of(result, "full")


def _check_full_plain(args: tuple[Path, str, Path]) -> tuple[FileResult, None]:
    return check_file(*args), None


def _check_summary_encoded(
    args: tuple[Path, str, Path],
) -> tuple[FileSummary, tuple[str, str] | None]:
    summary = FileSummary.of(check_file(*args))
    return summary, payload_of(summary, "summary")


def _worker_start() -> None:
    # Forked while the parent paused its collector (see gcpause): a worker checks thousands
    # of files and must collect its own garbage.
    gc.enable()
    resolve_directories_once()


def _map_parallel(
    fn: Any,
    jobs: list[tuple[Path, str, Path]],
    workers: int,
    progress: ProgressCallback | None = None,
) -> list[Any]:
    # One call is one run: within it, each directory holding referenced files is resolved
    # once (see `declarations.directories_resolved_once`), in this process or in each worker,
    # which lives only as long as the pool.
    if workers <= 1 or len(jobs) < PARALLEL_THRESHOLD:
        with directories_resolved_once(), collecting():
            return report_all(progress, CHECK, (fn(job) for job in jobs), len(jobs))
    # Forked from a parent that has imported everything a check needs: workers start at once.
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_worker_start
    ) as pool:
        results = pool.map(fn, jobs, chunksize=POOL_CHUNK)
        return report_all(progress, CHECK, results, len(jobs))


def check_files(files: Sequence[Path], root: Path, cwd: Path, workers: int) -> list[FileResult]:
    jobs = [(p, display_path(p, cwd), root) for p in files]
    return _map_parallel(_check_full, jobs, workers)


def validate(settings: ValidateSettings, *, full: bool = False) -> ValidationReport:
    """Run the gate. `full` keeps every file's model, keys and certificate for the reconciler.

    With a `cache_dir`, files whose content and referenced files did not change are not
    checked again (see `provisioner.cache`): `full` runs keep whole results there, the gate
    only what its rules need, plus the verdicts of the last run, so that an unchanged
    repository is judged again without reading any result back (only the clock rules run).
    """
    with paused_gc():
        return _validate(settings, full)


@dataclass(slots=True)
class _Discovered:
    """The files of one run, as found and shown, and what the cache knows of each."""

    root: Path
    files: list[Path]
    problems: list[Diagnostic]
    shown: list[tuple[Path, str]]
    cache: ResultCache
    # Per file: whether the cache holds a result for its content and referenced files.
    valid: list[bool]

    @property
    def displays(self) -> list[str]:
        return [display for _, display in self.shown]


@dataclass(slots=True)
class _Checked:
    summaries: list[FileSummary]
    # Whole results of the files checked in this run (full runs only; None: in the cache).
    whole: list[FileResult | None]
    cached: int


def _validate(settings: ValidateSettings, full: bool) -> ValidationReport:
    run = _discover_files(settings, full, started_ns=time.time_ns())
    history = settings.base is not None or settings.author is not None
    if run.cache.enabled and not full and not history and settings.ledger is None:
        unchanged = _unchanged_repository(settings, run)
        if unchanged is not None:
            return unchanged
    checked = _check_the_rest(settings, run, full)
    summaries = checked.summaries
    diagnostics = list(run.problems) + _cross_file_verdicts(settings, run, summaries, full)
    diagnostics.extend(_run_rules(settings, run, summaries, history=history))
    return ValidationReport(
        root=run.root,
        files=run.displays,
        diagnostics=sort_diagnostics(diagnostics),
        summaries=summaries,
        cached=checked.cached,
        paths=list(run.files),
        _full=checked.whole,
        _loader=_whole_results_loader(settings, run, summaries) if full else None,
    )


def _discover_files(settings: ValidateSettings, full: bool, *, started_ns: int) -> _Discovered:
    cwd = settings.cwd
    root = settings.root or find_root([p if p.is_absolute() else cwd / p for p in settings.paths])
    files, problems = discover(settings.paths, cwd, root)
    shown = [(path, display_path(path, cwd)) for path in files]
    cache = ResultCache(
        settings.cache_dir, root, "full" if full else "summary", started_ns=started_ns
    )
    valid = [cache.valid(path, display) for path, display in shown]
    return _Discovered(root, list(files), list(problems), shown, cache, valid)


def _unchanged_repository(settings: ValidateSettings, run: _Discovered) -> ValidationReport | None:
    """The last run's verdicts and the clock rules at `now`, when no file changed since."""
    run_key = run.cache.run_key(run.shown) if all(run.valid) else ""
    memo = run.cache.get_memo(run_key)
    replay = _replay(memo, settings.now) if memo is not None else None
    if replay is None:
        return None
    if settings.cache_write:
        run.cache.save()  # stamps refreshed by `valid`
    return ValidationReport(
        root=run.root,
        files=run.displays,
        diagnostics=sort_diagnostics(list(run.problems) + replay),
        cached=len(run.files),
    )


def _check_the_rest(settings: ValidateSettings, run: _Discovered, full: bool) -> _Checked:
    """Each file's summary: from the cache where it is valid, else checked (in parallel when
    there are many) and put in the cache."""
    cache = run.cache
    hit_paths = [path for (path, _), ok in zip(run.shown, run.valid, strict=True) if ok]
    found = iter(cache.results(hit_paths, FileSummary))
    summaries_or_none: list[FileSummary | None] = []
    todo: list[tuple[int, tuple[Path, str, Path]]] = []
    for (path, display), ok in zip(run.shown, run.valid, strict=True):
        hit = next(found) if ok else None
        if hit is None:
            todo.append((len(summaries_or_none), (path, display, run.root)))
        summaries_or_none.append(hit)
    jobs = [job for _, job in todo]
    fresh: list[tuple[Any, tuple[str, str] | None]]
    if cache.enabled:
        encoding = _check_full_encoded if full else _check_summary_encoded
        fresh = _map_parallel(encoding, jobs, settings.jobs, settings.progress)
    else:
        plain = _check_full if full else _check_summary
        checked = _map_parallel(plain, jobs, settings.jobs, settings.progress)
        fresh = [(item, None) for item in checked]
    whole: list[FileResult | None] = [None] * len(run.files) if full else []
    for (index, (path, display, _root)), (item, payload) in zip(todo, fresh, strict=True):
        if full:
            whole[index] = item
            summaries_or_none[index] = FileSummary.of(item)
        else:
            summaries_or_none[index] = item
        cache.put(path, display, item, payload)
    summaries = [s for s in summaries_or_none if s is not None]
    return _Checked(summaries, whole, cached=len(run.files) - len(todo))


def _cross_file_verdicts(
    settings: ValidateSettings, run: _Discovered, summaries: list[FileSummary], full: bool
) -> list[Diagnostic]:
    """Every file's own verdicts and the rules across files; the memo of a plain gate run."""
    verdicts = [d for s in summaries for d in s.diagnostics]
    owners = settings.key_owners
    if settings.base is not None:
        from provisioner.gitbase import base_key_owners

        owners = {
            **base_key_owners(run.root, settings.base, settings.paths, settings.cwd),
            **(owners or {}),
        }
    verdicts.extend(cross_file_rules(summaries, owners, settings.user_owners))
    cache = run.cache
    if cache.enabled and not full and owners is None and settings.user_owners is None:
        # The memo holds verdicts of the files alone; who had a key or a name first is not one.
        cache.set_memo(cache.run_key(run.shown), _memo(verdicts, summaries))
    if settings.cache_write:
        cache.save()
    return verdicts


def _run_rules(
    settings: ValidateSettings, run: _Discovered, summaries: list[FileSummary], *, history: bool
) -> list[Diagnostic]:
    """What depends on more than the files: the clock, the Git history, the host's ledger."""
    out = [d for s in summaries for d in clock_rules(s, settings.now)]
    if history:
        from provisioner.gitbase import history_rules

        out.extend(
            history_rules(
                run.root,
                run.files,
                summaries,
                base=settings.base,
                author=settings.author,
                paths=settings.paths,
                cwd=settings.cwd,
            )
        )
    if settings.ledger is not None:
        from provisioner.ledger import declared_of, ledger_rules

        out.extend(
            ledger_rules(
                declared_of(summaries), settings.ledger, settings.now, settings.ledger_max_age
            )
        )
    return out


def _whole_results_loader(
    settings: ValidateSettings, run: _Discovered, summaries: list[FileSummary]
) -> Callable[[list[int]], list[FileResult]]:
    files, shown, cache, root = run.files, run.shown, run.cache, run.root

    def load(indices: list[int]) -> list[FileResult]:
        hits = cache.results([files[i] for i in indices], FileResult)
        # Missing or damaged in the cache (or written by other code): checked again, in
        # parallel when there are many, and each must still be the version that was judged.
        again = [i for i, hit in zip(indices, hits, strict=True) if hit is None]
        checked = _map_parallel(
            _check_full_encoded if cache.enabled else _check_full_plain,
            [(files[i], shown[i][1], root) for i in again],
            settings.jobs,
        )
        fresh = {}
        for i, (result, payload) in zip(again, checked, strict=True):
            if result.digest != summaries[i].digest:
                raise DeclarationError(f"{shown[i][1]} changed while it was being read; run again")
            cache.put(files[i], shown[i][1], result, payload)
            fresh[i] = result
        if fresh and settings.cache_write:
            cache.save()
        return [hit if hit is not None else fresh[i] for i, hit in zip(indices, hits, strict=True)]

    return load


# --- the memo of a run -----------------------------------------------------------------------
#
# Everything but the clock rules is a function of the files' entries: the memo keeps those
# verdicts, and the inputs of the clock rules (certificate dates, key expiries) as plain rows,
# which are cheap to read back: 10,000 certificates in a few tens of milliseconds.


def _row(value: Any) -> list[Any]:
    return [
        v.isoformat() if isinstance(v, datetime) else v
        for v in (getattr(value, f.name) for f in dataclasses.fields(value))
    ]


def _memo(verdicts: list[Diagnostic], summaries: list[FileSummary]) -> dict[str, Any]:
    clock = []
    for s in summaries:
        keys = [
            [k.fingerprint, _row(k.location), k.expires.isoformat()]
            for k in s.keys
            if k.expires is not None
        ]
        if s.certificate is None and not keys:
            continue
        cert = _row(s.certificate) if s.certificate is not None else None
        at = _row(s.certificate_at) if s.certificate_at is not None else None
        renewal = None
        if s.next_certificate is not None and s.next_certificate_at is not None:
            renewal = [_row(s.next_certificate), _row(s.next_certificate_at)]
        clock.append([s.display, cert, at, keys, renewal])
    return {
        "verdicts": json.dumps([encode(d) for d in verdicts], separators=(",", ":")),
        "shape": _shape(),
        "clock": clock,
    }


def _shape() -> dict[str, list[str]]:
    """Field names of the row classes: rows are read back only into the same shapes."""
    return {
        cls.__name__: [f.name for f in dataclasses.fields(cls)]
        for cls in (CertificateInfo, Location)
    }


def _replay(memo: dict[str, Any], now: datetime) -> list[Diagnostic] | None:
    """The memo's verdicts and the clock rules at `now`; None if the memo is unusable."""
    try:
        if memo["shape"] != _shape():
            return None
        dates = [
            i
            for i, f in enumerate(dataclasses.fields(CertificateInfo))
            if f.type in ("datetime", datetime)
        ]
        out = list(decode_text(memo["verdicts"]))
        no_facts = Facts()
        parse = datetime.fromisoformat
        for display, cert, at, keys, renewal in memo["clock"]:
            if cert is not None:
                cert = list(cert)  # the memo itself stays JSON
                for i in dates:
                    cert[i] = parse(cert[i])
            following = None
            if renewal is not None:
                following = list(renewal[0])
                for i in dates:
                    following[i] = parse(following[i])
            summary = FileSummary(
                display=display,
                digest="",
                refs={},
                diagnostics=[],
                facts=no_facts,
                keys=[KeyFact(fp, Location(*loc), parse(expires)) for fp, loc, expires in keys],
                certificate=CertificateInfo(*cert) if cert is not None else None,
                certificate_at=Location(*at) if at is not None else None,
                next_certificate=CertificateInfo(*following) if following is not None else None,
                next_certificate_at=Location(*renewal[1]) if renewal is not None else None,
            )
            out.extend(clock_rules(summary, now))
        if not all(isinstance(d, Diagnostic) for d in out):
            return None
        return out
    except (KeyError, TypeError, ValueError, RecursionError):
        return None
