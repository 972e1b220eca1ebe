// Dataset loading: labels from QM9 headers, extended-XYZ keys and CSV files, units converted at the
// boundary, missing labels masked and counted, bad records skipped with reasons or fatal, batches.
#include "pipeline/dataset.hpp"
#include "test_train_util.hpp"

#include "core/error.hpp"
#include "core/random.hpp"
#include "io/units.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

using namespace flt;
using namespace flt::pipeline;
using flt::pipeline::testing::ScratchDir;

namespace {

constexpr double kHartreeEv = 27.211386245988;

std::string qm9_subset() { return std::string(FLT_SOURCE_DIR) + "/datasets/qm9/qm9_subset.xyz.gz"; }

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// Five extended-XYZ records: good, label missing, NaN coordinate, no atoms, one atom.
std::string mixed_extxyz() {
  return "3\nProperties=species:S:1:pos:R:3 energy=-10.5 title=water\n"
         "O 0.0 0.0 0.0\nH 0.96 0.0 0.0\nH -0.24 0.93 0.0\n"
         "2\nProperties=species:S:1:pos:R:3 title=nolabel\n"
         "H 0.0 0.0 0.0\nH 0.74 0.0 0.0\n"
         "2\nProperties=species:S:1:pos:R:3 energy=-1.0 title=nancoord\n"
         "H 0.0 0.0 0.0\nH nan 0.0 0.0\n"
         "0\nProperties=species:S:1:pos:R:3 energy=-2.0 title=empty\n"
         "1\nProperties=species:S:1:pos:R:3 energy=-0.5 title=atom\n"
         "H 0.0 0.0 0.0\n";
}

}  // namespace

TEST_CASE("QM9 labels are read from the header and converted from Hartree to eV", "[dataset]") {
  DatasetOptions o;
  o.inputs = {qm9_subset()};
  o.targets = {"U0", "GAP", "mu"};  // any case is accepted for QM9 names
  o.limit = 20;
  const Dataset d = load_dataset(o);
  REQUIRE(d.size() == 20);
  REQUIRE(d.num_targets() == 3);
  CHECK(d.targets[0].name == "U0");
  CHECK(d.targets[1].name == "gap");
  CHECK(d.targets[0].unit == "eV");
  CHECK(d.targets[0].source_unit == "Hartree");
  CHECK(d.targets[2].unit == "Debye");
  CHECK(d.targets[0].extensive);
  CHECK_FALSE(d.targets[1].extensive);
  CHECK_FALSE(d.targets[2].extensive);
  // Record 1 is methane: "gdb 1", U0 = -40.47893 Ha, gap = 0.5048 Ha, mu = 0 D.
  CHECK(d.ids[0] == "gdb 1");
  CHECK(d.titles[0] == "gdb 1");
  CHECK(d.molecules[0].atomic_numbers == std::vector<std::int32_t>{6, 1, 1, 1, 1});
  CHECK(d.labels(0, 0) == Approx(-40.47893 * kHartreeEv).epsilon(1e-14));
  CHECK(d.labels(0, 1) == Approx(0.5048 * kHartreeEv).epsilon(1e-14));
  CHECK(d.labels(0, 2) == 0.0);
  CHECK(d.molecules[0].positions[1][1] == Approx(-0.0060313176));
  CHECK(d.missing_per_target == std::vector<std::size_t>{0, 0, 0});

  // A training unit may be asked for: kcal/mol.
  o.units = {{"U0", "kcal/mol"}};
  const Dataset k = load_dataset(o);
  CHECK(k.targets[0].unit == "kcal/mol");
  CHECK(k.labels(0, 0) == Approx(-40.47893 * 627.509474).epsilon(1e-8));
}

TEST_CASE("extended XYZ: missing labels masked and counted, bad records skipped with reasons", "[dataset]") {
  ScratchDir dir("mixed");
  write_text(dir / "mixed.xyz", mixed_extxyz());
  DatasetOptions o;
  o.inputs = {(dir / "mixed.xyz").string()};
  o.targets = {"energy"};
  o.source_units = {{"energy", "eV"}};
  const Dataset d = load_dataset(o);
  // water, nolabel, atom kept (a single atom is a valid molecule by default).
  REQUIRE(d.size() == 3);
  CHECK(d.titles == std::vector<std::string>{"water", "nolabel", "atom"});
  CHECK(d.labels(0, 0) == -10.5);
  CHECK(std::isnan(d.labels(1, 0)));
  CHECK(d.labels(2, 0) == -0.5);
  CHECK(d.missing_per_target == std::vector<std::size_t>{1});
  CHECK(d.targets[0].unit == "eV");
  CHECK(d.targets[0].extensive);  // an energy
  // The NaN-coordinate and the empty record are skipped, each with file, record and reason.
  REQUIRE(d.summary.skipped.size() == 2);
  CHECK(d.summary.skipped[0].record == 3);
  CHECK(d.summary.skipped[1].record == 4);
  CHECK_THAT(d.describe(), Catch::Contains("energy: 1 label missing"));

  SECTION("min-atoms 2 rejects the single atom") {
    o.min_atoms = 2;
    const Dataset e = load_dataset(o);
    CHECK(e.size() == 2);
    REQUIRE(e.summary.skipped.size() == 3);
    CHECK_THAT(e.summary.skipped[2].reason, Catch::Contains("fewer than min-atoms"));
  }
  SECTION("missing labels: skip drops the molecule, error throws naming the record") {
    o.missing = MissingLabels::skip;
    CHECK(load_dataset(o).size() == 2);
    o.missing = MissingLabels::error;
    try {
      load_dataset(o);
      FAIL("expected an InputError");
    } catch (const InputError& e) {
      CHECK(e.record() == 2);
      CHECK_THAT(std::string(e.what()), Catch::Contains("no label for target 'energy'"));
    }
  }
  SECTION("error policy fail: the first bad record is fatal") {
    o.policy = chem::ErrorPolicy::fail;
    try {
      load_dataset(o);
      FAIL("expected an InputError");
    } catch (const InputError& e) {
      CHECK(e.record() == 3);
      CHECK_THAT(e.file(), Catch::Contains("mixed.xyz"));
    }
  }
  SECTION("ASE extended XYZ (Properties=): energy in eV without --source-units; they override it") {
    o.source_units.clear();
    const Dataset ase = load_dataset(o);
    CHECK(ase.labels(0, 0) == -10.5);
    CHECK(ase.targets[0].source_unit == "eV");
    o.source_units = {{"energy", "kcal/mol"}};
    const Dataset kcal = load_dataset(o);
    CHECK(kcal.labels(0, 0) == Approx(-10.5 * 4184.0 / 96485.33212331001).epsilon(1e-12));
    CHECK(kcal.targets[0].source_unit == "kcal/mol");
  }
  SECTION("a label without a unit is an error unless --source-units gives it") {
    // Without Properties= nothing defines the unit of 'energy'.
    write_text(dir / "plain.xyz", "1\nenergy=-0.5 title=atom\nH 0.0 0.0 0.0\n");
    o.inputs = {(dir / "plain.xyz").string()};
    o.source_units.clear();
    CHECK_THROWS_WITH(load_dataset(o), Catch::Contains("has no unit"));
    // A dimensionless label (logP, pIC50 in Chemprop files) is declared with unit 1.
    write_text(dir / "logp.xyz", "1\nlogP=1.25 title=atom\nH 0.0 0.0 0.0\n");
    o.inputs = {(dir / "logp.xyz").string()};
    o.targets = {"logP"};
    CHECK_THROWS_WITH(load_dataset(o), Catch::Contains("has no unit"));
    o.source_units = {{"logP", "1"}};
    const Dataset logp = load_dataset(o);
    CHECK(logp.labels(0, 0) == 1.25);
    CHECK(logp.targets[0].unit.empty());  // dimensionless
    o.source_units = {{"logP", "dimensionless"}};
    CHECK(load_dataset(o).labels(0, 0) == 1.25);
  }
  SECTION("an unknown target is an error listing the labels present") {
    o.targets = {"enrgy"};
    o.source_units = {{"enrgy", "eV"}};
    CHECK_THROWS_WITH(load_dataset(o), Catch::Contains("unknown target 'enrgy'") && Catch::Contains("energy"));
  }
  SECTION("unit and pooling keys match targets in any case; a key that names no target is an error") {
    o.source_units = {{"ENERGY", "kcal/mol"}};
    o.units = {{"Energy", "meV"}};
    const Dataset upper = load_dataset(o);
    CHECK(upper.targets[0].unit == "meV");
    CHECK(upper.labels(0, 0) == Approx(-10.5 * 43.364104).epsilon(1e-6));  // kcal/mol -> meV
    o.units.clear();
    o.source_units = {{"energy", "eV"}, {"enrgy", "kcal/mol"}};  // a typo would be ignored silently
    CHECK_THROWS_WITH(load_dataset(o), Catch::Contains("--source-units given for 'enrgy', which is not a target"));
    o.source_units = {{"energy", "eV"}};
    o.units = {{"gapp", "meV"}};
    CHECK_THROWS_WITH(load_dataset(o), Catch::Contains("--units given for 'gapp'"));
  }
  SECTION("one-letter labels keep their names; QM9's one-letter names alias only as QM9 spells them") {
    write_text(dir / "letters.xyz", "1\nProperties=species:S:1:pos:R:3 g=0.5 h=0.25 gap=0.1\nHe 0 0 0\n");
    o.inputs = {(dir / "letters.xyz").string()};
    o.targets = {"g", "h", "GAP"};
    o.source_units = {{"g", "eV"}, {"h", "1"}, {"gap", "eV"}};
    const Dataset letters = load_dataset(o);
    CHECK(letters.target_names() == std::vector<std::string>{"g", "h", "gap"});
    CHECK(letters.labels(0, 0) == 0.5);
    CHECK(letters.labels(0, 1) == 0.25);
  }
}

TEST_CASE("QM7 as distributed: labels after the file name, kcal/mol from the key, no unit option", "[dataset]") {
  ScratchDir dir("qm7");
  write_text(dir / "qm7.xyz",
             "3\nqm7/0001.xyz E_PBE0_kcal_per_mol=-417.031 E_DFTB3_kcal_per_mol=-431.79 charge=0\n"
             "O 0.0 0.0 0.1173\nH 0.0 0.7572 -0.4692\nH 0.0 -0.7572 -0.4692\n"
             "5\nqm7/0002.xyz E_PBE0_kcal_per_mol=-712.42 E_DFTB3_kcal_per_mol=-700.10 charge=0\n"
             "C 0 0 0\nH 0.6291 0.6291 0.6291\nH -0.6291 -0.6291 0.6291\n"
             "H -0.6291 0.6291 -0.6291\nH 0.6291 -0.6291 -0.6291\n");
  DatasetOptions o;
  o.inputs = {(dir / "qm7.xyz").string()};
  o.targets = {"E_PBE0_kcal_per_mol"};
  const Dataset d = load_dataset(o);
  REQUIRE(d.size() == 2);
  CHECK(d.titles == std::vector<std::string>{"qm7/0001.xyz", "qm7/0002.xyz"});
  CHECK(d.targets[0].source_unit == "kcal/mol");
  CHECK(d.targets[0].unit == "eV");  // energies train in eV
  CHECK(d.targets[0].extensive);
  CHECK(d.labels(0, 0) == Approx(-417.031 * 4184.0 / 96485.33212331001).epsilon(1e-12));
}

TEST_CASE("labels from a CSV keyed by title, with units in the header", "[dataset]") {
  ScratchDir dir("csv");
  write_text(dir / "mixed.xyz", mixed_extxyz());
  write_text(dir / "labels.csv", "title,E [kcal/mol],dipole [D]\nwater,-100,1.85\natom,,0\nnolabel,-10,NA\n");
  DatasetOptions o;
  o.inputs = {(dir / "mixed.xyz").string()};
  o.targets = {"E", "dipole"};
  o.labels_csv = (dir / "labels.csv").string();
  const Dataset d = load_dataset(o);
  REQUIRE(d.size() == 3);
  CHECK(d.targets[0].unit == "eV");
  CHECK(d.targets[0].source_unit == "kcal/mol");
  CHECK(d.targets[1].unit == "Debye");
  CHECK(d.targets[0].extensive);
  CHECK_FALSE(d.targets[1].extensive);
  CHECK(d.labels(0, 0) == Approx(-100 * 0.0433641043).epsilon(1e-8));
  CHECK(d.labels(0, 1) == 1.85);
  CHECK(std::isnan(d.labels(1, 1)));  // "nolabel": dipole NA
  CHECK(std::isnan(d.labels(2, 0)));  // "atom": E empty
  CHECK(d.missing_per_target == std::vector<std::size_t>{1, 1});
  o.targets = {"missing_column"};
  CHECK_THROWS_WITH(load_dataset(o), Catch::Contains("no column for target 'missing_column'"));
}

TEST_CASE("a label name a model cannot hold is refused before reading, with the way out", "[dataset]") {
  // SD tags as RDKit's SDWriter writes them: a name with blanks (common in exported data) and, the
  // way out, the tag renamed with its unit in flt's "name [unit]" form.
  ScratchDir dir("label_names");
  const std::string molblock =
      "water\n     RDKit          3D\n\n  3  2  0  0  0  0  0  0  0  0999 V2000\n"
      "    0.0000    0.0000    0.1173 O   0  0  0  0  0  0  0  0  0  0  0  0\n"
      "    0.0000    0.7572   -0.4692 H   0  0  0  0  0  0  0  0  0  0  0  0\n"
      "    0.0000   -0.7572   -0.4692 H   0  0  0  0  0  0  0  0  0  0  0  0\n"
      "  1  2  1  0\n  1  3  1  0\nM  END\n";
  write_text(dir / "spaced.sdf", molblock + ">  <Total Energy (kcal/mol)>  (1) \n-47.5\n\n$$$$\n");
  write_text(dir / "renamed.sdf", molblock + ">  <E_total [kcal/mol]>  (1) \n-47.5\n\n$$$$\n");
  DatasetOptions o;
  o.inputs = {(dir / "spaced.sdf").string(), (dir / "missing.sdf").string()};  // not read: refused first
  o.targets = {"Total Energy (kcal/mol)"};
  o.source_units = {{"Total Energy (kcal/mol)", "kcal/mol"}};
  CHECK_THROWS_AS(load_dataset(o), ConfigError);
  CHECK_THROWS_WITH(load_dataset(o), Catch::StartsWith("target 'Total Energy (kcal/mol)' holds a blank: ") &&
                                         Catch::Contains("rename the label in the input") &&
                                         Catch::Contains(">  <E_total [kcal/mol]>"));
  o.targets = {"E,total"};
  o.source_units.clear();
  CHECK_THROWS_WITH(load_dataset(o), Catch::StartsWith("target 'E,total' holds ','"));
  o.inputs = {(dir / "renamed.sdf").string()};
  o.targets = {"E_total"};
  const Dataset d = load_dataset(o);
  REQUIRE(d.size() == 1);
  CHECK(d.targets[0].source_unit == "kcal/mol");
  CHECK(d.labels(0, 0) == Approx(-47.5 * 4184.0 / 96485.33212331001).epsilon(1e-12));
  // A tag of "N/A" (as spreadsheets and pandas write a missing value) is a missing label, masked
  // and counted; a word that is not a number stays an error of its record.
  write_text(dir / "na.sdf", molblock + ">  <E_total [kcal/mol]>  (1) \nN/A\n\n$$$$\n" + molblock +
                                 ">  <E_total [kcal/mol]>  (2) \n-47.5\n\n$$$$\n" + molblock +
                                 ">  <E_total [kcal/mol]>  (3) \nunknown\n\n$$$$\n");
  o.inputs = {(dir / "na.sdf").string()};
  const Dataset na = load_dataset(o);
  REQUIRE(na.size() == 2);
  CHECK(std::isnan(na.labels(0, 0)));
  CHECK(na.missing_per_target == std::vector<std::size_t>{1});
  REQUIRE(na.summary.skipped.size() == 1);
  CHECK(na.summary.skipped[0].record == 3);
  CHECK_THAT(na.summary.skipped[0].reason, Catch::Contains("'unknown' is not a number"));
}

TEST_CASE("subsets and ragged mini-batches", "[dataset]") {
  DatasetOptions o;
  o.inputs = {qm9_subset()};
  o.targets = {"U0"};
  o.limit = 10;
  const Dataset d = load_dataset(o);
  const std::vector<std::size_t> order{7, 2, 9, 0, 4};
  const auto batches = batch_indices(order, 2);
  REQUIRE(batches.size() == 3);
  CHECK(batches[2] == std::vector<std::size_t>{4});
  const Batch b = make_batch(d, batches[0]);
  CHECK(b.molecules.num_molecules() == 2);
  CHECK(b.molecules.num_atoms() ==
        static_cast<Index>(d.molecules[7].atomic_numbers.size() + d.molecules[2].atomic_numbers.size()));
  CHECK(b.labels(0, 0) == d.labels(7, 0));
  CHECK(b.labels(1, 0) == d.labels(2, 0));
  CHECK(b.molecules.coords(0, 0) == d.molecules[7].positions[0][0]);
  const Dataset s = subset(d, order);
  CHECK(s.size() == 5);
  CHECK(s.ids[0] == d.ids[7]);
  CHECK(s.labels(4, 0) == d.labels(4, 0));
  CHECK_THROWS_AS(batch_indices(order, 0), InvalidArgument);
}

TEST_CASE("sharded load: the first read keeps no coordinates, the second only the selected ones", "[dataset][shard]") {
  ScratchDir dir("dataset-shard");
  // The first 40 QM9 molecules with a bad record among them (atoms on top of each other).
  DatasetOptions full_options;
  full_options.inputs = {qm9_subset()};
  full_options.targets = {"U0", "gap"};
  full_options.limit = 40;
  const Dataset full = load_dataset(full_options);
  REQUIRE(full.size() == 40);
  REQUIRE(full.coordinates_held() == 40);
  const std::map<int, const char*> symbols{{1, "H"}, {6, "C"}, {7, "N"}, {8, "O"}, {9, "F"}};
  std::ostringstream written;
  for (std::size_t s = 0; s < full.size(); ++s) {
    if (s == 11) written << "2\nbad\nC 0 0 0\nC 0 0 0\n";
    const auto& m = full.molecules[s];
    written << m.atomic_numbers.size() << "\nProperties=species:S:1:pos:R:3 energy="
            << full.labels(static_cast<Index>(s), 0) << " title=m" << s << "\n";
    for (std::size_t i = 0; i < m.atomic_numbers.size(); ++i) {
      written << symbols.at(m.atomic_numbers[i]);
      for (double c : m.positions[i]) written << ' ' << c;
      written << '\n';
    }
  }
  const std::string text = written.str();
  const auto path = dir.path() / "shard.xyz";
  write_text(path, text);
  DatasetOptions o;
  o.inputs = {path.string()};
  o.targets = {"energy"};
  o.source_units = {{"energy", "eV"}};
  const Dataset whole = load_dataset(o);
  REQUIRE(whole.size() == 40);
  REQUIRE(whole.summary.skipped.size() == 1);

  o.keep_coordinates = [](std::size_t) { return false; };
  Dataset first = load_dataset(o);
  CHECK(first.size() == 40);
  CHECK(first.coordinates_held() == 0);
  CHECK(first.digests == whole.digests);  // taken from the coordinates before they were dropped
  CHECK(first.ids == whole.ids);
  CHECK(first.molecules[5].atomic_numbers == whole.molecules[5].atomic_numbers);
  CHECK(first.summary.skipped.size() == 1);

  // The molecules of "rank 1 of 3".
  const auto mine = [](std::size_t s) { return s % 3 == 1; };
  DatasetOptions again = o;
  again.keep_coordinates = nullptr;
  load_coordinates(first, again, mine);
  CHECK(first.coordinates_held() == 13);
  for (std::size_t s = 0; s < first.size(); ++s) {
    INFO(s);
    if (mine(s)) CHECK(first.molecules[s].positions == whole.molecules[s].positions);
    else CHECK(first.molecules[s].positions.empty());
  }

  SECTION("an input that changed between the reads is an error naming the molecule") {
    Dataset other = load_dataset(o);
    std::string changed = text;
    const auto at = changed.find("title=m7");
    REQUIRE(at != std::string::npos);
    changed[changed.find('\n', at) + 3] = '9';  // a digit of molecule m7's first coordinate
    write_text(path, changed);
    try {
      load_coordinates(other, again, mine);
      FAIL("no error");
    } catch (const IoError& e) {
      CHECK_THAT(e.what(), Catch::Contains("molecule 8"));
      CHECK_THAT(e.what(), Catch::Contains("'m7'"));
      CHECK_THAT(e.what(), Catch::Contains("second read"));
    }
    write_text(path, text.substr(0, text.find("title=m30")));
    CHECK_THROWS_AS(load_coordinates(other, again, mine), IoError);
    // A file that grew: the error, before the selection is asked about a molecule it never saw.
    const std::size_t first_count = other.size();
    const std::size_t comment_m1 = text.rfind('\n', text.find("title=m1\n")) + 1;
    const std::size_t record_m1 = text.rfind('\n', comment_m1 - 2) + 1;  // its atom-count line
    write_text(path, text + text.substr(0, record_m1));                 // molecule m0 once more
    const auto bounded = [&](std::size_t s) {
      REQUIRE(s < first_count);
      return mine(s);
    };
    CHECK_THROWS_WITH(load_coordinates(other, again, bounded), Catch::Contains("more good molecules than the first read's"));
  }
}

TEST_CASE("atom-budget mini-batches: within both bounds, every molecule once in order, oversize alone", "[dataset][batch-atoms]") {
  // Sizes like a dataset of small molecules with a few large structures among them.
  Rng rng(11);
  std::vector<std::size_t> atoms(500);
  for (auto& n : atoms) n = 3 + rng.below(27);
  atoms[17] = 50000;
  atoms[230] = 401;
  atoms[499] = 400;
  std::vector<std::size_t> order(atoms.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  Rng(3).shuffle(order);
  for (const std::size_t budget : {std::size_t{29}, std::size_t{100}, std::size_t{400}, std::size_t{5000}}) {
    INFO("budget " << budget);
    const auto batches = batch_indices(order, 32, atoms, budget);
    std::vector<std::size_t> joined;
    std::size_t alone = 0;
    for (const auto& b : batches) {
      REQUIRE(!b.empty());
      CHECK(b.size() <= 32);
      std::size_t total = 0;
      for (std::size_t i : b) total += atoms[i];
      // Over the budget only as a single molecule that is larger than the budget by itself.
      if (total > budget) {
        CHECK(b.size() == 1);
        ++alone;
      }
      joined.insert(joined.end(), b.begin(), b.end());
    }
    CHECK(joined == order);  // each molecule once per epoch, in the epoch's order
    std::size_t larger = 0;
    for (std::size_t n : atoms) larger += n > budget ? 1 : 0;
    CHECK(alone == larger);
    // Closed only when the next molecule would break a bound (greedy, no needless small batches).
    for (std::size_t b = 0; b + 1 < batches.size(); ++b) {
      std::size_t total = 0;
      for (std::size_t i : batches[b]) total += atoms[i];
      CHECK((batches[b].size() == 32 || total + atoms[batches[b + 1].front()] > budget));
    }
    CHECK(batch_indices(order, 32, atoms, budget) == batches);  // a pure function of its inputs
  }
  // No budget: the molecule-count batches.
  CHECK(batch_indices(order, 32, atoms, 0) == batch_indices(order, 32));
  CHECK(batch_indices(order, 32, {}, 0) == batch_indices(order, 32));
  CHECK_THROWS_AS(batch_indices(order, 32, std::span<const std::size_t>(atoms).first(10), 100), InvalidArgument);

  // On real molecules: a batch's atoms (what the model's memory grows with) within the budget.
  DatasetOptions o;
  o.inputs = {qm9_subset()};
  o.targets = {"U0"};
  o.limit = 64;
  const Dataset d = load_dataset(o);
  const auto counts = atom_counts(d);
  std::vector<std::size_t> all(d.size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
  for (const auto& b : batch_indices(all, 64, counts, 60)) {
    const Batch batch = make_batch(d, b);
    CHECK(batch.molecules.num_atoms() <= 60);
  }
}

TEST_CASE("The QM9 table: file order, and every unit known to the conversion table",
          "[pipeline][units]") {
  // The QM9 reader stores each property under the table's name and source unit; training
  // converts with io/units.hpp. A unit spelt differently would make a label refused.
  const auto& targets = io::qm9_targets();
  REQUIRE(targets.size() == 15);
  for (std::size_t i = 0; i < targets.size(); ++i) {
    INFO("property " << targets[i].name);
    CHECK(targets[i].qm9_column == static_cast<int>(i));
    CHECK(io::is_known_unit(targets[i].source_unit));
    CHECK(io::is_known_unit(targets[i].training_unit));
  }
}

TEST_CASE("model batches: large structures in the model's atom order, force labels moved with their atoms",
          "[dataset][order]") {
  // A shuffled 600-atom jittered lattice (above spatial_order_atoms) whose force label is a
  // function of the atom's own position, and a 3-atom molecule, in one extended-XYZ file.
  ScratchDir dir("dataset_model_batch");
  const Index n = 600;
  REQUIRE(n >= models::MoleculeModel<float>::spatial_order_atoms);
  const auto force_of = [](const double* r, int a) { return 0.01 * r[a] + 0.001 * (a + 1); };
  Rng rng(11);
  std::vector<std::array<double, 3>> atoms;
  for (Index i = 0; i < n; ++i)
    atoms.push_back({1.5 * static_cast<double>(i % 10) + rng.normal(0, 0.1),
                     1.5 * static_cast<double>((i / 10) % 10) + rng.normal(0, 0.1),
                     1.5 * static_cast<double>(i / 100) + rng.normal(0, 0.1)});
  for (Index i = n - 1; i > 0; --i)
    std::swap(atoms[static_cast<std::size_t>(i)], atoms[rng.below(static_cast<std::uint64_t>(i + 1))]);
  std::ostringstream text;
  text.precision(17);
  text << n << "\nProperties=species:S:1:pos:R:3:forces:R:3 energy=-100.0 title=lattice\n";
  for (Index i = 0; i < n; ++i) {
    const double* r = atoms[static_cast<std::size_t>(i)].data();
    text << (i % 3 == 0 ? "O" : i % 3 == 1 ? "C" : "H") << ' ' << r[0] << ' ' << r[1] << ' ' << r[2];
    for (int a = 0; a < 3; ++a) text << ' ' << force_of(r, a);
    text << '\n';
  }
  text << "3\nProperties=species:S:1:pos:R:3:forces:R:3 energy=-10.5 title=water\n"
          "O 0.0 0.0 0.0 0.1 0.2 0.3\nH 0.96 0.0 0.0 0.4 0.5 0.6\nH -0.24 0.93 0.0 0.7 0.8 0.9\n";
  write_text(dir / "structures.xyz", text.str());
  DatasetOptions o;
  o.inputs = {(dir / "structures.xyz").string()};
  o.targets = {"energy"};
  o.forces_column = "forces";
  const Dataset d = load_dataset(o);
  REQUIRE(d.size() == 2);
  const std::vector<std::size_t> both{0, 1};

  models::ModelConfig config;
  config.targets = {{"energy", "eV", true}};
  config.attention = models::AttentionKind::near_far;
  const models::MoleculeModel<float> model(config);
  const Batch plain = make_batch(d, both);
  const Batch ordered = make_model_batch(d, both, model);
  const auto order = model.spatial_order(plain.molecules);
  REQUIRE(order.has_value());
  CHECK_FALSE(model.spatial_order(ordered.molecules).has_value());  // already in the model's order
  CHECK(ordered.indices == plain.indices);
  CHECK(ordered.labels == plain.labels);
  CHECK(ordered.molecules.index.offsets() == plain.molecules.index.offsets());
  REQUIRE(ordered.forces.rows() == n + 3);
  Index moved = 0;
  for (Index i = 0; i < n + 3; ++i) {
    const Index from = (*order)[static_cast<std::size_t>(i)];
    if (i >= n) CHECK(from == i);  // the small molecule keeps its order
    moved += from != i ? 1 : 0;
    CHECK(ordered.molecules.coords.row(i) == plain.molecules.coords.row(from));
    CHECK(ordered.molecules.atomic_numbers[static_cast<std::size_t>(i)] ==
          plain.molecules.atomic_numbers[static_cast<std::size_t>(from)]);
    CHECK(ordered.molecules.formal_charges[static_cast<std::size_t>(i)] ==
          plain.molecules.formal_charges[static_cast<std::size_t>(from)]);
    // Each atom keeps its own force label (the file's function of its position).
    if (i < n)
      for (int a = 0; a < 3; ++a)
        CHECK(ordered.forces(i, a) == Approx(force_of(ordered.molecules.coords.row(i).data(), a)).margin(1e-12));
  }
  CHECK(moved > n / 2);
  CHECK(ordered.forces.bottomRows(3) == plain.forces.bottomRows(3));

  // Attention kinds without a neighbour list run in the batch's order: nothing moves.
  models::ModelConfig exact = config;
  exact.attention = models::AttentionKind::exact;
  const models::MoleculeModel<float> exact_model(exact);
  const Batch same = make_model_batch(d, both, exact_model);
  CHECK(same.molecules.coords == plain.molecules.coords);
  CHECK(same.forces == plain.forces);

  // reordered refuses what is not a permutation within the molecules.
  std::vector<Index> bad = *order;
  bad.pop_back();
  CHECK_THROWS_AS(models::reordered(plain.molecules, bad), InvalidArgument);
  bad = *order;
  std::swap(bad[0], bad[static_cast<std::size_t>(n)]);  // a row taken from the other molecule
  CHECK_THROWS_WITH(models::reordered(plain.molecules, bad), Catch::Contains("row 0 of molecule 0"));
  bad = *order;
  bad[1] = bad[0];  // a row taken twice
  CHECK_THROWS_WITH(models::reordered(plain.molecules, bad), Catch::Contains("taken before"));
}
