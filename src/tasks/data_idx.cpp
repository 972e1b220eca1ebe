// IDX reader (see data_idx.hpp for the format and the checks).
#include "tasks/data_idx.hpp"

#include "io/compressed.hpp"

#include <cstdio>
#include <cstdlib>

namespace flt::tasks {

namespace fs = std::filesystem;

namespace {

std::uint32_t read_be32(const unsigned char* p) {
  return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) | std::uint32_t(p[3]);
}

void append_be32(std::string& out, std::uint32_t v) {
  out.push_back(static_cast<char>((v >> 24) & 0xFF));
  out.push_back(static_cast<char>((v >> 16) & 0xFF));
  out.push_back(static_cast<char>((v >> 8) & 0xFF));
  out.push_back(static_cast<char>(v & 0xFF));
}

}  // namespace

std::uint64_t IdxArray::elements() const noexcept {
  std::uint64_t n = 1;
  for (auto d : dims) n *= d;
  return n;
}

IdxArray parse_idx(std::string_view bytes, const std::string& source, int expected_dims) {
  auto fail = [&](const std::string& reason) { return InputError(source, 0, "IDX: " + reason); };
  if (bytes.size() < 4)
    throw fail("file too short for the 4-byte magic number (" + std::to_string(bytes.size()) + " bytes)");
  const auto* u = reinterpret_cast<const unsigned char*>(bytes.data());
  if (u[0] != 0 || u[1] != 0)
    throw fail("bad magic number: the first two bytes must be zero (not an IDX file, or still compressed?)");
  if (u[2] != kIdxUnsignedByte) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02X", u[2]);
    throw fail(std::string("element type ") + hex + " is not supported (only 0x08, unsigned byte)");
  }
  const int d = u[3];
  if (d == 0) throw fail("zero dimensions in the magic number");
  if (expected_dims > 0 && d != expected_dims)
    throw fail("expected " + std::to_string(expected_dims) + " dimension(s), the file has " + std::to_string(d));
  const std::size_t header = 4 + 4 * static_cast<std::size_t>(d);
  if (bytes.size() < header)
    throw fail("header truncated: " + std::to_string(d) + " dimension sizes need " + std::to_string(header) +
               " bytes, the file has " + std::to_string(bytes.size()));
  IdxArray a;
  a.source = source;
  std::uint64_t n = 1;
  for (int k = 0; k < d; ++k) {
    const std::uint32_t s = read_be32(u + 4 + 4 * k);
    if (s == 0) throw fail("dimension " + std::to_string(k + 1) + " has size 0");
    a.dims.push_back(s);
    if (n > kIdxMaxElements / s) throw fail("declared size exceeds the limit of " + std::to_string(kIdxMaxElements) + " elements");
    n *= s;
  }
  const std::uint64_t have = bytes.size() - header;
  if (have != n) {
    std::string shape;
    for (std::size_t k = 0; k < a.dims.size(); ++k) shape += (k ? " x " : "") + std::to_string(a.dims[k]);
    throw fail("data length " + std::to_string(have) + " bytes differs from the header's " + shape + " = " +
               std::to_string(n) + " elements (" + (have < n ? "truncated" : "trailing bytes") + ")");
  }
  a.data.assign(u + header, u + bytes.size());
  return a;
}

IdxArray read_idx(const fs::path& path, int expected_dims) {
  return parse_idx(io::read_maybe_gzip(path), path.string(), expected_dims);
}

std::string idx_bytes(const std::vector<std::uint32_t>& dims, const std::vector<std::uint8_t>& data) {
  require(!dims.empty() && dims.size() < 256, "idx_bytes: 1 to 255 dimensions");
  std::string out;
  out.push_back(0);
  out.push_back(0);
  out.push_back(static_cast<char>(kIdxUnsignedByte));
  out.push_back(static_cast<char>(dims.size()));
  for (auto d : dims) append_be32(out, d);
  out.append(reinterpret_cast<const char*>(data.data()), data.size());
  return out;
}

ImageSet read_idx_images(const fs::path& images, const fs::path& labels, int num_classes) {
  require(num_classes > 0 && num_classes <= 256, "read_idx_images: num_classes in 1..256");
  IdxArray im = read_idx(images, 3);
  IdxArray lb = read_idx(labels, 1);
  if (im.dims[0] != lb.dims[0])
    throw InputError(images.string(), 0,
                     "image count " + std::to_string(im.dims[0]) + " differs from the label count " +
                         std::to_string(lb.dims[0]) + " of " + labels.string());
  ImageSet s;
  s.images_source = images.string();
  s.labels_source = labels.string();
  s.count = im.dims[0];
  s.rows = im.dims[1];
  s.cols = im.dims[2];
  s.num_classes = num_classes;
  for (std::size_t i = 0; i < lb.data.size(); ++i)
    if (lb.data[i] >= num_classes)
      throw InputError(labels.string(), i + 1,
                       "label " + std::to_string(lb.data[i]) + " is not a class (0.." + std::to_string(num_classes - 1) + ")");
  s.pixels = std::move(im.data);
  s.labels = std::move(lb.data);
  return s;
}

fs::path default_fashion_mnist_dir() {
  if (const char* env = std::getenv("FLT_FASHION_MNIST_DIR"); env && *env) return env;
  return "/usr/share/datasets/fashion-mnist";
}

ImageSet load_fashion_mnist(const fs::path& dir, std::string_view subset) {
  std::string prefix;
  if (subset == "train") prefix = "train";
  else if (subset == "test") prefix = "t10k";
  else throw ConfigError("Fashion-MNIST subset '" + std::string(subset) + "' (expected train or test)");
  auto find = [&](const std::string& stem) {
    const fs::path gz = dir / (stem + ".gz");
    if (fs::exists(gz)) return gz;
    const fs::path plain = dir / stem;
    if (fs::exists(plain)) return plain;
    throw IoError(gz.string(), "no such file (nor " + plain.filename().string() +
                                   "); install the Debian package dataset-fashion-mnist (tools/install-deps.sh) "
                                   "or set FLT_FASHION_MNIST_DIR");
  };
  return read_idx_images(find(prefix + "-images-idx3-ubyte"), find(prefix + "-labels-idx1-ubyte"), 10);
}

const std::vector<std::string>& fashion_mnist_classes() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                 "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

}  // namespace flt::tasks
