// Archives read through libarchive: tar built byte by byte (ustar headers, GNU long names, pax
// path records, skipped members); zip, 7-Zip, cpio and xz-, zstd- and gzip-compressed tar written
// with libarchive's write API; truncated and corrupt archives and .gz files, each an error for
// that input only.
#include "chem_test_util.hpp"

#include "core/error.hpp"
#include "io/atomic_file.hpp"
#include "io/compressed.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

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

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

const std::string kWater = "3\nwater\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n";

struct Member {
  std::string name;
  std::string data;
  unsigned type = AE_IFREG;  // AE_IFDIR, AE_IFLNK (data is then the link target)
};

// Writes `members` with libarchive: `set_format` picks the container, `add_filter` (may be empty)
// the compression.
void write_archive(const std::string& path, const std::function<int(struct archive*)>& set_format,
                   const std::function<int(struct archive*)>& add_filter,
                   const std::vector<Member>& members) {
  struct archive* a = archive_write_new();
  REQUIRE(set_format(a) == ARCHIVE_OK);
  if (add_filter) REQUIRE(add_filter(a) == ARCHIVE_OK);
  REQUIRE(archive_write_open_filename(a, path.c_str()) == ARCHIVE_OK);
  for (const Member& m : members) {
    struct archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, m.name.c_str());
    archive_entry_set_filetype(e, m.type);
    archive_entry_set_perm(e, m.type == AE_IFDIR ? 0755 : 0644);
    if (m.type == AE_IFLNK) {
      archive_entry_set_symlink(e, m.data.c_str());
      archive_entry_set_size(e, 0);
    } else {
      archive_entry_set_size(e, static_cast<la_int64_t>(m.data.size()));
    }
    REQUIRE(archive_write_header(a, e) == ARCHIVE_OK);
    if (m.type == AE_IFREG && !m.data.empty()) {
      REQUIRE(archive_write_data(a, m.data.data(), m.data.size()) ==
              static_cast<la_ssize_t>(m.data.size()));
    }
    archive_entry_free(e);
  }
  REQUIRE(archive_write_close(a) == ARCHIVE_OK);
  archive_write_free(a);
}

// `n` single-atom XYZ frames titled "frame <i>": a member larger than one read buffer.
std::string frames(int n) {
  std::string text;
  for (int i = 0; i < n; ++i) text += "1\nframe " + std::to_string(i) + "\nHe 0 0 0\n";
  return text;
}

// The same members in every archive kind: molecule files in order, with members to skip between.
std::vector<Member> mixed_members() {
  return {{"set/first.xyz", kWater},
          {"set/notes.txt", "not a molecule\n"},
          {"set/.hidden.xyz", kWater},
          {"set/sub", "", AE_IFDIR},
          {"set/packed.xyz.gz", flt::io::gzip_bytes(kWater)},
          {"set/table.csv", "smiles\nC\n"},
          {"set/many.xyz", frames(4000)},
          {"set/link.xyz", "first.xyz", AE_IFLNK},
          {"set/last.xyz", "1\nneon\nNe 0 0 0\n"}};
}

void check_mixed(const std::string& path, const ReadAll& r) {
  INFO(path);
  CHECK(r.summary.ok());
  REQUIRE(r.records.size() == 4002);
  CHECK(r.records[0].source == path + ":set/first.xyz");
  CHECK(r.records[0].title == "water");
  CHECK(r.records[1].source == path + ":set/many.xyz");
  CHECK(r.records[1].title == "frame 0");
  CHECK(r.records[4000].title == "frame 3999");
  CHECK(r.records[4000].record == 4000);
  CHECK(r.records[4001].source == path + ":set/last.xyz");
  CHECK(r.records[4001].atomic_numbers == std::vector<int>{10});
}

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

TEST_CASE("archives: zip, 7-Zip, cpio and compressed tar read member by member", "[chem][io]") {
  TempDir dir;
  const auto members = mixed_members();
  struct Kind {
    std::string file;
    std::function<int(struct archive*)> format, filter;
  };
  const std::vector<Kind> kinds = {
      {"set.zip", archive_write_set_format_zip, {}},
      {"set.7z", archive_write_set_format_7zip, {}},
      {"set.cpio", archive_write_set_format_cpio_newc, {}},
      {"set.tar.xz", archive_write_set_format_pax_restricted, archive_write_add_filter_xz},
      {"set.txz", archive_write_set_format_gnutar, archive_write_add_filter_xz},
      {"set.tar.zst", archive_write_set_format_pax_restricted, archive_write_add_filter_zstd},
      {"set.tar.bz2", archive_write_set_format_ustar, archive_write_add_filter_bzip2},
      {"set.tgz", archive_write_set_format_ustar, archive_write_add_filter_gzip},
      // The compression is told by content: a gzip-compressed tar named .tar reads too.
      {"gzipped.tar", archive_write_set_format_ustar, archive_write_add_filter_gzip},
  };
  for (const Kind& kind : kinds) {
    const std::string path = dir.file(kind.file);
    write_archive(path, kind.format, kind.filter, members);
    check_mixed(path, read_all({path}));
  }
}

TEST_CASE("archives: progress counts the archive's bytes on disk", "[chem][io][progress]") {
  TempDir dir;
  const std::string path = dir.file("set.tar.xz");
  write_archive(path, archive_write_set_format_pax_restricted, archive_write_add_filter_xz,
                {{"a.xyz", frames(20000)}});
  const auto size = std::filesystem::file_size(path);
  auto reader = MoleculeReader::open(path);
  CHECK(reader->progress().bytes_total == size);
  std::size_t records = 0, inside = 0;
  std::uint64_t last = 0;
  while (reader->next()) {
    ++records;
    const auto read = reader->progress().bytes_read;
    CHECK(read >= last);
    if (read > 0 && read < size) ++inside;
    last = read;
  }
  CHECK(records == 20000);
  CHECK(inside > 0);
  CHECK(reader->progress().bytes_read == size);
}

TEST_CASE("tar: corrupt and truncated archives are I/O errors", "[chem][io][errors]") {
  TempDir dir;
  const std::string bad = dir.file("bad.tar");
  write_file(bad, std::string(512, 'z'));
  auto r = read_all({bad});
  CHECK(r.records.empty());
  REQUIRE(r.summary.skipped.size() == 1);
  CHECK(r.summary.skipped[0].file == bad);
  CHECK(r.summary.skipped[0].reason.find("Unrecognized archive format") != std::string::npos);

  // The member claims more bytes than the archive has: the record is cut short.
  std::string member = tar_member("cut.xyz", kWater);
  const std::string cut = dir.file("cut.tar");
  write_file(cut, member.substr(0, 512 + 20));
  r = read_all({cut});
  CHECK(r.records.empty());
  REQUIRE(r.summary.skipped.size() == 1);
  CHECK(r.summary.skipped[0].file == cut + ":cut.xyz");
  CHECK(r.summary.skipped[0].reason.find("Truncated tar archive") != std::string::npos);

  // A good archive followed by garbage instead of the end blocks: the good member is read.
  const std::string tail = dir.file("tail.tar");
  write_file(tail, tar_member("ok.xyz", kWater) + std::string(300, 'q'));
  r = read_all({tail});
  REQUIRE(r.records.size() == 1);
  REQUIRE(r.summary.skipped.size() == 1);
  CHECK(r.summary.skipped[0].file == tail);
  CHECK(r.summary.skipped[0].reason.find("Truncated tar archive") != std::string::npos);
}

TEST_CASE("archives: a broken archive is an error for that archive only", "[chem][io][errors]") {
  TempDir dir;
  const std::string good = dir.file("good.zip");
  write_archive(good, archive_write_set_format_zip, {}, {{"ok.xyz", kWater}});

  // A zip cut inside its second member: the first member is read, then the archive fails.
  const std::string zip = dir.file("whole.zip");
  write_archive(zip, archive_write_set_format_zip, {},
                {{"first.xyz", kWater}, {"many.xyz", frames(20000)}});
  const std::string bytes = read_bytes(zip);
  const std::string cut_zip = dir.file("cut.zip");
  write_file(cut_zip, bytes.substr(0, bytes.size() / 2));
  auto r = read_all({cut_zip, good});
  REQUIRE(r.summary.skipped.size() == 1);
  CHECK(r.summary.skipped[0].file == cut_zip + ":many.xyz");
  CHECK(r.summary.skipped[0].reason.find("ZIP decompression failed") != std::string::npos);
  REQUIRE(r.records.size() >= 2);
  CHECK(r.records.front().source == cut_zip + ":first.xyz");
  CHECK(r.records[1].source == cut_zip + ":many.xyz");
  CHECK(r.records.back().source == good + ":ok.xyz");

  // A .tar.xz cut in half: xz cannot decode it.
  const std::string xz = dir.file("whole.tar.xz");
  write_archive(xz, archive_write_set_format_pax_restricted, archive_write_add_filter_xz,
                {{"many.xyz", frames(20000)}});
  const std::string xz_bytes = read_bytes(xz);
  const std::string cut_xz = dir.file("cut.tar.xz");
  write_file(cut_xz, xz_bytes.substr(0, xz_bytes.size() / 2));
  r = read_all({cut_xz, good});
  REQUIRE(r.summary.skipped.size() == 1);
  CHECK(r.summary.skipped[0].file.rfind(cut_xz, 0) == 0);
  CHECK(r.summary.skipped[0].reason.find("Lzma") != std::string::npos);
  REQUIRE(!r.records.empty());
  CHECK(r.records.back().source == good + ":ok.xyz");

  // Flipped bytes inside a zip member's compressed data: what was decompressed before the
  // damage was noticed may give bad records; the archive error comes last.
  std::string flipped = bytes;
  for (std::size_t i = 0; i < 8; ++i) flipped[bytes.size() / 3 + i] ^= 0x55;
  const std::string bad_zip = dir.file("flipped.zip");
  write_file(bad_zip, flipped);
  r = read_all({bad_zip, good});
  REQUIRE(!r.summary.skipped.empty());
  CHECK(r.summary.skipped.back().file == bad_zip + ":many.xyz");
  CHECK(r.summary.skipped.back().record == 0);
  CHECK(r.summary.skipped.back().reason.find("ZIP") != std::string::npos);
  CHECK(r.records.back().source == good + ":ok.xyz");

  // Encrypted zip members cannot be read; each is an error and the archive goes on.
  const std::string encrypted = dir.file("encrypted.zip");
  write_archive(
      encrypted,
      [](struct archive* a) {
        const int rc = archive_write_set_format_zip(a);
        if (rc != ARCHIVE_OK) return rc;
        if (archive_write_set_options(a, "zip:encryption=zipcrypt") != ARCHIVE_OK) return ARCHIVE_FATAL;
        return archive_write_set_passphrase(a, "secret");
      },
      {}, {{"a.xyz", kWater}, {"b.xyz", kWater}});
  r = read_all({encrypted, good});
  REQUIRE(r.summary.skipped.size() == 2);
  CHECK(r.summary.skipped[0].file == encrypted + ":a.xyz");
  CHECK(r.summary.skipped[1].file == encrypted + ":b.xyz");
  CHECK(r.summary.skipped[1].reason.find("Passphrase required") != std::string::npos);
  REQUIRE(r.records.size() == 1);
  CHECK(r.records[0].source == good + ":ok.xyz");

  // An empty file is an empty archive.
  const std::string empty = dir.file("empty.tar");
  write_file(empty, "");
  r = read_all({empty});
  CHECK(r.records.empty());
  CHECK(r.summary.ok());
}

TEST_CASE(".gz files: truncated, corrupt and padded streams are I/O errors naming the file", "[chem][io][errors]") {
  TempDir dir;
  const std::string gz = flt::io::gzip_bytes(frames(20000));
  const std::string cut = dir.file("cut.xyz.gz");
  write_file(cut, gz.substr(0, gz.size() / 2));
  auto r = read_all({cut});
  CHECK(!r.records.empty());
  REQUIRE(r.summary.skipped.size() == 1);
  CHECK(r.summary.skipped[0].file == cut);
  CHECK(r.summary.skipped[0].reason.find("truncated gzip stream") != std::string::npos);

  // Bytes after the last member: every record decompressed before them, then the error.
  const std::string tail = dir.file("tail.xyz.gz");
  write_file(tail, gz + "garbage!");
  r = read_all({tail});
  CHECK(r.records.size() == 20000);
  REQUIRE(r.summary.skipped.size() == 1);
  CHECK(r.summary.skipped[0].file == tail);
  CHECK(r.summary.skipped[0].reason.find("trailing garbage after the gzip stream") != std::string::npos);
  // The same through the SDF reader, which reads its input in blocks: no record lost either.
  const std::string sdf_text = flt::io::read_file(parser_case("rdkit-data-deb/bzr.sdf"));
  const std::string sdf_tail = dir.file("tail.sdf.gz");
  write_file(sdf_tail, flt::io::gzip_bytes(sdf_text) + "garbage!");
  r = read_all({sdf_tail});
  CHECK(r.records.size() == 163);
  REQUIRE(r.summary.skipped.size() == 1);
  CHECK(r.summary.skipped[0].reason.find("trailing garbage after the gzip stream") != std::string::npos);

  // Zero padding after the stream (tape, block padding) ends it, as gzip(1) reads it.
  const std::string padded = dir.file("padded.xyz.gz");
  write_file(padded, gz + std::string(512, '\0'));
  r = read_all({padded});
  CHECK(r.summary.ok());
  CHECK(r.records.size() == 20000);

  // A wrong CRC in the footer: every record, then the error.
  std::string crc = gz;
  crc[gz.size() - 8] ^= 0x01;
  const std::string bad_crc = dir.file("crc.xyz.gz");
  write_file(bad_crc, crc);
  r = read_all({bad_crc});
  CHECK(r.records.size() == 20000);
  REQUIRE(r.summary.skipped.size() == 1);
  CHECK(r.summary.skipped[0].file == bad_crc);
  CHECK(r.summary.skipped[0].reason == bad_crc + ": corrupt gzip stream (CRC-32 mismatch)");

  // Flipped bytes in the compressed data: records decompressed before the damage was noticed may
  // be bad; the gzip error comes last.
  std::string bad = gz;
  for (std::size_t i = 0; i < 8; ++i) bad[gz.size() / 2 + i] ^= 0x55;
  const std::string flipped = dir.file("flipped.xyz.gz");
  write_file(flipped, bad);
  r = read_all({flipped});
  REQUIRE(!r.summary.skipped.empty());
  CHECK(r.summary.skipped.back().file == flipped);
  CHECK(r.summary.skipped.back().record == 0);
  CHECK(r.summary.skipped.back().reason.find("corrupt gzip stream") != std::string::npos);

  // Two members in one file read as one stream.
  const std::string two = dir.file("two.xyz.gz");
  write_file(two, flt::io::gzip_bytes(kWater) + flt::io::gzip_bytes(frames(3)));
  r = read_all({two});
  CHECK(r.summary.ok());
  CHECK(r.records.size() == 4);
}
