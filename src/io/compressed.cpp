#include "io/compressed.hpp"

#include "core/error.hpp"

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

constexpr std::size_t kBuffer = 1 << 16;

// Decompresses a gzip file (RFC 1952: members one after another, each a header, raw deflate data
// and a footer with CRC-32 and length) with zlib, parsing headers and footers here so that every
// byte decompressed before a problem is delivered and the problem named: a truncated or corrupt
// member, a CRC mismatch, bytes after the last member. Zero bytes after the last member (tape or
// block padding) end the file without error, as gzip(1) treats them. The length field (ISIZE) is
// not checked: the CRC-32 covers the data. A problem ends the data (underflow returns EOF) and
// sets the owning stream's badbit, with the reason kept here: not an exception from underflow,
// which istream::read would turn into badbit while reporting nothing of the bytes it had copied.
class GzipBuf final : public std::streambuf {
 public:
  explicit GzipBuf(std::istream& file) : file_(file), in_(kBuffer), out_(kBuffer) {
    if (inflateInit2(&zs_, -MAX_WBITS) != Z_OK) throw IoError("gzip", "zlib inflateInit2 failed");
  }
  ~GzipBuf() override { inflateEnd(&zs_); }
  GzipBuf(const GzipBuf&) = delete;
  GzipBuf& operator=(const GzipBuf&) = delete;
  const std::string& failure() const noexcept { return failure_; }
  // The stream reading this buffer, whose badbit a problem sets.
  void set_owner(std::istream* owner) noexcept { owner_ = owner; }

 protected:
  int_type underflow() override {
    if (gptr() < egptr()) return traits_type::to_int_type(*gptr());
    if (!failure_.empty() || done_) return traits_type::eof();
    if (!pending_.empty()) return fail(pending_);  // found after the bytes delivered last
    std::size_t got = 0;
    try {
      got = produce();
    } catch (const Failure& f) {
      return fail(f.reason);
    }
    if (got == 0) return traits_type::eof();
    setg(out_.data(), out_.data(), out_.data() + got);
    return traits_type::to_int_type(*gptr());
  }

 private:
  struct Failure {
    std::string reason;
  };
  enum class State { header, data, footer, between };

  int_type fail(const std::string& reason) {
    failure_ = reason;
    if (owner_ != nullptr) owner_->setstate(std::ios::badbit);
    return traits_type::eof();
  }

  // Input bytes: `have` available after a refill (false at the end of the file).
  bool refill() {
    if (zs_.avail_in > 0) return true;
    file_.read(in_.data(), static_cast<std::streamsize>(in_.size()));
    const auto n = static_cast<uInt>(file_.gcount());
    zs_.next_in = reinterpret_cast<Bytef*>(in_.data());
    zs_.avail_in = n;
    return n > 0;
  }
  int next_byte() {
    if (!refill()) return -1;
    --zs_.avail_in;
    return *zs_.next_in++;
  }
  int peek_byte() { return refill() ? *zs_.next_in : -1; }

  // One member header (the ID bytes included); `first`: the file's first member.
  void read_header(bool first) {
    const auto bad = [&](const char* what) {
      throw Failure{first ? std::string("corrupt gzip stream (") + what + ")"
                          : std::string("trailing garbage after the gzip stream")};
    };
    const int id1 = next_byte(), id2 = next_byte();
    if (id1 != 0x1f || id2 != 0x8b) bad("bad gzip header");
    const int method = next_byte(), flags = next_byte();
    if (method < 0 || flags < 0) bad("bad gzip header");
    if (method != 8) bad("unknown compression method");
    for (int k = 0; k < 6; ++k)  // MTIME, XFL, OS
      if (next_byte() < 0) bad("bad gzip header");
    if (flags & 4) {  // FEXTRA
      const int lo = next_byte(), hi = next_byte();
      if (lo < 0 || hi < 0) bad("bad gzip header");
      for (int k = 0; k < lo + 256 * hi; ++k)
        if (next_byte() < 0) bad("bad gzip header");
    }
    for (const int field : {8, 16})  // FNAME, FCOMMENT: zero-terminated
      if (flags & field)
        for (int c = next_byte();; c = next_byte()) {
          if (c < 0) bad("bad gzip header");
          if (c == 0) break;
        }
    if (flags & 2)  // FHCRC
      for (int k = 0; k < 2; ++k)
        if (next_byte() < 0) bad("bad gzip header");
    inflateReset(&zs_);
    crc_ = crc32(0L, Z_NULL, 0);
    state_ = State::data;
  }

  // Fills out_ with the next decompressed bytes (0 at the end of the file).
  std::size_t produce() {
    for (;;) {
      switch (state_) {
        case State::header:
          read_header(produced_ == 0 && members_ == 0);
          break;
        case State::data: {
          // At the end of the file zlib may still hold output of input it has read (a match cut
          // by the full output buffer): inflate runs without input, and only a call that can make
          // no progress means the stream was cut.
          const bool input = refill();
          zs_.next_out = reinterpret_cast<Bytef*>(out_.data());
          zs_.avail_out = static_cast<uInt>(out_.size());
          const int rc = inflate(&zs_, Z_NO_FLUSH);
          const std::size_t got = out_.size() - zs_.avail_out;
          crc_ = crc32(crc_, reinterpret_cast<const Bytef*>(out_.data()), static_cast<uInt>(got));
          produced_ += got;
          if (rc == Z_STREAM_END) {
            state_ = State::footer;
          } else if (rc == Z_DATA_ERROR) {
            if (got > 0) {
              pending_ = "corrupt gzip stream (invalid deflate data)";
              return got;
            }
            throw Failure{"corrupt gzip stream (invalid deflate data)"};
          } else if (rc == Z_MEM_ERROR) {
            throw Failure{"gzip stream: out of memory"};
          } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
            throw Failure{"corrupt gzip stream (zlib error " + std::to_string(rc) + ")"};
          }
          if (got > 0) return got;
          if (!input) throw Failure{"truncated gzip stream (ends inside the compressed data)"};
          break;
        }
        case State::footer: {
          unsigned long stored = 0;
          for (int k = 0; k < 8; ++k) {
            const int c = next_byte();
            if (c < 0) throw Failure{"truncated gzip stream (ends inside the gzip footer)"};
            if (k < 4) stored |= static_cast<unsigned long>(c) << (8 * k);
          }
          if (stored != crc_) throw Failure{"corrupt gzip stream (CRC-32 mismatch)"};
          ++members_;
          state_ = State::between;
          break;
        }
        case State::between: {
          const int c = peek_byte();
          if (c < 0) {
            done_ = true;
            return 0;
          }
          if (c != 0) {
            state_ = State::header;  // another member (or garbage, which its header tells)
            break;
          }
          // Zero padding: fine when only zeros follow.
          for (int z = next_byte(); z >= 0; z = next_byte())
            if (z != 0) throw Failure{"trailing garbage after the gzip stream"};
          done_ = true;
          return 0;
        }
      }
    }
  }

  std::istream& file_;
  z_stream zs_{};
  std::vector<char> in_, out_;
  State state_ = State::header;
  unsigned long crc_ = 0;
  std::uint64_t produced_ = 0;
  std::size_t members_ = 0;
  bool done_ = false;
  std::string failure_, pending_;
  std::istream* owner_ = nullptr;
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
  std::istream* source = &file;  // the file, or a stream not owned
  std::unique_ptr<GzipBuf> gzip_buf;
  std::unique_ptr<std::istream> gzip_stream;

  // Reads through a gzip decompressor when the source starts with 1f 8b.
  void detect_gzip(const std::string& name) {
    // Look at the first two bytes without consuming them: a file buffer holds both after its
    // first fill, and stdin's buffer puts one byte back, so no seek is needed (pipes work too).
    auto* buf = source->rdbuf();
    if (buf->sgetc() != 0x1f) return;
    buf->sbumpc();
    const bool gzip = buf->sgetc() == 0x8b;
    if (std::streambuf::traits_type::eq_int_type(buf->sungetc(), std::streambuf::traits_type::eof()))
      throw IoError(name, "cannot step back after reading the first byte");
    if (!gzip) return;
    gzip_buf = std::make_unique<GzipBuf>(*source);
    gzip_stream = std::make_unique<std::istream>(gzip_buf.get());
    gzip_buf->set_owner(gzip_stream.get());
  }
};

InputFile::InputFile(const std::filesystem::path& path) : impl_(std::make_unique<Impl>()) {
  impl_->file.rdbuf()->pubsetbuf(impl_->buffer.data(), static_cast<std::streamsize>(impl_->buffer.size()));
  impl_->file.open(path, std::ios::binary);
  if (!impl_->file) throw IoError(path.string(), std::string("cannot open: ") + std::strerror(errno));
  impl_->detect_gzip(path.string());
}

InputFile::InputFile(std::istream& stream, const std::string& name) : impl_(std::make_unique<Impl>()) {
  impl_->source = &stream;
  impl_->detect_gzip(name);
}

InputFile::~InputFile() = default;

std::istream& InputFile::stream() noexcept { return impl_->gzip_stream ? *impl_->gzip_stream : *impl_->source; }

bool InputFile::gzip() const noexcept { return impl_->gzip_buf != nullptr; }

std::uint64_t InputFile::bytes_read() const {
  if (impl_->source != &impl_->file) return 0;
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
