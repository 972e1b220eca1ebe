// Losses: gradient checks in double, values by hand, missing-label normalisation, L1's
// subgradient at 0, stable cross-entropy, float-vs-double agreement.
#include "core/losses.hpp"

#include "core/error.hpp"
#include "core_test_util.hpp"

#include <catch2/catch.hpp>

#include <limits>
#include <vector>

using namespace flt;
using namespace flt::test;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

// Gradient check of a regression loss w.r.t. the predictions. `scale` multiplies the gradient,
// so the objective is scale * value.
void check_regression_gradient(const RegressionLoss& loss, Mat<double> pred, const Mat<double>& target,
                               const LabelMask* mask, const std::string& what) {
  const double scale = 1.7;
  Mat<double> grad = Mat<double>::Zero(pred.rows(), pred.cols());
  regression_loss_backward<double>(loss, pred, target, grad, scale, mask);
  auto objective = [&] { return scale * regression_loss_forward<double>(loss, pred, target, mask).value; };
  require_gradient(what, objective, span_of(pred), span_of(grad));
}

}  // namespace

TEST_CASE("MSE, L1 and Huber gradients match finite differences", "[core][losses][gradcheck]") {
  Rng rng(101);
  const Mat<double> target = random_mat(rng, 6, 3, 2.0);
  // Predictions at least 0.05 away from the targets (L1 kink) and from target +- delta (Huber's
  // switch point), where central differences would straddle a kink.
  Mat<double> pred = target;
  for (Index i = 0; i < pred.size(); ++i) {
    const double off = (i % 2 ? 1.0 : -1.0) * (0.05 + 0.2 * static_cast<double>(i % 7));
    pred.data()[i] += off;  // |off| in {0.05, 0.25, ..., 1.25}; delta = 0.6 is never hit
  }
  check_regression_gradient({RegressionLossKind::mse, 1.0}, pred, target, nullptr, "mse");
  check_regression_gradient({RegressionLossKind::l1, 1.0}, pred, target, nullptr, "l1");
  check_regression_gradient({RegressionLossKind::huber, 0.6}, pred, target, nullptr, "huber");
}

TEST_CASE("Masked regression gradients match finite differences (mask and NaN targets)", "[core][losses][gradcheck]") {
  Rng rng(102);
  Mat<double> target = random_mat(rng, 5, 3);
  target(1, 0) = kNaN;
  target(3, 2) = kNaN;
  LabelMask mask = LabelMask::Ones(5, 3);
  mask(0, 1) = 0;
  mask(4, 1) = 0;
  Mat<double> pred = target;
  for (Index i = 0; i < pred.size(); ++i) pred.data()[i] = rng.uniform(-1.5, 1.5);
  for (Index i = 0; i < pred.size(); ++i)
    if (std::isnan(target.data()[i])) pred.data()[i] = 0.3;
  check_regression_gradient({RegressionLossKind::mse, 1.0}, pred, target, &mask, "mse/masked");
  check_regression_gradient({RegressionLossKind::huber, 0.5}, pred, target, &mask, "huber/masked");
  check_regression_gradient({RegressionLossKind::l1, 1.0}, pred, target, nullptr, "l1/nan");
}

TEST_CASE("Regression losses take hand-computed values with per-target normalisation", "[core][losses]") {
  // pred - target per element:
  //   column 0: d = {1, -2, missing(NaN)}     column 1: d = {0.5, missing(mask), 3}
  // column 2: every label missing -> contributes nothing.
  Mat<double> pred(3, 3), target(3, 3);
  pred << 1, 0.5, 7,  //
      -2, 9, 7,       //
      5, 3, 7;
  target << 0, 0, kNaN,  //
      0, 0, kNaN,        //
      kNaN, 0, kNaN;
  LabelMask mask = LabelMask::Ones(3, 3);
  mask(1, 1) = 0;
  // MSE: L_0 = (1 + 4)/2 = 2.5, L_1 = (0.25 + 9)/2 = 4.625, value = (2.5 + 4.625)/2 = 3.5625.
  const LossValue mse = mse_loss_forward<double>(pred, target, &mask);
  CHECK(mse.value == Approx(3.5625).epsilon(1e-15));
  CHECK(mse.per_target[0] == Approx(2.5));
  CHECK(mse.per_target[1] == Approx(4.625));
  CHECK(mse.per_target[2] == 0.0);
  CHECK(mse.count == std::vector<std::int64_t>{2, 2, 0});
  // Gradient: 2 d / (K' n_k) = 2 d / 4 = d / 2; masked and NaN entries get 0.
  Mat<double> g = Mat<double>::Zero(3, 3);
  mse_loss_backward<double>(pred, target, g, 1.0, &mask);
  CHECK(g(0, 0) == 0.5);
  CHECK(g(1, 0) == -1.0);
  CHECK(g(2, 0) == 0.0);
  CHECK(g(0, 1) == 0.25);
  CHECK(g(1, 1) == 0.0);
  CHECK(g(2, 1) == 1.5);
  CHECK(g.col(2).isZero(0.0));
  // L1: L_0 = (1 + 2)/2 = 1.5, L_1 = (0.5 + 3)/2 = 1.75, value = 1.625.
  CHECK(l1_loss_forward<double>(pred, target, &mask).value == Approx(1.625).epsilon(1e-15));
  // Huber, delta = 1: d = 1 -> 0.5; d = -2 -> 1 (2 - 0.5) = 1.5; d = 0.5 -> 0.125; d = 3 -> 2.5.
  // L_0 = (0.5 + 1.5)/2 = 1, L_1 = (0.125 + 2.5)/2 = 1.3125, value = 1.15625.
  CHECK(huber_loss_forward<double>(pred, target, 1.0, &mask).value == Approx(1.15625).epsilon(1e-15));
  // With no mask, the masked entry (1, 1) counts again: L_1 = (0.25 + 81 + 9)/3.
  CHECK(mse_loss_forward<double>(pred, target).per_target[1] == Approx(90.25 / 3.0));
  // All present: the plain mean over N*K elements (torch reduction='mean').
  Mat<double> p2(2, 2), t2 = Mat<double>::Zero(2, 2);
  p2 << 1, 2, 3, 4;
  CHECK(mse_loss_forward<double>(p2, t2).value == Approx((1 + 4 + 9 + 16) / 4.0));
  // Nothing present: value 0 and no gradient.
  Mat<double> t3 = Mat<double>::Constant(2, 2, kNaN);
  CHECK(mse_loss_forward<double>(p2, t3).value == 0.0);
  Mat<double> g3 = Mat<double>::Zero(2, 2);
  mse_loss_backward<double>(p2, t3, g3);
  CHECK(g3.isZero(0.0));
}

TEST_CASE("L1 uses the subgradient 0 at d = 0, Huber is continuous at delta", "[core][losses]") {
  const RegressionLoss l1{RegressionLossKind::l1, 1.0};
  CHECK(regression_element_grad(l1, 0.0) == 0.0);
  CHECK(regression_element_grad(l1, 1e-300) == 1.0);
  CHECK(regression_element_grad(l1, -1e-300) == -1.0);
  Mat<double> p = Mat<double>::Constant(1, 2, 0.25), t = Mat<double>::Constant(1, 2, 0.25);
  Mat<double> g = Mat<double>::Zero(1, 2);
  l1_loss_backward<double>(p, t, g);
  CHECK(g.isZero(0.0));
  const RegressionLoss huber{RegressionLossKind::huber, 0.7};
  const double below = regression_element_loss(huber, 0.7 - 1e-12);
  const double above = regression_element_loss(huber, 0.7 + 1e-12);
  CHECK(std::abs(above - below) < 1e-11);
  CHECK(regression_element_grad(huber, 0.7) == Approx(0.7));
  CHECK(regression_element_grad(huber, -5.0) == Approx(-0.7));
  REQUIRE_THROWS_AS(huber_loss_forward<double>(p, t, 0.0), InvalidArgument);
  REQUIRE_THROWS_AS(mse_loss_forward<double>(p, Mat<double>(2, 2)), InvalidArgument);
  REQUIRE(parse_regression_loss("huber") == RegressionLossKind::huber);
  REQUIRE_THROWS_AS(parse_regression_loss("l2"), ConfigError);
}

TEST_CASE("Cross-entropy gradient matches finite differences, with missing labels", "[core][losses][gradcheck]") {
  Rng rng(103);
  Mat<double> logits = random_mat(rng, 6, 4, 3.0);
  const std::vector<std::int32_t> labels = {2, -1, 0, 3, 3, -1};
  const double scale = 0.8;
  Mat<double> grad = Mat<double>::Zero(6, 4);
  cross_entropy_backward<double>(logits, labels, grad, scale);
  CHECK(grad.row(1).isZero(0.0));
  auto objective = [&] { return scale * cross_entropy_forward<double>(logits, labels).value; };
  require_gradient("cross-entropy", objective, span_of(logits), span_of(grad));
  // Each present row's gradient sums to 0 (softmax minus one-hot).
  CHECK(std::abs(grad.row(0).sum()) < 1e-15);
}

TEST_CASE("Cross-entropy values by hand, stability for huge logits, label errors", "[core][losses]") {
  // Row 0: logits (0, ln 3), label 1: p = 3/4 -> l = ln(4/3). Row 1: (0, 0), label 0: l = ln 2.
  Mat<double> z(2, 2);
  z << 0.0, std::log(3.0), 0.0, 0.0;
  const std::vector<std::int32_t> y = {1, 0};
  const LossValue v = cross_entropy_forward<double>(z, y);
  CHECK(v.value == Approx((std::log(4.0 / 3.0) + std::log(2.0)) / 2.0).epsilon(1e-15));
  CHECK(v.count[0] == 2);
  // Logits of 1e4 overflow a naive exp; log-sum-exp shifts by the max. Same loss as above.
  Mat<double> big = z.array() + 1e4;
  CHECK(cross_entropy_forward<double>(big, y).value == Approx(v.value).epsilon(1e-9));
  Mat<float> bigf = big.cast<float>();
  CHECK(std::isfinite(cross_entropy_forward<float>(bigf, y).value));
  const std::vector<std::int32_t> out_of_range = {1, 2};
  REQUIRE_THROWS_AS(cross_entropy_forward<double>(z, out_of_range), InvalidArgument);
  REQUIRE_THROWS_WITH(cross_entropy_forward<double>(z, out_of_range), Catch::Contains("label 2 at row 1"));
  const std::vector<std::int32_t> too_few = {1};
  REQUIRE_THROWS_AS(cross_entropy_forward<double>(z, too_few), InvalidArgument);
  const std::vector<std::int32_t> none = {-1, -1};
  CHECK(cross_entropy_forward<double>(z, none).value == 0.0);
}

TEST_CASE("Losses in float agree with double within the float rounding bound", "[core][losses][float]") {
  Rng rng(104);
  const Mat<double> pred = random_mat(rng, 50, 4, 3.0);
  Mat<double> target = random_mat(rng, 50, 4, 3.0);
  target(7, 2) = kNaN;
  const std::vector<std::int32_t> labels = [&] {
    std::vector<std::int32_t> l;
    for (int i = 0; i < 50; ++i) l.push_back(static_cast<std::int32_t>(rng.below(5)) - 1);
    return l;
  }();
  const Mat<double> logits = random_mat(rng, 50, 4, 5.0);
  for (auto kind : {RegressionLossKind::mse, RegressionLossKind::l1, RegressionLossKind::huber}) {
    const RegressionLoss loss{kind, 0.9};
    const double vd = regression_loss_forward<double>(loss, pred, target).value;
    const double vf = regression_loss_forward<float>(loss, to_float(pred), to_float(target)).value;
    // Inputs are exact in float and the loss is accumulated in double for both types, so the values
    // agree to double rounding; the float gradient is the double gradient rounded once (u |g|).
    CHECK(std::abs(vf - vd) <= 1e-15 * std::abs(vd));
    Mat<double> gd = Mat<double>::Zero(50, 4);
    Mat<float> gf = Mat<float>::Zero(50, 4);
    regression_loss_backward<double>(loss, pred, target, gd);
    regression_loss_backward<float>(loss, to_float(pred), to_float(target), gf);
    CHECK(((gf.cast<double>() - gd).cwiseAbs().array() <= kFloatU * gd.cwiseAbs().array()).all());
  }
  const double cd = cross_entropy_forward<double>(logits, labels).value;
  const double cf = cross_entropy_forward<float>(to_float(logits), labels).value;
  CHECK(std::abs(cf - cd) <= 1e-15 * std::abs(cd));
  Mat<double> gd = Mat<double>::Zero(50, 4);
  Mat<float> gf = Mat<float>::Zero(50, 4);
  cross_entropy_backward<double>(logits, labels, gd);
  cross_entropy_backward<float>(to_float(logits), labels, gf);
  CHECK(((gf.cast<double>() - gd).cwiseAbs().array() <= kFloatU * gd.cwiseAbs().array()).all());
}
