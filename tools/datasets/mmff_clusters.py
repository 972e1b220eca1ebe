#!/usr/bin/python3
"""Long-range benchmark data: clusters of QM9 molecules at liquid density, labelled with MMFF94.

Each cluster is a sphere of QM9 molecules (SMILES from the bundled QM9 index, embedded with
RDKit's ETKDGv3 and MMFF94-optimised once each), placed one after another with a uniformly random
orientation and position inside the sphere, at a number density of about --density atoms per
cubic Angstrom (0.1 is an organic liquid), with no two atoms of different molecules closer than
--min-distance Angstrom. The label is RDKit's MMFF94 total energy of the whole cluster with every
inter-fragment term switched on (van der Waals and electrostatics between molecules, dielectric
constant 1, no distance cutoff), and the forces are minus its gradient. Written as ASE extended XYZ
(energy in eV, forces in eV/A; `Properties=species:S:1:pos:R:3:forces:R:3`, and with
--formal-charges a fourth column, `formal_charges:I:1`, each atom's formal charge as RDKit's SMILES
parser assigns it: +1/-1 on the charged atom of an ion, 0 elsewhere).

The inter-fragment electrostatics decay as 1/r between molecular dipoles' partial charges, so a
model must see beyond a short cutoff to get a large cluster's energy right: train on small
clusters, test on large ones (size extrapolation).

Extra molecules (--extra-smiles FILE: one SMILES per line, or a CSV with a smiles column) join the
pool, for chemistry QM9 lacks (sulfur, the ions of a protein's side chains; the protein fragments
of datasets/mmff-clusters/protein_fragments.smi). A SMILES with several fragments (an ion pair such
as "C[NH3+].CC(=O)[O-]") is one rigid entry, optimised with its inter-fragment terms on, so that
charged species enter the clusters as neutral pairs. With --separate-ions the fragments of such an
entry are instead embedded and optimised one by one and placed as separate molecules, each with its
own random position and orientation: a drawn entry brings all its ions, so every cluster stays
neutral, while its charges lie as far apart as the packing puts them (the ionic benchmark,
datasets/mmff-clusters/ion_pairs.smi: Coulomb energies between net charges reach across the
whole cluster). --extra-fraction sets the share of the drawn entries that come from the extras
(default: uniform over the whole pool).

Reproducible: the same arguments give the same file byte for byte (RDKit 2022.09, NumPy seeded
generator). The benchmark's two files (datasets/README.md):
  tools/datasets/mmff_clusters.py --out train.xyz --count 1000 --min-atoms 50 --max-atoms 500 --seed 1
  tools/datasets/mmff_clusters.py --out test.xyz --count 40 --min-atoms 500 --max-atoms 5000 --seed 2
"""

import argparse
import csv
import gzip
import math
import os
import sys
import tempfile
import time

import numpy as np
from scipy.spatial import cKDTree
from rdkit import Chem, RDLogger
from rdkit.Chem import AllChem

KCAL_PER_MOL_IN_EV = 0.0433641043  # 1 kcal/mol in eV (CODATA 2018)
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_INDEX = os.path.join(HERE, "..", "..", "datasets", "qm9", "qm9_subset_index.csv.gz")


def read_smiles(index_path):
    """SMILES of the QM9 molecules, in index order."""
    opener = gzip.open if index_path.endswith(".gz") else open
    with opener(index_path, "rt", newline="") as f:
        return [row["smiles"] for row in csv.DictReader(f) if row["smiles"]]


def read_extra_smiles(path):
    """(SMILES, "FILE:LINE") of the extra molecules: a CSV whose header has a smiles column, or one
    SMILES per line (anything after the first whitespace, blank lines and # comments ignored)."""
    with open(path, newline="") as f:
        lines = f.read().splitlines()
    content = [(n, line) for n, line in enumerate(lines, 1)
               if line.strip() and not line.lstrip().startswith("#")]
    if not content:
        raise ValueError(f"{path}: no SMILES")
    first = content[0][1]
    header = [h.strip().lower() for h in next(csv.reader([first]))]
    if "smiles" in header:  # a CSV header (a one-column CSV has no comma)
        col = header.index("smiles")
        entries = []
        for n, line in content[1:]:
            row = next(csv.reader([line]))
            if col >= len(row) or not row[col].strip():
                raise ValueError(f"{path}:{n}: no value in the smiles column")
            entries.append((row[col].strip(), f"{path}:{n}"))
        return entries
    return [(line.split()[0], f"{path}:{n}") for n, line in content]


def embed_optimised(mol, seed, where, smi):
    """mol with hydrogens, embedded (ETKDGv3, seed) and MMFF94-optimised with its inter-fragment
    terms on (the ions of a pair settle into contact), as (molecule, centred coordinates)."""
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise ValueError(f"{where}: {smi}: no 3-D embedding (ETKDGv3)")
    if not AllChem.MMFFHasAllMoleculeParams(mol):
        raise ValueError(f"{where}: {smi}: MMFF94 has no parameters for some atom")
    AllChem.MMFFOptimizeMolecule(mol, maxIters=2000, ignoreInterfragInteractions=False)
    xyz = mol.GetConformer().GetPositions()
    return mol, xyz - xyz.mean(axis=0)


def build_extras(entries, log, separate_ions=False):
    """The extra entries in file order, each a list of rigid bodies (molecule, centred MMFF94
    coordinates): one body per SMILES, or with separate_ions one per fragment. A SMILES that RDKit
    cannot parse, embed or parametrise with MMFF94 stops the run, naming its file and line."""
    extras = []
    for k, (smi, where) in enumerate(entries):
        mol = Chem.MolFromSmiles(smi)
        if mol is None:
            raise ValueError(f"{where}: RDKit cannot parse the SMILES {smi!r}")
        if separate_ions:
            fragments = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=True)
            extras.append([embed_optimised(f, 1000 * (k + 1) + i, where, smi)
                           for i, f in enumerate(fragments)])
        else:
            extras.append([embed_optimised(mol, k + 1, where, smi)])
    charge = sum(Chem.GetFormalCharge(mol) for bodies in extras for mol, _ in bodies)
    log(f"extras: {len(extras)} entries ({sum(len(b) for b in extras)} molecules) embedded and "
        f"MMFF94-optimised (formal charges sum to {charge})")
    return extras


def pool_picker(qm9_count, extra_count, extra_fraction):
    """Draws a pool index: uniform over the whole pool, or from the extras (appended after the QM9
    molecules) with probability extra_fraction."""
    if extra_fraction is None or extra_count == 0:
        return lambda rng: int(rng.integers(qm9_count + extra_count))

    def pick(rng):
        if rng.uniform() < extra_fraction:
            return qm9_count + int(rng.integers(extra_count))
        return int(rng.integers(qm9_count))
    return pick


def build_pool(smiles, size, rng, log):
    """`size` distinct QM9 molecules with a 3-D MMFF94 geometry (atoms centred at the origin), each
    an entry of one rigid body (molecule, coordinates)."""
    pool = []
    order = rng.permutation(len(smiles))
    params = AllChem.ETKDGv3()
    for i in order:
        if len(pool) == size:
            break
        mol = Chem.MolFromSmiles(smiles[i])
        if mol is None:
            continue
        mol = Chem.AddHs(mol)
        params.randomSeed = int(i) + 1
        if AllChem.EmbedMolecule(mol, params) != 0:
            continue
        if not AllChem.MMFFHasAllMoleculeParams(mol):
            continue
        AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
        xyz = mol.GetConformer().GetPositions()
        pool.append([(mol, xyz - xyz.mean(axis=0))])
    if len(pool) < size:
        sys.exit(f"mmff_clusters: only {len(pool)} of {size} molecules could be embedded")
    log(f"pool: {len(pool)} QM9 molecules embedded (ETKDGv3) and MMFF94-optimised")
    return pool


def random_rotation(rng):
    """Uniformly random rotation matrix (unit quaternion from four normals)."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def small_rotation(rng, sigma):
    """Rotation by a normal(0, sigma) angle (radians) about a uniformly random axis (Rodrigues)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = rng.normal(scale=sigma)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def clashing_molecules(points, owner, min_distance):
    """Indices of the molecules with an atom closer than min_distance to another molecule's."""
    pairs = cKDTree(points).query_pairs(min_distance, output_type="ndarray")
    if len(pairs) == 0:
        return np.empty(0, dtype=np.int64)
    a, b = owner[pairs[:, 0]], owner[pairs[:, 1]]
    other = a != b
    return np.unique(np.concatenate([a[other], b[other]]))


def make_cluster(pool, target_atoms, density, min_distance, rng, max_repair_sweeps=40, pick=None):
    """Entries drawn from the pool until about target_atoms atoms, packed in a sphere. An entry is
    a list of rigid bodies (one molecule, or the separate ions of an ion pair), each placed and
    moved on its own.

    Random sequential insertion of rigid molecules jams far below liquid density (about 0.04
    atoms/A^3 for QM9 molecules at a 2 A contact distance), so the molecules are first inserted
    without overlaps into a sphere of twice the target radius, then compressed: each step scales
    every centre towards the origin so that the sphere shrinks by 0.25 A, and repairs the overlaps it creates by random rigid moves
    (a small rotation about the molecule's centre and a small shift) of the molecules involved; a
    step that cannot be repaired is retried at half the size. The packing stops at the target
    density or when steps of 0.02 A cannot be repaired (then the last overlap-free configuration is
    kept and its density, atoms per volume of the sphere of the molecular centres, reported).
    pick(rng) draws a pool index (default: uniform).
    """
    if pick is None:
        pick = pool_picker(len(pool), 0, None)
    bodies, n = [], 0
    while n < target_atoms:
        for body in pool[pick(rng)]:
            bodies.append(body)
            n += body[0].GetNumAtoms()
    target_radius = (3.0 * n / (4.0 * math.pi * density)) ** (1.0 / 3.0)
    local = [xyz @ random_rotation(rng).T for _, xyz in bodies]
    owner = np.concatenate([np.full(len(x), i) for i, x in enumerate(local)])
    start = np.cumsum([0] + [len(x) for x in local])

    # Insertion at low density (sphere of radius 2 x target: 1/8 of the target density).
    radius = 2.0 * target_radius
    centres = np.zeros((len(local), 3))
    placed_points = np.empty((0, 3))
    for i, x in enumerate(local):
        while True:
            c = rng.uniform(-radius, radius, size=3)
            if np.dot(c, c) > radius * radius:
                continue
            if len(placed_points) == 0 or cKDTree(placed_points).query(x + c)[0].min() >= min_distance:
                centres[i] = c
                placed_points = np.vstack([placed_points, x + c])
                break

    def points_of(centres, local):
        return np.concatenate([x + c for x, c in zip(local, centres)])

    scale, shrink = 1.0, 0.25  # shrink: Angstrom per compression step, halved when stuck
    while scale * radius > target_radius and shrink >= 0.02:
        step = max(1.0 - shrink / (scale * radius), target_radius / (scale * radius))
        trial_centres = centres * step
        trial_local = [x.copy() for x in local]
        repaired = False
        for _ in range(max_repair_sweeps):
            points = points_of(trial_centres, trial_local)
            bad = clashing_molecules(points, owner, min_distance)
            if len(bad) == 0:
                repaired = True
                break
            tree = cKDTree(points)
            for i in bad:
                for _ in range(20):
                    x = trial_local[i] @ small_rotation(rng, 0.3).T
                    c = trial_centres[i] + rng.normal(scale=0.2, size=3)
                    near = tree.query_ball_point(x + c, min_distance)
                    if all(owner[j] == i for hits in near for j in hits):
                        trial_local[i], trial_centres[i] = x, c
                        break
        if repaired:
            centres, local = trial_centres, trial_local
            scale *= step
        else:
            shrink *= 0.5
    points = points_of(centres, local)
    extent = float(np.max(np.linalg.norm(points, axis=1)))
    placed = [(mol, points[start[i]:start[i + 1]]) for i, (mol, _) in enumerate(bodies)]
    return placed, max(scale * radius, 1e-9), extent


def combined_molecule(placed):
    """The cluster as one RDKit molecule with its coordinates, and the coordinates (N x 3)."""
    combined = placed[0][0]
    for mol, _ in placed[1:]:
        combined = Chem.CombineMols(combined, mol)
    combined = Chem.Mol(combined)
    Chem.SanitizeMol(combined)  # ring information for the MMFF atom typing
    conf = Chem.Conformer(combined.GetNumAtoms())
    xyz = np.concatenate([pts for _, pts in placed])
    for i, p in enumerate(xyz):
        conf.SetAtomPosition(i, p.tolist())
    combined.RemoveAllConformers()
    combined.AddConformer(conf, assignId=True)
    return combined, xyz


def cluster_force_field(placed):
    """RDKit MMFF94 force field of the combined cluster (every pair, inter-fragment terms on)."""
    combined, xyz = combined_molecule(placed)
    props = AllChem.MMFFGetMoleculeProperties(combined)
    ff = AllChem.MMFFGetMoleculeForceField(combined, props, nonBondedThresh=1.0e6,
                                           ignoreInterfragInteractions=False)
    symbols = [a.GetSymbol() for a in combined.GetAtoms()]
    # The force field keeps a reference to the molecule's conformer: return both.
    return ff, combined, symbols, xyz


def cluster_energy(placed):
    """MMFF94 energy (eV) and forces (eV/A) of the cluster: E and F = -dE/dr; also each atom's
    formal charge."""
    ff, combined, symbols, xyz = cluster_force_field(placed)
    energy = ff.CalcEnergy() * KCAL_PER_MOL_IN_EV
    forces = -np.array(ff.CalcGrad()).reshape(-1, 3) * KCAL_PER_MOL_IN_EV
    charges = [a.GetFormalCharge() for a in combined.GetAtoms()]
    return symbols, xyz, energy, forces, charges


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="extended XYZ file to write")
    parser.add_argument("--count", type=int, required=True, help="clusters to generate")
    parser.add_argument("--min-atoms", type=int, default=50)
    parser.add_argument("--max-atoms", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--density", type=float, default=0.1, help="atoms per cubic Angstrom")
    parser.add_argument("--min-distance", type=float, default=2.0,
                        help="smallest distance between atoms of different molecules (Angstrom)")
    parser.add_argument("--pool", type=int, default=400, help="distinct QM9 molecules used")
    parser.add_argument("--index", default=DEFAULT_INDEX, help="QM9 index CSV with a smiles column")
    parser.add_argument("--extra-smiles", metavar="FILE",
                        help="extra molecules for the pool: one SMILES per line, or a CSV with a "
                             "smiles column (datasets/mmff-clusters/protein_fragments.smi)")
    parser.add_argument("--extra-fraction", type=float, default=None,
                        help="share of the drawn entries taken from the extras "
                             "(default: uniform over QM9 and extra molecules)")
    parser.add_argument("--separate-ions", action="store_true",
                        help="place the fragments (ions) of a multi-fragment extra entry as separate "
                             "molecules (datasets/mmff-clusters/ion_pairs.smi)")
    parser.add_argument("--formal-charges", action="store_true",
                        help="add a formal_charges:I:1 column (each atom's formal charge)")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args()
    if not 0 < args.min_atoms <= args.max_atoms or args.count < 1:
        parser.error("need 0 < --min-atoms <= --max-atoms and --count >= 1")
    if args.extra_fraction is not None and (args.extra_smiles is None or
                                            not 0.0 <= args.extra_fraction <= 1.0):
        parser.error("--extra-fraction needs --extra-smiles and a value in [0, 1]")
    if args.separate_ions and args.extra_smiles is None:
        parser.error("--separate-ions needs --extra-smiles")
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    RDLogger.DisableLog("rdApp.*")

    rng = np.random.default_rng(args.seed)
    pool = build_pool(read_smiles(args.index), args.pool, rng, log)
    extras = []
    if args.extra_smiles:
        try:
            extras = build_extras(read_extra_smiles(args.extra_smiles), log, args.separate_ions)
        except (OSError, ValueError) as e:
            sys.exit(f"mmff_clusters: {e}")
    pick = pool_picker(len(pool), len(extras), args.extra_fraction)
    pool = pool + extras
    out_dir = os.path.dirname(os.path.abspath(args.out))
    fd, tmp = tempfile.mkstemp(prefix=".mmff_clusters.", dir=out_dir)
    start = time.time()
    try:
        with os.fdopen(fd, "w") as out:
            for c in range(args.count):
                # Log-uniform sizes: as many clusters per factor of two in size.
                target = int(round(math.exp(rng.uniform(math.log(args.min_atoms),
                                                        math.log(args.max_atoms)))))
                placed, radius, extent = make_cluster(pool, target, args.density,
                                                      args.min_distance, rng, pick=pick)
                symbols, xyz, energy, forces, charges = cluster_energy(placed)
                n = len(symbols)
                achieved = n / (4.0 / 3.0 * math.pi * radius ** 3)
                out.write(f"{n}\n")
                columns = "species:S:1:pos:R:3:forces:R:3"
                if args.formal_charges:
                    columns += ":formal_charges:I:1"
                out.write(f"Properties={columns} "
                          f"energy={energy:.8f} cluster={c} molecules={len(placed)} "
                          f"radius={radius:.3f} extent={extent:.3f} density={achieved:.4f} seed={args.seed} "
                          'source="MMFF94 (RDKit) with inter-fragment terms, energy eV, forces eV/A"\n')
                for s, p, f, q in zip(symbols, xyz, forces, charges):
                    line = (f"{s} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f} "
                            f"{f[0]:.8f} {f[1]:.8f} {f[2]:.8f}")
                    out.write(f"{line} {q}\n" if args.formal_charges else f"{line}\n")
                if (c + 1) % max(1, args.count // 20) == 0 or c + 1 == args.count:
                    elapsed = time.time() - start
                    log(f"{c + 1}/{args.count} clusters ({n} atoms, {len(placed)} molecules, "
                        f"density {achieved:.3f}/A^3, E = {energy:.2f} eV), {elapsed:.0f} s, "
                        f"ETA {elapsed / (c + 1) * (args.count - c - 1):.0f} s")
        mask = os.umask(0)  # mkstemp creates 0600; give the file the user's usual mode
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, args.out)
    except BaseException:
        os.unlink(tmp)
        raise


if __name__ == "__main__":
    main()
