// gzip files (io/compressed.hpp): told apart by content, concatenated members, and the errors for
// truncated, corrupt and padded streams; io::crc32 against the gzip footer.
#include "io/checksum.hpp"
#include "io/compressed.hpp"

#include "core/error.hpp"
#include "../common/scratch_dir.hpp"

#include <catch2/catch.hpp>
#include <zlib.h>

#include <fstream>
#include <string>
#include <vector>

using namespace flt;
using flt::test_support::ScratchDir;

namespace {

void write(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

// Text of `n` numbered lines: compresses to several buffers' worth.
std::string lines(int n) {
  std::string text;
  for (int i = 0; i < n; ++i) text += "line " + std::to_string(i) + " " + std::to_string(i * 7919 % 1000) + "\n";
  return text;
}

// The InputError message of read_maybe_gzip(path), "" if none was thrown.
std::string input_error(const std::filesystem::path& path) {
  try {
    io::read_maybe_gzip(path);
  } catch (const InputError& e) {
    CHECK(e.file() == path.string());
    CHECK(e.record() == 0);
    return e.reason();
  }
  return "";
}

}  // namespace

TEST_CASE("gzip: files are told apart by content and read whole or as a stream", "[io][gzip]") {
  ScratchDir dir("io-gzip");
  const std::string text = lines(50000);
  const std::string gz = io::gzip_bytes(text);
  CHECK(io::is_gzip(gz));
  CHECK_FALSE(io::is_gzip(text));
  CHECK(gz.size() < text.size() / 2);

  write(dir / "a.txt", text);
  write(dir / "a.txt.gz", gz);
  write(dir / "no-suffix", gz);         // gzip without the name
  write(dir / "plain.gz", text);        // the name without gzip
  write(dir / "two.gz", io::gzip_bytes(text.substr(0, 1000)) + io::gzip_bytes("") +
                            io::gzip_bytes(text.substr(1000)));
  write(dir / "empty", "");
  write(dir / "one-byte", "\x1f");
  for (const char* name : {"a.txt", "a.txt.gz", "no-suffix", "plain.gz", "two.gz"}) {
    INFO(name);
    CHECK(io::read_maybe_gzip(dir / name) == text);
  }
  CHECK(io::read_maybe_gzip(dir / "empty").empty());
  CHECK(io::read_maybe_gzip(dir / "one-byte") == "\x1f");

  io::InputFile file(dir / "no-suffix");
  CHECK(file.gzip());
  CHECK(file.bytes_read() == 0);
  std::string line;
  std::getline(file.stream(), line);
  CHECK(line == "line 0 0");
  CHECK(file.bytes_read() > 0);
  std::size_t count = 1;
  while (std::getline(file.stream(), line)) ++count;
  CHECK(count == 50000);
  CHECK_FALSE(file.stream().bad());
  CHECK(file.failure().empty());
  CHECK(file.bytes_read() == gz.size());

  io::InputFile plain(dir / "plain.gz");
  CHECK_FALSE(plain.gzip());
  std::getline(plain.stream(), line);
  CHECK(line == "line 0 0");

  CHECK_THROWS_AS(io::InputFile(dir / "missing.gz"), IoError);
  CHECK_THROWS_AS(io::read_maybe_gzip(dir / "missing.gz"), IoError);
}

TEST_CASE("gzip: truncated, corrupt and padded streams are errors naming the reason", "[io][gzip][errors]") {
  ScratchDir dir("io-gzip-bad");
  const std::string text = lines(20000);
  const std::string gz = io::gzip_bytes(text);

  write(dir / "cut", gz.substr(0, gz.size() / 2));
  CHECK(input_error(dir / "cut") == "truncated gzip stream (ends inside the compressed data)");
  write(dir / "cut-footer", gz.substr(0, gz.size() - 3));
  CHECK(input_error(dir / "cut-footer") == "truncated gzip stream (ends inside the gzip footer)");
  write(dir / "cut-header", gz.substr(0, 5));
  CHECK(input_error(dir / "cut-header") == "corrupt gzip stream (bad gzip header)");

  write(dir / "garbage", gz + "garbage!");
  CHECK(input_error(dir / "garbage") == "trailing garbage after the gzip stream");
  // Zero padding after the last member (tape and block padding) ends the file, as gzip(1) reads it;
  // anything after the zeros is garbage again.
  write(dir / "zeros", gz + std::string(512, '\0'));
  CHECK(input_error(dir / "zeros").empty());
  CHECK(io::read_maybe_gzip(dir / "zeros") == text);
  write(dir / "zeros-garbage", gz + std::string(16, '\0') + "x");
  CHECK(input_error(dir / "zeros-garbage") == "trailing garbage after the gzip stream");
  // Two members: one stream. Everything decompressed before a problem is delivered, every line of
  // the data, then the error.
  write(dir / "two", gz + io::gzip_bytes("tail\n"));
  CHECK(io::read_maybe_gzip(dir / "two") == text + "tail\n");
  {
    io::InputFile garbage(dir / "garbage");
    std::string line;
    std::size_t count = 0;
    while (std::getline(garbage.stream(), line)) ++count;
    CHECK(count == 20000);
    CHECK(garbage.stream().bad());
    CHECK(garbage.failure() == "trailing garbage after the gzip stream");
  }

  std::string bad = gz;
  bad[gz.size() - 8] ^= 0x01;  // CRC-32 in the footer
  write(dir / "crc", bad);
  CHECK(input_error(dir / "crc") == "corrupt gzip stream (CRC-32 mismatch)");
  // The footer's CRC-32 is checked, not its length field (ISIZE): the CRC covers the data, so only
  // a damaged ISIZE itself goes unnoticed.
  bad = gz;
  bad[gz.size() - 4] ^= 0x01;
  write(dir / "length", bad);
  CHECK(input_error(dir / "length").empty());
  bad = gz;
  bad[10] = static_cast<char>(0xFF);  // first deflate block header: reserved block type 3
  write(dir / "deflate", bad);
  CHECK(input_error(dir / "deflate") == "corrupt gzip stream (invalid deflate data)");
  bad = gz;
  bad[2] = 7;  // compression method other than deflate (8)
  write(dir / "method", bad);
  CHECK(input_error(dir / "method").find("corrupt gzip stream") == 0);

  // The stream goes bad with the same reason.
  io::InputFile file(dir / "cut");
  std::string line;
  std::size_t count = 0;
  while (std::getline(file.stream(), line)) ++count;
  CHECK(file.stream().bad());
  CHECK(count > 1000);
  CHECK(file.failure() == "truncated gzip stream (ends inside the compressed data)");
}

TEST_CASE("gzip: the footer holds io::crc32 of the data", "[io][gzip][checksum]") {
  // RFC 1952: the footer's first four bytes are the CRC-32 of the data, little-endian.
  const std::string text = lines(3000);
  const std::string gz = io::gzip_bytes(text);
  std::uint32_t footer = 0;
  for (int i = 3; i >= 0; --i) {
    footer = (footer << 8) | static_cast<unsigned char>(gz[gz.size() - 8 + static_cast<std::size_t>(i)]);
  }
  CHECK(footer == io::crc32(text));
}

TEST_CASE("gzip: a stream cut inside the compressed data gives every byte before the cut",
          "[io][gzip][errors]") {
  // Highly compressible data: a few input bytes hold many long matches, so zlib still has output
  // to give when the cut file has no more input.
  std::string text = lines(2000);
  text += std::string(3000000, 'a');
  const std::string gz = io::gzip_bytes(text);
  for (const std::size_t keep : {gz.size() / 2, gz.size() - 40}) {
    INFO("kept " << keep << " of " << gz.size() << " bytes");
    const std::string cut = gz.substr(0, keep);
    // What zlib itself gets from those bytes (raw inflate after the 10-byte header).
    z_stream zs{};
    REQUIRE(inflateInit2(&zs, -MAX_WBITS) == Z_OK);
    std::string expected(text.size(), '\0');
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(cut.data()) + 10);
    zs.avail_in = static_cast<uInt>(cut.size() - 10);
    zs.next_out = reinterpret_cast<Bytef*>(expected.data());
    zs.avail_out = static_cast<uInt>(expected.size());
    inflate(&zs, Z_SYNC_FLUSH);
    expected.resize(expected.size() - zs.avail_out);
    inflateEnd(&zs);
    REQUIRE(!expected.empty());

    ScratchDir dir("io-gzip-cut");
    write(dir / "cut.gz", cut);
    io::InputFile file(dir / "cut.gz");
    std::string got;
    std::vector<char> chunk(1000);
    while (file.stream()) {
      file.stream().read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      got.append(chunk.data(), static_cast<std::size_t>(file.stream().gcount()));
    }
    CHECK(got.size() == expected.size());
    CHECK(got == expected);
    CHECK(file.failure() == "truncated gzip stream (ends inside the compressed data)");
  }
}
