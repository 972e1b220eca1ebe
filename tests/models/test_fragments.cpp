// Covalently bonded fragments from geometry (models/fragments.hpp): labels of real molecules in
// one set and in several, the cell-list path against an O(N^2) reference on a cluster of 40
// randomly oriented waters, the bond threshold, and the refusals.
#include "core/random.hpp"
#include "models/fragments.hpp"

#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <numeric>
#include <vector>

using namespace flt;
using namespace flt::models;

namespace {

struct Atoms {
  std::vector<std::int32_t> z;
  std::vector<std::array<double, 3>> r;
  void add(int element, double x, double y, double zc) {
    z.push_back(element);
    r.push_back({x, y, zc});
  }
  Mat<double> coords() const {
    Mat<double> c(static_cast<Index>(r.size()), 3);
    for (std::size_t i = 0; i < r.size(); ++i)
      for (int a = 0; a < 3; ++a) c(static_cast<Index>(i), a) = r[i][static_cast<std::size_t>(a)];
    return c;
  }
};

// Water (O-H 0.96 A, 104.5 degrees) at `at`, rotated by the unit quaternion q.
void add_water(Atoms& atoms, std::array<double, 3> at, std::array<double, 4> q) {
  const double half = 0.5 * 104.5 * M_PI / 180.0;
  const std::array<std::array<double, 3>, 3> local = {
      {{0, 0, 0}, {0.96 * std::sin(half), 0.96 * std::cos(half), 0}, {-0.96 * std::sin(half), 0.96 * std::cos(half), 0}}};
  const auto [w, x, y, z] = q;
  const double R[3][3] = {{1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)},
                          {2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)},
                          {2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)}};
  const int element[] = {8, 1, 1};
  for (int a = 0; a < 3; ++a) {
    std::array<double, 3> p{};
    for (int i = 0; i < 3; ++i)
      p[static_cast<std::size_t>(i)] = at[static_cast<std::size_t>(i)] +
                                       R[i][0] * local[static_cast<std::size_t>(a)][0] +
                                       R[i][1] * local[static_cast<std::size_t>(a)][1] +
                                       R[i][2] * local[static_cast<std::size_t>(a)][2];
    atoms.add(element[a], p[0], p[1], p[2]);
  }
}

// Connected components by breadth-first search over all pairs of each set (the reference).
std::vector<Index> reference_fragments(const RaggedIndex& sets, const Mat<double>& c,
                                       const std::vector<std::int32_t>& z, double scale) {
  std::vector<Index> label(static_cast<std::size_t>(c.rows()), -1);
  Index next = 0;
  for (Index s = 0; s < sets.num_sets(); ++s)
    for (Index seed = sets.begin(s); seed < sets.end(s); ++seed) {
      if (label[static_cast<std::size_t>(seed)] >= 0) continue;
      std::vector<Index> queue = {seed};
      label[static_cast<std::size_t>(seed)] = next;
      for (std::size_t k = 0; k < queue.size(); ++k)
        for (Index j = sets.begin(s); j < sets.end(s); ++j) {
          const Index i = queue[k];
          const double bond = scale * (covalent_radius(z[static_cast<std::size_t>(i)]) +
                                       covalent_radius(z[static_cast<std::size_t>(j)]));
          if (label[static_cast<std::size_t>(j)] < 0 && (c.row(i) - c.row(j)).norm() < bond) {
            label[static_cast<std::size_t>(j)] = next;
            queue.push_back(j);
          }
        }
      ++next;
    }
  return label;
}

}  // namespace

TEST_CASE("fragments: molecules of one set and of several, labelled in atom order", "[models][fragments]") {
  Atoms atoms;
  add_water(atoms, {0, 0, 0}, {1, 0, 0, 0});
  atoms.add(6, 4.0, 0, 0);  // methane, C-H 1.09 A
  atoms.add(1, 4.0 + 1.09, 0, 0);
  atoms.add(1, 4.0 - 0.363, 1.028, 0);
  atoms.add(1, 4.0 - 0.363, -0.514, 0.890);
  atoms.add(1, 4.0 - 0.363, -0.514, -0.890);
  add_water(atoms, {0, 3.0, 0}, {0, 0, 0, 1});  // hydrogen-bond distance from the first water
  atoms.add(11, 0, -3.5, 0);                  // a sodium ion, alone
  // The second set repeats the first three waters' coordinates: fragments never cross sets.
  add_water(atoms, {0, 0, 0}, {1, 0, 0, 0});
  const std::vector<Index> sizes = {static_cast<Index>(atoms.z.size()) - 3, 3};
  const auto sets = RaggedIndex::from_sizes(sizes);
  const Fragments f = covalent_fragments(sets, atoms.coords(), atoms.z, 1.2);
  const std::vector<Index> expected = {0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 3, 4, 4, 4};
  CHECK(f.of_atom == expected);
  CHECK(f.count == 5);
  const Fragments by_set = set_fragments(sets);
  CHECK(by_set.count == 2);
  CHECK(by_set.of_atom == std::vector<Index>{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1});
}

TEST_CASE("fragments: the cell-list path equals the all-pairs reference on a water cluster",
          "[models][fragments]") {
  // 40 randomly oriented waters on a jittered 3.1 A grid (above the 64-atom brute-force limit);
  // a second set, a compressed copy at 0.5 of the spacing, where waters join into larger fragments.
  Rng rng(7);
  Atoms atoms;
  for (double spacing : {3.1, 1.55})
    for (int k = 0; k < 40; ++k) {
      std::array<double, 4> q = {rng.normal(), rng.normal(), rng.normal(), rng.normal()};
      const double n = std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
      for (double& v : q) v /= n;
      add_water(atoms, {spacing * (k % 4) + rng.uniform(-0.1, 0.1), spacing * ((k / 4) % 4),
                        spacing * (k / 16) + rng.uniform(-0.1, 0.1)}, q);
    }
  const std::vector<Index> sizes = {120, 120};
  const auto sets = RaggedIndex::from_sizes(sizes);
  const Mat<double> c = atoms.coords();
  const Fragments f = covalent_fragments(sets, c, atoms.z, 1.2);
  CHECK(f.of_atom == reference_fragments(sets, c, atoms.z, 1.2));
  Index first_set = 0;
  for (Index i = 0; i < 120; ++i) first_set = std::max(first_set, f.of_atom[static_cast<std::size_t>(i)] + 1);
  CHECK(first_set == 40);      // every water its own fragment
  CHECK(f.count - 40 < 40);    // the compressed copy has bonds between waters
  CHECK(f.count - 40 >= 1);
}

TEST_CASE("fragments: the bond threshold and the refusals", "[models][fragments]") {
  // H-H: bonded below 1.2 (0.31 + 0.31) = 0.744 A, apart above it.
  const auto one = RaggedIndex::single(2);
  Mat<double> c(2, 3);
  c << 0, 0, 0, 0.74, 0, 0;
  CHECK(covalent_fragments(one, c, {1, 1}, 1.2).count == 1);
  c(1, 0) = 0.75;
  CHECK(covalent_fragments(one, c, {1, 1}, 1.2).count == 2);
  CHECK(covalent_fragments(one, c, {1, 1}, 1.3).count == 1);
  CHECK(covalent_radius(6) == 0.76);
  CHECK(covalent_radius(96) == 1.69);
  CHECK_THROWS_WITH(covalent_fragments(one, c, {1, 97}, 1.2), Catch::Contains("Z=97"));
  CHECK_THROWS_WITH(covalent_fragments(one, c, {1, 1}, 0.0), Catch::Contains("bond_scale"));
  CHECK_THROWS_WITH(covalent_fragments(one, c, {1}, 1.2), Catch::Contains("one row per atom"));
  CHECK(covalent_fragments(RaggedIndex(), Mat<double>(0, 3), {}, 1.2).count == 0);
}
