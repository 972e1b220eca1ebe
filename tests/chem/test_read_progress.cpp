// Reading progress (MoleculeReader::progress, read_molecules' callback): bytes of the input files
// consumed against their size on disk, for plain files, .gz files, directories and streams.
#include "chem_test_util.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

using namespace flt::chem;
using namespace flt::chem::test;

namespace {

// `n` methane-like XYZ records (about 150 bytes each).
std::string xyz_records(int n) {
  std::string text;
  for (int i = 0; i < n; ++i) {
    text += "5\nmolecule " + std::to_string(i) + "\n";
    text += "C 0.000 0.000 0.000\nH 0.629 0.629 0.629\nH -0.629 -0.629 0.629\nH -0.629 0.629 -0.629\n"
            "H 0.629 -0.629 -0.629\n";
  }
  return text;
}

void write(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

}  // namespace

TEST_CASE("read progress: bytes consumed grow to the total size of the inputs", "[chem][progress]") {
  TempDir dir;
  const std::string big = dir.file("big.xyz");
  write(big, xyz_records(3000));  // ~400 kB: several 64 kB buffers
  const auto size = std::filesystem::file_size(big);

  SECTION("a plain file: monotone, strictly inside while reading, the file size at the end") {
    auto reader = MoleculeReader::open(big);
    CHECK(reader->progress().bytes_total == size);
    CHECK(reader->progress().bytes_read == 0);
    std::uint64_t last = 0;
    std::size_t records = 0, inside = 0;
    while (auto p = reader->next()) {
      ++records;
      const ReadProgress progress = reader->progress();
      CHECK(progress.bytes_read >= last);
      CHECK(progress.records == records);
      if (progress.bytes_read > 0 && progress.bytes_read < size) ++inside;
      last = progress.bytes_read;
    }
    CHECK(records == 3000);
    CHECK(inside > 2000);  // not one jump at the end
    CHECK(reader->progress().bytes_read == size);
  }
  SECTION("read_molecules reports through its callback; directories count their molecule files") {
    const std::filesystem::path sub = dir.path() / "set";
    std::filesystem::create_directories(sub);
    write((sub / "a.xyz").string(), xyz_records(10));
    write((sub / "b.xyz").string(), xyz_records(20));
    write((sub / "notes.txt").string(), std::string(5000, 'x'));  // not a molecule file: not counted
    const auto dir_size = std::filesystem::file_size(sub / "a.xyz") + std::filesystem::file_size(sub / "b.xyz");
    std::vector<ReadProgress> seen;
    const ReadSummary summary = read_molecules({big, sub.string()}, ReadOptions{}, ErrorPolicy::skip,
                                               [](PointSet&&) {}, [&](const ReadProgress& p) { seen.push_back(p); });
    CHECK(summary.read == 3030);
    REQUIRE(!seen.empty());
    CHECK(seen.front().bytes_total == size + dir_size);
    CHECK(seen.back().bytes_read == size + dir_size);
    CHECK(seen.back().records == 3030);
    for (std::size_t i = 1; i < seen.size(); ++i) CHECK(seen[i].bytes_read >= seen[i - 1].bytes_read);
  }
  SECTION("a .gz file counts compressed bytes") {
    const std::string gz = std::string(FLT_SOURCE_DIR) + "/datasets/qm9/qm9_subset.xyz.gz";
    const auto gz_size = std::filesystem::file_size(gz);
    auto reader = MoleculeReader::open(gz);
    std::size_t records = 0;
    bool inside = false;
    while (records < 500 && reader->next()) {
      ++records;
      const auto p = reader->progress();
      inside = inside || (p.bytes_read > 0 && p.bytes_read < gz_size);
    }
    CHECK(inside);
    CHECK(reader->progress().bytes_total == gz_size);
  }
  SECTION("a stream has no known size") {
    std::ifstream in(big);
    ReadOptions options;
    options.format = Format::xyz;
    auto reader = MoleculeReader::from_stream(in, "stream", options);
    reader->next();
    CHECK(reader->progress().bytes_total == 0);
    CHECK(reader->progress().records == 1);
  }
}
