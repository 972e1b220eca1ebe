// Helpers shared by the chem tests: data paths and reading everything with a policy.
#pragma once

#include "chem/reader.hpp"
#include "core/error.hpp"
#include "../common/scratch_dir.hpp"

#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

namespace flt::chem::test {

// Real files from Debian packages (tests/data/parser-cases/SOURCE.md, MANIFEST.tsv).
inline std::string parser_case(const std::string& relative) {
  return std::string(FLT_TEST_DATA_DIR) + "/parser-cases/" + relative;
}
// The bundled QM9 subset (datasets/qm9/SOURCE.md), gzip-compressed.
inline std::string qm9_dataset(const std::string& file) {
  return std::string(FLT_DATASETS_DIR) + "/qm9/" + file;
}
inline std::string test_data(const std::string& relative) {
  return std::string(FLT_CHEM_TEST_DATA) + "/" + relative;
}

struct ReadAll {
  std::vector<PointSet> records;
  ReadSummary summary;
};

inline ReadAll read_all(const std::vector<std::string>& inputs, const ReadOptions& options = {}) {
  ReadAll out;
  out.summary = read_molecules(inputs, options, ErrorPolicy::skip,
                               [&](PointSet&& p) { out.records.push_back(std::move(p)); });
  return out;
}

inline ReadAll read_text(const std::string& text, Format format, const ReadOptions& base = {}) {
  ReadOptions options = base;
  options.format = format;
  std::istringstream in(text);
  auto reader = MoleculeReader::from_stream(in, "text", options);
  ReadAll out;
  for (;;) {
    try {
      auto p = reader->next();
      if (!p) break;
      ++out.summary.read;
      out.records.push_back(std::move(*p));
    } catch (const flt::InputError& e) {
      out.summary.skipped.push_back({e.file(), e.record(), e.reason()});
    }
  }
  return out;
}

// A fresh empty directory under the system temp dir, removed by the destructor.
class TempDir : public flt::test_support::ScratchDir {
 public:
  TempDir() : ScratchDir("chem-test") {}
  std::string file(const std::string& name) const { return (path() / name).string(); }
};

}  // namespace flt::chem::test
