#!/usr/bin/env bash
# Peak memory per rank of `mpiexec -n P flt train` on a large input: each rank runs under
# /usr/bin/time -v, which reports its maximum resident set size; next to it the number of
# molecules whose coordinates the rank held after loading (rank 0's report) and the wall time.
# The training after the load is kept small (a width-8 model, one epoch over 64 molecules, the
# rest of the molecules in the test set, predicted once at the end and spread over the ranks), so
# the peak is that of loading the data and holding the rank's share. Rank count 0 is the plain
# program without a launcher. Not part of ctest.
#
#   tools/bench/run_mpi_load_memory.sh [--ranks 0,1,2] [--input datasets/qm9/qm9_subset.xyz.gz]
#                                      [--copies 1] [--out FILE]
#
# --copies N trains on N copies of the input concatenated into one gzip file (a larger dataset:
# 10 copies of the QM9 subset are 130k molecules).
#
# Needs an flt built with -DFLT_WITH_MPI=ON: FLT_EXE names it (default build/tools/flt). Prints a
# markdown table and, with --out, writes it there.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ranks_list="0,1,2"
input="$root/datasets/qm9/qm9_subset.xyz.gz"
out=""
copies=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --ranks) ranks_list="$2"; shift 2 ;;
    --input) input="$2"; shift 2 ;;
    --copies) copies="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "run_mpi_load_memory.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
flt="${FLT_EXE:-$root/build/tools/flt}"
[[ -x "$flt" ]] || { echo "run_mpi_load_memory.sh: no flt at $flt (set FLT_EXE)" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "run_mpi_load_memory.sh: needs GNU time (/usr/bin/time, Debian package time)" >&2; exit 2; }
mpiexec="${MPIEXEC:-mpiexec}"
launcher=("$mpiexec")
if "$mpiexec" --version 2>/dev/null | grep -Eq "Open MPI|OpenRTE"; then
  launcher+=(--oversubscribe --bind-to none)
  [[ "$(id -u)" -eq 0 ]] && launcher+=(--allow-run-as-root)
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [[ "$copies" -gt 1 ]]; then
  for ((c = 0; c < copies; ++c)); do gzip -dc -f "$input"; done | gzip -1 > "$work/input.xyz.gz"
  input="$work/input.xyz.gz"
fi
args=(train "$input" --targets U0 --split 64,64,rest --epochs 1 --batch-size 32 --gradient-chunk 8
      --width 8 --heads 2 --blocks 1 --mlp-hidden 8 --head-hidden 8
      --eval-batch-size 256 --threads 1 --seed 1)

table="| ranks | rank | peak RSS [MiB] | coordinates held after loading [molecules] | wall time [s] |
|---|---|---|---|---|"
IFS=',' read -r -a ranks_array <<< "$ranks_list"
for ranks in "${ranks_array[@]}"; do
  run="$work/run-$ranks"
  # Each rank writes its own /usr/bin/time report, named by the launcher's rank variable.
  wrapper="exec /usr/bin/time -v -o '$work/time-$ranks.'\"\${OMPI_COMM_WORLD_RANK:-\${PMI_RANK:-0}}\" \"\$@\""
  if [[ "$ranks" == 0 ]]; then
    sh -c "$wrapper" sh "$flt" "${args[@]}" --out "$run" >"$work/out-$ranks" 2>"$work/err-$ranks" || true
  else
    "${launcher[@]}" -n "$ranks" sh -c "$wrapper" sh "$flt" "${args[@]}" --out "$run" \
      >"$work/out-$ranks" 2>"$work/err-$ranks" || true
  fi
  if [[ ! -f "$run/model.flt" ]]; then
    echo "run_mpi_load_memory.sh: the run with $ranks ranks failed:" >&2
    tail -20 "$work/err-$ranks" >&2
    exit 1
  fi
  held_line="$(grep -o 'coordinates held after loading, per rank: [0-9, ]* of [0-9]* molecules' "$work/err-$ranks" || true)"
  total="$(grep -o 'read [0-9]* molecules' "$work/err-$ranks" | head -1 | grep -o '[0-9]*')"
  held=()
  if [[ -n "$held_line" ]]; then
    IFS=',' read -r -a held <<< "$(echo "$held_line" | sed 's/.*per rank: \(.*\) of .*/\1/')"
  fi
  label="$ranks"
  [[ "$ranks" == 0 ]] && label="plain (no mpiexec)"
  for report in "$work"/time-"$ranks".*; do
    rank="${report##*.}"
    rss_kb="$(grep 'Maximum resident set size' "$report" | grep -o '[0-9]*$')"
    wall="$(grep 'Elapsed (wall clock)' "$report" | sed 's/.*): //')"
    h="${held[$rank]:-$total}"
    table+=$'\n'"| $label | $rank | $(awk -v k="$rss_kb" 'BEGIN { printf "%.1f", k / 1024 }') | ${h// /} of $total | $wall |"
  done
done
echo "$table"
if [[ -n "$out" ]]; then echo "$table" > "$out"; fi
