// Units of the quantities flt reads and predicts, and the conversion factors between them.
// Every property carries its unit as a string (Property::unit); these helpers turn values into the
// unit a model trains in. Factors are CODATA 2018 unless stated.
#pragma once

#include <string>
#include <string_view>

namespace flt::chem::units {

// Energy.
inline constexpr double kHartreeToEv = 27.211386;          // 1 Ha = 27.211386 eV
inline constexpr double kKcalPerMolToEv = 0.0433641;       // 1 kcal/mol = 0.0433641 eV
inline constexpr double kKjPerMolToEv = 0.0103642688;      // 1 kJ/mol = 0.0103642688 eV
inline constexpr double kHartreeToKcalPerMol = kHartreeToEv / kKcalPerMolToEv;  // ~627.5095
// Length, area, volume.
inline constexpr double kBohrToAngstrom = 0.529177210903;  // a0 in Angstrom
inline constexpr double kBohr2ToAngstrom2 = kBohrToAngstrom * kBohrToAngstrom;
inline constexpr double kBohr3ToAngstrom3 = kBohrToAngstrom * kBohrToAngstrom * kBohrToAngstrom;
// Dipole moment: 1 D = 0.20819434 e*Angstrom; 1 e*a0 = 2.541746 D.
inline constexpr double kDebyeToEAngstrom = 0.20819434;
// Heat capacity: thermochemical calorie.
inline constexpr double kCalToJoule = 4.184;
// Frequency: 1 GHz = 1e9 Hz; 1 cm^-1 = 29.9792458 GHz.
inline constexpr double kWavenumberToGhz = 29.9792458;

// Canonical unit names used in Property::unit and in CSV headers.
inline constexpr std::string_view kAngstrom = "Angstrom";
inline constexpr std::string_view kHartree = "Hartree";
inline constexpr std::string_view kEv = "eV";
inline constexpr std::string_view kKcalPerMol = "kcal/mol";
inline constexpr std::string_view kGhz = "GHz";
inline constexpr std::string_view kDebye = "Debye";
inline constexpr std::string_view kBohr2 = "Bohr^2";
inline constexpr std::string_view kBohr3 = "Bohr^3";
inline constexpr std::string_view kCalPerMolK = "cal/(mol K)";
inline constexpr std::string_view kElementaryCharge = "e";

// Multiplicative factor f with value_in_`to` = f * value_in_`from`. Both names must be known units
// of the same dimension (energy: Hartree, eV, kcal/mol, kJ/mol; length: Angstrom, Bohr; area:
// Angstrom^2, Bohr^2; volume: Angstrom^3, Bohr^3; dipole: Debye, e*Angstrom, e*Bohr; frequency:
// GHz, MHz, cm^-1; heat capacity: cal/(mol K), J/(mol K); charge: e; an empty name is
// dimensionless). Throws flt::InvalidArgument otherwise.
double factor(std::string_view from, std::string_view to);

// value * factor(from, to).
inline double convert(double value, std::string_view from, std::string_view to) {
  return value * factor(from, to);
}

// True when `name` is one of the units factor() knows.
bool is_known(std::string_view name);

}  // namespace flt::chem::units
