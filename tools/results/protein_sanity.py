#!/usr/bin/python3
"""Sanity check of a protein's predicted energy (tools/results/protein_cluster_model.sh).

  protein_sanity.py PROTEIN.pdb PREDICTED.xyz TRAINING_CLUSTERS.xyz

Prints the predicted energy per atom against the training clusters' range, the per-atom
contributions (flt predict --per-atom) by element, and MMFF94's own energy of the protein (RDKit,
no cutoff, dielectric 1), the label the model was trained to reproduce. For MMFF94 the protein is
read as flt reads it (RDKit's PDB reader), with two repairs that bond perception needs and flt's
model does not see (it takes elements and coordinates only): Amber's histidine names HID/HIE/HIP
become HIS so that RDKit's residue templates give the ring its bond orders (the template is the
N-epsilon tautomer: a ring with its hydrogen on N-delta gets its bonds moved to that tautomer
instead of a charged N-delta and a hydrogen on N-epsilon that the file does not hold), and a
carboxylate oxygen to which RDKit gives an implicit hydrogen that the file does not hold becomes O-.
"""
import re
import sys
from collections import defaultdict

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import AllChem

KCAL_PER_MOL_IN_EV = 0.0433641043


def read_extxyz(path):
    """Frames of an extended XYZ file: (comment key=values, {column: array})."""
    frames = []
    with open(path) as f:
        lines = f.read().splitlines()
    i = 0
    while i < len(lines) and lines[i].strip():
        n = int(lines[i])
        comment = lines[i + 1]
        info = dict(re.findall(r'(\S+?)=("[^"]*"|\S+)', comment))
        spec = info["Properties"].split(":")
        rows = [line.split() for line in lines[i + 2:i + 2 + n]]
        columns, c = {}, 0
        for name, kind, width in zip(spec[0::3], spec[1::3], spec[2::3]):
            width = int(width)
            block = [r[c:c + width] for r in rows]
            columns[name] = (np.array(block, dtype=float) if kind == "R" else np.array(block))
            columns[name] = columns[name][:, 0] if width == 1 else columns[name]
            c += width
        frames.append((info, columns))
        i += 2 + n
    return frames


def protein_mmff_energy(pdb_path):
    """MMFF94 energy (eV) of the protein, every pair, and the count of repaired atoms."""
    with open(pdb_path) as f:
        block = re.sub(r"^((?:ATOM  |HETATM).{11})HI[DEP]", r"\1HIS", f.read(), flags=re.M)
    mol = Chem.MolFromPDBBlock(block, sanitize=True, removeHs=False, flavor=0,
                               proximityBonding=True)
    repaired = 0
    rw = Chem.RWMol(mol)
    for nd1 in rw.GetAtoms():
        info = nd1.GetPDBResidueInfo()
        if info.GetResidueName() != "HIS" or info.GetName().strip() != "ND1" or \
                nd1.GetFormalCharge() != 1:
            continue
        ce1 = next(a for a in nd1.GetNeighbors() if a.GetPDBResidueInfo().GetName().strip() == "CE1")
        ne2 = next(a for a in ce1.GetNeighbors() if a.GetPDBResidueInfo().GetName().strip() == "NE2")
        if any(a.GetSymbol() == "H" for a in ne2.GetNeighbors()):
            continue  # both hydrogens present: a real cation (HIP)
        rw.GetBondBetweenAtoms(nd1.GetIdx(), ce1.GetIdx()).SetBondType(Chem.BondType.SINGLE)
        rw.GetBondBetweenAtoms(ce1.GetIdx(), ne2.GetIdx()).SetBondType(Chem.BondType.DOUBLE)
        nd1.SetFormalCharge(0)
        ne2.SetNumExplicitHs(0)
        ne2.SetNoImplicit(True)
        repaired += 1
    mol = rw.GetMol()
    Chem.SanitizeMol(mol)
    for atom in mol.GetAtoms():
        if atom.GetSymbol() == "O" and atom.GetDegree() == 1 and atom.GetNumImplicitHs() == 1:
            atom.SetFormalCharge(-1)
            atom.SetNoImplicit(True)
            repaired += 1
    Chem.SanitizeMol(mol)
    implicit = sum(a.GetTotalNumHs() for a in mol.GetAtoms())
    if implicit:
        sys.exit(f"{pdb_path}: {implicit} hydrogens RDKit implies are not in the file; "
                 "MMFF94 would not see the structure flt predicted")
    props = AllChem.MMFFGetMoleculeProperties(mol)
    if props is None:
        sys.exit(f"{pdb_path}: MMFF94 cannot type every atom")
    ff = AllChem.MMFFGetMoleculeForceField(mol, props, nonBondedThresh=1.0e6,
                                           ignoreInterfragInteractions=False)
    charge = Chem.GetFormalCharge(mol)
    return ff.CalcEnergy() * KCAL_PER_MOL_IN_EV, repaired, charge, mol.GetNumAtoms()


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    pdb_path, predicted_path, train_path = sys.argv[1:]
    RDLogger.DisableLog("rdApp.*")
    info, cols = read_extxyz(predicted_path)[0]
    key = next(k for k in info if k.startswith("flt_") and not k.endswith(("_unit", "_std"))
               and f"{k}_contribution" in cols)
    unit = info.get(f"{key}_contribution_unit", "?")
    energy = float(info[key])
    contributions = cols[f"{key}_contribution"]
    species = cols["species"]
    n = len(species)
    print(f"predicted {key} = {energy:.3f} {unit} for {n} atoms ({energy / n:.4f} {unit}/atom); "
          f"contributions sum to {contributions.sum():.3f} {unit}")

    per_atom = np.array([float(i["energy"]) / len(c["species"]) for i, c in read_extxyz(train_path)])
    print(f"training clusters ({len(per_atom)}): MMFF94 energy per atom "
          f"min {per_atom.min():.4f}, 5% {np.percentile(per_atom, 5):.4f}, "
          f"median {np.median(per_atom):.4f}, 95% {np.percentile(per_atom, 95):.4f}, "
          f"max {per_atom.max():.4f} eV/atom")

    by_element = defaultdict(list)
    for s, c in zip(species, contributions):
        by_element[s].append(c)
    print(f"| element | atoms | sum [{unit}] | mean [{unit}/atom] | std | min | max |")
    print("|---|---|---|---|---|---|---|")
    for s in sorted(by_element, key=lambda e: -len(by_element[e])):
        v = np.array(by_element[s])
        print(f"| {s} | {len(v)} | {v.sum():.3f} | {v.mean():.4f} | {v.std():.4f} | "
              f"{v.min():.4f} | {v.max():.4f} |")

    mmff, repaired, charge, atoms = protein_mmff_energy(pdb_path)
    print(f"MMFF94 (RDKit) energy of the protein: {mmff:.3f} eV ({mmff / atoms:.4f} eV/atom; "
          f"{atoms} atoms, {repaired} histidines and carboxylates repaired, net formal charge {charge:+d}); "
          f"predicted - MMFF94 = {energy - mmff:.3f} eV ({(energy - mmff) / atoms:.4f} eV/atom)")


if __name__ == "__main__":
    main()
