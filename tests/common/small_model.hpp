// The small, randomly initialised (untrained) molecule model the pipeline tests and the public
// API tests (tests/api/make_test_model.cpp) use: U0 (eV, extensive) and gap (eV, intensive), width
// 16, 2 heads, 2 blocks, with a non-trivial normalisation and per-element reference energies near
// the isolated atoms' energies, so that U0 predictions have a realistic magnitude. The tests check
// plumbing (loading, units, batching, threads, files), not chemistry. Header-only: it depends on
// src/models alone.
#pragma once

#include "models/molecule_model.hpp"

#include <cstdint>
#include <vector>

namespace flt::test_support {

// `elements`: the atomic numbers the model accepts (each of H, C, N, O, F gets its reference
// energy; others none).
inline models::MoleculeModel<float> small_molecule_model(
    std::uint64_t seed, models::AttentionKind kind = models::AttentionKind::kronecker,
    std::vector<std::int32_t> elements = {1, 6, 7, 8}) {
  models::ModelConfig c;
  c.targets = {{"U0", "eV", true}, {"gap", "eV", false}};
  c.width = 16;
  c.heads = 2;
  c.blocks = 2;
  c.mlp_hidden = 16;
  c.head_hidden = 16;
  c.num_features = 8;
  c.num_frequencies = 8;
  c.spectrum_components = 2;
  c.exact_rbf = 8;
  c.attention = kind;
  c.seed = seed;
  models::MoleculeModel<float> model(c);
  models::Normalisation n;
  n.elements = std::move(elements);
  n.mean = {-0.5, 6.8};  // eV per atom for U0 (after reference energies), eV for gap
  n.scale = {0.7, 1.3};
  n.reference = Mat<double>::Zero(2, c.max_z + 1);
  const std::pair<int, double> atoms[] = {{1, -13.6}, {6, -1027.4}, {7, -1484.2}, {8, -2039.8}, {9, -2713.0}};
  for (const auto& [z, e] : atoms) n.reference(0, z) = e;  // eV, roughly the isolated atoms' energies
  model.set_normalisation(n);
  return model;
}

}  // namespace flt::test_support
