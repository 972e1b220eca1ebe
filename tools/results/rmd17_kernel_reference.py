#!/usr/bin/python3
"""A kernel reference for one molecule's energy surface trained on energies only.

Kernel ridge regression (a Gaussian-process mean) on the inverse interatomic distances of all
atom pairs, with a Matern-5/2 kernel summed over the molecule's graph automorphisms (for ethanol:
the CH2 hydrogens and the rotating methyl group, 12 permutations), as sGDML symmetrises its
kernel. It answers one question for docs/results/rmd17.md: how low can the test energy error go
from the training energies alone, on the same split as the flt recipe?

    k(A, B) = sum_p m(|d(A) - d(B o p)| / l),  m(t) = (1 + sqrt5 t + 5/3 t^2) exp(-sqrt5 t)
    E(A)    = mean(E_train) + sum_t alpha_t k(A, t),  (K + lambda |P| I) alpha = E_train - mean

d(A) is the vector of 1/r_ij over all pairs i < j in file order (every frame of the file must list
the same molecule's atoms in the same order, as MD trajectories do). --kernel local replaces this
global kernel by a sum over atoms, as atom-centred models decompose the energy:
    k(A, B) = sum_{i in A, j in B, Z_i = Z_j} m(|g_i(A) - g_j(B)| / l)
with g_i the inverse distances from atom i to the other atoms, sorted within each element (a
permutation-invariant local descriptor without angles). The length scale l (a multiple
of the descriptor's mean spread) and lambda are chosen by the validation MAE; the test MAE of that
choice is printed. Needs NumPy and RDKit (Debian: python3-numpy, python3-rdkit).

    tools/results/rmd17_kernel_reference.py --split-file runs/rmd17/s1/split.csv
    tools/results/rmd17_kernel_reference.py --data OTHER.xyz --split 800,100,100 --split-seed 0

--split-file takes the split.csv of an flt run (columns subset,index: 0-based record numbers);
without it the split is drawn here with NumPy's generator (not flt's draw). --compare takes the
CSV of `flt predict` on the whole file (column "flt_energy [eV]", one row per record in order)
and prints both models' test error by quartile of the reference energy: where each is off.
"""
import argparse
import csv
import sys

import numpy as np
from rdkit import Chem


def read_extxyz(path):
    """Symbols of the first frame, coordinates (frames x atoms x 3, Angstrom), energies (eV)."""
    symbols, frames, energies = None, [], []
    with open(path) as f:
        lines = f.read().splitlines()
    i, record = 0, 0
    while i < len(lines) and lines[i].strip():
        record += 1
        n = int(lines[i])
        header = lines[i + 1]
        if "energy=" not in header:
            sys.exit(f"{path}: record {record}: no energy= key in the comment line")
        energy = float(header.split("energy=")[1].split()[0])
        rows = [line.split() for line in lines[i + 2:i + 2 + n]]
        these = [r[0] for r in rows]
        if symbols is None:
            symbols = these
        elif these != symbols:
            sys.exit(f"{path}: record {record}: atoms differ from the first record's (one molecule, "
                     "one atom order is required)")
        frames.append([[float(v) for v in r[1:4]] for r in rows])
        energies.append(energy)
        i += 2 + n
    return symbols, np.array(frames), np.array(energies)


def automorphisms(symbols, coords):
    """Atom permutations that map the bond graph of one frame onto itself (RDKit matching)."""
    table = Chem.GetPeriodicTable()
    mol = Chem.RWMol()
    for s in symbols:
        atom = Chem.Atom(s)
        atom.SetNoImplicit(True)
        mol.AddAtom(atom)
    n = len(symbols)
    for i in range(n):
        for j in range(i + 1, n):
            # RDKit's covalent radii plus the usual 0.45 A tolerance of distance-based bonding.
            limit = table.GetRcovalent(symbols[i]) + table.GetRcovalent(symbols[j]) + 0.45
            if np.linalg.norm(coords[i] - coords[j]) < limit:
                mol.AddBond(i, j, Chem.BondType.SINGLE)
    query = mol.GetMol()
    query.UpdatePropertyCache(strict=False)
    matches = query.GetSubstructMatches(query, uniquify=False, useChirality=False,
                                        maxMatches=100000)
    return [list(m) for m in matches]


def inverse_distances(coords, perm):
    x = coords[:, perm, :]
    iu = np.triu_indices(x.shape[1], 1)
    r = np.linalg.norm(x[:, :, None, :] - x[:, None, :, :], axis=-1)[:, iu[0], iu[1]]
    return 1.0 / r


def matern52(a, b, length):
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    t = np.sqrt(np.maximum(sq, 0.0)) / length
    return (1.0 + np.sqrt(5.0) * t + 5.0 / 3.0 * t * t) * np.exp(-np.sqrt(5.0) * t)


def kernel(desc, rows_a, rows_b, length):
    return sum(matern52(desc[0][rows_a], d[rows_b], length) for d in desc)


def local_descriptors(symbols, coords):
    """Per atom: (element, frames x (atoms - 1) inverse distances to the other atoms, sorted
    within each element)."""
    r = np.linalg.norm(coords[:, :, None, :] - coords[:, None, :, :], axis=-1)
    elements = sorted(set(symbols))
    out = []
    for i, zi in enumerate(symbols):
        parts = []
        for z in elements:
            others = [j for j, zj in enumerate(symbols) if zj == z and j != i]
            if others:
                parts.append(-np.sort(-1.0 / r[:, i, others], axis=1))
        out.append((zi, np.concatenate(parts, axis=1)))
    return out


def local_kernel(local, rows_a, rows_b, length):
    return sum(matern52(gi[rows_a], gj[rows_b], length)
               for zi, gi in local for zj, gj in local if zi == zj)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="datasets/rmd17-ethanol/train.xyz")
    p.add_argument("--split-file", help="an flt run's split.csv (subset,index,...)")
    p.add_argument("--split", default="800,100,100", help="train,validation,test counts")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--compare", help="flt predict CSV of the whole file, to compare by quartile")
    p.add_argument("--kernel", choices=("global", "local"), default="global")
    args = p.parse_args()

    symbols, coords, energies = read_extxyz(args.data)
    if args.split_file:
        subsets = {"train": [], "validation": [], "test": []}
        with open(args.split_file) as f:
            for row in csv.DictReader(f):
                subsets[row["subset"]].append(int(row["index"]))
        train, val, test = (np.array(subsets[k]) for k in ("train", "validation", "test"))
    else:
        counts = [int(c) for c in args.split.split(",")]
        order = np.random.default_rng(args.split_seed).permutation(len(energies))
        train = order[:counts[0]]
        val = order[counts[0]:counts[0] + counts[1]]
        test = order[counts[0] + counts[1]:sum(counts)]
    if args.kernel == "global":
        perms = automorphisms(symbols, coords[0])
        desc = [inverse_distances(coords, perm) for perm in perms]
        spread = desc[0][train].std(0).mean() * np.sqrt(desc[0].shape[1])
        gram = lambda a, b, length: kernel(desc, a, b, length)  # noqa: E731
        ridge_scale = len(perms)
    else:
        perms = []
        local = local_descriptors(symbols, coords)
        spread = np.mean([g[train].std(0).mean() * np.sqrt(g.shape[1]) for _, g in local])
        gram = lambda a, b, length: local_kernel(local, a, b, length)  # noqa: E731
        ridge_scale = 1
    print(f"{args.data}: {len(energies)} frames of {len(symbols)} atoms; "
          f"{len(train)} train, {len(val)} validation, {len(test)} test; "
          f"{args.kernel} kernel" + (f", {len(perms)} automorphisms" if perms else ""))

    mean = energies[train].mean()
    best = None
    for scale in (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0):
        length = scale * spread
        k_train = gram(train, train, length)
        k_val = gram(val, train, length)
        k_test = gram(test, train, length)
        for lam in (1e-12, 1e-10, 1e-8, 1e-6):
            alpha = np.linalg.solve(k_train + lam * ridge_scale * np.eye(len(train)),
                                    energies[train] - mean)
            mae_val = np.abs(k_val @ alpha + mean - energies[val]).mean()
            if best is None or mae_val < best[0]:
                err_test = k_test @ alpha + mean - energies[test]
                err_train = k_train @ alpha + mean - energies[train]
                best = (mae_val, scale, lam, err_test, err_train)
    mae_val, scale, lam, err_test, err_train = best
    print(f"chosen on validation: length {scale} x spread, lambda {lam:g}")
    print(f"train MAE {1000 * np.abs(err_train).mean():.1f} meV, validation MAE "
          f"{1000 * mae_val:.1f} meV, test MAE {1000 * np.abs(err_test).mean():.1f} meV, "
          f"test RMSE {1000 * np.sqrt((err_test ** 2).mean()):.1f} meV")
    if args.compare:
        compare_by_quartile(args.compare, energies, test, err_test)


def compare_by_quartile(path, energies, test, err_kernel):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if len(rows) != len(energies) or "flt_energy [eV]" not in rows[0]:
        sys.exit(f"{path}: expected {len(energies)} rows with a column 'flt_energy [eV]'")
    predicted = np.array([float(r["flt_energy [eV]"]) for r in rows])
    err_model = predicted[test] - energies[test]
    print(f"flt predictions ({path}): test MAE {1000 * np.abs(err_model).mean():.1f} meV")
    order = np.argsort(energies[test])
    mean = energies.mean()
    print("quartile of the test energies | mean E - mean [meV] | flt MAE, bias [meV] | "
          "kernel MAE, bias [meV]")
    for q, part in enumerate(np.array_split(order, 4)):
        print(f"{q + 1} | {1000 * (energies[test][part].mean() - mean):.0f} | "
              f"{1000 * np.abs(err_model[part]).mean():.1f}, {1000 * err_model[part].mean():+.1f} | "
              f"{1000 * np.abs(err_kernel[part]).mean():.1f}, {1000 * err_kernel[part].mean():+.1f}")


if __name__ == "__main__":
    main()
