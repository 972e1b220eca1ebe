#!/bin/sh
# Trains four small models with each of two flt binaries (same seeds and data, one thread) and
# compares the model files with compare_models.py: for changes that must leave results bitwise
# unchanged (refactoring). Runs from the repository root; about a minute per binary.
#
#   tools/check/same_models.sh BEFORE_FLT AFTER_FLT [OUT_DIR]
#
# Models: QM9 U0 and gap (the default near_far model, small), rMD17 ethanol energies and forces,
# the SMILES property task, the image task (needs dataset-fashion-mnist). Exit status 0 when all
# four pairs are the same model.
set -eu
cd "$(dirname "$0")/../.."
[ $# -ge 2 ] || { sed -n '2,9p' "$0"; exit 2; }
before=$1; after=$2; out=${3:-runs/same_models}
tiny="--width 16 --heads 2 --blocks 1 --mlp-hidden 32 --num-features 8 --num-frequencies 8 --threads 1"
train_all() {
  bin=$1; dir=$2
  rm -rf "$dir"; mkdir -p "$dir"
  "$bin" train -q --inputs datasets/qm9/qm9_subset.xyz.gz --targets U0,gap --split 200,40,40 --epochs 2 \
    --width 32 --heads 2 --blocks 2 --threads 1 --seed 5 --out "$dir/qm9"
  "$bin" train -q --config datasets/rmd17-ethanol/energy_force_model.ini --split 48,16,16 --epochs 2 --threads 1 \
    --out "$dir/forces"
  "$bin" seq train -q --task property --targets gap --train-limit 200 --test-limit 50 --epochs 1 $tiny \
    --head-hidden 16 --out "$dir/seq"
  "$bin" image train -q --validation 100 --train-limit 400 --test-limit 100 --epochs 1 $tiny --head-hidden 16 \
    --out "$dir/image"
}
train_all "$before" "$out/before" > "$out.before.log" 2>&1 || { echo "training with $before failed: $out.before.log"; exit 1; }
train_all "$after" "$out/after" > "$out.after.log" 2>&1 || { echo "training with $after failed: $out.after.log"; exit 1; }
status=0
for run in qm9 forces seq image; do
  python3 tools/check/compare_models.py "$out/before/$run/model.flt" "$out/after/$run/model.flt" || status=1
done
exit $status
