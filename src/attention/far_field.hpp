// The far field of the geometric FLT attention: a learned radial mask applied to values over all
// pairs of a set, estimated in linear time with deterministic (structured) Fourier features of
// positions, with the pairs inside the cutoff taken exactly (method notes, E29-E31).
//
// Shapes: N rows of a ragged batch of sets, H heads, dv value width per head, K mask nodes.
//   V, out: N x (H dv) (head h owns columns [h dv, (h+1) dv));  coords: N x 3 (Angstrom);
//   coeffs: H x K (a_hn >= 0; the caller maps its parameters, e.g. softplus).
//
// Mask per head (positive definite by Bochner since a_hn >= 0):
//   f_h(rho) = sum_n a_hn j0(2 pi kappa_n rho)                        (RadialNodes kappa_n)
// Partition of the pairs by the smooth envelope e of the near field (radial.hpp):
//   w(rho) = 1 - e(rho)   (0 at rho = 0, so the self pair drops out; 1 from the cutoff on)
// Output (the exact object):
//   out_i,h = sum_{j in set(i)} w(rho_ij) f_h(rho_ij) v_j,h                               (F1)
//
// Fast path. By (E30), j0(2 pi kappa |r_i - r_j|) = sum_m lam_m cos(2 pi kappa u_m.(r_i - r_j))
// up to the design's bandwidth, with a spherical design {u_m, lam_m}. With the features
//   psi_n(r) = [sqrt(lam_m) cos(2 pi kappa_n u_m.r), sqrt(lam_m) sin(2 pi kappa_n u_m.r)]_m
// (one of each antipodal pair u, -u of the design, weights of the pair merged), the estimate is
//   est_h(i, j) = sum_n a_hn psi_n(r_i).psi_n(r_j),  and with S_n = sum_{j in set} psi_n(r_j) v_j^T
//   out_i,h = sum_n a_hn psi_n(r_i) S_n[:, h]                          (all pairs, estimated)
//           - sum_{j in N(i)} est_h(i, j) v_j,h                        (near pairs' share, E31)
//           + sum_{j in N(i)} w(rho_ij) f_h(rho_ij) v_j,h               (near pairs, exact)
// so pairs inside the cutoff are exact and only pairs beyond it are estimated. A set whose pairs
// are all in the neighbour list (set_is_complete) gets (F1) exactly, without features.
// Cost O(N (K M dv H + k (K M + dv H))) for M features per node and k neighbours per row.
//
// Features: F = 2M per node with kappa_n > 0, plus one for a zero node (kappa_0 = 0, first = 0:
// j0(0) = 1 for every pair, so its features are the single constant 1, exactly). Phases use the
// angle-addition recurrence over the (equally spaced) nodes: one or two sin/cos per direction and
// row, whatever K.
//
// Neighbour list (neighbours.hpp): built over the same sets, with a cutoff >= config.cutoff (pairs
// beyond the partition's cutoff that it holds are simply taken exactly, w = 1). It may include
// self pairs or not (the self pair's estimate is subtracted either way: w(0) = 0). Backward
// additionally needs it symmetric (j in N(i) iff i in N(j), as any list within a cutoff is): the
// near-pair gradients are gathered from each row's own pairs so that every gradient row has one
// writer. Both are checked (InvalidArgument).
//
// Designs. product_grid: Gauss-Legendre nodes in cos(theta) times equally spaced phi (n_theta,
// n_phi the smallest even counts with 2 n_theta - 1 >= degree and n_phi - 1 >= degree; the grid's
// t > 0 half, M = n_theta n_phi / 2 directions, e.g. 64 for degree 15); it
// integrates every spherical polynomial of degree <= `degree` exactly, so the estimate of
// j0(2 pi kappa rho) is exact up to terms of the plane wave's expansion beyond that degree, which
// fall off super-exponentially once 2 pi kappa rho < degree. iid: independent uniform directions
// with equal weights (the paper's i.i.d. random features), unbiased with O(1/sqrt(M)) error.
// The caller rotates the design (SphericalDesign::rotated) by a random rotation at each training
// step (the estimate is then unbiased over rotations) and keeps it fixed at inference.
//
// Phases are computed in double with each set's centroid subtracted (the estimate only depends on
// differences, so the centring changes nothing but the rounding), as (E8, section 8.5), and
// reduced modulo one turn before the factor 2 pi. The gradient through the centroid is zero (the
// output is translation invariant) and is not propagated. Inside, everything is double; T only
// at the inputs and outputs.
//
// Backward: d/dV, d/d coords (through the features' phases, the exact near distances and the
// near pairs' estimates, which depend on r_i - r_j) and d/d coeffs, accumulated. Threads: OpenMP over sets, or over fixed row chunks of one large set
// with the per-chunk partial sums S_n added in chunk order; bitwise the same for any thread count.
// Memory: features are recomputed per row block (never N x F); the cache holds one F x (H dv) sum
// per set that uses features and the centroids; a large set (> 1024 rows) adds at most 64
// transient partial sums of that size. Rows of a large set in spatial order (e.g. sorted by
// cell) keep the near sums' accesses to V and dout in cache: random order is about 2x slower at
// 1e5 atoms.
// Errors: shapes, a malformed neighbour list, non-finite coordinates -> InvalidArgument;
// an invalid FarFieldConfig -> ConfigError (validate()). Coefficients may be any real numbers
// (the code does not need a_hn >= 0; positive definiteness does).
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
  std::vector<Mat<double>> sums;       // per set that used features: F x (H dv) sums S_n (F above)
  // Per set: index into sums; or -1: complete set (exact near sums only, no features); or -2: a
  // small incomplete set (n <= min(256, 2 F H dv / (F + H dv)), e.g. QM9 molecules at H dv = 128)
  // whose estimate goes through the per-node Gram matrices Psi_n Psi_n^T of its rows, masked to
  // the far pairs: the same estimator, fewer operations than the sums, nothing cached.
  std::vector<Index> sum_of_set;
  std::vector<Eigen::Vector3d> centre; // per set centroid
};

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

// T = Dual (core/dual.hpp; exact second derivatives): the fast path's function written out pair
// by pair, O(n^2) per set: the features' estimate E30 for pairs outside the neighbour list, the
// exact terms for the list's pairs and the self pair (the same sum as far_field_forward, to
// rounding), every quantity with its tangent. Backward accumulates like far_field_backward.
void far_field_pairs_forward(const FarFieldConfig& config, const SphericalDesign& design,
                             const RaggedIndex& sets, const NeighbourList& neighbours,
                             ConstMatRef<Dual> coords, ConstMatRef<Dual> V, ConstMatRef<Dual> coeffs,
                             MatRef<Dual> out);
void far_field_pairs_backward(const FarFieldConfig& config, const SphericalDesign& design,
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

// Diagnostics: the mask f_h(|r_i - r_j|) of one set (n x n, head h) as the features estimate it
// (est_h of the fast path, all pairs, same centring) and exactly (without the partition's w).
Mat<double> mask_estimate(const FarFieldConfig& config, const SphericalDesign& design,
                          ConstMatRef<double> coords, std::span<const double> coeffs_of_head);
Mat<double> mask_exact(const FarFieldConfig& config, ConstMatRef<double> coords,
                       std::span<const double> coeffs_of_head);

}  // namespace flt::attn
