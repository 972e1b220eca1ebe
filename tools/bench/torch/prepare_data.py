#!/usr/bin/env python3
"""Writes the benchmark's molecule file from datasets/qm9/qm9_subset.xyz.gz (QM9 original format).

Molecules in a fixed random order (seed 0). Both sides of the benchmark (tools/bench/model/bench_model.cpp and flt_torch.py) read this file,
so they see identical molecules and targets. Format: first line M; per molecule "n y" then n lines
"Z x y z" (Angstrom). Format: first line "M P"; per molecule "n y_1 .. y_P" then n lines
"Z x y z". The P = 8 targets are those of the default model (datasets/qm9/default_model.ini):
U0 homo lumo gap mu alpha zpve Cv, in the trainer's units (energies in eV), standardised as the
C++ trainer does: the extensive ones (U0, alpha, zpve, Cv) minus per-element reference values
fitted by least squares and divided by the residual's standard deviation (mean per atom folded
in), the intensive ones (homo, lumo, gap, mu) minus their mean, divided by their standard
deviation.

Usage: prepare_data.py QM9_XYZ_GZ OUT_TXT [MAX_MOLECULES]
"""
import gzip
import sys

import numpy as np

HARTREE_EV = 27.211386245988
ELEMENTS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
# Default-model targets: U0 homo lumo gap mu alpha zpve Cv (header columns), extensive or not.
COLUMNS = [12, 7, 8, 9, 5, 6, 11, 16]
EXTENSIVE = [True, False, False, False, False, True, True, True]
HARTREE_COLUMNS = {7, 8, 9, 11, 12}


def read_qm9(path, limit):
    """Records "n", QM9 header line, n atom lines; any other line (the original format's
    frequency, SMILES and InChI lines, blank lines) is skipped until the next atom count."""
    mols = []
    with gzip.open(path, "rt") as f:
        lines = iter(f)
        for line in lines:
            if len(mols) >= limit:
                break
            if not line.strip().isdigit():
                continue
            n = int(line)
            header = next(lines).split()
            # "gdb", id, A, B, C, mu, alpha, homo, lumo, gap, r2, zpve, U0, U, H, G, Cv
            y = [float(header[c]) * (HARTREE_EV if c in HARTREE_COLUMNS else 1.0) for c in COLUMNS]
            atoms = []
            for _ in range(n):
                p = next(lines).replace("*^", "e").split()
                atoms.append((ELEMENTS[p[0]], float(p[1]), float(p[2]), float(p[3])))
            mols.append((atoms, y))
    return mols


def main():
    src, out = sys.argv[1], sys.argv[2]
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 10**9
    mols = read_qm9(src, 10**9)
    # A fixed shuffle (seed 0) so that every stretch of consecutive molecules -- the benchmark's
    # batches -- has QM9's size distribution (the file starts with the smallest molecules).
    order = np.random.default_rng(0).permutation(len(mols))[:limit]
    mols = [mols[i] for i in order]
    zs = sorted({a[0] for atoms, _ in mols for a in atoms})
    counts = np.array([[sum(1 for a in atoms if a[0] == z) for z in zs] for atoms, _ in mols], float)
    Y = np.array([y for _, y in mols])
    YN = np.empty_like(Y)
    for t, extensive in enumerate(EXTENSIVE):
        v = Y[:, t]
        if extensive:
            ref, *_ = np.linalg.lstsq(counts, v, rcond=None)
            v = v - counts @ ref
        scale = v.std() if v.std() > 1e-12 else 1.0
        YN[:, t] = (v - v.mean()) / scale
    with open(out, "w") as f:
        f.write(f"{len(mols)} {Y.shape[1]}\n")
        for (atoms, _), yn in zip(mols, YN):
            f.write(f"{len(atoms)} " + " ".join(f"{t:.9g}" for t in yn) + "\n")
            for z, x, yy, zz in atoms:
                f.write(f"{z} {x:.10g} {yy:.10g} {zz:.10g}\n")
    print(f"{len(mols)} molecules, {int(counts.sum())} atoms, {Y.shape[1]} standardised targets -> {out}")


if __name__ == "__main__":
    main()
