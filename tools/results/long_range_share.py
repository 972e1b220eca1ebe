#!/usr/bin/python3
"""How much of the long-range benchmark's label is long-range: the MMFF94 energy of clusters of
tools/datasets/mmff_clusters.py split into the electrostatic part and the part of every
non-bonded pair beyond a distance (the near_far model's receptive field is blocks x cutoff).

Regenerates the first --count clusters of a benchmark file from its seed (the generator is
deterministic; each regenerated cluster's energy is checked against the file's label), then, per
cluster, with RDKit's MMFF94 (every pair, dielectric 1, as the generator):
  E        the label (all terms);
  E_ele    E minus the energy with the electrostatic term switched off (SetMMFFEleTerm(False));
  E_>r     E minus the energy with non-bonded atom pairs beyond r Angstrom dropped
           (nonBondedThresh=r), for each r of --beyond. Cutting atom pairs cuts molecules' charge
           distributions apart (the cut sum is not neutral), so this overstates the long range;
  X_>r     the inter-molecular electrostatics between molecules whose closest atoms are more than
           r Angstrom apart, from MMFF94's partial charges and its buffered Coulomb law
           332.0716 q_i q_j / (r_ij + 0.05) kcal/mol (dielectric 1): what a model that sees r
           Angstrom around each atom cannot see of the electrostatics, whole molecules at a time
           (van der Waals beyond 10 A is negligible next to it).
Prints one line per cluster and the mean and standard deviation over clusters per atom
(meV/atom), next to which the benchmark's MAE per atom reads directly.

  tools/results/long_range_share.py --file runs/long-range/test_30.xyz --seed 2 --count 6 \\
      --min-atoms 500 --max-atoms 5000
--ions regenerates the ionic benchmark's clusters (tools/results/long_range.sh --ions: the ion
pairs of datasets/mmff-clusters/ion_pairs.smi as separate ions, 15% of the drawn entries).
--predictions scores models' flt eval predictions of the same file on the analysed clusters: MAE
per atom and the correlation of each cluster's signed error per atom with X_>r (and with its
size). A model that misses the long range has errors that follow X_>r; one that has it, errors
that do not.
"""

import argparse
import csv
import math
import os
import sys

import numpy as np
from rdkit import RDLogger
from rdkit.Chem import AllChem

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "datasets"))
import mmff_clusters as gen  # noqa: E402


def labels_of(path):
    """(atoms, energy eV) of each record of an extended XYZ file written by the generator."""
    out = []
    with open(path) as f:
        while True:
            line = f.readline()
            if not line.strip():
                break
            n = int(line)
            header = f.readline()
            energy = float(header.split("energy=")[1].split()[0])
            for _ in range(n):
                f.readline()
            out.append((n, energy))
    return out


def energy(placed, ele=True, thresh=1.0e6):
    """MMFF94 energy (eV) of the combined cluster, as the generator computes it, with options."""
    combined, _ = gen.combined_molecule(placed)
    props = AllChem.MMFFGetMoleculeProperties(combined)
    props.SetMMFFEleTerm(ele)
    ff = AllChem.MMFFGetMoleculeForceField(combined, props, nonBondedThresh=thresh,
                                           ignoreInterfragInteractions=False)
    return ff.CalcEnergy() * gen.KCAL_PER_MOL_IN_EV


def far_electrostatics(placed, beyond):
    """X_>r (eV) for each r: MMFF94 electrostatics between molecules more than r apart."""
    combined, xyz = gen.combined_molecule(placed)
    props = AllChem.MMFFGetMoleculeProperties(combined)
    q = np.array([props.GetMMFFPartialCharge(i) for i in range(combined.GetNumAtoms())])
    start = np.cumsum([0] + [len(p) for _, p in placed])
    out = np.zeros(len(beyond))
    for a in range(len(placed)):
        for b in range(a + 1, len(placed)):
            xa, xb = xyz[start[a]:start[a + 1]], xyz[start[b]:start[b + 1]]
            d = np.linalg.norm(xa[:, None, :] - xb[None, :, :], axis=2)
            e = 332.0716 * np.sum(np.outer(q[start[a]:start[a + 1]], q[start[b]:start[b + 1]]) / (d + 0.05))
            closest = d.min()
            for k, r in enumerate(beyond):
                if closest > r:
                    out[k] += e
    return out * gen.KCAL_PER_MOL_IN_EV


def signed_errors(path, count):
    """Prediction - label (eV) of the first `count` records of a flt eval --predictions file
    (columns id = FILE:RECORD, <target>_true [eV], <target>_pred [eV]), in record order."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    t = next(i for i, h in enumerate(header) if "_true" in h)
    p = next(i for i, h in enumerate(header) if "_pred" in h)
    by_record = {int(r[0].rsplit(":", 1)[1]): float(r[p]) - float(r[t]) for r in rows[1:]}
    missing = [c + 1 for c in range(count) if c + 1 not in by_record]
    if missing:
        sys.exit(f"{path}: no prediction for record(s) {missing[:5]}")
    return np.array([by_record[c + 1] for c in range(count)])


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", required=True, help="the benchmark file the clusters must match")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--count", type=int, default=6, help="first clusters of the file to analyse")
    parser.add_argument("--min-atoms", type=int, required=True)
    parser.add_argument("--max-atoms", type=int, required=True)
    parser.add_argument("--beyond", default="5,10", help="distances r (Angstrom) for E_>r")
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--min-distance", type=float, default=2.0)
    parser.add_argument("--pool", type=int, default=400)
    parser.add_argument("--ions", action="store_true", help="the ionic benchmark's clusters")
    parser.add_argument("--predictions", nargs="+", default=[], metavar="CSV",
                        help="flt eval --predictions files of --file: for each, the MAE per atom "
                             "over the analysed clusters and the correlation of the signed error "
                             "per atom with X_>r (does the model's error follow the long range?)")
    args = parser.parse_args()
    RDLogger.DisableLog("rdApp.*")
    beyond = [float(r) for r in args.beyond.split(",")]
    labels = labels_of(args.file)
    if args.count > len(labels):
        sys.exit(f"{args.file}: only {len(labels)} records")
    rng = np.random.default_rng(args.seed)
    pool = gen.build_pool(gen.read_smiles(gen.DEFAULT_INDEX), args.pool, rng, lambda m: None)
    extras = []
    if args.ions:
        pairs = os.path.join(os.path.dirname(gen.DEFAULT_INDEX), "..", "mmff-clusters", "ion_pairs.smi")
        extras = gen.build_extras(gen.read_extra_smiles(pairs), lambda m: None, separate_ions=True)
    pick = gen.pool_picker(len(pool), len(extras), 0.15 if args.ions else None)
    pool = pool + extras
    rows = []
    print("cluster,atoms,E_eV,E_ele_meV_per_atom," +
          ",".join(f"E_beyond_{r:g}A_meV_per_atom" for r in beyond) + "," +
          ",".join(f"X_beyond_{r:g}A_meV_per_atom" for r in beyond), flush=True)
    for c in range(args.count):
        target = int(round(math.exp(rng.uniform(math.log(args.min_atoms), math.log(args.max_atoms)))))
        placed, _, _ = gen.make_cluster(pool, target, args.density, args.min_distance, rng, pick=pick)
        n = sum(len(p) for _, p in placed)
        e = energy(placed)
        want_n, want_e = labels[c]
        if n != want_n or abs(e - want_e) > 1e-5 * max(1.0, abs(want_e)):
            sys.exit(f"{args.file}: record {c + 1}: regenerated cluster has {n} atoms and E = {e:.6f} eV, "
                     f"the file {want_n} and {want_e:.6f} eV (other generator arguments or versions?)")
        ele = e - energy(placed, ele=False)
        far = [e - energy(placed, thresh=r) for r in beyond]
        xfar = far_electrostatics(placed, beyond)
        row = [ele / n * 1000] + [x / n * 1000 for x in far] + [x / n * 1000 for x in xfar]
        rows.append(row)
        print(f"{c},{n},{e:.4f}," + ",".join(f"{x:.3f}" for x in row), flush=True)
    a = np.array(rows)
    atoms = np.array([labels[c][0] for c in range(args.count)])
    for path in args.predictions:
        err = signed_errors(path, args.count) / atoms * 1000
        corr = ", ".join(f"corr(error, X_>{r:g}A) {np.corrcoef(err, a[:, 1 + len(beyond) + k])[0, 1]:+.2f}"
                         for k, r in enumerate(beyond))
        print(f"# {path}: MAE {np.abs(err).mean():.3f} meV/atom, mean signed error {err.mean():+.3f}; {corr}, "
              f"corr(error, atoms) {np.corrcoef(err, atoms)[0, 1]:+.2f}")
    names = ["E_ele"] + [f"E_>{r:g}A" for r in beyond] + [f"X_>{r:g}A" for r in beyond]
    for j, name in enumerate(names):
        print(f"# {name}: mean {a[:, j].mean():.3f}, std {a[:, j].std():.3f}, "
              f"mean |.| {np.abs(a[:, j]).mean():.3f} meV/atom over {len(rows)} clusters")


if __name__ == "__main__":
    main()
