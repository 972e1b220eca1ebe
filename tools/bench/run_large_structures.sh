#!/usr/bin/env bash
# Prediction of one large structure with the real program: `flt predict` on one extended-XYZ file
# of N atoms (tools/bench/random_structure.py: uniformly random at 0.1 atoms/A^3, H/C/N/O, Morton
# order, seed 7), N = 1e3 ... 1e6, at 1 and 2 threads, for each model given. Records wall time,
# CPU time, peak RSS (GNU time), the model's own time (the info lines of `flt predict -v`: the
# neighbour list and every block; the rest of the wall time is starting, reading and checking the
# file, and writing the CSV), time per atom and its ratio to N = 1e4, and the fraction of the
# machine's FMA peak (bench_block peak, tools/bench/fma_peak.hpp) that the counted flops reach.
# Writes markdown to --out (default docs/benchmarks/large_structures.md). Not part of ctest.
#
#   tools/bench/run_large_structures.sh --model LABEL=PATH[@SIZES] [--model ...] [--threads 1,2]
#                                       [--work runs/large-structures] [--out FILE]
#
# SIZES: comma-separated atom counts for that model (default 1000,10000,100000,1000000), e.g.
#   tools/bench/run_large_structures.sh --model "protein recipe=runs/protein/model-s1/model.flt" \
#     --model "default=models/default.flt@1000,10000,100000"
#
# Counted flops per atom (2 per multiply-add; a lower bound: LayerNorms, activations, exp, sin/cos,
# the far field's near-pair corrections and the neighbour list are not counted), per member:
#   dense products: block 0 2 (D^2 + 6 D^2 + 5 D F) (its q/k/v per atom type, negligible), other
#     blocks 2 (6 D^2 + 6 D^2 + 5 D F) with vectors (q, k, v = 3D, o; the update's two channel maps
#     on 3 components and its MLP 2D -> F -> 3D), the head 2 (D G + G P);
#   near field: 52 D flops per pair (filter interpolation 28 D, logits 3 D, scalar messages 3 D,
#     vector messages 18 D), pairs per atom from the neighbour list;
#   far field: 4 F_far D (the feature sums and their read-out), F_far = 1 + 2 M (K_f - 1), M the
#     design's directions.
# Needs /usr/bin/time (Debian: time), /usr/bin/python3 with NumPy and SciPy, and a Release build
# (FLT_BUILD_DIR, default build/; targets flt and bench_block).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${FLT_BUILD_DIR:-$root/build}"
work="$root/runs/large-structures"
out="$root/docs/benchmarks/large_structures.md"
threads_list="1,2"
models=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) models+=("$2"); shift 2 ;;
    --threads) threads_list="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "run_large_structures.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[[ ${#models[@]} -gt 0 ]] || { echo "run_large_structures.sh: give at least one --model LABEL=PATH" >&2; exit 2; }
flt="$build/tools/flt"
bench_block="$build/tools/bench/bench_block"
[[ -x "$flt" && -x "$bench_block" ]] ||
  { echo "run_large_structures.sh: build flt and bench_block in $build first" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "run_large_structures.sh: needs GNU time (/usr/bin/time)" >&2; exit 1; }
mkdir -p "$work"

command="tools/bench/run_large_structures.sh"
for m in "${models[@]}"; do command+=" --model \"$m\""; done
[[ "$threads_list" == "1,2" ]] || command+=" --threads $threads_list"
commit="$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$root" status --porcelain -- src tools 2>/dev/null)" ]]; then
  commit="$commit + uncommitted changes in src/ or tools/"
fi

IFS=',' read -r -a threads <<< "$threads_list"
declare -A peak
for t in "${threads[@]}"; do
  peak[$t]="$("$bench_block" peak "$t" | sed -n 's/.*gflops=\([0-9.]*\) .*/\1/p')"
done

rows="$work/rows.tsv"
: > "$rows"
for spec in "${models[@]}"; do
  label="${spec%%=*}"
  rest="${spec#*=}"
  path="${rest%%@*}"
  sizes="1000,10000,100000,1000000"
  [[ "$rest" == *@* ]] && sizes="${rest#*@}"
  [[ -f "$path" ]] || { echo "run_large_structures.sh: no model file $path" >&2; exit 1; }
  "$flt" info -m "$path" > "$work/info.txt"
  IFS=',' read -r -a size_list <<< "$sizes"
  for n in "${size_list[@]}"; do
    structure="$work/random_$n.xyz"
    [[ -s "$structure" ]] || /usr/bin/python3 "$root/tools/bench/random_structure.py" --atoms "$n" --out "$structure"
    for t in "${threads[@]}"; do
      load_before="$(cut -d' ' -f1 /proc/loadavg)"
      /usr/bin/time -f "%e %U %S %M" -o "$work/time.txt" \
        "$flt" predict -m "$path" "$structure" -o "$work/predictions.csv" -j "$t" -v 2> "$work/log.txt" > /dev/null
      load_after="$(cut -d' ' -f1 /proc/loadavg)"
      read -r wall user sys rss < "$work/time.txt"
      model_s="$(sed -n 's/.*atoms: done in \([0-9.e+-]*\) s.*/\1/p' "$work/log.txt" | awk '{ s += $1 } END { print s + 0 }')"
      pairs="$(sed -n 's/.*(\([0-9.e+-]*\) per atom).*/\1/p' "$work/log.txt" | head -1)"
      echo "$label	$path	$n	$t	$wall	$user	$sys	$rss	$model_s	${pairs:-0}	$load_before	$load_after" >> "$rows"
      echo "$label n=$n threads=$t: wall $wall s, model $model_s s, RSS $((rss / 1024)) MiB" >&2
    done
  done
done

/usr/bin/python3 - "$rows" "$out" "$command" "$commit" "$flt" "${threads_list}" "$(for t in "${threads[@]}"; do echo -n "$t=${peak[$t]},"; done)" <<'EOF'
import math, os, platform, re, subprocess, sys, time

rows_path, out_path, command, commit, flt, threads_list, peaks = sys.argv[1:8]
peak = {int(k): float(v) for k, v in (p.split("=") for p in peaks.strip(",").split(","))}

def config(path):
    text = subprocess.run([flt, "info", "-m", path], capture_output=True, text=True, check=True).stdout
    members = max(1, len(re.findall(r"\[member \d+ of", text)))
    first = text.split("elements")[0]
    c = dict(re.findall(r"^\s+(\w+)\s+=\s+(\S+)", first, re.M))
    return c, members

def directions(degree):
    # product grid (far_field.hpp): the smallest even n_theta with 2 n_theta - 1 >= degree and
    # even n_phi with n_phi - 1 >= degree; M = n_theta n_phi / 2.
    nt = math.ceil((degree + 1) / 2); nt += nt % 2
    nph = degree + 1; nph += nph % 2
    return nt * nph // 2

def flops_per_atom(c, pairs):
    D, F, G = int(c["width"]), int(c["mlp_hidden"]), int(c["head_hidden"])
    B, P = int(c["blocks"]), len(c["targets"].split(","))
    vectors = c["vectors"] == "true"
    if c["attention"] != "near_far" or not vectors:
        return None
    block = 2 * (6 * D * D + 6 * D * D + 5 * D * F)
    block0 = 2 * (D * D + 6 * D * D + 5 * D * F)
    near = 52 * D * pairs
    far = 0
    if c["far_field"] == "flt":
        M = directions(int(c["far_degree"])) if c["far_design"] == "product_grid" else int(c["far_directions"])
        far = 4 * (1 + 2 * M * (int(c["far_nodes"]) - 1)) * D
    return block0 + (B - 1) * block + B * (near + far) + 2 * (D * G + G * P)

rows = [line.rstrip("\n").split("\t") for line in open(rows_path) if line.strip()]
base = {}
for r in rows:
    if int(r[2]) == 10000:
        base[(r[0], r[3])] = (float(r[4]) / 1e4, float(r[8]) / 1e4)
cpu = "unknown CPU"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip(); break
out = []
out.append("# Prediction of one large structure: time and peak memory\n")
out.append(f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit}.\n")
out.append(f"Machine: {cpu}, {os.cpu_count()} logical CPUs (shared: the load average before and after each run is in the table; "
           "a load above the run's own thread count means other work ran beside it and the times are inflated). "
           "FMA peak (bench_block peak, float32): " + ", ".join(f"{t} thread{'s' if t > 1 else ''} {g:.1f} GFLOP/s" for t, g in sorted(peak.items())) + ".\n")
out.append("Each row is one run of `flt predict -m MODEL random_N.xyz -o predictions.csv -j T -v` under GNU time on one "
           "structure of N atoms uniformly random at 0.1 atoms/A^3 (H, C, N, O; tools/bench/random_structure.py, seed 7, "
           "Morton order), about 52 neighbours within 5 A. *wall*, *CPU* (user + system) and *peak RSS* are of the whole "
           "program; *model* is the model's own time from its info lines (neighbour list and blocks, summed over ensemble "
           "members); *rest* = wall - model: starting, loading the model, reading and checking the file, writing the CSV. "
           "*us/atom* is wall time per atom; *ratio* divides it by the same model and thread count at N = 1e4 (model-only "
           "ratio in brackets). *GFLOP/s* counts the flops of run_large_structures.sh's header (a lower bound) over the "
           "model time; *% peak* compares it with the FMA peak at the same thread count.\n")
labels = []
for r in rows:
    if r[0] not in labels: labels.append(r[0])
for label in labels:
    sel = [r for r in rows if r[0] == label]
    c, members = config(sel[0][1])
    out.append(f"\n## {label}: `{sel[0][1]}`\n")
    out.append(f"width {c['width']}, {c['heads']} heads, {c['blocks']} blocks, MLP {c['mlp_hidden']}, head {c['head_hidden']}, "
               f"{c['attention']} (cutoff {c['cutoff']} A, vectors {c['vectors']}, far field {c['far_field']}), "
               f"{len(c['targets'].split(','))} target(s), {members} member{'s' if members > 1 else ''}.\n")
    out.append("| atoms | threads | wall (s) | CPU (s) | model (s) | rest (s) | peak RSS (MiB) | RSS per atom (kB) | us/atom | ratio to 1e4 | GFLOP/s | % peak | load before/after |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in sel:
        n, t = int(r[2]), int(r[3])
        wall, user, sys_, rss, model, pairs = float(r[4]), float(r[5]), float(r[6]), int(r[7]), float(r[8]), float(r[9])
        b = base.get((label, r[3]))
        ratio = f"{wall / n / b[0]:.2f} ({model / n / b[1]:.2f})" if b and b[1] > 0 and model > 0 else "-"
        f = flops_per_atom(c, pairs) if pairs > 0 else None
        if f is not None and model > 0:
            gf = members * f * n / model / 1e9
            gfs, pct = f"{gf:.1f}", f"{100 * gf / peak[t]:.0f}%"
        else:
            gfs, pct = "-", "-"
        model_s = f"{model:.2f}" if model > 0 else "-"
        rest = f"{wall - model:.2f}" if model > 0 else "-"
        out.append(f"| {n:,} | {t} | {wall:.2f} | {user + sys_:.2f} | {model_s} | {rest} | {rss / 1024:.0f} | "
                   f"{rss * 1024 / n / 1000:.2f} | {1e6 * wall / n:.1f} | {ratio} | {gfs} | {pct} | {r[10]} / {r[11]} |")
open(out_path + ".tmp", "w").write("\n".join(out) + "\n")
os.replace(out_path + ".tmp", out_path)
print("\n".join(out))
EOF
