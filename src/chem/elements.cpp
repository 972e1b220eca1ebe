#include "chem/elements.hpp"

#include "core/error.hpp"

#include <GraphMol/PeriodicTable.h>

#include <array>
#include <cctype>
#include <string>

namespace flt::chem {
namespace {

constexpr std::array<std::string_view, kMaxAtomicNumber + 1> kSymbols = {
    "",   "H",  "He", "Li", "Be", "B",  "C",  "N",  "O",  "F",  "Ne", "Na", "Mg", "Al", "Si",
    "P",  "S",  "Cl", "Ar", "K",  "Ca", "Sc", "Ti", "V",  "Cr", "Mn", "Fe", "Co", "Ni", "Cu",
    "Zn", "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y",  "Zr", "Nb", "Mo", "Tc", "Ru",
    "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I",  "Xe", "Cs", "Ba", "La", "Ce", "Pr",
    "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W",
    "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac",
    "Th", "Pa", "U",  "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf",
    "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og"};

}  // namespace

std::string_view element_symbol(int z) {
  if (z < 1 || z > kMaxAtomicNumber) {
    throw InvalidArgument("atomic number " + std::to_string(z) + " is outside 1..118");
  }
  return kSymbols[static_cast<std::size_t>(z)];
}

std::optional<int> atomic_number(std::string_view symbol) {
  if (symbol.empty() || symbol.size() > 3) return std::nullopt;
  if (std::isdigit(static_cast<unsigned char>(symbol[0]))) {
    int z = 0;
    for (char c : symbol) {
      if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
      z = z * 10 + (c - '0');
    }
    if (z < 1 || z > kMaxAtomicNumber) return std::nullopt;
    return z;
  }
  if (symbol.size() > 2) return std::nullopt;
  std::string normal;
  for (std::size_t i = 0; i < symbol.size(); ++i) {
    const auto c = static_cast<unsigned char>(symbol[i]);
    if (!std::isalpha(c)) return std::nullopt;
    normal.push_back(static_cast<char>(i == 0 ? std::toupper(c) : std::tolower(c)));
  }
  if (normal == "D" || normal == "T") return 1;
  for (int z = 1; z <= kMaxAtomicNumber; ++z) {
    if (kSymbols[static_cast<std::size_t>(z)] == normal) return z;
  }
  return std::nullopt;
}

double standard_atomic_weight(int z) {
  (void)element_symbol(z);  // validates z
  return RDKit::PeriodicTable::getTable()->getAtomicWeight(static_cast<unsigned>(z));
}

}  // namespace flt::chem
