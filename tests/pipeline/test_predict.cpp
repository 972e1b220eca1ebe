// flt predict and the predictor library: outputs, units, ensembles, skipped records, bad model
// files, unwritable outputs, thread counts, invariances, concurrent use.
#include "chem/elements.hpp"
#include "chem/writer.hpp"
#include "core/text.hpp"
#include "test_predict_util.hpp"
#include "io/csv.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <set>
#include <sstream>
#include <string>
#include <thread>

using namespace flt;
using namespace flt::pipeline;
using namespace flt::pipeline::testing;

namespace {

bool hcno_only(const chem::PointSet& p) {
  for (int z : p.atomic_numbers)
    if (z != 1 && z != 6 && z != 7 && z != 8) return false;
  return true;
}

double csv_value(const io::CsvTable& t, std::size_t row, const std::string& column) {
  return std::stod(t.rows[row][t.require_column(column)]);
}

}  // namespace

TEST_CASE("flt predict writes annotated SDF keeping every tag and every record, marks unknown elements, exit 3",
          "[predict][program]") {
  TempDir dir("sdf");
  const std::string model = save_small_model(dir, "m.flt", 7);
  const std::string out = dir / "out.sdf";
  const auto run = run_flt("predict -m " + quoted(model) + " " + quoted(kCdk2) + " -o " + quoted(out), dir);
  INFO(run.err);
  REQUIRE(run.status == 3);  // some cdk2 records contain S, F, Cl, Br

  const auto inputs = read_all(kCdk2, true);
  std::vector<chem::PointSet> good;
  std::set<std::size_t> bad_records;
  for (const auto& p : inputs) {
    if (hcno_only(p)) {
      good.push_back(p);
    } else {
      bad_records.insert(p.record);
    }
  }
  REQUIRE(!good.empty());
  REQUIRE(!bad_records.empty());
  // Each skipped record is named with its file and number, and the reason names the element.
  for (std::size_t r : bad_records) CHECK(run.err.find("cdk2.sdf record " + std::to_string(r) + ":") != std::string::npos);
  CHECK(run.err.find("was not in the model's training set") != std::string::npos);
  CHECK(run.err.find("predicted " + std::to_string(good.size()) + " of " + std::to_string(inputs.size())) !=
        std::string::npos);

  // Every input record is in the output, in input order; the unpredicted ones unchanged (atoms,
  // tags) with the reason in the tag flt_error and no prediction.
  const auto written = read_all(out, true);
  REQUIRE(written.size() == inputs.size());
  const auto predictor = Predictor::load({model});
  std::vector<models::Molecule> molecules;
  for (const auto& p : good) molecules.push_back(to_molecule(p));
  const auto direct = predictor.predict_batch(std::span<const models::Molecule>(molecules));
  std::size_t i = 0;
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    const auto& w = written[k];
    CHECK(w.title == inputs[k].title);
    CHECK(w.atomic_numbers == inputs[k].atomic_numbers);
    // Every input tag is kept with its value.
    for (const auto& prop : inputs[k].properties) {
      const chem::Property* q = w.property(prop.key);
      REQUIRE(q != nullptr);
      CHECK(q->value == prop.value);
    }
    if (bad_records.count(inputs[k].record) != 0) {
      const chem::Property* error = w.property(chem::kErrorTag);
      REQUIRE(error != nullptr);
      CHECK(error->value.find("was not in the model's training set") != std::string::npos);
      CHECK(w.property("flt_U0") == nullptr);
      continue;
    }
    CHECK(w.property(chem::kErrorTag) == nullptr);
    // The tag "flt_U0 [eV]" reads back as the property flt_U0 with its unit.
    const auto u0 = w.number("flt_U0");
    const auto gap = w.number("flt_gap");
    REQUIRE(w.property("flt_U0") != nullptr);
    CHECK(w.property("flt_U0")->unit == "eV");
    REQUIRE(u0.has_value());
    REQUIRE(gap.has_value());
    REQUIRE(direct[i].ok());
    // The program's values equal direct library calls (shortest round-trip text: exact).
    CHECK(*u0 == Approx(direct[i].prediction->mean[0]).epsilon(1e-12));
    CHECK(*gap == Approx(direct[i].prediction->mean[1]).epsilon(1e-12));
    CHECK(w.property("flt_U0_std") == nullptr);  // a single model has no spread column
    ++i;
  }
  CHECK(i == good.size());
  CHECK(run.err.find("wrote " + std::to_string(inputs.size()) + " records") != std::string::npos);
}

TEST_CASE("flt predict CSV: titles, label columns with units, ensemble mean and std", "[predict][program]") {
  TempDir dir("csv");
  const std::string a = save_small_model(dir, "a.flt", 1), b = save_small_model(dir, "b.flt", 2);
  const std::string qm9 = qm9_records(dir, 12);
  const std::string out = dir / "out.csv";
  const auto run = run_flt("predict -m " + quoted(a) + " -m " + quoted(b) + " " + quoted(qm9) + " -o " + quoted(out), dir);
  INFO(run.err);
  REQUIRE(run.status == 0);
  const auto table = io::read_csv(out);
  REQUIRE(table.rows.size() == 12);
  const std::vector<std::string> expected_first{"id", "source", "record", "title"};
  REQUIRE(table.header.size() > 4);
  CHECK(std::vector<std::string>(table.header.begin(), table.header.begin() + 4) == expected_first);
  CHECK(table.column("U0 [Hartree]").has_value());  // the input's labels, with their units
  CHECK(table.column("gap [Hartree]").has_value());
  const auto pa = Predictor::load({a}), pb = Predictor::load({b});
  const auto points = read_all(qm9);
  REQUIRE(points.size() == 12);
  CHECK(table.rows[0][table.require_column("title")] == "gdb 1");
  for (std::size_t i = 0; i < points.size(); ++i) {
    CHECK(points[i].title.rfind("gdb ", 0) == 0);
    CHECK(table.rows[i][table.require_column("title")] == points[i].title);
  }
  for (std::size_t i = 0; i < points.size(); ++i) {
    const auto ya = pa.predict(points[i]), yb = pb.predict(points[i]);
    const std::vector<std::string> names{"U0", "gap"};
    for (std::size_t t = 0; t < 2; ++t) {
      const double mean = csv_value(table, i, "flt_" + names[t] + " [eV]");
      const double sd = csv_value(table, i, "flt_" + names[t] + "_std [eV]");
      // Two members: mean = (a + b) / 2, population std = |a - b| / 2.
      CHECK(mean == Approx((ya.mean[t] + yb.mean[t]) / 2).epsilon(1e-6));
      CHECK(sd == Approx(std::abs(ya.mean[t] - yb.mean[t]) / 2).epsilon(1e-4).margin(1e-9));
      CHECK(sd > 0);  // two different random models disagree
    }
  }
}

TEST_CASE("flt predict table on stdout, standard output CSV, 1 and 2 threads agree", "[predict][program]") {
  TempDir dir("threads");
  const std::string model = save_small_model(dir, "m.flt", 3);
  const std::string qm9 = qm9_records(dir, 30);
  const auto t = run_flt("predict -m " + quoted(model) + " " + quoted(qm9), dir);
  INFO(t.err);
  REQUIRE(t.status == 0);
  CHECK(t.out.find("U0 [eV]") != std::string::npos);
  CHECK(t.out.find("gap [eV]") != std::string::npos);
  for (const auto& p : read_all(qm9)) CHECK(t.out.find(p.title) != std::string::npos);

  const auto one = run_flt("predict -m " + quoted(model) + " " + quoted(qm9) + " -o - --out-format csv --threads 1 --batch-size 7", dir);
  const auto two = run_flt("predict -m " + quoted(model) + " " + quoted(qm9) + " -o - --out-format csv --threads 2 --batch-size 7", dir);
  REQUIRE(one.status == 0);
  REQUIRE(two.status == 0);
  const auto c1 = io::parse_csv(one.out, "threads1"), c2 = io::parse_csv(two.out, "threads2");
  REQUIRE(c1.rows.size() == 30);
  REQUIRE(c2.rows.size() == 30);
  for (std::size_t i = 0; i < 30; ++i) {
    CHECK(csv_value(c1, i, "flt_U0 [eV]") == Approx(csv_value(c2, i, "flt_U0 [eV]")).epsilon(1e-9));
    CHECK(csv_value(c1, i, "flt_gap [eV]") == Approx(csv_value(c2, i, "flt_gap [eV]")).epsilon(1e-9));
  }
  // The table keeps what the prediction resolves: U0 of thousands of eV to 0.1 meV, not to six
  // significant digits (-11234.6, a resolution of 0.1 eV, beside a model error of tens of meV).
  std::istringstream lines(t.out);
  std::string line;
  std::size_t rows = 0;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string number, gdb, index, atoms, u0, u0_atom, gap;  // U0_atom: the atomization energy
    if (!(fields >> number >> gdb >> index >> atoms >> u0 >> u0_atom >> gap) || number == "#") continue;
    const std::size_t i = std::stoul(number) - 1;
    REQUIRE(i < 30);
    INFO(line);
    CHECK(std::abs(std::stod(u0) - csv_value(c1, i, "flt_U0 [eV]")) <= 0.5e-4 + 1e-9);
    CHECK(std::abs(std::stod(gap) - csv_value(c1, i, "flt_gap [eV]")) <= 0.5e-4 + 1e-9);
    ++rows;
  }
  CHECK(rows == 30);

  // Records without a title (ASE's frames) are named by their file and record; cut to the column,
  // the name keeps its end, so the rows of one file stay apart.
  {
    std::ofstream frames(dir / "frames_of_an_unnamed_trajectory.xyz");
    frames << "2\n\nH 0 0 0\nH 0.74 0 0\n2\n\nH 0 0 0\nH 0.75 0 0\n";
  }
  const auto untitled =
      run_flt("predict -m " + quoted(model) + " " + quoted(dir / "frames_of_an_unnamed_trajectory.xyz"), dir);
  INFO(untitled.err);
  REQUIRE(untitled.status == 0);
  CHECK_THAT(untitled.out, Catch::Contains("\n1     ...amed_trajectory.xyz:1  2 "));
  CHECK_THAT(untitled.out, Catch::Contains("\n2     ...amed_trajectory.xyz:2  2 "));
}

TEST_CASE("flt predict is invariant to atom permutations and translations", "[predict][program]") {
  TempDir dir("invariance");
  const std::string model = save_small_model(dir, "m.flt", 4);
  // gdb 20-ish molecules have 9 heavy atoms; take a larger one from the first records.
  const auto points = read_all(qm9_records(dir, 25));
  const chem::PointSet* base = &points.front();
  for (const auto& p : points)
    if (p.size() > base->size()) base = &p;
  const std::size_t n = base->size();
  REQUIRE(n >= 8);
  // Record 1: as is; record 2: atoms in reversed-then-rotated order; record 3: translated.
  std::vector<std::size_t> perm(n);
  for (std::size_t i = 0; i < n; ++i) perm[i] = (n - 1 - i + 3) % n;
  const double shift[3] = {3.7, -2.1, 5.3};
  std::ofstream xyz(dir / "three.xyz");
  auto write_record = [&](const std::string& title, auto position_of, auto index_of) {
    xyz << n << "\n" << title << "\n";
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t i = index_of(k);
      xyz << chem::element_symbol(base->atomic_numbers[i]);
      for (int c = 0; c < 3; ++c) xyz << " " << shortest_number(position_of(i, c));
      xyz << "\n";
    }
  };
  auto pos = [&](std::size_t i, int c) { return base->positions(static_cast<Index>(i), c); };
  write_record("original", pos, [](std::size_t k) { return k; });
  write_record("permuted", pos, [&](std::size_t k) { return perm[k]; });
  write_record("translated", [&](std::size_t i, int c) { return pos(i, c) + shift[c]; }, [](std::size_t k) { return k; });
  xyz.close();
  const auto run = run_flt("predict -m " + quoted(model) + " " + quoted(dir / "three.xyz") + " -o " + quoted(dir / "p.csv"), dir);
  INFO(run.err);
  REQUIRE(run.status == 0);
  const auto table = io::read_csv(dir / "p.csv");
  REQUIRE(table.rows.size() == 3);
  for (const char* col : {"flt_U0 [eV]", "flt_gap [eV]"}) {
    const double y0 = csv_value(table, 0, col);
    // Float network: equal up to float rounding of sums taken in another order.
    CHECK(csv_value(table, 1, col) == Approx(y0).margin(1e-4));
    CHECK(csv_value(table, 2, col) == Approx(y0).margin(1e-4));
  }
}

TEST_CASE("flt predict rejects corrupted and missing model files and unwritable outputs", "[predict][program]") {
  TempDir dir("errors");
  const std::string model = save_small_model(dir, "m.flt", 5);
  const std::string qm9 = qm9_records(dir, 3);
  // A flipped byte inside the data: the checksum catches it.
  std::string bytes = slurp(model);
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x10);
  std::ofstream(dir / "bad.flt", std::ios::binary) << bytes;
  auto run = run_flt("predict -m " + quoted(dir / "bad.flt") + " " + quoted(qm9), dir);
  CHECK(run.status == 1);
  CHECK(run.err.find("bad.flt") != std::string::npos);
  CHECK(run.err.find("checksum") != std::string::npos);
  // Truncated.
  std::ofstream(dir / "short.flt", std::ios::binary) << bytes.substr(0, 100);
  run = run_flt("predict -m " + quoted(dir / "short.flt") + " " + quoted(qm9), dir);
  CHECK(run.status == 1);
  CHECK(run.err.find("short.flt") != std::string::npos);
  // Missing.
  run = run_flt("predict -m " + quoted(dir / "none.flt") + " " + quoted(qm9), dir);
  CHECK(run.status == 1);
  CHECK(run.err.find("none.flt") != std::string::npos);
  // Unwritable output: a clear error naming the path, nothing predicted, no file left.
  const std::string bad_out = dir / "no-such-dir/out.csv";
  run = run_flt("predict -m " + quoted(model) + " " + quoted(qm9) + " -o " + quoted(bad_out), dir);
  CHECK(run.status == 1);
  CHECK(run.err.find(bad_out) != std::string::npos);
  CHECK_FALSE(fs::exists(bad_out));
  // An output that is an input (also through another spelling or a link) is refused before
  // anything is written; the input stays as it was.
  const std::string input_text = slurp(qm9);
  run = run_flt("predict -m " + quoted(model) + " " + quoted(qm9) + " -o " + quoted(qm9), dir);
  CHECK(run.status == 2);
  CHECK(run.err.find("is also an input") != std::string::npos);
  fs::create_symlink(qm9, dir / "link.xyz");
  run = run_flt("predict -m " + quoted(model) + " " + quoted(qm9) + " -o " + quoted(dir / "link.xyz"), dir);
  CHECK(run.status == 2);
  CHECK(slurp(qm9) == input_text);
  // A directory as the output: refused before the inputs are read.
  fs::create_directory(dir / "adir.csv");
  run = run_flt("predict -m " + quoted(model) + " " + quoted(qm9) + " -o " + quoted(dir / "adir.csv"), dir);
  CHECK(run.status == 1);
  CHECK(run.err.find("is a directory") != std::string::npos);
  // Usage errors.
  CHECK(run_flt("predict -m " + quoted(model), dir).status == 2);
  CHECK(run_flt("predict -m " + quoted(model) + " " + quoted(qm9) + " --on-error maybe", dir).status == 2);
  // --on-error fail stops at the first record the model cannot handle.
  run = run_flt("predict -m " + quoted(model) + " " + quoted(kCdk2) + " -o " + quoted(dir / "f.sdf") + " --on-error fail", dir);
  CHECK(run.status == 1);
  CHECK(run.err.find("cdk2.sdf: record") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "f.sdf"));
}

TEST_CASE("default model lookup: environment, source tree, installation, clear error", "[predict][program]") {
  TempDir dir("default");
  const std::string model = save_small_model(dir, "m.flt", 6);
  const std::string qm9 = qm9_records(dir, 2);
  auto run = run_flt("predict " + quoted(qm9), dir, "FLT_DEFAULT_MODEL=" + quoted(model));
  INFO(run.err);
  CHECK(run.status == 0);
  CHECK(run.out.find("gdb 2") != std::string::npos);
  run = run_flt("predict " + quoted(qm9), dir, "FLT_DEFAULT_MODEL=" + quoted(dir / "missing.flt"));
  CHECK(run.status == 1);
  CHECK(run.err.find("FLT_DEFAULT_MODEL") != std::string::npos);
  CHECK(run.err.find("missing.flt") != std::string::npos);

  ::unsetenv(kDefaultModelEnv);
  const auto candidates = default_model_candidates();
  REQUIRE(candidates.size() >= 2);
  CHECK(candidates.front() == fs::path(FLT_SOURCE_DIR) / "models" / "default.flt");
  CHECK(candidates.back().string().find("share/flt/models/default.flt") != std::string::npos);
  bool any = false;
  for (const auto& c : candidates) any = any || fs::is_regular_file(c);
  if (!any) {
    // No default model trained yet: the error lists where it looked and how to get one.
    try {
      (void)default_model_path();
      FAIL("default_model_path should throw");
    } catch (const ConfigError& e) {
      const std::string what = e.what();
      CHECK(what.find(candidates.front().string()) != std::string::npos);
      CHECK(what.find("flt train") != std::string::npos);
    }
    run = run_flt("predict " + quoted(qm9), dir, "env -u FLT_DEFAULT_MODEL");
    CHECK(run.status == 1);
    CHECK(run.err.find("no default model found") != std::string::npos);
  }
  ::setenv(kDefaultModelEnv, model.c_str(), 1);
  CHECK(default_model_path() == fs::path(model));
  ::unsetenv(kDefaultModelEnv);
}

TEST_CASE("predictor: concurrent predictions from 4 threads equal sequential ones", "[predict][threads]") {
  TempDir dir("concurrent");
  const auto model = LoadedModel::load(save_small_model(dir, "m.flt", 8));
  const Predictor predictor({model});
  std::vector<models::Molecule> molecules;
  for (const auto& p : read_all(qm9_records(dir, 40))) molecules.push_back(to_molecule(p));
  // Four batches of 10 molecules.
  auto batch = [&](int k) { return std::span<const models::Molecule>(molecules).subspan(static_cast<std::size_t>(10 * k), 10); };
  std::vector<std::vector<MoleculeResult>> sequential;
  for (int k = 0; k < 4; ++k) sequential.push_back(predictor.predict_batch(batch(k)));
  std::vector<std::vector<std::vector<MoleculeResult>>> concurrent(4);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      for (int rep = 0; rep < 3; ++rep) concurrent[static_cast<std::size_t>(k)].push_back(predictor.predict_batch(batch(k), 1 + rep % 2));
    });
  for (auto& t : threads) t.join();
  for (int k = 0; k < 4; ++k)
    for (const auto& results : concurrent[static_cast<std::size_t>(k)])
      for (std::size_t i = 0; i < results.size(); ++i) {
        REQUIRE(results[i].ok());
        // Same batch, same model: bitwise the same whatever the thread and the team size.
        CHECK(results[i].prediction->mean == sequential[static_cast<std::size_t>(k)][i].prediction->mean);
      }
}

TEST_CASE("predictor: structures spanning more than 1e6 A and non-finite predictions are record errors", "[predict]") {
  TempDir dir("nonfinite");
  const auto model = LoadedModel::load(save_small_model(dir, "m.flt", 12));
  const Predictor predictor({model});
  std::vector<models::Molecule> molecules;
  for (const auto& p : read_all(qm9_records(dir, 3))) molecules.push_back(to_molecule(p));
  // Finite coordinates of an atom sent 1e20 Angstrom away (wrong units, a blown-up simulation):
  // the float network would give NaN; an error naming the atoms instead.
  molecules[1].positions[2][2] = 1e20;
  const auto results = predictor.predict_batch(std::span<const models::Molecule>(molecules), 1, std::size_t{0});
  CHECK(results[0].ok());
  REQUIRE_FALSE(results[1].ok());
  CHECK_THAT(results[1].error, Catch::Contains("atoms ") && Catch::Contains("1e+20 Angstrom apart along z"));
  CHECK(results[2].ok());
  molecules[1].positions[2][2] = 0.5e6;  // within the bound
  CHECK(predictor.predict_batch(std::span<const models::Molecule>(molecules))[1].ok());
  // A model whose output overflows (here: weights of 1e30, finite, so the loader takes them) gives
  // no values, only errors.
  auto broken = small_model(12);
  for (float& w : broken.parameters().values()) w = 1e30f;
  const Predictor nan_predictor({LoadedModel::from_model(broken, "overflowing weights")});
  for (const bool forces : {false, true}) {
    const auto nan_results = nan_predictor.predict_batch(std::span<const models::Molecule>(molecules), 1,
                                                         forces ? std::optional<std::size_t>(0) : std::nullopt);
    for (const auto& r : nan_results) {
      CHECK_FALSE(r.ok());
      CHECK_THAT(r.error, Catch::Contains("not finite"));
    }
  }
  CHECK_THROWS_AS(nan_predictor.predict(molecules[0]), NumericalError);
  // Ensembles name the member only where members disagree: an element one member lacks, not a
  // structure every member refuses.
  const auto with_f = LoadedModel::from_model(
      flt::test_support::small_molecule_model(13, models::AttentionKind::kronecker, {1, 6, 7, 8, 9}), "with F");
  const Predictor ensemble({with_f, model});
  molecules[1].positions[2][2] = 1e20;
  CHECK_THAT(*ensemble.unsupported_reason(molecules[1]), !Catch::Contains("(model"));
  molecules[1].positions[2][2] = 0;
  molecules[1].atomic_numbers[0] = 9;
  CHECK_THAT(*ensemble.unsupported_reason(molecules[1]), Catch::Contains("Z=9") && Catch::Contains("(model m.flt") ||
                                                             Catch::Contains("Z=9") && Catch::Contains("m.flt)"));
}

TEST_CASE("predictor: single molecules, unknown elements, ensembles of different targets", "[predict]") {
  TempDir dir("library");
  const auto model = LoadedModel::load(save_small_model(dir, "m.flt", 9));
  CHECK(model->parameter_count() == small_model(9).parameters().size());
  const Predictor predictor({model});
  const auto points = read_all(qm9_records(dir, 5));
  // One molecule alone equals the same molecule inside a batch (float rounding aside).
  std::vector<models::Molecule> molecules;
  for (const auto& p : points) molecules.push_back(to_molecule(p));
  const auto batch = predictor.predict_batch(std::span<const models::Molecule>(molecules));
  for (std::size_t i = 0; i < points.size(); ++i) {
    const auto alone = predictor.predict(points[i]);
    for (std::size_t t = 0; t < 2; ++t) CHECK(alone.mean[t] == Approx(batch[i].prediction->mean[t]).margin(1e-4));
    CHECK(alone.stddev == std::vector<double>{0.0, 0.0});
  }
  // A sulphur atom: a typed error naming the source and record, not a guess.
  chem::PointSet bad = points[1];
  bad.atomic_numbers[0] = 16;
  try {
    (void)predictor.predict(bad);
    FAIL("expected an InputError");
  } catch (const InputError& e) {
    CHECK(e.record() == bad.record);
    CHECK(std::string(e.what()).find("Z=16") != std::string::npos);
  }
  // In a batch only that molecule fails.
  molecules[1] = to_molecule(bad);
  const auto mixed = predictor.predict_batch(std::span<const models::Molecule>(molecules));
  CHECK_FALSE(mixed[1].ok());
  CHECK(mixed[1].error.find("Z=16") != std::string::npos);
  CHECK(mixed[0].ok());
  CHECK(mixed[2].ok());
  // Ensemble members must agree on targets.
  auto other = small_model(10);
  models::ModelConfig c = other.config();
  c.targets = {{"U0", "kcal/mol", true}, {"gap", "eV", false}};
  models::MoleculeModel<float> different(c);
  different.set_normalisation(other.normalisation());
  CHECK_THROWS_AS(Predictor({model, LoadedModel::from_model(different, "different")}), InvalidArgument);
}
