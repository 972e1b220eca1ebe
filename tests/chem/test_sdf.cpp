// SDF/MOL through RDKit: explicit hydrogens kept, implicit ones added with 3-D
// coordinates, 2-D records (error / ETKDG / accept), consecutive conformers, V3000, charges, tags.
#include "chem_test_util.hpp"

#include "../common/scratch_dir.hpp"
#include "core/error.hpp"
#include "core/log.hpp"

#include <GraphMol/ROMol.h>

#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

using namespace flt::chem;
using namespace flt::chem::test;

namespace {
double distance(const PointSet& p, unsigned i, unsigned j) {
  return (p.positions.row(i) - p.positions.row(j)).norm();
}
}  // namespace

TEST_CASE("SDF: explicit hydrogens are kept as given", "[chem][sdf]") {
  const auto r = read_all({parser_case("rdkit-data-deb/cdk2.sdf")});
  CHECK(r.summary.ok());
  REQUIRE(r.records.size() == 47);
  for (const auto& p : r.records) {
    CHECK(p.hydrogens_added == 0);
    REQUIRE(p.molecule);
    CHECK(p.molecule->getNumAtoms() == p.size());
    CHECK(p.coordinates_3d);
  }
  CHECK(r.records[0].property("Cluster") != nullptr);
}

TEST_CASE("SDF: implicit-only records get hydrogens with 3-D coordinates", "[chem][sdf]") {
  const std::string file = parser_case("rdkit-data-deb/bzr.sdf");
  const auto with_h = read_all({file});
  ReadOptions no_add;
  no_add.add_hydrogens = false;
  const auto without = read_all({file}, no_add);
  CHECK(with_h.summary.ok());
  CHECK(without.summary.ok());
  REQUIRE(with_h.records.size() == 163);
  REQUIRE(without.records.size() == 163);
  for (std::size_t k = 0; k < with_h.records.size(); ++k) {
    const PointSet& a = with_h.records[k];
    const PointSet& b = without.records[k];
    REQUIRE(a.hydrogens_added > 0);
    CHECK(b.hydrogens_added == 0);
    CHECK(a.size() == b.size() + static_cast<std::size_t>(a.hydrogens_added));
    // Heavy atoms unchanged, first and in order.
    for (std::size_t i = 0; i < b.size(); ++i) {
      CHECK(a.atomic_numbers[i] == b.atomic_numbers[i]);
      CHECK(a.positions.row(static_cast<flt::Index>(i)) ==
            b.positions.row(static_cast<flt::Index>(i)));
    }
    // Each added H sits at a bond length (0.9-1.2 A) from its heavy atom, in 3-D.
    for (std::size_t i = b.size(); i < a.size(); ++i) {
      CHECK(a.atomic_numbers[i] == 1);
      const auto* atom = a.molecule->getAtomWithIdx(static_cast<unsigned>(i));
      REQUIRE(atom->getDegree() == 1);
      const unsigned heavy = (*a.molecule->atomNeighbors(atom).begin())->getIdx();
      const double d = distance(a, static_cast<unsigned>(i), heavy);
      CHECK(d > 0.9);
      CHECK(d < 1.2);
    }
  }
}

TEST_CASE("SDF: records with polar hydrogens only get the others, with a warning", "[chem][sdf]") {
  // Ethanol with its hydroxyl hydrogen only (as docking tools write poses): 9 atoms once completed.
  const std::string block =
      "ethanol polar H\n  test\n\n  4  3  0  0  0  0  0  0  0  0999 V2000\n"
      "   -0.8900    0.2600    0.0500 C   0  0\n"
      "    0.5200   -0.2500   -0.0600 C   0  0\n"
      "    1.3300    0.8900    0.1800 O   0  0\n"
      "    2.2400    0.6000    0.1000 H   0  0\n"
      "  1  2  1  0\n  2  3  1  0\n  3  4  1  0\nM  END\n$$$$\n";
  flt::test_support::ScratchDir dir("polar_h");
  const std::string file = (dir / "polar.sdf").string();
  std::ofstream(file) << block;
  std::vector<std::string> warnings;
  const flt::LogSink previous = flt::set_log_sink([&](flt::LogLevel level, std::string_view text) {
    if (level == flt::LogLevel::warning) warnings.emplace_back(text);
  });
  const auto completed = read_all({file});
  ReadOptions keep;
  keep.add_hydrogens = false;
  const auto as_given = read_all({file}, keep);
  flt::set_log_sink(previous);
  REQUIRE(completed.records.size() == 1);
  CHECK(completed.records[0].size() == 9);
  CHECK(completed.records[0].hydrogens_added == 5);
  CHECK(completed.records[0].positions.row(3) == as_given.records[0].positions.row(3));  // kept
  REQUIRE(as_given.records.size() == 1);
  CHECK(as_given.records[0].size() == 4);
  REQUIRE(warnings.size() == 1);
  CHECK_THAT(warnings[0], Catch::Contains("hydrogens completed: added 5") && Catch::Contains("1 explicit"));
}

TEST_CASE("SDF: a planar molecule tagged 3D in the xy plane is 3-D, a drawing tagged 3D is not", "[chem][sdf]") {
  // Header line 2 with "3D" in columns 21-22 (RDKit's writer).
  const auto record = [](const std::string& title, const std::vector<std::string>& atoms,
                         const std::vector<std::string>& bonds) {
    std::string block = title + "\n     RDKit          3D\n\n";
    char counts[64];
    std::snprintf(counts, sizeof counts, "%3zu%3zu  0  0  0  0  0  0  0  0999 V2000\n", atoms.size(), bonds.size());
    block += counts;
    for (const auto& a : atoms) block += a + "\n";
    for (const auto& b : bonds) block += b + "\n";
    return block + "M  END\n$$$$\n";
  };
  const std::string ethylene = record(
      "ethylene", {"    0.6650    0.0000    0.0000 C   0  0", "   -0.6650    0.0000    0.0000 C   0  0",
                   "    1.2350    0.9250    0.0000 H   0  0", "    1.2350   -0.9250    0.0000 H   0  0",
                   "   -1.2350    0.9250    0.0000 H   0  0", "   -1.2350   -0.9250    0.0000 H   0  0"},
      {"  1  2  2  0", "  1  3  1  0", "  1  4  1  0", "  2  5  1  0", "  2  6  1  0"});
  const std::string methanol_drawing = record(
      "methanol drawn", {"    0.0000    0.0000    0.0000 C   0  0", "    1.2990    0.7500    0.0000 O   0  0"},
      {"  1  2  1  0"});
  flt::test_support::ScratchDir dir("planar");
  const std::string file = (dir / "planar.sdf").string();
  std::ofstream(file) << ethylene << methanol_drawing;
  const auto r = read_all({file});
  REQUIRE(r.records.size() == 1);  // ethylene
  CHECK(r.records[0].title == "ethylene");
  CHECK(r.records[0].size() == 6);
  CHECK(r.records[0].coordinates_3d);
  CHECK(r.records[0].hydrogens_added == 0);
  REQUIRE(r.summary.skipped.size() == 1);  // methanol: sp3 carbon with four neighbours in a plane
  CHECK(r.summary.skipped[0].record == 2);
  CHECK_THAT(r.summary.skipped[0].reason, Catch::Contains("no 3-D coordinates"));
}

TEST_CASE("SDF: 2-D records: error by default, ETKDG conformer on request, deterministic",
          "[chem][sdf]") {
  const std::string file = parser_case("rdkit-src/FileParsers/esters.sdf");
  const auto def = read_all({file});
  CHECK(def.records.empty());
  REQUIRE(def.summary.skipped.size() == 6);
  CHECK(def.summary.skipped[2].record == 3);
  CHECK(def.summary.skipped[2].reason.find("no 3-D coordinates") != std::string::npos);

  ReadOptions gen;
  gen.missing_3d = Missing3D::generate;
  gen.seed = 11;
  const auto a = read_all({file}, gen);
  const auto b = read_all({file}, gen);
  CHECK(a.summary.ok());
  REQUIRE(a.records.size() == 6);
  for (std::size_t k = 0; k < a.records.size(); ++k) {
    const PointSet& p = a.records[k];
    CHECK(p.conformer_generated);
    CHECK(p.coordinates_3d);
    CHECK(p.hydrogens_added > 0);
    CHECK(p.positions == b.records[k].positions);  // same seed, same conformer
    CHECK(p.positions.col(2).cwiseAbs().maxCoeff() > 0.1);  // really 3-D
    for (const auto* bond : p.molecule->bonds()) {
      // Organic bonds only: ETKDG has no good parameters for the yttrium these esters carry.
      if (bond->getBeginAtom()->getAtomicNum() > 10 || bond->getEndAtom()->getAtomicNum() > 10) {
        continue;
      }
      const double d = distance(p, bond->getBeginAtomIdx(), bond->getEndAtomIdx());
      CHECK(d > 0.9);
      CHECK(d < 1.7);
    }
  }
  ReadOptions accept;
  accept.missing_3d = Missing3D::accept;
  const auto flat = read_all({file}, accept);
  REQUIRE(flat.records.size() == 6);
  CHECK_FALSE(flat.records[0].coordinates_3d);
}

TEST_CASE("SDF: consecutive conformer records are separate point sets", "[chem][sdf]") {
  const auto r = read_all({parser_case("rdkit-src/Descriptors/EGFR_first10_10confs.sdf")});
  CHECK(r.summary.ok());
  REQUIRE(r.records.size() == 100);
  for (std::size_t m = 0; m < 10; ++m) {
    for (std::size_t c = 1; c < 10; ++c) {
      const PointSet& first = r.records[m * 10];
      const PointSet& other = r.records[m * 10 + c];
      CHECK(other.record == m * 10 + c + 1);
      CHECK(other.atomic_numbers == first.atomic_numbers);
      CHECK((other.positions - first.positions).norm() > 1e-3);
    }
  }
}

TEST_CASE("SDF: V3000 records, charges and tags", "[chem][sdf]") {
  ReadOptions accept;
  accept.missing_3d = Missing3D::accept;
  const auto multi = read_all({parser_case("rdkit-src/Wrap/github3553.sdf")}, accept);
  CHECK(multi.summary.ok());
  REQUIRE(multi.records.size() == 4);
  std::size_t tags = 0;
  for (const auto& p : multi.records) tags += p.properties.size();
  CHECK(tags == 20);

  // V3000 3-D with CHG= charges, but an R-group dummy atom: refused, and the reason says so.
  const auto chebi = read_all({parser_case("rdkit-src/FileParsers/chebi_57262.v3k.mol")});
  REQUIRE(chebi.summary.skipped.size() == 1);
  CHECK(chebi.summary.skipped[0].reason.find("dummy or query atom (R)") != std::string::npos);

  const auto v3 = read_all({parser_case("rdkit-src/FileParsers/v3k.3.mol")}, accept);
  REQUIRE(v3.records.size() == 1);
  int nonzero = 0;
  for (int q : v3.records[0].formal_charges) nonzero += q != 0 ? 1 : 0;
  CHECK(nonzero > 0);

  const auto tagged = read_all({parser_case("rdkit-src/ForceFieldHelpers_MMFF/bulk.sdf")});
  CHECK(tagged.summary.ok());
  REQUIRE(tagged.records.size() == 32);
  CHECK(tagged.records[0].properties.size() == 2);
}

TEST_CASE("SDF: unsanitizable records fail, or pass with sanitize off", "[chem][sdf]") {
  ReadOptions accept;
  accept.missing_3d = Missing3D::accept;
  const std::string file = parser_case("rdkit-src/FileParsers/unsanitary.mol");
  const auto strict = read_all({file}, accept);
  CHECK(strict.records.empty());
  REQUIRE(strict.summary.skipped.size() == 1);
  CHECK(strict.summary.skipped[0].reason.find("valence") != std::string::npos);
  accept.sanitize = false;
  const auto lax = read_all({file}, accept);
  CHECK(lax.summary.ok());
  CHECK(lax.records.size() == 1);
}

TEST_CASE("SDF: an empty or blank file has no records, as an empty XYZ file", "[chem][sdf][errors]") {
  for (const std::string& text : {std::string(), std::string("   \n\n"), std::string("\r\n\r\n\r\n")}) {
    INFO("'" << text << "'");
    const auto r = read_text(text, Format::sdf);
    CHECK(r.records.empty());
    REQUIRE(r.summary.skipped.size() == 1);
    CHECK(r.summary.skipped[0].record == 0);
    CHECK(r.summary.skipped[0].reason == "no molecule records in the file");
  }
}

TEST_CASE("SDF: data headers without <name> (older MDL exports) are read, and so is the rest of the file",
          "[chem][sdf]") {
  const std::string block =
      "water\n     RDKit          3D\n\n  3  2  0  0  0  0  0  0  0  0999 V2000\n"
      "   -0.0008    0.3664   -0.0000 O   0  0  0  0  0  0  0  0  0  0  0  0\n"
      "   -0.8123   -0.1835   -0.0000 H   0  0  0  0  0  0  0  0  0  0  0  0\n"
      "    0.8131   -0.1829    0.0000 H   0  0  0  0  0  0  0  0  0  0  0  0\n"
      "  1  2  1  0\n  1  3  1  0\nM  END\n";
  // A value line that starts with '>' (an activity qualifier, ChEMBL's ">10000") stays a value.
  const std::string text = block + "> DT12\n0.5\n\n> (MOLSREGNO)\n77\n\n$$$$\n" +  // field number, registry
                           block + ">  <y>\n1.5\n\n>  <IC50>\n>10000\n>2 lines\n\n$$$$\n" + block +
                           ">  <y>  (3)\n2.5\n\n$$$$\n";
  ReadOptions flat;
  flat.missing_3d = Missing3D::accept;  // the water is planar
  const auto r = read_text(text, Format::sdf, flat);
  CHECK(r.summary.ok());
  REQUIRE(r.records.size() == 3);  // RDKit's strict parser alone gave up after the first
  REQUIRE(r.records[0].property("DT12") != nullptr);
  CHECK(r.records[0].number("DT12") == 0.5);
  CHECK(r.records[0].number("(MOLSREGNO)") == 77);
  CHECK(r.records[1].number("y") == 1.5);
  REQUIRE(r.records[1].property("IC50") != nullptr);
  CHECK(r.records[1].property("IC50")->value == ">10000\n>2 lines");
  CHECK(r.records[1].properties.size() == 2);
  CHECK(r.records[2].number("y") == 2.5);
}
