// N rows, K regression targets, C classes. Equations and normalisation: see losses.hpp.
#include "core/losses.hpp"

#include "core/error.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace flt {

RegressionLossKind parse_regression_loss(std::string_view name) {
  if (name == "mse") return RegressionLossKind::mse;
  if (name == "l1") return RegressionLossKind::l1;
  if (name == "huber") return RegressionLossKind::huber;
  throw ConfigError("unknown regression loss '" + std::string(name) +
                    "' (expected mse, l1 or huber)");
}

const char* to_string(RegressionLossKind kind) noexcept {
  switch (kind) {
    case RegressionLossKind::mse: return "mse";
    case RegressionLossKind::l1: return "l1";
    case RegressionLossKind::huber: return "huber";
  }
  return "unknown";
}

double regression_element_loss(const RegressionLoss& loss, double d) {
  switch (loss.kind) {
    case RegressionLossKind::mse: return d * d;
    case RegressionLossKind::l1: return std::abs(d);
    case RegressionLossKind::huber: {
      const double a = std::abs(d);
      const double delta = loss.huber_delta;
      return a <= delta ? 0.5 * d * d : delta * (a - 0.5 * delta);
    }
  }
  return 0.0;
}

double regression_element_grad(const RegressionLoss& loss, double d) {
  // sign(d) with sign(0) = 0: the subgradient chosen at the kink of |d|.
  const double sign = d > 0.0 ? 1.0 : (d < 0.0 ? -1.0 : 0.0);
  switch (loss.kind) {
    case RegressionLossKind::mse: return 2.0 * d;
    case RegressionLossKind::l1: return sign;
    case RegressionLossKind::huber:
      return std::abs(d) <= loss.huber_delta ? d : loss.huber_delta * sign;
  }
  return 0.0;
}

namespace {

template <class T>
void check_regression(const char* what, const RegressionLoss& loss, ConstMatRef<T> pred,
                      ConstMatRef<T> target, const LabelMask* mask) {
  if (target.rows() != pred.rows() || target.cols() != pred.cols())
    throw InvalidArgument(std::string(what) + ": targets are " + std::to_string(target.rows()) +
                          "x" + std::to_string(target.cols()) + " but predictions are " +
                          std::to_string(pred.rows()) + "x" + std::to_string(pred.cols()));
  if (mask != nullptr && (mask->rows() != pred.rows() || mask->cols() != pred.cols()))
    throw InvalidArgument(std::string(what) + ": mask shape differs from the predictions");
  if (loss.kind == RegressionLossKind::huber && !(loss.huber_delta > 0.0))
    throw InvalidArgument(std::string(what) + ": Huber delta must be > 0");
}

template <class T>
bool present(ConstMatRef<T> target, const LabelMask* mask, Index i, Index k) {
  if (mask != nullptr && (*mask)(i, k) == 0) return false;
  return !std::isnan(static_cast<double>(target(i, k)));
}

// n_k per column (serial).
template <class T>
std::vector<std::int64_t> present_counts(ConstMatRef<T> target, const LabelMask* mask) {
  std::vector<std::int64_t> count(static_cast<std::size_t>(target.cols()), 0);
  for (Index i = 0; i < target.rows(); ++i)
    for (Index k = 0; k < target.cols(); ++k)
      if (present<T>(target, mask, i, k)) ++count[static_cast<std::size_t>(k)];
  return count;
}

std::int64_t active_columns(const std::vector<std::int64_t>& count) {
  return std::count_if(count.begin(), count.end(), [](std::int64_t c) { return c > 0; });
}

}  // namespace

template <class T>
LossValue regression_loss_forward(const RegressionLoss& loss, ConstMatRef<T> pred,
                                  ConstMatRef<T> target, const LabelMask* mask) {
  check_regression<T>("regression_loss_forward", loss, pred, target, mask);
  LossValue out;
  out.count = present_counts<T>(target, mask);
  out.per_target.assign(out.count.size(), 0.0);
  for (Index i = 0; i < pred.rows(); ++i)
    for (Index k = 0; k < pred.cols(); ++k)
      if (present<T>(target, mask, i, k))
        out.per_target[static_cast<std::size_t>(k)] += regression_element_loss(
            loss, static_cast<double>(pred(i, k)) - static_cast<double>(target(i, k)));
  const std::int64_t active = active_columns(out.count);
  for (std::size_t k = 0; k < out.count.size(); ++k) {
    if (out.count[k] == 0) continue;
    out.per_target[k] /= static_cast<double>(out.count[k]);
    out.value += out.per_target[k];
  }
  if (active > 0) out.value /= static_cast<double>(active);
  return out;
}

template <class T>
void regression_loss_backward(const RegressionLoss& loss, ConstMatRef<T> pred,
                              ConstMatRef<T> target, MatRef<T> dpred, double scale,
                              const LabelMask* mask) {
  check_regression<T>("regression_loss_backward", loss, pred, target, mask);
  if (dpred.rows() != pred.rows() || dpred.cols() != pred.cols())
    throw InvalidArgument("regression_loss_backward: gradient shape differs from predictions");
  const std::vector<std::int64_t> count = present_counts<T>(target, mask);
  const std::int64_t active = active_columns(count);
  if (active == 0) return;
  std::vector<double> weight(count.size(), 0.0);  // scale / (K' n_k)
  for (std::size_t k = 0; k < count.size(); ++k)
    if (count[k] > 0)
      weight[k] = scale / (static_cast<double>(active) * static_cast<double>(count[k]));
  for (Index i = 0; i < pred.rows(); ++i)
    for (Index k = 0; k < pred.cols(); ++k)
      if (present<T>(target, mask, i, k))
        dpred(i, k) += static_cast<T>(
            weight[static_cast<std::size_t>(k)] *
            regression_element_grad(
                loss, static_cast<double>(pred(i, k)) - static_cast<double>(target(i, k))));
}

namespace {

template <class T>
std::int64_t check_labels(const char* what, ConstMatRef<T> logits,
                          std::span<const std::int32_t> labels) {
  if (static_cast<Index>(labels.size()) != logits.rows())
    throw InvalidArgument(std::string(what) + ": " + std::to_string(labels.size()) +
                          " labels for " + std::to_string(logits.rows()) + " rows of logits");
  require(logits.cols() > 0, std::string(what) + ": no classes");
  std::int64_t n = 0;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0) continue;
    if (labels[i] >= logits.cols())
      throw InvalidArgument(std::string(what) + ": label " + std::to_string(labels[i]) +
                            " at row " + std::to_string(i) + " is outside [0, " +
                            std::to_string(logits.cols()) + ")");
    ++n;
  }
  return n;
}

// log sum_c exp(z_c), stabilised by the row maximum.
template <class T>
double log_sum_exp(ConstMatRef<T> logits, Index i, double& max_out) {
  double m = -std::numeric_limits<double>::infinity();
  for (Index c = 0; c < logits.cols(); ++c) m = std::max(m, static_cast<double>(logits(i, c)));
  double s = 0.0;
  for (Index c = 0; c < logits.cols(); ++c) s += std::exp(static_cast<double>(logits(i, c)) - m);
  max_out = m;
  return m + std::log(s);
}

}  // namespace

template <class T>
LossValue cross_entropy_forward(ConstMatRef<T> logits, std::span<const std::int32_t> labels) {
  const std::int64_t n = check_labels<T>("cross_entropy_forward", logits, labels);
  LossValue out;
  out.count = {n};
  double total = 0.0;
  for (Index i = 0; i < logits.rows(); ++i) {
    const std::int32_t y = labels[static_cast<std::size_t>(i)];
    if (y < 0) continue;
    double m = 0.0;
    total += log_sum_exp<T>(logits, i, m) - static_cast<double>(logits(i, y));
  }
  out.value = n > 0 ? total / static_cast<double>(n) : 0.0;
  out.per_target = {out.value};
  return out;
}

template <class T>
void cross_entropy_backward(ConstMatRef<T> logits, std::span<const std::int32_t> labels,
                            MatRef<T> dlogits, double scale) {
  const std::int64_t n = check_labels<T>("cross_entropy_backward", logits, labels);
  if (dlogits.rows() != logits.rows() || dlogits.cols() != logits.cols())
    throw InvalidArgument("cross_entropy_backward: gradient shape differs from the logits");
  if (n == 0) return;
  const double w = scale / static_cast<double>(n);
  for (Index i = 0; i < logits.rows(); ++i) {
    const std::int32_t y = labels[static_cast<std::size_t>(i)];
    if (y < 0) continue;
    double m = 0.0;
    const double lse = log_sum_exp<T>(logits, i, m);
    for (Index c = 0; c < logits.cols(); ++c) {
      const double p = std::exp(static_cast<double>(logits(i, c)) - lse);  // softmax
      dlogits(i, c) += static_cast<T>(w * (p - (c == y ? 1.0 : 0.0)));
    }
  }
}

#define FLT_INSTANTIATE_LOSSES(T)                                                              \
  template LossValue regression_loss_forward<T>(const RegressionLoss&, ConstMatRef<T>,         \
                                                ConstMatRef<T>, const LabelMask*);             \
  template void regression_loss_backward<T>(const RegressionLoss&, ConstMatRef<T>,             \
                                            ConstMatRef<T>, MatRef<T>, double,                 \
                                            const LabelMask*);                                 \
  template LossValue cross_entropy_forward<T>(ConstMatRef<T>, std::span<const std::int32_t>);  \
  template void cross_entropy_backward<T>(ConstMatRef<T>, std::span<const std::int32_t>,       \
                                          MatRef<T>, double);

FLT_INSTANTIATE_LOSSES(float)
FLT_INSTANTIATE_LOSSES(double)
#undef FLT_INSTANTIATE_LOSSES

}  // namespace flt
