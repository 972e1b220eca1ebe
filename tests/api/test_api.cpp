// Tests of the public C++ API (include/flt/) through libflt.so, using only the public headers (the
// way a user's program does). The models are small random-initialised ones written by
// make_test_model (no trained default model is needed): the tests check the API's behaviour --
// units, batching, threads, files, RDKit, errors, thread safety -- not chemistry.
#include <flt/flt.hpp>
#include <flt/rdkit.hpp>

#include <GraphMol/Conformer.h>
#include <GraphMol/FileParsers/MolSupplier.h>
#include <GraphMol/SmilesParse/SmilesParse.h>

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <thread>
#include <vector>

namespace fs = std::filesystem;

namespace {

// A per-process directory with two test models (seeds 1 and 2); removed at exit.
struct Fixture {
  fs::path dir;
  fs::path model1, model2;
  fs::path near_far1, near_far2;  // the default attention kind (forces tests)
  Fixture() {
    dir = fs::temp_directory_path() / ("flt_api_test_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    model1 = dir / "m1.flt";
    model2 = dir / "m2.flt";
    near_far1 = dir / "n1.flt";
    near_far2 = dir / "n2.flt";
    for (auto [path, seed, kind] : {std::tuple{model1, 1, "kronecker"}, std::tuple{model2, 2, "kronecker"},
                                    std::tuple{near_far1, 1, "near_far"}, std::tuple{near_far2, 2, "near_far"}}) {
      const std::string cmd = std::string("'") + FLT_MAKE_TEST_MODEL + "' '" + path.string() +
                              "' " + std::to_string(seed) + " " + kind;
      if (std::system(cmd.c_str()) != 0) throw std::runtime_error("failed: " + cmd);
    }
  }
  ~Fixture() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

const Fixture& fixture() {
  static const Fixture f;
  return f;
}

const std::string kSdf = std::string(FLT_SOURCE_DIR) + "/tests/api/data/small.sdf";

flt::Molecule water() {
  return {{8, 1, 1}, {{0, 0, 0.1173}, {0, 0.7572, -0.4692}, {0, -0.7572, -0.4692}}, {}, "water"};
}
flt::Molecule methane() {
  return {{6, 1, 1, 1, 1},
          {{0, 0, 0},
           {0.6291, 0.6291, 0.6291},
           {-0.6291, -0.6291, 0.6291},
           {-0.6291, 0.6291, -0.6291},
           {0.6291, -0.6291, -0.6291}},
          {},
          "methane"};
}
flt::Molecule chloromethane() {
  return {{6, 17, 1, 1, 1},
          {{0, 0, 0}, {0, 0, 1.78}, {1.03, 0, -0.36}, {-0.51, 0.89, -0.36}, {-0.51, -0.89, -0.36}},
          {},
          "chloromethane"};
}

// `count` distorted copies of water and methane (deterministic), for batches.
std::vector<flt::Molecule> many(std::size_t count) {
  std::vector<flt::Molecule> out;
  for (std::size_t i = 0; i < count; ++i) {
    flt::Molecule m = i % 2 == 0 ? water() : methane();
    for (std::size_t a = 0; a < m.size(); ++a)
      for (int c = 0; c < 3; ++c)
        m.positions[a][c] += 0.05 * std::sin(1.7 * static_cast<double>(i) + 0.9 * a + 2.3 * c);
    m.title = std::to_string(i);  // (not "m" + ...: GCC 12 -Wrestrict false positive)
    m.title.insert(m.title.begin(), 'm');
    out.push_back(std::move(m));
  }
  return out;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Predictions agree within float rounding of the network (values are O(1000) eV for U0).
void check_close(const flt::Prediction& a, const flt::Prediction& b, double tol = 1e-3) {
  REQUIRE(a.values.size() == b.values.size());
  for (std::size_t t = 0; t < a.values.size(); ++t) CHECK(a.values[t] == Approx(b.values[t]).margin(tol));
}

}  // namespace

TEST_CASE("version matches the CMake project version", "[api]") {
  CHECK(std::string(flt::version()) == FLT_PROJECT_VERSION);
  CHECK(std::string(flt::git_commit()).size() > 0);
}

TEST_CASE("load: targets with units, elements, files, metadata", "[api]") {
  const flt::Model model = flt::Model::load(fixture().model1);
  REQUIRE(model.targets().size() == 2);
  CHECK(model.targets()[0].name == "U0");
  CHECK(model.targets()[0].unit == "eV");
  CHECK(model.targets()[0].extensive);
  CHECK(model.targets()[1].name == "gap");
  CHECK(model.targets()[1].unit == "eV");
  CHECK_FALSE(model.targets()[1].extensive);
  CHECK(model.elements() == std::vector<int>{1, 6, 7, 8, 9});
  CHECK(model.ensemble_size() == 1);
  REQUIRE(model.files().size() == 1);
  CHECK(model.files()[0] == fixture().model1);
  CHECK(model.parameter_count() > 1000);
  bool found_note = false;
  for (const auto& [key, value] : model.metadata()) found_note |= contains(value, "not trained");
  CHECK(found_note);
  CHECK(model.threads() == 0);
}

TEST_CASE("load errors are typed and name the file", "[api]") {
  const fs::path missing = fixture().dir / "missing.flt";
  try {
    (void)flt::Model::load(missing);
    FAIL("no exception");
  } catch (const flt::IoError& e) {
    CHECK(e.path() == missing.string());
  }
  // Corrupt: a valid file with one byte flipped in the middle, and a truncated copy.
  std::ifstream in(fixture().model1, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(bytes.size() > 200);
  const fs::path flipped = fixture().dir / "flipped.flt";
  const fs::path truncated = fixture().dir / "truncated.flt";
  std::string f = bytes;
  f[f.size() / 2] = static_cast<char>(f[f.size() / 2] ^ 0x5a);
  std::ofstream(flipped, std::ios::binary) << f;
  std::ofstream(truncated, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  for (const fs::path& bad : {flipped, truncated}) {
    try {
      (void)flt::Model::load(bad);
      FAIL("no exception for " + bad.string());
    } catch (const flt::ModelFileError& e) {
      CHECK(e.path() == bad.string());
      CHECK(contains(e.what(), bad.string()));
    }
  }
  // Every flt exception is an flt::Error.
  CHECK_THROWS_AS(flt::Model::load(missing), flt::Error);
}

TEST_CASE("single prediction: units, magnitude, invariances", "[api]") {
  const flt::Model model = flt::Model::load(fixture().model1);
  const flt::Prediction p = model.predict(water());
  REQUIRE(p.size() == 2);
  REQUIRE(p.targets);
  CHECK(p.unit("U0") == "eV");
  CHECK(p.unit("gap") == "eV");
  CHECK(p.value("U0") == p.values[0]);
  CHECK(p.value("gap") == p.values[1]);
  CHECK(p.uncertainty("U0") == 0.0);
  CHECK(p.index("gap") == std::optional<std::size_t>(1));
  CHECK_FALSE(p.index("H").has_value());
  CHECK_THROWS_AS(p.value("H"), flt::InvalidArgument);
  // The normalisation is applied: U0 = sum of the reference energies (O + 2 H = -2067 eV) plus a
  // per-atom term of O(1) eV; a facade returning normalised values would be off by ~2000 eV.
  CHECK(std::abs(p.value("U0") - (-2039.8 - 2 * 13.6)) < 30.0);
  CHECK(std::isfinite(p.value("gap")));

  // Translation and atom permutation leave the prediction unchanged (float rounding).
  flt::Molecule moved = water();
  for (auto& r : moved.positions) r = {r[0] + 5.0, r[1] - 3.0, r[2] + 1.0};
  check_close(model.predict(moved), p);
  flt::Molecule permuted = water();
  std::swap(permuted.atomic_numbers[0], permuted.atomic_numbers[2]);
  std::swap(permuted.positions[0], permuted.positions[2]);
  check_close(model.predict(permuted), p);
  // Formal charges of zero are the same as none.
  flt::Molecule charged = water();
  charged.formal_charges = {0, 0, 0};
  check_close(model.predict(charged), p, 0.0);
}

TEST_CASE("molecules the model cannot handle: thrown singly, reported in batches", "[api]") {
  const flt::Model model = flt::Model::load(fixture().model1);
  try {
    (void)model.predict(chloromethane());
    FAIL("no exception");
  } catch (const flt::InvalidArgument& e) {
    CHECK(contains(e.what(), "chloromethane"));
    CHECK(contains(e.what(), "Z=17"));
  }
  CHECK(model.unsupported_reason(chloromethane()).has_value());
  CHECK_FALSE(model.unsupported_reason(water()).has_value());
  flt::Molecule empty;
  CHECK_THROWS_AS(model.predict(empty), flt::InvalidArgument);
  flt::Molecule short_positions = water();
  short_positions.positions.pop_back();
  CHECK_THROWS_AS(model.predict(short_positions), flt::InvalidArgument);
  flt::Molecule short_charges = water();
  short_charges.formal_charges = {0, 0};
  CHECK_THROWS_AS(model.predict(short_charges), flt::InvalidArgument);
  flt::Molecule nan = water();
  nan.positions[1][2] = std::nan("");
  CHECK_THROWS_AS(model.predict(nan), flt::InvalidArgument);

  const std::vector<flt::Molecule> batch{water(), chloromethane(), methane(), short_positions};
  const auto results = model.predict(batch);
  REQUIRE(results.size() == 4);
  CHECK(results[0].ok());
  CHECK_FALSE(results[1].ok());
  CHECK(contains(results[1].error, "molecule 1"));
  CHECK(contains(results[1].error, "chloromethane"));
  CHECK(results[2].ok());
  CHECK_FALSE(results[3].ok());
  CHECK_THROWS_AS(results[1].value(), flt::InvalidArgument);
  check_close(results[0].value(), model.predict(water()));
  check_close(results[2].value(), model.predict(methane()));
  CHECK(model.predict(std::span<const flt::Molecule>()).empty());
}

TEST_CASE("batch sizes and thread counts give the same predictions", "[api]") {
  flt::Model model = flt::Model::load(fixture().model1);
  const auto molecules = many(37);
  flt::PredictOptions options;
  options.threads = 1;
  options.batch_size = 64;
  const auto reference = model.predict(molecules, options);
  for (std::size_t batch : {1, 7, 64}) {
    for (int threads : {1, 2}) {
      options.batch_size = batch;
      options.threads = threads;
      const auto results = model.predict(molecules, options);
      REQUIRE(results.size() == molecules.size());
      for (std::size_t i = 0; i < results.size(); ++i) check_close(results[i].value(), reference[i].value());
    }
  }
  // The per-object setting applies when the call gives none.
  model.set_threads(2);
  CHECK(model.threads() == 2);
  const auto with_setter = model.predict(molecules);
  for (std::size_t i = 0; i < molecules.size(); ++i) check_close(with_setter[i].value(), reference[i].value());
  CHECK_THROWS_AS(model.set_threads(-1), flt::InvalidArgument);
  options.batch_size = 0;
  CHECK_THROWS_AS(model.predict(molecules, options), flt::InvalidArgument);
}

TEST_CASE("concurrent predictions from 4 threads on one model equal sequential ones", "[api][threads]") {
  const flt::Model model = flt::Model::load(fixture().model1);
  const auto molecules = many(24);
  flt::PredictOptions options;
  options.threads = 1;
  options.batch_size = 5;
  // Sequential reference: single-molecule calls and batch calls.
  std::vector<flt::Prediction> single;
  for (const auto& m : molecules) single.push_back(model.predict(m));
  const auto batched = model.predict(molecules, options);

  constexpr int kThreads = 4;
  constexpr int kRounds = 3;
  std::vector<std::vector<std::vector<double>>> got_single(kThreads), got_batch(kThreads);
  std::vector<std::string> failures(kThreads);
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t) {
    pool.emplace_back([&, t] {
      try {
        for (int round = 0; round < kRounds; ++round) {
          // Interleave differently per thread so calls overlap in different phases.
          for (std::size_t k = 0; k < molecules.size(); ++k) {
            const std::size_t i = (k + static_cast<std::size_t>(t) * 5) % molecules.size();
            if (round == 0) got_single[t].resize(molecules.size());
            got_single[t][i] = model.predict(molecules[i]).values;
          }
          const auto results = model.predict(molecules, options);
          got_batch[t].clear();
          for (const auto& r : results) got_batch[t].push_back(r.value().values);
        }
      } catch (const std::exception& e) {
        failures[t] = e.what();
      }
    });
  }
  for (auto& th : pool) th.join();
  for (int t = 0; t < kThreads; ++t) {
    INFO("thread " << t);
    CHECK(failures[t].empty());
    REQUIRE(got_single[t].size() == molecules.size());
    REQUIRE(got_batch[t].size() == molecules.size());
    for (std::size_t i = 0; i < molecules.size(); ++i) {
      // Same molecule, same batch composition: bitwise the same values.
      CHECK(got_single[t][i] == single[i].values);
      CHECK(got_batch[t][i] == batched[i].value().values);
    }
  }
}

TEST_CASE("predict_file: every record in order, errors reported, summary", "[api][file]") {
  const flt::Model model = flt::Model::load(fixture().model1);
  for (std::size_t batch : {1, 2, 64}) {
    flt::FileOptions options;
    options.batch_size = batch;
    std::vector<flt::RecordResult> records;
    const flt::FileSummary summary =
        model.predict_file(kSdf, [&](const flt::RecordResult& r) { records.push_back(r); }, options);
    INFO("batch " << batch);
    REQUIRE(records.size() == 7);
    for (std::size_t i = 0; i < records.size(); ++i) {
      CHECK(records[i].record == i + 1);
      CHECK(contains(records[i].file, "small.sdf"));
    }
    CHECK(summary.read == 7);
    CHECK(summary.predicted == 5);
    CHECK(summary.failed == 2);
    CHECK_FALSE(summary.ok());
    CHECK(summary.describe() == "predicted 5 of 7 records (2 failed)");
    CHECK(records[0].title == "water");
    CHECK(records[0].ok());
    CHECK(records[2].title == "chloromethane");
    CHECK_FALSE(records[2].ok());
    CHECK(contains(records[2].error, "Z=17"));
    CHECK_FALSE(records[4].ok());  // malformed record
    CHECK_FALSE(records[4].error.empty());
    CHECK(records[6].ok());  // formaldehyde: hydrogens added
    // The file's water is the same molecule as water() (same coordinates).
    check_close(*records[0].prediction, model.predict(water()));
    check_close(*records[1].prediction, model.predict(methane()));
  }
  // Records that fail while being read keep the title read so far, as flt predict's outputs do.
  const fs::path bad_records = fixture().dir / "bad_records.smi";
  std::ofstream(bad_records) << "CCO ethanol\nC1CC(C not_a_smiles\n";
  std::vector<flt::RecordResult> smiles_records;
  model.predict_file(bad_records, [&](const flt::RecordResult& r) { smiles_records.push_back(r); });
  REQUIRE(smiles_records.size() == 2);
  CHECK(smiles_records[1].record == 2);
  CHECK_FALSE(smiles_records[1].ok());
  CHECK(smiles_records[1].title == "not_a_smiles");
  CHECK_THROWS_AS(model.predict_file(fixture().dir / "nothing.sdf", [](const flt::RecordResult&) {}),
                  flt::IoError);
  flt::FileOptions bad;
  bad.format = "pdf";
  CHECK_THROWS_AS(model.predict_file(kSdf, [](const flt::RecordResult&) {}, bad), flt::InvalidArgument);
}

TEST_CASE("predict_file: SMILES conformers as the model's training made them unless set", "[api][file]") {
  // The same weights as model1, with the metadata a run trained with --conformer-seed 7
  // --optimize mmff writes.
  const fs::path trained = fixture().dir / "trained_conformers.flt";
  const std::string cmd = std::string("'") + FLT_MAKE_TEST_MODEL + "' '" + trained.string() +
                          "' 1 kronecker training.conformer_seed=7 training.conformer_optimize=mmff"
                          " training.conformer_attempts=0";
  REQUIRE(std::system(cmd.c_str()) == 0);
  const fs::path smi = fixture().dir / "conformers.smi";
  std::ofstream(smi) << "CCO ethanol\nOc1ccccc1 phenol\nCC(=O)NC N-methylacetamide\nOCC(O)CO glycerol\n";
  const auto predict = [&](const fs::path& model_path, const flt::FileOptions& options) {
    const flt::Model model = flt::Model::load(model_path);
    std::vector<double> values;
    const flt::FileSummary summary = model.predict_file(
        smi, [&](const flt::RecordResult& r) { values.push_back(r.ok() ? r.prediction->values[0] : NAN); }, options);
    REQUIRE(summary.predicted == 4);
    return values;
  };
  flt::FileOptions as_trained;
  as_trained.seed = 7;
  as_trained.optimize = "mmff";
  as_trained.conformer_attempts = 0;
  flt::FileOptions old_defaults;
  old_defaults.seed = 42;
  old_defaults.optimize = "none";
  const auto recorded = predict(trained, {});
  CHECK(recorded == predict(fixture().model1, as_trained));       // bitwise: the same conformers
  CHECK(predict(fixture().model1, {}) == predict(trained, old_defaults));  // no record: seed 42, none
  CHECK(recorded != predict(fixture().model1, {}));                // other conformers
  flt::FileOptions bad;
  bad.optimize = "uff";
  CHECK_THROWS_AS(predict(trained, bad), flt::InvalidArgument);
  bad.optimize.reset();
  bad.conformer_attempts = -1;
  CHECK_THROWS_AS(predict(trained, bad), flt::InvalidArgument);
}

TEST_CASE("predict_file: SMILES column, periodic records and PDB parts as FileOptions", "[api][file]") {
  const flt::Model model = flt::Model::load(fixture().model1);
  const auto read = [&](const fs::path& path, const flt::FileOptions& options) {
    std::vector<flt::RecordResult> records;
    model.predict_file(path, [&](const flt::RecordResult& r) { records.push_back(r); }, options);
    return records;
  };
  // ZINC's "name SMILES" lines.
  const fs::path zinc = fixture().dir / "zinc.smi";
  std::ofstream(zinc) << "ethanol CCO\nphenol Oc1ccccc1\n";
  auto records = read(zinc, {});
  REQUIRE(records.size() == 2);
  CHECK_FALSE(records[0].ok());
  CHECK_THAT(records[0].error, Catch::Contains("API: smiles_column"));
  flt::FileOptions second;
  second.smiles_column = "2";
  records = read(zinc, second);
  REQUIRE(records.size() == 2);
  CHECK(records[0].ok());
  CHECK(records[1].title == "phenol");
  // A periodic extended-XYZ record: an error, or an isolated structure on request.
  const fs::path cell = fixture().dir / "cell.xyz";
  std::ofstream(cell) << "3\nLattice=\"10 0 0 0 10 0 0 0 10\" Properties=species:S:1:pos:R:3 pbc=\"T T T\"\n"
                         "O 0 0 0.1173\nH 0 0.7572 -0.4692\nH 0 -0.7572 -0.4692\n";
  records = read(cell, {});
  REQUIRE(records.size() == 1);
  CHECK_THAT(records[0].error, Catch::Contains("API: periodic = isolated"));
  flt::FileOptions isolated;
  isolated.periodic = "isolated";
  records = read(cell, isolated);
  REQUIRE(records.size() == 1);
  CHECK(records[0].ok());
  check_close(*records[0].prediction, model.predict(water()));
  for (auto field : {&flt::FileOptions::periodic, &flt::FileOptions::pdb_water, &flt::FileOptions::pdb_hetero}) {
    flt::FileOptions bad;
    bad.*field = "sometimes";
    CHECK_THROWS_AS(read(cell, bad), flt::InvalidArgument);
  }
}

TEST_CASE("molecules with coincident atoms are refused as records of files are", "[api]") {
  const flt::Model model = flt::Model::load(fixture().model1);
  flt::Molecule collapsed = water();
  collapsed.positions[2] = collapsed.positions[1];
  CHECK_THROWS_WITH(model.predict(collapsed), Catch::Contains("atoms 2 and 3 are 0 Angstrom apart (closer than 0.1)"));
  CHECK_THROWS_AS(model.predict_with_forces(collapsed), flt::InvalidArgument);
  const std::vector<flt::Molecule> batch = {water(), collapsed};
  auto results = model.predict(batch);
  CHECK(results[0].ok());
  CHECK_FALSE(results[1].ok());
  CHECK_THAT(results[1].error, Catch::Contains("molecule 1") && Catch::Contains("closer than 0.1"));
  flt::PredictOptions no_check;
  no_check.min_distance = 0;
  CHECK(model.predict(batch, no_check)[1].ok());
}

TEST_CASE("log sink: libflt's warnings go where the program says, and nowhere else", "[api][log]") {
  const fs::path empty = fixture().dir / "empty_directory";
  fs::create_directories(empty);
  std::vector<std::pair<flt::LogLevel, std::string>> messages;
  const flt::LogSink previous = flt::set_log_sink([&](flt::LogLevel level, std::string_view text) {
    messages.emplace_back(level, std::string(text));
  });
  const flt::Model model = flt::Model::load(fixture().model1);
  const flt::FileSummary summary = model.predict_file(empty, [](const flt::RecordResult&) {});
  CHECK(summary.read == 0);
  REQUIRE(messages.size() == 1);
  CHECK(messages[0].first == flt::LogLevel::warning);
  CHECK_THAT(messages[0].second, Catch::Contains("empty_directory") && Catch::Contains("no molecule files"));
  CHECK(std::string(flt::to_string(flt::LogLevel::warning)) == "warning");
  // The previous sink comes back; an empty sink drops everything.
  const flt::LogSink mine = flt::set_log_sink(flt::LogSink());
  CHECK(mine);
  model.predict_file(empty, [](const flt::RecordResult&) {});
  CHECK(messages.size() == 1);
  flt::set_log_sink(previous);
}

TEST_CASE("RDKit molecules predict like the same records read from the file", "[api][rdkit]") {
  const flt::Model model = flt::Model::load(fixture().model1);
  std::map<std::string, flt::Prediction> from_file;
  model.predict_file(kSdf, [&](const flt::RecordResult& r) {
    if (r.ok()) from_file.emplace(r.title, *r.prediction);
  });
  REQUIRE(from_file.size() == 5);

  RDKit::SDMolSupplier supplier(kSdf, /*sanitize=*/true, /*removeHs=*/false);
  std::size_t predicted = 0;
  while (!supplier.atEnd()) {
    std::unique_ptr<RDKit::ROMol> mol(supplier.next());
    if (!mol) continue;  // the malformed record
    const std::string title = mol->getProp<std::string>("_Name");
    INFO(title);
    if (title == "chloromethane") {
      CHECK_THROWS_AS(flt::predict(model, *mol), flt::InvalidArgument);
      continue;
    }
    REQUIRE(from_file.count(title) == 1);
    check_close(flt::predict(model, *mol), from_file.at(title));
    ++predicted;
    if (title == "formaldehyde implicit H") {
      CHECK(mol->getNumAtoms() == 2);
      const flt::Molecule m = flt::to_molecule(*mol);
      CHECK(m.size() == 4);  // C, O and the two added hydrogens
      CHECK(m.title == title);
      CHECK(flt::to_molecule(*mol, -1, /*add_hydrogens=*/false).size() == 2);
    }
  }
  CHECK(predicted == 5);

  // Conformer ids: a second conformer, translated, predicts the same; unknown ids are errors.
  std::unique_ptr<RDKit::ROMol> methanol(RDKit::SDMolSupplier(kSdf, true, false)[5]);
  REQUIRE(methanol);
  auto* conf = new RDKit::Conformer(methanol->getConformer());
  conf->setId(7);
  for (unsigned i = 0; i < methanol->getNumAtoms(); ++i) {
    RDGeom::Point3D p = conf->getAtomPos(i);
    p.x += 3.0;
    conf->setAtomPos(i, p);
  }
  methanol->addConformer(conf, /*assignId=*/false);
  check_close(flt::predict(model, *methanol, 7), flt::predict(model, *methanol));
  CHECK_THROWS_AS(flt::predict(model, *methanol, 3), flt::InvalidArgument);
  std::unique_ptr<RDKit::ROMol> flat(RDKit::SmilesToMol("CCO"));
  CHECK_THROWS_AS(flt::to_molecule(*flat), flt::InvalidArgument);  // no conformer
}

TEST_CASE("ensembles: mean and population standard deviation of the members", "[api]") {
  const flt::Model a = flt::Model::load(fixture().model1);
  const flt::Model b = flt::Model::load(fixture().model2);
  const flt::Model ensemble = flt::Model::load_ensemble({fixture().model1, fixture().model2});
  CHECK(ensemble.ensemble_size() == 2);
  CHECK(ensemble.files().size() == 2);
  const flt::Prediction pa = a.predict(methane()), pb = b.predict(methane()), pe = ensemble.predict(methane());
  for (std::size_t t = 0; t < 2; ++t) {
    CHECK(pe.values[t] == Approx(0.5 * (pa.values[t] + pb.values[t])).margin(1e-9));
    CHECK(pe.stddev[t] == Approx(0.5 * std::abs(pa.values[t] - pb.values[t])).margin(1e-9));
  }
  CHECK(pe.uncertainty("U0") > 0.0);  // two different random models disagree
  CHECK_THROWS_AS(flt::Model::load_ensemble({}), flt::InvalidArgument);
}

TEST_CASE("default model: FLT_DEFAULT_MODEL, then the installation, clear error otherwise", "[api]") {
  const char* saved = std::getenv("FLT_DEFAULT_MODEL");
  const std::string saved_value = saved ? saved : "";
  ::setenv("FLT_DEFAULT_MODEL", fixture().model2.c_str(), 1);
  CHECK(flt::Model::default_model_path() == fixture().model2);
  CHECK(flt::Model::load_default().files().at(0) == fixture().model2);
  ::setenv("FLT_DEFAULT_MODEL", (fixture().dir / "none.flt").c_str(), 1);
  try {
    (void)flt::Model::default_model_path();
    FAIL("no exception");
  } catch (const flt::ConfigError& e) {
    CHECK(contains(e.what(), "FLT_DEFAULT_MODEL"));
    CHECK(contains(e.what(), "none.flt"));
  }
  ::unsetenv("FLT_DEFAULT_MODEL");
  try {
    const fs::path p = flt::Model::default_model_path();  // a trained model may exist
    CHECK(fs::is_regular_file(p));
  } catch (const flt::ConfigError& e) {
    CHECK(contains(e.what(), "share/flt/models/default.flt"));
  }
  if (saved) ::setenv("FLT_DEFAULT_MODEL", saved_value.c_str(), 1);
}

TEST_CASE("copies share the loaded model, the thread setting is per object", "[api]") {
  flt::Model a = flt::Model::load(fixture().model1);
  flt::Model b = a;
  b.set_threads(1);
  CHECK(a.threads() == 0);
  CHECK(b.threads() == 1);
  CHECK(a.predict(water()).values == b.predict(water()).values);
  flt::Model c = std::move(b);
  CHECK(c.threads() == 1);
  CHECK(c.predict(water()).values == a.predict(water()).values);
}

TEST_CASE("forces: -dE/dr of the energy target, by batch, file and ensemble", "[api][forces]") {
  const flt::Model model = flt::Model::load(fixture().near_far1);
  const flt::Molecule m = many(3)[1];  // a distorted methane
  const flt::Prediction p = model.predict_with_forces(m);
  CHECK(p.forces_target == "U0");
  CHECK(p.forces_unit == "eV/A");
  REQUIRE(p.forces.size() == m.size());
  CHECK(p.values == model.predict(m).values);
  // Central differences of the predicted energy; the network runs in float, so the step is
  // large and the tolerance loose (the double-precision check is in tests/models). (A kronecker
  // model with clamped denominators would fail this: the floor's dependence on the features is
  // not differentiated.)
  const double h = 1e-3;
  double fmax = 0, worst = 0;
  for (std::size_t a = 0; a < m.size(); ++a)
    for (int c = 0; c < 3; ++c) {
      flt::Molecule plus = m, minus = m;
      plus.positions[a][c] += h;
      minus.positions[a][c] -= h;
      const double fd = -(model.predict(plus).value("U0") - model.predict(minus).value("U0")) / (2 * h);
      fmax = std::max(fmax, std::abs(p.forces[a][c]));
      worst = std::max(worst, std::abs(p.forces[a][c] - fd));
    }
  INFO("max |F - central difference| " << worst << " eV/A, max |F| " << fmax);
  CHECK(fmax > 1e-3);
  CHECK(worst <= 2e-2 * (1 + fmax));
  for (int c = 0; c < 3; ++c) {
    double sum = 0;
    for (const auto& f : p.forces) sum += f[c];
    CHECK(std::abs(sum) <= 1e-3 * (1 + fmax));  // no net force (float rounding only)
  }
  // Batches carry the same forces; without the option, none.
  flt::PredictOptions options;
  options.forces = true;
  const auto batch = model.predict(std::span<const flt::Molecule>(many(3)), options);
  REQUIRE(batch[1].ok());
  REQUIRE(batch[1].value().forces.size() == m.size());
  for (std::size_t a = 0; a < m.size(); ++a)
    for (int c = 0; c < 3; ++c) CHECK(batch[1].value().forces[a][c] == Approx(p.forces[a][c]).margin(1e-4));
  CHECK(model.predict(std::span<const flt::Molecule>(many(3)))[1].value().forces.empty());
  // Files: every record gets its forces.
  flt::FileOptions file_options;
  file_options.forces = true;
  std::size_t with_forces = 0;
  model.predict_file(kSdf, [&](const flt::RecordResult& r) {
    if (r.ok() && !r.prediction->forces.empty()) ++with_forces;
  }, file_options);
  CHECK(with_forces > 0);
  // Ensembles: the members' mean and spread.
  const flt::Model ensemble = flt::Model::load_ensemble({fixture().near_far1, fixture().near_far2});
  const flt::Prediction pb = flt::Model::load(fixture().near_far2).predict_with_forces(m);
  const flt::Prediction pe = ensemble.predict_with_forces(m);
  CHECK(pe.forces[0][2] == Approx(0.5 * (p.forces[0][2] + pb.forces[0][2])).margin(1e-9));
  CHECK(pe.forces_stddev[0][2] == Approx(0.5 * std::abs(p.forces[0][2] - pb.forces[0][2])).margin(1e-9));
  // Only extensive energy targets have forces.
  CHECK_THROWS_WITH(model.predict_with_forces(m, "gap"), Catch::Contains("not an extensive energy"));
  CHECK_THROWS_WITH(model.predict_with_forces(m, "nothing"), Catch::Contains("no target 'nothing'"));
}

TEST_CASE("per-atom contributions: sum to the prediction, only for extensive targets, by batch and file", "[api][contributions]") {
  const flt::Model model = flt::Model::load(fixture().near_far1);
  const auto molecules = many(4);
  flt::PredictOptions options;
  options.per_atom = true;
  const auto results = model.predict(std::span<const flt::Molecule>(molecules), options);
  for (std::size_t k = 0; k < molecules.size(); ++k) {
    REQUIRE(results[k].ok());
    const flt::Prediction& p = results[k].value();
    const std::size_t u0 = *p.index("U0"), gap = *p.index("gap");
    REQUIRE(p.contributions.size() == p.size());
    REQUIRE(p.contributions[u0].size() == molecules[k].size());
    CHECK(p.contributions[gap].empty());  // a per-molecule mean does not split into atoms
    double sum = 0;
    for (double c : p.contributions[u0]) sum += c;
    CHECK(sum == Approx(p.value("U0")).margin(2e-3).epsilon(0));
    CHECK(p.contributions_stddev[u0] == std::vector<double>(molecules[k].size(), 0.0));
  }
  CHECK(model.predict(std::span<const flt::Molecule>(molecules))[0].value().contributions.empty());
  flt::FileOptions file_options;
  file_options.per_atom = true;
  std::size_t with_contributions = 0;
  model.predict_file(kSdf, [&](const flt::RecordResult& r) {
    if (r.ok() && !r.prediction->contributions.empty()) ++with_contributions;
  }, file_options);
  CHECK(with_contributions > 0);
}
