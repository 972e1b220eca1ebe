// Exact RPE-masked Performer attention on 1-D sequences and 2-D image grids in O(L log L) with
// FFTW (method section 6; Luo et al., NeurIPS 2021, "Stable, Fast and Accurate: Kernelized
// Attention with Relative Positional Encoding"). On a grid the mask N_ij = f(pos_i - pos_j) is
// Toeplitz (1-D) or block-Toeplitz with Toeplitz blocks (2-D), so every product N x is a
// (zero-padded, hence non-circular) convolution computed with real FFTs.
//
// Shapes (one head): L tokens, m positive features, dv value width.
//   PhiQ, PhiK: L x m (Performer features phi(q_i), phi(k_j), E2);  V: L x dv;  out: L x dv.
//   1-D grid {L}: token i at position i.  2-D grid {Hg, Wg}: token i = y Wg + x at (y, x).
//   mask: the values of f on every offset, 1-D: (2L - 1) entries, mask[n + L - 1] = f(n),
//         n = -(L-1) .. L-1;  2-D: (2Hg - 1)(2Wg - 1) entries,
//         mask[(dy + Hg - 1)(2Wg - 1) + (dx + Wg - 1)] = f(dy, dx).
//
//   out_i = sum_j (PhiQ_i . PhiK_j) f(pos_i - pos_j) v_j / den_i,
//   den_i = sum_j (PhiQ_i . PhiK_j) f(pos_i - pos_j)
// Computed as num_ic = sum_a PhiQ_ia [f * (PhiK_a o V_c)]_i, den_i = sum_a PhiQ_ia [f * PhiK_a]_i
// ("*" is the 1-D or 2-D convolution over positions): m (dv + 1) convolutions of length L, each
// two real FFTs of the padded grid (sizes >= 2n - 1 per axis, products of 2, 3, 5, 7):
// O(m dv L log L) time, O(L (m + dv)) memory.
//
// Causal (1-D only): keys j <= i, i.e. f(n) is taken as 0 for n < 0; those mask entries are
// ignored and receive no gradient.
//
// Backward (G = dLoss/dout; dnum_i = G_i / den_i, delta_i = -(G_i . out_i) / den_i, and with the
// extra column c = dv where V_c = 1 and dnum_c = delta):
//   dPhiQ_ia = sum_c dnum_ic [f * (PhiK_a o V_c)]_i
//   dPhiK_ja = sum_c V_jc [f^T * (PhiQ_a o dnum_c)]_j,   f^T(n) = f(-n)  (a correlation)
//   dV_jc    = sum_a PhiK_ja [f^T * (PhiQ_a o dnum_c)]_j
//   df(n)    = sum_{a,c} sum_{pos_i - pos_j = n} (PhiQ_ia dnum_ic) (PhiK_ja V_jc)
//              (a cross-correlation; all (a, c) terms are summed in the frequency domain and
//               transformed back once).
//
// FFTW: plans are made once per grid size and precision with FFTW_ESTIMATE (FFTW_MEASURE would pick
// plans by timing, so results could differ bitwise between runs) under fftw_planner_mutex(), since
// FFTW's planner is not thread-safe; plans are then executed concurrently on per-thread buffers
// (the new-array execute functions are thread-safe). OpenMP over value columns (forward) and over
// a fixed number of feature chunks (backward; partial dV and df summed serially in chunk order):
// results are bitwise identical for any number of threads.
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

// O(L log L) forward.
template <class T>
void toeplitz_attention_forward(const ToeplitzGrid& grid, ConstMatRef<T> PhiQ, ConstMatRef<T> PhiK,
                                ConstMatRef<T> V, std::span<const T> mask,
                                ToeplitzForward<T>& result);

// O(L log L) backward: ACCUMULATES dLoss/d{PhiQ, PhiK, V, mask} given dout = dLoss/dout.
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
