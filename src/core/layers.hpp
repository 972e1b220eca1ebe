// Neural-network layers as forward/backward pairs (llm.c style), templated on the scalar T
// (explicit instantiations for float and double live in layers.cpp).
//
// Shapes (row-major flt::Mat<T>, one row per atom/token): N rows (atoms/tokens of a whole ragged
// batch), I input width, O output width, D feature width, H hidden width of an MLP, V vocabulary
// size of an embedding table, S number of sets (molecules).
//
// `*_forward` OVERWRITES its output (sized by the caller; shapes checked, InvalidArgument);
// `*_backward` ACCUMULATES (+=) into input and parameter gradients; an input gradient `dx` with
// size() == 0 is not needed and skipped. Results are bitwise identical for any thread count.
// Layer structs (Linear, LayerNorm, Mlp, Embedding) hold ParamRefs into a ParameterStore<T>,
// named prefix + ".weight" / ".bias". Reasons, determinism and life cycle: docs/core.md, "Layers".
#pragma once

#include "core/params.hpp"
#include "core/ragged.hpp"
#include "core/random.hpp"
#include "core/tensor.hpp"

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace flt {

// ---------------------------------------------------------------------------------------------
// Linear: y = x W + b.  x: N x I, W: I x O (stored "in x out", so y = x W needs no transpose),
// b: O (may be empty: no bias), y: N x O.
// Backward: dx += dy W^T;  dW += x^T dy;  db += sum_n dy_n.
// dW and db are reduced over fixed row chunks (partial per chunk, summed serially).
template <class T>
void linear_forward(ConstMatRef<T> x, ConstMatRef<T> W, std::span<const T> b, MatRef<T> y);
template <class T>
void linear_backward(ConstMatRef<T> x, ConstMatRef<T> W, ConstMatRef<T> dy, MatRef<T> dx,
                     MatRef<T> dW, std::span<T> db);
// Readable triple-loop reference of linear_forward (double accumulation), for tests.
template <class T>
void linear_forward_reference(ConstMatRef<T> x, ConstMatRef<T> W, std::span<const T> b,
                              MatRef<T> y);

// ---------------------------------------------------------------------------------------------
// LayerNorm over the last dimension (torch.nn.LayerNorm semantics):
//   mu_n = (1/D) sum_d x_nd,   var_n = (1/D) sum_d (x_nd - mu_n)^2   (biased variance)
//   rstd_n = 1 / sqrt(var_n + eps),   xhat_nd = (x_nd - mu_n) rstd_n
//   y_nd = xhat_nd gamma_d + beta_d
// eps is added to the variance (default 1e-5, as torch). Row statistics are computed in T with
// vectorised two-pass reductions (mean, then the mean squared deviation).
// The forward writes the cache: xhat (N x D) and rstd (N).
// Backward (g = dy * gamma):
//   dx_n += rstd_n (g_n - mean_d(g_n) - xhat_n mean_d(g_n * xhat_n))
//   dgamma += sum_n dy_n * xhat_n;   dbeta += sum_n dy_n
inline constexpr double kLayerNormEps = 1e-5;
template <class T>
void layernorm_forward(ConstMatRef<T> x, std::span<const T> gamma, std::span<const T> beta,
                       double eps, MatRef<T> y, MatRef<T> xhat, std::span<T> rstd);
template <class T>
void layernorm_backward(ConstMatRef<T> xhat, std::span<const T> rstd, std::span<const T> gamma,
                        ConstMatRef<T> dy, MatRef<T> dx, std::span<T> dgamma,
                        std::span<T> dbeta);
// Readable two-pass reference of layernorm_forward (everything in double), for tests.
template <class T>
void layernorm_forward_reference(ConstMatRef<T> x, std::span<const T> gamma,
                                 std::span<const T> beta, double eps, MatRef<T> y);

// ---------------------------------------------------------------------------------------------
// Element-wise activations (any shape; x, y, dy, dx all the same shape).
//   identity:  y = x
//   silu:      y = x s(x),  s = logistic sigmoid;        y' = s (1 + x (1 - s))
//   gelu_tanh: y = x/2 (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)   (GPT-2 / llm.c form)
//              y' = 1/2 (1 + tanh u) + x/2 (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
//   gelu_erf:  y = x Phi(x) = x/2 (1 + erf(x/sqrt2))   (exact GELU, torch's default)
//              y' = Phi(x) + x phi(x),  phi = standard normal density
// Backward: dx += y'(x) * dy (needs the forward INPUT x).
enum class Activation { identity, silu, gelu_tanh, gelu_erf };

// "identity", "silu", "gelu_tanh" (alias "gelu"), "gelu_erf"; throws ConfigError otherwise.
Activation parse_activation(std::string_view name);
const char* to_string(Activation activation) noexcept;

template <class T>
void activation_forward(Activation activation, ConstMatRef<T> x, MatRef<T> y);
template <class T>
void activation_backward(Activation activation, ConstMatRef<T> x, ConstMatRef<T> dy,
                         MatRef<T> dx);

template <class T>
inline void silu_forward(ConstMatRef<T> x, MatRef<T> y) {
  activation_forward<T>(Activation::silu, x, y);
}
template <class T>
inline void silu_backward(ConstMatRef<T> x, ConstMatRef<T> dy, MatRef<T> dx) {
  activation_backward<T>(Activation::silu, x, dy, dx);
}
template <class T>
inline void gelu_forward(ConstMatRef<T> x, MatRef<T> y) {
  activation_forward<T>(Activation::gelu_tanh, x, y);
}
template <class T>
inline void gelu_backward(ConstMatRef<T> x, ConstMatRef<T> dy, MatRef<T> dx) {
  activation_backward<T>(Activation::gelu_tanh, x, dy, dx);
}

// ---------------------------------------------------------------------------------------------
// Embedding lookup: y_n = table[ids_n].  ids: N integers in [0, V), table: V x D, y: N x D.
// Out-of-range ids throw InvalidArgument naming the row and the id (checked before any work).
// Backward scatters: dtable[ids_n] += dy_n, serially in n order (deterministic).
template <class T>
void embedding_forward(std::span<const std::int32_t> ids, ConstMatRef<T> table, MatRef<T> y);
template <class T>
void embedding_backward(std::span<const std::int32_t> ids, ConstMatRef<T> dy, MatRef<T> dtable);

// ---------------------------------------------------------------------------------------------
// Residual add: y = a + b (same shapes). Backward: da += dy; db += dy (either may be empty).
template <class T>
void residual_forward(ConstMatRef<T> a, ConstMatRef<T> b, MatRef<T> y);
template <class T>
void residual_backward(ConstMatRef<T> dy, MatRef<T> da, MatRef<T> db);

// ---------------------------------------------------------------------------------------------
// Segment (per-set) pooling over a ragged batch. x: N x D with N == index.total_rows(),
// y: S x D with S == index.num_sets().
//   sum:  y_s = sum_{n in set s} x_n                 backward: dx_n += dy_s
//   mean: y_s = (1/|s|) sum_{n in set s} x_n         backward: dx_n += dy_s / |s|
// Empty sets (|s| == 0) are handled explicitly: their output row is 0 for both sum and mean (the
// mean of nothing is defined as 0, not NaN) and no gradient flows from it. Rows are summed in
// double, in row order within each set; parallel over sets (deterministic).
enum class Pooling { sum, mean };
// "sum", "mean"; throws ConfigError otherwise.
Pooling parse_pooling(std::string_view name);
const char* to_string(Pooling pooling) noexcept;

template <class T>
void segment_pool_forward(Pooling pooling, const RaggedIndex& index, ConstMatRef<T> x,
                          MatRef<T> y);
template <class T>
void segment_pool_backward(Pooling pooling, const RaggedIndex& index, ConstMatRef<T> dy,
                           MatRef<T> dx);

// =============================================================================================
// Layer structs. Caches hold copies of what backward needs (so the caller may reuse x).

template <class T>
struct LinearCache {
  Mat<T> x;  // N x I forward input
};

// Linear layer. Parameters: prefix.weight (I x O), prefix.bias (O x 1, absent when bias=false).
// Init (PyTorch nn.Linear's effective default): W and b ~ uniform(-1/sqrt(I), 1/sqrt(I)), drawn
// from the Rng in storage order (W row-major, then b).
template <class T>
struct Linear {
  ParamRef weight;
  ParamRef bias;  // size() == 0 when has_bias is false
  Index in = 0;
  Index out = 0;
  bool has_bias = true;

  static Linear create(ParameterStore<T>& store, const std::string& prefix, Index in, Index out,
                       bool bias = true);
  void init(ParameterStore<T>& store, Rng& rng) const;
  // Training forward: fills the cache. Inference forward: no cache.
  Mat<T> forward(const ParameterStore<T>& store, ConstMatRef<T> x, LinearCache<T>& cache) const;
  Mat<T> forward(const ParameterStore<T>& store, ConstMatRef<T> x) const;
  // dx (N x I) may be empty (skipped). Accumulates into store.grads().
  void backward(ParameterStore<T>& store, const LinearCache<T>& cache, ConstMatRef<T> dy,
                MatRef<T> dx) const;
  // The same with the forward input x given directly (callers that keep it themselves).
  void backward(ParameterStore<T>& store, ConstMatRef<T> x, ConstMatRef<T> dy, MatRef<T> dx) const;
};

template <class T>
struct LayerNormCache {
  Mat<T> xhat;  // N x D normalised input
  Vec<T> rstd;  // N reciprocal standard deviations
};

// LayerNorm layer. Parameters: prefix.weight (gain gamma, D x 1), prefix.bias (beta, D x 1).
// Init: gamma = 1, beta = 0 (torch). eps defaults to kLayerNormEps = 1e-5.
template <class T>
struct LayerNorm {
  ParamRef weight;
  ParamRef bias;
  Index dim = 0;
  double eps = kLayerNormEps;

  static LayerNorm create(ParameterStore<T>& store, const std::string& prefix, Index dim,
                          double eps = kLayerNormEps);
  void init(ParameterStore<T>& store) const;
  void init(ParameterStore<T>& store, Rng&) const { init(store); }
  Mat<T> forward(const ParameterStore<T>& store, ConstMatRef<T> x, LayerNormCache<T>& cache) const;
  Mat<T> forward(const ParameterStore<T>& store, ConstMatRef<T> x) const;
  void backward(ParameterStore<T>& store, const LayerNormCache<T>& cache, ConstMatRef<T> dy,
                MatRef<T> dx) const;
};

template <class T>
struct MlpCache {
  LinearCache<T> fc1;  // x
  Mat<T> pre;          // N x H pre-activation h = x W1 + b1
  LinearCache<T> fc2;  // act(h)
};

// MLP: y = act(x W1 + b1) W2 + b2. Parameters prefix.fc1.{weight,bias} (I x H),
// prefix.fc2.{weight,bias} (H x O). Init: each Linear as above, fc1 first, from the same Rng.
template <class T>
struct Mlp {
  Linear<T> fc1;
  Linear<T> fc2;
  Activation activation = Activation::silu;

  static Mlp create(ParameterStore<T>& store, const std::string& prefix, Index in, Index hidden,
                    Index out, Activation activation = Activation::silu);
  void init(ParameterStore<T>& store, Rng& rng) const;
  Mat<T> forward(const ParameterStore<T>& store, ConstMatRef<T> x, MlpCache<T>& cache) const;
  Mat<T> forward(const ParameterStore<T>& store, ConstMatRef<T> x) const;
  void backward(ParameterStore<T>& store, const MlpCache<T>& cache, ConstMatRef<T> dy,
                MatRef<T> dx) const;
};

template <class T>
struct EmbeddingCache {
  std::vector<std::int32_t> ids;
};

// Embedding table. Parameter: prefix.weight (V x D).
// Init: N(0, init_std^2) with init_std = 1 by default (torch nn.Embedding), from Rng::normal().
template <class T>
struct Embedding {
  ParamRef weight;
  Index num_embeddings = 0;  // V
  Index dim = 0;             // D
  double init_std = 1.0;

  static Embedding create(ParameterStore<T>& store, const std::string& prefix,
                          Index num_embeddings, Index dim, double init_std = 1.0);
  void init(ParameterStore<T>& store, Rng& rng) const;
  Mat<T> forward(const ParameterStore<T>& store, std::span<const std::int32_t> ids,
                 EmbeddingCache<T>& cache) const;
  Mat<T> forward(const ParameterStore<T>& store, std::span<const std::int32_t> ids) const;
  void backward(ParameterStore<T>& store, const EmbeddingCache<T>& cache, ConstMatRef<T> dy) const;
};

}  // namespace flt
