// Conformers for 2-D records: flt's --missing-3d generate against RDKit's own ETKDGv3 (with the
// same seed and the random-coordinate fallback) called directly through the RDKit C++ API on the
// same records; MMFF94 clean-up against RDKit's MMFF94 minimiser.
#include "chem_test_util.hpp"

#include "chem/conformer.hpp"

#include <GraphMol/DistGeomHelpers/Embedder.h>
#include <GraphMol/FileParsers/MolSupplier.h>
#include <ForceField/ForceField.h>
#include <GraphMol/ForceFieldHelpers/MMFF/AtomTyper.h>
#include <GraphMol/ForceFieldHelpers/MMFF/Builder.h>
#include <GraphMol/MolOps.h>
#include <GraphMol/RWMol.h>
#include <GraphMol/SmilesParse/SmilesWrite.h>

#include <catch2/catch.hpp>
#include <omp.h>

#include <algorithm>

#include <memory>
#include <optional>

using namespace flt::chem;
using namespace flt::chem::test;

namespace {

// 41 drug-like NCI molecules drawn in 2-D plus one that has no 3-D embedding (tests/chem/data).
std::string drug_like_2d() { return test_data("drug_like_2d.sdf"); }

// RDKit's own recipe: SDMolSupplier, AddHs, ETKDGv3 with the seed, and when that fails the same
// again from random coordinates. nullopt where RDKit gives no conformer.
std::vector<std::optional<RDKit::RWMol>> rdkit_reference(const std::string& file, int attempts,
                                                         bool fallback, bool mmff = false) {
  std::vector<std::optional<RDKit::RWMol>> out;
  RDKit::SDMolSupplier supplier(file, true, false);
  while (!supplier.atEnd()) {
    std::unique_ptr<RDKit::ROMol> mol(supplier.next());
    REQUIRE(mol);
    RDKit::RWMol with_h(*mol);
    RDKit::MolOps::addHs(with_h);
    RDKit::DGeomHelpers::EmbedParameters params = RDKit::DGeomHelpers::ETKDGv3;
    params.randomSeed = 42;
    params.maxIterations = static_cast<unsigned>(attempts);
    int id = RDKit::DGeomHelpers::EmbedMolecule(with_h, params);
    if (id < 0 && fallback) {
      params.useRandomCoords = true;
      id = RDKit::DGeomHelpers::EmbedMolecule(with_h, params);
    }
    if (id >= 0 && mmff) {
      // What RDKit's MMFFOptimizeMolecule does (its header defines functions out of line, so
      // only one file of a program may include it: flt's conformer.cpp does).
      RDKit::MMFF::MMFFMolProperties properties(with_h, "MMFF94");
      REQUIRE(properties.isValid());
      std::unique_ptr<ForceFields::ForceField> field(
          RDKit::MMFF::constructForceField(with_h, &properties, 10.0, -1, true));
      field->initialize();
      field->minimize(2000);
    }
    if (id >= 0) {
      out.emplace_back(std::move(with_h));
    } else {
      out.emplace_back(std::nullopt);
    }
  }
  return out;
}

std::size_t count(const std::vector<std::optional<RDKit::RWMol>>& mols) {
  std::size_t n = 0;
  for (const auto& m : mols) n += m ? 1 : 0;
  return n;
}

// flt's coordinates equal RDKit's, record by record.
void check_same_conformers(const ReadAll& flt_read,
                           const std::vector<std::optional<RDKit::RWMol>>& reference) {
  std::size_t k = 0;
  for (std::size_t record = 1; record <= reference.size(); ++record) {
    const auto& ref = reference[record - 1];
    if (!ref) continue;
    REQUIRE(k < flt_read.records.size());
    const PointSet& p = flt_read.records[k++];
    REQUIRE(p.record == record);
    CHECK(p.conformer_generated);
    REQUIRE(p.size() == ref->getNumAtoms());
    const auto& conf = ref->getConformer();
    double worst = 0;
    for (unsigned i = 0; i < ref->getNumAtoms(); ++i) {
      const auto& r = conf.getAtomPos(i);
      worst = std::max({worst, std::abs(p.positions(i, 0) - r.x), std::abs(p.positions(i, 1) - r.y),
                        std::abs(p.positions(i, 2) - r.z)});
    }
    CHECK(worst < 1e-9);
  }
  CHECK(k == flt_read.records.size());
}

}  // namespace

TEST_CASE("Conformers: --missing-3d generate gives RDKit's ETKDGv3 count and coordinates",
          "[chem][conformer]") {
  // One attempt per try: there the random-coordinate fallback decides for several records, so the
  // counts differ without it (checked on RDKit's side, so the file keeps testing the fallback).
  ReadOptions options;
  options.missing_3d = Missing3D::generate;
  options.seed = 42;
  options.conformer_attempts = 1;
  const auto reference = rdkit_reference(drug_like_2d(), 1, true);
  const auto without_fallback = rdkit_reference(drug_like_2d(), 1, false);
  REQUIRE(reference.size() == 42);
  CHECK(count(without_fallback) < count(reference));

  const ReadAll flt_read = read_all({drug_like_2d()}, options);
  CHECK(flt_read.records.size() == count(reference));
  CHECK(flt_read.records.size() + flt_read.summary.skipped.size() == 42);
  check_same_conformers(flt_read, reference);
  // The anti-Bredt olefin has no embedding: reported with the file, the record and the reason.
  REQUIRE(!flt_read.summary.skipped.empty());
  CHECK(flt_read.summary.skipped.back().record == 42);
  CHECK(flt_read.summary.skipped.back().reason.find("ETKDGv3 could not embed") != std::string::npos);

  SECTION("RDKit's default attempt bound") {
    options.conformer_attempts = 0;
    const auto full_reference = rdkit_reference(drug_like_2d(), 0, true);
    const ReadAll full = read_all({drug_like_2d()}, options);
    CHECK(full.records.size() == count(full_reference));
    check_same_conformers(full, full_reference);
  }
}

TEST_CASE("Conformers: MMFF94 clean-up matches RDKit's MMFF94 minimisation", "[chem][conformer]") {
  // The first five records of the file, through a stream (keeps the test short).
  std::ifstream in(drug_like_2d());
  std::string text, line;
  int records = 0;
  while (records < 5 && std::getline(in, line)) {
    text += line + "\n";
    if (line.rfind("$$$$", 0) == 0) ++records;
  }
  TempDir dir;
  const std::string five = dir.file("five.sdf");
  std::ofstream(five) << text;

  ReadOptions options;
  options.missing_3d = Missing3D::generate;
  options.conformer_attempts = 1;
  options.optimize = Optimize::mmff;
  const auto reference = rdkit_reference(five, 1, true, true);
  const ReadAll flt_read = read_all({five}, options);
  REQUIRE(flt_read.records.size() == 5);
  check_same_conformers(flt_read, reference);
  // And the clean-up moved the atoms away from the plain ETKDG geometry.
  options.optimize = Optimize::none;
  const ReadAll plain = read_all({five}, options);
  REQUIRE(plain.records.size() == 5);
  CHECK((plain.records[0].positions - flt_read.records[0].positions).cwiseAbs().maxCoeff() > 1e-3);
}

TEST_CASE("Conformers: option names", "[chem][conformer]") {
  CHECK(optimize_from_name("none") == Optimize::none);
  CHECK(optimize_from_name("mmff") == Optimize::mmff);
  CHECK_THROWS_AS(optimize_from_name("uff"), flt::InvalidArgument);
}

TEST_CASE("SMILES: conformers generated on several threads give the records of one thread",
          "[chem][conformers][smiles]") {
  // The 41 drug-like molecules as SMILES lines, with bad lines between them; one embedding
  // attempt per try, so that some molecules need the random-coordinate retry (logged).
  std::string text;
  RDKit::SDMolSupplier supplier(drug_like_2d(), true, false);
  for (int k = 0; k < 41; ++k) {
    std::unique_ptr<RDKit::ROMol> mol(supplier.next());
    REQUIRE(mol);
    text += RDKit::MolToSmiles(*mol) + " nci_" + std::to_string(k + 1) + "\n";
    if (k % 10 == 3) text += "C1CC broken_" + std::to_string(k) + "\n";
  }
  ReadOptions options;
  options.conformer_attempts = 1;
  struct Run {
    ReadAll read;
    std::vector<std::string> log;
  };
  auto run = [&](int threads) {
    Run r;
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    auto previous = flt::set_log_sink([&](flt::LogLevel level, std::string_view message) {
      if (level >= flt::LogLevel::info) r.log.emplace_back(message);
    });
    r.read = read_text(text, Format::smi, options);
    flt::set_log_sink(previous);
    omp_set_num_threads(saved);
    return r;
  };
  const Run one = run(1);
  REQUIRE(one.read.records.size() == 41);
  REQUIRE(one.read.summary.skipped.size() == 4);
  CHECK(one.read.summary.skipped[0].record == 5);
  const auto retries = std::count_if(one.log.begin(), one.log.end(), [](const std::string& line) {
    return line.find("random starting coordinates") != std::string::npos;
  });
  CHECK(retries >= 1);
  for (const int threads : {2, 3}) {
    INFO(threads << " threads");
    const Run many = run(threads);
    REQUIRE(many.read.records.size() == one.read.records.size());
    for (std::size_t i = 0; i < one.read.records.size(); ++i) {
      INFO("record " << one.read.records[i].record);
      CHECK(many.read.records[i].record == one.read.records[i].record);
      CHECK(many.read.records[i].title == one.read.records[i].title);
      CHECK(many.read.records[i].atomic_numbers == one.read.records[i].atomic_numbers);
      CHECK(many.read.records[i].positions == one.read.records[i].positions);  // bitwise
    }
    REQUIRE(many.read.summary.skipped.size() == one.read.summary.skipped.size());
    for (std::size_t i = 0; i < one.read.summary.skipped.size(); ++i) {
      CHECK(many.read.summary.skipped[i].record == one.read.summary.skipped[i].record);
      CHECK(many.read.summary.skipped[i].reason == one.read.summary.skipped[i].reason);
    }
    CHECK(many.log == one.log);  // the same messages in record order
  }
}

TEST_CASE("SMILES: the fragments of a salt or mixture are laid out apart, not on top of each other",
          "[chem][conformers][smiles]") {
  std::vector<std::string> log;
  auto previous = flt::set_log_sink([&](flt::LogLevel, std::string_view message) { log.emplace_back(message); });
  const ReadAll r = read_text("smiles,name\nCCCCCCO.CCO,mixture\nC.C,two methanes\nCCN.[Cl-].O,three\n",
                              Format::csv);
  flt::set_log_sink(previous);
  REQUIRE(r.records.size() == 3);
  const std::vector<std::vector<int>> fragment_sizes = {{21, 9}, {5, 5}, {10, 1, 3}};
  for (std::size_t m = 0; m < r.records.size(); ++m) {
    const PointSet& p = r.records[m];
    INFO(p.title);
    // Fragments from the kept molecule (its hydrogens follow all heavy atoms).
    REQUIRE(p.molecule);
    std::vector<int> fragment_of;
    const unsigned count = RDKit::MolOps::getMolFrags(*p.molecule, fragment_of);
    REQUIRE(count == fragment_sizes[m].size());
    double closest = 1e9;
    for (flt::Index i = 0; i < p.positions.rows(); ++i)
      for (flt::Index j = i + 1; j < p.positions.rows(); ++j)
        if (fragment_of[static_cast<std::size_t>(i)] != fragment_of[static_cast<std::size_t>(j)])
          closest = std::min(closest, (p.positions.row(i) - p.positions.row(j)).norm());
    CHECK(closest >= 3.0);
  }
  CHECK(std::count_if(log.begin(), log.end(), [](const std::string& line) {
          return line.find("fragments embedded apart") != std::string::npos;
        }) == 3);
}
