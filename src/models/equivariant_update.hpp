// The gated equivariant update of the geometric encoder block (PaiNN's update block): mixes an
// atom's scalar features x with its vector features vec, keeping vec equivariant (it rotates with
// the molecule) and x invariant.
//
// Shapes: N atoms, D channels, F hidden width. x: N x D; vec: N x 3D = [x | y | z] components
// (vec[i, a D + c] is component a of channel c); viewed as a 3N x D matrix for the channel maps.
//
//   u = LN(x);  U = vec Wu,  W = vec Wv      (channel maps, applied to each component alike)
//   n_ic = sqrt(sum_a W_iac^2 + eps)          (rotation-invariant norms)
//   [a^vv | a^sv | a^ss] = MLP([u | n])       (MLP: 2D -> F -> 3D)
//   vec += a^vv o U                           (a^vv broadcast over the components)
//   x   += a^sv o sum_a (U_a o W_a) + a^ss
// The backward equations: docs/molecule-model.md, "The gated equivariant update".
#pragma once

#include "core/layers.hpp"
#include "core/params.hpp"
#include "core/random.hpp"
#include "core/tensor.hpp"

#include <string>

namespace flt::models {

inline constexpr double kVectorNormEps = 1e-8;

// Full (forward): every field but x_in. Compact (forward_compact): x_in and vec_in only, the
// update's inputs (4D values per atom instead of 18D + 2F); backward recomputes the rest for one
// block of compact_rows rows at a time.
template <class T>
struct EquivariantUpdateCache {
  Index compact_rows = 0;  // > 0: compact
  Mat<T> x_in;       // N x D (compact)
  LayerNormCache<T> ln;
  Mat<T> vec_in;     // N x 3D
  Mat<T> U, W;       // N x 3D
  Mat<T> norms;      // N x D
  Mat<T> mlp_in;     // N x 2D: [u | n]
  MlpCache<T> mlp;
  Mat<T> gates;      // N x 3D: [a^vv | a^sv | a^ss]
};

template <class T>
struct EquivariantUpdate {
  LayerNorm<T> ln;
  Linear<T> u_map, w_map;  // D x D, no bias
  Mlp<T> mlp;              // 2D -> F -> 3D
  Index dim = 0;

  static EquivariantUpdate create(ParameterStore<T>& store, const std::string& prefix, Index dim,
                                  Index hidden, Activation activation);
  void init(ParameterStore<T>& store, Rng& rng) const;
  // Updates x and vec in place; fills the cache.
  void forward(const ParameterStore<T>& store, Mat<T>& x, Mat<T>& vec,
               EquivariantUpdateCache<T>& cache) const;
  // The same update (bitwise the same x and vec: every row is computed from that row alone, by
  // the same kernels) with a compact cache: the inputs only. Rows are updated in blocks of `rows`
  // rows, the blocks shared out among the threads (a multiple of the kernels' row chunks, 96 and
  // 256, keeps the products' rows bitwise those of forward in double too).
  void forward_compact(const ParameterStore<T>& store, Mat<T>& x, Mat<T>& vec,
                       EquivariantUpdateCache<T>& cache, Index rows) const;
  // The full cache of the update of x and vec (forward without changing them): what backward
  // reads, recomputed there block by block from a compact cache.
  void fill_cache(const ParameterStore<T>& store, ConstMatRef<T> x, ConstMatRef<T> vec,
                  EquivariantUpdateCache<T>& cache) const;
  // On entry dx, dvec hold dLoss/d(outputs); on return dLoss/d(inputs) (the identity paths
  // included). Accumulates parameter gradients. With a compact cache: the full cache of one block
  // of rows is recomputed from the inputs, that block's backward run, and so on in row order:
  // the same input gradients bitwise; the parameter gradients summed block by block (the same to
  // rounding as with the full cache, and independent of the thread count).
  void backward(ParameterStore<T>& store, const EquivariantUpdateCache<T>& cache, Mat<T>& dx,
                Mat<T>& dvec) const;
};

}  // namespace flt::models
