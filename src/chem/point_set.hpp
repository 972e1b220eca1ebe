// PointSet: one molecule (one conformer) as the model sees it: atoms with atomic numbers, 3-D
// coordinates in Angstrom and formal charges, plus everything the input said about it (title,
// labels as ordered key/value strings with parsed numbers and units, per-atom extra columns such as
// forces or Mulliken charges) and where it came from (file, 1-based record number).
#pragma once

#include "core/tensor.hpp"

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace RDKit {
class ROMol;
}

namespace flt::chem {

// One input label, in input order: an SD tag, an extended-XYZ comment key=value pair, a QM9 header
// value.
struct Property {
  std::string key;
  std::string value;             // exactly as in the input (trimmed of surrounding blanks)
  std::optional<double> number;  // the value parsed as a number when the whole value is one
  std::string unit;              // e.g. "Hartree" for QM9 U0; empty when the input gives none
  bool unit_by_convention = false;  // `unit` is the format's convention (ASE's eV), not the file's word
};

// A per-atom column beyond species and positions (extended XYZ `forces:R:3`, QM9 Mulliken
// charges). Values are row-major: atom i, component c at [i * width + c].
struct AtomColumn {
  std::string name;
  char type = 'R';  // 'R' real, 'I' integer, 'L' logical (0/1) -> `values`; 'S' string -> `strings`
  int width = 1;
  std::string unit;  // e.g. "e" for Mulliken charges; empty when unknown
  std::vector<double> values;
  std::vector<std::string> strings;
};

struct PointSet {
  std::vector<int> atomic_numbers;  // Z per atom, 1..118
  Mat<double> positions;            // N x 3, Angstrom
  std::vector<int> formal_charges;  // per atom, units of e (0 when the format has none)
  std::string title;                // SDF/MOL name line, XYZ comment line, QM9 "gdb N"
  std::vector<Property> properties;
  std::vector<AtomColumn> atom_columns;
  std::string source;      // the file (for archives "archive.tar.bz2:member.xyz"; "-" for stdin)
  std::size_t record = 0;  // 1-based record number within `source`

  // What the reader did to the record (all logged as well).
  int hydrogens_added = 0;           // implicit H made explicit with RDKit AddHs(addCoords)
  bool conformer_generated = false;  // coordinates generated with ETKDG (input had none in 3-D)
  bool coordinates_3d = true;        // false only for 2-D records read with Missing3D::accept

  // The RDKit molecule for SDF/MOL inputs (bonds, stereo; atoms in the same order as above); null
  // for XYZ inputs or when ReadOptions::keep_molecule is false. The SDF writer uses it.
  std::shared_ptr<const RDKit::ROMol> molecule;

  std::size_t size() const noexcept { return atomic_numbers.size(); }
  // The first property with this key, or null.
  const Property* property(std::string_view key) const noexcept;
  // The parsed number of property `key`, or nullopt when absent or not numeric.
  std::optional<double> number(std::string_view key) const noexcept;
  // The atom column with this name, or null.
  const AtomColumn* column(std::string_view name) const noexcept;
  // Adds or replaces property `key` (keeps the position of an existing one).
  void set_property(std::string key, std::string value, std::string unit = {});
};

// Parses a whole string as a floating-point number: leading/trailing blanks allowed, a leading '+'
// allowed, Mathematica exponents "1.5*^-6" accepted (QM9). nullopt for anything else.
std::optional<double> parse_number(std::string_view text);

// A column header or SD tag name "U0 [eV]" (or "U0[eV]") as key "U0" and unit "eV": flt's own
// convention for units in names (CSV headers, SD tags). A name without a trailing "[...]", or with
// nothing before it, is the key as it is, without a unit.
std::pair<std::string, std::string> split_key_unit(const std::string& name);

// Checks a point set's geometry: every coordinate finite, no two atoms closer than `min_distance`
// Angstrom (0 disables). Returns the reason of the first problem found, or nullopt when fine.
// All pairs up to 96 atoms; above, a cell grid (O(N) for molecules of any size). Atoms are named
// by 1-based index, followed by atom_name(0-based index) in parentheses when given (e.g. the PDB
// residue and atom name).
std::optional<std::string> check_geometry(const PointSet& points, double min_distance,
                                          const std::function<std::string(Index)>& atom_name = {});

}  // namespace flt::chem
