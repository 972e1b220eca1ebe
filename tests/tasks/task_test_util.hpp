// Helpers of the src/seq data/task tests: scratch directories, file I/O, a synthetic IDX image
// set (two classes that a model can learn in a few steps) and running the flt program.
#pragma once

#include "tasks/data_idx.hpp"
#include "io/atomic_file.hpp"
#include "io/compressed.hpp"

#include "../common/scratch_dir.hpp"

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace flt::tasks::testing {

using Scratch = flt::test_support::ScratchDir;

inline std::filesystem::path source_dir() { return FLT_SOURCE_DIR; }
inline std::filesystem::path qm9_index() { return source_dir() / "datasets/qm9/qm9_subset_index.csv.gz"; }
inline std::filesystem::path qm9_split() { return source_dir() / "datasets/qm9/split.csv"; }
inline std::filesystem::path fashion_dir() { return "/usr/share/datasets/fashion-mnist"; }

// A learnable synthetic image set in IDX layout (8 x 8 pixels): class 0 is bright in the top half,
// class 1 in the bottom half, with seeded noise; `n` images. Written as
// {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] into `dir`.
inline void write_synthetic_idx(const std::filesystem::path& dir, std::size_t n_train, std::size_t n_test, bool gz = true) {
  auto make = [&](std::size_t n, std::uint64_t seed, const std::string& prefix) {
    std::vector<std::uint8_t> px(n * 64), lb(n);
    std::uint64_t x = seed;
    auto next = [&] {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      return static_cast<std::uint32_t>(x >> 33);
    };
    for (std::size_t i = 0; i < n; ++i) {
      lb[i] = static_cast<std::uint8_t>(next() % 2);
      for (int r = 0; r < 8; ++r)
        for (int c = 0; c < 8; ++c) {
          const bool bright = (r < 4) == (lb[i] == 0);
          px[i * 64 + static_cast<std::size_t>(r * 8 + c)] = static_cast<std::uint8_t>((bright ? 150 : 20) + next() % 80);
        }
    }
    const std::string im = idx_bytes({static_cast<std::uint32_t>(n), 8, 8}, px);
    const std::string la = idx_bytes({static_cast<std::uint32_t>(n)}, lb);
    const std::string ext = gz ? ".gz" : "";
    io::write_file_atomic(dir / (prefix + "-images-idx3-ubyte" + ext), gz ? io::gzip_bytes(im) : im);
    io::write_file_atomic(dir / (prefix + "-labels-idx1-ubyte" + ext), gz ? io::gzip_bytes(la) : la);
  };
  std::filesystem::create_directories(dir);
  make(n_train, 1, "train");
  make(n_test, 2, "t10k");
}

#ifdef FLT_EXE
using ProgramResult = flt::test_support::RunResult;
// Runs `flt <args>` through the shell (args are shell words; quote paths yourself).
inline ProgramResult run_flt(const std::string& args, const std::filesystem::path& dir) {
  return flt::test_support::run_program(FLT_EXE, args, dir);
}
#endif

}  // namespace flt::tasks::testing
