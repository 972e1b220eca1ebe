// The exact gradient sum of data-parallel training (pipeline/train_distributed.hpp): the result
// must not depend on how the chunks are grouped over ranks or in which order they are added, and
// must stay within the stated rounding of the exact sum. The end-to-end comparison of 1 and 2 MPI
// ranks is in tests/mpi.
#include "pipeline/train_distributed.hpp"

#include "comm/communicator.hpp"
#include "core/error.hpp"
#include "core/random.hpp"

#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

using namespace flt;
using namespace flt::pipeline::distributed;

namespace {

// K chunk gradients of n entries spanning many orders of magnitude, like real gradients.
std::vector<std::vector<float>> chunk_gradients(std::size_t chunks, std::size_t n, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<std::vector<float>> g(chunks, std::vector<float>(n));
  for (auto& v : g)
    for (auto& x : v)
      x = static_cast<float>(rng.normal() * std::pow(10.0, -8.0 * rng.uniform()));
  return g;
}

double max_abs(const std::vector<std::vector<float>>& g) {
  double m = 0;
  for (const auto& v : g)
    for (float x : v) m = std::max(m, static_cast<double>(std::abs(x)));
  return m;
}

// Rank r adds the chunks k with k mod ranks == r in `order`, then the ranks' partial sums are
// added (an integer all-reduce).
std::vector<float> grouped_sum(const std::vector<std::vector<float>>& g, int ranks, bool reversed) {
  const std::size_t n = g.front().size();
  const int s = fixed_point_exponent(max_abs(g), g.size());
  std::vector<std::int64_t> total(n, 0);
  for (int r = ranks - 1; r >= 0; --r) {
    std::vector<std::int64_t> partial(n, 0);
    for (std::size_t i = 0; i < g.size(); ++i) {
      const std::size_t k = reversed ? g.size() - 1 - i : i;
      if (static_cast<int>(k % static_cast<std::size_t>(ranks)) == r) add_fixed_point(g[k], s, partial);
    }
    for (std::size_t j = 0; j < n; ++j) total[j] += partial[j];
  }
  std::vector<float> out(n);
  from_fixed_point(total, s, out);
  return out;
}

}  // namespace

TEST_CASE("exact gradient sum: bit-identical for any grouping over ranks and any order", "[train][distributed]") {
  const auto g = chunk_gradients(7, 2000, 11);
  const std::vector<float> one = grouped_sum(g, 1, false);
  for (int ranks : {2, 3, 4, 7})
    for (bool reversed : {false, true}) {
      const std::vector<float> other = grouped_sum(g, ranks, reversed);
      for (std::size_t j = 0; j < one.size(); ++j)
        REQUIRE(std::bit_cast<std::uint32_t>(other[j]) == std::bit_cast<std::uint32_t>(one[j]));
    }
  // The plain float sum in another grouping is not (the property the fixed point buys).
  std::size_t float_differs = 0;
  for (std::size_t j = 0; j < one.size(); ++j) {
    const float forward = ((g[0][j] + g[1][j]) + (g[2][j] + g[3][j])) + ((g[4][j] + g[5][j]) + g[6][j]);
    float serial = 0;
    for (const auto& v : g) serial += v[j];
    float_differs += forward != serial ? 1 : 0;
  }
  CHECK(float_differs > 0);
}

TEST_CASE("exact gradient sum: within the stated rounding of the exact sum", "[train][distributed]") {
  const auto g = chunk_gradients(5, 3000, 12);
  const double m = max_abs(g);
  const int s = fixed_point_exponent(m, g.size());
  const std::vector<float> sum = grouped_sum(g, 2, false);
  for (std::size_t j = 0; j < sum.size(); ++j) {
    long double acc = 0;  // 5 floats: exact enough in long double for the comparison
    for (const auto& v : g) acc += static_cast<long double>(v[j]);
    const double exact = static_cast<double>(acc);
    // Per chunk half a quantum 2^-s, then the rounding to float of the result.
    const double bound = 0.5 * static_cast<double>(g.size()) * std::ldexp(1.0, -s) + std::abs(exact) * 0x1p-24;
    REQUIRE(std::abs(static_cast<double>(sum[j]) - exact) <= bound);
  }
  // The quantum is tiny against the largest entry.
  CHECK(std::ldexp(1.0, -s) < m * 1e-16);
}

TEST_CASE("exact gradient sum: no overflow at large magnitudes, zero and non-finite input", "[train][distributed]") {
  // 64 chunks of +-2^100: the integer sum must not wrap; an entry 2^-101 of the largest is below
  // the quantum and rounds to zero (the documented bound).
  const std::size_t chunks = 64;
  const float big = std::ldexp(1.0f, 100);
  std::vector<std::vector<float>> g(chunks, std::vector<float>{big, -big, 1.0f});
  const std::vector<float> sum = grouped_sum(g, 3, false);
  CHECK(sum[0] == std::ldexp(1.0f, 106));
  CHECK(sum[1] == -std::ldexp(1.0f, 106));
  CHECK(sum[2] == 0.0f);
  CHECK(fixed_point_exponent(0.0, 4) == 0);
  CHECK_THROWS_AS(fixed_point_exponent(std::numeric_limits<double>::infinity(), 4), InvalidArgument);
}

TEST_CASE("largest gradient magnitude, and non-finite entries flagged", "[train][distributed]") {
  std::vector<float> v(1001, 0.5f);
  v[17] = -3.0f;
  CHECK(largest_magnitude(v) == 3.0f);
  CHECK(largest_magnitude(std::vector<float>{}) == 0.0f);
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    std::vector<float> w = v;
    w[500] = bad;
    CHECK(std::isinf(largest_magnitude(w)));
  }
}

TEST_CASE("molecule owners: training round robin, evaluation by batch", "[train][distributed]") {
  const std::vector<std::size_t> train{5, 0, 3, 7}, validation{1, 2, 6}, test{4};
  const auto owners = molecule_owners(9, train, validation, test, 2, 2);
  CHECK(owners == std::vector<int>{1, 0, 0, 0, 0, 0, 1, 1, -1});
  const auto one = molecule_owners(9, train, validation, test, 2, 1);
  for (std::size_t i = 0; i < 8; ++i) CHECK(one[i] == 0);
}

TEST_CASE("byte messages: what the writer packs the reader unpacks, a short message throws", "[train][distributed]") {
  comm::ByteWriter out;
  out.put<std::int64_t>(-7);
  const std::vector<double> numbers{1.5, -2.25};
  out.put_span(std::span<const double>(numbers));
  out.put_string("gdb 17");
  comm::ByteReader in(out.bytes());
  CHECK(in.get<std::int64_t>() == -7);
  CHECK(in.get_vector<double>() == numbers);
  CHECK(in.get_string() == "gdb 17");
  CHECK(in.done());
  CHECK_THROWS_AS(in.get<std::int32_t>(), InvalidArgument);
  // The serial communicator: collectives are the identity, a gather returns this rank's block.
  comm::Communicator& world = comm::world();
  CHECK(world.size() == 1);
  std::int64_t values[2] = {3, 4};
  world.allreduce_sum(values);
  CHECK(values[1] == 4);
  CHECK(world.allgather(out.bytes()).at(0) == out.bytes());
}
