// make_test_model OUT.flt [SEED]: writes a small, randomly initialised (untrained) FLT molecule
// model predicting U0 (eV, extensive) and gap (eV, intensive) for H, C, N, O and F, with
// per-element reference energies near the atoms' real energies so that U0 predictions have a
// realistic magnitude. It stands in for the bundled default model in the API tests and the
// example consumer test until a trained models/default.flt exists: the tests check the API's
// plumbing (loading, units, batching, threads, files, RDKit, installation), not chemistry.
#include "models/molecule_model.hpp"
#include "models/model_io.hpp"

#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: make_test_model OUT.flt [SEED]\n");
    return 2;
  }
  try {
    const std::uint64_t seed = argc == 3 ? std::stoull(argv[2]) : 1;
    flt::models::ModelConfig c;
    c.targets = {{"U0", "eV", true}, {"gap", "eV", false}};
    c.width = 16;
    c.heads = 2;
    c.blocks = 2;
    c.mlp_hidden = 16;
    c.head_hidden = 16;
    c.num_features = 8;
    c.num_frequencies = 8;
    c.spectrum_components = 2;
    c.seed = seed;
    flt::models::MoleculeModel<float> model(c);
    flt::models::Normalisation n;
    n.elements = {1, 6, 7, 8, 9};
    n.mean = {-0.5, 6.8};  // eV per atom for U0 (after reference energies), eV for gap
    n.scale = {0.7, 1.3};
    n.reference = flt::Mat<double>::Zero(2, c.max_z + 1);
    n.reference(0, 1) = -13.6;  // eV, roughly the isolated atoms' energies
    n.reference(0, 6) = -1027.4;
    n.reference(0, 7) = -1484.2;
    n.reference(0, 8) = -2039.8;
    n.reference(0, 9) = -2713.0;
    model.set_normalisation(n);
    flt::models::save_model(argv[1], model,
                                   {{"seed", std::to_string(seed)},
                                    {"note", "random-initialised test model, not trained"}});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_test_model: %s\n", e.what());
    return 1;
  }
  return 0;
}
