// Readable O(L^2) references of RPE-masked softmax attention (method E1, E4), for any coordinate
// dimension dc: one pair (i, j) at a time, double accumulation, no blocking, no threads. Every
// fast attention path is tested against these (docs/attention.md, "Readable references").
//
// Shapes (one head): Q, K: L x d;  V: L x dv;  coords: L x dc;  result: L x dv.
// Multi-head: Q, K: L x (H d);  V: L x (H dv); head h owns columns [h d, (h+1) d) (resp. dv).
//
//   multiplicative mask (E4):  out_i = sum_j A_ij f(r_i - r_j) v_j / sum_j A_ij f(r_i - r_j)
//   additive bias:             out_i = sum_j softmax_j(q_i.k_j/sqrt(d) + b(r_i - r_j)) v_j
//   with A_ij = exp(q_i.k_j / sqrt(d)) (E1); f and b receive the dc-vector r_i - r_j.
// Causal: only keys j <= i (row order within the set). Ragged: attention only within each set of
// the RaggedIndex (total_rows must equal L).
#pragma once

#include "core/ragged.hpp"
#include "core/tensor.hpp"

#include <functional>
#include <span>

namespace flt::exact {

// A function of the offset r_i - r_j (length dc), returning the mask value f or the bias b.
using OffsetFunction = std::function<double(std::span<const double>)>;

enum class MaskKind {
  multiplicative,  // E4: weights exp(q.k/sqrt d) * f(r_i - r_j)
  additive,        // weights exp(q.k/sqrt d + b(r_i - r_j)), i.e. softmax with a logit bias
};

// E4 for one head, one set. The denominator sum_j A_ij f_ij may vanish or change sign for a
// signed f: one that is exactly zero or not finite throws NumericalError naming the row.
template <class T>
Mat<T> masked_attention_direct(ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V,
                               ConstMatRef<T> coords, const OffsetFunction& f, bool causal = false);

// E4 for one head on a ragged batch (attention only within each set).
template <class T>
Mat<T> masked_attention_direct(ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V,
                               ConstMatRef<T> coords, const RaggedIndex& sets,
                               const OffsetFunction& f, bool causal = false);

// Additive-bias form for one head, one set: out_i = softmax_j(q_i.k_j/sqrt(d) + b(r_i - r_j)) V.
template <class T>
Mat<T> biased_attention_direct(ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V,
                               ConstMatRef<T> coords, const OffsetFunction& b, bool causal = false);

// Additive-bias form for one head on a ragged batch.
template <class T>
Mat<T> biased_attention_direct(ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V,
                               ConstMatRef<T> coords, const RaggedIndex& sets,
                               const OffsetFunction& b, bool causal = false);

// Multi-head, ragged, either form: H = per_head.size() heads, per_head[h] is f_h (multiplicative)
// or b_h (additive). Q, K: L x (H d); V: L x (H dv); result L x (H dv).
template <class T>
Mat<T> multihead_attention_direct(ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V,
                                  ConstMatRef<T> coords, const RaggedIndex& sets,
                                  std::span<const OffsetFunction> per_head, MaskKind kind,
                                  bool causal = false);

}  // namespace flt::exact
