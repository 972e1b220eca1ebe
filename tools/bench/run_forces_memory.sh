#!/usr/bin/env bash
# Forces of one large structure with the real program: `flt predict --forces` on one extended-XYZ
# file of N atoms (tools/bench/random_structure.py: uniformly random at 0.1 atoms/A^3, H/C/N/O,
# Morton order, seed 7) under GNU time, for each size and thread count given. Prints a markdown
# table of wall time, CPU time, peak RSS and bytes per atom (peak RSS / N), and checks that every
# atom got a finite force. Above MoleculeModel::recompute_atoms (20,000) atoms backward recomputes
# one block's cache at a time (docs/prediction.md). Not part of ctest.
#
#   tools/bench/run_forces_memory.sh [--model models/default.flt] [--sizes 100000,300000]
#                                    [--threads 2] [--work runs/forces-memory]
#
# Needs /usr/bin/time (Debian: time), /usr/bin/python3 with NumPy, and a Release build
# (FLT_BUILD_DIR, default build/; target flt).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${FLT_BUILD_DIR:-$root/build}"
model="$root/models/default.flt"
sizes="100000,300000"
threads_list="2"
work="$root/runs/forces-memory"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --sizes) sizes="$2"; shift 2 ;;
    --threads) threads_list="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    *) echo "run_forces_memory.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
flt="$build/tools/flt"
[[ -x "$flt" ]] || { echo "run_forces_memory.sh: build flt in $build first" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "run_forces_memory.sh: needs GNU time (/usr/bin/time)" >&2; exit 1; }
[[ -f "$model" ]] || { echo "run_forces_memory.sh: no model file $model" >&2; exit 1; }
mkdir -p "$work"

commit="$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
echo "Forces of one structure: \`flt predict -m $(realpath --relative-to="$root" "$model") --forces -j T\`,"
echo "$(date -u '+%Y-%m-%d %H:%M') UTC, commit $commit, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'),"
echo "$(nproc) logical CPUs, load average at the start $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| N | threads | wall s | CPU s | peak RSS GiB | bytes/atom | load before / after |"
echo "|---|---|---|---|---|---|---|"
IFS=',' read -r -a size_list <<< "$sizes"
IFS=',' read -r -a threads <<< "$threads_list"
for n in "${size_list[@]}"; do
  structure="$work/random_$n.xyz"
  [[ -s "$structure" ]] || /usr/bin/python3 "$root/tools/bench/random_structure.py" --atoms "$n" --out "$structure"
  for t in "${threads[@]}"; do
    load_before="$(cut -d' ' -f1 /proc/loadavg)"
    /usr/bin/time -f "%e %U %S %M" -o "$work/time.txt" \
      "$flt" predict -m "$model" --forces -j "$t" -o "$work/forces_$n.xyz" "$structure" 2> "$work/log.txt" > /dev/null
    load_after="$(cut -d' ' -f1 /proc/loadavg)"
    read -r wall user sys rss < "$work/time.txt"
    # Every atom of the output carries a finite force (flt_forces:R:3 columns).
    /usr/bin/python3 - "$work/forces_$n.xyz" "$n" <<'EOF'
import re, sys
import numpy as np
path, n = sys.argv[1], int(sys.argv[2])
lines = open(path).read().splitlines()
assert int(lines[0]) == n, f"{path}: {lines[0]} atoms, expected {n}"
props = re.search(r'Properties=(\S+)', lines[1]).group(1).split(":")
col, found = 0, None
for name, kind, width in zip(props[0::3], props[1::3], props[2::3]):
    if name == "flt_forces":
        found = col
    col += int(width)
assert found is not None, f"{path}: no flt_forces column"
f = np.array([[float(x) for x in line.split()[found:found + 3]] for line in lines[2:2 + n]])
assert f.shape == (n, 3) and np.isfinite(f).all(), f"{path}: missing or non-finite forces"
EOF
    awk -v n="$n" -v t="$t" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" -v lb="$load_before" -v la="$load_after" \
      'BEGIN { printf "| %d | %d | %.1f | %.1f | %.2f | %.0f | %s / %s |\n", n, t, w, u + s, r / 1048576, r * 1024 / n, lb, la }'
  done
done
