"""Running a command and measuring it: wall time, CPU time and peak memory.

Each run is a fresh subprocess, reaped with `os.wait4` so that its resource usage is its own
(CPU time includes the worker processes it waited for; `ru_maxrss` is the peak resident set of
the largest single process of its tree). A sampler thread also adds up the resident sets of
the whole process tree every 20 ms: the peak of that sum is what the machine had to provide
(shared copy-on-write pages of forked workers are counted once per process, so it is an upper
bound).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
VENV_BIN = Path(sys.executable).parent


@dataclass(slots=True)
class Run:
    wall: float
    cpu: float
    maxrss_mib: float
    tree_rss_mib: float
    returncode: int
    stdout: str


@dataclass(slots=True)
class Series:
    label: str
    runs: list[Run] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return statistics.median(r.wall for r in self.runs)

    @property
    def cpu(self) -> float:
        return statistics.median(r.cpu for r in self.runs)

    @property
    def maxrss(self) -> float:
        return max(r.maxrss_mib for r in self.runs)

    @property
    def tree_rss(self) -> float:
        return max(r.tree_rss_mib for r in self.runs)

    def spread(self) -> str:
        walls = sorted(r.wall for r in self.runs)
        return f"{walls[0]:.2f}-{walls[-1]:.2f}"


def tool(name: str) -> str:
    """A console script of the benchmark's virtual environment, else from PATH."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} is not installed")
    return found


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after the last ')'.
        fields = data[data.rfind(b")") + 2 :].split()
        tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


class _TreeSampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.02):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            tree = _children()
            todo, total = [self.pid], 0
            while todo:
                pid = todo.pop()
                total += _rss(pid)
                todo.extend(tree.get(pid, []))
            self.peak = max(self.peak, total)
            self.stop.wait(self.interval)


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    expect: Sequence[int] = (0,),
) -> Run:
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-out-{os.getpid()}.txt"
    with open(out_path, "w+b") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        sampler = _TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        sampler.stop.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    out_path.unlink(missing_ok=True)
    if proc.returncode not in expect:
        tail = "\n".join(text.splitlines()[-15:])
        raise SystemExit(f"{' '.join(argv[:3])}… exited {proc.returncode}:\n{tail}")
    return Run(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        maxrss_mib=usage.ru_maxrss / 1024,
        tree_rss_mib=max(sampler.peak, usage.ru_maxrss * 1024) / 2**20,
        returncode=proc.returncode,
        stdout=text,
    )


def series(
    label: str,
    runs: int,
    make_argv: Callable[[int], Sequence[str]],
    *,
    before: Callable[[int], None] | None = None,
    **kwargs: object,
) -> Series:
    s = Series(label)
    for i in range(runs):
        if before is not None:
            before(i)
        s.runs.append(run(make_argv(i), **kwargs))  # type: ignore[arg-type]
        print(
            f"  {label} #{i + 1}: {s.runs[-1].wall:.2f} s wall, {s.runs[-1].cpu:.2f} s CPU, "
            f"{s.runs[-1].maxrss_mib:.0f} MiB",
            file=sys.stderr,
        )
    return s


def machine() -> str:
    """One line about the machine and how busy it was, for the table's caption."""
    cores = len(os.sched_getaffinity(0))
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = "unknown CPU"
    load = os.getloadavg()
    py = ".".join(map(str, sys.version_info[:3]))
    return f"{cores} cores ({model}), Python {py}, load average {load[0]:.2f} at start"


def fmt(seconds: float) -> str:
    return f"{seconds:.2f}" if seconds < 100 else f"{seconds:.0f}"


def verdict(wall: float, target: float | None) -> str:
    """The target column: empty without a target, else whether the median met it."""
    if target is None:
        return ""
    return f"< {target:g} s: {'**met**' if wall < target else '**missed**'}"
