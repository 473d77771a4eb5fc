#!/usr/bin/env bash
# Reproduce the benchmark figures of the README:
#
#   bench/run_all.sh            # 1,000 and 10,000 declarations, 3 runs each (about 15 minutes)
#   bench/run_all.sh --quick    # 1,000 declarations, 1 run
#
# The generated declarations are cached in bench/out/ (gitignored); the first run makes them
# (about a minute for 10,000: RSA keys are slow to generate). Results go to standard output
# and to bench/out/results-<date>.md, as Markdown tables ready to paste.
#
# To measure another version of the code with the same benchmark (e.g. before a change):
#   git archive <rev> | tar -x -C /tmp/before && PROVISIONER_SRC=/tmp/before bench/run_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$PWD/.venv/bin/python}
BIN=$(dirname "$PY")
if [[ -n "${PROVISIONER_SRC:-}" ]]; then
  export PYTHONPATH="$PROVISIONER_SRC${PYTHONPATH:+:$PYTHONPATH}"
fi
if [[ ! -x "$BIN/check-jsonschema" ]]; then
  "$PY" -m pip install --quiet check-jsonschema
fi
sizes=1000,10000 runs=3 n=10000 intake_sets=1000
if [[ "${1:-}" == "--quick" ]]; then
  sizes=1000 runs=1 n=1000 intake_sets=100
fi
mkdir -p bench/out
out="bench/out/results-$(date -u +%Y%m%dT%H%M%SZ).md"
# From another directory: with -c, Python looks in the working directory first.
code=$(cd / && "$PY" -c 'import provisioner, pathlib; print(pathlib.Path(provisioner.__file__).parent)')
{
  echo "## Benchmarks"
  echo
  echo "Code: \`$code\` ($(git -C "$code/.." describe --always --dirty 2>/dev/null || echo 'not a Git checkout'))."
  echo
  "$PY" bench/validate_bench.py --sizes "$sizes" --runs "$runs"
  echo
  "$PY" bench/reconcile_bench.py --n "$n" --runs "$runs"
  echo
  "$PY" bench/intake_bench.py --sets "$intake_sets" --runs "$runs"
} | tee "$out"
echo "written to $out" >&2
