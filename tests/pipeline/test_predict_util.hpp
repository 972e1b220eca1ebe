// Shared helpers of the prediction tests: small models built with the model API and saved with the
// model-file writer, scratch directories, running the real flt program, QM9 records.
#pragma once

#include "chem/reader.hpp"
#include "models/molecule_model.hpp"
#include "../common/scratch_dir.hpp"
#include "../common/small_model.hpp"
#include "models/model_io.hpp"
#include "pipeline/predict.hpp"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace flt::pipeline::testing {

namespace fs = std::filesystem;

using TempDir = flt::test_support::ScratchDir;
using flt::test_support::RunResult;
using flt::test_support::slurp;

// Runs `FLT_EXE args` through the shell (args are shell words; quote paths yourself), with
// `env` ("NAME=value ...") in front; captures stdout and stderr.
inline RunResult run_flt(const std::string& args, const TempDir& dir, const std::string& env = "") {
  return flt::test_support::run_program(FLT_EXE, args, dir.path(), env);
}

inline std::string quoted(const std::string& s) { return "'" + s + "'"; }

// The shared small test model (tests/common/small_model.hpp): U0 and gap in eV for H, C, N, O.
inline models::MoleculeModel<float> small_model(std::uint64_t seed,
                                                models::AttentionKind kind = models::AttentionKind::kronecker) {
  return flt::test_support::small_molecule_model(seed, kind, {1, 6, 7, 8});
}

inline std::string save_small_model(const TempDir& dir, const std::string& name, std::uint64_t seed,
                                    models::AttentionKind kind = models::AttentionKind::kronecker) {
  const std::string path = dir / name;
  models::save_model(path, small_model(seed, kind), {{"seed", std::to_string(seed)}, {"note", "test model"}});
  return path;
}

// The first `count` records of the bundled QM9 subset, written as a QM9-format .xyz file.
inline std::string qm9_records(const TempDir& dir, std::size_t count, const std::string& name = "qm9.xyz") {
  const std::string source = std::string(FLT_SOURCE_DIR) + "/datasets/qm9/qm9_subset.xyz.gz";
  const std::string path = dir / name;
  const std::string cmd = "gzip -dc '" + source + "'";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("cannot run " + cmd);
  std::ofstream out(path);
  char buf[4096];
  std::size_t records = 0, remaining = 0;
  while (records < count && std::fgets(buf, sizeof buf, pipe) != nullptr) {
    out << buf;
    if (remaining == 0) {  // a count line starts a record: count + comment + atoms
      remaining = std::stoul(buf) + 1;
    } else if (--remaining == 0) {
      ++records;
    }
  }
  ::pclose(pipe);
  return path;
}

inline std::vector<chem::PointSet> read_all(const std::string& path, bool keep_molecule = false) {
  chem::ReadOptions o;
  o.keep_molecule = keep_molecule;
  std::vector<chem::PointSet> out;
  chem::read_molecules({path}, o, chem::ErrorPolicy::skip, [&](chem::PointSet&& p) { out.push_back(std::move(p)); });
  return out;
}

inline const std::string kCdk2 = std::string(FLT_TEST_DATA_DIR) + "/parser-cases/rdkit-data-deb/cdk2.sdf";

}  // namespace flt::pipeline::testing
