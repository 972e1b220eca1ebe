// Calibration metrics of a predicted standard deviation (train/uncertainty.hpp) against values
// computed by hand, and on synthetic Gaussian data whose calibration is known.
#include "core/random.hpp"
#include "train/uncertainty.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <numbers>
#include <vector>

using namespace flt::train;

namespace {
const double kNaN = std::numeric_limits<double>::quiet_NaN();
}

TEST_CASE("uncertainty: Spearman with average ranks for ties", "[train][uncertainty]") {
  CHECK(average_ranks(std::vector<double>{3, 1, 2}) == std::vector<double>{3, 1, 2});
  CHECK(average_ranks(std::vector<double>{1, 2, 2, 3}) == std::vector<double>{1, 2.5, 2.5, 4});
  CHECK(average_ranks(std::vector<double>{5, 5, 5}) == std::vector<double>{2, 2, 2});
  // Ranks 1, 2.5, 2.5, 4 against 1, 2, 3, 4: deviations (-1.5, 0, 0, 1.5) and (-1.5, -0.5, 0.5, 1.5),
  // rho = 4.5 / sqrt(4.5 * 5) = sqrt(0.9).
  CHECK(spearman_correlation(std::vector<double>{1, 2, 2, 3}, std::vector<double>{1, 2, 3, 4}) ==
        Approx(std::sqrt(0.9)).epsilon(1e-14));
  CHECK(spearman_correlation(std::vector<double>{3, 1, 2}, std::vector<double>{1, 2, 3}) == Approx(-0.5).epsilon(1e-14));
  // Monotone but not linear: 1.
  CHECK(spearman_correlation(std::vector<double>{1, 10, 100, 1000}, std::vector<double>{0.1, 0.2, 0.3, 0.4}) == 1.0);
  // Undefined: one pair, or a constant column.
  CHECK(std::isnan(spearman_correlation(std::vector<double>{1}, std::vector<double>{2})));
  CHECK(std::isnan(spearman_correlation(std::vector<double>{1, 1, 1}, std::vector<double>{1, 2, 3})));
}

TEST_CASE("uncertainty: central Gaussian quantiles", "[train][uncertainty]") {
  // P(|Z| <= 1) = erf(1/sqrt 2) = 0.682689492..., P(|Z| <= 1.959963985) = 0.95.
  CHECK(central_gaussian_quantile(std::erf(1.0 / std::numbers::sqrt2)) == Approx(1.0).epsilon(1e-14));
  CHECK(central_gaussian_quantile(0.95) == Approx(1.959963984540054).epsilon(1e-14));
  CHECK(central_gaussian_quantile(0.5) == Approx(0.6744897501960817).epsilon(1e-14));
}

TEST_CASE("uncertainty: every metric on a hand-computed example, std = 0 and unlabelled records left out",
          "[train][uncertainty]") {
  // errors e = p - y and sigma: (1, 1), (-1, 0.5), (0, 2); then sigma = 0 (counted, left out)
  // and no label (masked).
  const std::vector<double> p = {1, 0, 2, 0.5, 3}, y = {0, 1, 2, 0, kNaN}, s = {1, 0.5, 2, 0, 1};
  const UncertaintyMetrics m = compute_uncertainty_metrics(p, y, s);
  CHECK(m.labelled == 4);
  CHECK(m.count == 3);
  CHECK(m.zero_std == 1);
  // Ranks of |e| = (1, 1, 0): (2.5, 2.5, 1); of sigma: (2, 1, 3); rho = -1.5 / sqrt(1.5 * 2).
  CHECK(m.spearman == Approx(-1.5 / std::sqrt(3.0)).epsilon(1e-14));
  // |e| <= sigma: yes, no (1 > 0.5), yes; |e| <= 2 sigma: all.
  CHECK(m.within_1std == Approx(2.0 / 3.0).epsilon(1e-15));
  CHECK(m.within_2std == 1.0);
  // NLL = 0.5 ln(2 pi) + mean ln sigma (= (0 + ln 0.5 + ln 2) / 3 = 0) + mean z^2 / 2 (= (1 + 4 + 0) / 6).
  CHECK(m.nll == Approx(0.5 * std::log(2 * std::numbers::pi) + 5.0 / 6.0).epsilon(1e-14));
  // s = sqrt((1 + 4 + 0) / 3).
  CHECK(m.std_scale == Approx(std::sqrt(5.0 / 3.0)).epsilon(1e-14));
  // |z| = (1, 2, 0): the fraction inside the central interval of level p_j = j/100 is 1/3 for
  // j <= 68 (z_68 = 0.9945 < 1 < z_69 = 1.0152), 2/3 for j <= 95 (z_95 = 1.95996 < 2 < z_96 =
  // 2.0537), then 1; sum_j 0.01 |f_j - p_j| = 0.158133... (summed separately in Python).
  CHECK(m.miscalibration_area == Approx(0.15813333333333332).epsilon(1e-12));
  // Three bins of one record each, by sigma: |0.5 - 1| / 0.5, |1 - 1| / 1, |2 - 0| / 2.
  CHECK(m.ence == Approx(2.0 / 3.0).epsilon(1e-14));
}

TEST_CASE("uncertainty: linear_quantile is numpy.quantile's default (linear) rule", "[train][uncertainty]") {
  const double p = kOneStdCoverage;
  // Expected values from numpy.quantile(v, 0.682689492) (numpy 1.24).
  CHECK(linear_quantile({1.5}, p) == 1.5);                                      // n = 1
  CHECK(linear_quantile({3, 1}, p) == Approx(2.365378984).epsilon(1e-14));      // n = 2, 1 + 0.6827 * 2
  CHECK(linear_quantile({0.5, 4.0, 0.1, 1.0, 0.2}, p) == Approx(0.865378984).epsilon(1e-14));  // h = 2.73
  CHECK(linear_quantile({2, 7, 2, 2}, p) == Approx(2.24034238).epsilon(1e-14));  // ties: h = 2.048
  CHECK(linear_quantile({1, 1, 1}, p) == 1.0);
  CHECK(linear_quantile({3, 1, 2}, 0.0) == 1.0);
  CHECK(linear_quantile({3, 1, 2}, 1.0) == 3.0);
  CHECK(linear_quantile({3, 1, 2}, 0.5) == 2.0);
  CHECK_THROWS(linear_quantile({}, p));
  CHECK_THROWS(linear_quantile({1, kNaN}, p));

  // In the metrics: |e|/sigma over the records with sigma > 0 only. |z| = (1, 2, 0); the record
  // with sigma = 0 (|e| = 0.5) and the unlabelled one are left out: Q(0, 1, 2) = 1 + 0.6827.
  const std::vector<double> pr = {1, 0, 2, 0.5, 3}, y = {0, 1, 2, 0, kNaN}, s = {1, 0.5, 2, 0, 1};
  CHECK(compute_uncertainty_metrics(pr, y, s).std_coverage_scale == Approx(1.365378984).epsilon(1e-14));
  // One record: |z| = 1.5; all std = 0 or a broken prediction: NaN.
  CHECK(compute_uncertainty_metrics(std::vector<double>{1}, std::vector<double>{4}, std::vector<double>{2})
            .std_coverage_scale == 1.5);
  CHECK(std::isnan(compute_uncertainty_metrics(std::vector<double>{1, 2}, std::vector<double>{0, 0},
                                               std::vector<double>{0, 0})
                       .std_coverage_scale));
  CHECK(std::isnan(compute_uncertainty_metrics(std::vector<double>{1, kNaN}, std::vector<double>{0, 0},
                                               std::vector<double>{1, 1})
                       .std_coverage_scale));
  // Scaling sigma by q puts a fraction of about p (to 1/n) within 1 std.
  std::vector<double> e, one, scaled;
  for (int i = 0; i < 50; ++i) {
    e.push_back(std::pow(1.13, i) * (i % 2 ? 1 : -1));
    one.push_back(1.0 + 0.1 * (i % 7));
  }
  const double q = compute_uncertainty_metrics(e, std::vector<double>(50, 0.0), one).std_coverage_scale;
  for (const double sigma : one) scaled.push_back(q * sigma);
  CHECK(compute_uncertainty_metrics(e, std::vector<double>(50, 0.0), scaled).within_1std == Approx(p).margin(1.0 / 50));
}

TEST_CASE("uncertainty: ENCE bins as numpy.array_split over the records sorted by sigma", "[train][uncertainty]") {
  // 101 records: 100 bins, the first holding the two smallest sigmas. Bin 0: sigma 1 and 1
  // (RMV 1), errors 0 and 2 (RMSE sqrt 2); every other bin: |e| = sigma (contributes 0).
  std::vector<double> p, y, s;
  for (int i = 0; i < 101; ++i) {
    const double sigma = i < 2 ? 1.0 : 1.0 + i;
    s.push_back(sigma);
    y.push_back(0.0);
    p.push_back(i == 0 ? 0.0 : i == 1 ? 2.0 : (i % 2 ? sigma : -sigma));
  }
  const UncertaintyMetrics m = compute_uncertainty_metrics(p, y, s);
  CHECK(m.count == 101);
  CHECK(m.ence == Approx((std::sqrt(2.0) - 1.0) / 100.0).epsilon(1e-13));
}

TEST_CASE("uncertainty: one record, all std = 0, and a broken prediction", "[train][uncertainty]") {
  // One record: e = -3, sigma = 2.
  const UncertaintyMetrics one =
      compute_uncertainty_metrics(std::vector<double>{1}, std::vector<double>{4}, std::vector<double>{2});
  CHECK(one.count == 1);
  CHECK(std::isnan(one.spearman));
  CHECK(one.within_1std == 0.0);
  CHECK(one.within_2std == 1.0);
  CHECK(one.std_scale == Approx(1.5).epsilon(1e-15));
  CHECK(one.nll == Approx(0.5 * std::log(2 * std::numbers::pi) + std::log(2.0) + 0.5 * 2.25).epsilon(1e-14));
  CHECK(one.ence == Approx(0.5).epsilon(1e-15));
  // |z| = 1.5 lies inside the central intervals from p = erf(1.5/sqrt 2) = 0.8664 on, i.e. j >= 87.
  double area = 0;
  for (int j = 1; j <= 99; ++j) area += 0.01 * std::fabs((j >= 87 ? 1.0 : 0.0) - j / 100.0);
  CHECK(one.miscalibration_area == Approx(area).epsilon(1e-13));

  // Every sigma 0 (one model, or identical members): nothing to measure, said as NaN, counted.
  const UncertaintyMetrics zero =
      compute_uncertainty_metrics(std::vector<double>{1, 2}, std::vector<double>{0, 0}, std::vector<double>{0, 0});
  CHECK(zero.labelled == 2);
  CHECK(zero.zero_std == 2);
  CHECK(zero.count == 0);
  CHECK(std::isnan(zero.within_1std));
  CHECK(std::isnan(zero.nll));
  CHECK(std::isnan(zero.std_scale));
  CHECK(std::isnan(zero.miscalibration_area));
  CHECK(std::isnan(zero.ence));

  // A NaN prediction (or sigma) with a label must not look calibrated.
  const UncertaintyMetrics broken = compute_uncertainty_metrics(std::vector<double>{1, kNaN, 2}, std::vector<double>{0, 0, 0},
                                                                std::vector<double>{1, 1, 1});
  CHECK(std::isnan(broken.within_1std));
  CHECK(std::isnan(broken.std_scale));
  CHECK(std::isnan(broken.nll));
}

namespace {

// n errors e_i ~ N(0, (factor sigma_i)^2) with sigma_i uniform in [0.1, 2] (fixed seed).
struct Synthetic {
  std::vector<double> predicted, truth, sigma;
  double mean_log_sigma = 0;
};
Synthetic synthetic(std::size_t n, double factor, std::uint64_t seed) {
  flt::Rng rng(seed);
  Synthetic d;
  for (std::size_t i = 0; i < n; ++i) {
    const double sigma = rng.uniform(0.1, 2.0);
    const double y = rng.normal(0.0, 5.0);
    d.truth.push_back(y);
    d.sigma.push_back(sigma);
    d.predicted.push_back(y + factor * sigma * rng.normal());
    d.mean_log_sigma += std::log(sigma);
  }
  d.mean_log_sigma /= static_cast<double>(n);
  return d;
}

}  // namespace

TEST_CASE("uncertainty: calibrated Gaussian errors give 68/95 % coverage and s -> 1", "[train][uncertainty]") {
  // n = 100,000: binomial standard error of a coverage sqrt(0.68 * 0.32 / n) = 0.0015, of s about
  // sqrt(2 / n) / 2 = 0.0022; tolerances are 3-4 of those.
  const std::size_t n = 100000;
  const Synthetic d = synthetic(n, 1.0, 7);
  const UncertaintyMetrics m = compute_uncertainty_metrics(d.predicted, d.truth, d.sigma);
  CHECK(m.count == n);
  CHECK(m.zero_std == 0);
  CHECK(m.within_1std == Approx(0.6827).margin(0.005));
  CHECK(m.within_2std == Approx(0.9545).margin(0.003));
  CHECK(m.std_scale == Approx(1.0).margin(0.01));
  // Expected NLL: 0.5 ln(2 pi) + E ln sigma + E z^2 / 2 with E z^2 = 1.
  CHECK(m.nll == Approx(0.5 * std::log(2 * std::numbers::pi) + d.mean_log_sigma + 0.5).margin(0.01));
  CHECK(m.miscalibration_area < 0.005);
  // 100 bins of 1,000: each bin's RMSE / RMV is 1 within about 1 / sqrt(2000) = 0.022.
  CHECK(m.ence < 0.04);
  // The larger sigma, the larger |e| tends to be: a clearly positive rank correlation.
  CHECK(m.spearman > 0.2);
}

TEST_CASE("uncertainty: errors twice as wide as sigma give s -> 2 and the expected coverage and area",
          "[train][uncertainty]") {
  const std::size_t n = 100000;
  const double factor = 2.0;
  const Synthetic d = synthetic(n, factor, 11);
  const UncertaintyMetrics m = compute_uncertainty_metrics(d.predicted, d.truth, d.sigma);
  CHECK(m.std_scale == Approx(factor).margin(0.02));
  // |e| <= k sigma  <=>  |Z| <= k / 2: erf(0.5 / sqrt 2) = 0.3829, erf(1 / sqrt 2) = 0.6827.
  CHECK(m.within_1std == Approx(0.3829).margin(0.005));
  CHECK(m.within_2std == Approx(0.6827).margin(0.005));
  // Expected area: the observed fraction at level p_j is erf(z_j / (2 sqrt 2)).
  double expected_area = 0;
  for (int j = 1; j <= 99; ++j) {
    const double z = central_gaussian_quantile(j / 100.0);
    expected_area += 0.01 * std::fabs(std::erf(z / (factor * std::numbers::sqrt2)) - j / 100.0);
  }
  CHECK(expected_area > 0.15);
  CHECK(m.miscalibration_area == Approx(expected_area).margin(0.005));
  // Each bin's RMSE is about twice its RMV.
  CHECK(m.ence == Approx(factor - 1.0).margin(0.05));
  CHECK(m.nll == Approx(0.5 * std::log(2 * std::numbers::pi) + d.mean_log_sigma + 0.5 * factor * factor).margin(0.03));
}

TEST_CASE("uncertainty: an ideal two-member ensemble is not calibrated: Cauchy coverage 50 % / 70.5 %",
          "[train][uncertainty]") {
  // Two members y1, y2 = truth + N(0, 1), independent: mean error (y1 + y2) / 2 and population
  // std |y1 - y2| / 2 are independent and error / std is a standard Cauchy variable, so
  // P(|z| <= 1) = 1/2, P(|z| <= 2) = (2/pi) atan 2 = 0.7048, and mean z^2 has no finite value.
  flt::Rng rng(5);
  std::vector<double> p, y, s;
  for (std::size_t i = 0; i < 100000; ++i) {
    const double truth = rng.normal(0.0, 5.0), a = truth + rng.normal(), b = truth + rng.normal();
    y.push_back(truth);
    p.push_back(0.5 * (a + b));
    s.push_back(0.5 * std::fabs(a - b));
  }
  const UncertaintyMetrics m = compute_uncertainty_metrics(p, y, s);
  CHECK(m.within_1std == Approx(0.5).margin(0.005));
  CHECK(m.within_2std == Approx(2.0 / std::numbers::pi * std::atan(2.0)).margin(0.005));
  CHECK(m.std_scale > 5.0);
}
