#include "io/compressed.hpp"

#include "core/error.hpp"

#include <boost/iostreams/filter/gzip.hpp>
#include <boost/iostreams/filtering_streambuf.hpp>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <streambuf>
#include <vector>

namespace flt::io {
namespace {

namespace bio = boost::iostreams;

constexpr std::size_t kBuffer = 1 << 16;

std::string zlib_reason(int code) {
  if (code == bio::zlib::data_error) return "corrupt gzip stream (invalid deflate data)";
  // At the end of the input, inflate returns Z_BUF_ERROR when it still wants data.
  if (code == bio::zlib::buf_error) return "truncated gzip stream (ends inside the compressed data)";
  if (code == bio::zlib::mem_error) return "gzip stream: out of memory";
  return "corrupt gzip stream (zlib error " + std::to_string(code) + ")";
}

// `produced`: bytes already decompressed. A bad header after them is the header of a following
// member that is not there: bytes after the last member.
std::string gzip_reason(const bio::gzip_error& e, std::uint64_t produced) {
  switch (e.error()) {
    case bio::gzip::zlib_error: return zlib_reason(e.zlib_error_code());
    case bio::gzip::bad_crc: return "corrupt gzip stream (CRC-32 mismatch)";
    case bio::gzip::bad_footer: return "truncated gzip stream (ends inside the gzip footer)";
    case bio::gzip::bad_method: return "corrupt gzip stream (unknown compression method)";
    case bio::gzip::bad_header:
      return produced > 0 ? "trailing garbage after the gzip stream"
                          : "corrupt gzip stream (bad gzip header)";
    default: break;
  }
  return "corrupt gzip stream (gzip error " + std::to_string(e.error()) + ")";
}

// Decompresses `file` and remembers why decompression failed. Boost.Iostreams throws from
// underflow; std::istream turns that into badbit and drops the exception, so the reason is kept
// here.
class GzipBuf final : public std::streambuf {
 public:
  explicit GzipBuf(std::istream& file) : buffer_(kBuffer) {
    chain_.push(bio::gzip_decompressor());
    chain_.push(file);
  }
  const std::string& failure() const noexcept { return failure_; }

 protected:
  int_type underflow() override {
    if (gptr() < egptr()) return traits_type::to_int_type(*gptr());
    if (!failure_.empty()) return traits_type::eof();
    std::streamsize got = 0;
    try {
      // One refill of the chain's buffer, then what it holds: an sgetn spanning several refills
      // would lose the bytes already copied when a later refill throws.
      if (traits_type::eq_int_type(chain_.sgetc(), traits_type::eof())) return traits_type::eof();
      const std::streamsize ready = std::max<std::streamsize>(1, chain_.in_avail());
      got = chain_.sgetn(buffer_.data(),
                         std::min(ready, static_cast<std::streamsize>(buffer_.size())));
    } catch (const bio::gzip_error& e) {
      failure_ = gzip_reason(e, produced_);
      throw;
    } catch (const bio::zlib_error& e) {
      failure_ = zlib_reason(e.error());
      throw;
    }
    if (got <= 0) return traits_type::eof();
    produced_ += static_cast<std::uint64_t>(got);
    setg(buffer_.data(), buffer_.data(), buffer_.data() + got);
    return traits_type::to_int_type(*gptr());
  }

 private:
  bio::filtering_streambuf<bio::input> chain_;
  std::vector<char> buffer_;
  std::uint64_t produced_ = 0;
  std::string failure_;
};

const std::string kNoFailure;

}  // namespace

bool is_gzip(std::string_view bytes) noexcept {
  return bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x1f &&
         static_cast<unsigned char>(bytes[1]) == 0x8b;
}

struct InputFile::Impl {
  std::vector<char> buffer = std::vector<char>(kBuffer);
  std::ifstream file;
  std::unique_ptr<GzipBuf> gzip_buf;
  std::unique_ptr<std::istream> gzip_stream;
};

InputFile::InputFile(const std::filesystem::path& path) : impl_(std::make_unique<Impl>()) {
  auto* buf = impl_->file.rdbuf();
  buf->pubsetbuf(impl_->buffer.data(), static_cast<std::streamsize>(impl_->buffer.size()));
  impl_->file.open(path, std::ios::binary);
  if (!impl_->file) throw IoError(path.string(), std::string("cannot open: ") + std::strerror(errno));
  // Look at the first two bytes without consuming them: the file buffer holds both after the
  // first fill, so no seek is needed (pipes work too).
  if (buf->sgetc() != 0x1f) return;
  buf->sbumpc();
  const bool gzip = buf->sgetc() == 0x8b;
  if (std::streambuf::traits_type::eq_int_type(buf->sungetc(), std::streambuf::traits_type::eof())) {
    throw IoError(path.string(), "cannot step back after reading the first byte");
  }
  if (!gzip) return;
  impl_->gzip_buf = std::make_unique<GzipBuf>(impl_->file);
  impl_->gzip_stream = std::make_unique<std::istream>(impl_->gzip_buf.get());
}

InputFile::~InputFile() = default;

std::istream& InputFile::stream() noexcept {
  return impl_->gzip_stream ? *impl_->gzip_stream : static_cast<std::istream&>(impl_->file);
}

bool InputFile::gzip() const noexcept { return impl_->gzip_buf != nullptr; }

std::uint64_t InputFile::bytes_read() const {
  // What was read from disk minus what is still buffered.
  const auto pos = impl_->file.rdbuf()->pubseekoff(0, std::ios_base::cur, std::ios_base::in);
  return pos < 0 ? 0 : static_cast<std::uint64_t>(pos);
}

const std::string& InputFile::failure() const noexcept {
  return impl_->gzip_buf ? impl_->gzip_buf->failure() : kNoFailure;
}

std::string read_maybe_gzip(const std::filesystem::path& path) {
  InputFile file(path);
  std::string out;
  std::vector<char> chunk(kBuffer);
  std::istream& in = file.stream();
  while (in) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    out.append(chunk.data(), static_cast<std::size_t>(in.gcount()));
  }
  if (in.bad()) {
    if (!file.failure().empty()) throw InputError(path.string(), 0, file.failure());
    throw IoError(path.string(), "read failed");
  }
  return out;
}

// zlib directly: instantiating Boost's gzip_compressor trips GCC 12's -Wrestrict inside Boost.
std::string gzip_bytes(std::string_view bytes) {
  if (bytes.size() > std::numeric_limits<uInt>::max())
    throw InvalidArgument("gzip_bytes: input above 4 GiB");
  z_stream zs{};
  // 16 + MAX_WBITS: a gzip wrapper instead of zlib's.
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw InvalidArgument("gzip_bytes: zlib deflateInit2 failed");
  std::string out(deflateBound(&zs, static_cast<uLong>(bytes.size())) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  zs.avail_in = static_cast<uInt>(bytes.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&zs, Z_FINISH);
  const auto written = zs.total_out;
  deflateEnd(&zs);
  if (rc != Z_STREAM_END) throw InvalidArgument("gzip_bytes: zlib deflate failed");
  out.resize(written);
  return out;
}

}  // namespace flt::io
