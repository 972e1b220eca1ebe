// Every file of tests/data/parser-cases gives the record and failure counts that MANIFEST.tsv lists
// for RDKit 2022.09 (SDMolSupplier sanitize=true removeHs=false; MolFromXYZFile), except the
// documented better behaviours below (docs/chem-io.md, "Parser cases").
#include "chem_test_util.hpp"

#include "core/error.hpp"

#include <catch2/catch.hpp>

#include <fstream>
#include <map>

using namespace flt::chem;
using namespace flt::chem::test;

namespace {

struct ManifestRow {
  std::string file;
  std::size_t ok = 0;
  std::size_t fail = 0;
  std::size_t max_atoms = 0;
  bool has_3d = false;
};

std::vector<ManifestRow> read_manifest() {
  std::ifstream in(parser_case("MANIFEST.tsv"));
  REQUIRE(in);
  std::string line;
  std::getline(in, line);  // header
  std::vector<ManifestRow> rows;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::vector<std::string> cols;
    std::stringstream ss(line);
    std::string col;
    while (std::getline(ss, col, '\t')) cols.push_back(col);
    REQUIRE(cols.size() == 17);
    ManifestRow row;
    row.file = cols[0];
    row.ok = std::stoul(cols[5]);
    row.fail = std::stoul(cols[6]);
    row.has_3d = std::stoul(cols[10]) > 0;
    row.max_atoms = std::stoul(cols[16]);
    rows.push_back(row);
  }
  return rows;
}

// Where flt deliberately differs from RDKit (expected ok, expected failures, why).
struct Better {
  std::size_t ok;
  std::size_t fail;
  const char* why;
};
const std::map<std::string, Better>& better() {
  static const std::map<std::string, Better> table = {
      {"rdkit-src/FileParsers/nonexistant.xyz",
       {0, 1, "'0' and no comment line: RDKit returns an empty molecule, flt a bad record"}},
      {"rdkit-src/FileParsers/chebi_57262.v3k.mol",
       {0, 1, "an R-group dummy atom has no element: not a point set flt can model"}},
      {"rdkit-src/FileParsers/strictLax2.sdf",
       {1, 1, "RDKit silently skips record 2 after a data-field error; flt reports it"}},
      {"rdkit-src/FileParsers/esters.prop_name_trunc.sdf",
       {2, 4, "RDKit silently drops records 3-6; flt reports each of them"}},
  };
  return table;
}

}  // namespace

TEST_CASE("parser cases: record and failure counts match MANIFEST.tsv (RDKit) or documented",
          "[chem][parser-cases]") {
  const auto rows = read_manifest();
  REQUIRE(rows.size() == 39);
  ReadOptions options;
  options.missing_3d = Missing3D::accept;  // most files are 2-D; counts are about parsing
  for (const auto& row : rows) {
    INFO("file " << row.file);
    const auto result = read_all({parser_case(row.file)}, options);
    std::size_t expect_ok = row.ok;
    std::size_t expect_fail = row.fail;
    if (auto it = better().find(row.file); it != better().end()) {
      INFO("documented deviation: " << it->second.why);
      expect_ok = it->second.ok;
      expect_fail = it->second.fail;
    }
    CHECK(result.summary.read == expect_ok);
    CHECK(result.summary.skipped.size() == expect_fail);
    for (const auto& s : result.summary.skipped) {
      // Every failure names the file and gives a reason.
      CHECK(s.file == parser_case(row.file));
      CHECK(!s.reason.empty());
    }
    std::size_t heavy_max = 0;
    for (const auto& p : result.records) {
      CHECK(p.source == parser_case(row.file));
      CHECK(p.record >= 1);
      CHECK(p.size() == static_cast<std::size_t>(p.positions.rows()));
      CHECK(p.formal_charges.size() == p.size());
      std::size_t heavy = 0;
      for (int z : p.atomic_numbers) heavy += z > 1 ? 1 : 0;
      heavy_max = std::max(heavy_max, heavy);
    }
    if (row.max_atoms > 0 && row.file.find(".xyz") == std::string::npos) {
      // MANIFEST's max_atoms counts the atoms RDKit reads (heavy atoms plus explicit H): never
      // fewer than our heavy atoms.
      CHECK(heavy_max <= row.max_atoms);
    }
  }
}

TEST_CASE("parser cases: record numbers follow the file's records", "[chem][parser-cases]") {
  ReadOptions options;
  options.missing_3d = Missing3D::accept;
  const auto issue = read_all({parser_case("rdkit-src/FileParsers/Issue3525673.sdf")}, options);
  REQUIRE(issue.summary.skipped.size() == 1);
  CHECK(issue.summary.skipped[0].record == 7);
  CHECK(issue.summary.skipped[0].reason.find("foo") != std::string::npos);
  std::vector<std::size_t> numbers;
  for (const auto& p : issue.records) numbers.push_back(p.record);
  CHECK(numbers == std::vector<std::size_t>{1, 2, 3, 4, 5, 6, 8, 9});

  const auto trunc =
      read_all({parser_case("rdkit-src/FileParsers/esters.prop_name_trunc.sdf")}, options);
  REQUIRE(trunc.summary.skipped.size() == 4);
  for (std::size_t k = 0; k < 4; ++k) {
    CHECK(trunc.summary.skipped[k].record == 3 + k);
    CHECK(trunc.summary.skipped[k].reason.find("record not read: RDKit") != std::string::npos);
  }

  const auto sanit = read_all({parser_case("rdkit-src/FileParsers/sdErrors2.sdf")}, options);
  REQUIRE(sanit.summary.skipped.size() == 1);
  CHECK(sanit.summary.skipped[0].record == 1);
  CHECK(sanit.summary.skipped[0].reason.find("valence") != std::string::npos);
}

TEST_CASE("parser cases: 2-D records are errors by default", "[chem][parser-cases]") {
  const auto result = read_all({parser_case("rdkit-data-deb/first_200.props.sdf")});
  CHECK(result.summary.read == 0);
  REQUIRE(result.summary.skipped.size() == 200);
  CHECK(result.summary.skipped[0].reason.find("no 3-D coordinates") != std::string::npos);
  CHECK(result.summary.skipped[199].record == 200);
}

TEST_CASE("parser cases: the fail policy stops at the first bad record", "[chem][parser-cases]") {
  ReadOptions options;
  options.missing_3d = Missing3D::accept;
  std::size_t seen = 0;
  try {
    read_molecules({parser_case("rdkit-src/FileParsers/Issue3525673.sdf")}, options,
                   ErrorPolicy::fail, [&](PointSet&&) { ++seen; });
    FAIL("expected an InputError");
  } catch (const flt::InputError& e) {
    CHECK(e.record() == 7);
    CHECK(e.file() == parser_case("rdkit-src/FileParsers/Issue3525673.sdf"));
    CHECK(std::string(e.what()).find("record 7") != std::string::npos);
  }
  CHECK(seen == 6);
}
