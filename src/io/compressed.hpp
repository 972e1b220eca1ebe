// Files that may be gzip-compressed (RFC 1952, concatenated members allowed), decompressed with
// zlib. A file (or standard input) is taken as gzip when it starts with the magic bytes 1f 8b,
// whatever its name. Trailing bytes after the last member that are neither a gzip member nor zero
// padding are an error, as are corrupt and truncated data.
#pragma once

#include <cstdint>
#include <filesystem>
#include <istream>
#include <memory>
#include <string>
#include <string_view>

namespace flt::io {

// True when `bytes` start with the gzip magic bytes 1f 8b.
bool is_gzip(std::string_view bytes) noexcept;

// A file opened for streaming reads, decompressed on the fly when it is gzip. Data that cannot be
// decompressed sets the stream's badbit and failure() says why ("truncated gzip stream (...)",
// "corrupt gzip stream (...)", "trailing garbage after the gzip stream").
class InputFile {
 public:
  // IoError naming the path when the file cannot be opened.
  explicit InputFile(const std::filesystem::path& path);
  // An open stream (standard input), not owned; it must outlive this object. `name` names it in
  // errors.
  InputFile(std::istream& stream, const std::string& name);
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  std::istream& stream() noexcept;
  bool gzip() const noexcept;
  // Bytes of the file consumed so far (compressed bytes for gzip), for progress reports; 0 for
  // a stream.
  std::uint64_t bytes_read() const;
  // Why the stream went bad; empty while it is good (and for plain-file read errors).
  const std::string& failure() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The whole content of a gzip or plain file. IoError if it cannot be read; InputError(path, 0,
// reason) when its gzip data is corrupt, truncated or followed by bytes that are no gzip member.
std::string read_maybe_gzip(const std::filesystem::path& path);

// gzip-compresses bytes: one member at zlib's default level (for tests and tools). Inputs above
// 4 GiB are refused (InvalidArgument).
std::string gzip_bytes(std::string_view bytes);

}  // namespace flt::io
