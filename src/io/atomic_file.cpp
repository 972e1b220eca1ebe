#include "io/atomic_file.hpp"

#include "core/error.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <fstream>
#include <iostream>
#include <sstream>
#include <unistd.h>

namespace flt::io {
namespace {

std::string os_reason(const std::string& what) {
  const int err = errno;
  return what + ": " + std::strerror(err);
}

// Closes a descriptor and removes the temporary file unless released (exception safety).
struct TempFile {
  int fd = -1;
  std::string name;
  bool keep = false;
  ~TempFile() {
    if (fd >= 0) ::close(fd);
    if (!keep && !name.empty()) ::unlink(name.c_str());
  }
};

// Creates the temporary file next to `target` (so that rename() stays within one file system),
// readable like a file created with open(..., 0666) under the current umask (mkstemp makes 0600).
void create_temporary(const std::string& target, const std::filesystem::path& dir, const std::filesystem::path& leaf,
                      TempFile& tmp) {
  std::string temp_leaf = ".";  // appended piecewise: GCC 12 warns falsely on "." + string + "..."
  temp_leaf += leaf.string();
  temp_leaf += ".tmp-XXXXXX";
  tmp.name = (dir / temp_leaf).string();
  tmp.fd = ::mkstemp(tmp.name.data());
  if (tmp.fd < 0) {
    const std::string reason = os_reason("cannot create a temporary file in " + dir.string());
    tmp.name.clear();
    throw IoError(target, reason);
  }
  const mode_t mask = ::umask(0);
  ::umask(mask);
  if (::fchmod(tmp.fd, 0666 & ~mask) != 0) throw IoError(target, os_reason("fchmod failed"));
}

std::filesystem::path directory_of(const std::filesystem::path& path) {
  std::filesystem::path dir = path.parent_path();
  return dir.empty() ? std::filesystem::path(".") : dir;
}

// fsync the temporary (through `fd`, open on it), close it, rename it over `target` and persist
// the directory entry (failure of that last fsync does not affect the content's correctness).
void publish(const std::string& target, const std::filesystem::path& dir, TempFile& tmp) {
  if (::fsync(tmp.fd) != 0) throw IoError(target, os_reason("fsync failed"));
  if (::close(tmp.fd) != 0) {
    tmp.fd = -1;
    throw IoError(target, os_reason("close failed"));
  }
  tmp.fd = -1;
  if (::rename(tmp.name.c_str(), target.c_str()) != 0) throw IoError(target, os_reason("rename failed"));
  tmp.keep = true;
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace

void write_file_atomic(const std::filesystem::path& path, std::string_view bytes) {
  const std::string target = path.string();
  if (target.empty()) throw IoError(target, "empty output path");
  const std::filesystem::path dir = directory_of(path);
  TempFile tmp;
  create_temporary(target, dir, path.filename(), tmp);
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(tmp.fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw IoError(target, os_reason("write failed"));
    }
    done += static_cast<std::size_t>(n);
  }
  publish(target, dir, tmp);
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(path.string(), os_reason("cannot open for reading"));
  std::ostringstream content;
  content << in.rdbuf();
  if (in.bad()) throw IoError(path.string(), "read failed");
  return content.str();
}

struct AtomicOutputFile::Temporary {
  TempFile file;
  std::ofstream stream;
};

AtomicOutputFile::AtomicOutputFile(const std::filesystem::path& path) : path_(path.string()) {
  if (path_ == "-") return;
  if (path_.empty()) throw IoError(path_, "empty output path");
  temp_ = std::make_unique<Temporary>();
  create_temporary(path_, directory_of(path_), std::filesystem::path(path_).filename(), temp_->file);
  temp_->stream.open(temp_->file.name, std::ios::binary | std::ios::trunc);
  if (!temp_->stream) throw IoError(path_, "cannot open the temporary file " + temp_->file.name);
}

AtomicOutputFile::~AtomicOutputFile() = default;

std::ostream& AtomicOutputFile::stream() noexcept { return temp_ ? static_cast<std::ostream&>(temp_->stream) : std::cout; }

void AtomicOutputFile::commit() {
  if (committed_) return;
  std::ostream& out = stream();
  out.flush();
  if (!out) throw IoError(path_, "write error");
  if (temp_) {
    temp_->stream.close();
    if (!temp_->stream) throw IoError(path_, "write error while closing " + temp_->file.name);
    // The descriptor from mkstemp is open on the same file: fsync through it reaches the stream's data.
    publish(path_, directory_of(path_), temp_->file);
  }
  committed_ = true;
}

}  // namespace flt::io
