// The radial functions of the geometric attention (attention/radial.hpp): the envelope's smoothness at
// the cutoff, the j0 basis against direct evaluation, and derivatives against finite differences.
#include "attention/radial.hpp"

#include "core/error.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <numbers>
#include <vector>

using namespace flt;
using namespace flt::attn;

TEST_CASE("envelope: 1 at 0, zero with two zero derivatives at the cutoff", "[radial]") {
  const double rc = 5.0;
  CHECK(envelope(0.0, rc) == 1.0);
  CHECK(envelope(rc, rc) == 0.0);
  CHECK(envelope(7.0, rc) == 0.0);
  CHECK(envelope_derivative(rc, rc) == 0.0);
  // Near the cutoff e ~ c (rc - rho)^3: value, slope and curvature all vanish.
  const double eps = 1e-3;
  CHECK(std::abs(envelope(rc - eps, rc)) < 1e-7);
  CHECK(std::abs(envelope_derivative(rc - eps, rc)) < 1e-4);
  // Monotone decreasing on (0, rc).
  double previous = 1.0;
  for (int i = 1; i < 100; ++i) {
    const double e = envelope(rc * i / 100.0, rc);
    CHECK(e < previous);
    CHECK(e > 0.0);
    previous = e;
  }
  // Derivative against central differences.
  for (double rho : {0.3, 1.7, 3.2, 4.6, 4.99}) {
    const double h = 1e-6;
    const double numeric = (envelope(rho + h, rc) - envelope(rho - h, rc)) / (2 * h);
    CHECK(envelope_derivative(rho, rc) == Approx(numeric).margin(1e-8));
  }
}

TEST_CASE("radial basis: j0 on the nodes, by recurrence, with derivatives", "[radial]") {
  const RadialNodes nodes = RadialNodes::bessel(32, 5.0);
  CHECK(nodes.kappa(0) == Approx(0.1));
  CHECK(nodes.kappa(31) == Approx(3.2));
  std::vector<double> b(32), db(32), bp(32), bm(32);
  for (double rho : {0.0, 1e-9, 1e-4, 0.5, 1.1, 2.9, 4.999, 7.5}) {
    radial_basis(nodes, rho, b.data(), db.data());
    for (Index n = 0; n < nodes.count; ++n) {
      const double x = 2 * std::numbers::pi * nodes.kappa(n) * rho;
      const double direct = x == 0.0 ? 1.0 : std::sin(x) / x;
      CHECK(b[static_cast<std::size_t>(n)] == Approx(direct).margin(1e-12));
    }
    if (rho < 1e-3) continue;
    const double h = 1e-6;
    radial_basis(nodes, rho + h, bp.data(), nullptr);
    radial_basis(nodes, rho - h, bm.data(), nullptr);
    for (std::size_t n = 0; n < 32; ++n)
      CHECK(db[n] == Approx((bp[n] - bm[n]) / (2 * h)).margin(1e-7));
  }
  // Nodes that do not start at the spacing (a constant node first) use the same recurrence.
  RadialNodes far;
  far.count = 5;
  far.first = 0.0;
  far.spacing = 0.025;
  std::vector<double> f(5);
  radial_basis(far, 9.0, f.data(), nullptr);
  CHECK(f[0] == 1.0);
  for (std::size_t n = 1; n < 5; ++n) {
    const double x = 2 * std::numbers::pi * 0.025 * static_cast<double>(n) * 9.0;
    CHECK(f[n] == Approx(std::sin(x) / x).margin(1e-13));
  }
}

TEST_CASE("radial nodes: invalid settings are configuration errors", "[radial]") {
  CHECK_THROWS_AS(RadialNodes::bessel(0, 5.0), ConfigError);
  CHECK_THROWS_AS(RadialNodes::bessel(8, 0.0), ConfigError);
  RadialNodes bad;
  bad.spacing = -1;
  CHECK_THROWS_AS(bad.validate(), ConfigError);
}
