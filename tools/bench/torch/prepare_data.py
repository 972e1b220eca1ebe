#!/usr/bin/env python3
"""Writes the benchmark's molecule file from datasets/qm9/qm9_subset.xyz.gz (QM9 original format).

Molecules in a fixed random order (seed 0). Both sides of the benchmark (tools/bench/model/bench_model.cpp and flt_torch.py) read this file,
so they see identical molecules and targets. Format: first line M; per molecule "n y" then n lines
"Z x y z" (Angstrom). y is U0 (QM9 header column 12, Hartree) converted to eV, minus per-element
reference energies fitted by least squares, divided by the standard deviation of the residual:
the standardised extensive target the C++ trainer would use (mean per atom folded in).

Usage: prepare_data.py QM9_XYZ_GZ OUT_TXT [MAX_MOLECULES]
"""
import gzip
import sys

import numpy as np

HARTREE_EV = 27.211386245988
ELEMENTS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}


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
            u0 = float(header[12]) * HARTREE_EV  # "gdb", id, A, B, C, mu, ..., U0 at index 12
            atoms = []
            for _ in range(n):
                p = next(lines).replace("*^", "e").split()
                atoms.append((ELEMENTS[p[0]], float(p[1]), float(p[2]), float(p[3])))
            mols.append((atoms, u0))
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
    y = np.array([u for _, u in mols])
    ref, *_ = np.linalg.lstsq(counts, y, rcond=None)
    resid = y - counts @ ref
    scale = resid.std() if resid.std() > 1e-12 else 1.0
    yn = (resid - resid.mean()) / scale
    with open(out, "w") as f:
        f.write(f"{len(mols)}\n")
        for (atoms, _), t in zip(mols, yn):
            f.write(f"{len(atoms)} {t:.9g}\n")
            for z, x, yy, zz in atoms:
                f.write(f"{z} {x:.10g} {yy:.10g} {zz:.10g}\n")
    print(f"{len(mols)} molecules, {int(counts.sum())} atoms, residual std {scale:.4f} eV -> {out}")


if __name__ == "__main__":
    main()
