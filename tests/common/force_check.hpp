// Forces against central differences of a model's predicted energy, shared by the model tests:
// the largest |F + dE/dr| over every atom and component, with E from predict() (target 0) and
// r moved by +-h Angstrom. Header-only: it depends on src/models alone.
#pragma once

#include "models/molecule_model.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

namespace flt::test_support {

inline models::MoleculeBatch batch_of(const std::vector<models::Molecule>& molecules) {
  return models::MoleculeBatch::from(std::span<const models::Molecule>(molecules));
}

// `forces`: rows in batch order (molecule by molecule), as predict_with_forces gives them.
template <class Model>
double worst_force_error(Model& model, const std::vector<models::Molecule>& molecules,
                         const Mat<double>& forces, double h) {
  double worst = 0;
  Index row = 0;
  for (std::size_t s = 0; s < molecules.size(); ++s)
    for (std::size_t i = 0; i < molecules[s].positions.size(); ++i, ++row)
      for (std::size_t c = 0; c < 3; ++c) {
        std::vector<models::Molecule> plus = molecules, minus = molecules;
        plus[s].positions[i][c] += h;
        minus[s].positions[i][c] -= h;
        const double e_plus = model.predict(batch_of(plus))(static_cast<Index>(s), 0);
        const double e_minus = model.predict(batch_of(minus))(static_cast<Index>(s), 0);
        worst = std::max(worst, std::abs(forces(row, static_cast<Index>(c)) + (e_plus - e_minus) / (2 * h)));
      }
  return worst;
}

}  // namespace flt::test_support
