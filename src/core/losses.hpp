// Losses: forward returns the value (in double), backward ACCUMULATES scale * dLoss/dpred into
// dpred. Templated on T (float, double instantiated in losses.cpp).
//
// Shapes: N rows (molecules), K targets (regression columns), C classes.
//   regression: pred N x K, target N x K, optional mask N x K (NaN target or mask 0: missing)
//   classification: logits N x C, labels N integers (negative: missing; >= C: InvalidArgument)
// Regression, mean over present labels per target, then over the K' columns with any:
//   value = (1/K') sum_k (1/n_k) sum_{i present in k} l(pred_ik - target_ik)
//   l = d^2 (mse), |d| (l1), or huber: d^2/2 if |d| <= delta, else delta (|d| - delta/2)
// Classification: value = (1/n) sum_{present i} (logsumexp(z_i) - z_{i,y_i}).
// Sums run serially in row order (deterministic). Gradients, subgradients and the missing-label
// cases: docs/core.md, "Losses".
#pragma once

#include "core/tensor.hpp"

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace flt {

enum class RegressionLossKind { mse, l1, huber };

// "mse", "l1", "huber"; throws ConfigError otherwise.
RegressionLossKind parse_regression_loss(std::string_view name);
const char* to_string(RegressionLossKind kind) noexcept;

struct RegressionLoss {
  RegressionLossKind kind = RegressionLossKind::mse;
  double huber_delta = 1.0;  // only for huber; must be > 0
};

// A presence mask for regression labels: nonzero = present. Same shape as the targets.
using LabelMask = Eigen::Matrix<std::uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct LossValue {
  double value = 0.0;                  // the normalised loss defined above
  std::vector<double> per_target;      // L_k (0 for columns with n_k == 0); one entry for CE
  std::vector<std::int64_t> count;     // n_k, present labels per column; one entry for CE
};

// Per-element loss and derivative (exposed for metrics and tests).
double regression_element_loss(const RegressionLoss& loss, double d);
double regression_element_grad(const RegressionLoss& loss, double d);

// mask may be null (then only NaN targets are missing). Shapes are checked (InvalidArgument).
template <class T>
LossValue regression_loss_forward(const RegressionLoss& loss, ConstMatRef<T> pred,
                                  ConstMatRef<T> target, const LabelMask* mask = nullptr);
template <class T>
void regression_loss_backward(const RegressionLoss& loss, ConstMatRef<T> pred,
                              ConstMatRef<T> target, MatRef<T> dpred, double scale = 1.0,
                              const LabelMask* mask = nullptr);

// Convenience wrappers.
template <class T>
LossValue mse_loss_forward(ConstMatRef<T> pred, ConstMatRef<T> target,
                           const LabelMask* mask = nullptr) {
  return regression_loss_forward<T>({RegressionLossKind::mse, 1.0}, pred, target, mask);
}
template <class T>
void mse_loss_backward(ConstMatRef<T> pred, ConstMatRef<T> target, MatRef<T> dpred,
                       double scale = 1.0, const LabelMask* mask = nullptr) {
  regression_loss_backward<T>({RegressionLossKind::mse, 1.0}, pred, target, dpred, scale, mask);
}
template <class T>
LossValue l1_loss_forward(ConstMatRef<T> pred, ConstMatRef<T> target,
                          const LabelMask* mask = nullptr) {
  return regression_loss_forward<T>({RegressionLossKind::l1, 1.0}, pred, target, mask);
}
template <class T>
void l1_loss_backward(ConstMatRef<T> pred, ConstMatRef<T> target, MatRef<T> dpred,
                      double scale = 1.0, const LabelMask* mask = nullptr) {
  regression_loss_backward<T>({RegressionLossKind::l1, 1.0}, pred, target, dpred, scale, mask);
}
template <class T>
LossValue huber_loss_forward(ConstMatRef<T> pred, ConstMatRef<T> target, double delta,
                             const LabelMask* mask = nullptr) {
  return regression_loss_forward<T>({RegressionLossKind::huber, delta}, pred, target, mask);
}
template <class T>
void huber_loss_backward(ConstMatRef<T> pred, ConstMatRef<T> target, double delta,
                         MatRef<T> dpred, double scale = 1.0, const LabelMask* mask = nullptr) {
  regression_loss_backward<T>({RegressionLossKind::huber, delta}, pred, target, dpred, scale,
                              mask);
}

// Softmax cross-entropy. logits: N x C; labels: N entries (negative = missing).
template <class T>
LossValue cross_entropy_forward(ConstMatRef<T> logits, std::span<const std::int32_t> labels);
template <class T>
void cross_entropy_backward(ConstMatRef<T> logits, std::span<const std::int32_t> labels,
                            MatRef<T> dlogits, double scale = 1.0);

}  // namespace flt
