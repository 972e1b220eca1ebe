// How well a predicted standard deviation (e.g. an ensemble's spread) describes the errors of one
// target: n records with prediction p_i, label y_i and std sigma_i, error e_i = p_i - y_i, all in
// the target's unit. Records without a label (NaN y) are masked; records with sigma_i == 0 are
// counted (zero_std) and left out of every metric below (a Gaussian of zero width gives no ranking
// information, an infinite NLL and an undefined e/sigma). Over the n' records left, in index
// order (fixed order: the result does not depend on threads or batching):
//   Spearman rho      Pearson correlation of the ranks of |e_i| and of sigma_i, ties given the
//                     average of their ranks; NaN if n' < 2 or either column is constant
//   within_k          (1/n') #{ |e_i| <= k sigma_i }, k = 1, 2 (Gaussian: 0.6827, 0.9545)
//   NLL               (1/n') sum 0.5 ln(2 pi sigma_i^2) + e_i^2 / (2 sigma_i^2): the Gaussian
//                     negative log-likelihood of the error, a density per unit of the target, so
//                     it depends on the unit (eV -> meV adds ln 1000 = 6.908)
//   miscalibration    Chemprop's miscalibration area: for the confidence levels p_j = j/100,
//     area            j = 1..99, the observed fraction f_j of records with |e_i| <= z_j sigma_i,
//                     z_j = sqrt(2) erfinv(p_j) (the central Gaussian interval of probability
//                     p_j), and area = sum_j 0.01 |f_j - p_j| (0: calibrated; at most about 0.5)
//   ENCE              records sorted by sigma (ties by index) and cut into B = min(100, n')
//                     bins of consecutive records, the first n' mod B one record larger
//                     (numpy.array_split, as Chemprop); per bin RMV_b = sqrt(mean sigma^2) and
//                     RMSE_b = sqrt(mean e^2); ENCE = (1/B) sum_b |RMV_b - RMSE_b| / RMV_b
//   std_scale s       sqrt((1/n') sum (e_i / sigma_i)^2): the factor by which sigma would have to
//                     be multiplied to make mean (e/(s sigma))^2 = 1 on these data (reported,
//                     not applied)
//   std_coverage_     q = Q_p(|e_i| / sigma_i), p = 0.682689492 (P(|Z| <= 1) of a Gaussian): the
//     scale q         factor by which sigma would have to be multiplied for a fraction p of these
//                     records to lie within 1 std (reported, not applied); robust where one record
//                     dominates sum (e/sigma)^2. Q_p is numpy's default ("linear") quantile:
//                     sorted values v_0 <= .. <= v_{n'-1}, position h = (n'-1) p,
//                     Q_p = v_floor(h) + (h - floor(h)) (v_floor(h)+1 - v_floor(h))
// With n' == 0 every metric is NaN. A labelled record whose prediction or sigma is not finite (or
// sigma < 0) makes every metric NaN: a broken model must not look calibrated.
#pragma once

#include <cstddef>
#include <limits>
#include <span>
#include <vector>

namespace flt::train {

struct UncertaintyMetrics {
  static constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  std::size_t labelled = 0;   // records with a label
  std::size_t count = 0;      // of those, used: sigma > 0 (n')
  std::size_t zero_std = 0;   // of those, left out: sigma == 0
  double spearman = kNaN;     // rank correlation of |error| and sigma
  double within_1std = kNaN;  // fraction with |error| <= sigma
  double within_2std = kNaN;  // fraction with |error| <= 2 sigma
  double nll = kNaN;          // mean Gaussian NLL per record, nats, errors in the target's unit
  double miscalibration_area = kNaN;
  double ence = kNaN;
  double std_scale = kNaN;    // s = sqrt(mean (e/sigma)^2), dimensionless
  double std_coverage_scale = kNaN;  // q = Q_0.6827(|e|/sigma), dimensionless
};

// Average ranks (1-based) of `values`; tied values share the mean of the ranks they span.
std::vector<double> average_ranks(std::span<const double> values);
// Spearman's rank correlation with average ranks for ties; NaN if n < 2 or either is constant.
double spearman_correlation(std::span<const double> a, std::span<const double> b);
// P(|Z| <= 1) for a standard normal Z, erf(1/sqrt 2): the coverage std_coverage_scale aims at.
inline constexpr double kOneStdCoverage = 0.682689492;
// numpy.quantile(values, p) with its default method "linear" (definition above); 0 <= p <= 1,
// values non-empty and free of NaN (InvalidArgument otherwise).
double linear_quantile(std::vector<double> values, double p);
// z with P(|Z| <= z) = p for a standard normal Z, 0 < p < 1 (sqrt(2) erfinv(p)).
double central_gaussian_quantile(double p);

// The metrics above for one target. The three spans have the same length.
UncertaintyMetrics compute_uncertainty_metrics(std::span<const double> predicted, std::span<const double> truth,
                                               std::span<const double> stddev);

}  // namespace flt::train
