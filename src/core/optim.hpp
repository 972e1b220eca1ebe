// Optimisation: AdamW, learning-rate schedules, gradient clipping by global norm, and an
// exponential moving average of weights. All operate on the flat buffers of a
// flt::ParameterStore<T> (values() / grads(), P elements). Every piece of mutable state is a plain
// struct of numbers and flat arrays (state() / load_state()), so a checkpoint that saves it and
// the parameter values resumes bit-exactly.
//
// Determinism: AdamW and EMA are element-wise (no reductions); the gradient norm is reduced over
// fixed chunks of kFlatChunk elements in double, partials summed serially in chunk order. All
// results are bitwise independent of the OpenMP thread count.
#pragma once

#include "core/params.hpp"

#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

namespace flt {

// ---------------------------------------------------------------------------------------------
// AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"; identical update to
// torch.optim.AdamW with amsgrad=False, maximize=False). At step t = 1, 2, ... with learning rate
// lr, for every element i (computed in T, vectorised; the bias corrections in double):
//   p_i <- p_i (1 - lr * wd_i)                     decoupled decay; wd_i = weight_decay or 0 (mask)
//   m_i <- beta1 m_i + (1 - beta1) g_i
//   v_i <- beta2 v_i + (1 - beta2) g_i^2
//   p_i <- p_i - (lr / (1 - beta1^t)) * m_i / (sqrt(v_i) / sqrt(1 - beta2^t) + eps)
struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;  // torch default
};

template <class T>
struct AdamWState {
  std::int64_t step = 0;  // number of steps taken (t of the last step)
  std::vector<T> m;       // first moments, P elements, same layout as the parameter buffer
  std::vector<T> v;       // second moments
};

template <class T>
class AdamW {
 public:
  // num_params = ParameterStore::size(). Weight decay applies to every element until a mask is set.
  explicit AdamW(std::size_t num_params, AdamWConfig config = {});

  // Per-element weight-decay mask (P entries, nonzero = decay), see decay_mask_* below.
  void set_decay_mask(std::vector<std::uint8_t> mask);
  const std::vector<std::uint8_t>& decay_mask() const noexcept { return decay_mask_; }

  // One update with learning rate lr (from a schedule). Sizes must equal num_params.
  void step(std::span<T> params, std::span<const T> grads, double lr);
  void step(ParameterStore<T>& store, double lr) { step(store.values(), store.grads(), lr); }

  const AdamWConfig& config() const noexcept { return config_; }
  const AdamWState<T>& state() const noexcept { return state_; }
  // Throws InvalidArgument when the arrays do not match num_params or step < 0.
  void load_state(AdamWState<T> state);

 private:
  AdamWConfig config_;
  AdamWState<T> state_;
  std::vector<std::uint8_t> decay_mask_;  // empty = decay everything
};

// Per-element weight-decay masks for AdamW::set_decay_mask (P = total elements of the store).
// decay_mask_matrices_only: decay tensors with rows > 1 and cols > 1 (Linear weights, embedding
// tables); no decay for vectors (biases, LayerNorm gains and biases, which are all D x 1 here).
template <class T>
std::vector<std::uint8_t> decay_mask_matrices_only(const ParameterStore<T>& store);
// decay_mask_by: decay exactly the tensors for which decay(info) is true.
template <class T>
std::vector<std::uint8_t> decay_mask_by(const ParameterStore<T>& store,
                                        const std::function<bool(const ParamInfo&)>& decay);

// ---------------------------------------------------------------------------------------------
// Linear warm-up then cosine decay to a floor, a pure function of the 0-based step index s
// (so its only state is the step counter the caller already saves):
//   s <  warmup_steps:  lr = base_lr (s + 1) / warmup_steps
//   s >= warmup_steps:  p = min(1, (s - warmup_steps) / max(1, total_steps - warmup_steps))
//                       lr = min_lr + (base_lr - min_lr) (1 + cos(pi p)) / 2
// After total_steps the rate stays at min_lr.
struct WarmupCosineSchedule {
  double base_lr = 1e-3;
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 1;
  double min_lr = 0.0;

  double lr_at(std::int64_t step) const;
  void validate() const;  // throws ConfigError for negative steps/rates or min_lr > base_lr
};

// ---------------------------------------------------------------------------------------------
// Reduce-on-plateau, the algorithm of torch.optim.lr_scheduler.ReduceLROnPlateau. Per call of
// step(metric) (one per epoch):
//   last_epoch += 1
//   if better(metric, best): best = metric; num_bad_epochs = 0  else num_bad_epochs += 1
//   if cooldown_counter > 0: cooldown_counter -= 1; num_bad_epochs = 0
//   if num_bad_epochs > patience:
//       new = max(lr * factor, min_lr); if lr - new > eps: lr = new
//       cooldown_counter = cooldown; num_bad_epochs = 0
// better(a, best): mode min, rel: a < best (1 - threshold);  min, abs: a < best - threshold;
//                  mode max, rel: a > best (1 + threshold);  max, abs: a > best + threshold.
// best starts at +inf (min) / -inf (max). A NaN metric counts as not better.
enum class PlateauMode { min, max };
enum class ThresholdMode { rel, abs };

struct PlateauConfig {
  PlateauMode mode = PlateauMode::min;
  double factor = 0.1;  // in (0, 1)
  std::int64_t patience = 10;
  double threshold = 1e-4;
  ThresholdMode threshold_mode = ThresholdMode::rel;
  std::int64_t cooldown = 0;
  double min_lr = 0.0;
  double eps = 1e-8;
};

struct PlateauState {
  double lr = 0.0;
  double best = 0.0;
  std::int64_t num_bad_epochs = 0;
  std::int64_t cooldown_counter = 0;
  std::int64_t last_epoch = 0;
};

class ReduceLROnPlateau {
 public:
  // Throws ConfigError for factor outside (0, 1), negative patience/cooldown/threshold/min_lr.
  ReduceLROnPlateau(double initial_lr, PlateauConfig config = {});
  // Feeds one epoch's metric; returns true when the rate was reduced by this call.
  bool step(double metric);
  double lr() const noexcept { return state_.lr; }
  const PlateauConfig& config() const noexcept { return config_; }
  const PlateauState& state() const noexcept { return state_; }
  void load_state(const PlateauState& state);

 private:
  bool is_better(double metric) const;
  PlateauConfig config_;
  PlateauState state_;
};

// ---------------------------------------------------------------------------------------------
// Gradient clipping by global norm (torch.nn.utils.clip_grad_norm_):
//   norm = sqrt(sum_i g_i^2)   (in double, fixed chunk order)
//   if norm > max_norm: g_i <- g_i * max_norm / (norm + 1e-6)
// Returns the norm BEFORE clipping. A non-finite norm leaves the gradients untouched (the caller
// decides whether to skip the step: check std::isfinite on the result). max_norm must be > 0.
template <class T>
double global_grad_norm(std::span<const T> grads);
template <class T>
double clip_grad_norm(std::span<T> grads, double max_norm);
// Store overloads (deduce T): the norm of / clipping of store.grads().
template <class T>
double global_grad_norm(const ParameterStore<T>& store) {
  return global_grad_norm<T>(store.grads());
}
template <class T>
double clip_grad_norm(ParameterStore<T>& store, double max_norm) {
  return clip_grad_norm<T>(store.grads(), max_norm);
}

// ---------------------------------------------------------------------------------------------
// Exponential moving average of the weights:  shadow_i <- d shadow_i + (1 - d) p_i  (in double)
// with d = decay, or, when warmup is on, d = min(decay, (1 + n) / (10 + n)) with n the number of
// updates so far (a common warm-up so early averages are not dominated by the initial weights).
// For evaluation, swap() exchanges the live parameters and the shadow (call it again to swap back);
// update() refuses to run while swapped (InvalidArgument).
template <class T>
struct EmaState {
  std::int64_t num_updates = 0;
  bool swapped = false;   // true while the shadow weights sit in the live parameter buffer
  std::vector<T> shadow;  // P elements
};

template <class T>
class ExponentialMovingAverage {
 public:
  // decay in [0, 1). The shadow starts as a copy of params.
  ExponentialMovingAverage(std::span<const T> params, double decay, bool warmup = false);
  void update(std::span<const T> params);
  void swap(std::span<T> params);
  bool swapped() const noexcept { return state_.swapped; }
  double decay() const noexcept { return decay_; }
  bool warmup() const noexcept { return warmup_; }
  // The decay the next update() will use.
  double current_decay() const noexcept;
  const EmaState<T>& state() const noexcept { return state_; }
  void load_state(EmaState<T> state);  // shadow size must match

 private:
  double decay_;
  bool warmup_;
  EmaState<T> state_;
};

}  // namespace flt
