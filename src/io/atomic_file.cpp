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

// Where an output named `path` goes: a symbolic link is followed to the file it names (which is
// then replaced, the link kept); a directory is refused; `special` is set for an existing file that
// is not a regular one (a device such as /dev/null, a FIFO, a socket), which is written in place:
// renaming a temporary over it would replace the device or pipe with a regular file.
std::filesystem::path resolve_output(const std::string& path, bool& special) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path p(path);
  for (int hops = 0; hops < 40 && fs::is_symlink(fs::symlink_status(p, ec)); ++hops) {
    const fs::path next = fs::read_symlink(p, ec);
    if (ec) throw IoError(path, "cannot read the symbolic link: " + ec.message());
    p = next.is_absolute() ? next : p.parent_path() / next;
  }
  const fs::file_status st = fs::status(p, ec);
  if (fs::is_directory(st)) throw IoError(path, "is a directory");
  special = fs::exists(st) && !fs::is_regular_file(st);
  return p;
}

// Writes `bytes` to an existing non-regular file (device, FIFO) as it is.
void write_in_place(const std::string& path, const std::filesystem::path& target, std::string_view bytes) {
  std::ofstream out(target, std::ios::binary);
  if (!out) throw IoError(path, os_reason("cannot open for writing"));
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) throw IoError(path, "write error");
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

void write_file_atomic(const std::filesystem::path& path_given, std::string_view bytes) {
  if (path_given.empty()) throw IoError(path_given.string(), "empty output path");
  bool special = false;
  const std::filesystem::path path = resolve_output(path_given.string(), special);
  if (special) {
    write_in_place(path_given.string(), path, bytes);
    return;
  }
  const std::string target = path.string();
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
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw IoError(path.string(), "is a directory");
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
  bool special = false;
  target_ = resolve_output(path_, special).string();
  temp_ = std::make_unique<Temporary>();
  if (special) {
    temp_->stream.open(target_, std::ios::binary);
    if (!temp_->stream) throw IoError(path_, os_reason("cannot open for writing"));
    return;
  }
  create_temporary(path_, directory_of(target_), std::filesystem::path(target_).filename(), temp_->file);
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
    if (!temp_->stream)
      throw IoError(path_, "write error while closing " + (temp_->file.name.empty() ? target_ : temp_->file.name));
    // The descriptor from mkstemp is open on the same file: fsync through it reaches the stream's
    // data. A device or FIFO written in place has no temporary.
    if (!temp_->file.name.empty()) publish(target_, directory_of(target_), temp_->file);
  }
  committed_ = true;
}

}  // namespace flt::io
