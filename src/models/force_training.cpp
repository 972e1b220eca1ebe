// The energy and force loss and its gradient; the equations are in force_training.hpp.
#include "models/force_training.hpp"

#include "core/error.hpp"

#include <cmath>
#include <string>
#include <type_traits>

namespace flt::models {

template <class T>
EnergyForceLoss energy_force_gradient(MoleculeModel<T>& model, MoleculeModel<Dual>& dual,
                                      const MoleculeBatch& batch, const Mat<double>& labels,
                                      const Mat<double>& reference_forces, Index target,
                                      double force_weight, const RegressionLoss& loss,
                                      ModelCache<T>& cache, ModelCache<Dual>& dual_cache,
                                      const Mat<double>* reference_gradient) {
  const Index S = batch.num_molecules(), N = batch.num_atoms(), P = model.config().num_targets();
  require(target >= 0 && target < P, "energy_force_gradient: target index out of range");
  const TargetSpec& spec = model.config().targets[static_cast<std::size_t>(target)];
  require(spec.extensive, "forces need an extensive (energy) target; '" + spec.name + "' is a per-molecule mean");
  require(labels.rows() == S && labels.cols() == P, "energy_force_gradient: labels must be S x P");
  require(reference_forces.rows() == N && reference_forces.cols() == 3,
          "energy_force_gradient: reference forces must be N x 3");
  require(force_weight >= 0 && std::isfinite(force_weight), "energy_force_gradient: the force weight must be >= 0");
  require(!reference_gradient || (reference_gradient->rows() == N && reference_gradient->cols() == 3),
          "energy_force_gradient: the reference gradient must be N x 3");
  const double sigma = model.normalisation().scale[static_cast<std::size_t>(target)];

  // Pass 1: out and dout_t/dr.
  EnergyForceLoss result;
  cache.keep_far_pair_terms = false;  // its backward takes coordinate gradients
  const Mat<T> out = model.forward(batch, cache);
  const Mat<T> y = labels.cast<T>();
  result.energy = regression_loss_forward<T>(loss, out, y);
  Mat<T> dout_energy = Mat<T>::Zero(S, P);
  regression_loss_backward<T>(loss, out, y, dout_energy);
  Mat<T> select = Mat<T>::Zero(S, P);
  select.col(target).setOnes();
  // Its parameter gradient (dE/dtheta) is not needed: pass 2 gives the whole gradient (and
  // overwrites every entry at the end).
  Mat<T> dout_dr;
  {
    const ScopedPassOptions coordinates_only({.parameter_gradient_values = false});
    model.backward(batch, cache, select, &dout_dr);
  }
  result.out = out.template cast<double>();
  // The three-body reference's forces are part of the prediction (its weights are fixed).
  result.forces = dout_dr.template cast<double>() * -sigma -
                  (reference_gradient ? *reference_gradient : model.reference_gradient(batch, target));

  // Residuals r = F~ - F~ref over the atoms with reference forces; u = -(2 w / (3 N_f)) r.
  Mat<double> residual = Mat<double>::Zero(N, 3);
  for (Index i = 0; i < N; ++i) {
    if (!reference_forces.row(i).allFinite()) continue;
    ++result.force_atoms;
    residual.row(i) = (result.forces.row(i) - reference_forces.row(i)) / sigma;
  }
  Mat<double> u = Mat<double>::Zero(N, 3);
  if (result.force_atoms > 0) {
    const double components = 3.0 * static_cast<double>(result.force_atoms);
    result.force_mse = residual.squaredNorm() / components;
    result.force = force_weight * result.force_mse;
    u = residual * (-2.0 * force_weight / components);
  }

  // Pass 2: the Dual copy, coordinate tangent u, dout = e_t + eps dL_E/dout. Only the tangents
  // of its parameter gradients are read; a float model's are computed with float products.
  const ScopedPassOptions options({.float_products = std::is_same_v<T, float>,
                                   .parameter_gradient_values = false,
                                   .parameter_tangents = false});  // copy_model_state gives none
  copy_model_state(model, dual);
  // The dual forward's filter tables are the float pass's (same weights, no tangents).
  dual_cache.blocks.resize(cache.blocks.size());
  for (std::size_t b = 0; b < cache.blocks.size(); ++b)
    if (cache.blocks[b].near.table.nodes() != 0)
      attn::lend_filter_table(cache.blocks[b].near.table, dual_cache.blocks[b].near.table);
  dual.forward(batch, dual_cache, &u);
  Mat<Dual> dout(S, P);
  for (Index s = 0; s < S; ++s)
    for (Index p = 0; p < P; ++p) dout(s, p) = Dual(value_of(select(s, p)), value_of(dout_energy(s, p)));
  dual.parameters().zero_grad();
  dual.backward(batch, dual_cache, dout);
  auto grads = model.parameters().grads();
  const auto dual_grads = dual.parameters().grads();
  require(grads.size() == dual_grads.size(), "energy_force_gradient: the Dual model has another layout");
  for (std::size_t k = 0; k < grads.size(); ++k) grads[k] = static_cast<T>(dual_grads[k].d);
  return result;
}

template EnergyForceLoss energy_force_gradient<float>(MoleculeModel<float>&, MoleculeModel<Dual>&,
                                                      const MoleculeBatch&, const Mat<double>&,
                                                      const Mat<double>&, Index, double,
                                                      const RegressionLoss&, ModelCache<float>&,
                                                      ModelCache<Dual>&, const Mat<double>*);
template EnergyForceLoss energy_force_gradient<double>(MoleculeModel<double>&, MoleculeModel<Dual>&,
                                                       const MoleculeBatch&, const Mat<double>&,
                                                       const Mat<double>&, Index, double,
                                                       const RegressionLoss&, ModelCache<double>&,
                                                       ModelCache<Dual>&, const Mat<double>*);

}  // namespace flt::models
