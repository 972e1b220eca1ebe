// Exact RPE-masked Performer attention on 1-D sequences and 2-D image grids in O(L log L) with
// FFTW (method section 6; Luo et al., NeurIPS 2021, "Stable, Fast and Accurate: Kernelized
// Attention with Relative Positional Encoding"): on a grid the mask f(pos_i - pos_j) is Toeplitz
// (1-D) or block-Toeplitz with Toeplitz blocks (2-D), so products with it are convolutions.
//
// Shapes (one head): L tokens, m positive features, dv value width.
//   PhiQ, PhiK: L x m (Performer features phi(q_i), phi(k_j), E2);  V, out: L x dv.
//   1-D grid {L}: token i at position i;  2-D grid {Hg, Wg}: token i = y Wg + x at (y, x).
//   mask: f on every offset, 1-D: mask[n + L - 1] = f(n), n = -(L-1) .. L-1;
//         2-D: mask[(dy + Hg - 1)(2Wg - 1) + (dx + Wg - 1)] = f(dy, dx).
//   out_i = sum_j (PhiQ_i . PhiK_j) f(pos_i - pos_j) v_j / den_i,  den_i = the same without v_j
// Causal (1-D only): keys j <= i (f(n) taken as 0 for n < 0). The convolutions, backward, FFTW
// planning and threads: docs/attention.md, "Toeplitz attention".
#pragma once

#include "core/tensor.hpp"

#include <mutex>
#include <span>
#include <vector>

namespace flt::exact {

// The one mutex around every FFTW planner call in the process. Code elsewhere that creates FFTW
// plans (e.g. radial transforms) should lock it too.
std::mutex& fftw_planner_mutex();

// Token grid of a Toeplitz / block-Toeplitz mask.
struct ToeplitzGrid {
  std::vector<Index> shape;  // {L} (sequence) or {Hg, Wg} (image, row-major tokens)
  bool causal = false;       // 1-D only: keys j <= i

  static ToeplitzGrid sequence(Index length, bool causal = false);
  static ToeplitzGrid image(Index height, Index width);

  Index tokens() const;     // L = product of the shape
  Index mask_size() const;  // product of (2 n - 1) over the axes
  // Index into the mask vector of the offset pos_i - pos_j between tokens i and j.
  Index mask_index(Index i, Index j) const;
  // Whether key j is visible from query i (false only for j > i in a causal sequence).
  bool visible(Index i, Index j) const { return !causal || j <= i; }
  void validate() const;  // throws InvalidArgument
};

template <class T>
struct ToeplitzForward {
  Mat<T> out;  // L x dv
  Vec<T> den;  // L: den_i
  Index nonpositive_denominators = 0;  // rows with den_i <= 0 (possible only for a signed f)
};

// O(L log L) forward. Thread-safe; bitwise the same for any number of threads and every run.
template <class T>
void toeplitz_attention_forward(const ToeplitzGrid& grid, ConstMatRef<T> PhiQ, ConstMatRef<T> PhiK,
                                ConstMatRef<T> V, std::span<const T> mask,
                                ToeplitzForward<T>& result);

// O(L log L) backward: ACCUMULATES dLoss/d{PhiQ, PhiK, V, mask} given dout = dLoss/dout.
// Causal: the mask entries of n < 0 receive no gradient. Bitwise the same for any thread count.
template <class T>
void toeplitz_attention_backward(const ToeplitzGrid& grid, ConstMatRef<T> PhiQ,
                                 ConstMatRef<T> PhiK, ConstMatRef<T> V, std::span<const T> mask,
                                 const ToeplitzForward<T>& forward, ConstMatRef<T> dout,
                                 MatRef<T> dPhiQ, MatRef<T> dPhiK, MatRef<T> dV,
                                 std::span<T> dmask);

// Readable O(L^2) reference of the same attention (double accumulation).
template <class T>
Mat<T> toeplitz_attention_direct(const ToeplitzGrid& grid, ConstMatRef<T> PhiQ,
                                 ConstMatRef<T> PhiK, ConstMatRef<T> V, std::span<const T> mask);

}  // namespace flt::exact
