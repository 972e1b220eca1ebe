// The 15 QM9 properties (Ramakrishnan et al., Sci. Data 1, 140022 (2014)) in the order of the
// dsgdb9nsd_*.xyz comment line, with their units. The QM9 reader stores each as a Property with
// this key and unit; convert with units::factor(), e.g. U0 in eV = number("U0") *
// units::factor("Hartree", "eV").
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

// B3LYP/6-31G(2df,p) energies of the free atoms (Hartree, QM9 atomref table, U0 column), for
// atomization energies: E_atomization = U0 - sum_i E_free(Z_i). nullopt for elements QM9 lacks.
inline constexpr std::optional<double> qm9_free_atom_energy(int z) {
  switch (z) {
    case 1: return -0.500273;
    case 6: return -37.846772;
    case 7: return -54.583861;
    case 8: return -75.064579;
    case 9: return -99.718730;
    default: return std::nullopt;
  }
}

}  // namespace flt::chem
