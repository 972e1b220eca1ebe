// Neighbour lists within a cutoff for ragged batches of point sets (molecules, clusters).
//
// For every row i (destination atom) of the batch, the pairs p in [offsets[i], offsets[i+1])
// name the sources j of the same set with |r_i - r_j| < cutoff, in increasing j, including i
// itself (the self pair, distance 0) when include_self. Coordinates in Angstrom. The distance is
// computed in double from the given coordinates, the same way for every path, and the test is
// strict: a pair exactly at the cutoff is not in the list; coincident atoms (distance 0) are.
// The list is symmetric: j is a source of row i iff i is a source of row j.
// Sets of up to brute_force_limit atoms are searched pair by pair (O(n^2)), larger ones with a
// cell list (O(n k) time, O(n + pairs) memory); both give exactly build_neighbour_list_reference,
// for any thread count. Cost and the cell list: docs/attention.md, "Neighbour lists".
#pragma once

#include "core/ragged.hpp"
#include "core/tensor.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace flt::attn {

struct NeighbourList {
  double cutoff = 0.0;
  bool include_self = true;
  std::vector<std::int64_t> offsets;  // N + 1: pairs of row i are [offsets[i], offsets[i + 1])
  std::vector<std::int32_t> source;   // P: j of each pair (global row of the batch)
  std::vector<std::int32_t> target;   // P: i of each pair (the row that owns it)

  Index num_rows() const noexcept { return offsets.empty() ? 0 : static_cast<Index>(offsets.size()) - 1; }
  Index num_pairs() const noexcept { return static_cast<Index>(source.size()); }
};

// coords: N x 3 (N = sets.total_rows()). Throws InvalidArgument for a non-positive or non-finite
// cutoff, a shape mismatch, a non-finite coordinate (naming the row and its set), more than
// 2^31 - 1 rows or a negative brute_force_limit (0: every set of 2 or more atoms uses cells).
NeighbourList build_neighbour_list(const RaggedIndex& sets, ConstMatRef<double> coords, double cutoff,
                                   bool include_self = true, Index brute_force_limit = 64);

// The readable O(n^2)-per-set reference the tests compare the cell list with.
NeighbourList build_neighbour_list_reference(const RaggedIndex& sets, ConstMatRef<double> coords,
                                             double cutoff, bool include_self = true);

// True when every pair of the set (self pairs included when the list has them) is in the list:
// the set fits within the cutoff, so attention restricted to the list is attention over the set.
// An empty set is complete. Throws InvalidArgument for a set out of range or a list whose row
// count is not sets.total_rows().
bool set_is_complete(const NeighbourList& list, const RaggedIndex& sets, Index set);

// Checks that list is a neighbour list of `rows` rows as this module builds them: offsets from 0
// to the pair count, never decreasing; every pair's target its row; sources strictly increasing
// within a row and inside the row's set (inside [0, rows) when sets is null); and, when symmetric,
// j a source of row i iff i a source of row j. Lists built elsewhere (callers may fill the struct
// themselves) go through this before a kernel indexes with them. Throws InvalidArgument starting
// with who and naming the first row that breaks the contract. O(rows + pairs), parallel over rows.
void check_neighbour_list(const NeighbourList& list, Index rows, const RaggedIndex* sets, bool symmetric,
                          const std::string& who);

// A renumbering of rows that puts atoms near in space near in memory, for kernels whose speed and
// memory depend on it (the near field's backward gives each group of rows halo rows for its
// sources outside the group). Each set of at least min_rows rows is cut into cells of side `cell`
// (Angstrom) from its bounding box's lower corner, the cells taken in Morton (Z) order and the atoms
// of a cell in their given order; smaller sets keep their order. Returns order, N rows:
// order[new_row] = old_row, a permutation within each set. Depends on the coordinates only (not
// on the thread count). InvalidArgument for a non-positive cell, a shape mismatch or a non-finite
// coordinate in a set it reorders.
std::vector<Index> cell_order(const RaggedIndex& sets, ConstMatRef<double> coords, double cell, Index min_rows);

// A pair that breaks symmetry: row `row` lists `source`, and row `source` does not list `row`.
struct AsymmetricPair {
  Index row = -1, source = -1;
};
// The first such pair met walking the rows in order, or nothing for a symmetric list. The list
// must be otherwise well formed (check_neighbour_list with symmetric = false). O(rows + pairs).
std::optional<AsymmetricPair> find_asymmetric_pair(const NeighbourList& list);

}  // namespace flt::attn
