#include "io/units.hpp"

#include <cmath>
#include <utility>

namespace flt::io {
namespace {

constexpr double kHartreeEv = 27.211386245988;
constexpr double kFaraday = 96485.33212331001;  // N_A * e in C/mol, exact since 2019
constexpr double kKjPerMolEv = 1000.0 / kFaraday;
constexpr double kKcalPerMolEv = 4.184 * kKjPerMolEv;
constexpr double kBohrA = 0.529177210903;
constexpr double kAuDipoleDebye = 2.541746473;
constexpr double kCmInvGhz = 29.9792458;

struct Alias {
  std::string_view alias;
  std::string_view canonical;
};

const std::vector<Alias>& aliases() {
  static const std::vector<Alias> table = {
      {"Ha", "Hartree"}, {"hartree", "Hartree"}, {"Eh", "Hartree"}, {"au", "Hartree"}, {"a.u.", "Hartree"},
      {"ev", "eV"}, {"kcal mol^-1", "kcal/mol"}, {"kcal/mole", "kcal/mol"}, {"kJ mol^-1", "kJ/mol"},
      {"kj/mol", "kJ/mol"}, {"D", "Debye"}, {"debye", "Debye"}, {"e*a0", "e*Bohr"}, {"A", "Angstrom"},
      {"\xC3\x85", "Angstrom"}, {"Ang", "Angstrom"}, {"angstrom", "Angstrom"}, {"a0", "Bohr"}, {"bohr", "Bohr"},
      {"Bohr**2", "Bohr^2"}, {"a0^2", "Bohr^2"}, {"Bohr**3", "Bohr^3"}, {"a0^3", "Bohr^3"}, {"A^2", "Angstrom^2"},
      {"\xC3\x85^2", "Angstrom^2"}, {"A^3", "Angstrom^3"}, {"\xC3\x85^3", "Angstrom^3"}, {"cal/mol/K", "cal/(mol K)"},
      {"cal/molK", "cal/(mol K)"}, {"cal/(mol*K)", "cal/(mol K)"}, {"J/mol/K", "J/(mol K)"}, {"J/(mol*K)", "J/(mol K)"},
      {"cm-1", "cm^-1"}, {"1/cm", "cm^-1"}, {"ghz", "GHz"}, {"1", ""}, {"dimensionless", ""}};
  return table;
}

}  // namespace

const char* to_string(Dimension d) noexcept {
  switch (d) {
    case Dimension::dimensionless: return "dimensionless";
    case Dimension::energy: return "energy";
    case Dimension::dipole: return "dipole moment";
    case Dimension::length: return "length";
    case Dimension::area: return "area";
    case Dimension::volume: return "volume";
    case Dimension::frequency: return "frequency";
    case Dimension::heat_capacity: return "molar heat capacity";
  }
  return "?";
}

const char* to_string(Extent e) noexcept { return e == Extent::extensive ? "extensive" : "intensive"; }

const std::vector<Unit>& unit_table() {
  static const std::vector<Unit> table = {
      {"", Dimension::dimensionless, 1.0},
      {"eV", Dimension::energy, 1.0},
      {"meV", Dimension::energy, 1e-3},
      {"Hartree", Dimension::energy, kHartreeEv},
      {"kcal/mol", Dimension::energy, kKcalPerMolEv},
      {"kJ/mol", Dimension::energy, kKjPerMolEv},
      {"Debye", Dimension::dipole, 1.0},
      {"e*Bohr", Dimension::dipole, kAuDipoleDebye},
      {"Angstrom", Dimension::length, 1.0},
      {"Bohr", Dimension::length, kBohrA},
      {"nm", Dimension::length, 10.0},
      {"Angstrom^2", Dimension::area, 1.0},
      {"Bohr^2", Dimension::area, kBohrA * kBohrA},
      {"Angstrom^3", Dimension::volume, 1.0},
      {"Bohr^3", Dimension::volume, kBohrA * kBohrA * kBohrA},
      {"GHz", Dimension::frequency, 1.0},
      {"MHz", Dimension::frequency, 1e-3},
      {"cm^-1", Dimension::frequency, kCmInvGhz},
      {"cal/(mol K)", Dimension::heat_capacity, 1.0},
      {"J/(mol K)", Dimension::heat_capacity, 1.0 / 4.184},
  };
  return table;
}

bool is_known_unit(std::string_view name) {
  for (const auto& a : aliases())
    if (a.alias == name) return true;
  for (const auto& u : unit_table())
    if (u.name == name) return true;
  return false;
}

const Unit& find_unit(std::string_view name) {
  for (const auto& a : aliases())
    if (a.alias == name) name = a.canonical;
  for (const auto& u : unit_table())
    if (u.name == name) return u;
  std::string known;
  for (const auto& u : unit_table())
    if (!u.name.empty()) known += (known.empty() ? "" : ", ") + std::string(u.name);
  throw ConfigError("unknown unit '" + std::string(name) + "' (known: " + known + ")");
}

double conversion_factor(const Unit& from, const Unit& to) {
  if (from.dimension != to.dimension)
    throw ConfigError("cannot convert " + std::string(from.name.empty() ? "1" : from.name) + " (" +
                      to_string(from.dimension) + ") to " + std::string(to.name.empty() ? "1" : to.name) + " (" +
                      to_string(to.dimension) + ")");
  if (&from == &to) return 1.0;
  return from.to_base / to.to_base;
}

double convert(double value, const Unit& from, const Unit& to) {
  if (&from == &to) return value;
  // Multiply by from.to_base then divide by to.to_base: exact when either factor is 1.
  return value * from.to_base / to.to_base;
}

double convert(double value, std::string_view from, std::string_view to) {
  const Unit& f = find_unit(from);
  const Unit& t = find_unit(to);
  (void)conversion_factor(f, t);  // dimension check
  return convert(value, f, t);
}

const std::vector<TargetInfo>& qm9_targets() {
  using E = Extent;
  static const std::vector<TargetInfo> table = {
      {"A", "rotational constant A", "GHz", "GHz", E::intensive, 0},
      {"B", "rotational constant B", "GHz", "GHz", E::intensive, 1},
      {"C", "rotational constant C", "GHz", "GHz", E::intensive, 2},
      {"mu", "dipole moment", "Debye", "Debye", E::intensive, 3},
      {"alpha", "isotropic polarizability", "Bohr^3", "Bohr^3", E::extensive, 4},
      {"homo", "energy of the HOMO", "Hartree", "eV", E::intensive, 5},
      {"lumo", "energy of the LUMO", "Hartree", "eV", E::intensive, 6},
      {"gap", "HOMO-LUMO gap", "Hartree", "eV", E::intensive, 7},
      {"r2", "electronic spatial extent", "Bohr^2", "Bohr^2", E::extensive, 8},
      {"zpve", "zero-point vibrational energy", "Hartree", "eV", E::extensive, 9},
      {"U0", "internal energy at 0 K", "Hartree", "eV", E::extensive, 10},
      {"U", "internal energy at 298.15 K", "Hartree", "eV", E::extensive, 11},
      {"H", "enthalpy at 298.15 K", "Hartree", "eV", E::extensive, 12},
      {"G", "free energy at 298.15 K", "Hartree", "eV", E::extensive, 13},
      {"Cv", "heat capacity at 298.15 K", "cal/(mol K)", "cal/(mol K)", E::extensive, 14},
  };
  return table;
}

std::optional<double> qm9_free_atom_energy(std::string_view name, int atomic_number) {
  // QM9 atomref (Hartree): rows H, C, N, O, F; columns U0, U (298.15 K), H (298.15 K), G (298.15 K).
  // Checked against the bundled subset: E - sum_i E_free(Z_i) reproduces the index's u0_atom,
  // u298_atom, h298_atom and g298_atom columns to 0.002 kcal/mol (their printed precision) for
  // all 13,023 molecules (tests/pipeline/test_predict_atomization.cpp).
  struct Row {
    int z;
    double u0, u298, h298, g298;
  };
  static constexpr Row rows[] = {
      {1, -0.500273, -0.498857, -0.497912, -0.510927},
      {6, -37.846772, -37.845355, -37.844411, -37.861317},
      {7, -54.583861, -54.582445, -54.581501, -54.598897},
      {8, -75.064579, -75.063163, -75.062219, -75.079532},
      {9, -99.718730, -99.717314, -99.716370, -99.733544},
  };
  for (const Row& r : rows) {
    if (r.z != atomic_number) continue;
    if (name == "U0") return r.u0;
    if (name == "U") return r.u298;
    if (name == "H") return r.h298;
    if (name == "G") return r.g298;
    return std::nullopt;
  }
  return std::nullopt;
}

const TargetInfo* find_qm9_target(std::string_view name) {
  for (const auto& t : qm9_targets())
    if (t.name == name) return &t;
  return nullptr;
}

std::pair<std::string, std::string> split_unit_suffix(std::string_view header) {
  const std::size_t open = header.rfind('[');
  const std::size_t close = header.rfind(']');
  if (open == std::string_view::npos && close == std::string_view::npos) {
    std::string_view name = header;
    while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
    return {std::string(name), ""};
  }
  if (open == std::string_view::npos || close == std::string_view::npos || close < open ||
      close + 1 != header.size())
    throw ConfigError("malformed unit suffix in '" + std::string(header) + "' (expected 'name [unit]')");
  std::string_view name = header.substr(0, open);
  while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
  return {std::string(name), std::string(header.substr(open + 1, close - open - 1))};
}

std::string with_unit_suffix(std::string_view name, std::string_view unit) {
  return std::string(name) + " [" + (unit.empty() ? std::string("1") : std::string(unit)) + "]";
}

}  // namespace flt::io
