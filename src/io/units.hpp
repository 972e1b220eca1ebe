// Physical units at the data boundary. Every quantity inside training is in one unit per target
// (the target's training unit); conversion happens when labels are read and predictions written.
// Factors are CODATA 2018 (the constants SI has fixed since 2019, plus the Hartree energy and the
// Bohr radius):
//   1 Hartree      = 27.211386245988 eV
//   1 kcal/mol     = 4184 J/mol / (N_A e) = 0.0433641043... eV  (N_A e = 96485.33212... C/mol)
//   1 kJ/mol       = 0.0103642696... eV
//   1 Bohr         = 0.529177210903 Angstrom
//   1 e*Bohr (a.u. dipole) = 2.541746473 Debye
//   1 J/(mol K)    = 1/4.184 cal/(mol K)
//   1 cm^-1        = 29.9792458 GHz (c = 299792458 m/s)
// This is flt's one units table: the chem readers store unit names from it (the QM9 reader: qm9_targets).
#pragma once

#include "core/error.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace flt::io {

enum class Dimension { dimensionless, energy, dipole, length, area, volume, frequency, heat_capacity };
const char* to_string(Dimension d) noexcept;

struct Unit {
  std::string_view name;    // canonical spelling, used in CSV headers: "eV", "kcal/mol", "Bohr^3"
  Dimension dimension;
  double to_base;           // value_in_base = value * to_base; base units: eV, Debye, Angstrom,
                            // Angstrom^2, Angstrom^3, GHz, cal/(mol K), 1
};

// The table of known units (canonical names). Lookup also accepts aliases (case-sensitive where it
// matters: "meV" vs "MeV"): Ha, hartree, Eh, au (energy: Hartree), kcal/mol, kcal mol^-1, kJ/mol,
// D, debye, A, Å, Ang, angstrom, a0, bohr, Bohr**3, a0^3, A^3, Å^3, cal/mol/K, cal/molK, J/(mol K),
// J/mol/K, cm^-1, MHz, "" or "1" (dimensionless).
const std::vector<Unit>& unit_table();
// Throws ConfigError("unknown unit 'x' (known: ...)").
const Unit& find_unit(std::string_view name);
bool is_known_unit(std::string_view name);

// value * from.to_base / to.to_base; throws ConfigError if the dimensions differ.
double convert(double value, const Unit& from, const Unit& to);
double convert(double value, std::string_view from, std::string_view to);
// The factor f with value_to = f * value_from.
double conversion_factor(const Unit& from, const Unit& to);

// How a per-molecule property relates to per-atom contributions in the model's readout.
enum class Extent { extensive, intensive };  // summed over atoms / averaged over atoms
const char* to_string(Extent e) noexcept;

// A QM9 target (Ramakrishnan et al., Sci. Data 1, 140022 (2014), table of properties).
struct TargetInfo {
  std::string_view name;            // "U0"
  std::string_view description;
  std::string_view source_unit;     // unit in the QM9 files
  std::string_view training_unit;   // default unit in flt (energies in eV, others natural)
  Extent extent;
  int qm9_column;                   // 0-based index among the 15 properties after "gdb <index>"
};

// The 15 QM9 properties in file order: A, B, C, mu, alpha, homo, lumo, gap, r2, zpve, U0, U, H, G, Cv.
const std::vector<TargetInfo>& qm9_targets();
// nullptr if `name` is not a QM9 property. Case-sensitive ("U0", "homo", "Cv").
const TargetInfo* find_qm9_target(std::string_view name);

// Energy of the free atom of element `atomic_number` for the QM9 energy property `name` (U0, U,
// H or G), in Hartree, at QM9's level of theory (B3LYP/6-31G(2df,p); the "atomref" table of
// Ramakrishnan et al., Sci. Data 1, 140022 (2014)). nullopt for other properties and for elements
// outside H, C, N, O, F. The atomization energy of a molecule is then
//   E_atomization = E - sum_i E_free(Z_i)      (negative for a bound molecule),
// which is what QM9's derived columns u0_atom ... g298_atom hold (in kcal/mol).
std::optional<double> qm9_free_atom_energy(std::string_view name, int atomic_number);

// Splits a CSV header like "U0 [Hartree]" or "gap_pred [eV]" into name and unit; no brackets gives
// an empty unit. Throws ConfigError for an unbalanced bracket.
std::pair<std::string, std::string> split_unit_suffix(std::string_view header);
// A unit as tables and CSV unit columns show it: "1" for a dimensionless quantity (empty unit).
inline std::string shown_unit(std::string_view unit) { return unit.empty() ? std::string("1") : std::string(unit); }
// "U0 [eV]"; a dimensionless quantity (empty unit) gets "[1]", so every column states its unit.
std::string with_unit_suffix(std::string_view name, std::string_view unit);

}  // namespace flt::io
