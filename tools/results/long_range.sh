#!/bin/sh
# The long-range benchmark: clusters of QM9 molecules with MMFF94 energies (inter-fragment van der
# Waals and electrostatics; tools/datasets/mmff_clusters.py). Trains the near_far model
# (datasets/mmff-clusters/cluster_model.ini) in three variants on clusters of 50-500 atoms, two
# seeds each, and tests them on clusters of 500-5,000 atoms (size extrapolation): MAE of the
# total energy per atom. The variants (row names):
#   flt     near field + the FLT far field in the residual stream (--far-field flt)
#   none    near field only (--far-field none)
#   charge  near field + the charge energy through the FLT far-field machinery (--far-field none
#           --charge-energy flt: learned neutral charges, E_q = 1/2 sum q_i q_j w f(r_ij))
#   charge_fragment  the charge variant with the learned correction neutral per covalently bonded
#           fragment instead of per cluster (--charge-neutral fragment): each molecule keeps its
#           net formal charge
#   exact   exact softmax attention over all pairs of a cluster with a radial-basis bias
#           (--attention exact; quadratic in the atoms: fits this machine up to the test set's
#           4,568 atoms)
#   tools/results/long_range.sh [--train-count 800] [--test-count 30] [--seeds "1 2"]
#                               [--epochs 30] [--out runs/long-range] [--flt PATH]
#                               [--variants "flt none charge charge_fragment exact"] [--ions]
#                               [--charge-init C] [--formal-charges]
# --ions: the ionic benchmark (default OUT runs/long-range-ionic): 15% of the drawn entries are ion
# pairs of datasets/mmff-clusters/ion_pairs.smi placed as separate ions (--separate-ions), so the
# clusters carry net charges whose Coulomb energies reach across the whole cluster.
# --charge-init: the charge variant's initial mask coefficients (flt train --charge-init; default
# the model's 0.01; not with --formal-charges); 0.078 starts the mask at Coulomb's law for unit
# charges at the ionic data's energy scale (docs/benchmarks/long_range.md).
# --formal-charges (with --ions; default OUT runs/long-range-ions-formal): the data carry each atom's
# formal charge (a formal_charges:I:1 column), every variant reads it through the formal-charge
# embedding (--use-charges true), and the charge variant's charges are the formal charges plus a
# learned neutral correction with its mask started at Coulomb's law in the target's unit
# (--charge-formal true --charge-coulomb true).
# Generated data and runs go to OUT (data files are reused when present).
set -eu
cd "$(dirname "$0")/../.."
train_count=800 test_count=30 seeds="1 2" epochs=30 out="" variants="flt none charge" ions=0 charge_init="" formal=0
flt=${FLT_BUILD_DIR:-build}/tools/flt
while [ $# -gt 0 ]; do
  case $1 in
    --train-count) train_count=$2; shift 2 ;;
    --test-count) test_count=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --flt) flt=$2; shift 2 ;;
    --variants) variants=$2; shift 2 ;;
    --ions) ions=1; shift ;;
    --charge-init) charge_init="--charge-init $2"; shift 2 ;;
    --formal-charges) formal=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$flt" ] || { echo "no flt program at $flt: build it first" >&2; exit 1; }
extra="" charges="" charge_extra=""
[ "$formal" = 0 ] || [ "$ions" = 1 ] || { echo "--formal-charges needs --ions" >&2; exit 2; }
# With --formal-charges the mask starts at Coulomb's law (--charge-coulomb), so flt train refuses
# --charge-init there as an option without effect: say so before any data is generated.
[ "$formal" = 0 ] || [ -z "$charge_init" ] || { echo "--charge-init has no effect with --formal-charges (the mask starts at Coulomb's law)" >&2; exit 2; }
if [ "$ions" = 1 ]; then
  extra="--extra-smiles datasets/mmff-clusters/ion_pairs.smi --separate-ions --extra-fraction 0.15"
  if [ "$formal" = 1 ]; then
    extra="$extra --formal-charges" charges="--use-charges true"
    charge_extra="--charge-formal true --charge-coulomb true"
    [ -n "$out" ] || out=runs/long-range-ions-formal
  fi
  [ -n "$out" ] || out=runs/long-range-ionic
fi
[ -n "$out" ] || out=runs/long-range
mkdir -p "$out"
train="$out/train_${train_count}.xyz" test="$out/test_${test_count}.xyz"
# shellcheck disable=SC2086
[ -s "$train" ] || tools/datasets/mmff_clusters.py --out "$train" --count "$train_count" \
  --min-atoms 50 --max-atoms 500 --seed 1 $extra -q
# shellcheck disable=SC2086
[ -s "$test" ] || tools/datasets/mmff_clusters.py --out "$test" --count "$test_count" \
  --min-atoms 500 --max-atoms 5000 --seed 2 $extra -q
# Atoms per cluster, one line per record in file order.
atoms() { awk 'skip == 0 { print $1; skip = $1 + 2 } { skip-- }' "$1"; }
atoms "$test" > "$out/test_atoms.txt"
atoms "$train" > "$out/train_atoms.txt"
# MAE per atom (meV/atom), MAE of the total (eV) and mean signed error per atom (meV/atom,
# prediction - label) of flt eval's predictions; the id column is FILE:RECORD, the atom count of
# RECORD is line RECORD of the atoms file.
per_atom_mae() {
  awk -F, 'NR == FNR { atoms[FNR] = $1; next }
    FNR == 1 { for (i = 1; i <= NF; ++i) { if ($i ~ /_true/) t = i; if ($i ~ /_pred/) p = i } next }
    { k = $1; sub(/.*:/, "", k); e = $p - $t; signed += e / atoms[k]; if (e < 0) e = -e
      s += e / atoms[k]; tot += e; n++ }
    END { printf "%.3f %.4f %.3f", 1000 * s / n, tot / n, 1000 * signed / n }' "$1" "$2"
}
echo "| variant | seed | training time [s] | validation MAE (50-500 atoms) [meV/atom] | test MAE (500-5,000 atoms) [meV/atom] | test MAE total [eV] | test mean signed error [meV/atom] |"
echo "|---|---|---|---|---|---|---|"
for variant in $variants; do
  case $variant in
    flt) model_options="--far-field flt" ;;
    none) model_options="--far-field none" ;;
    charge) model_options="--far-field none --charge-energy flt --charge-nodes 8 --charge-spacing 0.01 --charge-degree 32 $charge_init $charge_extra" ;;
    charge_fragment) model_options="--far-field none --charge-energy flt --charge-nodes 8 --charge-spacing 0.01 --charge-degree 32 --charge-neutral fragment $charge_init $charge_extra" ;;
    exact) model_options="--attention exact" ;;
    *) echo "unknown variant $variant (flt, none, charge, charge_fragment, exact)" >&2; exit 2 ;;
  esac
  for seed in $seeds; do
    run="$out/$variant-s$seed"
    if [ ! -f "$run/model.flt" ]; then
      # shellcheck disable=SC2086
      OMP_WAIT_POLICY=passive "$flt" train --config datasets/mmff-clusters/cluster_model.ini "$train" \
        $model_options $charges --seed "$seed" --epochs "$epochs" --out "$run" --overwrite -q
    fi
    # Training time: the learning curve's seconds at the last epoch (a reused run keeps its own).
    seconds=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; ++i) if ($i == "seconds") c = i; next } { s = $c } END { printf "%.0f", s }' "$run/learning_curve.csv")
    "$flt" eval -m "$run/model.flt" "$test" --rotations 0 --predictions "$run/test_predictions.csv" -q > /dev/null
    "$flt" eval -m "$run/model.flt" "$train" --split-file "$run/split.csv" --subset validation \
      --rotations 0 --predictions "$run/val_predictions.csv" -q > /dev/null
    test_mae=$(per_atom_mae "$out/test_atoms.txt" "$run/test_predictions.csv")
    val_mae=$(per_atom_mae "$out/train_atoms.txt" "$run/val_predictions.csv")
    # shellcheck disable=SC2086
    set -- $test_mae
    echo "| $variant | $seed | $seconds | ${val_mae%% *} | $1 | $2 | $3 |"
  done
done
