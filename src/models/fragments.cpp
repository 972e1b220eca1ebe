#include "models/fragments.hpp"

#include "attention/neighbours.hpp"
#include "core/error.hpp"

#include <algorithm>
#include <array>
#include <numeric>
#include <string>

namespace flt::models {

namespace {

// Cordero et al. 2008, Table 2, Angstrom, Z = 1..96 (low-spin values for Mn, Fe, Co).
constexpr std::array<double, 96> kCovalentRadii = {
    0.31, 0.28, 1.28, 0.96, 0.84, 0.76, 0.71, 0.66, 0.57, 0.58, 1.66, 1.41, 1.21, 1.11, 1.07, 1.05,
    1.02, 1.06, 2.03, 1.76, 1.70, 1.60, 1.53, 1.39, 1.39, 1.32, 1.26, 1.24, 1.32, 1.22, 1.22, 1.20,
    1.19, 1.20, 1.20, 1.16, 2.20, 1.95, 1.90, 1.75, 1.64, 1.54, 1.47, 1.46, 1.42, 1.39, 1.45, 1.44,
    1.42, 1.39, 1.39, 1.38, 1.39, 1.40, 2.44, 2.15, 2.07, 2.04, 2.03, 2.01, 1.99, 1.98, 1.98, 1.96,
    1.94, 1.92, 1.92, 1.89, 1.90, 1.87, 1.87, 1.75, 1.70, 1.62, 1.51, 1.44, 1.41, 1.36, 1.36, 1.32,
    1.45, 1.46, 1.48, 1.40, 1.50, 1.50, 2.60, 2.21, 2.15, 2.06, 2.00, 1.96, 1.90, 1.87, 1.80, 1.69};

// Union-find with the smaller root kept as the representative, so the result does not depend on
// the order in which bonds are joined.
Index find_root(std::vector<Index>& parent, Index i) {
  while (parent[static_cast<std::size_t>(i)] != i) {
    Index& p = parent[static_cast<std::size_t>(i)];
    p = parent[static_cast<std::size_t>(p)];  // path halving
    i = p;
  }
  return i;
}

}  // namespace

double covalent_radius(int z) {
  if (z < 1 || z > static_cast<int>(kCovalentRadii.size()))
    throw InvalidArgument("covalent_radius: no covalent radius for element Z=" + std::to_string(z) +
                          " (known: Z = 1..96)");
  return kCovalentRadii[static_cast<std::size_t>(z - 1)];
}

Fragments set_fragments(const RaggedIndex& sets) {
  Fragments f;
  f.count = sets.num_sets();
  f.of_atom.resize(static_cast<std::size_t>(sets.total_rows()));
  for (Index s = 0; s < sets.num_sets(); ++s)
    for (Index i = sets.begin(s); i < sets.end(s); ++i) f.of_atom[static_cast<std::size_t>(i)] = s;
  return f;
}

Fragments covalent_fragments(const RaggedIndex& sets, ConstMatRef<double> coords,
                             const std::vector<std::int32_t>& atomic_numbers, double bond_scale) {
  const Index N = sets.total_rows();
  require(coords.rows() == N && coords.cols() == 3 && static_cast<Index>(atomic_numbers.size()) == N,
          "covalent_fragments: coordinates and atomic numbers must have one row per atom");
  if (!(bond_scale > 0.0 && bond_scale <= 3.0))
    throw InvalidArgument("covalent_fragments: bond_scale must be in (0, 3]");
  std::vector<double> radius(static_cast<std::size_t>(N));
  double largest = 0.0;
  for (Index i = 0; i < N; ++i) {
    radius[static_cast<std::size_t>(i)] = covalent_radius(atomic_numbers[static_cast<std::size_t>(i)]);
    largest = std::max(largest, radius[static_cast<std::size_t>(i)]);
  }
  std::vector<Index> parent(static_cast<std::size_t>(N));
  std::iota(parent.begin(), parent.end(), Index{0});
  if (N > 0) {
    const attn::NeighbourList list =
        attn::build_neighbour_list(sets, coords, bond_scale * 2.0 * largest, /*include_self=*/false);
    for (Index p = 0; p < list.num_pairs(); ++p) {
      const Index i = list.target[static_cast<std::size_t>(p)], j = list.source[static_cast<std::size_t>(p)];
      if (j < i) continue;  // each bond once
      const double bond = bond_scale * (radius[static_cast<std::size_t>(i)] + radius[static_cast<std::size_t>(j)]);
      if ((coords.row(i) - coords.row(j)).squaredNorm() >= bond * bond) continue;
      const Index a = find_root(parent, i), b = find_root(parent, j);
      if (a != b) parent[static_cast<std::size_t>(std::max(a, b))] = std::min(a, b);
    }
  }
  // Label roots in atom order: a root is its fragment's first atom.
  Fragments f;
  f.of_atom.resize(static_cast<std::size_t>(N));
  for (Index i = 0; i < N; ++i) {
    const Index r = find_root(parent, i);
    f.of_atom[static_cast<std::size_t>(i)] = r == i ? f.count++ : f.of_atom[static_cast<std::size_t>(r)];
  }
  return f;
}

}  // namespace flt::models
