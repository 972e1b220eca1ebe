#!/bin/sh
# The bundled default model (models/default.flt, docs/results/qm9.md): two members of
# datasets/qm9/default_model.ini (seeds 1 and 2, one thread each), trained side by side on the
# two cores, packed into one ensemble file with flt ensemble, then scored on the test split by
# tools/results/qm9_accuracy.sh. Prints the wall time of the training.
#   tools/results/train_default_model.sh [--members 2] [--jobs 2] [--out runs/qm9-default]
#                                        [--model models/default.flt] [--flt PATH]
# Member S trains in OUT-sS (seed S); a finished member (OUT-sS/model.flt) is reused. Each member
# is reproducible bit for bit, so the packed file is too.
set -eu
cd "$(dirname "$0")/../.."
members=2 jobs=2 out=runs/qm9-default model=models/default.flt
flt=${FLT_BUILD_DIR:-build}/tools/flt
while [ $# -gt 0 ]; do
  case $1 in
    --members) members=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --flt) flt=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$flt" ] || { echo "no flt program at $flt: build it first (cmake --build build --target flt)" >&2; exit 1; }
start=$(date +%s)
running=0
seed=1
while [ "$seed" -le "$members" ]; do
  if [ ! -f "$out-s$seed/model.flt" ]; then
    OMP_WAIT_POLICY=passive "$flt" train --config datasets/qm9/default_model.ini --seed "$seed" \
      --threads 1 --out "$out-s$seed" --overwrite -q &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then wait; running=0; fi
  fi
  seed=$((seed + 1))
done
wait
trained=$(date +%s)
set --
seed=1
while [ "$seed" -le "$members" ]; do
  [ -f "$out-s$seed/model.flt" ] || { echo "member $seed did not finish" >&2; exit 1; }
  set -- "$@" "$out-s$seed/model.flt"
  seed=$((seed + 1))
done
if [ "$members" -eq 1 ]; then cp "$1" "$model"; else "$flt" ensemble "$@" -o "$model"; fi
echo "training wall time $(( trained - start )) s for $members members, $jobs at a time"
tools/results/qm9_accuracy.sh "$model" "$flt"
