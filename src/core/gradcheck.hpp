// A generic finite-difference gradient checker (central differences, double precision).
//
//   numeric_i = (L(x + h e_i) - L(x - h e_i)) / (2h)
//
// The reported relative error of component i is
//   |analytic_i - numeric_i| / max(|analytic_i|, |numeric_i|, floor),
// where floor = floor_fraction * max_j |numeric_j| (default 1e-3) keeps components whose true
// gradient is ~0 from dividing rounding noise by ~0; max_rel_error is the maximum over i.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <span>
#include <vector>

namespace flt {

struct GradCheckResult {
  double max_rel_error = 0.0;   // max over components of the relative error defined above
  double max_abs_error = 0.0;   // max |analytic - numeric|
  std::size_t worst_index = 0;  // component with the largest relative error
  double worst_analytic = 0.0;
  double worst_numeric = 0.0;
  std::vector<double> numeric;  // the full numerical gradient
};

struct GradCheckOptions {
  double step = 1e-5;             // h
  double floor_fraction = 1e-3;   // see header comment
  double absolute_floor = 1e-12;  // lower bound on the denominator
};

// `loss` evaluates the scalar objective at the current contents of `x` (which it must read, not
// copy once). `analytic` is the gradient the code under test produced at the unperturbed x.
// x is restored exactly on return.
inline GradCheckResult check_gradient(const std::function<double()>& loss, std::span<double> x,
                                      std::span<const double> analytic,
                                      const GradCheckOptions& options = {}) {
  GradCheckResult result;
  result.numeric.resize(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + options.step;
    const double plus = loss();
    x[i] = saved - options.step;
    const double minus = loss();
    x[i] = saved;
    result.numeric[i] = (plus - minus) / (2.0 * options.step);
  }
  double max_numeric = 0.0;
  for (double v : result.numeric) max_numeric = std::max(max_numeric, std::abs(v));
  const double floor = std::max(options.absolute_floor, options.floor_fraction * max_numeric);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double a = analytic[i];
    const double n = result.numeric[i];
    const double abs_err = std::abs(a - n);
    const double rel = abs_err / std::max({std::abs(a), std::abs(n), floor});
    result.max_abs_error = std::max(result.max_abs_error, abs_err);
    if (i == 0 || rel > result.max_rel_error) {
      result.max_rel_error = rel;
      result.worst_index = i;
      result.worst_analytic = a;
      result.worst_numeric = n;
    }
  }
  return result;
}

}  // namespace flt
