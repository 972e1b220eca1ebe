"""Tests of the Python package flt (src/python), run by ctest through pytest.

Environment (set by tests/python/CMakeLists.txt): PYTHONPATH = <build>/python, FLT_EXE = the flt
program, FLT_SOURCE_DIR = the source tree, FLT_DEFAULT_MODEL = its models/default.flt.
"""

import csv
import os
import subprocess
import sys
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem

import flt

SOURCE = Path(os.environ["FLT_SOURCE_DIR"])
FLT_EXE = os.environ["FLT_EXE"]
LIGANDS = SOURCE / "molecules" / "cdk2_ligands.sdf"
QM9_EXAMPLES = SOURCE / "molecules" / "qm9_test_examples.xyz"


@pytest.fixture(scope="module")
def model():
    return flt.Model.load_default()


def cli_predictions(tmp_path, path):
    """flt predict's CSV for `path`: {record: {column: value}}."""
    out = tmp_path / "cli.csv"
    subprocess.run([FLT_EXE, "predict", str(path), "-o", str(out), "-q", "-j", "1"], check=True)
    with open(out, newline="") as f:
        return {int(row["record"]): row for row in csv.DictReader(f)}


def test_model_description(model):
    assert model.ensemble_size >= 1 and len(model.files) == model.ensemble_size
    assert model.names[0] == "U0" and model.units[0] == "eV"
    assert model.elements == [1, 6, 7, 8]
    assert model.parameter_count > 0
    assert "U0 [eV]" in repr(model)
    assert flt.__version__


def test_rdkit_molecules_match_flt_predict(model, tmp_path):
    mols = list(Chem.SDMolSupplier(str(LIGANDS), removeHs=False))
    assert len(mols) == 3 and all(m is not None for m in mols)
    table = model.predict(mols, threads=1)
    assert table.errors == [None, None, None]
    assert table.titles == [m.GetProp("_Name") for m in mols]
    cli = cli_predictions(tmp_path, LIGANDS)
    for k in range(3):
        for t, target in enumerate(model.targets):
            expected = float(cli[k + 1][f"flt_{target.name} [{target.unit}]"])
            got = table.values[k, t]
            assert abs(got - expected) <= 1e-6, (k, target.name, got - expected)  # in its unit


def test_rdkit_molecules_with_computed_descriptors(model):
    from rdkit.Chem import Descriptors
    mol = Chem.SDMolSupplier(str(LIGANDS), removeHs=False)[0]
    before = model.predict(mol, threads=1)
    for name, function in Descriptors.descList:
        if name != "Ipc":
            function(mol)  # caches computed properties (bit vectors among them) on the molecule
    after = model.predict(mol, threads=1)
    assert after.errors == [None]
    np.testing.assert_array_equal(after.values, before.values)
    assert after.titles == before.titles


def test_rdkit_molecules_with_polar_hydrogens_only_are_completed(model):
    from rdkit.Chem import AllChem
    full = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.EmbedMolecule(full, randomSeed=1)
    polar = Chem.RemoveHs(full, implicitOnly=False)
    polar = Chem.AddHs(polar, onlyOnAtoms=(2,), addCoords=True)
    assert polar.GetNumAtoms() == 4
    table = model.predict(polar, per_atom=True, threads=1)
    assert table.errors == [None]
    assert table.contributions[0].shape[0] == 9
    kept = model.predict(polar, add_hydrogens=False, per_atom=True, threads=1)
    assert kept.contributions[0].shape[0] == 4


def test_arrays_and_conformer_choice(model):
    mol = Chem.SDMolSupplier(str(LIGANDS), removeHs=False)[0]
    conf = mol.GetConformer()
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    xyz = conf.GetPositions()
    from_rdkit = model.predict(mol).values[0]
    from_arrays = model.predict((z, xyz)).values[0]
    from_molecule = model.predict(flt.Molecule(z, xyz)).values[0]
    np.testing.assert_allclose(from_arrays, from_rdkit, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(from_molecule, from_arrays)
    # A second conformer, moved rigidly: the same prediction for conf_id 1, an error for 7.
    moved = Chem.Mol(mol)
    second = Chem.Conformer(conf)
    for i in range(mol.GetNumAtoms()):
        p = conf.GetAtomPosition(i)
        second.SetAtomPosition(i, (p.x + 3.0, p.y - 1.0, p.z))
    second.SetId(1)
    moved.AddConformer(second, assignId=False)
    np.testing.assert_allclose(model.predict(moved, conf_id=1).values[0], from_rdkit, rtol=1e-5)
    missing = model.predict(moved, conf_id=7)
    assert np.isnan(missing.values).all() and "conformer" in missing.errors[0]


def test_bad_molecules_are_marked_and_the_others_predicted(model):
    good = Chem.SDMolSupplier(str(LIGANDS), removeHs=False)[1]
    gold = (np.array([6, 79]), np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0]]))
    flat = Chem.MolFromSmiles("CCO")  # no conformer at all
    table = model.predict([good, gold, None, flat, good])
    assert table.ok.tolist() == [True, False, False, False, True]
    assert np.isnan(table.values[1:4]).all()
    assert "Z=79" in table.errors[1]
    assert "None" in table.errors[2]
    assert "conformer" in table.errors[3]
    np.testing.assert_array_equal(table.values[0], table.values[4])
    np.testing.assert_array_equal(table.values[0], model.predict(good).values[0])
    with pytest.raises(TypeError):
        model.predict(["not a molecule"])
    bad_shape = model.predict((np.array([1, 1]), np.zeros((3, 3))))
    assert "2 atomic numbers but 3" in bad_shape.errors[0]


def test_predict_file_streams_every_record_in_order(model):
    seen = []
    summary = model.predict_file(QM9_EXAMPLES, seen.append)
    assert summary == (5, 5, 0)
    assert [r.record for r in seen] == [1, 2, 3, 4, 5]
    assert all(r.ok for r in seen)
    direct = model.predict_file(QM9_EXAMPLES)
    np.testing.assert_array_equal(np.array([r.values for r in direct]),
                                  np.array([r.values for r in seen]))

    def stop(record):
        raise KeyError("stop here")

    with pytest.raises(KeyError):
        model.predict_file(QM9_EXAMPLES, stop)


def test_predict_file_smiles_conformer_options(model, tmp_path):
    smi = tmp_path / "few.smi"
    smi.write_text("CCO ethanol\nOc1ccccc1 phenol\nCC(=O)NC N-methylacetamide\n")

    def values(**options):
        records = model.predict_file(smi, threads=1, **options)
        assert all(r.ok for r in records)
        return np.array([r.values for r in records])

    # The bundled model records no training conformers: seed 42, no clean-up, like flt predict.
    default = values()
    np.testing.assert_array_equal(default, values(seed=42, optimize="none", conformer_attempts=0))
    cli = cli_predictions(tmp_path, smi)
    column = f"flt_{model.targets[0].name} [{model.targets[0].unit}]"
    for k, row in enumerate(default):
        assert float(cli[k + 1][column]) == pytest.approx(row[0], abs=1e-4)
    assert not np.array_equal(default, values(seed=7))
    assert not np.array_equal(default, values(optimize="mmff"))
    with pytest.raises(flt.InvalidInput):
        values(optimize="uff")


def test_library_warnings_go_to_python_logging(model, tmp_path, caplog):
    empty = tmp_path / "empty_directory"
    empty.mkdir()
    with caplog.at_level("WARNING", logger="flt"):
        assert model.predict_file(empty, threads=1) == []
    messages = [r.getMessage() for r in caplog.records if r.name == "flt"]
    assert any("empty_directory" in m and "no molecule files" in m for m in messages), messages


def test_array_inputs_are_checked_not_truncated(model):
    z = np.array([8, 1, 1])
    xyz = np.array([[0, 0, 0.1173], [0, 0.7572, -0.4692], [0, -0.7572, -0.4692]])
    table = model.predict([(z, xyz), (z + 2**32, xyz), (z + 0.5, xyz), (["O", "H", "H"], xyz),
                           (z.astype(float), xyz), (z, xyz, [0, 0.5, 0]), (z, xyz, [0, 1, -1])],
                          threads=1)
    assert table.errors[1] == "atomic numbers out of range"
    assert "integers" in table.errors[2] and "integers" in table.errors[5]
    assert table.errors[0] is None and table.errors[3] is None and table.errors[4] is None
    np.testing.assert_array_equal(table.values[3], table.values[0])  # element symbols
    np.testing.assert_array_equal(table.values[4], table.values[0])  # integral floats
    assert table.errors[6] is None
    # Coincident atoms (a collapsed geometry) are refused as in files, unless asked not to.
    collapsed = model.predict((z, np.zeros((3, 3))), threads=1)
    assert "0 Angstrom apart (closer than 0.1)" in collapsed.errors[0]
    assert model.predict((z, np.zeros((3, 3))), threads=1, min_distance=0).errors == [None]
    # A tuple of two molecules is two molecules, whatever they are.
    assert len(model.predict(((z, xyz), (z, xyz)), threads=1)) == 2
    assert len(model.predict((flt.Molecule(z, xyz), flt.Molecule(z, xyz)), threads=1)) == 2


def test_models_pickle_and_paths(model, tmp_path):
    import pickle
    z = np.array([8, 1, 1])
    xyz = np.array([[0, 0, 0.1173], [0, 0.7572, -0.4692], [0, -0.7572, -0.4692]])
    copy = pickle.loads(pickle.dumps(model))
    assert copy.ensemble_size == model.ensemble_size and copy.names == model.names
    np.testing.assert_array_equal(copy.predict((z, xyz)).values, model.predict((z, xyz)).values)
    with pytest.raises(TypeError):
        flt.Model.load_ensemble(os.environ["FLT_DEFAULT_MODEL"])
    # bytes and os.PathLike paths name the file itself.
    assert len(model.predict_file(os.fsencode(QM9_EXAMPLES), threads=1)) == 5
    records = model.predict_file(QM9_EXAMPLES, threads=1, forces=True)
    assert records[0].forces_stddev.shape == records[0].forces.shape
    assert (records[0].forces_stddev > 0).any()  # two members that disagree a little


def test_predict_file_reader_options(model, tmp_path):
    zinc = tmp_path / "zinc.smi"
    zinc.write_text("ethanol CCO\nphenol Oc1ccccc1\n")
    assert "smiles_column" in model.predict_file(zinc, threads=1)[0].error
    records = model.predict_file(zinc, smiles_column=2, threads=1)
    assert [r.ok for r in records] == [True, True] and records[1].title == "phenol"
    with pytest.raises(flt.InvalidInput):
        model.predict_file(zinc, pdb_water="sometimes")


def test_errors_are_typed(tmp_path):
    with pytest.raises(flt.IoError) as missing:
        flt.Model.load(tmp_path / "missing.flt")
    assert isinstance(missing.value, OSError) and "missing.flt" in str(missing.value)
    corrupt = tmp_path / "corrupt.flt"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(flt.ModelFileError) as bad:
        flt.Model.load(corrupt)
    assert "corrupt.flt" in str(bad.value)
    assert issubclass(flt.ModelFileError, flt.Error)
    assert bad.type.__module__ == "flt" and bad.type.__doc__
    with pytest.raises(flt.IoError):
        flt.Model.load_default().predict_file(tmp_path / "nothing.sdf")


def test_threads_share_one_model(model):
    mols = list(Chem.SDMolSupplier(str(LIGANDS), removeHs=False))
    expected = model.predict(mols, threads=1).values
    results = [None] * 4

    def work(i):
        results[i] = model.predict(mols, threads=1).values

    workers = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for r in results:
        np.testing.assert_array_equal(r, expected)


def test_ase_calculator(model):
    ase = pytest.importorskip("ase")
    from flt.ase import FLTCalculator

    mol = Chem.SDMolSupplier(str(LIGANDS), removeHs=False)[0]
    atoms = ase.Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()],
                      positions=mol.GetConformer().GetPositions())
    atoms.calc = FLTCalculator(model)
    assert atoms.calc.target == "U0"
    energy = atoms.get_potential_energy()
    assert energy == pytest.approx(model.predict(mol).column("U0")[0], rel=1e-12)
    forces = atoms.get_forces()
    np.testing.assert_allclose(forces, model.predict(mol, forces=True).forces[0], rtol=0, atol=1e-12)
    atoms.pbc = True
    atoms.cell = [30, 30, 30]
    with pytest.raises(flt.InvalidInput, match="periodic boundary conditions"):
        atoms.get_potential_energy()
    with pytest.raises(flt.InvalidInput):
        FLTCalculator(model, target="gap_squared")
    with pytest.raises(flt.InvalidInput):
        FLTCalculator(model, target="mu")  # Debye is not an energy


def test_ase_atoms_are_molecules_and_periodic_ones_are_marked(model, tmp_path):
    ase = pytest.importorskip("ase")
    import ase.io

    mols = [m for m in Chem.SDMolSupplier(str(LIGANDS), removeHs=False)]
    frames = [ase.Atoms(numbers=[a.GetAtomicNum() for a in m.GetAtoms()],
                        positions=m.GetConformer().GetPositions()) for m in mols]
    frames[1].info["name"] = "second"
    boxed = frames[0].copy()
    boxed.cell = [30, 30, 30]
    boxed.pbc = [True, False, True]
    table = model.predict(frames + [boxed])
    reference = model.predict(mols)
    np.testing.assert_array_equal(table.values[:len(mols)], reference.values)
    assert table.titles[0] == frames[0].get_chemical_formula()
    assert table.titles[1] == "second"
    assert table.ok.tolist() == [True] * len(mols) + [False]
    assert table.errors[-1].startswith("periodic boundary conditions (pbc=T F T)")
    assert np.isnan(table.values[-1]).all()
    # One Atoms is one molecule, not a sequence of atoms.
    single = model.predict(frames[0], forces=True)
    assert single.values.shape[0] == 1
    np.testing.assert_array_equal(single.forces[0], model.predict(mols[0], forces=True).forces[0])
    # What ASE users write: frames read back from an extended XYZ file.
    path = tmp_path / "frames.extxyz"
    ase.io.write(str(path), frames)
    again = model.predict(ase.io.read(str(path), ":"))
    np.testing.assert_allclose(again.values, reference.values, rtol=1e-12, atol=0)


def test_readme_example_runs_verbatim():
    readme = (SOURCE / "README.md").read_text()
    begin = readme.index("<!-- python-example:begin -->")
    end = readme.index("<!-- python-example:end -->")
    block = readme[begin:end]
    code = block[block.index("```python") + len("```python"):block.rindex("```")]
    result = subprocess.run([sys.executable, "-c", code], cwd=SOURCE,
                            capture_output=True, text=True, check=True)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("ZINC03814457 U0 = ") and " eV" in lines[0]


TINY = dict(limit=120, targets=["U0", "gap"], epochs=3, batch_size=16, width=32, heads=4,
            blocks=1, mlp_hidden=64, head_hidden=32, split="100,10,rest", threads=1, seed=3)
QM9 = SOURCE / "datasets" / "qm9" / "qm9_subset.xyz.gz"


def test_train_from_python_with_callback_interrupt_and_resume(tmp_path, caplog):
    epochs = []
    with caplog.at_level("INFO", logger="flt"):
        result = flt.train(QM9, out=tmp_path / "full", callback=epochs.append, **TINY)
    assert "read 120 molecules" in caplog.text  # library log -> logging.getLogger("flt")
    assert result.epochs_run == 3 and (result.train_size, result.validation_size) == (100, 10)
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert epochs[0]["units"] == {"U0": "eV", "gap": "eV"}
    assert set(epochs[-1]["val_mae"]) == {"U0", "gap"}
    assert [m["target"] for m in result.test_metrics] == ["U0", "gap"]
    assert all(np.isfinite(m["mae"]) for m in result.test_metrics)
    trained = result.model()
    assert trained.names == ["U0", "gap"]
    assert np.isfinite(trained.predict_file(QM9_EXAMPLES)[0].values).all()

    # Ctrl-C after the first epoch: KeyboardInterrupt within a step, checkpoint of epoch 1 kept;
    # resuming finishes the same model, bit for bit.
    def interrupt(epoch):
        if epoch["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        flt.train(QM9, out=tmp_path / "cut", callback=interrupt, **TINY)
    assert (tmp_path / "cut" / "checkpoint-last.flt").exists()
    assert not (tmp_path / "cut" / "model.flt").exists()
    resumed = flt.train(out=tmp_path / "cut", resume=True, threads=1)
    assert resumed.epochs_run == 3
    assert (tmp_path / "cut" / "model.flt").read_bytes() == (tmp_path / "full" / "model.flt").read_bytes()


def test_train_boolean_and_negative_options(tmp_path):
    # fit_reference=False reaches flt train as false (not as a switch plus an input named "false").
    result = flt.train(QM9, out=tmp_path / "split", split_only=True, fit_reference=False, add_hydrogens=False,
                       warmup_steps=-1, limit=20, split="10,5,rest", threads=1)
    assert (result.train_size, result.validation_size) == (10, 5)
    config = (tmp_path / "split" / "config.ini").read_text()
    assert "fit-reference = false" in config and "add-hydrogens = false" in config
    assert "warmup-steps = -1" in config


def test_train_per_target_options_as_dicts_or_strings(tmp_path):
    # units, source_units and pooling (NAME=VALUE lists on the command line) take a dict or a string.
    ethanol = SOURCE / "datasets" / "rmd17-ethanol" / "train.xyz"
    common = dict(targets=["energy"], split_only=True, limit=20, split="10,5,rest", threads=1)
    flt.train(ethanol, out=tmp_path / "dict", units={"energy": "kcal/mol"}, source_units={"energy": "kcal/mol"},
              pooling={"energy": "sum"}, **common)
    flt.train(ethanol, out=tmp_path / "str", units="energy=kcal/mol", source_units="energy=kcal/mol",
              pooling="energy=sum", **common)
    for run in ("dict", "str"):
        config = (tmp_path / run / "config.ini").read_text()
        assert "\nunits = energy=kcal/mol\n" in config and "\nsource-units = energy=kcal/mol\n" in config
        assert "\npooling = energy=sum\n" in config
    with pytest.raises(flt.ConfigError, match="--source-units given for 'U0', which is not a target"):
        flt.train(ethanol, out=tmp_path / "x", source_units={"U0": "eV"}, **common)
    with pytest.raises(flt.ConfigError, match="--targets: a dict is accepted only by"):
        flt.train(ethanol, out=tmp_path / "x", targets={"energy": "eV"}, split_only=True)
    with pytest.raises(flt.ConfigError, match="--units: .*a name must be"):
        flt.train(ethanol, out=tmp_path / "x", units={"energy,forces": "eV"}, **common)


def test_train_option_errors(tmp_path):
    with pytest.raises(flt.ConfigError, match="did you mean --width"):
        flt.train(QM9, out=tmp_path / "x", widht=3)
    # The same refusal of a model option without effect as flt train's (the default near_far model).
    with pytest.raises(flt.ConfigError, match="--num-frequencies \\(command line\\) has no effect with --attention near_far"):
        flt.train(QM9, out=tmp_path / "x", num_frequencies=32, **TINY)
    flt.train(QM9, out=tmp_path / "run", **TINY)
    with pytest.raises(flt.ConfigError, match="use --overwrite"):
        flt.train(QM9, out=tmp_path / "run", **TINY)  # an existing run is never silently reused
    assert flt.train(QM9, out=tmp_path / "run", overwrite=True, **TINY).epochs_run == 3


def test_train_on_energies_and_forces(tmp_path):
    ethanol = SOURCE / "datasets" / "rmd17-ethanol" / "train.xyz"
    epochs = []
    result = flt.train(ethanol, out=tmp_path / "ef", callback=epochs.append, targets=["energy"],
                       limit=60, split="40,10,rest", epochs=2, batch_size=8, width=16, heads=2,
                       blocks=1, mlp_hidden=16, head_hidden=16, threads=1, seed=1, force_weight=10)
    assert all(np.isfinite(e["val_force_mae"]) for e in epochs)
    rows = {m["target"]: m for m in result.test_metrics}
    assert rows["energy forces"]["unit"] == "eV/A" and rows["energy forces"]["count"] == 10 * 9 * 3
    assert np.isfinite(rows["energy forces"]["mae"])


def test_forces_match_flt_predict_and_the_energy_gradient(model, tmp_path):
    table = model.predict_file(QM9_EXAMPLES, forces=True)
    out = tmp_path / "forces.xyz"
    subprocess.run([FLT_EXE, "predict", str(QM9_EXAMPLES), "-o", str(out), "--forces", "-q", "-j", "1"],
                   check=True)
    lines = out.read_text().splitlines()
    n = int(lines[0])
    assert "flt_forces:R:3" in lines[1] and "flt_forces_unit=eV/A" in lines[1]
    cli = np.array([[float(v) for v in line.split()[4:7]] for line in lines[2:2 + n]])
    np.testing.assert_allclose(table[0].forces, cli, rtol=0, atol=1e-9)

    # -dE/dr by central differences of the predicted energy (float network: loose tolerance).
    mol = Chem.SDMolSupplier(str(LIGANDS), removeHs=False)[0]
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    xyz = mol.GetConformer().GetPositions()
    pred = model.predict((z, xyz), forces=True)
    assert pred.forces_target == "U0" and pred.forces_unit == "eV/A"
    forces = pred.forces[0]
    h = 1e-3
    for atom in (0, 7, 20):
        for c in range(3):
            plus, minus = xyz.copy(), xyz.copy()
            plus[atom, c] += h
            minus[atom, c] -= h
            fd = -(model.predict((z, plus)).column("U0")[0] - model.predict((z, minus)).column("U0")[0]) / (2 * h)
            assert abs(forces[atom, c] - fd) <= 2e-2 * (1 + np.abs(forces).max()), (atom, c)
    np.testing.assert_allclose(forces.sum(axis=0), 0, atol=1e-3 * (1 + np.abs(forces).max()))
    with pytest.raises(flt.InvalidInput, match="not an extensive energy"):
        model.predict((z, xyz), forces=True, forces_target="gap")


def test_shuffling_a_large_structure_permutes_its_forces_and_keeps_its_energy(model):
    # 600 atoms (a jittered lattice at about liquid density, H/C/N/O), the bundled model as users
    # run it: structures of 512+ atoms are predicted in cell order and their forces mapped back to
    # the input's rows, so a shuffled input gets the same forces, shuffled, and the same energy, to
    # float rounding.
    rng = np.random.default_rng(3)
    grid = np.stack(np.meshgrid(np.arange(10), np.arange(10), np.arange(6), indexing="ij"), -1).reshape(-1, 3)
    xyz = 2.15 * grid + rng.uniform(-0.25, 0.25, grid.shape)
    z = rng.choice([1, 6, 7, 8], len(xyz))
    shuffle = rng.permutation(len(xyz))
    given = model.predict((z, xyz), forces=True)
    shuffled = model.predict((z[shuffle], xyz[shuffle]), forces=True)
    forces = given.forces[0]
    scale = np.abs(forces).max()
    assert scale > 0
    np.testing.assert_allclose(shuffled.forces[0], forces[shuffle], rtol=0, atol=1e-5 * scale)
    energy = given.column("U0")[0]
    assert abs(shuffled.column("U0")[0] - energy) <= 1e-6 * abs(energy)


def test_per_atom_contributions_sum_to_the_prediction_and_match_flt_predict(model, tmp_path):
    mol = Chem.SDMolSupplier(str(LIGANDS), removeHs=False)[0]
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    xyz = mol.GetConformer().GetPositions()
    table = model.predict((z, xyz), per_atom=True)
    c = table.contributions[0]
    assert c.shape == (len(z), len(model.targets))
    for t, target in enumerate(model.targets):
        if target.extensive:
            assert abs(c[:, t].sum() - table.values[0, t]) <= 1e-3 * (1 + abs(table.values[0, t]))
        else:
            assert np.isnan(c[:, t]).all()  # a per-molecule mean does not split into atoms
    assert model.predict((z, xyz)).contributions is None
    # The extended-XYZ column of flt predict --per-atom holds the same numbers.
    out = tmp_path / "per_atom.xyz"
    subprocess.run([FLT_EXE, "predict", str(QM9_EXAMPLES), "-o", str(out), "--per-atom=U0", "-q", "-j", "1"],
                   check=True)
    lines = out.read_text().splitlines()
    n = int(lines[0])
    assert "flt_U0_contribution:R:1" in lines[1] and "flt_U0_contribution_unit=eV" in lines[1]
    atoms = [line.split() for line in lines[2:2 + n]]
    cli = np.array([float(a[4]) for a in atoms])
    table = model.predict((np.array([Chem.GetPeriodicTable().GetAtomicNumber(a[0]) for a in atoms]),
                           np.array([[float(v) for v in a[1:4]] for a in atoms])), per_atom=True)
    np.testing.assert_allclose(table.contributions[0][:, model.names.index("U0")], cli, rtol=0, atol=1e-4)
    # predict_file gives each record the same contributions (and none without per_atom).
    records = model.predict_file(QM9_EXAMPLES, per_atom=True, threads=1)
    np.testing.assert_allclose(records[0].contributions[:, model.names.index("U0")], cli, rtol=0, atol=1e-4)
    for r in records:
        assert r.contributions.shape[1] == len(model.targets)
        assert abs(np.nansum(r.contributions[:, model.names.index("U0")]) - r.values[model.names.index("U0")]) <= 1e-3
    assert model.predict_file(QM9_EXAMPLES, threads=1)[0].contributions is None


def test_md_trajectory_momenta_are_ases(tmp_path):
    """flt md -o frames carry momenta and masses that ASE reads as its own, in its units."""
    ase = pytest.importorskip("ase")
    import ase.io
    import ase.units

    ethanol = SOURCE / "datasets" / "rmd17-ethanol" / "train.xyz"
    traj, log = tmp_path / "md.xyz", tmp_path / "md.csv"
    dt = 0.25
    subprocess.run([FLT_EXE, "md", str(ethanol), "--steps", "6", "--timestep", str(dt), "--every", "1",
                    "-o", str(traj), "--log", str(log), "-q", "-j", "1"], check=True)
    frames = ase.io.read(str(traj), index=":")
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(frames) == len(rows) == 7
    assert frames[0].info["momenta_unit"] == "sqrt(amu*eV)" and frames[0].info["masses_unit"] == "amu"
    for atoms, row in zip(frames, rows):
        assert atoms.info["step"] == int(row["step"])
        # ASE's kinetic energy (sum p^2 / 2m, eV) is the one flt logged.
        assert atoms.get_kinetic_energy() == pytest.approx(float(row["kinetic_energy [eV]"]), rel=1e-10, abs=0)
    np.testing.assert_array_equal(frames[0].get_masses(), ase.io.read(str(ethanol), index=0).get_masses())
    # ASE's velocities in Angstrom/fs are those flt integrated: velocity Verlet moves each atom by
    # dt v + dt^2 F / (2 m) (F / m in Angstrom/fs^2 is eV/(Angstrom amu) times ase.units.fs^2).
    for before, after in zip(frames, frames[1:]):
        velocities = before.get_velocities() * ase.units.fs
        accelerations = before.get_forces() / before.get_masses()[:, None] * ase.units.fs ** 2
        expected = before.positions + dt * velocities + 0.5 * dt ** 2 * accelerations
        np.testing.assert_allclose(after.positions, expected, rtol=0, atol=1e-10)
        assert np.abs(after.positions - before.positions).max() > 1e-4


def test_md_starts_from_ase_momenta(tmp_path):
    """flt md --velocities input takes the momenta of an extended XYZ file written by ASE."""
    ase = pytest.importorskip("ase")
    import ase.io
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    first = ase.io.read(str(SOURCE / "datasets" / "rmd17-ethanol" / "train.xyz"), index=0)
    atoms = ase.Atoms(numbers=first.numbers, positions=first.positions)
    MaxwellBoltzmannDistribution(atoms, temperature_K=500, rng=np.random.default_rng(3))
    start, traj, log = tmp_path / "start.xyz", tmp_path / "md.xyz", tmp_path / "md.csv"
    ase.io.write(str(start), atoms, format="extxyz")
    assert "momenta:R:3" in start.read_text()
    written = ase.io.read(str(start))  # ASE writes 8 decimals: the momenta flt reads
    subprocess.run([FLT_EXE, "md", str(start), "--velocities", "input", "--steps", "2", "--every", "1",
                    "-o", str(traj), "--log", str(log), "-q", "-j", "1"], check=True)
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["step"] == "0" and float(rows[0]["time [fs]"]) == 0
    assert float(rows[0]["kinetic_energy [eV]"]) == pytest.approx(written.get_kinetic_energy(), rel=1e-10, abs=0)
    frame = ase.io.read(str(traj), index=0)
    np.testing.assert_array_equal(frame.get_momenta(), written.get_momenta())


def test_calibrated_ensemble_reports_the_scaled_std(model, tmp_path):
    """An ensemble file calibrated by flt ensemble --calibrate: stddev is the spread times its factor,
    fitted by the method it names."""
    calibrated = tmp_path / "calibrated.flt"
    subprocess.run([FLT_EXE, "ensemble", os.environ["FLT_DEFAULT_MODEL"], "-o", str(calibrated),
                    "--calibrate", str(QM9_EXAMPLES), "-q", "-j", "1"], check=True)
    assert model.std_calibration == []
    scaled = flt.Model.load(str(calibrated))
    factors = scaled.std_calibration
    assert len(factors) == len(model.targets) and all(f > 0 and f != 1 for f in factors)
    mols = list(Chem.SDMolSupplier(str(LIGANDS), removeHs=False))
    plain, calibrated_table = model.predict(mols, threads=1), scaled.predict(mols, threads=1)
    np.testing.assert_array_equal(calibrated_table.values, plain.values)
    np.testing.assert_array_equal(calibrated_table.stddev, plain.stddev * np.array(factors))
    # The default method is coverage; zscaling is asked for and named as such.
    assert model.std_calibration_method == ""
    assert scaled.std_calibration_method == "coverage"
    zscaled = tmp_path / "zscaled.flt"
    subprocess.run([FLT_EXE, "ensemble", os.environ["FLT_DEFAULT_MODEL"], "-o", str(zscaled),
                    "--calibrate", str(QM9_EXAMPLES), "--calibration-method", "zscaling", "-q", "-j", "1"],
                   check=True)
    z = flt.Model.load(str(zscaled))
    assert z.std_calibration_method == "zscaling"
    assert z.std_calibration != factors
