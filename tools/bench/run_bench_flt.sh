#!/usr/bin/env bash
# Runs the FLT attention scaling benchmark (bench_flt) and writes docs/benchmarks/flt_attention.md
# (docs/benchmarks/flt_attention_quick.md with --quick). Not part of ctest.
#
#   tools/bench/run_bench_flt.sh [--quick] [--exact-max TOKENS] [--timeout SECONDS]
#
# Builds bench_flt in Release (build dir: $FLT_BENCH_BUILD_DIR, default build-bench/, configured
# only when it does not exist yet) and runs `bench_flt all`, which measures every configuration in
# its own process. Full mode takes about 15 minutes on 2 cores; --quick about 3.
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
cmake --build "$build" --target bench_flt -j2 >/dev/null

mkdir -p "$root/docs/benchmarks"
if [[ $quick == 1 ]]; then
  out="$root/docs/benchmarks/flt_attention_quick.md"
else
  out="$root/docs/benchmarks/flt_attention.md"
fi
command="tools/bench/run_bench_flt.sh${*:+ $*}"
commit="$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$root" status --porcelain -- src tools 2>/dev/null)" ]]; then
  commit="$commit + uncommitted changes in src/ or tools/"
fi
"$build/tools/bench/bench_flt" all "$@" --output "$out" --command "$command" --commit "$commit"
