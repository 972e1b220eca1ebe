#!/usr/bin/env python3
"""Harness of the model benchmark (called by tools/bench/run_model_bench.sh).

Runs, side by side in one run, the C++ FLT molecule model (build/tools/bench/model/bench_model) and
the PyTorch implementation (bench_torch.py) of the default configuration (attention near_far), on
the same QM9 molecules, with 1 and 2 threads:
  * training throughput: molecules/s over --steps optimisation steps (batch 32) after 5 warm-up
    steps, both sides from the same fresh weights (the torch children load the C++ model's .flt);
  * prediction throughput: molecules/s over --pred-molecules molecules (batch 64) after one warm-up
    batch, with a trained model; the C++ child also counts the forward's multiply-adds and measures
    the float32 FMA peak, so the report gives the fraction of the peak the prediction reaches;
  * peak memory: the peak RSS of each measurement's own child process (os.wait4).
Every (implementation, mode, threads) configuration is a fresh child process; configurations are
interleaved within each round (the order of the two implementations alternates between rounds),
and the report takes the median over --repeats rounds and lists the ratio of each round. The
1-minute load average is sampled before and after every child. Before measuring it checks the
PyTorch forward against the C++ model on the trained weights (parity).

The trained model (--model): by default models/default.flt when it is a near_far model; otherwise
a model trained for one epoch by `flt train --config datasets/qm9/default_model.ini --attention
near_far --epochs 1` (kept in <build>/model_bench/near_far_run/ and reused). Its weights affect
parity only: the work of a forward does not depend on the weights.
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
PY = sys.executable
GLIBC_TUNABLES = f"glibc.malloc.mmap_threshold={32 << 20}:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold={(1 << 64) - 1}"


def run_child(cmd, threads, loads):
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    # The glibc malloc settings the C++ driver sets with mallopt (src/core/allocator.hpp), so
    # that both sides run with the same allocator settings.
    env["GLIBC_TUNABLES"] = GLIBC_TUNABLES
    loads.append(os.getloadavg()[0])
    with tempfile.TemporaryFile(mode="w+") as errf:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, env=env, text=True)
        out = p.stdout.read()
        # wait4: this child's own rusage (ru_maxrss = its peak RSS, KiB on Linux).
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        errf.seek(0)
        err = errf.read()
    loads.append(os.getloadavg()[0])
    if p.returncode != 0:
        raise SystemExit(f"benchmark child failed ({p.returncode}): {shlex.join(cmd)}\n{err}")
    rec = json.loads(out.strip().splitlines()[-1])
    rec["peak_rss_mib"] = ru.ru_maxrss / 1024.0
    return rec


def machine():
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs{mem}, {platform.system()} {platform.release()}"


def model_attention(path):
    """config.attention of a .flt file, from its header alone. (This process must not import
    torch or numpy before the measurements: a child's peak RSS as wait4 reports it includes this
    process's resident memory at the fork.)"""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        metadata = json.loads(f.read(n))["__metadata__"]
    # An ensemble file keeps each member's entries under "member.<k>."; bench_model times member 1.
    return metadata.get("config.attention", metadata.get("member.1.config.attention"))


def model_is_ensemble(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))["__metadata__"].get("format") == "flt-ensemble"


def trained_model(a, work):
    """The trained near_far model the benchmark predicts with (see the module docstring)."""
    if a.model:
        return a.model
    default = os.path.join(ROOT, "models", "default.flt")
    if model_attention(default) == "near_far":
        return default
    run = os.path.join(work, "near_far_run")
    path = os.path.join(run, "model.flt")
    if not os.path.exists(path):
        flt = os.path.join(a.build_dir, "tools", "flt")
        print(f"models/default.flt is not a near_far model: training one for 1 epoch into {run} "
              "(a few minutes, once)", flush=True)
        subprocess.check_call([flt, "train", "--config", os.path.join(ROOT, "datasets", "qm9", "default_model.ini"),
                               "--attention", "near_far", "--epochs", "1", "--threads", "1", "--quiet",
                               "--out", run, "--overwrite"], cwd=ROOT)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--quick", action="store_true", help="30 steps, 512 molecules, 1 round")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--pred-molecules", type=int, default=4096)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--model", default=None, help="trained near_far .flt model (default: see above)")
    ap.add_argument("--command", default="tools/bench/run_model_bench.sh")
    a = ap.parse_args()
    if a.quick:
        a.repeats, a.steps, a.pred_molecules = 1, 30, 512
    threads = [int(t) for t in a.threads.split(",")]
    work = os.path.join(a.build_dir, "model_bench")
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "qm9_molecules.txt")
    src = os.path.join(ROOT, "datasets", "qm9", "qm9_subset.xyz.gz")
    if not os.path.exists(data) or os.path.getmtime(data) < max(os.path.getmtime(src), os.path.getmtime(os.path.join(HERE, "prepare_data.py"))):
        subprocess.check_call([PY, os.path.join(HERE, "prepare_data.py"), src, data])
    cpp = os.path.join(a.build_dir, "tools", "bench", "model", "bench_model")
    torch_py = os.path.join(HERE, "bench_torch.py")
    model = trained_model(a, work)
    init = os.path.join(work, "init.flt")
    pred = os.path.join(work, "parity_normalised.txt")
    phys = os.path.join(work, "parity_physical.txt")
    started = datetime.datetime.now(datetime.timezone.utc)

    # Parity: the trained model's outputs on 64 molecules in C++ (one molecule per forward,
    # normalised; and physical in one batch), then the torch forward of the same file; the export
    # also writes the fresh model both training runs start from.
    subprocess.check_call([cpp, "--mode", "export", "--data", data, "--model", model, "--molecules", "64",
                           "--model-out", init, "--predictions-out", pred, "--physical-out", phys],
                          stdout=subprocess.DEVNULL)
    par = json.loads(subprocess.check_output([PY, torch_py, "parity", "--data", data, "--model", model,
                                              "--predictions", pred, "--physical", phys, "--molecules", "64"],
                                             env=dict(os.environ, PYTHONWARNINGS="ignore")).decode().splitlines()[-1])
    parity_text = (f"max |torch − C++| of the normalised outputs (units of each target's scale sigma_t) = "
                   f"{par['max_abs_diff']:.3g} over {par['molecules']} molecules x {par['targets']} targets "
                   f"(one molecule per forward; outputs up to {par['output_magnitude_max']:.3g}); physical predictions"
                   f" in a batch of 64: max |torch − C++| / sigma_t = {par['max_physical_diff_over_scale']:.3g};"
                   f" torch one molecule vs batched {par['max_abs_single_vs_batched']:.3g}; torch in float64 vs C++"
                   f" {par['max_abs_float64_torch_vs_cpp']:.3g}")
    print("parity: " + parity_text, flush=True)

    def cmd(impl, mode, t):
        if impl == "cpp":
            c = [cpp, "--mode", mode, "--data", data, "--threads", str(t),
                 "--model", init if mode == "train" else model]
        else:
            c = [PY, "-W", "ignore", torch_py, mode, "--data", data, "--threads", str(t),
                 "--model", init if mode == "train" else model]
        if mode == "train":
            c += ["--steps", str(a.steps)]
        else:
            c += ["--molecules", str(a.pred_molecules)]
        return c

    results = {}
    loads = []
    for r in range(a.repeats):
        impls = ["cpp", "torch"] if r % 2 == 0 else ["torch", "cpp"]
        for mode in ("train", "predict"):
            for t in threads:
                for impl in impls:
                    rec = run_child(cmd(impl, mode, t), t, loads)
                    results.setdefault((impl, mode, t), []).append(rec)
                    extra = ""
                    if impl == "cpp" and mode == "predict":
                        extra = (f", {rec['gflops']:.1f} GFLOP/s = {100 * rec['peak_fraction']:.1f}% of the FMA peak {rec['fma_peak_gflops']:.1f}"
                                 f" ({100 * rec['peak_fraction_cpu']:.1f}% per CPU-s)")
                    print(f"round {r + 1}/{a.repeats} {mode:7s} {impl:5s} threads={t}: "
                          f"{rec['mol_per_s']:9.1f} mol/s ({rec['molecules'] / rec['cpu_seconds']:.1f} per CPU-s), peak RSS {rec['peak_rss_mib']:.0f} MiB, "
                          f"load {loads[-1]:.1f}{extra}", flush=True)
    finished = datetime.datetime.now(datetime.timezone.utc)

    med = lambda key, f: statistics.median(x[f] for x in results[key])
    cfg = json.loads(subprocess.check_output([cpp, "--mode", "count", "--data", data, "--model", model,
                                              "--molecules", str(a.pred_molecules)]).decode().splitlines()[-1])
    shown_model = os.path.relpath(model, ROOT) if os.path.abspath(model).startswith(ROOT + os.sep) else model
    lines = []
    lines.append("# Model throughput: C++ FLT molecule model vs a PyTorch implementation\n")
    lines.append("Generated by `tools/bench/run_model_bench.sh` (harness `tools/bench/torch/run_model_bench.py`);"
                 " do not edit the numbers by hand.\n")
    lines.append(f"* Command: `{a.command}`" + (" (quick mode: indicative only)" if a.quick else ""))
    lines.append(f"* Date: {started:%Y-%m-%d %H:%M}–{finished:%H:%M} UTC")
    lines.append(f"* Machine: {machine()}")
    try:
        import torch  # noqa: F401
        tv = torch.__version__
        pcfg = [l.strip() for l in torch.__config__.parallel_info().splitlines() if "backend" in l.lower()]
    except Exception:  # pragma: no cover
        tv, pcfg = "?", []
    gxx = subprocess.run(["g++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    lines.append(f"* PyTorch {tv} (Debian python3-torch, CPU; {'; '.join(pcfg)}), Python {platform.python_version()}; "
                 f"C++: {gxx}, build type from `{os.path.basename(os.path.abspath(a.build_dir))}`")
    lines.append(f"* 1-minute load average sampled before/after each child: min {min(loads):.1f}, "
                 f"median {statistics.median(loads):.1f}, max {max(loads):.1f} "
                 f"(the machine was shared with other jobs; the 2 cores were oversubscribed when the load exceeds 2)")
    lines.append(f"* Rounds: {a.repeats} (median reported), configurations interleaved, implementation order alternating;"
                 f" training {a.steps} steps of 32 molecules after 5 warm-up steps; prediction {a.pred_molecules}"
                 f" molecules in batches of 64 after one warm-up batch; every measurement a fresh process.")
    lines.append("* Data: `datasets/qm9/qm9_subset.xyz.gz` (13,023 QM9 molecules, 18.1 atoms on average, fixed shuffle),"
                 " the default model's 8 targets (U0 homo lumo gap mu alpha zpve Cv), standardised.")
    lines.append(f"* Model: the default configuration, attention near_far (exact near field within 5 Angstrom with"
                 f" Hermite-table filters, sink and vector messages; FLT far field with the product-grid design;"
                 f" gated equivariant update), width 128, 8 heads, 3 blocks; {cfg['pairs_per_molecule']:.1f} near"
                 f" pairs and {cfg['far_pairs_per_molecule']:.1f} far pairs per molecule on average. Training"
                 f" starts from fresh weights (L1 loss, AdamW with weight decay 0.05, clipping at 10, weight EMA"
                 f" 0.999, far-field designs rotated every step); prediction uses the trained model"
                 f" `{shown_model}`{' (its first member: the file is an ensemble)' if model_is_ensemble(model) else ''}"
                 f" and returns physical units.")
    lines.append(f"* Parity (torch loads the C++ `.flt`): {parity_text}.\n")
    lines.append("| mode | threads | C++ mol/s | PyTorch mol/s | ratio of the medians | per-round ratios (median) | target | C++ peak RSS (MiB) | PyTorch peak RSS (MiB) |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for mode, target in (("train", 2.0), ("predict", 2.5)):
        for t in threads:
            c, p = med(("cpp", mode, t), "mol_per_s"), med(("torch", mode, t), "mol_per_s")
            ratio = c / p
            rounds = [x["mol_per_s"] / y["mol_per_s"] for x, y in zip(results[("cpp", mode, t)], results[("torch", mode, t)])]
            ok = "met" if ratio >= target else "**not met**"
            lines.append(f"| {'training' if mode == 'train' else 'prediction'} | {t} | {c:.1f} | {p:.1f} | "
                         f"{ratio:.2f}x | {', '.join('%.2f' % x for x in rounds)} ({statistics.median(rounds):.2f}x) | >= {target:g}x ({ok}) | "
                         f"{med(('cpp', mode, t), 'peak_rss_mib'):.0f} | {med(('torch', mode, t), 'peak_rss_mib'):.0f} |")
    lines.append("")
    flop = 2 * cfg["macs_per_molecule"]
    lines.append(f"Prediction against the float32 FMA peak. The C++ forward does {flop / 1e6:.1f} MFLOP per molecule"
                 f" (2 x its multiply-adds, counted by `bench_model` from the code's loops for these batches; terms per molecule:"
                 f" {', '.join('%s %.1f' % (k, 2 * v / 1e6) for k, v in cfg['macs_terms_per_molecule'].items())} MFLOP;"
                 f" transcendental functions and data movement not counted). The peak"
                 f" ({results[('cpp', 'predict', threads[0])][0].get('fma_peak_isa', 'float32 AVX2')} FMA loop; the C++ matrix"
                 f" products ran the {results[('cpp', 'predict', threads[0])][0].get('gemm_isa', 'avx2')} kernel) is measured by each C++ prediction"
                 f" child right after its timed loop with the same thread count (best of 3), per wall-clock second and per"
                 f" CPU-second of the process (medians over the rounds). The PyTorch column uses"
                 f" the same count (the same model's arithmetic at PyTorch's rate).\n")
    lines.append("| threads | FMA peak GFLOP/s (per wall s / per CPU-s) | C++ GFLOP/s (per wall s / per CPU-s) |"
                 " C++ fraction of peak (wall / CPU time) | PyTorch fraction of peak (wall / CPU time) |")
    lines.append("|---|---|---|---|---|")
    for t in threads:
        pk, pkc = med(("cpp", "predict", t), "fma_peak_gflops"), med(("cpp", "predict", t), "fma_peak_gflops_per_cpu_s")
        tg = flop * med(("torch", "predict", t), "mol_per_s") * 1e-9
        tgc = flop * statistics.median(x["molecules"] / x["cpu_seconds"] for x in results[("torch", "predict", t)]) * 1e-9
        lines.append(f"| {t} | {pk:.1f} / {pkc:.1f} | {med(('cpp', 'predict', t), 'gflops'):.2f} / "
                     f"{med(('cpp', 'predict', t), 'gflops_per_cpu_s'):.2f} | "
                     f"{100 * med(('cpp', 'predict', t), 'peak_fraction'):.1f}% / {100 * med(('cpp', 'predict', t), 'peak_fraction_cpu'):.1f}% | "
                     f"{100 * tg / pk:.1f}% / {100 * tgc / pkc:.1f}% |")
    lines.append("")
    lines.append("The same runs measured in CPU time of the timed loop (molecules per CPU-second, all threads of the"
                 " process; on an oversubscribed machine this is the work each side needed, less disturbed by"
                 " waiting for a core; with 2 threads it includes OpenMP spin-waiting):\n")
    lines.append("| mode | threads | C++ mol/CPU-s | PyTorch mol/CPU-s | ratio C++/PyTorch |")
    lines.append("|---|---|---|---|---|")
    for mode in ("train", "predict"):
        for t in threads:
            cc = statistics.median(x["molecules"] / x["cpu_seconds"] for x in results[("cpp", mode, t)])
            pc = statistics.median(x["molecules"] / x["cpu_seconds"] for x in results[("torch", mode, t)])
            lines.append(f"| {'training' if mode == 'train' else 'prediction'} | {t} | {cc:.1f} | {pc:.1f} | {cc / pc:.2f}x |")
    lines.append("")
    lines.append("Every run (mol/s):\n")
    lines.append("| configuration | runs |")
    lines.append("|---|---|")
    for key in sorted(results):
        lines.append(f"| {key[0]} {key[1]} threads={key[2]} | {', '.join('%.1f' % x['mol_per_s'] for x in results[key])} |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(work, "table.md"), "w") as f:
        f.write(text)
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump({"parity": par, "count": cfg, "loads": loads,
                   "results": {f"{k[0]} {k[1]} {k[2]}": v for k, v in results.items()}}, f, indent=1)
    print(text)


if __name__ == "__main__":
    main()
