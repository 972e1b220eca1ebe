// Training on energies and forces: the loss of one batch and its exact gradient.
//
// Shapes: S molecules, N atoms, P targets; t the energy target the forces belong to (extensive).
// Forces in normalised units F~ = F / sigma_t = -d out_t / dr; r = F~ - F~ref over the N_f atoms
// with reference forces; w the force weight (dimensionless); L_E from core/losses.hpp:
//   L = L_E(out, y~) + w / (3 N_f) sum_i |r_i|^2            (the force term is always an MSE)
//   dL/dtheta = g . J + D_u (e_t . J),  J = dout/dtheta,  g = dL_E/dout,  u = -(2 w / (3 N_f)) r
// computed exactly in two passes: forward and backward with dout = e_t (F~, r, u), then a Dual
// copy of the model (core/dual.hpp) with coordinate tangent u and dout = e_t + eps g, whose
// parameter gradient's tangent is dL/dtheta.
// Derivation and checks: docs/molecule-model.md, "Training on forces".
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
// `reference_gradient` (N x 3), when given, is model.reference_gradient(batch, target), which
// depends only on the atoms (the three-body reference's weights are fixed): a trainer keeps it per
// structure instead of a descriptor pass per step; computed here otherwise.
template <class T>
EnergyForceLoss energy_force_gradient(MoleculeModel<T>& model, MoleculeModel<Dual>& dual,
                                      const MoleculeBatch& batch, const Mat<double>& labels,
                                      const Mat<double>& reference_forces, Index target,
                                      double force_weight, const RegressionLoss& loss,
                                      ModelCache<T>& cache, ModelCache<Dual>& dual_cache,
                                      const Mat<double>* reference_gradient = nullptr);

}  // namespace flt::models
