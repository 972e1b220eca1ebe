// libFuzzer target: the XYZ / extended XYZ / QM9 record parsers. The first byte picks the
// flavour (auto-detected XYZ, forced extended XYZ, forced QM9) and the minimum-distance check;
// the rest is the file. Every record must either parse into a consistent point set or throw
// flt::InputError; anything else (crash, other exception, sanitizer report) is a bug.
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
  options.format = mode % 3 == 0   ? flt::chem::Format::xyz
                   : mode % 3 == 1 ? flt::chem::Format::extxyz
                                   : flt::chem::Format::qm9;
  options.min_distance = (mode & 0x10) != 0 ? 0.0 : 0.1;
  std::istringstream in(std::string(reinterpret_cast<const char*>(data) + 1, size - 1));
  auto reader = flt::chem::MoleculeReader::from_stream(in, "fuzz", options);
  for (int guard = 0; guard < 100000; ++guard) {
    try {
      auto points = reader->next();
      if (!points) break;
      const auto n = points->size();
      if (static_cast<std::size_t>(points->positions.rows()) != n ||
          points->positions.cols() != 3 || points->formal_charges.size() != n) {
        std::abort();
      }
      for (int z : points->atomic_numbers) {
        if (z < 1 || z > 118) std::abort();
      }
      for (const auto& column : points->atom_columns) {
        const auto have = column.type == 'S' ? column.strings.size() : column.values.size();
        if (have != n * static_cast<std::size_t>(column.width)) std::abort();
      }
    } catch (const flt::InputError&) {
      // A bad record: the reader continues with the next one.
    }
  }
  return 0;
}
