// The far field of the geometric FLT attention: a learned radial mask applied to values over all
// pairs of a set, estimated in linear time with deterministic (structured) Fourier features of
// positions, with the pairs inside the cutoff taken exactly (method notes, E29-E31).
//
// Shapes: N rows of a ragged batch of sets, H heads, dv value width per head, K mask nodes.
//   V, out: N x (H dv) (head h owns columns [h dv, (h+1) dv));  coords: N x 3 (Angstrom);
//   coeffs: H x K (a_hn >= 0; the caller maps its parameters, e.g. softplus).
//
//   f_h(rho) = sum_n a_hn j0(2 pi kappa_n rho),   w(rho) = 1 - e(rho)  (e: near-field envelope)
//   out_i,h = sum_{j in set(i)} w(rho_ij) f_h(rho_ij) v_j,h                                  (F1)
// estimated with features psi_n of a spherical design, j0 = sum_m lam_m cos(...) (E30), as
// sum_n a_hn psi_n(r_i) sum_j psi_n(r_j) v_j,h, with the near pairs' estimate replaced by their
// exact terms (E31): only pairs beyond the cutoff are estimated.
// Features, designs, centring, cost, memory and threads: docs/attention.md, "Far field".
#pragma once

#include "core/dual.hpp"
#include "core/random.hpp"
#include "core/ragged.hpp"
#include "core/tensor.hpp"
#include "attention/neighbours.hpp"
#include "attention/radial.hpp"

#include <Eigen/Core>

#include <span>
#include <string>

#include <vector>

namespace flt::attn {

enum class DesignKind { product_grid, iid };
const char* to_string(DesignKind kind) noexcept;
DesignKind design_kind_from_string(const std::string& name);  // throws ConfigError

// Unit directions with weights summing to 1, one of each antipodal pair (cos is even in u).
struct SphericalDesign {
  Mat<double> directions;       // M x 3
  std::vector<double> weights;  // M, sum 1
  int degree = 0;               // product grid: exact for spherical polynomials up to this degree
                                // (the requested degree, or one more when that is even); iid: 0

  Index size() const noexcept { return directions.rows(); }
  // degree in [0, 1000], else ConfigError.
  static SphericalDesign product_grid(int degree);
  // count >= 1 normalised Gaussian directions, weights 1/count (ConfigError otherwise).
  static SphericalDesign iid(Index count, Rng& rng);
  // Directions u -> R u (weights kept); R must be orthogonal (InvalidArgument otherwise).
  SphericalDesign rotated(const Eigen::Matrix3d& rotation) const;
};

struct FarFieldConfig {
  Index heads = 8;
  Index value_dim = 16;
  RadialNodes nodes;   // the mask's frequency nodes kappa_n
  double cutoff = 5.0; // r_c of the partition (the neighbour list's cutoff)
  void validate() const;
};

// What forward keeps for backward (features are recomputed, so memory stays O(N + sets K M H dv)).
template <class T>
struct FarFieldCache {
  std::vector<Mat<double>> sums;       // per set that used features: F x (H dv) sums S_n
                                       // (F features: 2M per oscillating node, 1 for a zero node)
  // Per set: index into sums; or -1: complete set (exact near sums only, no features); or -2: a
  // small incomplete set (n <= min(256, 2 F H dv / (F + H dv)), e.g. QM9 molecules at H dv = 128)
  // whose estimate goes through the per-node Gram matrices Psi_n Psi_n^T of its rows, masked to
  // the far pairs: the same estimator, fewer operations than the sums, nothing cached.
  std::vector<Index> sum_of_set;
  std::vector<Eigen::Vector3d> centre; // per set centroid
  // Set before the forward: keep each task's near-pair terms g_n(i, j) (its pairs x K, in T), so
  // that a backward without coordinate gradients reads them instead of computing the pairs'
  // estimates again (memory: K values per listed pair; a backward with coordinate gradients
  // needs more per pair and computes them all).
  bool keep_pair_terms = false;
  std::vector<Mat<T>> pair_terms;      // per task of the forward's plan (empty: not kept)
};

// Forward and backward give bitwise the same results for any thread count. Wrong shapes, a
// malformed neighbour list (backward: also one that is not symmetric) and non-finite coordinates
// throw InvalidArgument; an invalid config throws ConfigError.
template <class T>
void far_field_forward(const FarFieldConfig& config, const SphericalDesign& design,
                       const RaggedIndex& sets, const NeighbourList& neighbours,
                       ConstMatRef<double> coords, ConstMatRef<T> V, ConstMatRef<T> coeffs,
                       MatRef<T> out, FarFieldCache<T>& cache);

// ACCUMULATES dLoss/dV, dLoss/dcoords (N x 3) and dLoss/dcoeffs (H x K); dcoords may be empty.
template <class T>
void far_field_backward(const FarFieldConfig& config, const SphericalDesign& design,
                        const RaggedIndex& sets, const NeighbourList& neighbours,
                        ConstMatRef<double> coords, ConstMatRef<T> V, ConstMatRef<T> coeffs,
                        const FarFieldCache<T>& cache, ConstMatRef<T> dout, MatRef<T> dV,
                        MatRef<T> dcoords, MatRef<T> dcoeffs);

// T = Dual (core/dual.hpp; exact second derivatives): the readable reference of the dual fast
// path below, the fast path's function written out pair by pair, O(n^2) per set: the features'
// estimate E30 for pairs outside the neighbour list, the exact terms for the list's pairs and the
// self pair (the same sum as far_field_forward, to rounding), every quantity with its tangent.
// Backward accumulates like far_field_backward.
void far_field_pairs_forward(const FarFieldConfig& config, const SphericalDesign& design,
                             const RaggedIndex& sets, const NeighbourList& neighbours,
                             ConstMatRef<Dual> coords, ConstMatRef<Dual> V, ConstMatRef<Dual> coeffs,
                             MatRef<Dual> out);
void far_field_pairs_backward(const FarFieldConfig& config, const SphericalDesign& design,
                              const RaggedIndex& sets, const NeighbourList& neighbours,
                              ConstMatRef<Dual> coords, ConstMatRef<Dual> V, ConstMatRef<Dual> coeffs,
                              ConstMatRef<Dual> dout, MatRef<Dual> dV, MatRef<Dual> dcoords,
                              MatRef<Dual> dcoeffs);

// T = Dual, the fast path: the same function as far_field_pairs_forward / backward (to rounding)
// in O(n F H dv + pairs F) per set, F = the number of feature columns: features over all pairs
// of an incomplete set (in dual numbers, with their derivatives along the coordinates' tangents),
// the near pairs' estimate replaced by their exact terms; complete sets from the list's pairs
// only; small incomplete sets (at most as many rows as the float path's Gram matrices take) pair
// by pair, a far pair's estimate the dot product of its two feature rows. Memory: the features of every row (N x F duals) and per incomplete set two F x (H dv) sums.
// Backward needs a symmetric list (it gathers each row's pairs in both directions), so that every
// gradient row has one writer: bitwise the same results for any thread count.
void far_field_dual_forward(const FarFieldConfig& config, const SphericalDesign& design,
                            const RaggedIndex& sets, const NeighbourList& neighbours,
                            ConstMatRef<Dual> coords, ConstMatRef<Dual> V, ConstMatRef<Dual> coeffs,
                            MatRef<Dual> out);
void far_field_dual_backward(const FarFieldConfig& config, const SphericalDesign& design,
                             const RaggedIndex& sets, const NeighbourList& neighbours,
                             ConstMatRef<Dual> coords, ConstMatRef<Dual> V, ConstMatRef<Dual> coeffs,
                             ConstMatRef<Dual> dout, MatRef<Dual> dV, MatRef<Dual> dcoords,
                             MatRef<Dual> dcoeffs);

// The O(n^2) closed form (F1) and its backward: the reference of the fast path, and the
// "exact far field" of the ablation. dcoords may be empty here too.
// T = Dual (core/dual.hpp: coordinates with tangents, for exact second derivatives) runs a
// readable pair-by-pair version of the same sums, serial within each set.
template <class T>
void far_field_exact_forward(const FarFieldConfig& config, const RaggedIndex& sets,
                             ConstMatRef<Accum<T>> coords, ConstMatRef<T> V, ConstMatRef<T> coeffs,
                             MatRef<T> out);
template <class T>
void far_field_exact_backward(const FarFieldConfig& config, const RaggedIndex& sets,
                              ConstMatRef<Accum<T>> coords, ConstMatRef<T> V, ConstMatRef<T> coeffs,
                              ConstMatRef<T> dout, MatRef<T> dV, MatRef<T> dcoords,
                              MatRef<T> dcoeffs);

// Whether the near pairs' share of the estimate takes the product grid's closed form (J_0 and
// J_N per polar node instead of a sum over the directions; the same values to rounding): the
// design is a rotated product grid (recognised from its directions and weights) and
// 2 pi kappa_max rho sqrt(1 - t^2) <= 4 up to the cutoff. Otherwise the direct sum.
bool far_field_closed_form(const FarFieldConfig& config, const SphericalDesign& design);

// Diagnostics: the mask f_h(|r_i - r_j|) of one set (n x n, head h) as the features estimate it
// (est_h of the fast path, all pairs, same centring) and exactly (without the partition's w).
Mat<double> mask_estimate(const FarFieldConfig& config, const SphericalDesign& design,
                          ConstMatRef<double> coords, std::span<const double> coeffs_of_head);
Mat<double> mask_exact(const FarFieldConfig& config, ConstMatRef<double> coords,
                       std::span<const double> coeffs_of_head);

}  // namespace flt::attn
