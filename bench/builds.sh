#!/usr/bin/env bash
# Times the whole stock job of two builds on one CSV file, in turn (A B A B ...), each
# run from an empty warehouse and state on the embedded broker, and prints each build's
# median wall time and the median of the pair-by-pair ratios A/B.
#
#   bash bench/builds.sh OLD_BIN OLD_BUNDLE NEW_BIN NEW_BUNDLE CSV [RUNS]
#
# BIN is a `medallion` binary, BUNDLE its own checkout's medallion.yml (each build runs
# the bundle it was written with), CSV the landing file (for instance indexData.csv).
# One warm-up run of each is not counted. Wall and peak RSS come from GNU time.
set -euo pipefail
[ $# -ge 5 ] || { sed -n 2,10p "$0" >&2; exit 2; }
a_bin=$1 a_bundle=$2 b_bin=$3 b_bundle=$4 csv=$5 runs=${6:-7}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/landing"
cp "$csv" "$work/landing/"

# One run of a build: its wall seconds and peak RSS (kB), on one line.
once() {
  local bin=$1 bundle=$2
  rm -rf "$work/wh" "$work/st"
  /usr/bin/time -f '%e %M' -o "$work/time" "$bin" --bundle "$bundle" run \
    --var landing_dir="$work/landing" --var warehouse_dir="$work/wh" \
    --var state_dir="$work/st" >"$work/out" 2>&1 \
    || { cat "$work/out" >&2; echo "the run of $bin failed" >&2; exit 1; }
  cat "$work/time"
}

median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

once "$a_bin" "$a_bundle" >/dev/null
once "$b_bin" "$b_bundle" >/dev/null
: >"$work/a" && : >"$work/b" && : >"$work/ratio"
for _ in $(seq "$runs"); do
  read -r aw am < <(once "$a_bin" "$a_bundle")
  read -r bw bm < <(once "$b_bin" "$b_bundle")
  echo "$aw $am" >>"$work/a"
  echo "$bw $bm" >>"$work/b"
  awk -v a="$aw" -v b="$bw" 'BEGIN {printf "%.4f\n", a / b}' >>"$work/ratio"
done
for side in a b; do
  bin=$a_bin; [ $side = b ] && bin=$b_bin
  printf '%s: wall median %s s (min %s, max %s), peak RSS median %s MB\n' "$bin" \
    "$(cut -d' ' -f1 "$work/$side" | median)" \
    "$(cut -d' ' -f1 "$work/$side" | sort -g | head -1)" \
    "$(cut -d' ' -f1 "$work/$side" | sort -g | tail -1)" \
    "$(cut -d' ' -f2 "$work/$side" | median | awk '{printf "%d", $1 / 1024}')"
done
printf 'A/B wall, median of %s pairs: %s (min %s, max %s)\n' "$runs" \
  "$(median <"$work/ratio")" "$(sort -g "$work/ratio" | head -1)" "$(sort -g "$work/ratio" | tail -1)"
