// Reader for the IDX files of MNIST and Fashion-MNIST (LeCun et al.; Xiao, Rasul, Vollgraf 2017),
// plain or gzip-compressed (io::read_maybe_gzip).
//
// Layout (integers big-endian): two zero bytes, element type 0x08 (unsigned byte, the only one
// accepted), dimension count d >= 1, d u32 sizes, then prod(sizes) bytes, row-major, and nothing
// else. Images: d = 3 (count, rows, cols; magic 0x00000803); labels: d = 1 (magic 0x00000801).
// Errors: flt::InputError naming the file (record 0: the whole file); OS failures flt::IoError.
// The format and every check: docs/sequence-image.md, "IDX files".
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
