#!/bin/sh
# The three-body reference in force training on EMT Cu/Pt clusters of two sizes (docs/training.md,
# "Training on energies and forces"): makes the data (tools/datasets/emt_clusters.py, ASE's EMT), trains a
# small near_far model on energies and forces (force weight 10, 100 epochs, 160/40/40 split) with
# the reference fitted to energies and forces, to energies only (the default), and without
# --three-body, and prints the test metrics of each.
#   tools/results/emt_three_body_forces.sh [--out runs/emt-three-body] [--flt PATH]
# The figures in docs/training.md came from ASE 3.22.1 (Debian 12's python3-ase) on one thread.
set -eu
cd "$(dirname "$0")/../.."
out=runs/emt-three-body
flt=${FLT_BUILD_DIR:-build}/tools/flt
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --flt) flt=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$flt" ] || { echo "no flt program at $flt: build it first (cmake --build build --target flt)" >&2; exit 1; }
mkdir -p "$out"
[ -f "$out/emt.xyz" ] || /usr/bin/python3 tools/datasets/emt_clusters.py "$out/emt.xyz"
# --three-body true with the reference fitted to energies and forces, then to energies (the
# default), then no reference.
for run in true:forces true:energies false:energies; do
  three_body=${run%%:*}
  fit=${run##*:}
  name=three-body-$three_body
  [ "$three_body" = true ] && name=$name-fit-$fit
  start=$(date +%s)
  "$flt" train "$out/emt.xyz" --targets energy --split 160,40,40 --split-seed 0 --seed 1 --threads 1 \
    --epochs 100 --batch-size 8 --lr 3e-3 --width 16 --heads 2 --blocks 1 --mlp-hidden 32 --head-hidden 32 \
    --cutoff 5 --far-field none --force-weight 10 --three-body "$three_body" --three-body-fit "$fit" \
    --out "$out/$name" --overwrite > "$out/$name.log" 2>&1
  echo "$name ($(( $(date +%s) - start )) s):"
  grep "three-body reference of" "$out/$name.log" || true
  grep -A3 "^test metrics" "$out/$name.log"
done
