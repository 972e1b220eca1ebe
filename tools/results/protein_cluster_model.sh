#!/bin/sh
# A protein through flt predict with a model trained on MMFF94 clusters (docs/prediction.md):
# generates clusters of QM9 molecules mixed with the protein fragments of
# datasets/mmff-clusters/protein_fragments.smi (sulfur, charged side chains as ion pairs),
# trains the near_far model of datasets/mmff-clusters/protein_model.ini on them, predicts the
# Aurora A kinase (molecules/pdb/aurka_protein_2c6e.pdb, 4,334 atoms with hydrogens) with
# per-atom contributions under /usr/bin/time -v, and compares with MMFF94's own energy of the
# protein (tools/results/protein_sanity.py). One core: about 13 minutes in all (2026-12 measurement:
# generation 66 s, training 11.5 min, the rest seconds).
#   tools/results/protein_cluster_model.sh [--count 800] [--epochs 40] [--seed 1]
#                                          [--out runs/protein] [--flt PATH]
# Generated data and the run go to OUT (the data file and model are reused when present).
set -eu
cd "$(dirname "$0")/../.."
count=800 epochs=40 seed=1 out=runs/protein
flt=${FLT_BUILD_DIR:-build}/tools/flt
while [ $# -gt 0 ]; do
  case $1 in
    --count) count=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --flt) flt=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$flt" ] || { echo "no flt program at $flt: build it first" >&2; exit 1; }
mkdir -p "$out"
train="$out/clusters_${count}.xyz" run="$out/model-s$seed"
protein=molecules/pdb/aurka_protein_2c6e.pdb
start=$(date +%s)
[ -s "$train" ] || tools/datasets/mmff_clusters.py --out "$train" --count "$count" \
  --min-atoms 50 --max-atoms 400 --pool 200 --seed 1 \
  --extra-smiles datasets/mmff-clusters/protein_fragments.smi --extra-fraction 0.3 -q
echo "clusters: $train ($(( $(date +%s) - start )) s)"
start=$(date +%s)
[ -f "$run/model.flt" ] || OMP_WAIT_POLICY=passive "$flt" train \
  --config datasets/mmff-clusters/protein_model.ini "$train" --seed "$seed" --epochs "$epochs" \
  --out "$run" --overwrite -q
echo "training: $run/model.flt ($(( $(date +%s) - start )) s)"
# Validation MAE per atom (the split's held-out clusters): what the model does on its own data.
"$flt" eval -m "$run/model.flt" "$train" --split-file "$run/split.csv" --subset validation \
  --rotations 0 --predictions "$run/val_predictions.csv" -q > /dev/null
awk 'skip == 0 { print $1; skip = $1 + 2 } { skip-- }' "$train" > "$out/train_atoms.txt"
awk -F, 'NR == FNR { atoms[FNR] = $1; next }
  FNR == 1 { for (i = 1; i <= NF; ++i) { if ($i ~ /_true/) t = i; if ($i ~ /_pred/) p = i } next }
  { k = $1; sub(/.*:/, "", k); e = $p - $t; if (e < 0) e = -e; s += e / atoms[k]; tot += e; n++ }
  END { printf "validation (%d clusters): MAE %.3f meV/atom, %.3f eV per cluster\n", n, 1000 * s / n, tot / n }' \
  "$out/train_atoms.txt" "$run/val_predictions.csv"
/usr/bin/time -v "$flt" predict -m "$run/model.flt" "$protein" --per-atom -o "$out/protein.xyz" \
  2> "$out/predict_time.txt"
grep -E "Elapsed|Maximum resident" "$out/predict_time.txt"
/usr/bin/python3 tools/results/protein_sanity.py "$protein" "$out/protein.xyz" "$train"
