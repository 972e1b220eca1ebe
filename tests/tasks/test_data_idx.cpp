// IDX reader: the real Fashion-MNIST files of the Debian package dataset-fashion-mnist, and
// corrupted copies of them written to a scratch directory (every header check must fire with a
// message naming the file and the reason).
#include "tasks/data_idx.hpp"
#include "task_test_util.hpp"
#include "io/atomic_file.hpp"
#include "io/compressed.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

using namespace flt;
using namespace flt::tasks;
using flt::tasks::testing::Scratch;
using flt::tasks::testing::fashion_dir;
namespace fs = std::filesystem;
using namespace std::string_literals;

namespace {

// Expects `f()` to throw InputError whose message contains every fragment.
template <class F>
void expect_input_error(F&& f, const std::vector<std::string>& fragments) {
  try {
    f();
    FAIL("no error thrown");
  } catch (const InputError& e) {
    const std::string what = e.what();
    for (const auto& frag : fragments) {
      INFO(what);
      CHECK(what.find(frag) != std::string::npos);
    }
  }
}

}  // namespace

TEST_CASE("IDX: the real Fashion-MNIST files read with the documented sizes and class balance", "[seq][idx]") {
  REQUIRE(fs::exists(fashion_dir() / "t10k-labels-idx1-ubyte.gz"));  // tools/install-deps.sh installs it
  const ImageSet test = load_fashion_mnist(fashion_dir(), "test");
  CHECK(test.count == 10000);
  CHECK(test.rows == 28);
  CHECK(test.cols == 28);
  CHECK(test.pixels.size() == 10000u * 784u);
  std::vector<int> per_class(10, 0);
  for (auto l : test.labels) ++per_class[l];
  for (int c = 0; c < 10; ++c) CHECK(per_class[static_cast<std::size_t>(c)] == 1000);  // balanced test set
  // The first test image is an ankle boot (class 9) in every distribution of Fashion-MNIST.
  CHECK(test.labels[0] == 9);
  // Not all pixels equal: real images, background 0 and some bright pixels.
  int zeros = 0, bright = 0;
  for (std::size_t p = 0; p < 784; ++p) {
    zeros += test.image(0)[p] == 0;
    bright += test.image(0)[p] > 200;
  }
  CHECK(zeros > 100);
  CHECK(bright > 10);

  const ImageSet train = load_fashion_mnist(fashion_dir(), "train");
  CHECK(train.count == 60000);
  std::fill(per_class.begin(), per_class.end(), 0);
  for (auto l : train.labels) ++per_class[l];
  for (int c = 0; c < 10; ++c) CHECK(per_class[static_cast<std::size_t>(c)] == 6000);
  CHECK(fashion_mnist_classes().size() == 10);
  CHECK(fashion_mnist_classes()[9] == "Ankle boot");
}

TEST_CASE("IDX: gzip and plain files give the same array, round trip of idx_bytes", "[seq][idx]") {
  Scratch dir("idx-roundtrip");
  const std::vector<std::uint8_t> data = {1, 2, 3, 4, 5, 6, 250, 0, 9, 10, 11, 12};
  const std::string bytes = idx_bytes({2, 3, 2}, data);
  CHECK(bytes.size() == 4 + 12 + 12);
  io::write_file_atomic(dir / "a.idx", bytes);
  io::write_file_atomic(dir / "a.idx.gz", io::gzip_bytes(bytes));
  // A gzip file of two members (RFC 1952 allows concatenation).
  io::write_file_atomic(dir / "two.gz", io::gzip_bytes(bytes.substr(0, 10)) + io::gzip_bytes(bytes.substr(10)));
  const IdxArray plain = read_idx(dir / "a.idx", 3);
  const IdxArray gz = read_idx(dir / "a.idx.gz", 3);
  const IdxArray two = read_idx(dir / "two.gz", 3);
  CHECK(plain.dims == std::vector<std::uint32_t>{2, 3, 2});
  CHECK(plain.data == data);
  CHECK(gz.data == data);
  CHECK(two.data == data);
  CHECK(gz.dims == plain.dims);
  CHECK(plain.elements() == 12);

  // The real labels file decompressed equals what the reader returns.
  const std::string real = io::read_maybe_gzip(fashion_dir() / "t10k-labels-idx1-ubyte.gz");
  CHECK(real.size() == 8 + 10000);
  const IdxArray labels = parse_idx(real, "t10k-labels", 1);
  CHECK(labels.dims == std::vector<std::uint32_t>{10000});
}

TEST_CASE("IDX: corrupted copies of the real files give typed errors naming file and reason", "[seq][idx]") {
  Scratch dir("idx-corrupt");
  const std::string labels = io::read_maybe_gzip(fashion_dir() / "t10k-labels-idx1-ubyte.gz");
  const std::string images = io::read_maybe_gzip(fashion_dir() / "t10k-images-idx3-ubyte.gz");
  auto write = [&](const std::string& name, const std::string& bytes) {
    io::write_file_atomic(dir / name, bytes);
    return dir / name;
  };

  std::string bad = labels;
  bad[0] = 1;
  auto p = write("bad-magic", bad);
  expect_input_error([&] { read_idx(p); }, {"bad-magic", "magic number"});

  bad = labels;
  bad[2] = 0x0D;  // float32 elements
  p = write("bad-type", bad);
  expect_input_error([&] { read_idx(p); }, {"bad-type", "element type 0x0D", "only 0x08"});

  bad = labels;
  bad[3] = 0;
  p = write("zero-dims", bad);
  expect_input_error([&] { read_idx(p); }, {"zero-dims", "zero dimensions"});

  // A labels file where images are expected (3 dimensions), and the reverse.
  p = write("labels-as-images", labels);
  expect_input_error([&] { read_idx(p, 3); }, {"labels-as-images", "expected 3 dimension(s), the file has 1"});

  p = write("truncated-data", labels.substr(0, labels.size() - 1));
  expect_input_error([&] { read_idx(p, 1); }, {"truncated-data", "data length 9999", "10000 elements", "truncated"});

  p = write("trailing", labels + "x");
  expect_input_error([&] { read_idx(p, 1); }, {"trailing", "trailing bytes"});

  p = write("header-cut", images.substr(0, 10));
  expect_input_error([&] { read_idx(p); }, {"header-cut", "header truncated"});

  p = write("short", "\0\0"s);
  expect_input_error([&] { read_idx(p); }, {"short", "too short"});

  bad = images;
  bad[8] = bad[9] = bad[10] = bad[11] = 0;  // rows = 0
  p = write("zero-size", bad);
  expect_input_error([&] { read_idx(p); }, {"zero-size", "dimension 2 has size 0"});

  bad = images;
  bad[4] = bad[5] = bad[6] = bad[7] = static_cast<char>(0xFF);  // 4e9 images declared
  p = write("huge", bad);
  expect_input_error([&] { read_idx(p); }, {"huge", "exceeds the limit"});

  // gzip damage: cut in the middle, and garbage after a valid stream.
  const std::string gz = io::gzip_bytes(labels);
  p = write("cut.gz", gz.substr(0, gz.size() / 2));
  expect_input_error([&] { read_idx(p); }, {"cut.gz", "gzip"});
  p = write("garbage.gz", gz + "garbage!");
  expect_input_error([&] { read_idx(p); }, {"garbage.gz", "trailing garbage"});
  bad = gz;
  bad[gz.size() / 2] ^= 0x55;
  bad[gz.size() / 2 + 1] ^= 0x55;
  p = write("flipped.gz", bad);
  expect_input_error([&] { read_idx(p); }, {"flipped.gz", "gzip"});

  // Images and labels that disagree: 10000 images, 9999 labels.
  const auto im = write("im", images);
  std::string short_labels = labels.substr(0, labels.size() - 1);
  short_labels[7] = static_cast<char>(0x0F);  // count 9999 = 0x270F
  const auto lb = write("lb", short_labels);
  expect_input_error([&] { read_idx_images(im, lb); }, {"image count 10000", "label count 9999", "lb"});

  // A label outside the classes: record 5 set to 10.
  std::string bad_label = labels;
  bad_label[8 + 4] = 10;
  const auto lb2 = write("lb-class", bad_label);
  try {
    read_idx_images(im, lb2, 10);
    FAIL("no error");
  } catch (const InputError& e) {
    CHECK(e.record() == 5);
    CHECK(e.file() == lb2.string());
    CHECK(std::string(e.what()).find("label 10 is not a class") != std::string::npos);
  }

  // Missing files: IoError naming the path; unknown subset: ConfigError.
  CHECK_THROWS_AS(read_idx(dir / "no-such-file"), IoError);
  CHECK_THROWS_AS(load_fashion_mnist(dir.path(), "train"), IoError);
  CHECK_THROWS_AS(load_fashion_mnist(fashion_dir(), "validation"), ConfigError);
}
