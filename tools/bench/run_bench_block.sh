#!/usr/bin/env bash
# Runs the encoder-block scaling benchmark (one block of the molecule model, forward + backward,
# N = 1e3-1e6 atoms at 0.1 atoms/A^3, 1 and 2 threads, next to the quadratic far field and the
# old exact attention) and writes docs/benchmarks/encoder_block.md
# (docs/benchmarks/encoder_block_quick.md with --quick). Not part of ctest.
#
#   tools/bench/run_bench_block.sh [--quick] [--widths auto|128|64|128,64] [--timeout S]
#                                  [--exact-timeout S] [--max-gib G] [--reruns K]
#
# Builds bench_block in Release (build dir: $FLT_BENCH_BUILD_DIR, default build-bench/, configured
# only when it does not exist yet) and runs `bench_block all`, which measures every configuration
# in its own process and skips those predicted to exceed the memory cap (--max-gib, default 18) or
# their time limit. Full mode takes about 20-40 minutes on 2 cores; --quick about 3.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${FLT_BENCH_BUILD_DIR:-$root/build-bench}"
quick=0
for arg in "$@"; do
  [[ "$arg" == "--quick" ]] && quick=1
done

if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DFLT_BUILD_TESTS=OFF >/dev/null
fi
cmake --build "$build" --target bench_block -j2 >/dev/null

mkdir -p "$root/docs/benchmarks"
if [[ $quick == 1 ]]; then
  out="$root/docs/benchmarks/encoder_block_quick.md"
else
  out="$root/docs/benchmarks/encoder_block.md"
fi
command="tools/bench/run_bench_block.sh${*:+ $*}"
commit="$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$root" status --porcelain -- src tools 2>/dev/null)" ]]; then
  commit="$commit + uncommitted changes in src/ or tools/"
fi
"$build/tools/bench/bench_block" all "$@" --output "$out" --command "$command" --commit "$commit"
