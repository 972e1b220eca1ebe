#!/usr/bin/env bash
# Cost of a training step on energies and forces against the energy-only step, side by side in
# one run: `flt train` with the rMD17 ethanol recipe (datasets/rmd17-ethanol/energy_model.ini, or
# --config) for --epochs epochs, energy-only and with --force-weight, alternated --reps times, one
# thread each (--threads). A step's time is the optimiser steps' wall time of the run (the
# summary's throughput: validation and I/O are not counted) divided by its steps; the table gives
# the fastest of the repetitions and their ratio, then the ratio of each alternated pair and the
# median (the spread is the machine's noise). The force step is the float forward and backward
# with coordinate gradients plus the Dual (forward-mode) forward and backward of
# models/force_training.hpp. Not part of ctest.
#
# Large structures (--atoms N): the same recipe on --structures K structures of N atoms at liquid
# density in the order drawn (tools/bench/random_structure.py, seeds 1..K), labelled with the
# bundled model's energy and forces (`flt predict --forces`: numbers to train on, not physics),
# K - 2 training structures, batch size 1. --baseline FLT adds that binary's two steps to each
# repetition (side by side with this build's; the ratio column stays relative to this build's
# energy-only step).
#
#   tools/bench/run_force_step.sh [--epochs 5] [--reps 3] [--threads 1] [--config FILE]
#                                 [--atoms N [--structures 8]] [--baseline FLT]
#
# Needs a built flt (FLT_EXE, default build/tools/flt); --atoms also /usr/bin/python3 with NumPy.
# Prints a markdown table.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
epochs=5
reps=3
threads=1
config="$root/datasets/rmd17-ethanol/energy_model.ini"
atoms=0
structures=8
baseline=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --epochs) epochs="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --atoms) atoms="$2"; shift 2 ;;
    --structures) structures="$2"; shift 2 ;;
    --baseline) baseline="$2"; shift 2 ;;
    *) echo "run_force_step.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
flt="${FLT_EXE:-$root/build/tools/flt}"
[[ -x "$flt" ]] || { echo "run_force_step.sh: no flt at $flt (build it or set FLT_EXE)" >&2; exit 1; }
[[ -z "$baseline" || -x "$baseline" ]] || { echo "run_force_step.sh: no flt at $baseline" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$root"
data=()
if ((atoms > 0)); then
  ((structures >= 3)) || { echo "run_force_step.sh: --structures must be at least 3" >&2; exit 2; }
  for ((s = 1; s <= structures; ++s)); do
    /usr/bin/python3 "$root/tools/bench/random_structure.py" --atoms "$atoms" --seed "$s" --order drawn \
      --out "$work/structure_$s.xyz"
    cat "$work/structure_$s.xyz" >> "$work/structures.xyz"
  done
  "$flt" predict -m "$root/models/default.flt" --forces -q -o "$work/labelled.xyz" "$work/structures.xyz"
  data=(--inputs "$work/labelled.xyz" --targets flt_U0 --forces-column flt_forces --forces-unit eV/A
        --split "$((structures - 2)),1,1" --batch-size 1)
fi

step_ms() {  # binary, extra options -> milliseconds per optimiser step
  local exe="$1"
  shift
  rm -rf "$work/run"
  OMP_NUM_THREADS="$threads" "$exe" train --config "$config" --epochs "$epochs" --threads "$threads" -q \
    --out "$work/run" ${data[@]+"${data[@]}"} "$@" > "$work/summary"
  # "throughput: X molecules/s (S steps this session, ...)" and "molecules: T train, ..."
  local rate steps train
  rate="$(sed -n 's/^throughput: \([0-9.e+-]*\) molecules\/s.*/\1/p' "$work/summary")"
  steps="$(sed -n 's/.*(\([0-9]*\) steps\{0,1\} this session.*/\1/p' "$work/summary")"
  train="$(sed -n 's/^molecules: \([0-9]*\) train.*/\1/p' "$work/summary")"
  awk -v r="$rate" -v s="$steps" -v t="$train" -v e="$epochs" 'BEGIN { printf "%.3f", 1000 * t * e / r / s }'
}

best_e=""
best_f=""
best_b=""
best_be=""
ratios=""
base_ratios=""
for ((k = 1; k <= reps; ++k)); do
  e="$(step_ms "$flt")"
  f="$(step_ms "$flt" --force-weight 10)"
  if [[ -n "$baseline" ]]; then
    be="$(step_ms "$baseline")"
    b="$(step_ms "$baseline" --force-weight 10)"
    best_be="$(awk -v a="$be" -v c="$best_be" 'BEGIN { print (c == "" || a < c) ? a : c }')"
    best_b="$(awk -v a="$b" -v c="$best_b" 'BEGIN { print (c == "" || a < c) ? a : c }')"
    base_ratios="$base_ratios $(awk -v a="$be" -v c="$e" 'BEGIN { printf "%.2f", a / c }')/$(awk -v a="$b" -v c="$f" 'BEGIN { printf "%.2f", a / c }')"
    echo "repetition $k: baseline energy-only $be ms, energies and forces $b ms" >&2
  fi
  best_e="$(awk -v a="$e" -v b="$best_e" 'BEGIN { print (b == "" || a < b) ? a : b }')"
  best_f="$(awk -v a="$f" -v b="$best_f" 'BEGIN { print (b == "" || a < b) ? a : b }')"
  ratios="$ratios $(awk -v a="$f" -v b="$e" 'BEGIN { printf "%.2f", a / b }')"
  echo "repetition $k: energy-only $e ms, energies and forces $f ms per step" >&2
done
# The ratio of each side-by-side pair, and their median: the spread shows the machine's noise.
median="$(printf '%s\n' $ratios | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')"
echo "Config: \`${config#$root/}\`, $epochs epochs, $threads thread(s), fastest of $reps alternated runs each;"
((atoms > 0)) && echo "data: $structures random structures of $atoms atoms (0.1 per A^3, drawn order), $((structures - 2)) for training, batch size 1;"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load average $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| step | ms per step | ratio to energy-only |"
echo "|---|---|---|"
echo "| energy only | $best_e | 1 |"
echo "| energies and forces (--force-weight 10) | $best_f | $(awk -v a="$best_f" -v b="$best_e" 'BEGIN { printf "%.2f", a / b }') |"
if [[ -n "$baseline" ]]; then
  echo "| baseline ($baseline): energy only | $best_be | $(awk -v a="$best_be" -v b="$best_e" 'BEGIN { printf "%.2f", a / b }') |"
  echo "| baseline: energies and forces | $best_b | $(awk -v a="$best_b" -v b="$best_e" 'BEGIN { printf "%.2f", a / b }') |"
fi
echo
echo "Ratio of each alternated pair:$ratios (median $median)."
[[ -n "$baseline" ]] && echo "Baseline step / this build's (energy-only/forces), per repetition:$base_ratios."
exit 0
