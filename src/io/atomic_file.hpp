// Atomic file replacement: write to a temporary file in the destination's directory, fsync it,
// rename it over the destination, then fsync the directory. A reader (or a run killed with SIGKILL
// half-way) therefore sees either the complete old file or the complete new one, never a mix.
#pragma once

#include <filesystem>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>

namespace flt::io {

// Writes `bytes` to `path` atomically (see above). Throws flt::IoError naming `path` and the
// operating-system reason (directory missing, permission denied, disk full, ...).
void write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

// Reads a whole file into a string. Throws flt::IoError when it cannot be opened or read.
std::string read_file(const std::filesystem::path& path);

// A stream whose content replaces `path` atomically on commit(), written to its temporary file as
// it goes (so memory does not grow with the output): commit() flushes and checks the stream, then
// fsyncs, renames and fsyncs the directory as write_file_atomic does. Destroyed without commit()
// (an exception unwound past it), the temporary file is removed and `path` is left as it was. The
// path "-" is standard output (commit() only flushes). Throws flt::IoError naming `path`.
// Both: a symbolic link is followed and the file it names replaced (the link stays); an existing
// device or FIFO (e.g. /dev/null) is written in place, not replaced; a directory is refused at
// once (before the caller does any work).
// Usage: AtomicOutputFile out(path); out.stream() << ...; out.commit();
class AtomicOutputFile {
 public:
  explicit AtomicOutputFile(const std::filesystem::path& path);
  AtomicOutputFile(const AtomicOutputFile&) = delete;
  AtomicOutputFile& operator=(const AtomicOutputFile&) = delete;
  ~AtomicOutputFile();

  std::ostream& stream() noexcept;
  const std::string& path() const noexcept { return path_; }
  void commit();  // idempotent

 private:
  struct Temporary;
  std::string path_;
  std::string target_;  // path_ with symbolic links followed
  std::unique_ptr<Temporary> temp_;
  bool committed_ = false;
};

}  // namespace flt::io
