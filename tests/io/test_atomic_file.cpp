// Atomic file writes (io/atomic_file.hpp): the destination holds the old content until commit(),
// no temporary file is left behind, and failures name the path; symbolic links are followed,
// FIFOs and devices written in place, directories refused.
#include "../common/scratch_dir.hpp"
#include "core/error.hpp"
#include "io/atomic_file.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <thread>

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

TEST_CASE("atomic output file: links are followed, FIFOs written in place, directories refused",
          "[io][atomic][errors]") {
  flt::test_support::ScratchDir dir("atomic-special");
  // A symbolic link: the file it names gets the content, the link stays a link.
  const fs::path target = dir / "real.csv", link = dir / "link.csv";
  write_file_atomic(target, "old\n");
  fs::create_symlink("real.csv", link);
  {
    AtomicOutputFile out(link);
    out.stream() << "new\n";
    out.commit();
  }
  CHECK(fs::is_symlink(fs::symlink_status(link)));
  CHECK(read_file(target) == "new\n");
  write_file_atomic(link, "again\n");
  CHECK(fs::is_symlink(fs::symlink_status(link)));
  CHECK(read_file(target) == "again\n");
  CHECK(other_entries(dir.path(), "real.csv") == 1);  // the link; no temporary left


  // A FIFO (like /dev/null or a device: not a regular file) is written to, not replaced.
  const fs::path fifo = dir / "pipe", spare = dir / "pipe-spare";
  REQUIRE(::mkfifo(spare.c_str(), 0600) == 0);
  fs::create_hard_link(spare, fifo);  // the same FIFO under a second name
  std::string received;
  std::thread reader([&] { received = read_file(fifo); });
  {
    AtomicOutputFile out(fifo);
    out.stream() << "through the pipe\n";
    out.commit();
  }
  // Were the FIFO replaced instead of written, the reader could still wait on it: a writer that
  // opens and closes it through its other name ends that wait (no reader left: ENXIO, harmless).
  const int fd = ::open(spare.c_str(), O_WRONLY | O_NONBLOCK);
  if (fd >= 0) ::close(fd);
  reader.join();
  CHECK(received == "through the pipe\n");
  CHECK(fs::is_fifo(fs::status(fifo)));

  // A directory is refused when the file is opened, before anything is written.
  fs::create_directory(dir / "adir.csv");
  CHECK_THROWS_WITH(AtomicOutputFile(dir / "adir.csv"), Catch::Contains("is a directory"));
  CHECK_THROWS_WITH(write_file_atomic(dir / "adir.csv", "x"), Catch::Contains("is a directory"));
  CHECK_THROWS_WITH(read_file(dir / "adir.csv"), Catch::Contains("is a directory"));  // not ""
}
