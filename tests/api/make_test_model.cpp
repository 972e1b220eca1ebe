// make_test_model OUT.flt [SEED [ATTENTION_KIND [KEY=VALUE...]]]: writes a small, randomly initialised (untrained) FLT molecule
// model predicting U0 (eV, extensive) and gap (eV, intensive) for H, C, N, O and F, with
// per-element reference energies near the atoms' real energies so that U0 predictions have a
// realistic magnitude (tests/common/small_model.hpp, shared with the pipeline tests). The API
// tests and the example consumer test use it rather than the bundled default model because they
// check the API's plumbing (loading, units, batching, threads, files, RDKit, installation), not
// chemistry, and need models of known shape and seed. KEY=VALUE arguments add metadata entries
// (e.g. the training.conformer_* entries a trained model carries).
#include "../common/small_model.hpp"
#include "models/model_io.hpp"

#include <cstdint>
#include <cstdio>
#include <exception>
#include <map>
#include <stdexcept>
#include <string>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: make_test_model OUT.flt [SEED [ATTENTION_KIND [KEY=VALUE...]]]\n");
    return 2;
  }
  try {
    const std::uint64_t seed = argc >= 3 ? std::stoull(argv[2]) : 1;
    const flt::models::AttentionKind kind =
        argc >= 4 ? flt::models::attention_kind_from_string(argv[3]) : flt::models::AttentionKind::kronecker;
    // H, C, N, O and F (the API tests read fluorinated molecules too).
    const flt::models::MoleculeModel<float> model =
        flt::test_support::small_molecule_model(seed, kind, {1, 6, 7, 8, 9});
    std::map<std::string, std::string> metadata = {{"seed", std::to_string(seed)},
                                                   {"note", "random-initialised test model, not trained"}};
    for (int a = 4; a < argc; ++a) {
      const std::string entry = argv[a];
      const auto eq = entry.find('=');
      if (eq == std::string::npos) throw std::invalid_argument("metadata argument without '=': " + entry);
      metadata[entry.substr(0, eq)] = entry.substr(eq + 1);
    }
    flt::models::save_model(argv[1], model, metadata);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_test_model: %s\n", e.what());
    return 1;
  }
  return 0;
}
