// Element symbols <-> atomic numbers (Z = 1..118), with the validation every text reader uses.
#pragma once

#include <optional>
#include <string_view>

namespace flt::chem {

inline constexpr int kMaxAtomicNumber = 118;

// The IUPAC symbol of element `z` ("C" for 6); throws flt::InvalidArgument outside 1..118.
std::string_view element_symbol(int z);

// The atomic number of `symbol`, or nullopt when it is not an element. Accepts any letter case
// ("CL" and "cl" give 17, as some XYZ writers emit), the hydrogen isotopes "D" and "T" (-> 1),
// and a plain atomic number written as digits ("6" -> 6), as some XYZ files use.
std::optional<int> atomic_number(std::string_view symbol);

// The standard atomic weight of element `z` in amu (RDKit's periodic table, IUPAC values; for
// elements without a stable isotope the mass number of the longest-lived one). Throws
// flt::InvalidArgument outside 1..118.
double standard_atomic_weight(int z);

}  // namespace flt::chem
