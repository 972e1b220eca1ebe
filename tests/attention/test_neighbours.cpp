// Neighbour lists within a cutoff (attention/neighbours.hpp): the cell list against the pair-by-pair
// reference, exact handling of the cutoff, coincident atoms, thread-count independence, sparse
// sets, errors, and checks that the comparison helpers themselves catch a wrong list.
#include "core/error.hpp"
#include "core/random.hpp"
#include "attention/neighbours.hpp"

#include <catch2/catch.hpp>

#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

using namespace flt;
using namespace flt::attn;

namespace {

// "" when a and b are the same list; otherwise the first difference, naming the row.
std::string list_difference(const NeighbourList& a, const NeighbourList& b) {
  std::ostringstream out;
  if (a.cutoff != b.cutoff || a.include_self != b.include_self) {
    out << "cutoff/include_self differ: " << a.cutoff << "/" << a.include_self << " vs " << b.cutoff << "/"
        << b.include_self;
    return out.str();
  }
  if (a.offsets.size() != b.offsets.size()) {
    out << "row counts differ: " << a.num_rows() << " vs " << b.num_rows();
    return out.str();
  }
  if (a.source.size() != b.source.size() || a.target.size() != b.target.size() ||
      a.source.size() != a.target.size()) {
    out << "pair counts differ: " << a.source.size() << "/" << a.target.size() << " vs " << b.source.size() << "/"
        << b.target.size();
  }
  for (Index i = 0; i < a.num_rows(); ++i) {
    const auto u = static_cast<std::size_t>(i);
    const std::int64_t na = a.offsets[u + 1] - a.offsets[u], nb = b.offsets[u + 1] - b.offsets[u];
    if (a.offsets[u] != b.offsets[u] || na != nb) {
      out << (out.tellp() > 0 ? "; " : "") << "row " << i << ": " << na << " pairs at offset " << a.offsets[u]
          << " vs " << nb << " pairs at offset " << b.offsets[u];
      return out.str();
    }
    for (std::int64_t p = a.offsets[u]; p < a.offsets[u + 1]; ++p) {
      const auto q = static_cast<std::size_t>(p);
      if (a.source[q] != b.source[q] || a.target[q] != b.target[q]) {
        out << (out.tellp() > 0 ? "; " : "") << "row " << i << ", pair " << p << ": (" << a.target[q] << ", "
            << a.source[q] << ") vs (" << b.target[q] << ", " << b.source[q] << ")";
        return out.str();
      }
    }
  }
  return out.str();
}

// An oracle independent of the library: "" when the list is well formed (offsets, targets, sources
// of the row's own set in strictly increasing order) and holds exactly the pairs with
// sqrt(dx^2 + dy^2 + dz^2) < cutoff, computed here without fused multiply-adds. Only for random
// coordinates, where no distance lies within rounding of the cutoff.
std::string check_against_oracle(const NeighbourList& list, const RaggedIndex& sets, const Mat<double>& X,
                                 double cutoff, bool include_self) {
  std::ostringstream out;
  const Index n = sets.total_rows();
  if (list.num_rows() != n || list.offsets.front() != 0 ||
      list.offsets.back() != static_cast<std::int64_t>(list.source.size()) ||
      list.source.size() != list.target.size())
    return "malformed offsets/sizes";
  for (Index s = 0; s < sets.num_sets(); ++s) {
    for (Index i = sets.begin(s); i < sets.end(s); ++i) {
      std::vector<std::int32_t> expected;
      for (Index j = sets.begin(s); j < sets.end(s); ++j) {
        const double dx = X(i, 0) - X(j, 0), dy = X(i, 1) - X(j, 1), dz = X(i, 2) - X(j, 2);
        volatile const double x2 = dx * dx, y2 = dy * dy, z2 = dz * dz;  // volatile: no FMA contraction
        const double d2 = x2 + y2 + z2;
        if (i == j ? include_self : std::sqrt(d2) < cutoff) expected.push_back(static_cast<std::int32_t>(j));
      }
      const auto u = static_cast<std::size_t>(i);
      const std::vector<std::int32_t> got(list.source.begin() + list.offsets[u], list.source.begin() + list.offsets[u + 1]);
      for (std::int64_t p = list.offsets[u]; p < list.offsets[u + 1]; ++p)
        if (list.target[static_cast<std::size_t>(p)] != i) {
          out << "row " << i << ": pair " << p << " has target " << list.target[static_cast<std::size_t>(p)];
          return out.str();
        }
      if (got != expected) {
        out << "row " << i << " (set " << s << "): " << got.size() << " sources, expected " << expected.size();
        return out.str();
      }
    }
  }
  return "";
}

// True when j is a source of row i iff i is a source of row j.
bool is_symmetric(const NeighbourList& list) {
  for (std::size_t p = 0; p < list.source.size(); ++p) {
    const auto j = static_cast<std::size_t>(list.source[p]);
    const auto b = list.source.begin() + list.offsets[j], e = list.source.begin() + list.offsets[j + 1];
    if (!std::binary_search(b, e, list.target[p])) return false;
  }
  return true;
}

// n points uniform in a cube of side (n / density)^(1/3) (atoms per cubic Angstrom), shifted.
Mat<double> random_cloud(Index n, double density, Rng& rng, double shift = 0.0) {
  const double side = std::cbrt(static_cast<double>(std::max<Index>(n, 1)) / density);
  Mat<double> X(n, 3);
  for (Index i = 0; i < n; ++i)
    for (Index a = 0; a < 3; ++a) X(i, a) = shift + rng.uniform(0.0, side);
  return X;
}

// Stacks the clouds of a batch of sets, each with its own density.
Mat<double> random_batch(const std::vector<Index>& sizes, double density, Rng& rng) {
  Index total = 0;
  for (Index n : sizes) total += n;
  Mat<double> X(total, 3);
  Index row = 0;
  for (Index n : sizes) {
    if (n > 0) X.middleRows(row, n) = random_cloud(n, density, rng, rng.uniform(-50.0, 50.0));
    row += n;
  }
  return X;
}

std::vector<std::int32_t> sources_of(const NeighbourList& list, Index i) {
  const auto u = static_cast<std::size_t>(i);
  return {list.source.begin() + list.offsets[u], list.source.begin() + list.offsets[u + 1]};
}

// Drops the pair p from a list (keeping it well formed): a deliberately wrong list.
NeighbourList drop_pair(NeighbourList list, std::int64_t p) {
  const Index row = list.target[static_cast<std::size_t>(p)];
  list.source.erase(list.source.begin() + p);
  list.target.erase(list.target.begin() + p);
  for (std::size_t i = static_cast<std::size_t>(row) + 1; i < list.offsets.size(); ++i) --list.offsets[i];
  return list;
}

// Restores the OpenMP thread count when a test ends.
struct ThreadCountGuard {
  int saved = omp_get_max_threads();
  ~ThreadCountGuard() { omp_set_num_threads(saved); }
};

}  // namespace

TEST_CASE("Neighbour list equals the reference on random clusters", "[flt][neighbours]") {
  Rng rng(2024);
  const std::vector<Index> sizes{1, 2, 3, 7, 30, 64, 65, 100, 170, 300};
  for (double density : {0.003, 0.03, 0.3, 3.0}) {
    for (double cutoff : {0.7, 2.5, 5.0}) {
      for (Index n : sizes) {
        const RaggedIndex sets = RaggedIndex::single(n);
        const Mat<double> X = random_cloud(n, density, rng, rng.uniform(-1e3, 1e3));
        for (bool self : {true, false}) {
          const NeighbourList ref = build_neighbour_list_reference(sets, X, cutoff, self);
          INFO("n " << n << " density " << density << " cutoff " << cutoff << " include_self " << self);
          REQUIRE(check_against_oracle(ref, sets, X, cutoff, self) == "");
          for (Index limit : {Index{0}, Index{64}}) {
            INFO("brute_force_limit " << limit);
            const NeighbourList got = build_neighbour_list(sets, X, cutoff, self, limit);
            REQUIRE(list_difference(got, ref) == "");
            CHECK(is_symmetric(got));
          }
        }
      }
    }
  }
}

TEST_CASE("Neighbour list: sets straddling the brute-force limit", "[flt][neighbours]") {
  Rng rng(7);
  for (Index limit : {Index{5}, Index{10}, Index{64}}) {
    std::vector<Index> sizes;
    for (Index n = std::max<Index>(limit - 3, 0); n <= limit + 3; ++n) sizes.push_back(n);
    const RaggedIndex sets = RaggedIndex::from_sizes(sizes);
    for (double density : {0.02, 0.2}) {
      const Mat<double> X = random_batch(sizes, density, rng);
      for (bool self : {true, false}) {
        INFO("limit " << limit << " density " << density << " include_self " << self);
        const NeighbourList ref = build_neighbour_list_reference(sets, X, 3.0, self);
        CHECK(list_difference(build_neighbour_list(sets, X, 3.0, self, limit), ref) == "");
        CHECK(check_against_oracle(ref, sets, X, 3.0, self) == "");
      }
    }
  }
}

TEST_CASE("Neighbour list: a batch of mixed sizes with empty sets and single atoms", "[flt][neighbours]") {
  Rng rng(11);
  const std::vector<Index> sizes{0, 1, 0, 18, 250, 0, 2, 70, 1, 29, 0};
  const RaggedIndex sets = RaggedIndex::from_sizes(sizes);
  const Mat<double> X = random_batch(sizes, 0.1, rng);
  for (bool self : {true, false}) {
    INFO("include_self " << self);
    const NeighbourList ref = build_neighbour_list_reference(sets, X, 5.0, self);
    REQUIRE(check_against_oracle(ref, sets, X, 5.0, self) == "");
    for (Index limit : {Index{0}, Index{20}, Index{64}, Index{1000}}) {
      INFO("brute_force_limit " << limit);
      const NeighbourList got = build_neighbour_list(sets, X, 5.0, self, limit);
      REQUIRE(list_difference(got, ref) == "");
      CHECK(got.num_rows() == sets.total_rows());
      CHECK(got.offsets.size() == static_cast<std::size_t>(sets.total_rows()) + 1);
      // single atoms: the self pair or nothing; empty sets: complete and rowless
      for (Index s : {Index{1}, Index{8}}) {
        const Index i = sets.begin(s);
        CHECK(sources_of(got, i) == (self ? std::vector<std::int32_t>{static_cast<std::int32_t>(i)}
                                          : std::vector<std::int32_t>{}));
        CHECK(set_is_complete(got, sets, s));
      }
      CHECK(set_is_complete(got, sets, 0));
      CHECK(set_is_complete(got, sets, 10));
    }
  }
  // a batch of only empty sets, and no sets at all
  const RaggedIndex empties = RaggedIndex::from_sizes(std::vector<Index>{0, 0});
  const NeighbourList none = build_neighbour_list(empties, Mat<double>(0, 3), 1.0);
  CHECK(none.offsets == std::vector<std::int64_t>{0});
  CHECK(none.num_pairs() == 0);
  CHECK(build_neighbour_list(RaggedIndex(), Mat<double>(0, 3), 1.0).num_rows() == 0);
}

TEST_CASE("Neighbour list: pairs exactly at the cutoff are excluded", "[flt][neighbours]") {
  // (0,0,0)-(3,4,0) and (0,0,0)-(0,0,-5) are exactly 5 apart; (3,4,0)-(0,0,-5) is sqrt(50)
  Mat<double> X(3, 3);
  X << 0, 0, 0, 3, 4, 0, 0, 0, -5;
  const RaggedIndex one = RaggedIndex::single(3);
  for (Index limit : {Index{0}, Index{64}}) {
    INFO("brute_force_limit " << limit);
    const NeighbourList at = build_neighbour_list(one, X, 5.0, true, limit);
    for (Index i = 0; i < 3; ++i) CHECK(sources_of(at, i) == std::vector<std::int32_t>{static_cast<std::int32_t>(i)});
    const NeighbourList above = build_neighbour_list(one, X, std::nextafter(5.0, 6.0), true, limit);
    CHECK(sources_of(above, 0) == std::vector<std::int32_t>{0, 1, 2});
    CHECK(sources_of(above, 1) == std::vector<std::int32_t>{0, 1});
    CHECK(sources_of(above, 2) == std::vector<std::int32_t>{0, 2});
  }

  // A cubic lattice of spacing 1.25 (exact in binary), so atoms sit exactly on cell boundaries:
  // cutoff = spacing excludes the 6 nearest neighbours, one ulp more includes them; the face
  // diagonal d^2 = 3.125 is excluded at cutoff = sqrt(3.125) and included one ulp above.
  const Index side = 7, n = side * side * side;
  Mat<double> L(n, 3);
  for (Index i = 0; i < n; ++i) {
    L(i, 0) = 1.25 * static_cast<double>(i / (side * side));
    L(i, 1) = 1.25 * static_cast<double>((i / side) % side);
    L(i, 2) = 1.25 * static_cast<double>(i % side);
  }
  const RaggedIndex lattice = RaggedIndex::single(n);
  const Index centre = (side / 2) * (side * side + side + 1);
  struct Case {
    double cutoff;
    std::size_t interior;  // pairs of an interior atom, self included
  };
  for (const Case c : {Case{1.25, 1}, Case{std::nextafter(1.25, 2.0), 7}, Case{std::sqrt(3.125), 7},
                       Case{std::nextafter(std::sqrt(3.125), 2.0), 19}}) {
    INFO("cutoff " << c.cutoff);
    const NeighbourList ref = build_neighbour_list_reference(lattice, L, c.cutoff);
    CHECK(sources_of(ref, centre).size() == c.interior);
    for (Index limit : {Index{0}, Index{64}, Index{n}}) {
      INFO("brute_force_limit " << limit);
      const NeighbourList got = build_neighbour_list(lattice, L, c.cutoff, true, limit);
      CHECK(list_difference(got, ref) == "");
      CHECK(sources_of(got, centre).size() == c.interior);
    }
  }
}

TEST_CASE("Neighbour list: pairs just inside the cutoff across cell boundaries are found", "[flt][neighbours]") {
  // Three long chains (along x, y and z, far apart) with spacings a hair below the cutoff: every
  // consecutive pair is a neighbour, and with cells even 1e-4 smaller than the cutoff some pairs
  // would straddle two cell boundaries and be missed.
  Rng rng(12);
  const double cutoff = 1.5;
  const Index per_chain = 20000, n = 3 * per_chain;
  Mat<double> X(n, 3);
  std::vector<double> spacing;
  for (Index c = 0; c < 3; ++c) {
    const double d = cutoff * (1.0 - rng.uniform(1e-9, 1e-7));
    spacing.push_back(d);
    const double start = rng.uniform(-10.0, 10.0);
    for (Index k = 0; k < per_chain; ++k) {
      const Index i = c * per_chain + k;
      X.row(i).setConstant(1e3 * static_cast<double>(c));  // chains 1e3 apart
      X(i, c) = start + d * static_cast<double>(k);
    }
  }
  const RaggedIndex set = RaggedIndex::single(n);
  const NeighbourList list = build_neighbour_list(set, X, cutoff, true, 0);
  Index found = 0;
  for (Index c = 0; c < 3; ++c) {
    for (Index k = 0; k < per_chain; ++k) {
      const Index i = c * per_chain + k;
      std::vector<std::int32_t> expected;
      for (Index j = std::max<Index>(k - 1, 0); j <= std::min<Index>(k + 1, per_chain - 1); ++j) {
        const double dx = X(i, c) - X(c * per_chain + j, c);  // only one coordinate differs
        if (j == k || std::sqrt(dx * dx) < cutoff) expected.push_back(static_cast<std::int32_t>(c * per_chain + j));
      }
      const std::vector<std::int32_t> got = sources_of(list, i);
      if (got != expected) {
        INFO("chain " << c << " atom " << k << ": " << got.size() << " sources, expected " << expected.size());
        CHECK(got == expected);
      }
      found += static_cast<Index>(got.size());
    }
  }
  CHECK(found == n + 2 * 3 * (per_chain - 1));  // every consecutive pair, both ways, and self
}

TEST_CASE("Neighbour list: coincident atoms are neighbours", "[flt][neighbours]") {
  // five atoms at one point and one 10 Angstrom away
  Mat<double> X(6, 3);
  X << 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 11, 2, 3;
  const RaggedIndex one = RaggedIndex::single(6);
  for (Index limit : {Index{0}, Index{64}}) {
    INFO("brute_force_limit " << limit);
    const NeighbourList with = build_neighbour_list(one, X, 1.0, true, limit);
    const NeighbourList without = build_neighbour_list(one, X, 1.0, false, limit);
    for (Index i = 0; i < 5; ++i) {
      CHECK(sources_of(with, i) == std::vector<std::int32_t>{0, 1, 2, 3, 4});
      std::vector<std::int32_t> others;
      for (std::int32_t j = 0; j < 5; ++j)
        if (j != i) others.push_back(j);
      CHECK(sources_of(without, i) == others);
    }
    CHECK(sources_of(with, 5) == std::vector<std::int32_t>{5});
    CHECK(sources_of(without, 5).empty());
    CHECK_FALSE(set_is_complete(with, one, 0));
  }
  // a cloud in which every atom has a twin at distance 0, searched by the cell list
  Rng rng(3);
  const Mat<double> half = random_cloud(150, 0.05, rng);
  Mat<double> twins(300, 3);
  twins << half, half;
  const RaggedIndex set = RaggedIndex::single(300);
  const NeighbourList got = build_neighbour_list(set, twins, 2.0, false, 0);
  CHECK(list_difference(got, build_neighbour_list_reference(set, twins, 2.0, false)) == "");
  for (Index i = 0; i < 150; ++i) {
    const auto s = sources_of(got, i);
    CHECK(std::find(s.begin(), s.end(), static_cast<std::int32_t>(i + 150)) != s.end());
  }
  // all atoms at one point
  const Mat<double> same = Mat<double>::Constant(200, 3, -7.5);
  const NeighbourList all = build_neighbour_list(RaggedIndex::single(200), same, 0.1, true, 0);
  CHECK(all.num_pairs() == 200 * 200);
  CHECK(set_is_complete(all, RaggedIndex::single(200), 0));
}

TEST_CASE("Neighbour list: include_self = false drops exactly the self pairs", "[flt][neighbours]") {
  Rng rng(5);
  const std::vector<Index> sizes{40, 1, 200};
  const RaggedIndex sets = RaggedIndex::from_sizes(sizes);
  const Mat<double> X = random_batch(sizes, 0.05, rng);
  for (Index limit : {Index{0}, Index{64}}) {
    const NeighbourList with = build_neighbour_list(sets, X, 4.0, true, limit);
    const NeighbourList without = build_neighbour_list(sets, X, 4.0, false, limit);
    CHECK_FALSE(without.include_self);
    CHECK(without.num_pairs() == with.num_pairs() - sets.total_rows());
    for (Index i = 0; i < sets.total_rows(); ++i) {
      std::vector<std::int32_t> expected = sources_of(with, i);
      const auto self = std::find(expected.begin(), expected.end(), static_cast<std::int32_t>(i));
      REQUIRE(self != expected.end());
      expected.erase(self);
      CHECK(sources_of(without, i) == expected);
    }
    for (std::size_t p = 0; p < without.source.size(); ++p) CHECK(without.source[p] != without.target[p]);
  }
}

TEST_CASE("Neighbour list is bitwise the same on 1 and 2 threads", "[flt][neighbours][threads]") {
  ThreadCountGuard guard;
  Rng rng(99);
  // one large set (cell list, parallel over cells) and many QM9-sized ones (parallel over sets)
  std::vector<Index> sizes{2500};
  for (int m = 0; m < 64; ++m) sizes.push_back(static_cast<Index>(9 + rng.below(20)));
  sizes.push_back(500);
  const RaggedIndex sets = RaggedIndex::from_sizes(sizes);
  const Mat<double> X = random_batch(sizes, 0.1, rng);
  for (bool self : {true, false}) {
    omp_set_num_threads(1);
    const NeighbourList one = build_neighbour_list(sets, X, 5.0, self);
    omp_set_num_threads(2);
    const NeighbourList two = build_neighbour_list(sets, X, 5.0, self);
    INFO("include_self " << self);
    CHECK(one.offsets == two.offsets);
    CHECK(one.source == two.source);
    CHECK(one.target == two.target);
    CHECK(one.num_pairs() > 35 * 2500);  // 52 neighbours per atom at 0.1 / A^3, about 46 with the faces
    if (self) {
      CHECK(list_difference(two, build_neighbour_list_reference(sets, X, 5.0, self)) == "");
      CHECK(is_symmetric(two));
    }
  }
}

TEST_CASE("Neighbour list: sparse far-apart atoms cost no huge grid", "[flt][neighbours]") {
  const auto start = std::chrono::steady_clock::now();
  // two atoms 1e4 Angstrom apart with a 1e-3 cutoff: a dense grid would have 1e7 cells
  Mat<double> two(2, 3);
  two << 0, 0, 0, 1e4, 0, 0;
  const NeighbourList pair = build_neighbour_list(RaggedIndex::single(2), two, 1e-3, true, 0);
  CHECK(pair.source == std::vector<std::int32_t>{0, 1});
  // 1000 atoms on a lattice of spacing 1e4: a box of side 9e4, 5.8e15 cells of side 0.5
  const Index side = 10, n = side * side * side;
  Mat<double> L(n, 3);
  for (Index i = 0; i < n; ++i) {
    L(i, 0) = 1e4 * static_cast<double>(i / (side * side));
    L(i, 1) = 1e4 * static_cast<double>((i / side) % side);
    L(i, 2) = 1e4 * static_cast<double>(i % side);
  }
  const NeighbourList lattice = build_neighbour_list(RaggedIndex::single(n), L, 0.5, true, 0);
  REQUIRE(lattice.num_pairs() == n);
  for (Index i = 0; i < n; ++i) CHECK(lattice.source[static_cast<std::size_t>(i)] == i);
  // two dense clusters at opposite corners of a 1e6 Angstrom box, and a few strays
  Rng rng(1);
  Mat<double> C(330, 3);
  C.topRows(150) = random_cloud(150, 0.1, rng, -5e5);
  C.middleRows(150, 150) = random_cloud(150, 0.1, rng, 5e5);
  C.bottomRows(30) = random_cloud(30, 1e-15, rng, -5e5);
  const RaggedIndex set = RaggedIndex::single(330);
  const NeighbourList ref = build_neighbour_list_reference(set, C, 5.0);
  CHECK(list_difference(build_neighbour_list(set, C, 5.0, true, 0), ref) == "");
  CHECK(check_against_oracle(ref, set, C, 5.0, true) == "");
  // a grid of (1e9 / 1e-3)^3 = 1e36 cells would not even have 64-bit keys: cells are enlarged
  Mat<double> far = random_cloud(300, 1e-25, rng);
  far.row(17) = far.row(3);
  far(18, 0) = far(3, 0) + 5e-4;
  far.row(18).tail(2) = far.row(3).tail(2);
  const RaggedIndex far_set = RaggedIndex::single(300);
  const NeighbourList far_list = build_neighbour_list(far_set, far, 1e-3, true, 0);
  CHECK(list_difference(far_list, build_neighbour_list_reference(far_set, far, 1e-3)) == "");
  CHECK(sources_of(far_list, 3) == std::vector<std::int32_t>{3, 17, 18});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(seconds < 5.0);  // about 10 ms; a grid over the box would take minutes or fail to allocate
}

TEST_CASE("Neighbour list: extreme magnitudes match the reference", "[flt][neighbours]") {
  Rng rng(17);
  const RaggedIndex set = RaggedIndex::single(120);
  // extents that overflow (the set falls back to the pair-by-pair search), huge and tiny cutoffs
  Mat<double> huge(120, 3);
  for (Index i = 0; i < 120; ++i)
    for (Index a = 0; a < 3; ++a) huge(i, a) = 1.5e308 * (2.0 * rng.uniform() - 1.0);
  huge.row(7) = huge.row(8);
  Mat<double> tiny = random_cloud(120, 1e3, rng);
  tiny *= 1e-300;
  const Mat<double> normal = random_cloud(120, 0.1, rng);
  struct Case {
    const Mat<double>* X;
    double cutoff;
  };
  for (const Case c : {Case{&huge, 1e300}, Case{&huge, 1.0}, Case{&tiny, 1e-300}, Case{&tiny, 5e-301},
                       Case{&normal, 1e200}, Case{&normal, 1e-200}, Case{&normal, 1.7e308}}) {
    INFO("cutoff " << c.cutoff);
    const NeighbourList ref = build_neighbour_list_reference(set, *c.X, c.cutoff);
    CHECK(list_difference(build_neighbour_list(set, *c.X, c.cutoff, true, 0), ref) == "");
    CHECK(list_difference(build_neighbour_list(set, *c.X, c.cutoff, true, 200), ref) == "");
  }
  CHECK(set_is_complete(build_neighbour_list(set, normal, 1e200), set, 0));
  CHECK(build_neighbour_list(set, normal, 1e-200).num_pairs() == 120);
  CHECK(sources_of(build_neighbour_list(set, huge, 1.0, true, 0), 7) == std::vector<std::int32_t>{7, 8});
}

TEST_CASE("set_is_complete: every pair of the set is in the list", "[flt][neighbours]") {
  Rng rng(8);
  // set 0: within a 2 A box (complete at cutoff 5); set 1: spread over 100 A (not complete)
  Mat<double> X(30, 3);
  for (Index i = 0; i < 10; ++i)
    for (Index a = 0; a < 3; ++a) X(i, a) = rng.uniform(0.0, 2.0);
  for (Index i = 10; i < 30; ++i)
    for (Index a = 0; a < 3; ++a) X(i, a) = rng.uniform(0.0, 100.0);
  const RaggedIndex sets = RaggedIndex::from_sizes(std::vector<Index>{10, 20});
  for (bool self : {true, false}) {
    for (Index limit : {Index{0}, Index{64}}) {
      const NeighbourList list = build_neighbour_list(sets, X, 5.0, self, limit);
      CHECK(set_is_complete(list, sets, 0));
      CHECK_FALSE(set_is_complete(list, sets, 1));
      // one dropped pair makes the set incomplete
      CHECK_FALSE(set_is_complete(drop_pair(list, 3), sets, 0));
    }
  }
  const NeighbourList list = build_neighbour_list(sets, X, 5.0);
  CHECK_THROWS_AS(set_is_complete(list, sets, 2), InvalidArgument);
  CHECK_THROWS_AS(set_is_complete(list, sets, -1), InvalidArgument);
  CHECK_THROWS_WITH(set_is_complete(list, RaggedIndex::single(5), 0), Catch::Contains("rows"));
}

TEST_CASE("Neighbour list: invalid arguments throw InvalidArgument", "[flt][neighbours][errors]") {
  const RaggedIndex sets = RaggedIndex::from_sizes(std::vector<Index>{3, 4});
  Mat<double> X = Mat<double>::Zero(7, 3);
  X(1, 0) = 1.0;
  for (double cutoff : {0.0, -1.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
                        -std::numeric_limits<double>::infinity()}) {
    INFO("cutoff " << cutoff);
    CHECK_THROWS_AS(build_neighbour_list(sets, X, cutoff), InvalidArgument);
    CHECK_THROWS_WITH(build_neighbour_list(sets, X, cutoff), Catch::Contains("cutoff"));
    CHECK_THROWS_WITH(build_neighbour_list_reference(sets, X, cutoff), Catch::Contains("cutoff"));
  }
  // shapes
  CHECK_THROWS_WITH(build_neighbour_list(sets, Mat<double>::Zero(7, 2), 1.0), Catch::Contains("N x 3"));
  CHECK_THROWS_WITH(build_neighbour_list(sets, Mat<double>::Zero(6, 3), 1.0), Catch::Contains("6 x 3"));
  CHECK_THROWS_AS(build_neighbour_list(sets, Mat<double>::Zero(8, 3), 1.0), InvalidArgument);
  CHECK_THROWS_AS(build_neighbour_list_reference(sets, Mat<double>::Zero(7, 4), 1.0), InvalidArgument);
  // a non-finite coordinate names its row and set
  for (double bad : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    Mat<double> Y = X;
    Y(4, 2) = bad;
    CHECK_THROWS_AS(build_neighbour_list(sets, Y, 1.0), InvalidArgument);
    CHECK_THROWS_WITH(build_neighbour_list(sets, Y, 1.0),
                      Catch::Contains("row 4") && Catch::Contains("set 1") && Catch::Contains("non-finite"));
    CHECK_THROWS_WITH(build_neighbour_list_reference(sets, Y, 1.0), Catch::Contains("row 4"));
  }
  // more than 2^31 - 1 rows (checked before the shape, so no 48 GB matrix is needed)
  const RaggedIndex too_many = RaggedIndex::single(Index{1} << 31);
  CHECK_THROWS_AS(build_neighbour_list(too_many, Mat<double>(0, 3), 1.0), InvalidArgument);
  CHECK_THROWS_WITH(build_neighbour_list(too_many, Mat<double>(0, 3), 1.0), Catch::Contains("too many rows"));
  // a negative brute-force limit
  CHECK_THROWS_WITH(build_neighbour_list(sets, X, 1.0, true, -1), Catch::Contains("brute_force_limit"));
  // valid arguments work
  CHECK(build_neighbour_list(sets, X, 1.5).num_pairs() == 3 * 3 + 4 * 4);
}

TEST_CASE("Neighbour list tests catch a wrong list", "[flt][neighbours]") {
  // the comparison helpers themselves must fail on a deliberately wrong list
  Rng rng(21);
  const RaggedIndex sets = RaggedIndex::from_sizes(std::vector<Index>{80, 40});
  const Mat<double> X = random_batch({80, 40}, 0.1, rng);
  const NeighbourList good = build_neighbour_list(sets, X, 5.0, true, 0);
  REQUIRE(list_difference(good, build_neighbour_list_reference(sets, X, 5.0)) == "");
  REQUIRE(check_against_oracle(good, sets, X, 5.0, true) == "");
  REQUIRE(good.num_pairs() > 200);

  // a dropped pair (in row target[p]) is reported, naming that row
  const std::int64_t p = 150;
  const Index row = good.target[static_cast<std::size_t>(p)];
  const NeighbourList dropped = drop_pair(good, p);
  const std::string diff = list_difference(dropped, good);
  CHECK(diff != "");
  CHECK_THAT(diff, Catch::Contains("row " + std::to_string(row)));
  CHECK(check_against_oracle(dropped, sets, X, 5.0, true) != "");
  CHECK_FALSE(is_symmetric(dropped));
  // a changed source, swapped (unsorted) sources, a wrong target, a wrong flag
  NeighbourList changed = good;
  changed.source[static_cast<std::size_t>(p)] += 1;
  CHECK(list_difference(changed, good) != "");
  NeighbourList swapped = good;
  const auto first = static_cast<std::size_t>(swapped.offsets[10]);
  REQUIRE(swapped.offsets[11] - swapped.offsets[10] >= 2);
  std::swap(swapped.source[first], swapped.source[first + 1]);
  CHECK(list_difference(swapped, good) != "");
  CHECK(check_against_oracle(swapped, sets, X, 5.0, true) != "");
  NeighbourList retargeted = good;
  retargeted.target[static_cast<std::size_t>(p)] += 1;
  CHECK(list_difference(retargeted, good) != "");
  CHECK(check_against_oracle(retargeted, sets, X, 5.0, true) != "");
  NeighbourList flagged = good;
  flagged.include_self = false;
  CHECK(list_difference(flagged, good) != "");
  // and the list of a slightly larger cutoff differs
  CHECK(list_difference(build_neighbour_list(sets, X, 5.5), good) != "");
}

TEST_CASE("check_neighbour_list accepts built lists and names the first row that breaks the contract",
          "[flt][neighbours][errors]") {
  Rng rng(23);
  const RaggedIndex sets = RaggedIndex::from_sizes(std::vector<Index>{80, 40, 0, 1});
  const Mat<double> X = random_batch({80, 40, 0, 1}, 0.1, rng);
  const NeighbourList good = build_neighbour_list(sets, X, 5.0, true, 0);
  const Index N = sets.total_rows();
  for (const NeighbourList* list : {&good}) {
    CHECK_NOTHROW(check_neighbour_list(*list, N, &sets, true, "test"));
    CHECK_NOTHROW(check_neighbour_list(*list, N, nullptr, true, "test"));
  }
  const NeighbourList no_self = build_neighbour_list(sets, X, 5.0, false);
  CHECK_NOTHROW(check_neighbour_list(no_self, N, &sets, true, "test"));
  CHECK_FALSE(find_asymmetric_pair(good).has_value());
  // the row count and the sets' row count
  CHECK_THROWS_WITH(check_neighbour_list(good, N + 1, nullptr, false, "who"), Catch::StartsWith("who: ") && Catch::Contains("rows"));
  const RaggedIndex fewer = RaggedIndex::from_sizes(std::vector<Index>{80, 40});
  CHECK_THROWS_AS(check_neighbour_list(good, N, &fewer, false, "who"), InvalidArgument);
  const auto fails_at = [&](const NeighbourList& list, const RaggedIndex* s, bool symmetric, Index row) {
    CHECK_THROWS_WITH(check_neighbour_list(list, N, s, symmetric, "who"),
                      Catch::StartsWith("who: ") && Catch::Contains("row " + std::to_string(row) + " "));
  };
  const Index row = 10;
  const auto first = static_cast<std::size_t>(good.offsets[static_cast<std::size_t>(row)]);
  REQUIRE(good.offsets[row + 1] - good.offsets[row] >= 3);
  NeighbourList decreasing = good;
  decreasing.offsets[row + 1] = decreasing.offsets[row] - 1;
  fails_at(decreasing, nullptr, false, row);
  NeighbourList retargeted = good;
  retargeted.target[first + 1] += 1;
  fails_at(retargeted, nullptr, false, row);
  NeighbourList unsorted = good;
  std::swap(unsorted.source[first], unsorted.source[first + 1]);
  fails_at(unsorted, nullptr, false, row);
  NeighbourList out_of_range = good;
  out_of_range.source[static_cast<std::size_t>(good.offsets[N]) - 1] = static_cast<std::int32_t>(N);
  fails_at(out_of_range, nullptr, false, N - 1);
  // row 79 (set 0) listing row 80 (set 1): in range, but outside its set
  NeighbourList crossing = good;
  crossing.source[static_cast<std::size_t>(good.offsets[80]) - 1] = 80;
  CHECK_NOTHROW(check_neighbour_list(crossing, N, nullptr, false, "who"));
  fails_at(crossing, &sets, false, 79);
  // a pair dropped from one side: accepted unless symmetry is asked for, then named
  for (std::int64_t p : {std::int64_t{150}, std::int64_t{1000}, good.num_pairs() - 5}) {
    const Index i = good.target[static_cast<std::size_t>(p)], j = good.source[static_cast<std::size_t>(p)];
    REQUIRE(i != j);
    const NeighbourList dropped = drop_pair(good, p);  // row i no longer lists j
    REQUIRE_FALSE(is_symmetric(dropped));
    CHECK_NOTHROW(check_neighbour_list(dropped, N, &sets, false, "who"));
    const auto pair = find_asymmetric_pair(dropped);
    REQUIRE(pair.has_value());
    CHECK(pair->row == j);
    CHECK(pair->source == i);
    CHECK_THROWS_WITH(check_neighbour_list(dropped, N, &sets, true, "who"),
                      Catch::Contains("row " + std::to_string(j) + " lists " + std::to_string(i) + ", row " +
                                      std::to_string(i) + " does not list " + std::to_string(j)));
  }
  // the cursor check agrees with the pair-by-pair helper on lists with random pairs dropped
  for (int trial = 0; trial < 30; ++trial) {
    NeighbourList list = good;
    const int drops = trial % 3;  // 0: symmetric
    for (int d = 0; d < drops; ++d)
      list = drop_pair(list, static_cast<std::int64_t>(rng.uniform(0.0, static_cast<double>(list.num_pairs() - 1))));
    const auto pair = find_asymmetric_pair(list);
    CHECK(pair.has_value() == !is_symmetric(list));
    if (pair) {  // the pair named is one that breaks symmetry
      const auto lists = [&](Index r, Index source) {
        const auto b = list.source.begin() + list.offsets[static_cast<std::size_t>(r)];
        const auto e = list.source.begin() + list.offsets[static_cast<std::size_t>(r) + 1];
        return std::binary_search(b, e, static_cast<std::int32_t>(source));
      };
      CHECK(lists(pair->row, pair->source));
      CHECK_FALSE(lists(pair->source, pair->row));
    }
  }
}

TEST_CASE("cell_order: Morton order of cells within each large set, small sets kept", "[flt][neighbours]") {
  Rng rng(31);
  const std::vector<Index> sizes{500, 3, 0, 1200};
  const RaggedIndex sets = RaggedIndex::from_sizes(sizes);
  const Mat<double> X = random_batch(sizes, 0.1, rng);
  const double cell = 5.0;
  const std::vector<Index> order = cell_order(sets, X, cell, 10);
  REQUIRE(static_cast<Index>(order.size()) == sets.total_rows());
  // the 3-atom set (below min_rows) keeps its order
  for (Index i = sets.begin(1); i < sets.end(1); ++i) CHECK(order[static_cast<std::size_t>(i)] == i);
  for (Index s : {Index{0}, Index{3}}) {
    const Index b = sets.begin(s), n = sets.size(s);
    // a permutation of the set's rows
    std::vector<Index> rows(order.begin() + b, order.begin() + b + n);
    std::sort(rows.begin(), rows.end());
    for (Index i = 0; i < n; ++i) CHECK(rows[static_cast<std::size_t>(i)] == b + i);
    // cells (from the set's lower corner) in Morton order: the interleaved bits of (x, y, z)
    // compared axis by axis from the top bit down; atoms of one cell in their given order
    const Eigen::RowVector3d lo = X.middleRows(b, n).colwise().minCoeff();
    const auto cell_of = [&](Index row) {
      std::array<std::uint64_t, 3> c{};
      for (Index a = 0; a < 3; ++a) c[static_cast<std::size_t>(a)] = static_cast<std::uint64_t>(std::floor((X(row, a) - lo(a)) / cell));
      return c;
    };
    const auto morton_less = [](const std::array<std::uint64_t, 3>& p, const std::array<std::uint64_t, 3>& q) {
      for (int bit = 20; bit >= 0; --bit)
        for (int a = 2; a >= 0; --a) {
          const auto pb = (p[static_cast<std::size_t>(a)] >> bit) & 1, qb = (q[static_cast<std::size_t>(a)] >> bit) & 1;
          if (pb != qb) return pb < qb;
        }
      return false;
    };
    std::size_t moved = 0;
    for (Index i = b + 1; i < b + n; ++i) {
      const Index prev = order[static_cast<std::size_t>(i) - 1], cur = order[static_cast<std::size_t>(i)];
      const auto cp = cell_of(prev), cc = cell_of(cur);
      CHECK_FALSE(morton_less(cc, cp));
      if (cp == cc) CHECK(prev < cur);
      moved += cur != i;
    }
    CHECK(moved > static_cast<std::size_t>(n / 2));  // random atoms: most move
  }
  // min_rows only decides which sets are reordered; errors
  const std::vector<Index> all = cell_order(sets, X, cell, 0);
  for (Index s : {Index{0}, Index{3}})
    for (Index i = sets.begin(s); i < sets.end(s); ++i) CHECK(all[static_cast<std::size_t>(i)] == order[static_cast<std::size_t>(i)]);
  CHECK_THROWS_AS(cell_order(sets, X, 0.0, 0), InvalidArgument);
  CHECK_THROWS_AS(cell_order(sets, X.topRows(10), cell, 0), InvalidArgument);
  Mat<double> bad = X;
  bad(600, 2) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(cell_order(sets, bad, cell, 0), Catch::Contains("row 600"));
  CHECK_NOTHROW(cell_order(sets, bad, cell, 2000));  // the set holding it is not reordered
}
