// libFuzzer target: the SDF/MOL front end (RDKit ForwardSDMolSupplier behind flt's record
// accounting, hydrogen handling and geometry checks). The first byte picks options
// (sanitize, add hydrogens, 2-D records accepted or refused); the rest is the file. Conformer
// generation is left out: ETKDG on random graphs is slow and is RDKit's code, not the front end.
#include "chem/reader.hpp"
#include "core/error.hpp"
#include "core/log.hpp"

#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool quiet = [] {
    flt::set_log_sink(flt::null_log_sink());
    return true;
  }();
  (void)quiet;
  if (size == 0) return 0;
  flt::chem::ReadOptions options;
  const std::uint8_t mode = data[0];
  options.format = flt::chem::Format::sdf;
  options.sanitize = (mode & 1) == 0;
  options.add_hydrogens = (mode & 2) == 0;
  options.missing_3d = (mode & 4) == 0 ? flt::chem::Missing3D::accept : flt::chem::Missing3D::error;
  std::istringstream in(std::string(reinterpret_cast<const char*>(data) + 1, size - 1));
  auto reader = flt::chem::MoleculeReader::from_stream(in, "fuzz", options);
  for (int guard = 0; guard < 100000; ++guard) {
    try {
      auto points = reader->next();
      if (!points) break;
      const auto n = points->size();
      if (n == 0 || static_cast<std::size_t>(points->positions.rows()) != n ||
          points->formal_charges.size() != n || points->record == 0) {
        std::abort();
      }
      for (int z : points->atomic_numbers) {
        if (z < 1 || z > 118) std::abort();
      }
    } catch (const flt::InputError&) {
    }
  }
  return 0;
}
