#!/usr/bin/env bash
# Peak memory of `flt train` on a dataset that mixes one large structure with many small ones,
# with batches by molecule count only and with an atom budget (--batch-atoms). The data: --small
# MMFF94 clusters of 50-100 atoms and one cluster of --large atoms (tools/datasets/mmff_clusters.py,
# seeds 1 and 2), energies in eV. Each configuration trains one epoch of a small near_far model on
# one thread and is measured by GNU time's maximum resident set size; the summary line gives the
# most atoms one pass held. Not part of ctest.
#
#   tools/bench/run_batch_atoms_memory.sh [--small 40] [--large 3000] [--budgets 1000,500]
#
# Needs /usr/bin/time (Debian: time), /usr/bin/python3 with RDKit, NumPy, SciPy, and a built flt
# (FLT_EXE, default build/tools/flt). Prints a markdown table.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
small=40
large=3000
budgets="1000,500"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --small) small="$2"; shift 2 ;;
    --large) large="$2"; shift 2 ;;
    --budgets) budgets="$2"; shift 2 ;;
    *) echo "run_batch_atoms_memory.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
flt="${FLT_EXE:-$root/build/tools/flt}"
[[ -x "$flt" ]] || { echo "run_batch_atoms_memory.sh: no flt at $flt (build it or set FLT_EXE)" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "run_batch_atoms_memory.sh: needs GNU time (/usr/bin/time)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 "$root/tools/datasets/mmff_clusters.py" --out "$work/small.xyz" --count "$small" \
  --min-atoms 50 --max-atoms 100 --seed 1 -q
/usr/bin/python3 "$root/tools/datasets/mmff_clusters.py" --out "$work/large.xyz" --count 1 \
  --min-atoms "$large" --max-atoms "$large" --seed 2 -q
cat "$work/small.xyz" "$work/large.xyz" > "$work/mixed.xyz"
count=$((small + 1))
train=$((count - 2))

echo "| batches | steps | most atoms in one pass | peak RSS (MiB) | wall time (s) |"
echo "|---|---|---|---|---|"
run() {  # label, extra options
  local label="$1"; shift
  rm -rf "$work/run"
  /usr/bin/time -f "%M %e" -o "$work/time" "$flt" train "$work/mixed.xyz" --targets energy --epochs 1 \
    --width 32 --heads 4 --blocks 2 --mlp-hidden 64 --head-hidden 32 --split "$train,2,rest" \
    --threads 1 --seed 1 -q --out "$work/run" "$@" > "$work/summary"
  local pass steps rss wall
  pass="$(sed -n 's/.*at most \([0-9]*\) atoms in one pass.*/\1/p' "$work/summary")"
  steps="$(sed -n 's/.*(\([0-9]*\) steps\{0,1\} this session.*/\1/p' "$work/summary")"
  read -r rss wall < "$work/time"
  echo "| $label | $steps | $pass | $((rss / 1024)) | $wall |"
}
run "$count molecules (all in one)" --batch-size "$count"
IFS=',' read -r -a list <<< "$budgets"
for b in "${list[@]}"; do
  run "$count molecules, --batch-atoms $b" --batch-size "$count" --batch-atoms "$b"
done
