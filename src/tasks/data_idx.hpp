// Reader for the IDX format of MNIST and Fashion-MNIST (LeCun et al., http://yann.lecun.com/exdb/mnist/;
// Fashion-MNIST: Xiao, Rasul, Vollgraf 2017, same layout), plain or gzip-compressed.
//
// An IDX file (all integers big-endian):
//   bytes 0-1  zero
//   byte  2    element type: 0x08 unsigned byte (the only one MNIST-style datasets use and the only
//              one accepted here; 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64 are rejected)
//   byte  3    number of dimensions d (>= 1)
//   then d 32-bit sizes, then prod(sizes) elements, row-major, and nothing else.
// Image files are d = 3 (count, rows, cols; magic 0x00000803), label files d = 1 (count; magic
// 0x00000801). Every header field is validated and the element count must match the file length
// exactly (a truncated or padded file is an error), so a corrupt download cannot pass silently.
//
// Files are read through io::read_maybe_gzip (io/compressed.hpp): gzip when they start with the
// magic bytes 1f 8b (whatever their name), concatenated members decompressed in turn (RFC 1952).
// Errors are flt::InputError naming the file and the reason (record 0: the file as a whole); OS
// failures are flt::IoError.
#pragma once

#include "core/error.hpp"

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace flt::tasks {

inline constexpr std::uint8_t kIdxUnsignedByte = 0x08;
// Refuse files whose declared element count would not fit a sane amount of memory (4 GiB):
// a corrupted size field must give an error, not an attempt to allocate terabytes.
inline constexpr std::uint64_t kIdxMaxElements = 4ull << 30;

// One IDX array of unsigned bytes.
struct IdxArray {
  std::string source;                // the file it was read from (for messages)
  std::vector<std::uint32_t> dims;   // d sizes, outermost first
  std::vector<std::uint8_t> data;    // prod(dims) bytes, row-major
  std::uint64_t elements() const noexcept;
};

// Parses IDX bytes (already decompressed). `expected_dims` > 0 requires that many dimensions.
// Throws InputError(source, 0, reason) for: fewer than 4 header bytes, nonzero leading bytes, an
// element type other than 0x08, zero dimensions or not `expected_dims`, a header shorter than its
// d sizes, a zero size, an element count above kIdxMaxElements, or a data length that differs
// from prod(sizes) (the message gives both numbers).
IdxArray parse_idx(std::string_view bytes, const std::string& source, int expected_dims = 0);

// Reads a file (gzip or plain, see above) and parses it. IoError if it cannot be read; InputError
// for a corrupt, truncated or padded gzip stream or a malformed IDX array.
IdxArray read_idx(const std::filesystem::path& path, int expected_dims = 0);

// Writes IDX bytes of unsigned-byte data (for tests and tools): header + data.
std::string idx_bytes(const std::vector<std::uint32_t>& dims, const std::vector<std::uint8_t>& data);

// An image classification set: `count` images of rows x cols grey values (0-255) and their labels.
struct ImageSet {
  std::string images_source, labels_source;
  std::size_t count = 0, rows = 0, cols = 0;
  std::vector<std::uint8_t> pixels;  // count * rows * cols, image-major, row-major within an image
  std::vector<std::uint8_t> labels;  // count entries, each < num_classes
  int num_classes = 0;

  const std::uint8_t* image(std::size_t i) const { return pixels.data() + i * rows * cols; }
};

// Reads an images file (3 dimensions) and a labels file (1 dimension) and checks that they agree:
// same count (InputError naming both files and both counts), every label < num_classes
// (InputError naming the labels file, the 1-based record and the value).
ImageSet read_idx_images(const std::filesystem::path& images, const std::filesystem::path& labels,
                         int num_classes = 10);

// Where Fashion-MNIST lives: $FLT_FASHION_MNIST_DIR if set, else /usr/share/datasets/fashion-mnist
// (Debian package dataset-fashion-mnist, installed by tools/install-deps.sh).
std::filesystem::path default_fashion_mnist_dir();

// The 60,000-image "train" or 10,000-image "test" subset from `dir` ({train,t10k}-{images-idx3,
// labels-idx1}-ubyte, with or without .gz; the .gz name is tried first). ConfigError for another
// subset name; IoError naming the path tried when no file exists.
ImageSet load_fashion_mnist(const std::filesystem::path& dir, std::string_view subset);

// The ten Fashion-MNIST class names, label order ("T-shirt/top", "Trouser", ..., "Ankle boot").
const std::vector<std::string>& fashion_mnist_classes();

}  // namespace flt::tasks
