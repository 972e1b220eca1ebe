#!/bin/sh
# The rMD17 ethanol energy recipe (docs/results/rmd17.md): trains M ensemble members of the
# near_far model on energies only (datasets/rmd17-ethanol/energy_model.ini, seeds 1..M, the same
# 800/100/100 split), J at a time, then scores each member and the ensemble mean on the held-out
# test configurations with flt eval, and prints the wall time of the whole recipe.
#   tools/results/rmd17_energy.sh [--members 8] [--jobs 2] [--data FILE.xyz] [--out runs/rmd17]
#                                 [--flt PATH]
# --data trains and tests on another extended-XYZ file of the same molecule (energy=... in eV):
# its own 800/100/100 split is drawn with split seed 0 (it needs at least 1,000 configurations).
# Existing finished members (OUT/sN/model.flt) are reused, not retrained.
set -eu
cd "$(dirname "$0")/../.."
members=8 jobs=2 data=datasets/rmd17-ethanol/train.xyz out=runs/rmd17
flt=${FLT_BUILD_DIR:-build}/tools/flt
while [ $# -gt 0 ]; do
  case $1 in
    --members) members=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --flt) flt=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$flt" ] || { echo "no flt program at $flt: build it first (cmake --build build --target flt)" >&2; exit 1; }
mkdir -p "$out"
start=$(date +%s)
running=0
seed=1
while [ "$seed" -le "$members" ]; do
  if [ ! -f "$out/s$seed/model.flt" ]; then
    OMP_WAIT_POLICY=passive "$flt" train --config datasets/rmd17-ethanol/energy_model.ini \
      --inputs "$data" --seed "$seed" --out "$out/s$seed" --overwrite -q &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then wait; running=0; fi
  fi
  seed=$((seed + 1))
done
wait
trained=$(date +%s)
models=""
seed=1
while [ "$seed" -le "$members" ]; do
  [ -f "$out/s$seed/model.flt" ] || { echo "member $seed did not finish" >&2; exit 1; }
  models="$models --model $out/s$seed/model.flt"
  echo "member $seed: $(awk -F, '$1 == "energy" { printf "test MAE %.1f meV", 1000 * $4 }' "$out/s$seed/test_metrics.csv")"
  seed=$((seed + 1))
done
# All members share the split (split seed 0); score the mean on its test configurations.
# shellcheck disable=SC2086
"$flt" eval $models "$data" --split-file "$out/s1/split.csv" --subset test --rotations 8 \
  --csv "$out/ensemble_metrics.csv" -q
awk -F, 'NR == 1 { for (i = 1; i <= NF; ++i) col[$i] = i; next }
  { printf "ensemble of %d: test MAE %.1f meV, RMSE %.1f meV, R^2 %.4f, rotation std %.2g meV\n",
    m, 1000 * $col["MAE"], 1000 * $col["RMSE"], $col["R2"], 1000 * $col["rotation_std"] }' \
  m="$members" "$out/ensemble_metrics.csv"
echo "training wall time $(( trained - start )) s for $members members, $jobs at a time"
