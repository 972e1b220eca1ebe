// Atomic file writes (io/atomic_file.hpp): the destination holds the old content until commit(),
// no temporary file is left behind, and failures name the path.
#include "../common/scratch_dir.hpp"
#include "core/error.hpp"
#include "io/atomic_file.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

namespace fs = std::filesystem;
using flt::io::AtomicOutputFile;
using flt::io::read_file;
using flt::io::write_file_atomic;

namespace {

// Names in `dir` other than `keep` (temporary files left behind).
std::size_t other_entries(const fs::path& dir, const std::string& keep) {
  std::size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += e.path().filename() != keep;
  return n;
}

}  // namespace

TEST_CASE("atomic output file: old content until commit, none after an abandoned write", "[io][atomic]") {
  flt::test_support::ScratchDir dir("atomic");
  const fs::path path = dir / "out.csv";
  write_file_atomic(path, "old\n");
  {
    AtomicOutputFile out(path);
    for (int i = 0; i < 20000; ++i) out.stream() << "row " << i << '\n';  // larger than a buffer
    CHECK(read_file(path) == "old\n");  // streamed to the temporary, not to the destination
    CHECK(other_entries(dir.path(), "out.csv") == 1);
    out.commit();
    out.commit();  // idempotent
  }
  const std::string content = read_file(path);
  CHECK(content.rfind("row 0\nrow 1\n", 0) == 0);
  CHECK(content.size() > 100000);
  CHECK(other_entries(dir.path(), "out.csv") == 0);
  {
    AtomicOutputFile abandoned(path);
    abandoned.stream() << "partial";
  }  // destroyed without commit: as if an exception unwound past it
  CHECK(read_file(path) == content);
  CHECK(other_entries(dir.path(), "out.csv") == 0);
}

TEST_CASE("atomic output file: a missing directory is an IoError naming the path", "[io][atomic][errors]") {
  flt::test_support::ScratchDir dir("atomic-missing");
  const fs::path path = dir / "no-such-dir" / "out.csv";
  try {
    AtomicOutputFile out(path);
    FAIL("no error for a missing directory");
  } catch (const flt::IoError& e) {
    CHECK(std::string(e.what()).find(path.string()) != std::string::npos);
  }
  CHECK_THROWS_AS(write_file_atomic(path, "x"), flt::IoError);
}
