"""The long-range benchmark generator (tools/datasets/mmff_clusters.py): reproducible files, forces
that are minus the gradient of the energy, no overlaps, and a file flt reads with its units."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

SOURCE = os.environ.get("FLT_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(SOURCE, "tools", "datasets", "mmff_clusters.py")


def load_generator():
    spec = importlib.util.spec_from_file_location("mmff_clusters", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generate(path, seed=1):
    subprocess.run([sys.executable, SCRIPT, "--out", str(path), "--count", "3", "--min-atoms", "40",
                    "--max-atoms", "90", "--pool", "30", "--seed", str(seed), "-q"], check=True)
    return path.read_bytes()


def read_frames(text):
    lines, frames, i = text.decode().splitlines(), [], 0
    while i < len(lines):
        n = int(lines[i])
        comment = lines[i + 1]
        atoms = [line.split() for line in lines[i + 2:i + 2 + n]]
        frames.append((comment, atoms))
        i += 2 + n
    return frames


def test_same_seed_same_file_other_seed_other_file(tmp_path):
    first = generate(tmp_path / "a.xyz")
    assert generate(tmp_path / "b.xyz") == first
    assert generate(tmp_path / "c.xyz", seed=2) != first
    frames = read_frames(first)
    assert len(frames) == 3
    for comment, atoms in frames:
        assert comment.startswith("Properties=species:S:1:pos:R:3:forces:R:3 energy=")
        assert 40 <= len(atoms) <= 90 + 29  # the last molecule may overshoot by one QM9 molecule


def test_forces_are_minus_the_energy_gradient_and_molecules_do_not_overlap():
    gen = load_generator()
    rng = np.random.default_rng(7)
    pool = gen.build_pool(gen.read_smiles(gen.DEFAULT_INDEX), 20, rng, lambda msg: None)
    placed, radius, extent = gen.make_cluster(pool, 80, 0.1, 2.0, rng)
    assert extent >= radius > 0
    # Atoms of different molecules are at least 2 A apart.
    owner = np.concatenate([np.full(len(p), i) for i, (_, p) in enumerate(placed)])
    xyz = np.concatenate([p for _, p in placed])
    d = np.linalg.norm(xyz[:, None, :] - xyz[None, :, :], axis=-1)
    assert d[owner[:, None] != owner[None, :]].min() >= 2.0
    symbols, positions, energy, forces, charges = gen.cluster_energy(placed)
    assert len(symbols) == len(xyz) == len(charges) and np.array_equal(positions, xyz)
    ff, _, _, _ = gen.cluster_force_field(placed)
    flat = xyz.ravel().tolist()
    h = 1e-4
    for k in (0, 7, 3 * len(xyz) - 1):
        plus, minus = list(flat), list(flat)
        plus[k] += h
        minus[k] -= h
        de = (ff.CalcEnergy(plus) - ff.CalcEnergy(minus)) / (2 * h) * gen.KCAL_PER_MOL_IN_EV
        assert forces.ravel()[k] == pytest.approx(-de, rel=1e-4, abs=1e-6)
    # Inter-fragment terms are on: the cluster's energy differs from the sum of its molecules'.
    separate = sum(gen.cluster_energy([(mol, pts)])[2] for mol, pts in placed)
    assert abs(energy - separate) > 1e-3


@pytest.mark.skipif("FLT_EXE" not in os.environ, reason="needs the flt program (FLT_EXE)")
def test_flt_reads_the_clusters_as_ase_extended_xyz(tmp_path):
    generate(tmp_path / "clusters.xyz")
    out = subprocess.run([os.environ["FLT_EXE"], "convert", str(tmp_path / "clusters.xyz"),
                          "--stats"], check=True, capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert "energy" in text and "eV" in text


def generate_with_extras(path, extras, fraction=None, seed=1):
    args = [sys.executable, SCRIPT, "--out", str(path), "--count", "3", "--min-atoms", "40",
            "--max-atoms", "90", "--pool", "30", "--seed", str(seed), "--extra-smiles", str(extras),
            "-q"]
    if fraction is not None:
        args += ["--extra-fraction", str(fraction)]
    subprocess.run(args, check=True)
    return path.read_bytes()


def test_extra_smiles_join_the_clusters_reproducibly(tmp_path):
    # Sulfur molecules and a neutral ion pair, none of them in QM9 (no S, no charges).
    extras = tmp_path / "extras.smi"
    extras.write_text("# comment\nCSC dimethyl_sulfide\n\nCCS ethanethiol\n"
                      "C[NH3+].CC(=O)[O-] methylammonium_acetate\n")
    only_extras = generate_with_extras(tmp_path / "a.xyz", extras, fraction=1.0)
    assert generate_with_extras(tmp_path / "b.xyz", extras, fraction=1.0) == only_extras
    # Every molecule drawn is an extra: sulfur or the ion pair's nitrogen in each, no QM9 molecule.
    for comment, atoms in read_frames(only_extras):
        molecules = int(comment.split("molecules=")[1].split()[0])
        symbols = [a[0] for a in atoms]
        assert symbols.count("S") + symbols.count("N") == molecules
        assert set(symbols) <= {"C", "H", "N", "O", "S"}
    # Mixed with QM9 (uniform draw over 30 + 3 molecules): a file other than without extras.
    mixed = generate_with_extras(tmp_path / "c.xyz", extras)
    assert generate_with_extras(tmp_path / "d.xyz", extras) == mixed
    assert mixed != generate(tmp_path / "e.xyz")
    # A CSV with a smiles column gives the same molecules, hence the same file.
    csv_extras = tmp_path / "extras.csv"
    csv_extras.write_text("name,smiles\nsulfide,CSC\nthiol,CCS\npair,C[NH3+].CC(=O)[O-]\n")
    assert generate_with_extras(tmp_path / "f.xyz", csv_extras, fraction=1.0) == only_extras


def test_an_ion_pair_is_one_rigid_neutral_entry_in_contact():
    gen = load_generator()
    extras = gen.build_extras([("C[NH3+].CC(=O)[O-]", "pairs.smi:1")], lambda msg: None)
    [(mol, xyz)] = extras[0]
    assert sum(a.GetFormalCharge() for a in mol.GetAtoms()) == 0
    from rdkit import Chem
    first, second = Chem.GetMolFrags(mol)
    gap = np.linalg.norm(xyz[list(first)][:, None] - xyz[list(second)][None], axis=-1).min()
    assert gap < 2.2  # optimised with the inter-fragment terms: a hydrogen bond, not apart


def test_separate_ions_are_placed_apart_and_every_cluster_stays_neutral():
    gen = load_generator()
    pairs = [("C[NH3+].CC(=O)[O-]", "pairs.smi:1"), ("NC(N)=[NH2+].[O-]C=O", "pairs.smi:2")]
    extras = gen.build_extras(pairs, lambda msg: None, separate_ions=True)
    from rdkit import Chem
    # Each entry is its two ions, embedded alone: charges +1 and -1, one fragment each.
    for bodies in extras:
        assert sorted(Chem.GetFormalCharge(m) for m, _ in bodies) == [-1, 1]
        assert all(len(Chem.GetMolFrags(m)) == 1 for m, _ in bodies)
    rng = np.random.default_rng(4)
    pool = gen.build_pool(gen.read_smiles(gen.DEFAULT_INDEX), 10, rng, lambda msg: None)
    pick = gen.pool_picker(len(pool), len(extras), 0.5)
    pool = pool + extras
    for _ in range(3):
        placed, _, _ = gen.make_cluster(pool, 150, 0.1, 2.0, rng, pick=pick)
        charges = [Chem.GetFormalCharge(m) for m, _ in placed]
        assert sum(charges) == 0 and charges.count(1) >= 1
        # Every ion is a body of its own, kept at the packing's 2 A contact distance from every
        # other body: a rigid pair would hold its ions at their 1.7 A hydrogen bond.
        ions = [p for m, p in placed if Chem.GetFormalCharge(m) != 0]
        gaps = [np.linalg.norm(a[:, None] - b[None], axis=-1).min()
                for i, a in enumerate(ions) for b in ions[i + 1:]]
        assert min(gaps) >= 2.0


def test_a_bad_extra_smiles_stops_the_run_naming_file_and_line(tmp_path):
    extras = tmp_path / "bad.smi"
    extras.write_text("CSC\nC1CC not_a_ring\n")
    run = subprocess.run([sys.executable, SCRIPT, "--out", str(tmp_path / "x.xyz"), "--count", "1",
                          "--pool", "5", "--extra-smiles", str(extras), "-q"],
                         capture_output=True, text=True)
    assert run.returncode != 0
    assert f"{extras}:2" in run.stderr and "C1CC" in run.stderr
    assert not (tmp_path / "x.xyz").exists()


def test_extra_smiles_formats(tmp_path):
    gen = load_generator()
    text = tmp_path / "a.smi"
    text.write_text("# header comment\n\nCSC dimethyl sulfide\n  CCS\n")
    assert gen.read_extra_smiles(str(text)) == [("CSC", f"{text}:3"), ("CCS", f"{text}:4")]
    one_column = tmp_path / "b.csv"
    one_column.write_text("SMILES\nCSC\nCCS\n")
    assert [s for s, _ in gen.read_extra_smiles(str(one_column))] == ["CSC", "CCS"]
    two_columns = tmp_path / "c.csv"
    two_columns.write_text("id,smiles\n1,CSC\n2,\n")
    with pytest.raises(ValueError, match=f"{two_columns}:3: no value"):
        gen.read_extra_smiles(str(two_columns))
    empty = tmp_path / "d.smi"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no SMILES"):
        gen.read_extra_smiles(str(empty))


def test_formal_charges_column_holds_the_ions_charges_and_changes_nothing_else(tmp_path):
    extras = tmp_path / "ions.smi"
    extras.write_text("C[NH3+].CC(=O)[O-] methylammonium_acetate\n")
    def run(path, formal):
        args = [sys.executable, SCRIPT, "--out", str(path), "--count", "2", "--min-atoms", "40",
                "--max-atoms", "90", "--pool", "30", "--seed", "3", "--extra-smiles", str(extras),
                "--separate-ions", "--extra-fraction", "0.5", "-q"]
        subprocess.run(args + (["--formal-charges"] if formal else []), check=True)
        return path.read_bytes()
    plain, charged = run(tmp_path / "a.xyz", False), run(tmp_path / "b.xyz", True)
    ions = 0
    for (comment, atoms), (plain_comment, plain_atoms) in zip(read_frames(charged), read_frames(plain)):
        assert comment.startswith("Properties=species:S:1:pos:R:3:forces:R:3:formal_charges:I:1 ")
        assert comment.replace(":formal_charges:I:1", "") == plain_comment
        assert [a[:7] for a in atoms] == plain_atoms
        charges = [int(a[7]) for a in atoms]
        assert sum(charges) == 0
        assert {(a[0], q) for a, q in zip(atoms, charges) if q} <= {("N", 1), ("O", -1)}
        ions += sum(1 for q in charges if q)
    assert ions >= 2
