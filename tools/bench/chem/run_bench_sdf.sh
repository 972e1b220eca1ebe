#!/bin/sh
# The chem I/O benchmark: generates SDF files of 20,000 and 200,000 records by cycling the 3-D,
# explicit-hydrogen records of tests/data/parser-cases (cdk2, EGFR conformers, bzr_data), then
# reads each with flt's MoleculeReader and with RDKit's ForwardSDMolSupplier, one process per
# measurement (peak RSS = VmHWM of that process), REPEATS times (default 3, best time kept).
# Usage: tools/bench/chem/run_bench_sdf.sh [BUILD_DIR] [WORK_DIR]   (prints a Markdown table)
set -eu
cd "$(dirname "$0")/../../.."
build="${1:-build}"
work="${2:-/tmp/flt_bench_chem}"
repeats="${REPEATS:-3}"
pc="${FLT_PARSER_CASES:-$(pwd)/tests/data/parser-cases}"
bench="$build/tools/bench/chem/bench_sdf_reader"
cmake --build "$build" --target bench_sdf_reader -j "${FLT_JOBS:-2}" >/dev/null
mkdir -p "$work"
rm -f "$work"/runs_*.txt

for n in 20000 200000; do
  [ -s "$work/gen_$n.sdf" ] || "$bench" generate "$work/gen_$n.sdf" "$n" \
    "$pc/rdkit-data-deb/cdk2.sdf" "$pc/rdkit-src/Descriptors/EGFR_first10_10confs.sdf" \
    "$pc/rdkit-src/MolAlign/bzr_data.sdf"
done
echo "| records | file MiB | reader | records/s (best of $repeats) | peak RSS MiB | atoms read | failures |"
echo "|---|---|---|---|---|---|---|"
for n in 20000 200000; do
  size=$(du -m "$work/gen_$n.sdf" | cut -f1)
  modes="rdkit flt"
  [ "$n" = 20000 ] && modes="rdkit flt rdkit-removehs"
  # Interleave the readers in each round so that load drift on a shared machine hits both alike.
  i=0
  while [ "$i" -lt "$repeats" ]; do
    for mode in $modes; do
      "$bench" read "$work/gen_$n.sdf" "$mode" >> "$work/runs_$n.txt"
    done
    i=$((i + 1))
  done
  for mode in $modes; do
    # Best rate of this reader; peak RSS is the largest seen.
    grep "^$mode " "$work/runs_$n.txt" | sort -t' ' -k5,5 -g -r | head -n 1 | {
      read -r m records atoms seconds rate rss failures
      maxrss=$(grep "^$mode " "$work/runs_$n.txt" | cut -d' ' -f6 | sort -g | tail -n 1)
      echo "| $n | $size | $m | $rate | $maxrss | $atoms | $failures |"
    }
  done
done
