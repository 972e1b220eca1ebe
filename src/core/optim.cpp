// P parameters (flat buffer of a ParameterStore). Equations: see optim.hpp.
#include "core/optim.hpp"

#include "core/error.hpp"
#include "core/parallel.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <string>

namespace flt {

// -------------------------------------------------------------------------------------- AdamW

template <class T>
AdamW<T>::AdamW(std::size_t num_params, AdamWConfig config) : config_(config) {
  if (!(config.beta1 >= 0.0 && config.beta1 < 1.0) || !(config.beta2 >= 0.0 && config.beta2 < 1.0))
    throw ConfigError("AdamW: beta1 and beta2 must lie in [0, 1)");
  if (!(config.eps > 0.0)) throw ConfigError("AdamW: eps must be > 0");
  if (!(config.weight_decay >= 0.0)) throw ConfigError("AdamW: weight_decay must be >= 0");
  state_.m.assign(num_params, T(0));
  state_.v.assign(num_params, T(0));
}

template <class T>
void AdamW<T>::set_decay_mask(std::vector<std::uint8_t> mask) {
  require(mask.size() == state_.m.size(),
          "AdamW::set_decay_mask: mask has " + std::to_string(mask.size()) +
              " entries for " + std::to_string(state_.m.size()) + " parameters");
  decay_mask_ = std::move(mask);
}

namespace {

template <class T>
struct AdamWCoefficients {
  T b1, b2, one_minus_b1, one_minus_b2, inv_bc2, eps, step, decay;
};

// The AdamW update of n consecutive elements (see AdamW::step). A free function with restrict
// pointers and the coefficients by value, so the compiler can prove that the stores do not
// alias the inputs and vectorises both loops; the flag is read unconditionally in the masked
// loop (a short-circuit test would keep it from vectorising).
template <class T>
void adamw_update(Index n, const AdamWCoefficients<T> k, T* __restrict w, const T* __restrict g,
                  T* __restrict m, T* __restrict v, const std::uint8_t* __restrict flag) {
  const auto one = [&](Index i, T decay) {
    const T mi = k.b1 * m[i] + k.one_minus_b1 * g[i];
    const T vi = k.b2 * v[i] + k.one_minus_b2 * g[i] * g[i];
    m[i] = mi;
    v[i] = vi;
    w[i] = w[i] * decay - k.step * mi / (std::sqrt(vi) * k.inv_bc2 + k.eps);
  };
  if (flag != nullptr) {
    for (Index i = 0; i < n; ++i) one(i, flag[i] != 0 ? k.decay : T(1));
  } else {
    for (Index i = 0; i < n; ++i) one(i, k.decay);
  }
}

}  // namespace

template <class T>
void AdamW<T>::step(std::span<T> params, std::span<const T> grads, double lr) {
  const std::size_t p = state_.m.size();
  require(params.size() == p && grads.size() == p,
          "AdamW::step: parameter/gradient size does not match the optimiser (" +
              std::to_string(p) + ")");
  require(lr >= 0.0 && std::isfinite(lr), "AdamW::step: learning rate must be finite and >= 0");
  const std::int64_t t = ++state_.step;
  const double b1 = config_.beta1;
  const double b2 = config_.beta2;
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(t));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(b2, static_cast<double>(t)));
  const double step_size = lr / bc1;
  const double decay_factor = 1.0 - lr * config_.weight_decay;
  const bool masked = !decay_mask_.empty();
  // Element-wise: no reduction, so the result is independent of the partition. Evaluated in T
  // in a plain loop that the compiler vectorises (the per-element double loop this replaces was
  // 7% of a training step of the default molecule model). Deliberately not Eigen array
  // expressions: on a std::vector buffer (16-byte aligned) Eigen peels a data-dependent number of
  // leading elements into its scalar path, whose rounding (FMA contraction) differs from its
  // packet path, so results would depend on the buffer's address; the compiler's own
  // vectorisation applies the same contraction to the vector body and the remainder.
  const T b1t = static_cast<T>(b1), b2t = static_cast<T>(b2);
  const T one_minus_b1 = static_cast<T>(1.0 - b1), one_minus_b2 = static_cast<T>(1.0 - b2);
  const T inv_bc2 = static_cast<T>(1.0 / bc2_sqrt), eps = static_cast<T>(config_.eps);
  const T step_t = static_cast<T>(step_size), decay_t = static_cast<T>(decay_factor);
  T* const w = params.data();
  const T* const g = grads.data();
  T* const m = state_.m.data();
  T* const v = state_.v.data();
  const std::uint8_t* const flag = masked ? decay_mask_.data() : nullptr;
  const AdamWCoefficients<T> k{b1t, b2t, one_minus_b1, one_minus_b2, inv_bc2, eps, step_t, decay_t};
  parallel_chunks(static_cast<Index>(p), kFlatChunk, [&](Index, Index i0, Index i1) {
    adamw_update<T>(i1 - i0, k, w + i0, g + i0, m + i0, v + i0, flag != nullptr ? flag + i0 : nullptr);
  });
}

template <class T>
void AdamW<T>::load_state(AdamWState<T> state) {
  require(state.m.size() == state_.m.size() && state.v.size() == state_.v.size(),
          "AdamW::load_state: moment arrays have " + std::to_string(state.m.size()) + "/" +
              std::to_string(state.v.size()) + " entries, expected " +
              std::to_string(state_.m.size()));
  require(state.step >= 0, "AdamW::load_state: negative step count");
  state_ = std::move(state);
}

template <class T>
std::vector<std::uint8_t> decay_mask_by(const ParameterStore<T>& store,
                                        const std::function<bool(const ParamInfo&)>& decay) {
  std::vector<std::uint8_t> mask(store.size(), 0);
  for (const ParamInfo& info : store.infos()) {
    const std::uint8_t flag = decay(info) ? 1 : 0;
    std::fill_n(mask.begin() + static_cast<std::ptrdiff_t>(info.ref.offset), info.ref.size(), flag);
  }
  return mask;
}

template <class T>
std::vector<std::uint8_t> decay_mask_matrices_only(const ParameterStore<T>& store) {
  return decay_mask_by<T>(store,
                          [](const ParamInfo& info) { return info.ref.rows > 1 && info.ref.cols > 1; });
}

// ------------------------------------------------------------------------------- Warmup-cosine

double WarmupCosineSchedule::lr_at(std::int64_t step) const {
  require(step >= 0, "WarmupCosineSchedule::lr_at: negative step");
  if (step < warmup_steps)
    return base_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  const double span = static_cast<double>(std::max<std::int64_t>(1, total_steps - warmup_steps));
  const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / span);
  return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

void WarmupCosineSchedule::validate() const {
  if (!(base_lr >= 0.0) || !std::isfinite(base_lr))
    throw ConfigError("learning-rate schedule: base_lr must be finite and >= 0");
  if (!(min_lr >= 0.0) || min_lr > base_lr)
    throw ConfigError("learning-rate schedule: min_lr must lie in [0, base_lr]");
  if (warmup_steps < 0 || total_steps < 0)
    throw ConfigError("learning-rate schedule: step counts must be >= 0");
}

// -------------------------------------------------------------------------- ReduceLROnPlateau

ReduceLROnPlateau::ReduceLROnPlateau(double initial_lr, PlateauConfig config) : config_(config) {
  if (!(config.factor > 0.0 && config.factor < 1.0))
    throw ConfigError("ReduceLROnPlateau: factor must lie in (0, 1)");
  if (config.patience < 0 || config.cooldown < 0)
    throw ConfigError("ReduceLROnPlateau: patience and cooldown must be >= 0");
  if (!(config.threshold >= 0.0) || !(config.min_lr >= 0.0) || !(config.eps >= 0.0))
    throw ConfigError("ReduceLROnPlateau: threshold, min_lr and eps must be >= 0");
  if (!(initial_lr >= 0.0) || !std::isfinite(initial_lr))
    throw ConfigError("ReduceLROnPlateau: the initial learning rate must be finite and >= 0");
  state_.lr = initial_lr;
  state_.best = config.mode == PlateauMode::min ? std::numeric_limits<double>::infinity()
                                                : -std::numeric_limits<double>::infinity();
}

bool ReduceLROnPlateau::is_better(double a) const {
  const double best = state_.best;
  const double th = config_.threshold;
  if (config_.mode == PlateauMode::min)
    return config_.threshold_mode == ThresholdMode::rel ? a < best * (1.0 - th) : a < best - th;
  return config_.threshold_mode == ThresholdMode::rel ? a > best * (1.0 + th) : a > best + th;
}

bool ReduceLROnPlateau::step(double metric) {
  ++state_.last_epoch;
  if (is_better(metric)) {  // false for NaN
    state_.best = metric;
    state_.num_bad_epochs = 0;
  } else {
    ++state_.num_bad_epochs;
  }
  if (state_.cooldown_counter > 0) {
    --state_.cooldown_counter;
    state_.num_bad_epochs = 0;
  }
  bool reduced = false;
  if (state_.num_bad_epochs > config_.patience) {
    const double new_lr = std::max(state_.lr * config_.factor, config_.min_lr);
    if (state_.lr - new_lr > config_.eps) {
      state_.lr = new_lr;
      reduced = true;
    }
    state_.cooldown_counter = config_.cooldown;
    state_.num_bad_epochs = 0;
  }
  return reduced;
}

void ReduceLROnPlateau::load_state(const PlateauState& state) {
  require(state.lr >= 0.0 && state.num_bad_epochs >= 0 && state.cooldown_counter >= 0 &&
              state.last_epoch >= 0,
          "ReduceLROnPlateau::load_state: negative field");
  state_ = state;
}

// ----------------------------------------------------------------------------- Clip by norm

template <class T>
double global_grad_norm(std::span<const T> grads) {
  const Index n = static_cast<Index>(grads.size());
  std::vector<double> partial(static_cast<std::size_t>(chunk_count(n, kFlatChunk)), 0.0);
  parallel_chunks(n, kFlatChunk, [&](Index chunk, Index i0, Index i1) {
    // Eight interleaved double accumulators (element i goes to lane i mod 8 of its chunk), summed
    // pairwise at the end: the compiler vectorises the lanes, where a single accumulator is one
    // dependent add per element. The order depends on the sizes only.
    constexpr Index kLanes = 8;
    double lane[kLanes] = {};
    const T* g = grads.data();
    Index i = i0;
    for (; i + kLanes <= i1; i += kLanes)
      for (Index l = 0; l < kLanes; ++l) {
        const double v = static_cast<double>(g[i + l]);
        lane[l] += v * v;
      }
    for (Index l = 0; i < i1; ++i, ++l) {
      const double v = static_cast<double>(g[i]);
      lane[l] += v * v;
    }
    partial[static_cast<std::size_t>(chunk)] =
        ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  });
  double total = 0.0;
  for (double s : partial) total += s;
  return std::sqrt(total);
}

template <class T>
double clip_grad_norm(std::span<T> grads, double max_norm) {
  require(max_norm > 0.0, "clip_grad_norm: max_norm must be > 0");
  const double norm = global_grad_norm<T>(std::span<const T>(grads.data(), grads.size()));
  if (!std::isfinite(norm) || norm <= max_norm) return norm;
  const double coef = max_norm / (norm + 1e-6);
  parallel_chunks(static_cast<Index>(grads.size()), kFlatChunk, [&](Index, Index i0, Index i1) {
    for (Index i = i0; i < i1; ++i) {
      T& g = grads[static_cast<std::size_t>(i)];
      g = static_cast<T>(static_cast<double>(g) * coef);
    }
  });
  return norm;
}

// ------------------------------------------------------------------------------------- EMA

template <class T>
ExponentialMovingAverage<T>::ExponentialMovingAverage(std::span<const T> params, double decay,
                                                      bool warmup)
    : decay_(decay), warmup_(warmup) {
  if (!(decay >= 0.0 && decay < 1.0)) throw ConfigError("EMA: decay must lie in [0, 1)");
  state_.shadow.assign(params.begin(), params.end());
}

template <class T>
double ExponentialMovingAverage<T>::current_decay() const noexcept {
  if (!warmup_) return decay_;
  const double n = static_cast<double>(state_.num_updates);
  return std::min(decay_, (1.0 + n) / (10.0 + n));
}

template <class T>
void ExponentialMovingAverage<T>::update(std::span<const T> params) {
  require(!state_.swapped, "EMA::update: the averaged weights are swapped in; swap back first");
  require(params.size() == state_.shadow.size(), "EMA::update: parameter count changed");
  const double d = current_decay();
  T* shadow = state_.shadow.data();
  parallel_chunks(static_cast<Index>(params.size()), kFlatChunk, [&](Index, Index i0, Index i1) {
    for (Index ii = i0; ii < i1; ++ii) {
      const auto i = static_cast<std::size_t>(ii);
      shadow[i] = static_cast<T>(d * static_cast<double>(shadow[i]) +
                                 (1.0 - d) * static_cast<double>(params[i]));
    }
  });
  ++state_.num_updates;
}

template <class T>
void ExponentialMovingAverage<T>::swap(std::span<T> params) {
  require(params.size() == state_.shadow.size(), "EMA::swap: parameter count changed");
  std::swap_ranges(params.begin(), params.end(), state_.shadow.begin());
  state_.swapped = !state_.swapped;
}

template <class T>
void ExponentialMovingAverage<T>::load_state(EmaState<T> state) {
  require(state.shadow.size() == state_.shadow.size(),
          "EMA::load_state: shadow has " + std::to_string(state.shadow.size()) +
              " entries, expected " + std::to_string(state_.shadow.size()));
  require(state.num_updates >= 0, "EMA::load_state: negative update count");
  state_ = std::move(state);
}

#define FLT_INSTANTIATE_OPTIM(T)                                                              \
  template class AdamW<T>;                                                                    \
  template std::vector<std::uint8_t> decay_mask_by<T>(                                        \
      const ParameterStore<T>&, const std::function<bool(const ParamInfo&)>&);                \
  template std::vector<std::uint8_t> decay_mask_matrices_only<T>(const ParameterStore<T>&);   \
  template double global_grad_norm<T>(std::span<const T>);                                    \
  template double clip_grad_norm<T>(std::span<T>, double);                                    \
  template class ExponentialMovingAverage<T>;

FLT_INSTANTIATE_OPTIM(float)
FLT_INSTANTIATE_OPTIM(double)
#undef FLT_INSTANTIATE_OPTIM

}  // namespace flt
