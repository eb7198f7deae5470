#!/usr/bin/env bash
# Plots the `steady` and `pinned` scenarios of `sundial bench --json` as PNG: for each report,
# throughput (submitted and completed per second) above, pickup lag p99 and backlog below, with
# the pinned phase shaded.
#
#   ./target/release/sundial bench --db private --scenario steady --json > steady-pg.jsonl
#   ./scripts/plot-steady.sh steady-pg.jsonl docs/bench/steady-postgres.png
#
# Needs python3 with venv; matplotlib is installed from PyPI into target/plot-venv.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BENCH.jsonl OUT.png" >&2; exit 2; }
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/plot-venv"
if ! "$venv/bin/python" -c 'import matplotlib' >/dev/null 2>&1; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'matplotlib>=3.8,<4'
fi
exec "$venv/bin/python" "$root/scripts/plot_steady.py" "$1" "$2"
