// Random molecules for the model tests: H, C, N, O in a Gaussian cloud around the origin. Header-
// only; it depends on src/core and src/models alone.
#pragma once

#include "core/random.hpp"
#include "models/molecule_model.hpp"

#include <cstdint>
#include <vector>

namespace flt::test_support {

// One molecule per entry of `sizes`: each atom's element uniform among H, C, N, O and its
// coordinates normal with standard deviation `sigma` (Angstrom; 1.2 gives a jittered cloud of about
// 1.4 A spacing at QM9 sizes); with `formal_charges` each atom also gets a charge in {-1, 0, 1}.
// Per atom the draws are: element, x, y, z, then the charge.
inline std::vector<models::Molecule> random_molecules(const std::vector<int>& sizes, std::uint64_t seed,
                                                      double sigma = 1.2, bool formal_charges = true) {
  Rng rng(seed);
  const int elements[] = {1, 6, 7, 8};
  std::vector<models::Molecule> out;
  for (const int n : sizes) {
    models::Molecule m;
    for (int i = 0; i < n; ++i) {
      m.atomic_numbers.push_back(elements[rng.below(4)]);
      m.positions.push_back({rng.normal(0, sigma), rng.normal(0, sigma), rng.normal(0, sigma)});
      if (formal_charges) m.formal_charges.push_back(static_cast<int>(rng.below(3)) - 1);
    }
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace flt::test_support
