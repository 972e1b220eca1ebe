// Multi-head Performer (FAVOR+) attention with no positional information, on a ragged batch: the
// "performer" ablation of the molecule model (internal to flt_models).
//
// Shapes: L atoms over all sets, H heads, d per-head width, m features.
//   Q, K, V, out: L x (H d); omega: H of m x d (Performer frequencies, double); den: L x H.
// Per set and head, with X = q / d^(1/4), Y = k / d^(1/4) and phi of E2 (performer.hpp):
//   S = sum_j phi(y_j) v_j^T (m x d),  z = sum_j phi(y_j) (m),
//   out_i = phi(x_i) S / phi(x_i) . z       estimates softmax_j(q_i.k_j / sqrt d) v_j   (E3)
// The query stabiliser (per row) and the key stabiliser (per set and head) cancel in the ratio,
// so they are constants in backward. Backward (G = dL/dout, a_i = 1/den_i):
//   dphiQ_i = a_i G_i S^T - a_i (G_i . out_i) z^T
//   dS = sum_i a_i phiQ_i^T G_i,  dz = -sum_i a_i (G_i . out_i) phiQ_i
//   dv_j = dS^T phiK_j,  dphiK_j = dS v_j + dz
// and E27 maps dphi to dX, dY. Parallel over (set, head) pairs, each writing its own rows and
// columns only: deterministic for any thread count.
#pragma once

#include "core/ragged.hpp"
#include "core/tensor.hpp"

#include <vector>

namespace flt::models::detail {

template <class T>
void performer_attention_forward(const std::vector<Mat<T>>& omega, const RaggedIndex& sets,
                                 ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V,
                                 Mat<T>& out, Mat<T>& den, std::vector<double>& key_stab);

// Accumulates dQ, dK, dV.
template <class T>
void performer_attention_backward(const std::vector<Mat<T>>& omega, const RaggedIndex& sets,
                                  ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V,
                                  const Mat<T>& out, const Mat<T>& den,
                                  const std::vector<double>& key_stab, ConstMatRef<T> dout,
                                  MatRef<T> dQ, MatRef<T> dK, MatRef<T> dV);

// Readable reference (tests): phi features of whole sets, double sums over all pairs.
template <class T>
Mat<T> performer_attention_reference(const std::vector<Mat<T>>& omega, const RaggedIndex& sets,
                                     ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V);

}  // namespace flt::models::detail
