#!/usr/bin/env bash
# Far-field mask fidelity and rotation sensitivity at the molecule model's far-field settings on
# the bundled QM9 subset: builds bench_far_mask (tools/bench/bench_far_mask.cpp) and writes its
# tables to docs/benchmarks/far_field_mask.md (with --output elsewhere, there). Not part of ctest;
# tests/attention/test_far_mask_qm9.cpp asserts the criterion at the defaults.
#
#   tools/bench/run_far_mask.sh [--molecules N] [--rotations R] [--sens-molecules N]
#                               [--sens-rotations R] [--raised A] [--threads T] [--no-sensitivity]
#                               [--output FILE]
#
# Build dir: $FLT_BENCH_BUILD_DIR (default build-bench/), configured in Release only when it does
# not exist yet. Defaults (1000 molecules x 4 designs for the masks, 300 molecules x 8 rotations for
# the sensitivity) take about 10-20 minutes on the shared 2-core machine, most of it in part 2.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${FLT_BENCH_BUILD_DIR:-$root/build-bench}"
out="$root/docs/benchmarks/far_field_mask.md"
pass=()
while [[ $# -gt 0 ]]; do
  if [[ "$1" == "--output" ]]; then
    out="$2"
    shift 2
  else
    pass+=("$1")
    shift
  fi
done

if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DFLT_BUILD_TESTS=OFF >/dev/null
fi
cmake --build "$build" --target bench_far_mask -j2 >/dev/null

command="tools/bench/run_far_mask.sh${pass[*]:+ ${pass[*]}}"
commit="$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$root" status --porcelain -- src tools 2>/dev/null)" ]]; then
  commit="$commit + uncommitted changes in src/ or tools/"
fi
mkdir -p "$(dirname "$out")"
# The tables go to a temporary file first; the document's conclusions (written by hand, below the
# marker line) are kept when the file is regenerated.
tables="$(mktemp)"
trap 'rm -f "$tables"' EXIT
"$build/tools/bench/bench_far_mask" "${pass[@]}" --command "$command" --commit "$commit" --output "$tables" >/dev/null
marker="<!-- measured tables above; conclusions below are kept by run_far_mask.sh -->"
{
  echo "# Far-field mask fidelity and rotation sensitivity on QM9"
  echo
  cat "$tables"
  echo "$marker"
  if [[ -f "$out" ]] && grep -qF "$marker" "$out"; then
    sed -n "/^$(printf '%s' "$marker" | sed 's/[][\/.*^$]/\\&/g')\$/,\$p" "$out" | tail -n +2
  fi
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out"
