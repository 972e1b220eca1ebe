"""EMT Cu/Pt clusters of two sizes (13-atom icosahedra, 38-atom truncated octahedra), a sixth of
the atoms Pt, rattled (0.12 A), with ASE's EMT energies (eV) and forces (eV/A), as extended XYZ:
a data set where one three-body reference must serve structures of different sizes.
    /usr/bin/python3 tools/datasets/emt_clusters.py OUT.xyz [--frames 240] [--seed 0]
"""
import argparse

import numpy as np
from ase.calculators.emt import EMT
from ase.cluster import Icosahedron, Octahedron
from ase.io import write

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--frames", type=int, default=240)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
rng = np.random.default_rng(args.seed)
frames = []
for k in range(args.frames):
    a = (Icosahedron("Cu", 2) if k % 2 == 0 else Octahedron("Cu", 4, 1)).copy()
    z = a.get_atomic_numbers()
    z[rng.choice(len(a), size=max(1, len(a) // 6), replace=False)] = 78
    a.set_atomic_numbers(z)
    a.rattle(stdev=0.12, seed=int(rng.integers(1 << 30)))
    a.center()
    a.pbc = False
    a.set_cell([0, 0, 0])
    a.calc = EMT()
    energy, forces = a.get_potential_energy(), a.get_forces()
    a.calc = None
    a.info["energy"] = energy
    a.arrays["forces"] = forces
    frames.append(a)
write(args.out, frames, format="extxyz")
print(f"{len(frames)} frames of {sorted(set(len(a) for a in frames))} atoms -> {args.out}")
