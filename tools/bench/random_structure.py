#!/usr/bin/python3
"""One structure of N atoms for the large-structure benchmark (tools/bench/run_large_structures.sh).

Atoms uniformly random in a cube of volume N / density (0.1 atoms per cubic Angstrom by default,
about the atom density of liquid water or an organic liquid, so about 52 neighbours within 5 A),
elements uniformly among H, C, N, O, no two atoms closer than --min-distance (atoms too close to
another are drawn again until none is; flt's readers refuse pairs closer than 0.1 A), written in
the Morton order of 2 A cells (nearby atoms are nearby in the file, as in a PDB file of a protein
or a cluster generator's output) as extended XYZ, or with --order drawn in the order drawn (no
locality: the same atoms shuffled). The same --seed gives the same atoms.

  tools/bench/random_structure.py --atoms 100000 --out big.xyz [--density 0.1] [--seed 7]
                                  [--min-distance 0.7] [--order morton|drawn]

Needs NumPy and SciPy (Debian: python3-numpy, python3-scipy).
"""
import argparse
import sys

import numpy as np
from scipy.spatial import cKDTree

ELEMENTS = np.array(["H", "C", "N", "O"])


def morton_order(positions, cell):
    cells = np.floor((positions - positions.min(axis=0)) / cell).astype(np.uint64)
    code = np.zeros(len(positions), dtype=np.uint64)
    for bit in range(21):
        for axis in range(3):
            code |= ((cells[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(3 * bit + axis)
    return np.argsort(code, kind="stable")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--atoms", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--density", type=float, default=0.1, help="atoms per cubic Angstrom")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--min-distance", type=float, default=0.7, help="Angstrom")
    parser.add_argument("--order", choices=["morton", "drawn"], default="morton",
                        help="atom order in the file: Morton order of 2 A cells, or as drawn")
    args = parser.parse_args()
    if args.atoms < 1 or args.density <= 0 or args.min_distance < 0:
        sys.exit("random_structure.py: --atoms >= 1, --density > 0 and --min-distance >= 0 needed")
    rng = np.random.default_rng(args.seed)
    side = (args.atoms / args.density) ** (1.0 / 3.0)
    positions = rng.uniform(0.0, side, size=(args.atoms, 3))
    for _ in range(1000):
        close = cKDTree(positions).query_pairs(args.min_distance, output_type="ndarray")
        if len(close) == 0:
            break
        redraw = np.unique(close[:, 1])
        positions[redraw] = rng.uniform(0.0, side, size=(len(redraw), 3))
    else:
        sys.exit("random_structure.py: could not place the atoms at this density and minimum distance")
    species = ELEMENTS[rng.integers(0, len(ELEMENTS), size=args.atoms)]
    if args.order == "morton":
        order = morton_order(positions, 2.0)
        positions, species = positions[order], species[order]
    with open(args.out, "w") as out:
        out.write(f"{args.atoms}\n")
        out.write(f'Properties=species:S:1:pos:R:3 comment="random {args.atoms} atoms, '
                  f'{args.density} per A^3, seed {args.seed}, {args.order} order"\n')
        lines = np.char.add(np.char.add(species, " "), np.array(
            [f"{x:.5f} {y:.5f} {z:.5f}" for x, y, z in positions]))
        out.write("\n".join(lines.tolist()))
        out.write("\n")


if __name__ == "__main__":
    main()
