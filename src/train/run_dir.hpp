// Run directories: every training run writes into its own directory (--out). An existing
// non-empty directory is never reused unless the caller asks: --resume continues the run in it,
// --overwrite replaces it, and only if it is an flt run directory (it holds the marker file
// ".flt-run"), so a mistyped --out can never wipe an unrelated folder.
#pragma once

#include <filesystem>
#include <string_view>

namespace flt::train {

inline constexpr const char* kRunMarker = ".flt-run";

enum class RunMode { fresh, overwrite, resume };

// An exclusive advisory lock (flock(2)) on a run directory, held by the run that writes into it so
// that a second run (a concurrent --overwrite or --resume of the same --out) is refused instead of
// emptying or interleaving with it. Released when destroyed or when the process ends (also on a
// crash). On file systems without flock (some network mounts) the run goes on unlocked, with a
// warning.
class RunDirectoryLock {
 public:
  RunDirectoryLock() = default;
  // Locks the existing directory `dir`; throws ConfigError when another process holds the lock.
  explicit RunDirectoryLock(const std::filesystem::path& dir);
  ~RunDirectoryLock();
  RunDirectoryLock(RunDirectoryLock&& other) noexcept;
  RunDirectoryLock& operator=(RunDirectoryLock&& other) noexcept;
  RunDirectoryLock(const RunDirectoryLock&) = delete;
  RunDirectoryLock& operator=(const RunDirectoryLock&) = delete;

  const std::filesystem::path& path() const noexcept { return dir_; }
  bool locked() const noexcept { return fd_ >= 0; }

 private:
  std::filesystem::path dir_;
  int fd_ = -1;
};

// Prepares `dir` for a run and returns it:
//   fresh:     create it (with parents) if missing; an existing empty directory, or a run
//              directory holding only its marker (a run that stopped before writing anything),
//              is used; any other non-empty one is a ConfigError suggesting --overwrite or --resume.
//   overwrite: like fresh, but an existing flt run directory is emptied first; a non-empty
//              directory without the marker is refused (ConfigError).
//   resume:    the directory must exist and hold the marker (ConfigError otherwise); untouched.
// The marker is written in fresh and overwrite modes. The directory is locked (above) before
// anything in it changes, and the lock is returned: keep it for the whole run. A directory locked
// by another run is a ConfigError. OS failures throw flt::IoError.
RunDirectoryLock prepare_run_directory(const std::filesystem::path& dir, RunMode mode);

// Refuses (the same errors) what prepare_run_directory would refuse, a directory another run holds
// locked included, changing nothing: a run checks
// its directory at once and prepares it (emptying a directory it overwrites) only when it is about
// to start writing, after its inputs and options have been checked, so a run that fails on its
// inputs leaves the previous run in place.
void check_run_directory(const std::filesystem::path& dir, RunMode mode);

// Creates and returns a new directory parent/<prefix>-NNN (001, 002, ...: the first number not yet
// taken; creation is atomic, so two concurrent runs never share one), with the marker.
std::filesystem::path new_run_directory(const std::filesystem::path& parent, std::string_view prefix = "run");

bool is_run_directory(const std::filesystem::path& dir);

}  // namespace flt::train
