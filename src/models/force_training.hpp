// Training on energies and forces: the loss of one batch and its exact gradient.
//
// Shapes: S molecules, N atoms, P targets; t the energy target the forces belong to (extensive).
// With the model's normalisation (E = reference + |s| m_t + sigma_t out_t), forces in normalised
// units are F~ = F / sigma_t = -d out_t / dr, and the loss is
//   L = L_E(out, y~) + w / (3 N_f) sum_{i with forces} |F~_i - F~ref_i|^2
// where L_E is the regression loss on the standardised targets (core/losses.hpp), F~ref = Fref /
// sigma_t, N_f the atoms with reference forces, and w the force weight (dimensionless: both terms
// are in standardised units). The force term is a mean squared error whatever L_E's kind.
//
// Gradient. dL/dtheta = dL_E/dout . dout/dtheta + (2 w / (3 N_f)) sum_i r_i . dF~_i/dtheta with
// r = F~ - F~ref, and dF~_i/dtheta = -d^2 out_t / (dr_i dtheta), so the second term is the
// directional derivative of dout_t/dtheta along u = -(2 w / (3 N_f)) r in coordinate space.
// Two passes compute it exactly:
//   1. the model's forward and backward with dout = e_t give out and dout_t/dr (so F~ and r, u);
//   2. a Dual copy of the model (core/dual.hpp) runs forward with coordinate tangent u and
//      backward with dout = e_t + eps dL_E/dout. The tangent of its parameter gradient,
//        d/deps [ (e_t + eps g) . J(r + eps u) ] = g . J + D_u (e_t . J),   J = dout/dtheta,
//      is dL/dtheta: both terms at once.
// No finite differences: tests/models/test_second_derivatives.cpp checks it against them.
#pragma once

#include "core/dual.hpp"
#include "core/losses.hpp"
#include "models/molecule_model.hpp"

namespace flt::models {

struct EnergyForceLoss {
  LossValue energy;          // L_E (per target, counts)
  double force = 0;          // the force term (including the weight w)
  double force_mse = 0;      // mean over force components of |F~ - F~ref|^2 (standardised units)
  Index force_atoms = 0;     // N_f
  Mat<double> out;           // S x P normalised outputs
  Mat<double> forces;        // N x 3 predicted forces F = -dE_t/dr (the target's unit per Angstrom)
  double value() const noexcept { return energy.value + force; }
};

// Zeroes the parameter gradients of `model` and fills them with dL/dtheta. `labels`: S x P
// normalised targets (NaN = missing); `reference_forces`: N x 3 in the target's unit per Angstrom,
// rows of NaN for atoms without reference forces. `dual` must have model's configuration; its
// state is overwritten with the model's (parameters, normalisation, features). force_weight >= 0.
// InvalidArgument for an intensive target, shapes that do not match, or a model kind the Dual path
// does not implement. `cache` and `dual_cache` are reused between calls (their buffers).
template <class T>
EnergyForceLoss energy_force_gradient(MoleculeModel<T>& model, MoleculeModel<Dual>& dual,
                                      const MoleculeBatch& batch, const Mat<double>& labels,
                                      const Mat<double>& reference_forces, Index target,
                                      double force_weight, const RegressionLoss& loss,
                                      ModelCache<T>& cache, ModelCache<Dual>& dual_cache);

}  // namespace flt::models
