// QM9: the bundled subset (13,023 records, 15 properties with units, cross-checked against the
// index CSV), schnetpack's first 20, and the original dsgdb9nsd_*.xyz layout (`*^` exponents,
// Mulliken column, trailer lines) from a directory and from a .tar.bz2 archive.
#include "chem_test_util.hpp"
#include "../common/text_input.hpp"

#include "io/units.hpp"
#include "core/error.hpp"

#include <catch2/catch.hpp>

#include <fstream>
#include <unordered_map>

using namespace flt::chem;
using namespace flt::chem::test;

namespace {
struct IndexRow {
  std::size_t n_atoms;
  double u0;
  double homo;
  double cv;
};

std::unordered_map<std::size_t, IndexRow> read_index() {
  flt::test::TextInput in(qm9_dataset("qm9_subset_index.csv.gz"));
  REQUIRE(in.opened());
  std::string line;
  std::getline(in, line);
  std::unordered_map<std::size_t, IndexRow> rows;
  while (std::getline(in, line)) {
    // gdb_index,has_geometry,n_atoms,n_heavy,label_sources,mol_id,smiles,A,B,C,mu,alpha,homo,
    // lumo,gap,r2,zpve,u0,u298,h298,g298,cv,...  (SMILES contain no commas)
    std::vector<std::string> cols;
    std::stringstream ss(line);
    std::string col;
    while (std::getline(ss, col, ',')) cols.push_back(col);
    REQUIRE(cols.size() >= 22);
    if (cols[1] != "1") continue;
    rows[std::stoul(cols[0])] = {std::stoul(cols[2]), std::stod(cols[17]), std::stod(cols[12]),
                                 std::stod(cols[21])};
  }
  return rows;
}
}  // namespace

TEST_CASE("QM9 subset: all 13,023 records parse with the 15 properties", "[chem][qm9]") {
  const auto index = read_index();
  REQUIRE(index.size() == 13023);
  ReadOptions options;
  options.keep_molecule = false;
  std::size_t count = 0;
  std::size_t mismatches = 0;
  const auto summary = read_molecules(
      {qm9_dataset("qm9_subset.xyz.gz")}, options, ErrorPolicy::fail, [&](PointSet&& p) {
        ++count;
        // 1 index + 15 properties, in QM9 order, each with its unit.
        if (p.properties.size() != 16 || p.properties[0].key != "index") {
          ++mismatches;
          return;
        }
        const auto& qm9 = flt::io::qm9_targets();
        for (std::size_t k = 0; k < qm9.size(); ++k) {
          const Property& prop = p.properties[k + 1];
          if (prop.key != qm9[k].name || prop.unit != qm9[k].source_unit ||
              !prop.number) {
            ++mismatches;
          }
        }
        const auto gdb = static_cast<std::size_t>(*p.number("index"));
        const auto it = index.find(gdb);
        if (it == index.end() || it->second.n_atoms != p.size() ||
            *p.number("U0") != it->second.u0 || *p.number("homo") != it->second.homo ||
            *p.number("Cv") != it->second.cv || p.title != "gdb " + std::to_string(gdb)) {
          ++mismatches;
        }
        for (int z : p.atomic_numbers) {
          if (z != 1 && z != 6 && z != 7 && z != 8) ++mismatches;
        }
      });
  CHECK(summary.ok());
  CHECK(count == 13023);
  CHECK(mismatches == 0);
}

TEST_CASE("QM9: first record values and unit conversion", "[chem][qm9]") {
  const auto r = read_all({std::string(FLT_TEST_DATA_DIR) + "/qm9/qm9_first20_schnetpack.xyz"});
  CHECK(r.summary.ok());
  REQUIRE(r.records.size() == 20);
  const PointSet& ch4 = r.records[0];
  CHECK(ch4.title == "gdb 1");
  CHECK(ch4.record == 1);
  CHECK(ch4.atomic_numbers == std::vector<int>{6, 1, 1, 1, 1});
  CHECK(ch4.positions(0, 1) == 1.0858041578);
  CHECK(*ch4.number("A") == 157.7118);
  CHECK(ch4.property("U0")->unit == "Hartree");
  CHECK(*ch4.number("U0") == -40.47893);
  CHECK(ch4.property("alpha")->unit == "Bohr^3");
  CHECK(ch4.property("Cv")->unit == "cal/(mol K)");
  CHECK(ch4.property("mu")->unit == "Debye");
  CHECK(r.records[19].record == 20);
}

namespace {
void check_original(const std::vector<PointSet>& records, const std::string& prefix) {
  REQUIRE(records.size() == 3);
  const PointSet& ch4 = records[0];
  CHECK(ch4.source == prefix + "dsgdb9nsd_000001.xyz");
  CHECK(ch4.record == 1);
  CHECK(ch4.title == "gdb 1");
  CHECK(ch4.atomic_numbers == std::vector<int>{6, 1, 1, 1, 1});
  // `*^` exponents give the decimal values of the shared subset.
  CHECK(ch4.positions(0, 2) == 0.0080009958);
  CHECK(ch4.positions(1, 0) == 0.002150416);
  CHECK(ch4.positions(1, 1) == -0.0060313176);
  CHECK(*ch4.number("mu") == 0.0);
  CHECK(*ch4.number("U0") == -40.47893);
  const AtomColumn* mulliken = ch4.column("mulliken_charge");
  REQUIRE(mulliken != nullptr);
  CHECK(mulliken->unit == "e");
  CHECK(mulliken->values == std::vector<double>{-0.535689, 0.133921, 0.133922, 0.133923, 0.133923});
  REQUIRE(ch4.property("frequencies") != nullptr);
  CHECK(ch4.property("frequencies")->unit == "cm^-1");
  CHECK(ch4.property("frequencies")->value.rfind("1341.307 1341.3284", 0) == 0);
  CHECK(ch4.property("smiles_gdb17")->value == "C");
  CHECK(ch4.property("smiles_b3lyp")->value == "C");
  CHECK(ch4.property("inchi_b3lyp")->value == "InChI=1S/CH4/h1H4");
  CHECK(records[1].atomic_numbers == std::vector<int>{7, 1, 1, 1});
  CHECK(records[1].positions(1, 1) == 0.0125452063);
  CHECK(records[2].property("inchi_gdb17")->value == "InChI=1S/H2O/h1H2");
  CHECK(records[2].column("mulliken_charge")->values.size() == 3);
}
}  // namespace

TEST_CASE("QM9 original format: directory of dsgdb9nsd files", "[chem][qm9]") {
  const auto r = read_all({test_data("qm9_original")});
  CHECK(r.summary.ok());
  check_original(r.records, test_data("qm9_original") + "/");
}

TEST_CASE("QM9 original format: .tar.bz2 archive", "[chem][qm9]") {
  const std::string archive = test_data("qm9_original.tar.bz2");
  const auto r = read_all({archive});
  CHECK(r.summary.ok());
  check_original(r.records, archive + ":qm9_original/");
}

TEST_CASE("QM9: forced format and malformed comment lines", "[chem][qm9]") {
  // Concatenated original-format records (trailers between records) read as one stream.
  std::string text;
  for (const char* name : {"dsgdb9nsd_000001.xyz", "dsgdb9nsd_000002.xyz"}) {
    std::ifstream in(test_data(std::string("qm9_original/") + name));
    text += std::string(std::istreambuf_iterator<char>(in), {});
  }
  auto r = read_text(text, Format::qm9);
  CHECK(r.summary.ok());
  REQUIRE(r.records.size() == 2);
  CHECK(r.records[1].record == 2);
  CHECK(r.records[1].property("smiles_gdb17")->value == "N");

  r = read_text("1\ngdb 7 1 2 3\nC 0 0 0\n1\ngdb 8 1 2 3 4 5 6 7 8 9 10 11 12 13 14 x\nC 0 0 0\n",
                Format::qm9);
  CHECK(r.records.empty());
  REQUIRE(r.summary.skipped.size() == 2);
  CHECK(r.summary.skipped[0].record == 1);
  CHECK(r.summary.skipped[0].reason.find("15 numbers") != std::string::npos);
  CHECK(r.summary.skipped[1].record == 2);
  CHECK(r.summary.skipped[1].reason.find("Cv") != std::string::npos);
}
