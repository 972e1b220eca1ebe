// Tar archives built byte by byte (ustar headers, GNU long names, pax path records, skipped
// members), truncated and corrupt archives.
#include "chem_test_util.hpp"

#include "core/error.hpp"

#include <catch2/catch.hpp>

#include <cstdio>
#include <cstring>
#include <fstream>

using namespace flt::chem;
using namespace flt::chem::test;

namespace {

// One 512-byte ustar header (+ data padded to 512) for a member.
std::string tar_member(const std::string& name, const std::string& data, char type = '0') {
  std::string header(512, '\0');
  std::memcpy(header.data(), name.data(), std::min<std::size_t>(name.size(), 100));
  std::snprintf(header.data() + 100, 8, "%07o", 0644);
  std::snprintf(header.data() + 108, 8, "%07o", 0);
  std::snprintf(header.data() + 116, 8, "%07o", 0);
  std::snprintf(header.data() + 124, 12, "%011o", static_cast<unsigned>(data.size()));
  std::snprintf(header.data() + 136, 12, "%011o", 0);
  header[156] = type;
  std::memcpy(header.data() + 257, "ustar", 6);
  std::memcpy(header.data() + 263, "00", 2);
  std::memset(header.data() + 148, ' ', 8);
  unsigned sum = 0;
  for (char c : header) sum += static_cast<unsigned char>(c);
  std::snprintf(header.data() + 148, 8, "%06o", sum);
  std::string padded = data;
  padded.resize((data.size() + 511) / 512 * 512, '\0');
  return header + padded;
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

const std::string kWater = "3\nwater\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n";

}  // namespace

TEST_CASE("tar: members in order, long names, pax paths, other members skipped", "[chem][io]") {
  TempDir dir;
  const std::string long_name = "deep/" + std::string(120, 'x') + ".xyz";
  const std::string pax_name = "pax/" + std::string(110, 'p') + ".xyz";
  std::string pax_record = " path=" + pax_name + "\n";
  // A pax record is "<length> path=...\n" where <length> counts itself.
  std::string length = std::to_string(pax_record.size() + 3);
  pax_record = length + pax_record;
  const std::string archive =
      tar_member("a/first.xyz", kWater) + tar_member("a/notes.txt", "not a molecule\n") +
      tar_member("a/dir/", "", '5') + tar_member("././@LongLink", long_name + '\0', 'L') +
      tar_member("truncated-name.xyz", "1\nneon\nNe 0 0 0\n") +
      tar_member("PaxHeader", pax_record, 'x') + tar_member("short.xyz", "1\nargon\nAr 0 0 0\n") +
      std::string(1024, '\0');
  const std::string path = dir.file("set.tar");
  write_file(path, archive);
  const auto r = read_all({path});
  CHECK(r.summary.ok());
  REQUIRE(r.records.size() == 3);
  CHECK(r.records[0].source == path + ":a/first.xyz");
  CHECK(r.records[0].title == "water");
  CHECK(r.records[1].source == path + ":" + long_name);
  CHECK(r.records[1].atomic_numbers == std::vector<int>{10});
  CHECK(r.records[2].source == path + ":" + pax_name);
  CHECK(r.records[2].atomic_numbers == std::vector<int>{18});
}

TEST_CASE("tar: corrupt and truncated archives are I/O errors", "[chem][io][errors]") {
  TempDir dir;
  const std::string bad = dir.file("bad.tar");
  write_file(bad, std::string(512, 'z'));
  auto r = read_all({bad});
  CHECK(r.records.empty());
  REQUIRE(r.summary.skipped.size() == 1);
  CHECK(r.summary.skipped[0].reason.find("not a tar archive") != std::string::npos);

  // The member claims more bytes than the archive has: the record is cut short.
  std::string member = tar_member("cut.xyz", kWater);
  const std::string cut = dir.file("cut.tar");
  write_file(cut, member.substr(0, 512 + 20));
  r = read_all({cut});
  CHECK(r.records.empty());
  CHECK_FALSE(r.summary.skipped.empty());

  // A good archive followed by garbage instead of the end blocks: the good member is read.
  const std::string tail = dir.file("tail.tar");
  write_file(tail, tar_member("ok.xyz", kWater) + std::string(300, 'q'));
  r = read_all({tail});
  REQUIRE(r.records.size() == 1);
  REQUIRE(r.summary.skipped.size() == 1);
  CHECK(r.summary.skipped[0].reason.find("truncated tar header") != std::string::npos);
}
