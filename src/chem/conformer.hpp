// 3-D conformer generation for records without coordinates (2-D SD records, SMILES): RDKit's
// ETKDGv3 with a seeded random-coordinate fallback and a bounded number of attempts, optionally
// followed by an MMFF94 clean-up. The molecule must already carry its hydrogens as atoms.
//
//   flt::chem::ConformerOptions options;           // seed 42, RDKit's attempt bound, no clean-up
//   if (auto why = flt::chem::generate_conformer(mol, options)) reject(*why);
#pragma once

#include "core/log.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace RDKit {
class RWMol;
}

namespace flt::chem {

// Force-field clean-up after embedding.
enum class Optimize {
  none,  // the ETKDG geometry as embedded (default)
  mmff,  // MMFF94 minimisation (RDKit MMFFOptimizeMolecule); molecules without MMFF94 parameters
         // keep their ETKDG geometry, with a warning
};

struct ConformerOptions {
  std::uint32_t seed = 42;  // ETKDG random seed (the same seed gives the same conformer)
  // Embedding attempts per try (RDKit's EmbedParameters::maxIterations); 0 = RDKit's bound,
  // 10 x the number of atoms.
  int max_attempts = 0;
  // When ETKDGv3 fails, try once more from random starting coordinates (useRandomCoords), as
  // RDKit recommends for molecules whose distance-matrix eigen-embedding fails.
  bool random_coords_fallback = true;
  Optimize optimize = Optimize::none;
  int mmff_max_iterations = 2000;  // MMFF minimiser iterations before giving up on convergence
};

// A message of generate_conformer, kept for the caller to log (see `notes` below).
struct ConformerNote {
  LogLevel level;
  std::string text;
};

// Replaces the conformers of `mol` with one generated conformer. Returns nullopt on success, or
// why no conformer could be made (RDKit's messages when it gave any). Logs (info) when the
// random-coordinate fallback was needed and (warning) when MMFF94 has no parameters or does not
// converge; `context` ("file: record 7") starts those messages. With `notes`, those messages are
// appended there instead of logged (callers embedding several molecules on several threads log
// them in record order). Thread-safe for distinct molecules.
std::optional<std::string> generate_conformer(RDKit::RWMol& mol, const ConformerOptions& options,
                                              const std::string& context = {},
                                              std::vector<ConformerNote>* notes = nullptr);

// "none" / "mmff" -> Optimize; throws flt::InvalidArgument otherwise.
Optimize optimize_from_name(const std::string& name);

}  // namespace flt::chem
