// Fast exact softmax attention with a learned radial distance mask: streaming key blocks with an
// online softmax (flash-attention style), never storing an L x L matrix, built from GEMM-shaped
// Eigen block products. The exact O(L^2) baseline of the FLT benchmark and the attention of the
// "exact softmax attention with a learned distance bias" ablation (as in Graphormer-3D).
//
// Shapes: L tokens (a ragged batch of sets), H heads, d query/key and dv value width per head,
// dc coordinate dimension, K radial basis functions. Q, K: L x (H d);  V, out: L x (H dv);
// coords: L x dc;  coeffs: H x K. Attention within each set of the RaggedIndex, all keys.
// Per head h, rho_ij = |r_i - r_j|, s_ij = q_i.k_j / sqrt(d) (E1), u_h(rho) = sum_k a_hk phi_k(rho)
//   mask = none:            out_i = sum_j exp(s_ij) v_j / sum_j exp(s_ij)
//   mask = additive:        out_i = sum_j exp(s_ij + u_h(rho_ij)) v_j / sum_j (same)
//   mask = multiplicative:  out_i = sum_j exp(s_ij) u_h(rho_ij) v_j / sum_j (same)   (E4)
// The online softmax, backward's two passes and their formulas, threads and the non-positive
// denominators of the multiplicative mask: docs/attention.md, "Streaming exact attention".
#pragma once

#include "core/ragged.hpp"
#include "core/tensor.hpp"

#include <vector>

namespace flt::exact {

enum class DistanceMask { none, additive, multiplicative };

// Gaussian radial basis phi_k(rho) = exp(-(rho - mu_k)^2 / (2 w^2)); rho in the coordinates' unit
// (Angstrom for molecules).
struct RadialBasis {
  std::vector<double> centres;  // mu_k
  double width = 1.0;           // w (> 0)

  // `count` centres evenly spaced on [0, r_max] (count >= 2), width = their spacing.
  static RadialBasis uniform(Index count, double r_max);
  Index size() const noexcept { return static_cast<Index>(centres.size()); }
  double phi(Index k, double rho) const;
  // u(rho) = sum_k coeffs[k] phi_k(rho) for one head's coefficient row.
  template <class Row>
  double evaluate(const Row& coeffs, double rho) const {
    double u = 0.0;
    for (Index k = 0; k < size(); ++k) u += static_cast<double>(coeffs(k)) * phi(k, rho);
    return u;
  }
};

struct StreamingAttentionConfig {
  Index heads = 1;
  DistanceMask mask = DistanceMask::none;
  RadialBasis basis;       // used unless mask == none
  Index query_block = 64;  // rows per query block (tile height)
  Index key_block = 64;    // rows per key block (tile width)
};

// What the backward pass needs besides the inputs.
template <class T>
struct StreamingAttentionCache {
  Mat<T> out;        // L x (H dv)
  Mat<T> row_max;    // L x H: m_i, the maximum logit of row i
  Mat<T> row_sum;    // L x H: l_i = sum_j exp(logit_ij - m_i) mask_ij (the denominator / exp(m_i))
  Index nonpositive_denominators = 0;  // (row, head) pairs with l_i <= 0 (multiplicative mask only)
};

// The geometry of the radial mask -- distances rho_ij and basis values phi_k(rho_ij) -- of every
// set that fits one tile (at most min(query_block, key_block) rows: every molecule of up to 64
// atoms with the default blocks). It depends on the coordinates only, so a model whose layers all
// attend over the same coordinates (the molecule model's blocks) computes it once per batch and
// passes it to every forward and backward call, which would otherwise each recompute it.
// Results are bitwise the same with or without it. Memory: (K + 1) values per pair of the
// tabulated sets, at most L min(query_block, key_block) (K + 1) values.
template <class T>
struct RadialBasisTable {
  std::vector<Index> first_pair;                  // per set: offset of its n x n pairs (row-major
                                                  // i n + j) in rho, or -1 for a set of several tiles
  Eigen::Array<T, Eigen::Dynamic, 1> rho;         // all tabulated pairs
  Eigen::Array<T, Eigen::Dynamic, 1> phi;         // per set its n^2 x K block, column-major, at
                                                  // first_pair * K
  Index basis_size = 0;                           // K
};

// Fills `table` for these sets and coordinates (L x dc); config.mask must not be none.
template <class T>
void radial_basis_table(const StreamingAttentionConfig& config, const RaggedIndex& sets,
                        ConstMatRef<T> coords, RadialBasisTable<T>& table);

// Forward. coords (L x dc) and coeffs (H x K) are read only when config.mask != none (pass empty
// matrices otherwise). `table`, if given, must come from radial_basis_table with the same
// configuration, sets and coordinates.
// Bitwise the same for any thread count. Rows whose denominator is not positive (multiplicative
// mask) are counted in cache.nonpositive_denominators and logged, never hidden.
template <class T>
void streaming_attention_forward(const StreamingAttentionConfig& config, const RaggedIndex& sets,
                                 ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V,
                                 ConstMatRef<T> coords, ConstMatRef<T> coeffs,
                                 StreamingAttentionCache<T>& cache,
                                 const RadialBasisTable<T>* table = nullptr);

// Backward: ACCUMULATES dLoss/d{Q, K, V, coords, coeffs} given dout = dLoss/dout. dcoords and
// dcoeffs are touched only when config.mask != none (pass empty matrices otherwise).
// Every gradient row has one writer: bitwise the same for any thread count.
template <class T>
void streaming_attention_backward(const StreamingAttentionConfig& config, const RaggedIndex& sets,
                                  ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V,
                                  ConstMatRef<T> coords, ConstMatRef<T> coeffs,
                                  const StreamingAttentionCache<T>& cache, ConstMatRef<T> dout,
                                  MatRef<T> dQ, MatRef<T> dK, MatRef<T> dV, MatRef<T> dcoords,
                                  MatRef<T> dcoeffs, const RadialBasisTable<T>* table = nullptr);

// Multiply-add counts of the GEMM-shaped products (2 flops per multiply-add), for benchmarks:
// forward and backward over all heads and all (i, j) pairs within sets.
struct StreamingAttentionFlops {
  double forward = 0.0;   // Q K^T and P V
  double backward = 0.0;  // pass 1: Q K^T, G V^T, P^T G, dS^T Q; pass 2: Q K^T, G V^T, dS K
};
StreamingAttentionFlops streaming_attention_flops(const StreamingAttentionConfig& config,
                                                  const RaggedIndex& sets, Index d, Index dv);

}  // namespace flt::exact
