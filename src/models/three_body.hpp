// A linear three-body reference energy: a linear model on atom-centred descriptors of body order
// three (the atomic cluster expansion truncated at correlation order two, with Legendre angular
// functions), fitted in closed form by ridge regression before the network is trained. The
// network then learns what it leaves. Why it exists and what it measures:
// docs/molecule-model.md, "Three-body reference".
//
// For atom i of element a, neighbours j != i within the cutoff r_c of its own structure
// (element b_j, distance r_ij, unit vector u_ij = (r_j - r_i) / r_ij):
//   R_p(r)  = sin(p pi r / r_c) / r * f_c(r),  f_c(r) = (1 + cos(pi r / r_c)) / 2,  p = 1..P
//   channel of (j, p): u = b_j P + (p - 1), U = E P channels (E the model's elements)
//   two-body:   D2_i[u]       = sum_j R_p(r_ij)
//   three-body: D3_i[u, v, l] = sum_{j != k} R_p(r_ij) R_q(r_ik) P_l(u_ij . u_ik),  u <= v
//               (ordered pairs (j, k) with channel u of (j, p) and v of (k, q)), l = 0..L
// The energy of a structure: E = sum_i w_{a_i} . D_i, one weight block per centre element,
// F = E (U + U (U + 1) / 2 (L + 1)) weights per target. Invariant under rotation, translation and
// the exchange of atoms of one element; smooth (the envelope and its slope vanish at r_c).
// Cost O(N k^2 P^2 L) for k neighbours per atom.
#pragma once

#include "core/ragged.hpp"
#include "core/tensor.hpp"

#include <cstdint>
#include <vector>

namespace flt::models {

struct ThreeBodyBasis {
  double cutoff = 5.0;               // r_c, Angstrom
  Index radial = 6;                  // P radial functions
  Index lmax = 4;                    // L, Legendre degree
  std::vector<std::int32_t> elements;  // sorted atomic numbers (the model's element set)

  Index channels() const noexcept { return static_cast<Index>(elements.size()) * radial; }
  Index block_size() const noexcept;  // weights per centre element
  Index feature_count() const noexcept { return static_cast<Index>(elements.size()) * block_size(); }
  void validate() const;  // throws InvalidArgument naming the bad value
};

// Per-structure features, S x F: the descriptors D_i summed over the atoms of each structure
// into the block of each atom's element. Throws InvalidArgument for an element outside the basis
// (naming the structure and atom) or coordinates that are not N x 3.
Mat<double> three_body_features(const ThreeBodyBasis& basis, const RaggedIndex& sets,
                                ConstMatRef<double> coords, const std::vector<std::int32_t>& atomic_numbers);

// The energy of every structure for one weight vector w (F): per_structure (S), optionally each
// atom's share e_i = w_{a_i} . D_i (N) and the gradient dE/dr (N x 3, energy unit per Angstrom).
struct ThreeBodyEnergy {
  Vec<double> per_structure;
  Vec<double> per_atom;
  Mat<double> gradient;
};
ThreeBodyEnergy three_body_energy(const ThreeBodyBasis& basis, const RaggedIndex& sets,
                                  ConstMatRef<double> coords, const std::vector<std::int32_t>& atomic_numbers,
                                  const Vec<double>& weights, bool want_gradient);

// dX/dr: row 3 i + x (i an atom of the batch, x = 0..2) holds the derivative of the feature row of
// atom i's structure with respect to coordinate x of atom i (3N x F, feature unit per Angstrom),
// so the forces of weights w are -(dX/dr) w. Dense: for tests and small batches (the force fit
// below computes one structure at a time).
Mat<double> three_body_feature_jacobian(const ThreeBodyBasis& basis, const RaggedIndex& sets,
                                        ConstMatRef<double> coords, const std::vector<std::int32_t>& atomic_numbers);

// Ridge regression with the regularisation chosen by exact leave-one-out error.
// The unpenalised term has the column u (`intercept_column`, M values; empty: all ones, a plain
// intercept): prediction = X w + intercept u. The molecule model passes each structure's atom
// count, since its intercept is the per-atom mean m_t: a constant per structure would be a
// different model whenever structures have different sizes. Columns are centred (their projection
// on u removed) and standardised by their remaining spread (columns that u explains get weight
// zero), so for each candidate lambda
//   w = argmin |X~ w - (y - ybar u)|^2 + lambda M |w|^2   (M rows, X~ the standardised columns,
//                                                          ybar = u.y / u.u)
// and the leave-one-out residual of row m is (y_m - yhat_m) / (1 - H_mm) with H the hat matrix,
// from one eigendecomposition of X~ X~^T (M <= F) or X~^T X~ (M > F). The lambda of least
// leave-one-out mean squared error wins; weights are returned for the raw columns and the
// intercept separately.
struct RidgeFit {
  Vec<double> weights;
  double intercept = 0.0;
  double lambda = 0.0;
  double loo_mae = 0.0;
  double loo_rmse = 0.0;
  Vec<double> loo_residuals;  // M: y_m minus the prediction of the fit without row m
  // With force rows (fit_ridge_loo_with_forces): the leave-one-structure-out errors of its force
  // components (the labels' unit), and how many there are.
  double force_loo_mae = 0.0;
  double force_loo_rmse = 0.0;
  Index force_components = 0;
};
// Candidates lambda = 10^(-8 + k/2), k = 0..14 (times M as above).
RidgeFit fit_ridge_loo(const Mat<double>& features, const Vec<double>& labels, const Vec<double>& intercept_column = {});
// One fit per column of labels (M x T) on the same rows: one eigendecomposition and one set of
// leverages for all columns, each column choosing its own lambda; fit t is bitwise the fit of
// labels.col(t) alone.
std::vector<RidgeFit> fit_ridge_loo(const Mat<double>& features, const Mat<double>& labels,
                                    const Vec<double>& intercept_column = {});


// Force labels of the structures of a ridge fit: the batch (sets, coordinates, atomic numbers) of
// `basis`, its N x 3 forces (the label's unit per Angstrom; a row with a NaN: no label), the batch
// structure of each fit row (M) and the weight of one force component's squared residual relative
// to one structure's energy.
struct ForceRows {
  const ThreeBodyBasis* basis = nullptr;
  const RaggedIndex* sets = nullptr;
  const Mat<double>* coords = nullptr;
  const std::vector<std::int32_t>* atomic_numbers = nullptr;
  const Mat<double>* forces = nullptr;
  std::vector<Index> structures;
  double weight = 0.0;
};

// The ridge fit above with each structure's force components as rows beside its energy: with
// J_s = dX_s/dr (three_body_feature_jacobian) and c = `forces.weight`,
//   min  sum_m (y_m - x_m w - u_m b)^2 + c sum_{force components} (F - (-J w))^2 + lambda M |D w|^2
// (b unpenalised, D the columns' spreads over energy and weighted force rows together). The
// normal equations are summed over structures in chunks of a fixed order (memory F x F, never the
// 3N x F Jacobian; bitwise the same for any thread count), the F x F Gram matrix decomposed once,
// and lambda chosen by exact leave-one-STRUCTURE-out error: each structure's energy and force rows
// are left out together (r_g = (I - H_gg)^-1 (y_g - yhat_g), a second pass over the Jacobians),
// scored as the objective's weighted sum. loo_residuals, loo_mae and loo_rmse are the energies'
// (y's unit), force_loo_* the forces'. Cost: O(R F^2 + F^3 + S m^2 F) for R force rows and m rows
// per structure. InvalidArgument when no fit row has a force label.
RidgeFit fit_ridge_loo_with_forces(const Mat<double>& features, const Vec<double>& labels,
                                   const Vec<double>& intercept_column, const ForceRows& forces);

}  // namespace flt::models
