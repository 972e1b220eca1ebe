#include "core/gradcheck.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

using namespace flt;

TEST_CASE("Gradient checker accepts a correct gradient and rejects a wrong one", "[core][gradcheck]") {
  std::vector<double> x = {0.3, -1.2, 2.0};
  // L = sum_i sin(x_i) * x_i^2, dL/dx_i = cos(x_i) x_i^2 + 2 x_i sin(x_i)
  auto loss = [&] {
    double s = 0;
    for (double v : x) s += std::sin(v) * v * v;
    return s;
  };
  std::vector<double> good, bad;
  for (double v : x) good.push_back(std::cos(v) * v * v + 2 * v * std::sin(v));
  bad = good;
  bad[1] *= 1.01;
  const auto ok = check_gradient(loss, x, good);
  CHECK(ok.max_rel_error < 1e-8);
  const auto wrong = check_gradient(loss, x, bad);
  CHECK(wrong.max_rel_error > 5e-3);
  CHECK(wrong.worst_index == 1);
  CHECK(x[1] == -1.2);  // restored exactly
}
