// Losses: forward returns the value (in double), backward ACCUMULATES scale * dLoss/dpred into
// dpred. Templated on T (float, double instantiated in losses.cpp).
//
// Shapes: N rows (molecules), K targets (regression columns), C classes.
//   regression: pred N x K, target N x K, optional mask N x K
//   classification: logits N x C, labels N integers
//
// Missing labels. A regression label is MISSING when the target is NaN, or when a mask is given and
// its entry is 0 (either makes it missing). Normalisation ("mean over present labels, per target"):
//   n_k   = number of present labels in column k
//   L_k   = (1/n_k) sum_{i present in column k} l(pred_ik, target_ik)     (only if n_k > 0)
//   value = (1/K') sum_{k : n_k > 0} L_k,      K' = number of columns with n_k > 0
// Columns without any present label contribute nothing (and get zero gradient); with no present
// label at all the value is 0. When every label is present this equals the plain mean over all
// N*K elements (torch reduction='mean'). The gradient is
//   dpred_ik += scale * l'(pred_ik, target_ik) / (K' n_k)   for present (i, k), 0 otherwise.
//
// Per-element losses, d = pred - target:
//   mse:   l = d^2,                                 l' = 2 d
//   l1:    l = |d|,                                 l' = sign(d), with the subgradient 0 at d == 0
//   huber: l = d^2/2 if |d| <= delta,               l' = d if |d| <= delta
//          l = delta (|d| - delta/2) otherwise,     l' = delta sign(d) otherwise
//          (torch.nn.HuberLoss; delta > 0; continuous with continuous derivative at |d| = delta)
//
// Softmax cross-entropy with integer labels: for a present row i with label y_i in [0, C),
//   l_i = logsumexp(z_i) - z_{i,y_i},  logsumexp(z) = m + log sum_c exp(z_c - m), m = max_c z_c
// (stable for any magnitude of logits; computed in double). A NEGATIVE label means missing (like
// torch's ignore_index); labels >= C throw InvalidArgument. value = (1/n) sum_{present i} l_i with n
// present rows (0 if none); gradient dlogits_i += scale (softmax(z_i) - onehot(y_i)) / n.
//
// Sums run serially in row order (deterministic; these losses are O(N K), never a bottleneck).
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
