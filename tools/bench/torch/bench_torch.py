#!/usr/bin/env python3
"""PyTorch side of the model benchmark: one measurement per process (the harness reads the peak
RSS of this process), one JSON line on stdout. Mirrors tools/bench/model/bench_model.cpp.

  bench_torch.py train   --data F --threads N --model INIT.flt [--steps 200 --warmup 5 --batch-size 32]
  bench_torch.py predict --data F --threads N --model M.flt [--molecules 2048 --batch-size 64]
  bench_torch.py parity  --data F --model M.flt --predictions P.txt [--physical Q.txt] [--molecules K]

train: one optimisation step of `flt train --config datasets/qm9/default_model.ini` per batch of
consecutive molecules, as the C++ driver: a random rotation of every block's far-field design
(the C++ begin_step), zero grads, forward, L1 loss on the standardised targets, backward,
clip_grad_norm_(10), AdamW (lr 5e-4, betas 0.9/0.999, eps 1e-8, weight decay 0.05 on matrices
only; the foreach implementation), then the weights' exponential moving average (decay
min(0.999, (1 + n) / (10 + n)) after n updates; torch._foreach ops). The learning-rate schedule
is left out on both sides (one scalar per step).
predict: forward under torch.inference_mode in batches of 64 plus the denormalisation to physical
units (MoleculeModel::predict does both).
parity: loads a C++ model (.flt) and compares with the C++ outputs of bench_model --mode export:
the normalised outputs of one molecule per forward (--predictions) and, with --physical, the
physical predictions in batches of 64. Differences are reported in units of each target's scale
sigma_t (norm.scale: the standard deviation the model's outputs are normalised by), i.e.
|torch - C++| of the normalised outputs, and |torch - C++| / sigma_t of the physical ones.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import flt_torch  # noqa: E402


def parity(a, data, model):
    read = lambda path: torch.tensor([[float(v) for v in line.split()] for line in open(path) if line.strip()],
                                     dtype=torch.float64)
    cpp = read(a.predictions)
    K = min(a.molecules, cpp.shape[0])
    cpp = cpp[:K]
    scale = model.norm_scale
    model.eval()
    res = {"mode": "parity", "molecules": K, "targets": cpp.shape[1]}
    with torch.inference_mode():
        single = torch.cat([model(flt_torch.Batch(data, s, 1)).double() for s in range(K)])
        batches = [flt_torch.Batch(data, f, min(64, K - f)) for f in range(0, K, 64)]
        batched = torch.cat([model(b).double() for b in batches])
        physical = torch.cat([model.denormalise(b, model(b)) for b in batches])
        # The same forward in float64 (model and geometry): separates the float32 rounding of
        # both sides from any difference in the method.
        m64 = flt_torch.load_flt(a.model).double().eval()
        single64 = torch.cat([m64(flt_torch.Batch(data, s, 1)) for s in range(K)])
    d = (single - cpp).abs()
    res["max_abs_diff"] = d.max().item()
    res["max_abs_diff_per_target"] = d.max(0).values.tolist()
    res["max_rel_diff"] = (d / cpp.abs().clamp_min(1e-6)).max().item()
    res["output_magnitude_max"] = cpp.abs().max().item()
    res["max_abs_single_vs_batched"] = (single - batched).abs().max().item()
    res["max_abs_float64_torch_vs_cpp"] = (single64 - cpp).abs().max().item()
    res["max_abs_float64_torch_vs_float32_torch"] = (single64 - single).abs().max().item()
    if a.physical:
        phys = read(a.physical)[:K]
        dp = (physical - phys).abs() / scale
        res["max_physical_diff_over_scale"] = dp.max().item()
        res["max_physical_diff_over_scale_per_target"] = dp.max(0).values.tolist()
    res["rows"] = [[s, int(data.sizes[s]), cpp[s, 0].item(), single[s, 0].item(), batched[s, 0].item()]
                   for s in range(min(K, 6))]
    print(json.dumps(res))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["train", "predict", "parity"])
    ap.add_argument("--data", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--molecules", type=int, default=2048)
    ap.add_argument("--model", required=True, help="C++ .flt model (the initial weights for train)")
    ap.add_argument("--predictions", default=None)
    ap.add_argument("--physical", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    data = flt_torch.Molecules(a.data)
    model = flt_torch.load_flt(a.model)

    if a.mode == "parity":
        parity(a, data, model)
        return

    bs = a.batch_size or (32 if a.mode == "train" else 64)
    if a.mode == "train":
        model.train()
        opt = torch.optim.AdamW(model.param_groups(0.05), lr=5e-4, betas=(0.9, 0.999), eps=1e-8,
                                foreach=True)
        params = [p for p in model.parameters()]
        shadow = [p.detach().clone() for p in params]
        ema_updates = [0]
        gen = torch.Generator().manual_seed(1)
        atoms = 0
        loss = None

        def step(k):
            batch = flt_torch.Batch(data, k * bs, bs)
            model.rotate_designs(gen)
            opt.zero_grad(set_to_none=False)
            out = model(batch)
            lv = torch.nn.functional.l1_loss(out, batch.y)
            lv.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            n = ema_updates[0]
            d = min(0.999, (1.0 + n) / (10.0 + n))
            with torch.no_grad():
                torch._foreach_mul_(shadow, d)
                torch._foreach_add_(shadow, [p.detach() for p in params], alpha=1.0 - d)
            ema_updates[0] += 1
            return batch.num_atoms, lv.item()

        for k in range(a.warmup):
            step(k)
        t0, c0 = time.perf_counter(), time.process_time()
        for k in range(a.warmup, a.warmup + a.steps):
            n, loss = step(k)
            atoms += n
        t, cpu = time.perf_counter() - t0, time.process_time() - c0
        nm = a.steps * bs
        print(json.dumps({"mode": "train", "impl": "torch", "threads": a.threads, "steps": a.steps,
                          "batch_size": bs, "molecules": nm, "atoms": atoms, "seconds": t, "cpu_seconds": cpu,
                          "mol_per_s": nm / t, "last_loss": loss}))
        return

    model.eval()
    checksum = 0.0
    atoms = 0
    with torch.inference_mode():
        batch = flt_torch.Batch(data, 0, bs)
        checksum += model.denormalise(batch, model(batch)).sum().item()
        t0, c0 = time.perf_counter(), time.process_time()
        for first in range(0, a.molecules, bs):
            batch = flt_torch.Batch(data, first, min(bs, a.molecules - first))
            atoms += batch.num_atoms
            checksum += model.denormalise(batch, model(batch)).sum().item()
        t, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"mode": "predict", "impl": "torch", "threads": a.threads, "batch_size": bs,
                      "molecules": a.molecules, "atoms": atoms, "seconds": t, "cpu_seconds": cpu,
                      "mol_per_s": a.molecules / t, "checksum": checksum}))


if __name__ == "__main__":
    main()
