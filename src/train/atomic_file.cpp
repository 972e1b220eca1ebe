#include "train/atomic_file.hpp"

#include "core/error.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <fstream>
#include <unistd.h>

namespace flt::train {
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

}  // namespace

void write_file_atomic(const std::filesystem::path& path, std::string_view bytes) {
  const std::string target = path.string();
  if (target.empty()) throw IoError(target, "empty output path");
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  // The temporary lives next to the target so that rename() stays within one file system.
  TempFile tmp;
  std::string temp_leaf = ".";  // appended piecewise: GCC 12 warns falsely on "." + string + "..."
  temp_leaf += path.filename().string();
  temp_leaf += ".tmp-XXXXXX";
  tmp.name = (dir / temp_leaf).string();
  tmp.fd = ::mkstemp(tmp.name.data());
  if (tmp.fd < 0) {
    const std::string reason = os_reason("cannot create a temporary file in " + dir.string());
    tmp.name.clear();
    throw IoError(target, reason);
  }
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(tmp.fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw IoError(target, os_reason("write failed"));
    }
    done += static_cast<std::size_t>(n);
  }
  // Make the file readable like one created with open(..., 0666) under the current umask
  // (mkstemp creates it 0600).
  const mode_t mask = ::umask(0);
  ::umask(mask);
  if (::fchmod(tmp.fd, 0666 & ~mask) != 0) throw IoError(target, os_reason("fchmod failed"));
  if (::fsync(tmp.fd) != 0) throw IoError(target, os_reason("fsync failed"));
  if (::close(tmp.fd) != 0) {
    tmp.fd = -1;
    throw IoError(target, os_reason("close failed"));
  }
  tmp.fd = -1;
  if (::rename(tmp.name.c_str(), target.c_str()) != 0) throw IoError(target, os_reason("rename failed"));
  tmp.keep = true;
  // Persist the directory entry too; failure here is not fatal for correctness of the content.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(path.string(), os_reason("cannot open for reading"));
  std::ostringstream content;
  content << in.rdbuf();
  if (in.bad()) throw IoError(path.string(), "read failed");
  return content.str();
}

AtomicFileWriter::AtomicFileWriter(std::filesystem::path path) : path_(std::move(path)) {}

void AtomicFileWriter::commit() {
  if (committed_) throw InvalidArgument("AtomicFileWriter::commit called twice for " + path_.string());
  write_file_atomic(path_, buffer_.view());
  committed_ = true;
}

}  // namespace flt::train
