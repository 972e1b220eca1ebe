"""ASE interoperability: an flt energy model as an ASE calculator.

    from ase.io import read
    from flt.ase import FLTCalculator

    atoms = read("ethanol.xyz")
    atoms.calc = FLTCalculator("energy_model.flt")   # or a loaded flt.Model; default: bundled model
    atoms.get_potential_energy()                      # eV, as ASE expects

The calculator predicts one energy target of the model (``target``; default: "energy" when the
model has it, else "U0") and converts it to eV, and its forces F = -dE/dr in eV/A (one backward
pass of the model; conservative by construction). Atoms are an isolated molecule: periodic cells
are rejected (flt models have no periodic images).
"""

from __future__ import annotations

from typing import Optional, Union

from ase.calculators.calculator import Calculator, all_changes

from . import InvalidInput, Model

# Energy units flt writes (src/io/units.hpp), in eV; CODATA 2018 as in the C++ table:
# 1 Hartree = 27.211386245988 eV; 1 kcal/mol = 4184 J/mol / (N_A e); 1 kJ/mol = 1000 J/mol / (N_A e).
_FARADAY = 96485.33212331001  # N_A e in C/mol
_EV_PER_UNIT = {
    "eV": 1.0,
    "meV": 1e-3,
    "Hartree": 27.211386245988,
    "kcal/mol": 4184.0 / _FARADAY,
    "kJ/mol": 1000.0 / _FARADAY,
}


class FLTCalculator(Calculator):
    """Energy of an ASE Atoms object from an flt model (eV)."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, model: Union[None, str, Model] = None, target: Optional[str] = None,
                 threads: int = 0, **kwargs):
        super().__init__(**kwargs)
        if model is None:
            model = Model.load_default()
        elif not isinstance(model, Model):
            model = Model.load(model)
        self.model = model
        names = model.names
        if target is None:
            target = next((t for t in ("energy", "U0") if t in names), None)
            if target is None:
                raise InvalidInput(f"flt.ase: the model predicts no 'energy' or 'U0' target "
                                   f"({', '.join(names)}); pass target=...")
        if target not in names:
            raise InvalidInput(f"flt.ase: the model has no target '{target}' ({', '.join(names)})")
        self.target = target
        unit = model.units[names.index(target)]
        if unit not in _EV_PER_UNIT or not model.targets[names.index(target)].extensive:
            raise InvalidInput(f"flt.ase: target '{target}' ({unit}) is not an extensive energy "
                               f"(units {', '.join(_EV_PER_UNIT)})")
        self._index = names.index(target)
        self._to_ev = _EV_PER_UNIT[unit]
        self.threads = threads

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        want_forces = "forces" in properties
        # Model.predict takes the Atoms as they are; a periodic one comes back as an error row.
        table = self.model.predict(self.atoms, threads=self.threads, forces=want_forces,
                                   forces_target=self.target)
        if table.errors[0] is not None:
            raise InvalidInput(f"flt.ase: {table.errors[0]}")
        energy = float(table.values[0, self._index]) * self._to_ev
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        if want_forces:
            self.results["forces"] = table.forces[0] * self._to_ev  # (target unit)/A -> eV/A
