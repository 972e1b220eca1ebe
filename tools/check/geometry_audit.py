#!/usr/bin/env python3
"""What force-field users take for granted, measured on a molecule model through the Python API
(the library flt predict runs): invariance of the energy and equivariance of the forces under
rotations, a reflection, translations (1e3-1e5 A) and permutations (below and above the 512 atoms
from which predict works in cell order), small molecules and water boxes of up to a few thousand
atoms; forces against central differences of the energy; continuity of E and F when a pair
crosses the 5 A cutoff; E(A + B) - E(A) - E(B) for fragments far apart; the energy's resolution
(the pooled network output is a float); bitwise equality for 1 and 2 threads. Numbers in
docs/prediction.md ("Geometry at the edges") come from this script.

    PYTHONPATH=build/python /usr/bin/python3 tools/check/geometry_audit.py MODEL.flt [MODEL.flt ...]

Each model must know H and O (water boxes) and H, C, O (ethanol: the first configuration of
datasets/rmd17-ethanol/train.xyz). Prints one line per check; exits 0 (it measures, it does not
judge). About a minute per model on one core.

    tools/check/geometry_audit.py --binary build/tools/flt MODEL.flt

also runs `flt predict --forces` (-j 1 and -j 2) on the ethanol and its 54 displacements by
+-0.003 A: central differences of the written energies, and the written numbers against Python's.

    tools/check/geometry_audit.py --water-box 22 water.xyz

writes the water box of 22^3 molecules (31,944 atoms) as extended XYZ instead, for timing
flt predict on large structures.
"""
import argparse
import os
import sys
import time

import numpy as np

import flt

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ethanol():
    from ase.io import read
    atoms = read(os.path.join(ROOT, "datasets/rmd17-ethanol/train.xyz"), index=0)
    return atoms.numbers.copy(), atoms.positions.copy()


def rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def water_box(n_side, spacing=3.1, seed=0):
    """n_side^3 randomly oriented rigid waters on a jittered cubic grid (about liquid density)."""
    rng = np.random.default_rng(seed)
    angle = np.deg2rad(104.52)
    shape = np.array([[0, 0, 0], [0.9572, 0, 0], [0.9572 * np.cos(angle), 0.9572 * np.sin(angle), 0]])
    z, x = [], []
    for i in range(n_side):
        for j in range(n_side):
            for k in range(n_side):
                centre = np.array([i, j, k]) * spacing + rng.uniform(-0.2, 0.2, 3)
                x.extend(centre + shape @ rotation(rng).T)
                z.extend([8, 1, 1])
    return np.array(z), np.array(x)


def predict(model, z, x, threads=1, forces=True):
    table = model.predict([(np.asarray(z), np.asarray(x, dtype=float))], threads=threads, forces=forces)
    if table.errors[0] is not None:
        raise RuntimeError(table.errors[0])
    return float(table.values[0, 0]), (table.forces[0].copy() if forces else None)


def invariances(model, label, z, x, rng, rotations):
    e0, f0 = predict(model, z, x)
    centre = x.mean(axis=0)
    diagonal = np.linalg.norm(x.max(axis=0) - x.min(axis=0))
    de = df = 0.0
    for _ in range(rotations):
        r = rotation(rng)
        e1, f1 = predict(model, z, (x - centre) @ r.T + centre)
        de, df = max(de, abs(e1 - e0)), max(df, np.abs(f1 - f0 @ r.T).max())
    print(f"{label}: {len(z)} atoms, bounding-box diagonal {diagonal:.1f} A, max|F| {np.abs(f0).max():.3g} eV/A")
    print(f"  {rotations} random rotations: max|dE| {de:.1e} eV ({de / len(z):.1e} eV/atom), max|dF| {df:.1e} eV/A")
    p = np.diag([-1.0, 1.0, 1.0])
    e1, f1 = predict(model, z, x @ p)
    print(f"  reflection x -> -x: |dE| {abs(e1 - e0):.1e} eV, max|dF| {np.abs(f1 - f0 @ p).max():.1e} eV/A")
    for offset in (1e3, 1e4, 1e5):
        e1, f1 = predict(model, z, x + offset * np.array([1.0, 0.7, -0.4]))
        print(f"  translation by {offset:g} A: |dE| {abs(e1 - e0):.1e} eV, max|dF| {np.abs(f1 - f0).max():.1e} eV/A")
    perm = rng.permutation(len(z))
    e1, f1 = predict(model, z[perm], x[perm])
    print(f"  permutation: |dE| {abs(e1 - e0):.1e} eV, max|dF| {np.abs(f1[np.argsort(perm)] - f0).max():.1e} eV/A")
    e2, f2 = predict(model, z, x, threads=2)
    print(f"  1 and 2 threads bitwise equal: energy {e2 == e0}, forces {np.array_equal(f2, f0)}")
    torque = np.linalg.norm(np.cross(x - centre, f0).sum(axis=0))
    print(f"  net force {np.abs(f0.sum(axis=0)).max():.1e} eV/A, net torque |sum (r - c) x F| {torque:.2e} eV")


def finite_differences(model, label, z, x, atoms, steps):
    _, f0 = predict(model, z, x)
    for h in steps:
        worst = 0.0
        for i in atoms:
            for c in range(3):
                xp, xm = x.copy(), x.copy()
                xp[i, c] += h
                xm[i, c] -= h
                fd = -(predict(model, z, xp, forces=False)[0] - predict(model, z, xm, forces=False)[0]) / (2 * h)
                worst = max(worst, abs(fd - f0[i, c]))
        print(f"  {label}, central differences h = {h:g} A: max|F_fd - F| {worst:.1e} eV/A "
              f"({3 * len(atoms)} components, max|F| {np.abs(f0).max():.3g})")


def cutoff_scan(model, z, x):
    """An extra H atom moved away from the O atom (index 2) across 5 A, in steps."""
    d = np.array([1.0, 0.3, 0.2])
    d /= np.linalg.norm(d)
    zz = np.append(z, 1)
    for step, r0, r1 in ((1e-3, 4.9, 5.1), (1e-5, 4.999, 5.001)):
        es, fs = [], []
        for r in np.arange(r0, r1 + step / 2, step):
            e, f = predict(model, zz, np.vstack([x, x[2] + r * d]))
            es.append(e)
            fs.append(f)
        es, fs = np.array(es), np.array(fs)
        slope = np.abs(fs[:, -1] @ d).max() * step
        print(f"  H atom at {r0}-{r1} A from the O atom, step {step:g} A: max|dE| between steps "
              f"{np.abs(np.diff(es)).max():.1e} eV (|F.d| x step: {slope:.1e}), "
              f"max|dF| {np.abs(np.diff(fs, axis=0)).max():.1e} eV/A")


def separation(model, z, x, zw, xw):
    ea, _ = predict(model, z, x)
    width = np.ptp(x[:, 0])
    for gap in (5.5, 10, 50, 500, 1e4):
        e2, _ = predict(model, np.concatenate([z, z]), np.vstack([x, x + [gap + width, 0, 0]]))
        print(f"  two ethanols, closest atoms {gap:g} A apart: E(A+B) - 2 E(A) = {e2 - 2 * ea:+.2e} eV")
    ew, _ = predict(model, zw, xw)
    e2, _ = predict(model, np.concatenate([zw, z]), np.vstack([xw, x + [5e5, 0, 0]]))
    print(f"  {len(zw)}-atom water box and an ethanol 5e5 A away: E(W+A) - E(W) - E(A) = {e2 - ew - ea:+.2e} eV")


def resolution(model, z, x):
    """The energy's step: E = offsets + scale x (pooled output rounded to float32)."""
    e0, _ = predict(model, z, x, forces=False)
    values = {e0}
    rng = np.random.default_rng(3)
    for _ in range(6):
        values.add(predict(model, z, x + 2e-6 * rng.normal(size=x.shape), forces=False)[0])
    steps = np.diff(sorted(values))
    steps = steps[steps > 0]
    smallest = steps.min() if len(steps) else float("nan")
    print(f"  {len(z)} atoms: smallest nonzero difference of E under 2e-6 A jitters {smallest:.1e} eV")


def binary_check(binary, path, z, x, h=3e-3):
    import subprocess
    import tempfile
    from ase import Atoms
    from ase.io import read, write
    frames = [x]
    for i in range(len(z)):
        for c in range(3):
            for sign in (1, -1):
                xx = x.copy()
                xx[i, c] += sign * h
                frames.append(xx)
    with tempfile.TemporaryDirectory() as tmp:
        write(os.path.join(tmp, "fd.xyz"), [Atoms(numbers=z, positions=f) for f in frames], format="extxyz")
        outs = []
        for threads in (1, 2):
            out = os.path.join(tmp, f"out{threads}.xyz")
            subprocess.run([binary, "predict", "-q", "-m", path, os.path.join(tmp, "fd.xyz"), "-o", out,
                            "--forces", f"-j{threads}"], check=True)
            with open(out, "rb") as f:
                outs.append(f.read())
        written = read(os.path.join(tmp, "out1.xyz"), index=":")
        inputs = read(os.path.join(tmp, "fd.xyz"), index=":")
    key = next(k for k in written[0].info if k.startswith("flt_") and not k.endswith("_unit"))
    energies = np.array([a.info[key] for a in written])
    f0 = written[0].arrays["flt_forces"]
    worst = max(abs(-(energies[1 + 2 * k] - energies[2 + 2 * k]) / (2 * h) - f0.flat[k]) for k in range(3 * len(z)))
    table = flt.Model.load(path).predict([(a.numbers, a.positions) for a in inputs], threads=1, forces=True)
    same = np.array_equal(table.values[:, 0], energies) and all(
        np.array_equal(table.forces[k], written[k].arrays["flt_forces"]) for k in range(len(written)))
    print(f"  flt predict --forces: central differences of the written energies (h = {h:g} A) "
          f"max|F_fd - F| {worst:.1e} eV/A; -j 1 and -j 2 files identical: {outs[0] == outs[1]}; "
          f"bitwise Python's: {same}")


def degenerate(model, z, x):
    def row(zz, xx, **options):
        table = model.predict([(np.asarray(zz), np.asarray(xx, dtype=float))], threads=1, forces=True, **options)
        if table.errors[0] is not None:
            return f"error row: {table.errors[0]}"
        return f"E {table.values[0, 0]:.6f}, max|F| {np.abs(table.forces[0]).max():.3g}, finite {bool(np.isfinite(table.forces[0]).all())}"
    print(f"  one H atom: {row([1], [[0, 0, 0]])}")
    for r in (0.74, 20.0):
        print(f"  two H atoms {r} A apart: {row([1, 1], [[0, 0, 0], [r, 0, 0]])}")
    for d in (0.05, 0.0):
        zz, xx = np.append(z, 1), np.vstack([x, x[0] + [d, 0, 0]])
        print(f"  an H atom {d} A from atom 1: {row(zz, xx)}; with min_distance=0: {row(zz, xx, min_distance=0)}")
    for bad in (np.nan, np.inf, 1e300):
        xx = x.copy()
        xx[3, 1] = bad
        print(f"  coordinate {bad}: {row(z, xx)}")
    print(f"  sulfur: {row(np.append(z, 16), np.vstack([x, [3, 3, 3]]))}")
    try:
        from flt.ase import FLTCalculator
        from ase import Atoms
        from ase.calculators.test import numeric_force
        atoms = Atoms(numbers=z, positions=x)
        atoms.calc = FLTCalculator(model, threads=1)
        forces = atoms.get_forces()
        numeric = np.array([[numeric_force(atoms, i, c, d=3e-3) for c in range(3)] for i in range(len(z))])
        e, f = predict(model, z, x)
        print(f"  ASE calculator: bitwise Model.predict: {atoms.get_potential_energy() == e and np.array_equal(forces, f)}; "
              f"max|F - numeric_force(d = 0.003 A)| {np.abs(forces - numeric).max():.1e} eV/A")
    except ImportError as e:
        print(f"  ASE calculator: not checked ({e})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*")
    parser.add_argument("--binary", help="the flt program, for the checks through flt predict")
    parser.add_argument("--water-box", nargs=2, metavar=("N", "FILE"),
                        help="write the box of N^3 waters to FILE (extended XYZ) and stop")
    args = parser.parse_args()
    if args.water_box:
        from ase import Atoms
        from ase.io import write
        zw, xw = water_box(int(args.water_box[0]))
        write(args.water_box[1], Atoms(numbers=zw, positions=xw), format="extxyz")
        print(f"{args.water_box[1]}: {len(zw)} atoms")
        return
    if not args.models:
        parser.error("give at least one model (or --water-box)")
    z, x = ethanol()
    for path in args.models:
        model = flt.Model.load(path)
        rng = np.random.default_rng(1)
        print(f"== {path} (targets {', '.join(model.names)}; predicts {model.names[0]} and its forces)")
        started = time.time()
        invariances(model, "ethanol", z, x, rng, 5)
        for n in (4, 5, 7, 11):
            invariances(model, "water box", *water_box(n), rng, 3 if n < 11 else 2)
        for atoms in (510, 513):
            zw, xw = water_box(9)
            zw, xw = zw[:atoms], xw[:atoms]
            e0, f0 = predict(model, zw, xw)
            perm = rng.permutation(atoms)
            e1, f1 = predict(model, zw[perm], xw[perm])
            print(f"{atoms} atoms permuted: |dE| {abs(e1 - e0):.1e} eV, max|dF| {np.abs(f1[np.argsort(perm)] - f0).max():.1e} eV/A")
        print("forces against the energy:")
        finite_differences(model, "ethanol", z, x, range(9), (1e-2, 3e-3, 1e-3))
        zw, xw = water_box(5)
        finite_differences(model, f"{len(zw)}-atom water box", zw, xw, (0, 1, 200, 374), (1e-2, 3e-3))
        if args.binary:
            binary_check(args.binary, path, z, x)
        print("continuity at the 5 A cutoff (ethanol + one H atom):")
        cutoff_scan(model, z, x)
        print("fragments far apart:")
        separation(model, z, x, *water_box(7))
        print("degenerate inputs:")
        degenerate(model, z, x)
        print("resolution of the energy:")
        for n in (5, 11):
            resolution(model, *water_box(n))
        print(f"({time.time() - started:.0f} s)")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
