#!/usr/bin/env bash
# Side by side: one encoder block (bench_block run flt N THREADS WIDTH) from two builds, run
# alternately ROUNDS times in one session, and the minimum of each time per build (forward,
# parameter backward, the block with coordinate gradients, and the split's near and far field).
# On a shared machine the alternation spreads the host's load over both builds and the minimum
# drops the runs it slowed most. For a change to the block's kernels: build the commit before it
# in a second tree (git worktree add ../base HEAD~1; configure and build its target bench_block)
# and compare. Not part of ctest.
#
#   tools/bench/compare_block.sh BUILD_A BUILD_B [--atoms 10000] [--threads 1] [--width 128]
#                                [--rounds 6]
#
# BUILD_A, BUILD_B: build directories holding tools/bench/bench_block. Needs /usr/bin/python3.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: compare_block.sh BUILD_A BUILD_B [--atoms N] [--threads T] [--width W] [--rounds R]" >&2
  exit 2
fi
build_a="$1"
build_b="$2"
shift 2
atoms=10000
threads=1
width=128
rounds=6
while [[ $# -gt 0 ]]; do
  case "$1" in
    --atoms) atoms="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --width) width="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    *) echo "compare_block.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
for b in "$build_a" "$build_b"; do
  [[ -x "$b/tools/bench/bench_block" ]] || { echo "compare_block.sh: no $b/tools/bench/bench_block" >&2; exit 2; }
done
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for ((r = 1; r <= rounds; ++r)); do
  for side in a b; do
    build="$build_a"
    [[ "$side" == b ]] && build="$build_b"
    "$build/tools/bench/bench_block" run flt "$atoms" "$threads" "$width" | grep '^RESULT' >> "$out/$side.txt"
  done
done
/usr/bin/python3 - "$out" "$build_a" "$build_b" "$atoms" "$threads" "$width" "$rounds" <<'PY'
import re, sys
out, build_a, build_b, atoms, threads, width, rounds = sys.argv[1:]
keys = [("forward_s", "forward s"), ("backward_s", "params backward s"), ("dr_s", "forward + backward with dR s"),
        ("near_s", "near field fwd + bwd s"), ("near_forward_s", "near field fwd s"),
        ("near_backward_s", "near field bwd s"), ("far_s", "far field fwd + bwd s"),
        ("far_forward_s", "far field fwd s"), ("far_backward_s", "far field bwd s")]
mins = {}
for side in "ab":
    rows = [dict(re.findall(r"(\w+)=([^ ]+)", line)) for line in open(f"{out}/{side}.txt")]
    # a key that a build does not print (an older bench_block) or did not time (-1) is left out
    mins[side] = {}
    for k, _ in keys:
        values = [float(r[k]) for r in rows if k in r and float(r[k]) >= 0]
        if values:
            mins[side][k] = min(values)
print(f"one block, flt, {atoms} atoms, {threads} thread(s), width {width}: minimum of {rounds} alternating runs")
print(f"A = {build_a}\nB = {build_b}\n")
print("| time | A | B | A / B |\n|---|---|---|---|")
for k, label in keys:
    if k in mins["a"] and k in mins["b"]:
        a, b = mins["a"][k], mins["b"][k]
        print(f"| {label} | {a:.3f} | {b:.3f} | {a / b:.2f} |")
PY
