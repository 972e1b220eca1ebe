// The 15 QM9 properties (Ramakrishnan et al., Sci. Data 1, 140022 (2014)) in the order of the
// dsgdb9nsd_*.xyz comment line, with their units. The QM9 reader stores each as a Property with
// this key and unit (the unit names are those of io/units.hpp, which converts them at the
// training boundary, and which also holds QM9's free-atom energies for atomization energies).
#pragma once

#include <array>
#include <optional>
#include <string_view>

namespace flt::chem {

struct Qm9Property {
  std::string_view key;
  std::string_view unit;
  std::string_view description;
};

inline constexpr std::array<Qm9Property, 15> kQm9Properties = {{
    {"A", "GHz", "rotational constant A"},
    {"B", "GHz", "rotational constant B"},
    {"C", "GHz", "rotational constant C"},
    {"mu", "Debye", "dipole moment"},
    {"alpha", "Bohr^3", "isotropic polarizability"},
    {"homo", "Hartree", "energy of the highest occupied molecular orbital"},
    {"lumo", "Hartree", "energy of the lowest unoccupied molecular orbital"},
    {"gap", "Hartree", "lumo - homo"},
    {"r2", "Bohr^2", "electronic spatial extent"},
    {"zpve", "Hartree", "zero-point vibrational energy"},
    {"U0", "Hartree", "internal energy at 0 K"},
    {"U", "Hartree", "internal energy at 298.15 K"},
    {"H", "Hartree", "enthalpy at 298.15 K"},
    {"G", "Hartree", "free energy at 298.15 K"},
    {"Cv", "cal/(mol K)", "heat capacity at 298.15 K"},
}};

}  // namespace flt::chem
