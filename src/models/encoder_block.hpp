// The pre-norm encoder block of the molecule model and the token model, with the attention step
// left to the model (each has its own attention kinds), and the seed streams and Performer
// frequency draws both models share.
//
// Shapes: N rows (atoms or tokens), D width, V value width (D, or 3D for the molecule model's
// vector features), F hidden width of the MLP.
//
//   u = LN1(x);  q = u Wq + bq,  k = u Wk + bk,  v = u Wv + bv       project      N x D (v: N x V)
//   a = attention(q, k, v, ...)                                       the model    N x D
//   x += a Wo + bo                                                    add_output   N x D
//   x += MLP(LN2(x))                                                  add_mlp      N x D
//
// Stages, parameter names, row locality: docs/molecule-model.md, "The shared encoder block".
#pragma once

#include "core/layers.hpp"
#include "core/params.hpp"
#include "core/random.hpp"
#include "core/tensor.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace flt::models {

// Independent seed streams derived from a model's seed: initial weights (Rng(seed).fork(1)) and
// random features (Rng(seed).fork(2).fork(block)).
inline constexpr std::uint64_t kWeightStream = 1;
inline constexpr std::uint64_t kFeatureStream = 2;

// The seed of block `block`'s random features (Performer frequencies, FLT RPE frequencies, the
// far-field design's rotations): Rng(seed).fork(kFeatureStream).fork(block).next_u64().
std::uint64_t block_feature_seed(std::uint64_t seed, Index block);

// Performer (FAVOR+) frequencies of one block: per head an m x d matrix (orthogonal rows with chi
// norms, attention/performer.hpp) in double (model files) and in T (the kernels). Draw `draw` of
// head h comes from Rng(block_feature_seed(seed, block)).fork(draw).fork(h).
template <class T>
struct PerformerFrequencies {
  std::vector<Mat<double>> omega;
  std::vector<Mat<T>> omega_t;

  void draw(std::uint64_t seed, Index block, std::uint64_t draw, Index heads, Index features,
            Index head_dim);
  // Replaces the frequencies (a model file's), keeping the T copies in step.
  void set(std::vector<Mat<double>> frequencies);
};

// What forward keeps for backward.
template <class T>
struct EncoderBlockCache {
  LayerNormCache<T> ln1;
  Mat<T> u;        // N x D LN1 output
  Mat<T> q, k, v;  // N x D (v: N x V)
  Mat<T> a;        // N x D attention output (input of Wo)
  LayerNormCache<T> ln2;
  MlpCache<T> mlp;  // holds the LN2 output
};

// Backward's work matrices, reused block to block: dq, dk, dv (zeroed for the attention step) and
// da = dLoss/da.
template <class T>
struct EncoderBlockGrads {
  Mat<T> du, dq, dk, dv, da;
};

template <class T>
struct EncoderBlock {
  LayerNorm<T> ln1, ln2;
  Linear<T> q, k, v, o;
  Mlp<T> mlp;  // absent (never registered) where the model replaces LN2 + MLP

  // Registration: <prefix>.ln1, <prefix>.attn.{q,k (D x D), v (D x value_width), o (D x D)};
  // then <prefix>.ln2 and <prefix>.mlp (D -> hidden -> D). Two calls so that the model registers
  // its attention parameters in between (model files list tensors in registration order).
  void add_attention_layers(ParameterStore<T>& store, const std::string& prefix, Index width,
                            Index value_width);
  void add_mlp_layers(ParameterStore<T>& store, const std::string& prefix, Index hidden,
                      Activation activation);
  // Initialisation in the same split (the model initialises its attention parameters between).
  void init_attention_layers(ParameterStore<T>& store, Rng& rng) const;
  void init_mlp_layers(ParameterStore<T>& store, Rng& rng) const;

  Index width() const noexcept { return o.out; }
  Index value_width() const noexcept { return v.out; }

  // Forward stages; each computes a row from that row alone (row-chunked kernels), so stages run
  // on any block of rows give the same values. project: c.u, c.q, c.k, c.v of the rows of x.
  void project(const ParameterStore<T>& store, ConstMatRef<T> x, EncoderBlockCache<T>& c) const;
  // The same without a cache (inference), into q, k, v (rows of x; v with value_width columns).
  void project(const ParameterStore<T>& store, ConstMatRef<T> x, MatRef<T> q_out, MatRef<T> k_out,
               MatRef<T> v_out) const;
  // x += a Wo + bo.
  void add_output(const ParameterStore<T>& store, ConstMatRef<T> a, MatRef<T> x) const;
  // x += MLP(LN2(x)), with and without a cache.
  void add_mlp(const ParameterStore<T>& store, MatRef<T> x, EncoderBlockCache<T>& c) const;
  void add_mlp(const ParameterStore<T>& store, MatRef<T> x) const;

  // Backward stages (parameter gradients accumulate into the store). dx is dLoss/dx after the
  // stage on entry and before it on return (the residual path included).
  //   mlp_backward:     through x += MLP(LN2(x)).
  //   output_backward:  g.da = dx Wo^T (x itself passes unchanged).
  //   project_backward: dx += LN1'(dq Wq^T + dk Wk^T + dv Wv^T) with the inputs' rows: c.u.
  void mlp_backward(ParameterStore<T>& store, const EncoderBlockCache<T>& c, MatRef<T> dx,
                    EncoderBlockGrads<T>& g) const;
  void output_backward(ParameterStore<T>& store, const EncoderBlockCache<T>& c, ConstMatRef<T> dx,
                       EncoderBlockGrads<T>& g) const;
  void project_backward(ParameterStore<T>& store, const EncoderBlockCache<T>& c, ConstMatRef<T> dq,
                        ConstMatRef<T> dk, ConstMatRef<T> dv, Mat<T>& du, MatRef<T> dx) const;
  // g.dq, g.dk (N x D) and g.dv (N x V) set to zero for the attention step's backward.
  void zero_attention_grads(Index rows, EncoderBlockGrads<T>& g) const;

  // The whole block: attend(q, k, v, a) writes the attention output a (N x D, sized on entry)
  // from the block's q, k, v (N x D, N x D, N x V).
  template <class Attend>
  void forward(const ParameterStore<T>& store, Mat<T>& x, EncoderBlockCache<T>& c, Attend&& attend) const {
    project(store, x, c);
    c.a.resize(x.rows(), width());
    attend(c.q, c.k, c.v, c.a);
    add_output(store, c.a, x);
    add_mlp(store, x, c);
  }
  // Its backward: attend_backward(da, dq, dk, dv) adds dLoss/d(q, k, v) to dq, dk, dv (zero on
  // entry) from da = dLoss/da, and accumulates the attention's own parameter gradients.
  template <class AttendBackward>
  void backward(ParameterStore<T>& store, const EncoderBlockCache<T>& c, Mat<T>& dx,
                EncoderBlockGrads<T>& g, AttendBackward&& attend_backward) const {
    mlp_backward(store, c, dx, g);
    output_backward(store, c, dx, g);
    zero_attention_grads(dx.rows(), g);
    attend_backward(g.da, g.dq, g.dk, g.dv);
    project_backward(store, c, g.dq, g.dk, g.dv, g.du, dx);
  }
};

}  // namespace flt::models
