#!/usr/bin/env bash
# The sequence and image results table: every task x {flt, performer, toeplitz} x 2 seeds at one
# fixed training budget (same epochs, batch size, learning rate and model size for the three kinds),
# plus the headline Fashion-MNIST run (FLT with 2-D RPE, at most 30 minutes of training).
#
#   tools/results/sequence_image/run_results.sh [FLT_BINARY] [PART...]
#
# PART: headline, headline12, headline12_local, headline_aug, image, property, lm, local (default: headline image property lm). Run from the repository root. Each run
# writes runs/sequence_image/<part>-<attention>-s<seed>/ (model.flt, learning_curve.csv, test_metrics.json,
# config.ini, SVGs) and its stderr log next to it; tools/results/sequence_image/make_table.py turns
# them into the tables of docs/results/sequence-image.md. One OpenMP thread per run (the machine
# has 2 cores shared with other work); runs are sequential.
set -euo pipefail
FLT=${1:-build/tools/flt}
shift || true
PARTS=${*:-headline image property lm}
OUT=runs/sequence_image
mkdir -p "$OUT"
THREADS=${THREADS:-1}

run() {  # run NAME ARGS...
  local name=$1; shift
  if [[ -f "$OUT/$name/test_metrics.json" ]]; then echo "skip $name (done)"; return; fi
  echo "$(date -u +%H:%M:%S) start $name (load $(cut -d' ' -f1-3 /proc/loadavg))"
  /usr/bin/time -f "%e s wall, %U s user" -o "$OUT/$name.time" \
    "$FLT" "$@" --out "$OUT/$name" --overwrite --threads "$THREADS" >"$OUT/$name.stdout" 2>"$OUT/$name.log"
  echo "$(date -u +%H:%M:%S) done  $name: $(cat "$OUT/$name.time") (load $(cut -d' ' -f1-3 /proc/loadavg))"
  echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/$name.time"
}

# Image model: patches of 4x4 (7x7 grid), width 64, 3 blocks, 4 heads, m = 32 features.
# (--num-frequencies, R = 16 by default, is an option of the flt kind only: performer and toeplitz refuse it.)
IMAGE_MODEL=(--patch 4 --width 64 --heads 4 --blocks 3 --mlp-hidden 128 --head-hidden 64 --num-features 32)
for part in $PARTS; do
  case $part in
    headline)
      # FLT with 2-D RPE (Gaussian-mixture spectrum, bias variant), full 55,000 training images,
      # 6 planned epochs (about 25 min at 1 thread), a 30-minute guard on the training time.
      run headline-flt-s1 image train "${IMAGE_MODEL[@]}" --attention flt --seed 1 \
        --epochs 6 --batch-size 64 --lr 2e-3 --time-budget 30 ;;
    headline12)
      # The same with 12 planned epochs (about 2 min per epoch when the machine is quieter):
      # the 30-minute guard may cut the last epochs, where the cosine rate is already low.
      run headline12-flt-s1 image train "${IMAGE_MODEL[@]}" --attention flt --seed 1 \
        --epochs 12 --batch-size 64 --lr 2e-3 --time-budget 30 ;;
    headline12_local)
      # The 12-epoch headline with the local RPE (local_window spectrum), the best image setting
      # of the fixed-budget comparison.
      run headline12-flt_local-s1 image train "${IMAGE_MODEL[@]}" --attention flt --spectrum local_window \
        --seed 1 --epochs 12 --batch-size 64 --lr 2e-3 --time-budget 30 ;;
    headline_aug)
      # The headline on both cores (2 OpenMP threads: 1.7x the 1-thread speed here, and the
      # result is bitwise the same as with 1 thread) with label-preserving augmentation: random
      # horizontal flips and translations of up to 1 pixel. 25 planned epochs (about 1 min each
      # on a quiet machine); the 30-minute guard still applies. Two seeds.
      for seed in 1 2; do
        THREADS=2 run headline_aug-flt-s$seed image train "${IMAGE_MODEL[@]}" --attention flt --seed $seed \
          --epochs 25 --batch-size 64 --lr 2e-3 --flip --shift 1 --time-budget 30
      done ;;
    image)
      # Comparison budget: 1 epoch on 10,000 training images (157 steps), 2,000 validation and
      # the first 5,000 test images (the toeplitz baseline runs at about 1/8 of FLT's speed on the
      # 7x7 grid, which bounds the budget on this shared machine).
      for seed in 1 2; do for att in flt performer toeplitz; do
        run image-$att-s$seed image train "${IMAGE_MODEL[@]}" --attention $att --seed $seed \
          --train-limit 10000 --validation 2000 --test-limit 5000 --epochs 1 --batch-size 64 --lr 2e-3
      done; done ;;
    property)
      # SMILES -> 8 QM9 targets, the 3-D model's split (11,023 / 1,000 / 1,000), 4 epochs
      # (1,380 steps).
      for seed in 1 2; do for att in flt performer toeplitz; do
        run property-$att-s$seed seq train --task property --attention $att --seed $seed \
          --epochs 4 --batch-size 32 --lr 1e-3
      done; done ;;
    lm)
      # Causal character LM on the same SMILES and split, 3 epochs (1,035 steps); bits per
      # character on the 1,000 test strings.
      for seed in 1 2; do for att in flt performer toeplitz; do
        run lm-$att-s$seed seq train --task lm --attention $att --seed $seed \
          --epochs 3 --batch-size 32 --lr 1e-3
      done; done ;;
    local)
      # FLT with the local RPE (local_window spectrum, E22) instead of the Gaussian mixture, at the
      # image and property budgets above.
      for seed in 1 2; do
        run image-flt_local-s$seed image train "${IMAGE_MODEL[@]}" --attention flt --spectrum local_window --seed $seed \
          --train-limit 10000 --validation 2000 --test-limit 5000 --epochs 1 --batch-size 64 --lr 2e-3
        run property-flt_local-s$seed seq train --task property --attention flt --spectrum local_window --seed $seed \
          --epochs 4 --batch-size 32 --lr 1e-3
      done ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
