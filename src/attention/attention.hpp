// Multi-head FLT attention (FourierLearner-Transformer, method sections 2-5 and 7) on a ragged
// batch: Performer features for q.k, Fourier RPE features for the learned mask f(r_i - r_j).
//
// Shapes (L tokens over all sets, H heads, d per head, dv value width per head, dc coordinates,
// m Performer features, R frequencies): Q, K: L x (H d);  V, out: L x (H dv);  coords: L x dc.
//   Head h owns columns [h d, (h+1) d) of Q and K and [h dv, (h+1) dv) of V and out. Attention
//   only within each set of the RaggedIndex (no padding); batch.total_rows() == L.
// Variant "kronecker" (A, E9, E10), estimating E4 (softmax with the multiplicative mask f):
//   Q~_i = phi(q_i) kron psiQ(r_i),  K~_j = phi(k_j) kron psiK(r_j),  out_i = Q~_i S / Q~_i . z,
//   S = sum_j K~_j v_j^T,  z = sum_j K~_j
// Variant "bias" (B, E12, E13), estimating softmax_j(q_i.k_j/sqrt d + beta f(r_i - r_j)) v_j:
//   x^_i = [q_i / d^(1/4); beta sqrt(R) c~ o cs(r_i)],  y^_j = [k_j / d^(1/4); cs(r_j) / sqrt(R)],
//   out_i = sum_j phi(x^_i).phi(y^_j) v_j / sum_j phi(x^_i).phi(y^_j)
// Why the bias form is one-sided, the streaming kernel, cost, memory, the denominator policy and
// the life cycle of a layer: docs/attention.md, "FLT attention".
#pragma once

#include "core/params.hpp"
#include "core/ragged.hpp"
#include "core/random.hpp"
#include "core/tensor.hpp"
#include "attention/performer.hpp"
#include "attention/spectrum.hpp"

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

namespace flt::attn {

enum class Variant { kronecker, bias };
enum class DenominatorPolicy { throw_error, clamp_and_count };

const char* to_string(Variant v) noexcept;
Variant variant_from_string(const std::string& name);  // "kronecker" | "bias"; throws ConfigError

// Documented defaults (kDefault*): kronecker m = 32, R = 16 (feature width m 2R = 1024 per head);
// bias m = 128, R = 16 (Performer width d + 32). num_features / num_frequencies = 0 select them.
inline constexpr Index kDefaultFeaturesKronecker = 32;
inline constexpr Index kDefaultFeaturesBias = 128;
inline constexpr Index kDefaultFrequencies = 16;
inline constexpr Index kDefaultBlockSize = 256;

struct AttentionConfig {
  Index heads = 8;                   // H
  Index head_dim = 16;               // d (query/key width per head)
  Index value_dim = 16;              // dv
  Index num_features = 0;            // m (0: variant default)
  Index num_frequencies = 0;         // R (0: kDefaultFrequencies)
  Variant variant = Variant::kronecker;
  bool causal = false;               // prefix attention within each set (sequences, dc = 1)
  SpectrumConfig spectrum;           // kind, dc (= coordinate columns), proposal, init
  bool orthogonal_features = true;   // Performer frequencies in orthogonal blocks
  FeatureNorms feature_norms = FeatureNorms::chi;
  std::uint64_t seed = 0;            // random features: Rng(seed).fork(draw index), per head forks
  bool redraw_each_step = false;     // begin_step() redraws W and xi from (seed, step)
  // Subtract each set's centroid before the phases (bidirectional only: in causal mode the
  // centroid would depend on future tokens, so positions are used as given). Kronecker outputs
  // are exactly translation invariant either way; the bias variant's Performer realisation is not
  // (w . x^ sees absolute phases), so centring is what makes it invariant for point sets.
  bool centre_coordinates = true;
  double init_beta = 1.0;            // bias variant: initial per-head scale
  Index block_size = 0;              // tokens per streamed block (0: kDefaultBlockSize)
  DenominatorPolicy denominator_policy = DenominatorPolicy::clamp_and_count;
  double tiny_denominator = 1e-6;    // relative threshold (docs/attention.md, denominators)

  Index coord_dim() const noexcept { return spectrum.coord_dim; }
  Index features() const noexcept;     // m, default resolved
  Index frequencies() const noexcept;  // R, default resolved
  Index block() const noexcept;        // block size, default resolved
  bool centring() const noexcept { return centre_coordinates && !causal; }
  void validate() const;               // throws ConfigError
};

// Counters the trainer reads (accumulated over forward calls until reset_stats()).
struct AttentionStats {
  std::uint64_t forward_calls = 0;
  std::uint64_t denominators = 0;               // queries x heads checked
  std::uint64_t nonpositive_denominators = 0;   // den_i <= 0
  std::uint64_t tiny_denominators = 0;          // 0 < den_i < tiny * scale_i
  std::uint64_t clamped_denominators = 0;       // replaced under clamp_and_count
  double min_relative_denominator = 1.0;        // min over checked rows of den_i / scale_i

  void merge(const AttentionStats& other);
};

// The random features of a layer: per head the Performer frequencies (m x D, D = d for kronecker,
// d + 2R for bias) and the RPE frequencies xi (R x dc) with their proposal density at draw time.
// Save these in the model file (with seed and draw) so a loaded model reproduces its outputs.
struct RandomFeatures {
  std::uint64_t seed = 0;
  std::uint64_t draw = 0;
  std::vector<Mat<double>> omega;  // H of m x D
  std::vector<Mat<double>> xi;     // H of R x dc
  std::vector<Vec<double>> pdf;    // H of R
};

// What forward keeps for backward (memory: docs/attention.md, "FLT attention").
template <class T>
struct AttentionCache {
  Mat<T> out;                        // L x (H dv)
  Mat<T> den;                        // L x H, the denominators actually used
  std::vector<unsigned char> clamped;  // L x H, 1 where den was clamped
  std::vector<double> key_stab;      // per (set, head) pair: global key stabiliser
  std::vector<Mat<double>> sums;     // bidirectional: per pair [S z]^T, (dv+1) x (m P), P = 2R or 1
  std::vector<Vec<double>> centres;  // per set, length dc
  Index rows = 0;
};

// Life cycle: construct (registers parameters), store.allocate(), init_parameters, draw_features
// (or set_features from a model file), then per step begin_step, forward, backward.
template <class T>
class FltAttention {
 public:
  // Registers the per-head spectral parameters "<name>.h<h>.<tensor>" (Spectrum::tensors()) and,
  // for the bias variant, "<name>.beta" (H x 1), in `store` (before store.allocate()).
  FltAttention(AttentionConfig config, ParameterStore<T>& store, const std::string& name);

  const AttentionConfig& config() const noexcept { return config_; }
  const Spectrum& spectrum() const noexcept { return spectrum_; }
  const std::string& name() const noexcept { return name_; }

  // Writes initial parameter values (after store.allocate()): spectra with f(0) = 1, beta.
  void init_parameters(ParameterStore<T>& store) const;

  // Draws W and xi for draw index `draw` (needs the parameters for the "spectrum" proposal).
  void draw_features(const ParameterStore<T>& store, std::uint64_t draw = 0);
  // Called by the trainer at each optimisation step: redraws (draw = step) when
  // config.redraw_each_step, otherwise does nothing.
  void begin_step(const ParameterStore<T>& store, std::uint64_t step);
  bool has_features() const noexcept { return !features_.omega.empty(); }
  const RandomFeatures& features() const noexcept { return features_; }
  void set_features(RandomFeatures features);  // validates shapes; throws InvalidArgument

  // Parameter handles: spectral tensor `tensor` (index into spectrum().tensors()) of head h.
  const ParamRef& spectrum_param(Index head, Index tensor) const;
  const ParamRef& beta_param() const;  // bias variant only
  // The flat spectral parameters of one head (as Spectrum methods take them), in double.
  std::vector<double> head_spectrum_params(const ParameterStore<T>& store, Index head) const;
  // Estimate weights c~_k = g(xi_k) / (R p_k) of one head at the current parameters.
  std::vector<double> head_ctilde(const ParameterStore<T>& store, Index head) const;

  // out (L x H dv) = FLT attention. Fills cache; updates stats(), so it is not thread-safe on one
  // layer object (backward is const). Throws InvalidArgument on shape mismatch, NumericalError
  // under DenominatorPolicy::throw_error. Results do not depend on the thread count.
  void forward(const ParameterStore<T>& store, ConstMatRef<T> Q, ConstMatRef<T> K,
               ConstMatRef<T> V, ConstMatRef<T> coords, const RaggedIndex& batch,
               MatRef<T> out, AttentionCache<T>& cache);

  // Accumulates dQ, dK, dV (L x H d / H dv), dcoords (L x dc; pass a 0-row matrix to skip) and the
  // gradients of the spectral parameters and beta in store.grads(), from dout = dLoss/dout.
  void backward(ParameterStore<T>& store, ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V,
                ConstMatRef<T> coords, const RaggedIndex& batch, const AttentionCache<T>& cache,
                ConstMatRef<T> dout, MatRef<T> dQ, MatRef<T> dK, MatRef<T> dV,
                MatRef<T> dcoords) const;

  const AttentionStats& stats() const noexcept { return stats_; }
  void reset_stats() noexcept { stats_ = {}; }

 private:
  AttentionConfig config_;
  Spectrum spectrum_;
  std::string name_;
  std::vector<std::vector<ParamRef>> spectrum_refs_;  // [head][tensor]
  ParamRef beta_ref_;
  RandomFeatures features_;
  std::vector<Mat<T>> omega_t_;  // features_.omega in T
  AttentionStats stats_;
};

// Readable reference of the same computation (tests only): materialises Q~, K~ (kronecker) or the
// Performer features of x^, y^ (bias) for whole sets and sums over all pairs (i, j) directly,
// j <= i when causal. No blocking, no threads, no clamping. Returns L x (H dv).
template <class T>
Mat<T> flt_attention_reference(const FltAttention<T>& layer, const ParameterStore<T>& store,
                               std::type_identity_t<ConstMatRef<T>> Q,
                               std::type_identity_t<ConstMatRef<T>> K,
                               std::type_identity_t<ConstMatRef<T>> V,
                               std::type_identity_t<ConstMatRef<T>> coords,
                               const RaggedIndex& batch);

}  // namespace flt::attn
