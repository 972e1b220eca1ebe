#include "train/run_dir.hpp"

#include "core/error.hpp"
#include "core/log.hpp"
#include "core/version.hpp"
#include "io/atomic_file.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>
#include <utility>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace flt::train {

using io::write_file_atomic;
namespace fs = std::filesystem;
namespace {

void write_marker(const fs::path& dir) {
  write_file_atomic(dir / kRunMarker, std::string("flt run directory (flt ") + version() + ")\n");
}

bool is_empty_dir(const fs::path& dir) {
  std::error_code ec;
  const bool empty = fs::is_empty(dir, ec);
  if (ec) throw IoError(dir.string(), "cannot list the directory: " + ec.message());
  return empty;
}

// A run directory that holds nothing but its marker: a run that stopped before writing anything
// (e.g. on bad input). Reusing it loses nothing.
bool holds_only_marker(const fs::path& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().filename() != kRunMarker) return false;
  }
  return !ec;
}

ConfigError locked_by_another_run(const fs::path& dir) {
  return ConfigError(dir.string() + ": another flt run is using this run directory (it holds its lock); wait for "
                                    "it to finish or choose another --out");
}

}  // namespace

RunDirectoryLock::RunDirectoryLock(const fs::path& dir) : dir_(dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw IoError(dir.string(), std::string("cannot open the run directory: ") + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
    fd_ = fd;
    return;
  }
  const int error = errno;
  ::close(fd);
  if (error == EWOULDBLOCK) throw locked_by_another_run(dir);
  log_warning(dir.string(), ": cannot lock the run directory (", std::strerror(error),
              "); going on unlocked: make sure no other run uses it");
}

RunDirectoryLock::~RunDirectoryLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

RunDirectoryLock::RunDirectoryLock(RunDirectoryLock&& other) noexcept
    : dir_(std::move(other.dir_)), fd_(std::exchange(other.fd_, -1)) {}

RunDirectoryLock& RunDirectoryLock::operator=(RunDirectoryLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    dir_ = std::move(other.dir_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

bool is_run_directory(const fs::path& dir) {
  std::error_code ec;
  return fs::is_directory(dir, ec) && fs::is_regular_file(dir / kRunMarker, ec);
}

namespace {

// check_run_directory without the lock probe (for the holder of the lock).
void check_contents(const fs::path& dir, RunMode mode) {
  std::error_code ec;
  const bool exists = fs::exists(dir, ec);
  if (ec) throw IoError(dir.string(), "cannot access: " + ec.message());
  if (exists && !fs::is_directory(dir, ec)) throw ConfigError(dir.string() + ": exists and is not a directory");
  if (mode == RunMode::resume) {
    if (!exists) throw ConfigError(dir.string() + ": no such run directory to resume");
    if (!is_run_directory(dir))
      throw ConfigError(dir.string() + ": not an flt run directory (no " + kRunMarker + "), nothing to resume");
    return;
  }
  if (exists && !is_empty_dir(dir) && !holds_only_marker(dir)) {
    if (mode == RunMode::fresh)
      throw ConfigError(dir.string() + ": run directory exists and is not empty (use --overwrite to replace it or "
                                       "--resume to continue it)");
    if (!is_run_directory(dir))
      throw ConfigError(dir.string() + ": not an flt run directory (no " + kRunMarker +
                        "); refusing to delete its contents");
  }
}

}  // namespace

void check_run_directory(const fs::path& dir, RunMode mode) {
  check_contents(dir, mode);
  std::error_code ec;
  if (fs::is_directory(dir, ec)) RunDirectoryLock probe(dir);  // in use: refused now, not after the inputs are read
}

RunDirectoryLock prepare_run_directory(const fs::path& dir, RunMode mode) {
  check_run_directory(dir, mode);
  std::error_code ec;
  if (mode != RunMode::resume && !fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (ec) throw IoError(dir.string(), "cannot create the run directory: " + ec.message());
  }
  RunDirectoryLock lock(dir);
  // Checked again under the lock: another run may have prepared it since the check above.
  check_contents(dir, mode);
  if (mode == RunMode::resume) return lock;
  if (!is_empty_dir(dir) && !holds_only_marker(dir)) {
    for (const auto& entry : fs::directory_iterator(dir)) {
      fs::remove_all(entry.path(), ec);
      if (ec) throw IoError(entry.path().string(), "cannot remove: " + ec.message());
    }
  }
  write_marker(dir);
  return lock;
}

fs::path new_run_directory(const fs::path& parent, std::string_view prefix) {
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) throw IoError(parent.string(), "cannot create: " + ec.message());
  for (int i = 1; i < 100000; ++i) {
    char number[16];
    std::snprintf(number, sizeof number, "%03d", i);
    std::string leaf(prefix);
    leaf += '-';
    leaf += number;
    const fs::path dir = parent / leaf;
    if (fs::create_directory(dir, ec)) {  // false (no error) if it already exists
      write_marker(dir);
      return dir;
    }
    if (ec) throw IoError(dir.string(), "cannot create: " + ec.message());
  }
  throw IoError(parent.string(), "no free run directory name");
}

}  // namespace flt::train
