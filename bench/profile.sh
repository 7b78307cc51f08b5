#!/usr/bin/env bash
# Profiles each stage of the job on its own with `perf record` (cpu-clock sampling, which
# works where hardware counters are not exposed), and prints each stage's hottest
# functions, its share by library and its peak memory. BENCHMARKS.md's "what limits each stage" comes from
# this output.
#
#   bash bench/profile.sh [ROWS]        # default 1000000 rows, 5 indices
#
# Needs perf (Debian: linux-perf) and a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
BIN=${MEDALLION_BIN:-${CARGO_TARGET_DIR:-target}/release/medallion}
[ -x "$BIN" ] || { echo "build first: cargo build --release (or set MEDALLION_BIN)" >&2; exit 1; }
command -v perf >/dev/null || { echo "perf is needed: apt-get install linux-perf" >&2; exit 1; }

WORK=$(mktemp -d /tmp/medallion-profile.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
"$BIN" generate --rows "$ROWS" --indices 5 --files 4 --out "$WORK/landing" >/dev/null
VARS=(--var "landing_dir=$WORK/landing" --var "warehouse_dir=$WORK/warehouse" --var "state_dir=$WORK/state")

for task in ingest bronze close_price silver_gold; do
  echo "=== $task"
  perf record -q -e cpu-clock -F 499 -g -o "$WORK/$task.data" -- \
    /usr/bin/time -f "peak RSS %M KB, %e s wall" \
    "$BIN" run --task "$task" "${VARS[@]}" >"$WORK/$task.log" 2>&1
  grep -E "── |rows read|peak RSS" "$WORK/$task.log" | head -12
  echo "--- by library"
  { perf report -q -i "$WORK/$task.data" --no-children -g none --sort dso 2>/dev/null || true; } \
    | grep -v '^$' | head -6 || true
  echo "--- hottest functions (self time)"
  { perf report -q -i "$WORK/$task.data" --no-children -g none --sort dso,symbol 2>/dev/null || true; } \
    | grep -v '^$' | head -25 | cut -c1-150 || true
done
