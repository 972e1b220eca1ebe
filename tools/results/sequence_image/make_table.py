#!/usr/bin/env python3
"""Tables of docs/results/sequence-image.md from the runs of run_results.sh (runs/sequence_image/).

    python3 tools/results/sequence_image/make_table.py [runs/sequence_image] > table.md

For each task: one row per attention kind with the test metric of each seed, their mean, the
training wall time and CPU time per run (from /usr/bin/time) and the load average after the run.
Missing runs are shown as '-'. Standard library only.
"""
import json
import os
import sys

RUNS = sys.argv[1] if len(sys.argv) > 1 else "runs/sequence_image"
KINDS = ["flt", "flt_local", "performer", "toeplitz"]  # flt_local: FLT with the local RPE
SEEDS = [1, 2]


def load(name):
    path = os.path.join(RUNS, name, "test_metrics.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        m = json.load(f)
    t = os.path.join(RUNS, name + ".time")
    m["_wall"], m["_user"], m["_load"] = None, None, None
    if os.path.exists(t):
        for line in open(t):
            if "s wall" in line:
                parts = line.replace(",", "").split()
                m["_wall"], m["_user"] = float(parts[0]), float(parts[3])
            if line.startswith("load_after="):
                m["_load"] = line.split("=", 1)[1].split()[0]
    return m


def fmt(v, digits):
    return "-" if v is None else f"{v:.{digits}f}"


def table(task, title, metrics, digits):
    """metrics: list of (column title, key in test_metrics.json, scale)."""
    out = [f"### {title}", ""]
    head = "| attention |"
    sep = "|---|"
    for col, _, _ in metrics:
        for s in SEEDS:
            head += f" {col} seed {s} |"
            sep += "---|"
        head += f" {col} mean |"
        sep += "---|"
    head += " wall (CPU) s per seed | load after |"
    sep += "---|---|"
    out += [head, sep]
    for kind in KINDS:
        runs = [load(f"{task}-{kind}-s{s}") for s in SEEDS]
        if all(r is None for r in runs):
            continue
        row = f"| {kind} |"
        for _, key, scale in metrics:
            vals = [None if r is None or r.get(key) is None else r[key] * scale for r in runs]
            row += "".join(f" {fmt(v, digits)} |" for v in vals)
            have = [v for v in vals if v is not None]
            row += f" {fmt(sum(have) / len(have), digits) if have else '-'} |"
        times = ", ".join(
            "-" if r is None or r["_wall"] is None else f"{r['_wall']:.0f} ({r['_user']:.0f})" for r in runs)
        loads = ", ".join("-" if r is None or r["_load"] is None else r["_load"] for r in runs)
        row += f" {times} | {loads} |"
        out.append(row)
    return "\n".join(out) + "\n"


print(table("image", "Fashion-MNIST (test accuracy, %, first 5,000 test images)",
            [("accuracy", "test_accuracy", 100.0)], 2))
print(table("property", "QM9 from SMILES (test MAE, 1,000 test molecules)",
            [("U0 [eV]", "test_mae.U0", 1.0), ("gap [eV]", "test_mae.gap", 1.0),
             ("mu [D]", "test_mae.mu", 1.0)], 3))
print(table("lm", "SMILES character language model (test bits per character, 1,000 test strings)",
            [("bpc", "test_bpc", 1.0)], 3))
full = load("property-flt-s1")
if full is not None:
    keys = sorted(k[len("test_mae."):] for k in full if k.startswith("test_mae."))
    print("All eight targets, test MAE (mean of the two seeds):\n")
    print("| attention | " + " | ".join(f"{k} [{full.get('unit.' + k, '')}]" for k in keys) + " |")
    print("|---|" + "---|" * len(keys))
    for kind in KINDS:
        runs = [load(f"property-{kind}-s{s}") for s in SEEDS]
        runs = [r for r in runs if r is not None]
        if not runs:
            continue
        cells = []
        for k in keys:
            vals = [r["test_mae." + k] for r in runs if r.get("test_mae." + k) is not None]
            cells.append(fmt(sum(vals) / len(vals), 4) if vals else "-")
        print(f"| {kind} | " + " | ".join(cells) + " |")
    print()
# Headline runs (every runs/sequence_image/headline*-s<seed> directory): planned epochs, threads and
# augmentation from the run's config.ini, validation accuracy per epoch from learning_curve.csv.
def ini_values(path):
    vals = {}
    if os.path.exists(path):
        for line in open(path):
            if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
                k, v = line.split("=", 1)
                vals[k.strip()] = v.strip()
    return vals


heads = sorted(d for d in os.listdir(RUNS) if d.startswith("headline") and load(d) is not None) \
    if os.path.isdir(RUNS) else []
if heads:
    print("| run | planned epochs | threads | augmentation | epochs / steps done | training time |"
          " wall, CPU of the process | load after | validation accuracy (best epoch) | test accuracy |"
          " validation accuracy per epoch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for d in heads:
        m = load(d)
        cfg = ini_values(os.path.join(RUNS, d, "config.ini"))
        aug = []
        if cfg.get("flip") == "true":
            aug.append("flips")
        if cfg.get("shift", "0") != "0":
            aug.append(f"shifts <= {cfg['shift']} px")
        curve = []
        lc = os.path.join(RUNS, d, "learning_curve.csv")
        if os.path.exists(lc):
            rows = [l.strip().split(",") for l in open(lc)]
            col = rows[0].index("val_accuracy")
            curve = [f"{r[0]}: {100 * float(r[col]):.2f}%" for r in rows[1:]]
        wall = f"{m['_wall']:.2f} s wall, {m['_user']:.2f} s user" if m["_wall"] is not None else "-"
        print(f"| `{d}` | {cfg.get('epochs', '-')} | {cfg.get('threads', '-')} | {', '.join(aug) or 'none'} | "
              f"{int(m['epochs'])} / {int(m['steps'])} of {int(m['planned_steps'])} | "
              f"{m['training_seconds'] / 60:.1f} min | {wall} | {m['_load'] or '-'} | "
              f"{100 * m['validation_accuracy']:.2f}% | **{100 * m['test_accuracy']:.2f}%** | {', '.join(curve)} |")
    print()
