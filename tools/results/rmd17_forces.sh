#!/bin/sh
# The rMD17 ethanol energy-and-force recipe (docs/results/rmd17.md, "Energies and forces"): trains
# the near_far model on energies and forces (datasets/rmd17-ethanol/energy_force_model.ini, the
# energy recipe's 800/100/100 split), scores the held-out test configurations with
# flt eval --forces, and runs the NVE check: flt md from the first test configuration, 1,000
# velocity-Verlet steps of 0.5 fs at 300 K, reporting the total energy's drift.
#   tools/results/rmd17_forces.sh [--data FILE.xyz] [--out runs/rmd17-forces] [--seed 1] [--flt PATH]
# --data trains and tests on another extended-XYZ file of the same molecule (energy=... in eV,
# forces:R:3 in eV/A): its own 800/100/100 split is drawn with split seed 0 (at least 1,000
# configurations). A finished model (OUT/model.flt) is reused, not retrained.
set -eu
cd "$(dirname "$0")/../.."
data=datasets/rmd17-ethanol/train.xyz out=runs/rmd17-forces seed=1
flt=${FLT_BUILD_DIR:-build}/tools/flt
while [ $# -gt 0 ]; do
  case $1 in
    --data) data=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --flt) flt=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$flt" ] || { echo "no flt program at $flt: build it first (cmake --build build --target flt)" >&2; exit 1; }
start=$(date +%s)
if [ ! -f "$out/model.flt" ]; then
  OMP_WAIT_POLICY=passive "$flt" train --config datasets/rmd17-ethanol/energy_force_model.ini \
    --inputs "$data" --seed "$seed" --out "$out" --overwrite -q > /dev/null
fi
trained=$(date +%s)
echo "training: $((trained - start)) s (0 s: an existing model was reused); run record in $out"
"$flt" eval --model "$out/model.flt" "$data" --split-file "$out/split.csv" --subset test --forces \
  --rotations 8 --threads 1 -q --out "$out/test_eval.csv" --predictions "$out/test_predictions_eval.csv"
awk -F, '$1 == "energy" { printf "test energy MAE %.2f meV (RMSE %.2f meV)\n", 1000 * $4, 1000 * $5 }
         $1 == "energy forces" { printf "test force MAE %.1f meV/A per component (RMSE %.1f meV/A)\n", 1000 * $4, 1000 * $5 }' \
  "$out/test_eval.csv"
# NVE from the first test configuration (the split's first 'test' row; records are 1-based).
first=$(awk -F, '$1 == "test" { print $2 + 1; exit }' "$out/split.csv")
"$flt" md --model "$out/model.flt" "$data" --record "$first" --steps 1000 --timestep 0.5 \
  --temperature 300 --seed 1 --threads 1 -q --log "$out/md_log.csv" --out "$out/md_trajectory.xyz"
