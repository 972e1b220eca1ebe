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
    symbols, positions, energy, forces = gen.cluster_energy(placed)
    assert len(symbols) == len(xyz) and np.array_equal(positions, xyz)
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
