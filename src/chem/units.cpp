#include "chem/units.hpp"

#include "core/error.hpp"

#include <array>

namespace flt::chem::units {
namespace {

// A unit is a dimension tag and its size in the dimension's base unit (energy: eV; length:
// Angstrom; dipole: Debye; frequency: GHz; heat capacity: cal/(mol K)).
struct UnitDef {
  std::string_view name;
  std::string_view dimension;
  double in_base;
};

constexpr std::array kUnits = {
    UnitDef{"", "dimensionless", 1.0},
    UnitDef{"eV", "energy", 1.0},
    UnitDef{"meV", "energy", 1e-3},
    UnitDef{"Hartree", "energy", kHartreeToEv},
    UnitDef{"Ha", "energy", kHartreeToEv},
    UnitDef{"kcal/mol", "energy", kKcalPerMolToEv},
    UnitDef{"kJ/mol", "energy", kKjPerMolToEv},
    UnitDef{"Angstrom", "length", 1.0},
    UnitDef{"Bohr", "length", kBohrToAngstrom},
    UnitDef{"Angstrom^2", "area", 1.0},
    UnitDef{"Bohr^2", "area", kBohr2ToAngstrom2},
    UnitDef{"Angstrom^3", "volume", 1.0},
    UnitDef{"Bohr^3", "volume", kBohr3ToAngstrom3},
    UnitDef{"Debye", "dipole", 1.0},
    UnitDef{"e*Angstrom", "dipole", 1.0 / kDebyeToEAngstrom},
    UnitDef{"e*Bohr", "dipole", kBohrToAngstrom / kDebyeToEAngstrom},
    UnitDef{"GHz", "frequency", 1.0},
    UnitDef{"MHz", "frequency", 1e-3},
    UnitDef{"cm^-1", "frequency", kWavenumberToGhz},
    UnitDef{"cal/(mol K)", "heat capacity", 1.0},
    UnitDef{"J/(mol K)", "heat capacity", 1.0 / kCalToJoule},
    UnitDef{"e", "charge", 1.0},
    UnitDef{"eV/Angstrom", "force", 1.0},
    UnitDef{"Hartree/Bohr", "force", kHartreeToEv / kBohrToAngstrom},
};

const UnitDef* find(std::string_view name) {
  for (const auto& unit : kUnits) {
    if (unit.name == name) return &unit;
  }
  return nullptr;
}

}  // namespace

bool is_known(std::string_view name) { return find(name) != nullptr; }

double factor(std::string_view from, std::string_view to) {
  const UnitDef* a = find(from);
  const UnitDef* b = find(to);
  if (a == nullptr) throw InvalidArgument("unknown unit '" + std::string(from) + "'");
  if (b == nullptr) throw InvalidArgument("unknown unit '" + std::string(to) + "'");
  if (a->dimension != b->dimension) {
    throw InvalidArgument("cannot convert " + std::string(a->dimension) + " '" + std::string(from) +
                          "' to " + std::string(b->dimension) + " '" + std::string(to) + "'");
  }
  return a->in_base / b->in_base;
}

}  // namespace flt::chem::units
