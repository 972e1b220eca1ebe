// Multi-head Performer (FAVOR+) attention on a ragged batch of sets (sequences, image grids or
// molecules), with no positional information (the "performer" kind of the token model and of the
// molecule model) or with an exact RPE mask applied by the FFTW Toeplitz path (the token model's
// "toeplitz" kind, method section 6).
//
// Shapes: N tokens over all sets, H heads, d per-head width (dv = d), m features per head.
//   Q, K, V, out: N x (H d);  omega: H of m x d (Performer frequencies);  den: N x H;
//   phi_q, phi_k: N x (H m) (the stabilised features, kept for backward).
// Per set and head, phi of E2 (attention/performer.hpp) of X = q / d^(1/4), Y = k / d^(1/4):
//   no mask:   out_i = sum_j (phiQ_i . phiK_j) v_j / sum_j (phiQ_i . phiK_j)                (E3)
//   mask:      out_i = sum_j (phiQ_i . phiK_j) N(pos_i - pos_j) v_j / (same without v_j)    (E4)
//   causal:    j <= i only (sequences).
// The linear-attention form with prefix sums, backward (E27), masks per set, and threads:
// docs/attention.md, "Kernel attention".
#pragma once

#include "core/ragged.hpp"
#include "core/tensor.hpp"
#include "attention/exact/toeplitz.hpp"

#include <vector>

namespace flt::attn {

// How the sets of a batch map onto a Toeplitz grid. Without masks only `causal` matters: the
// default is bidirectional attention within each set (the molecule model's performer kind).
struct KernelGrid {
  bool image = false;   // false: 1-D sequences (any length <= max_length); true: Hg x Wg grids
  Index max_length = 0; // 1-D: the longest set the masks were built for
  Index height = 0;     // 2-D: Hg
  Index width = 0;      // 2-D: Wg
  bool causal = false;  // 1-D only

  exact::ToeplitzGrid full() const;      // the grid the masks are laid out for
  Index mask_size() const { return full().mask_size(); }
};

template <class T>
struct KernelAttentionCache {
  Mat<T> out;                    // N x (H d)
  Mat<T> den;                    // N x H
  Mat<T> phi_q, phi_k;           // N x (H m)
  std::vector<double> key_stab;  // per (set, head)
  Index nonpositive_denominators = 0;  // masked form with a signed mask (counted, not hidden)
};

// masks: empty (no RPE) or H vectors of grid.mask_size() values (layout of exact::ToeplitzGrid).
// Every set must have at least one row (InvalidArgument naming the set otherwise). Bitwise the
// same for any thread count (OpenMP over (set, head) pairs).
template <class T>
void kernel_attention_forward(const std::vector<Mat<T>>& omega, const RaggedIndex& sets,
                              const KernelGrid& grid, ConstMatRef<T> Q, ConstMatRef<T> K,
                              ConstMatRef<T> V, const std::vector<Vec<T>>& masks,
                              KernelAttentionCache<T>& cache);

// Accumulates dQ, dK, dV (N x H d) and, with masks, dmasks (H vectors of mask_size()); the mask
// gradients of the (set, head) pairs are summed in a fixed order.
template <class T>
void kernel_attention_backward(const std::vector<Mat<T>>& omega, const RaggedIndex& sets,
                               const KernelGrid& grid, ConstMatRef<T> Q, ConstMatRef<T> K,
                               ConstMatRef<T> V, const std::vector<Vec<T>>& masks,
                               const KernelAttentionCache<T>& cache, ConstMatRef<T> dout,
                               MatRef<T> dQ, MatRef<T> dK, MatRef<T> dV,
                               std::vector<Vec<T>>& dmasks);

// Readable reference (tests): phi features of whole sets, double sums over all pairs (i, j),
// j <= i when causal, weight (phiQ_i . phiK_j) N(pos_i - pos_j) (N = 1 without masks).
template <class T>
Mat<T> kernel_attention_reference(const std::vector<Mat<T>>& omega, const RaggedIndex& sets,
                                  const KernelGrid& grid, ConstMatRef<T> Q, ConstMatRef<T> K,
                                  ConstMatRef<T> V, const std::vector<Vec<T>>& masks);

// Linear (kernelised) attention numerators N' = tril?(PhiQ PhiK^T) Vp for one set, and backward
// (accumulating dPhiQ, dPhiK, dVp). Exposed for tests and the benchmark.
template <class T>
void linear_attention_forward(ConstMatRef<T> PhiQ, ConstMatRef<T> PhiK, ConstMatRef<T> Vp,
                              bool causal, MatRef<T> out);
template <class T>
void linear_attention_backward(ConstMatRef<T> PhiQ, ConstMatRef<T> PhiK, ConstMatRef<T> Vp,
                               ConstMatRef<T> dN, bool causal, MatRef<T> dPhiQ, MatRef<T> dPhiK,
                               MatRef<T> dVp);

}  // namespace flt::attn
