// Shared helpers for the core layer/loss tests: random matrices, the random scalar projection
// L = sum(out .* R) used as the gradient-check objective, and float/double conversions.
#pragma once

#include "core/gradcheck.hpp"
#include "core/params.hpp"
#include "core/random.hpp"
#include "core/tensor.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <limits>
#include <span>
#include <string>

namespace flt::test {

// Required accuracy of every double-precision gradient check (brief: max relative error <= 1e-6).
inline constexpr double kGradTol = 1e-6;
// Unit roundoff of float (half the machine epsilon): the basis of every float-vs-double tolerance.
inline constexpr double kFloatU = std::numeric_limits<float>::epsilon() / 2.0;

// Entries uniform in [-scale, scale], drawn as float and widened, so a float copy is exact and a
// float-vs-double comparison measures only the arithmetic error of the float kernel.
inline Mat<double> random_mat(Rng& rng, Index rows, Index cols, double scale = 1.0) {
  Mat<double> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i)
    m.data()[i] = static_cast<double>(static_cast<float>(rng.uniform(-scale, scale)));
  return m;
}

inline Mat<float> to_float(const Mat<double>& m) { return m.cast<float>(); }

// L = sum_ij out_ij R_ij: every output element influences the objective with a random weight.
inline double project(const Mat<double>& out, const Mat<double>& R) {
  return (out.array() * R.array()).sum();
}

inline std::span<double> span_of(Mat<double>& m) {
  return {m.data(), static_cast<std::size_t>(m.size())};
}

// Runs the checker and asserts max relative error <= kGradTol, reporting the worst component.
inline void require_gradient(const std::string& what, const std::function<double()>& loss,
                             std::span<double> x, std::span<const double> analytic) {
  REQUIRE(x.size() == analytic.size());
  const GradCheckResult r = check_gradient(loss, x, analytic);
  INFO(what << ": max rel error " << r.max_rel_error << " at " << r.worst_index << " (analytic "
            << r.worst_analytic << ", numeric " << r.worst_numeric << ")");
  REQUIRE(r.max_rel_error <= kGradTol);
}

// |v| of a vector parameter (bias, gain) as a row, for elementwise error bounds.
inline RowVec<double> abs_row(const ParameterStore<double>& store, const ParamRef& ref) {
  return Eigen::Map<const RowVec<double>>(store.values().data() + ref.offset,
                                          static_cast<Index>(ref.size()))
      .cwiseAbs();
}

// Copies the values of a double store into a float store with the same registrations.
inline void copy_values(const ParameterStore<double>& from, ParameterStore<float>& to) {
  REQUIRE(from.size() == to.size());
  for (std::size_t i = 0; i < from.size(); ++i) to.values()[i] = static_cast<float>(from.values()[i]);
}

// Rounds every parameter of a double store to float precision (so the float copy is exact).
inline void round_to_float(ParameterStore<double>& store) {
  for (double& v : store.values()) v = static_cast<double>(static_cast<float>(v));
}

}  // namespace flt::test
