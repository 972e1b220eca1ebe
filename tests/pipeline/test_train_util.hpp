// Helpers of the dataset/train tests: scratch directories and running the flt program.
#pragma once

#include "../common/scratch_dir.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace flt::pipeline::testing {

using ScratchDir = flt::test_support::ScratchDir;
using flt::test_support::RunResult;
using flt::test_support::slurp;

// Runs `flt <args>` through the shell with stdout and stderr captured in `dir`.
inline RunResult run_flt(const std::string& args, const std::filesystem::path& dir) {
  return flt::test_support::run_program(FLT_EXE, args, dir);
}

}  // namespace flt::pipeline::testing
