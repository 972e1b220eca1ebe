#!/bin/sh
# The README's QM9 accuracy table: test MAE of a model (default: models/default.flt) on the fixed
# test split of the bundled subset (datasets/qm9/split.csv), with the rotation sensitivity.
#   tools/results/qm9_accuracy.sh [MODEL.flt] [FLT_BINARY]
# Prints flt eval's table, then the same numbers as a Markdown table (meV for energies), and for an
# ensemble the uncertainty table of docs/prediction.md ("Uncertainty of an ensemble").
set -eu
cd "$(dirname "$0")/../.."
model=${1:-models/default.flt}
flt=${2:-${FLT_BUILD_DIR:-build}/tools/flt}
[ -x "$flt" ] || { echo "no flt program at $flt: build it first (cmake --build build --target flt)" >&2; exit 1; }
csv=$(mktemp)
trap 'rm -f "$csv"' EXIT
"$flt" eval --model "$model" datasets/qm9/qm9_subset.xyz.gz --split-file datasets/qm9/split.csv \
  --subset test --rotations 8 --csv "$csv"
echo
echo "| target | unit | test MAE | RMSE | R^2 | rotation std / MAE |"
echo "|---|---|---|---|---|---|"
# Columns of --csv: target,unit,count,MAE,RMSE,R2,max_abs_error,rotations,rotation_std,rotation_std_over_MAE
awk -F, 'NR == 1 { for (i = 1; i <= NF; ++i) col[$i] = i; next }
  { unit = $col["unit"]; mae = $col["MAE"]; rmse = $col["RMSE"]; f = 1;
    if (unit == "eV") { unit = "meV"; f = 1000 }
    printf "| %s | %s | %.4g | %.4g | %.4f | %.2g %% |\n", $col["target"], unit, mae * f, rmse * f, $col["R2"], 100 * $col["rotation_std_over_MAE"] }' "$csv"
# An ensemble's --csv has the uncertainty columns too.
head -n 1 "$csv" | grep -q std_scale || exit 0
echo
echo "| target | unit | count | std=0 | Spearman | <=1 std | <=2 std | NLL | miscal. | ENCE | s |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
awk -F, 'NR == 1 { for (i = 1; i <= NF; ++i) col[$i] = i; next }
  $col["uncertainty_count"] != "" {
    printf "| %s | %s | %s | %s | %.3g | %.3g %% | %.3g %% | %.4g | %.3g | %.3g | %.3g |\n", $col["target"], $col["unit"],
      $col["uncertainty_count"], $col["zero_std_count"], $col["spearman_abs_error_std"],
      100 * $col["within_1std [fraction]"], 100 * $col["within_2std [fraction]"], $col["NLL [nats per record in unit]"],
      $col["miscalibration_area"], $col["ENCE"], $col["std_scale"] }' "$csv"
