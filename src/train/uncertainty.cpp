// n records of one target. Calibration metrics of a predicted standard deviation (definitions in
// uncertainty.hpp).
#include "train/uncertainty.hpp"

#include "core/error.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <numeric>

namespace flt::train {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

std::vector<double> average_ranks(std::span<const double> values) {
  const std::size_t n = values.size();
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return values[a] < values[b]; });
  std::vector<double> ranks(n);
  for (std::size_t i = 0; i < n;) {
    std::size_t j = i + 1;
    while (j < n && values[order[j]] == values[order[i]]) ++j;
    // Ranks i+1 .. j share their mean.
    const double rank = 0.5 * static_cast<double>(i + 1 + j);
    for (std::size_t k = i; k < j; ++k) ranks[order[k]] = rank;
    i = j;
  }
  return ranks;
}

double spearman_correlation(std::span<const double> a, std::span<const double> b) {
  require(a.size() == b.size(), "spearman_correlation: the two columns differ in size");
  const std::size_t n = a.size();
  if (n < 2) return kNaN;
  const std::vector<double> ra = average_ranks(a), rb = average_ranks(b);
  const double mean = 0.5 * static_cast<double>(n + 1);  // of ranks 1..n, ties included
  double sab = 0, saa = 0, sbb = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double da = ra[i] - mean, db = rb[i] - mean;
    sab += da * db;
    saa += da * da;
    sbb += db * db;
  }
  if (saa == 0.0 || sbb == 0.0) return kNaN;
  return sab / std::sqrt(saa * sbb);
}

double central_gaussian_quantile(double p) {
  require(p > 0.0 && p < 1.0, "central_gaussian_quantile: p must be in (0, 1)");
  // Bisection on erf(z / sqrt 2) = p: slow but exact to the last bit and the same everywhere.
  double lo = 0.0, hi = 40.0;
  for (int it = 0; it < 200; ++it) {
    const double mid = 0.5 * (lo + hi);
    if (mid == lo || mid == hi) break;
    if (std::erf(mid / std::numbers::sqrt2) < p)
      lo = mid;
    else
      hi = mid;
  }
  return 0.5 * (lo + hi);
}

double linear_quantile(std::vector<double> values, double p) {
  require(!values.empty(), "linear_quantile: no values");
  require(p >= 0.0 && p <= 1.0, "linear_quantile: p must be in [0, 1]");
  for (const double v : values) require(!std::isnan(v), "linear_quantile: a value is NaN");
  std::sort(values.begin(), values.end());
  const double h = static_cast<double>(values.size() - 1) * p;
  const std::size_t lo = static_cast<std::size_t>(std::floor(h));
  if (lo + 1 >= values.size()) return values.back();
  return values[lo] + (h - static_cast<double>(lo)) * (values[lo + 1] - values[lo]);
}

UncertaintyMetrics compute_uncertainty_metrics(std::span<const double> predicted, std::span<const double> truth,
                                               std::span<const double> stddev) {
  require(predicted.size() == truth.size() && stddev.size() == truth.size(),
          "compute_uncertainty_metrics: predicted, truth and stddev differ in size");
  UncertaintyMetrics m;
  std::vector<double> error, sigma;
  bool broken = false;
  for (std::size_t i = 0; i < truth.size(); ++i) {
    if (std::isnan(truth[i])) continue;
    ++m.labelled;
    if (!std::isfinite(predicted[i]) || !std::isfinite(stddev[i]) || stddev[i] < 0.0) {
      broken = true;
      continue;
    }
    if (stddev[i] == 0.0) {
      ++m.zero_std;
      continue;
    }
    error.push_back(predicted[i] - truth[i]);
    sigma.push_back(stddev[i]);
  }
  m.count = error.size();
  if (broken || m.count == 0) return m;
  const std::size_t n = m.count;
  const double dn = static_cast<double>(n);

  std::vector<double> abs_error(n);
  for (std::size_t i = 0; i < n; ++i) abs_error[i] = std::fabs(error[i]);
  m.spearman = spearman_correlation(abs_error, sigma);

  std::size_t in1 = 0, in2 = 0;
  double nll = 0, z2 = 0;
  const double log_2pi = std::log(2.0 * std::numbers::pi);
  for (std::size_t i = 0; i < n; ++i) {
    if (abs_error[i] <= sigma[i]) ++in1;
    if (abs_error[i] <= 2.0 * sigma[i]) ++in2;
    const double z = error[i] / sigma[i];
    z2 += z * z;
    nll += 0.5 * (log_2pi + 2.0 * std::log(sigma[i]) + z * z);
  }
  m.within_1std = static_cast<double>(in1) / dn;
  m.within_2std = static_cast<double>(in2) / dn;
  m.nll = nll / dn;
  m.std_scale = std::sqrt(z2 / dn);
  std::vector<double> abs_z(n);
  for (std::size_t i = 0; i < n; ++i) abs_z[i] = abs_error[i] / sigma[i];
  m.std_coverage_scale = linear_quantile(std::move(abs_z), kOneStdCoverage);

  double area = 0;
  for (int j = 1; j <= 99; ++j) {
    const double p = j / 100.0;
    const double zj = central_gaussian_quantile(p);
    std::size_t inside = 0;
    for (std::size_t i = 0; i < n; ++i)
      if (abs_error[i] <= zj * sigma[i]) ++inside;
    area += 0.01 * std::fabs(static_cast<double>(inside) / dn - p);
  }
  m.miscalibration_area = area;

  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return sigma[a] < sigma[b]; });
  const std::size_t bins = std::min<std::size_t>(100, n);
  const std::size_t base = n / bins, larger = n % bins;
  double ence = 0;
  std::size_t next = 0;
  for (std::size_t b = 0; b < bins; ++b) {
    const std::size_t size = base + (b < larger ? 1 : 0);
    double var = 0, sq = 0;
    for (std::size_t k = next; k < next + size; ++k) {
      var += sigma[order[k]] * sigma[order[k]];
      sq += error[order[k]] * error[order[k]];
    }
    next += size;
    const double rmv = std::sqrt(var / static_cast<double>(size)), rmse = std::sqrt(sq / static_cast<double>(size));
    ence += std::fabs(rmv - rmse) / rmv;
  }
  m.ence = ence / static_cast<double>(bins);
  return m;
}

}  // namespace flt::train
