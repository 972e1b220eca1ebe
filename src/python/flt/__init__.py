"""flt: FourierLearner-Transformer models of molecular properties, from Python.

    import flt
    from rdkit import Chem

    model = flt.Model.load_default()            # or flt.Model.load("my.flt")
    mols = [m for m in Chem.SDMolSupplier("ligands.sdf", removeHs=False)]
    table = model.predict(mols)                  # one row per molecule
    table.values                                 # numpy array (molecules x targets), NaN if not predicted
    table.errors                                 # None, or the reason a molecule was not predicted
    table.units                                  # unit of each column, e.g. ["eV", "eV", ...]

Molecules are RDKit ``Chem.Mol`` objects with a 3-D conformer, ASE ``Atoms`` (isolated: no periodic
boundary conditions), ``flt.Molecule`` (atomic numbers and coordinates in Angstrom), or
``(atomic_numbers, coordinates)`` pairs. The compiled module
``flt._flt`` wraps the C++ library (libflt); prediction releases the GIL and one Model may be used
from several threads at once.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import numpy as np

from . import _flt
from ._flt import (  # noqa: F401  (re-exported)
    ConfigError,
    Error,
    InputError,
    InvalidInput,
    IoError,
    ModelFileError,
    NumericalError,
)

__version__ = _flt.__version__

# Shown as flt.InvalidInput etc. in tracebacks, with what each one means.
for _cls, _doc in (
        (Error, "Base class of every error flt raises (file, record and reason in the message)."),
        (InvalidInput, "A bad argument or a molecule the model cannot handle (also a ValueError)."),
        (ConfigError, "A bad option or configuration, or no default model."),
        (IoError, "A file that cannot be read or written (also an OSError)."),
        (InputError, "A bad record of a molecule file (also a ValueError)."),
        (ModelFileError, "A corrupt, truncated or unknown model file."),
        (NumericalError, "A numerical failure that must not pass silently (also an ArithmeticError).")):
    _cls.__module__ = "flt"
    _cls.__doc__ = _doc
del _cls, _doc

__all__ = [
    "Model", "Molecule", "Target", "PredictionTable", "Record",
    "Error", "InvalidInput", "ConfigError", "IoError", "InputError", "ModelFileError",
    "NumericalError", "__version__", "train", "TrainResult",
]


@dataclass(frozen=True)
class Target:
    """One predicted quantity: its name, the unit of every predicted value, and whether it is a sum
    over atoms (extensive, e.g. energies) or a per-molecule mean (intensive, e.g. the gap)."""

    name: str
    unit: str
    extensive: bool


@dataclass
class Molecule:
    """One 3-D structure as arrays: atomic numbers (N,), coordinates (N, 3) in Angstrom, optional
    formal charges (N,) in e. Every atom, hydrogens included, must be listed."""

    atomic_numbers: Any
    coordinates: Any
    formal_charges: Any = None
    title: str = ""


class _TargetNames:
    """`names` and `units` of the `targets` list (Target), shared by PredictionTable and Model."""

    targets: list

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.targets]

    @property
    def units(self) -> list[str]:
        return [t.unit for t in self.targets]


@dataclass
class PredictionTable(_TargetNames):
    """Predictions for a batch, one row per input molecule in input order.

    values, stddev: float arrays (molecules x targets) in the unit of each target; NaN in the rows
    of molecules that could not be predicted. stddev is the ensemble spread (0 for one model).
    errors: None for a predicted molecule, else the reason (unknown element, no 3-D conformer...).
    forces, forces_stddev: with predict(..., forces=True), per molecule an (n_atoms, 3) array of
    F = -dE/dr of the energy target `forces_target` in `forces_unit` (e.g. eV/A; ensemble mean and
    spread), None for a molecule that was not predicted; None when forces were not asked for.
    contributions, contributions_stddev: with predict(..., per_atom=True), per molecule an
    (n_atoms, n_targets) array of each atom's contribution to each extensive target in its unit
    (the element's reference energy + the per-atom mean + the atom's scaled network output;
    summing over atoms gives `values`), NaN columns for intensive targets; ensemble mean and
    spread; None for a molecule that was not predicted, or when not asked for.
    """

    targets: list[Target]
    values: np.ndarray
    stddev: np.ndarray
    errors: list[Optional[str]]
    titles: list[str] = field(default_factory=list)
    forces: Optional[list] = None
    forces_stddev: Optional[list] = None
    forces_target: Optional[str] = None
    forces_unit: Optional[str] = None
    contributions: Optional[list] = None
    contributions_stddev: Optional[list] = None

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of the predicted rows."""
        return np.array([e is None for e in self.errors], dtype=bool)

    def column(self, name: str) -> np.ndarray:
        """The values of target `name` (in its unit), one per molecule."""
        return self.values[:, self.names.index(name)]

    def to_pandas(self):
        """A pandas DataFrame with columns "NAME [UNIT]", "NAME_std [UNIT]" (the ensemble spread)
        and "error" (needs pandas)."""
        import pandas as pd  # optional dependency

        data = {}
        for i, t in enumerate(self.targets):
            data[f"{t.name} [{t.unit}]"] = self.values[:, i]
            data[f"{t.name}_std [{t.unit}]"] = self.stddev[:, i]
        frame = pd.DataFrame(data)
        if self.titles:
            frame.insert(0, "title", self.titles)
        frame["error"] = self.errors
        return frame

    def __len__(self) -> int:
        return len(self.errors)


@dataclass
class Record:
    """One record of a molecule file (predict_file), in input order."""

    file: str
    record: int  # 1-based within `file`
    title: str
    values: np.ndarray  # one per target, NaN when not predicted
    stddev: np.ndarray
    error: Optional[str]  # None when predicted
    forces: Optional[np.ndarray] = None  # (n_atoms, 3) with forces=True, else None
    # With per_atom=True: (n_atoms, n_targets) contributions to the extensive targets in their
    # units (NaN columns for intensive ones; rows sum to `values`), and the ensemble spread.
    contributions: Optional[np.ndarray] = None
    contributions_stddev: Optional[np.ndarray] = None
    forces_stddev: Optional[np.ndarray] = None  # ensemble spread of `forces` (0 for one model)

    @property
    def ok(self) -> bool:
        return self.error is None


def _is_rdkit_mol(obj: Any) -> bool:
    try:
        from rdkit import Chem
    except ImportError:
        return False
    return isinstance(obj, Chem.Mol)


def _is_ase_atoms(obj: Any) -> bool:
    # An Atoms object exists only where ase was imported; flt does not import it.
    ase = sys.modules.get("ase")
    return ase is not None and isinstance(obj, ase.Atoms)


def _ase_item(atoms: Any) -> tuple:
    title = str(atoms.info.get("name", atoms.info.get("title", atoms.get_chemical_formula())))
    if atoms.pbc.any():
        # As flt predict does with a periodic extended-XYZ record: marked, not predicted.
        pbc = " ".join("T" if p else "F" for p in atoms.pbc)
        return ("invalid", f"periodic boundary conditions (pbc={pbc}): flt models isolated "
                "structures, without periodic images; set atoms.pbc = False to predict it as one",
                "", None, title)
    return ("arrays", atoms.numbers, atoms.positions, None, title)


def _rdkit_item(mol: Any, conf_id: int, add_hydrogens: bool) -> tuple:
    from rdkit import Chem

    # RDKit's own binary pickle (same RDKit release as libflt), with doubles for the coordinates
    # and the molecule's properties (the title is "_Name"); libflt converts it as flt::to_molecule
    # does. Not AllProps: computed properties (descriptor caches, bit vectors) may not read back.
    flags = (Chem.PropertyPickleOptions.MolProps | Chem.PropertyPickleOptions.PrivateProps
             | Chem.PropertyPickleOptions.CoordsAsDouble)
    title = mol.GetProp("_Name") if mol.HasProp("_Name") else ""
    return ("rdkit", mol.ToBinary(flags), int(conf_id), bool(add_hydrogens), title)


class _NotIntegers(ValueError):
    pass


def _integers(values: Any, what: str) -> np.ndarray:
    """values as int64, refusing what would be truncated: fractions, out of int32, booleans."""
    a = np.asarray(values)
    if a.dtype.kind in "US" or (a.dtype.kind == "O" and a.size and all(isinstance(v, str) for v in a.flat)):
        if what != "atomic numbers":
            raise _NotIntegers(f"{what} must be integers, not strings")
        try:
            from rdkit import Chem
        except ImportError:
            raise _NotIntegers("atomic numbers must be integers (element symbols need RDKit)") from None
        table = Chem.GetPeriodicTable()
        try:
            return np.array([table.GetAtomicNumber(str(v)) for v in a.flat], dtype=np.int64).reshape(a.shape)
        except RuntimeError:
            raise _NotIntegers(f"unknown element symbol among {list(a.flat)[:10]}") from None
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise _NotIntegers(f"{what} must be integers (got non-integral values)")
    elif a.dtype.kind not in "iu":
        raise _NotIntegers(f"{what} must be integers, not {a.dtype}")
    if a.size and (a.min() < -(2**31) or a.max() >= 2**31):
        raise _NotIntegers(f"{what} out of range")
    return a.astype(np.int64)


def _arrays_item(z: Any, xyz: Any, charges: Any, title: str) -> tuple:
    try:
        z = _integers(z, "atomic numbers")
        if charges is not None:
            charges = _integers(charges, "formal charges")
    except _NotIntegers as e:
        return ("invalid", str(e), "", None, title)
    return ("arrays", z, xyz, charges, title)


def _is_single_pair(obj: Any) -> bool:
    """(atomic_numbers, coordinates[, charges]): one molecule, not a tuple of molecules."""
    if not (isinstance(obj, tuple) and len(obj) in (2, 3)):
        return False
    first = obj[0]
    if first is None or isinstance(first, (tuple, Molecule, str)) or _is_rdkit_mol(first) \
            or _is_ase_atoms(first):
        return False
    try:
        return np.asarray(first).ndim == 1
    except (TypeError, ValueError):
        return False


def _path(path: Any) -> str:
    """A file name given as str, bytes or os.PathLike."""
    return os.fsdecode(os.fspath(path))


def _model_from_files(files: list, threads: int) -> "Model":
    model = Model.load(files[0]) if len(files) == 1 else Model.load_ensemble(files)
    model.threads = threads
    return model


def _item(obj: Any, conf_id: int, add_hydrogens: bool) -> tuple:
    if obj is None:
        # What RDKit's suppliers yield for a record they could not read.
        return ("invalid", "", "", None, "")
    if _is_rdkit_mol(obj):
        return _rdkit_item(obj, conf_id, add_hydrogens)
    if _is_ase_atoms(obj):
        return _ase_item(obj)
    if isinstance(obj, Molecule):
        return _arrays_item(obj.atomic_numbers, obj.coordinates, obj.formal_charges, obj.title)
    if isinstance(obj, tuple) and len(obj) in (2, 3):
        charges = obj[2] if len(obj) == 3 else None
        return _arrays_item(obj[0], obj[1], charges, "")
    raise TypeError(
        "flt: a molecule must be an RDKit Chem.Mol, an ASE Atoms, an flt.Molecule or an "
        f"(atomic_numbers, coordinates) pair, not {type(obj).__name__}")


class Model(_TargetNames):
    """A trained flt model, or an ensemble of models predicting the same targets."""

    def __init__(self, native: "_flt.Model", sources: Optional[list] = None):
        self._native = native
        self._sources = sources  # the files as loaded (an ensemble file once), for pickling
        self.targets = [Target(*t) for t in native.targets]

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path) -> "Model":
        """Loads a .flt file (flt.IoError if unreadable, flt.ModelFileError if corrupt)."""
        try:
            return cls(_flt.Model.load(_path(path)), [_path(path)])
        finally:
            _flt.flush_log()

    @classmethod
    def load_ensemble(cls, paths: Iterable) -> "Model":
        """Loads several .flt files as an ensemble: mean prediction, stddev = spread."""
        if isinstance(paths, (str, bytes, os.PathLike)):
            raise TypeError("flt: load_ensemble takes a list of model files; for one file use Model.load")
        try:
            sources = [_path(p) for p in paths]
            return cls(_flt.Model.load_ensemble(sources), sources)
        finally:
            _flt.flush_log()

    @classmethod
    def load_default(cls) -> "Model":
        """Loads the bundled default model ($FLT_DEFAULT_MODEL overrides where it is)."""
        try:
            native = _flt.Model.load_default()
            return cls(native, [str(native.default_model_path())])
        finally:
            _flt.flush_log()

    @staticmethod
    def default_model_path() -> str:
        return str(_flt.Model.default_model_path())

    # -- description -------------------------------------------------------------------------
    @property
    def elements(self) -> list[int]:
        """Atomic numbers the model accepts."""
        return list(self._native.elements)

    @property
    def ensemble_size(self) -> int:
        return self._native.ensemble_size

    @property
    def std_calibration(self) -> list[float]:
        """Per target, the calibration factor that ``stddev`` carries (an ensemble file calibrated
        by ``flt ensemble --calibrate``); ``[]`` when stddev is the members' plain spread."""
        return list(self._native.std_calibration)

    @property
    def std_calibration_method(self) -> str:
        """How ``std_calibration`` was fitted: ``"coverage"`` (68.27 % quantile of |error|/std) or
        ``"zscaling"`` (sqrt(mean (error/std)^2)); ``""`` when there is no calibration."""
        return self._native.std_calibration_method

    @property
    def files(self) -> list[str]:
        return [str(f) for f in self._native.files]

    @property
    def parameter_count(self) -> int:
        return self._native.parameter_count

    def metadata(self) -> dict[str, str]:
        """The first member's stored metadata (training data checksum, seed, configuration...)."""
        return dict(self._native.metadata())

    @property
    def threads(self) -> int:
        """OpenMP threads per call (0: all cores / OMP_NUM_THREADS)."""
        return self._native.threads

    @threads.setter
    def threads(self, value: int) -> None:
        self._native.threads = int(value)

    # -- prediction --------------------------------------------------------------------------
    def forces_target(self, name: str = "") -> Target:
        """The energy target whose forces predict(..., forces=True) returns: `name`, or the
        first extensive target in an energy unit (flt.InvalidInput when there is none)."""
        return self.targets[self.names.index(self._native.forces_target(name))]

    def predict(self, molecules, conf_id: int = -1, add_hydrogens: bool = True,
                threads: int = 0, batch_size: int = 64, forces: bool = False,
                forces_target: str = "", per_atom: bool = False,
                min_distance: float = _flt.DEFAULT_MIN_DISTANCE) -> PredictionTable:
        """Predicts every target for each molecule, one row per molecule in input order.

        molecules: one molecule or a sequence of them (RDKit Chem.Mol with a 3-D conformer, ASE
        Atoms, e.g. ase.io.read(path, ":"), flt.Molecule, or (atomic_numbers, coordinates) in
        Angstrom; None entries, as RDKit's suppliers give for unreadable records, and periodic
        Atoms become rows with an error). conf_id selects the
        RDKit conformer (-1: the default). The implicit hydrogens of RDKit molecules (all, or the
        rest of a molecule with some explicit ones) are added with coordinates when add_hydrogens
        is true. Molecules that cannot be
        predicted get NaN and the reason in `errors`; the others are unaffected.
        forces=True adds F = -dE/dr of the energy target `forces_target` (default: the first
        extensive energy target, e.g. U0 or energy) per atom; it costs one backward pass.
        per_atom=True adds each atom's contribution to the extensive targets (`contributions`;
        no extra pass; flt.InvalidInput when the model has no extensive target). Molecules with
        two atoms closer than min_distance Angstrom (a collapsed geometry) are error rows, as
        records of files are; 0 turns the check off.
        """
        if molecules is None or _is_rdkit_mol(molecules) or _is_ase_atoms(molecules) or \
                isinstance(molecules, Molecule) or _is_single_pair(molecules):
            molecules = [molecules]
        items = [_item(m, conf_id, add_hydrogens) for m in molecules]
        titles = [item[4] for item in items]
        target = self.forces_target(forces_target) if forces else None
        values, stddev, errors, force_list, force_std, contribution_list, contribution_std = \
            self._native.predict_batch(items, int(threads), int(batch_size), bool(forces),
                                       target.name if target else "", bool(per_atom),
                                       float(min_distance))
        for k, item in enumerate(items):
            if item[0] == "invalid":
                errors[k] = item[1] or "no molecule (None: a record the RDKit supplier could not read)"
        table = PredictionTable(self.targets, values, stddev, errors, titles)
        if target is not None:
            table.forces, table.forces_stddev = force_list, force_std
            table.forces_target, table.forces_unit = target.name, target.unit + "/A"
        if per_atom:
            table.contributions, table.contributions_stddev = contribution_list, contribution_std
        return table

    def predict_file(self, path, callback: Optional[Callable[[Record], Any]] = None, *,
                     format: str = "", add_hydrogens: bool = True,
                     generate_conformers: bool = False, seed: Optional[int] = None,
                     optimize: Optional[str] = None, conformer_attempts: Optional[int] = None,
                     sanitize: bool = True, smiles_column: str = "", periodic: str = "error",
                     pdb_water: str = "drop", pdb_hetero: str = "keep",
                     min_distance: float = _flt.DEFAULT_MIN_DISTANCE, threads: int = 0, batch_size: int = 64,
                     forces: bool = False, forces_target: str = "", per_atom: bool = False):
        """Streams a molecule file (SDF, MOL, XYZ, extended XYZ, QM9, PDB, SMILES CSV or .smi;
        .gz, directories and tar archives too) and predicts every record, in input order.

        With a callback: calls it with each Record as soon as its batch is predicted (memory: one
        batch) and returns (read, predicted, failed); an exception raised by the callback stops
        the run and propagates. Without: returns the list of all Records. per_atom=True fills
        each Record's `contributions` as predict(..., per_atom=True) does.

        Conformers of SMILES records (and of 2-D records with generate_conformers=True) are made
        as the model's training made them (seed, optimize "none"/"mmff", conformer_attempts)
        unless given here. smiles_column, periodic ("error"/"isolated"), pdb_water and pdb_hetero
        ("keep"/"drop"/"fail") are flt predict's --smiles-column, --periodic, --pdb-water and
        --pdb-hetero.
        """
        target = self.forces_target(forces_target) if forces else None
        options = dict(format=format, add_hydrogens=add_hydrogens,
                       generate_conformers=generate_conformers, seed=seed, optimize=optimize,
                       conformer_attempts=conformer_attempts, sanitize=sanitize,
                       smiles_column=str(smiles_column), periodic=periodic, pdb_water=pdb_water,
                       pdb_hetero=pdb_hetero,
                       min_distance=min_distance, threads=threads, batch_size=batch_size,
                       forces=bool(forces), forces_target=target.name if target else "",
                       per_atom=bool(per_atom))
        if callback is not None:
            def sink(*fields):
                callback(Record(*fields))
            return self._native.predict_file(_path(path), sink, **options)
        records: list[Record] = []

        def collect(*fields):
            records.append(Record(*fields))

        self._native.predict_file(_path(path), collect, **options)
        return records

    def __reduce__(self):
        # Pickled as its files (multiprocessing, joblib, DataLoader workers load them again).
        return (_model_from_files, (self._sources or self.files, self.threads))

    def __repr__(self) -> str:
        members = f", {self.ensemble_size} members" if self.ensemble_size > 1 else ""
        targets = ", ".join(f"{t.name} [{t.unit}]" for t in self.targets)
        return f"flt.Model({targets}{members})"


@dataclass
class TrainResult:
    """What flt.train did: the run directory (model.flt, checkpoints, learning curve, split,
    config.ini), sizes, epochs, wall time, and the test metrics per target (in its unit)."""

    run_dir: str
    model_path: str
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    seconds: float
    train_size: int
    validation_size: int
    test_size: int
    data_checksum: str
    skipped_records: int
    test_metrics: list[dict]
    summary: str

    def model(self) -> Model:
        """The trained model (run_dir/model.flt)."""
        return Model.load(self.model_path)


# Options of flt train whose value is a list of NAME=VALUE items (per target): a dict gives them
# too ({"energy": "kcal/mol"}), as does the command line's string ("energy=kcal/mol").
_ASSIGNMENT_OPTIONS = ("units", "source_units", "pooling")


def _option_value(key: str, value: Any) -> str:
    if isinstance(value, dict):
        option = "--" + key.replace("_", "-")
        if key not in _ASSIGNMENT_OPTIONS:
            raise ConfigError(f"{option}: a dict is accepted only by "
                              + ", ".join(o + "=" for o in _ASSIGNMENT_OPTIONS))
        items = []
        for name, item in value.items():
            name, item = str(name), str(item)
            # The command line's list has no quoting: a ',' or '=' here would split the item.
            if not name or "," in name or "=" in name or "," in item:
                raise ConfigError(f"{option}: {{{name!r}: {item!r}}}: a name must be non-empty "
                                  "without ',' or '=', a value without ','")
            items.append(name + "=" + item)
        return ",".join(items)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def train(*inputs, config=None, callback: Optional[Callable[[dict], Any]] = None,
          progress: bool = False, resume: bool = False, overwrite: bool = False,
          **options) -> TrainResult:
    """Trains a molecule model exactly as `flt train` does, with the same options.

        result = flt.train("datasets/qm9/qm9_subset.xyz.gz", targets=["U0", "gap"],
                           epochs=10, out="runs/u0", callback=print)
        model = result.model()

    inputs: molecule files (as the positional arguments of `flt train`). config: an INI file
    (`--config`); keyword options override it, written with underscores (batch_size=16 for
    --batch-size; lists as Python lists, booleans as True/False; the per-target options units,
    source_units and pooling as dicts, {"U0": "kcal/mol"}, or as "U0=kcal/mol"); `flt train --help`
    lists them.
    Without config, the defaults are the default model's recipe. callback(epoch) is called after
    every epoch with a dict (epoch, step, lr, train_loss, val_loss, seconds, improved, train_mae,
    val_mae and units per target). progress=True also prints flt's progress lines to stderr.
    Ctrl-C raises KeyboardInterrupt within one optimiser step; the run directory keeps the last
    completed epoch's checkpoint, and train(out=..., resume=True) continues from it.
    Errors: flt.ConfigError for bad options, flt.IoError / flt.InputError for data, ...
    """
    args: list[str] = []
    if config is not None:
        args += ["--config", str(config)]
    if resume:
        args.append("--resume")
    if overwrite:
        args.append("--overwrite")
    for key, value in options.items():
        if value is None:
            continue
        # One argument "--name=value": a boolean switch never takes the next argument as its value.
        args.append("--" + key.replace("_", "-") + "=" + _option_value(key, value))
    args += [str(i) for i in inputs]
    from . import _flt_train  # the training pipeline, loaded on first use

    raw = _flt_train.train(args, callback, progress)
    return TrainResult(**{**raw, "run_dir": str(raw["run_dir"]), "model_path": str(raw["model_path"])})
