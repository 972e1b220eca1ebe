#include "train/run_dir.hpp"

#include "core/error.hpp"
#include "core/version.hpp"
#include "io/atomic_file.hpp"

#include <cstdio>
#include <system_error>

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

}  // namespace

bool is_run_directory(const fs::path& dir) {
  std::error_code ec;
  return fs::is_directory(dir, ec) && fs::is_regular_file(dir / kRunMarker, ec);
}

void check_run_directory(const fs::path& dir, RunMode mode) {
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

fs::path prepare_run_directory(const fs::path& dir, RunMode mode) {
  check_run_directory(dir, mode);
  if (mode == RunMode::resume) return dir;
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (ec) throw IoError(dir.string(), "cannot create the run directory: " + ec.message());
  } else if (!is_empty_dir(dir) && !holds_only_marker(dir)) {
    for (const auto& entry : fs::directory_iterator(dir)) {
      fs::remove_all(entry.path(), ec);
      if (ec) throw IoError(entry.path().string(), "cannot remove: " + ec.message());
    }
  }
  write_marker(dir);
  return dir;
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
