#!/usr/bin/env python3
"""PyTorch side of the issue-5 model benchmark: one measurement per process (the harness reads
the peak RSS of this process), one JSON line on stdout. Mirrors tools/bench/model/bench_model.cpp.

  bench_torch.py train   --data F --threads N --model INIT.flt [--steps 200 --warmup 5 --batch-size 32]
  bench_torch.py predict --data F --threads N --model M.flt [--molecules 2048 --batch-size 64]
  bench_torch.py parity  --data F --model M.flt --predictions P.txt [--molecules K]

train: one optimisation step of `flt train --config datasets/qm9/default_model.ini` per batch of
consecutive molecules, as the C++ driver: zero grads, forward, L1 loss on the standardised
targets, backward, clip_grad_norm_(10), AdamW (lr 5e-4, betas 0.9/0.999, eps 1e-8, weight decay
0.05 on matrices only; the foreach implementation), then the weights' exponential moving average
(decay min(0.999, (1 + n) / (10 + n)) after n updates; torch._foreach ops). The learning-rate
schedule is left out on both sides (one scalar per step).
predict: forward under torch.inference_mode in batches of 64 plus the denormalisation to physical
units (MoleculeModel::predict does both).
parity: loads a C++ model (.flt) and compares its normalised per-molecule outputs with the C++ ones.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import flt_torch  # noqa: E402


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
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    mols = flt_torch.read_molecules(a.data)
    model = flt_torch.load_flt(a.model)

    if a.mode == "parity":
        cpp = [float(x) for x in open(a.predictions).read().split()]
        K = min(a.molecules, len(cpp))
        model.eval()
        worst_abs, worst_rel, rows = 0.0, 0.0, []
        with torch.inference_mode():
            # One molecule per call (as the C++ export) and the same molecules as one padded batch.
            single = [model(*flt_torch.make_batch(mols, s, 1)[:3])[0].tolist() for s in range(K)]
            batched = model(*flt_torch.make_batch(mols, 0, K)[:3]).tolist()
        P = len(single[0])
        cpp = [cpp[s * P:(s + 1) * P] for s in range(len(cpp) // P)]
        K = min(K, len(cpp))
        for s in range(K):
            for t in range(P):
                d = abs(single[s][t] - cpp[s][t])
                worst_abs = max(worst_abs, d)
                worst_rel = max(worst_rel, d / max(abs(cpp[s][t]), 1e-6))
            rows.append((s, len(mols[s][0]), cpp[s][0], single[s][0], batched[s][0]))
        pad = max(abs(x - y) for xs, ys in zip(single, batched) for x, y in zip(xs, ys))
        print(json.dumps({"mode": "parity", "molecules": K, "max_abs_diff": worst_abs,
                          "max_rel_diff": worst_rel, "max_abs_single_vs_padded": pad,
                          "rows": rows[:8]}))
        return

    bs = a.batch_size or (32 if a.mode == "train" else 64)
    if a.mode == "train":
        model.train()
        opt = torch.optim.AdamW(model.param_groups(0.05), lr=5e-4, betas=(0.9, 0.999), eps=1e-8,
                                foreach=True)
        params = [p for p in model.parameters()]
        shadow = [p.detach().clone() for p in params]
        ema_updates = [0]
        atoms = 0
        loss = None

        def step(k):
            z, pos, mask, y = flt_torch.make_batch(mols, k * bs, bs)
            opt.zero_grad(set_to_none=False)
            out = model(z, pos, mask)
            lv = torch.nn.functional.l1_loss(out, y)
            lv.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            n = ema_updates[0]
            d = min(0.999, (1.0 + n) / (10.0 + n))
            with torch.no_grad():
                torch._foreach_mul_(shadow, d)
                torch._foreach_add_(shadow, [p.detach() for p in params], alpha=1.0 - d)
            ema_updates[0] += 1
            return int(mask.sum()), lv.item()

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
        z, pos, mask, _ = flt_torch.make_batch(mols, 0, bs)
        checksum += model.denormalise(z, mask, model(z, pos, mask)).sum().item()
        t0, c0 = time.perf_counter(), time.process_time()
        for first in range(0, a.molecules, bs):
            count = min(bs, a.molecules - first)
            z, pos, mask, _ = flt_torch.make_batch(mols, first, count)
            atoms += int(mask.sum())
            out = model.denormalise(z, mask, model(z, pos, mask))
            checksum += out.sum().item()
        t, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"mode": "predict", "impl": "torch", "threads": a.threads, "batch_size": bs,
                      "molecules": a.molecules, "atoms": atoms, "seconds": t, "cpu_seconds": cpu,
                      "mol_per_s": a.molecules / t, "checksum": checksum}))


if __name__ == "__main__":
    main()
