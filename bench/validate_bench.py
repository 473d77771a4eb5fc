"""Benchmark of `provisioner validate`, through the real CLI in a subprocess.

    python bench/validate_bench.py [--sizes 1000,10000] [--runs 3] [--jsonschema-runs 1]

For each size N (a generated set, see generate.py):
- cold, `--no-cache`;
- cold, with an empty cache directory (the run also writes the cache);
- warm: the repository is unchanged and the cache is present;
- warm after one file changed (the cache holds every other file);
- the same files checked by check-jsonschema against the exported JSON Schema, for comparison
  (it checks the schema only: no keys, certificates, phone numbers, cross-file rules).

Prints a Markdown table: medians of the runs, declarations per second, CPU time, peak memory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _measure as m
from generate import generate

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TARGET_COLD = 5.0
TARGET_WARM = 1.0


@dataclass(frozen=True, slots=True)
class Row:
    n: int
    label: str
    series: m.Series
    target: float | None = None


def schema_file(tmp: Path) -> Path:
    committed = REPO / "schemas" / "quality.schema.json"
    if committed.exists():
        return committed
    out = tmp / "quality.schema.json"
    m.run([m.tool("provisioner"), "schema", "--output", str(out)])
    return out


def checked(run: m.Run, n: int) -> None:
    if f"{n} declarations checked" not in run.stdout:
        raise SystemExit(f"unexpected output:\n{run.stdout[-2000:]}")


def touch_one(decls: Path) -> None:
    """Change one declaration in a way that keeps it valid (a contact's function)."""
    victim = sorted((decls / "qualities").iterdir())[
        len(list((decls / "qualities").iterdir())) // 2
    ]
    text = victim.read_text("utf-8")
    marker = "    function: "
    start = text.index(marker) + len(marker)
    end = text.index("\n", start)
    value = text[start:end]
    new = '"Payroll (bench)"' if value != '"Payroll (bench)"' else '"Payroll"'
    victim.write_text(text[:start] + new + text[end:], "utf-8")


def bench_size(n: int, runs: int, js_runs: int, tmp: Path, jobs: int | None) -> list[Row]:
    decls = HERE / "out" / f"decls-{n}"
    marker = generate(n, decls)
    print(f"N={n}: {decls} ({marker['keys']} keys, {marker['rsa_keys']} RSA)", file=sys.stderr)
    prov = m.tool("provisioner")
    base = [prov, "validate", str(decls)] + (["--jobs", str(jobs)] if jobs else [])
    rows: list[Row] = []

    def row(label: str, s: m.Series, target: float | None = None) -> None:
        rows.append(Row(n, label, s, target))

    no_cache = m.series("cold --no-cache", runs, lambda i: [*base, "--no-cache"])
    for r in no_cache.runs:
        checked(r, n)
    row("cold, `--no-cache`", no_cache, TARGET_COLD if n == 10_000 else None)

    def fresh_dir(i: int) -> None:
        shutil.rmtree(tmp / f"empty-{n}-{i}", ignore_errors=True)

    empty = m.series(
        "cold, empty cache",
        runs,
        lambda i: [*base, "--cache-dir", str(tmp / f"empty-{n}-{i}")],
        before=fresh_dir,
    )
    row("cold, empty cache (writes it)", empty, TARGET_COLD if n == 10_000 else None)

    warm_dir = tmp / f"warm-{n}"
    m.run([*base, "--cache-dir", str(warm_dir)])
    warm = m.series("warm", runs, lambda i: [*base, "--cache-dir", str(warm_dir)])
    for r in warm.runs:
        checked(r, n)
    row("unchanged, cache present", warm, TARGET_WARM if n == 10_000 else None)

    one = m.series(
        "one file changed",
        runs,
        lambda i: [*base, "--cache-dir", str(warm_dir)],
        before=lambda i: touch_one(decls),
    )
    row("one file changed, cache present", one)

    files = sorted(str(p) for p in (decls / "qualities").iterdir())
    schema = schema_file(tmp)
    js = m.series(
        "check-jsonschema",
        js_runs,
        lambda i: [m.tool("check-jsonschema"), "--schemafile", str(schema), *files],
    )
    row("check-jsonschema (schema only)", js)
    return rows


def table(rows: list[Row], runs: int) -> str:
    out = [
        f"Validation, median of {runs} runs (range in brackets); {m.machine()}.",
        "",
        "| N | run | wall s | declarations/s | CPU s | peak RSS, largest process (MiB) "
        "| peak RSS, all processes (MiB) | target |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        s = r.series
        verdict = m.verdict(s.wall, r.target)
        out.append(
            f"| {r.n:,} | {r.label} | {m.fmt(s.wall)} ({s.spread()}) | {r.n / s.wall:,.0f} | "
            f"{m.fmt(s.cpu)} | {s.maxrss:.0f} | {s.tree_rss:.0f} | {verdict} |"
        )
    by = {(r.n, r.label): r.series.wall for r in rows}
    out.append("")
    for n in sorted({r.n for r in rows}):
        cold = by[(n, "cold, `--no-cache`")]
        warm = by[(n, "unchanged, cache present")]
        js = by[(n, "check-jsonschema (schema only)")]
        out.append(
            f"- N={n:,}: check-jsonschema takes {js / cold:.1f}× the time of a cold "
            f"`provisioner validate`; an unchanged re-validation takes {warm / cold:.2f}× a "
            "cold one."
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jsonschema-runs", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=None, help="pass --jobs to validate")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="validate-bench-") as tmp:
        os.environ.setdefault("TMPDIR", tmp)
        for n in sizes:
            rows += bench_size(n, args.runs, args.jsonschema_runs, Path(tmp), args.jobs)
    print(table(rows, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
