// Covalently bonded fragments of a structure, found from its geometry alone (no bond table, so
// plain XYZ input works): atoms i and j are bonded when
//   |r_i - r_j| < bond_scale (R_i + R_j),
// R the covalent radii of Cordero et al., "Covalent radii revisited", Dalton Trans. 2008, 2832
// (the single-bond radii; sp3 carbon), and a fragment is a connected component of that graph. The
// charge energy keeps each fragment at its net formal charge (docs/molecule-model.md).
#pragma once

#include "core/ragged.hpp"
#include "core/tensor.hpp"

#include <cstdint>
#include <vector>

namespace flt::models {

// The covalent radius of element z in Angstrom, z = 1..96; throws InvalidArgument outside.
double covalent_radius(int z);

// Fragment labels of a batch: of_atom[i] in [0, count), numbered in the order of each fragment's
// first atom, so the labels follow the batch's atom order. A fragment never spans two sets.
struct Fragments {
  std::vector<Index> of_atom;
  Index count = 0;
};

// Fragments of every set of the batch. O(N) time and memory through the cell-list neighbour list
// at the largest bond length present. Throws InvalidArgument for bond_scale outside (0, 3], an
// element without a radius or mismatched arrays.
Fragments covalent_fragments(const RaggedIndex& sets, ConstMatRef<double> coords,
                             const std::vector<std::int32_t>& atomic_numbers, double bond_scale);

// One fragment per set: the labels are the set indices.
Fragments set_fragments(const RaggedIndex& sets);

}  // namespace flt::models
