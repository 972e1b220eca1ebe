#!/usr/bin/env bash
# Data-parallel training benchmark: training throughput (molecules/s through forward + backward +
# optimiser, validation excluded) of `mpiexec -n P flt train` for each P, with the efficiency
# throughput(P) / (P * throughput(1)) and, per step, the time in the integer all-reduce of the
# gradient, waiting for the slowest rank (the scalar MPI_MAX before it), the fixed-point conversion
# and the exchange of molecules; next to the plain serial engine (one backward per batch). The recipe is
# the default model's (datasets/qm9/default_model.ini: near_far, batch 32), on a subset of the
# bundled QM9 data, each rank with --threads T. Not part of ctest.
#
#   tools/bench/run_mpi_train.sh [--ranks 1,2] [--threads 1] [--molecules 640] [--epochs 1]
#                                [--chunk 8] [--repeats 3] [--out docs/benchmarks/mpi_training.md]
#
# Builds flt with -DFLT_WITH_MPI=ON in $FLT_BENCH_BUILD_DIR (default build-bench-mpi/, configured
# only when it does not exist yet) unless FLT_EXE names a built flt; prints a markdown table and,
# with --out, writes it there. Each round runs every configuration once (a few minutes per round
# at the defaults on 2 cores); the table gives the median round of each.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ranks_list="1,2"
threads=1
molecules=640
epochs=1
chunk=8
repeats=3
out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --ranks) ranks_list="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --molecules) molecules="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --chunk) chunk="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "run_mpi_train.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

flt="${FLT_EXE:-}"
if [[ -z "$flt" ]]; then
  build="${FLT_BENCH_BUILD_DIR:-$root/build-bench-mpi}"
  if [[ ! -f "$build/CMakeCache.txt" ]]; then
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DFLT_WITH_MPI=ON >/dev/null
  fi
  cmake --build "$build" --target flt -j2 >/dev/null
  flt="$build/tools/flt"
fi
mpiexec="${MPIEXEC:-mpiexec}"
launcher=("$mpiexec")
if "$mpiexec" --version 2>/dev/null | grep -Eq "Open MPI|OpenRTE"; then
  launcher+=(--oversubscribe --bind-to none)
  [[ "$(id -u)" -eq 0 ]] && launcher+=(--allow-run-as-root)
fi

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
validation=$((molecules / 10))
args=(train --config "$root/datasets/qm9/default_model.ini" --inputs "$root/datasets/qm9/qm9_subset.xyz.gz"
      --split-file none --limit $((molecules + validation)) --split "$molecules,$validation,rest"
      --epochs "$epochs" --threads "$threads")

# measure LABEL CHUNK LAUNCHER... : runs one configuration; prints "throughput allreduce_ms
# wait_ms conversion_ms exchange_ms" from flt's summary.
measure() {
  local label="$1" gradient_chunk="$2"; shift 2
  local log="$work/$label.log"
  if ! "$@" "$flt" "${args[@]}" --gradient-chunk "$gradient_chunk" --out "$work/$label" >"$log" 2>"$work/$label.err"; then
    echo "run_mpi_train.sh: $label failed:" >&2
    tail -20 "$work/$label.err" >&2
    exit 1
  fi
  awk '/^throughput:/ {
         tp = $2; ar = "-"; wt = "-"; cv = "-"; ex = "-"
         for (i = 1; i <= NF; ++i) {
           if ($(i) == "all-reduce") ar = $(i + 1)
           if ($(i) == "slowest") wt = $(i + 2)
           if ($(i) == "conversion") cv = $(i + 1)
           if ($(i) == "exchange") ex = $(i + 1)
         }
       }
       END { if (tp == "") exit 1; print tp, ar, wt, cv, ex }' "$log"
}

# Rounds interleave the configurations (so a change in machine load hits all alike); each
# reported number is the median over the rounds (of the throughput; the times of that round).
IFS=',' read -r -a ranks_array <<<"$ranks_list"
configs=(serial)
for p in "${ranks_array[@]}"; do configs+=("p$p"); done
declare -A results
for ((round = 1; round <= repeats; ++round)); do
  for c in "${configs[@]}"; do
    if [[ "$c" == serial ]]; then
      # The plain serial engine (one backward pass per batch, no launcher) for reference.
      line=$(measure "serial-$round" 0 env) || exit 1
    else
      line=$(measure "$c-$round" "$chunk" "${launcher[@]}" -n "${c#p}") || exit 1
    fi
    results[$c]+="$line"$'\n'
    echo "round $round, $c: $line" >&2
  done
done
# The median line by throughput.
median() { printf '%s' "${results[$1]}" | sort -g -k1,1 | awk '{ l[NR] = $0 } END { print l[int((NR + 1) / 2)] }'; }

header="| engine | ranks x threads | molecules/s | speed-up | efficiency | all-reduce [ms/step] | waiting for the slowest rank [ms/step] | fixed-point conversion [ms/step] | molecule exchange [ms/step] |"
rows=()
read -r tp ar wt cv ex <<<"$(median serial)"
rows+=("| serial engine (whole batch) | 1 x $threads | $tp | | | $ar | $wt | $cv | $ex |")
base=""
for p in "${ranks_array[@]}"; do
  read -r tp ar wt cv ex <<<"$(median "p$p")"
  [[ -z "$base" ]] && base="$tp"
  speedup=$(awk -v a="$tp" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
  eff=$(awk -v a="$tp" -v b="$base" -v p="$p" 'BEGIN { printf "%.0f%%", 100 * a / (b * p) }')
  rows+=("| MPI, chunks of $chunk | $p x $threads | $tp | $speedup | $eff | $ar | $wt | $cv | $ex |")
done

table="$header
|---|---|---|---|---|---|---|---|---|"
for r in "${rows[@]}"; do table="$table
$r"; done
about="Command: \`tools/bench/run_mpi_train.sh --ranks $ranks_list --threads $threads --molecules $molecules --epochs $epochs --chunk $chunk --repeats $repeats\`
on $(nproc) cores ($(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(date -u +%Y-%m-%d),
$("$mpiexec" --version 2>/dev/null | head -1). Training only (forward, backward, all-reduce, AdamW); $molecules
training molecules per epoch, batch 32, the default model's recipe; median of $repeats interleaved rounds.
Load average before the run: $load_before."
printf '%s\n\n%s\n' "$table" "$about"
if [[ -n "$out" ]]; then printf '%s\n\n%s\n' "$table" "$about" >"$out"; fi
