#!/bin/sh
# Trains small models with each of two flt binaries (same seeds and data, one thread) and
# compares the model files with compare_models.py: for changes that must leave results bitwise
# unchanged (refactoring). Runs from the repository root; one to three minutes per binary.
#
#   tools/check/same_models.sh BEFORE_FLT AFTER_FLT [OUT_DIR]
#
# Models: QM9 U0 and gap (the default near_far model, small, EMA of the weights); the same with
# the plateau schedule (it lowers the rate after epoch 8), no EMA and early stopping (after epoch
# 9); tiny QM9 models with the attention kinds exact, bias, kronecker and performer; rMD17 ethanol
# energies and forces; the SMILES property task; the SMILES language model (causal); the image
# task (flt, toeplitz, performer; needs dataset-fashion-mnist); and runs interrupted by
# --stop-after-epoch 1 and continued with --resume (QM9, the property task), which must also equal
# their uninterrupted runs. Exit status 0 when every pair is the same model.
set -eu
cd "$(dirname "$0")/../.."
[ $# -ge 2 ] || { sed -n '2,14p' "$0"; exit 2; }
before=$1; after=$2; out=${3:-runs/same_models}
mkdir -p "$out"
# --num-frequencies (FLT's RPE features) is refused by flt image/seq for the toeplitz and performer
# kinds, which have no use for it, and by flt train for performer and exact (exact has no random
# features at all: --num-features is refused too).
tiny_base="--width 16 --heads 2 --mlp-hidden 32 --threads 1"
tiny_encoder="$tiny_base --num-features 8"
tiny="$tiny_encoder --num-frequencies 8"
qm9="--inputs datasets/qm9/qm9_subset.xyz.gz --targets U0,gap --split 200,40,40"
seq="--task property --targets gap --train-limit 200 --test-limit 50 $tiny --blocks 1 --head-hidden 16"
# Each training command through run: errexit does not apply inside a function called left of ||.
run() { "$@" || { echo "failed: $*"; exit 1; }; }
train_all() {
  bin=$1; dir=$2
  rm -rf "$dir"; mkdir -p "$dir"
  run "$bin" train -q $qm9 --width 32 --heads 2 --blocks 2 --threads 1 --seed 5 --epochs 2 --out "$dir/qm9"
  run "$bin" train -q $qm9 --width 32 --heads 2 --blocks 2 --threads 1 --seed 5 --epochs 12 --lr 1e-1 --schedule plateau \
    --plateau-patience 1 --plateau-factor 0.3 --ema-decay 0 --patience 3 --out "$dir/plateau"
  # Two blocks, so that the molecule model's block 0 (per atom type) and a later block both run.
  for kind in exact bias kronecker performer; do
    case $kind in
      exact) model=$tiny_base ;;
      performer) model=$tiny_encoder ;;
      *) model=$tiny ;;
    esac
    run "$bin" train -q $qm9 --epochs 1 $model --blocks 2 --head-hidden 16 --attention $kind --seed 3 \
      --out "$dir/qm9_$kind"
  done
  run "$bin" train -q --config datasets/rmd17-ethanol/energy_force_model.ini --split 48,16,16 --epochs 2 --threads 1 \
    --out "$dir/forces"
  run "$bin" seq train -q $seq --epochs 2 --out "$dir/seq"
  run "$bin" seq train -q --task lm --train-limit 200 --test-limit 50 --epochs 1 $tiny --blocks 2 --out "$dir/lm"
  run "$bin" image train -q --validation 100 --train-limit 400 --test-limit 100 --epochs 1 $tiny --blocks 1 \
    --head-hidden 16 --out "$dir/image"
  for kind in toeplitz performer; do
    run "$bin" image train -q --validation 100 --train-limit 200 --test-limit 100 --epochs 1 $tiny_encoder --blocks 2 \
      --head-hidden 16 --attention $kind --out "$dir/image_$kind"
  done
  run "$bin" train -q $qm9 --width 32 --heads 2 --blocks 2 --threads 1 --seed 5 --epochs 2 --stop-after-epoch 1 \
    --out "$dir/qm9-resumed"
  run "$bin" train -q --resume --out "$dir/qm9-resumed"
  run "$bin" seq train -q $seq --epochs 2 --stop-after-epoch 1 --out "$dir/seq-resumed"
  run "$bin" seq train -q --resume --out "$dir/seq-resumed"
}
(train_all "$before" "$out/before") > "$out.before.log" 2>&1 || { echo "training with $before failed: $out.before.log"; exit 1; }
(train_all "$after" "$out/after") > "$out.after.log" 2>&1 || { echo "training with $after failed: $out.after.log"; exit 1; }
status=0
for name in qm9 plateau qm9_exact qm9_bias qm9_kronecker qm9_performer forces qm9-resumed; do
  python3 tools/check/compare_models.py "$out/before/$name/model.flt" "$out/after/$name/model.flt" || status=1
done
# The token-model tasks' data checksum is fnv1a64-mol (io/data_checksum.hpp) as flt train's; flt
# binaries before the common training engine wrote crc32 there: not compared.
for name in seq lm image image_toeplitz image_performer seq-resumed; do
  python3 tools/check/compare_models.py --ignore training.data_checksum "$out/before/$name/model.flt" \
    "$out/after/$name/model.flt" || status=1
done
for name in qm9 seq; do
  python3 tools/check/compare_models.py "$out/after/$name/model.flt" "$out/after/$name-resumed/model.flt" || status=1
done
exit $status
