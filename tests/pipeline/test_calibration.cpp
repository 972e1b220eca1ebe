// Calibration of an ensemble's std (`flt ensemble --calibrate`, methods coverage and zscaling): the fitted factors, the
// ensemble file's optional calibration entries, the calibrated std of predict / eval / info, the
// uncalibrated outputs left as they were, refused calibration sets; and flt eval --forces scoring
// the members' spread of the force components.
#include "test_predict_util.hpp"
#include "io/csv.hpp"
#include "io/model_file.hpp"
#include "chem/elements.hpp"
#include "pipeline/eval.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

using namespace flt;
using namespace flt::pipeline;
using namespace flt::pipeline::testing;

namespace {

EvalOptions plain_eval(const std::string& input) {
  EvalOptions o;
  o.data.inputs = {input};
  o.rotations = 0;
  return o;
}

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

}  // namespace

TEST_CASE("calibration: factors are std_coverage_scale of the data by default, stored exactly, and multiply predict's std exactly",
          "[calibration][ensemble][program]") {
  TempDir dir("calibration");
  const std::string a = save_small_model(dir, "a.flt", 31), b = save_small_model(dir, "b.flt", 32);
  const std::string qm9 = qm9_records(dir, 20);
  const std::string cal = dir / "cal.flt";
  const auto run = run_flt("ensemble " + quoted(a) + " " + quoted(b) + " -o " + quoted(cal) + " --calibrate " + quoted(qm9),
                           dir);
  INFO(run.out << run.err);
  REQUIRE(run.status == 0);
  CHECK(run.err.find("std calibrated on 20 molecules of qm9.xyz, method coverage:") != std::string::npos);

  // The factors are eval's std_coverage_scale (the 68.27 % quantile of |e|/std) of the members'
  // plain spread on the same data, to the bit.
  const Predictor plain = Predictor::load({a, b});
  const EvalResult before = evaluate(plain, plain_eval(qm9));
  const Predictor calibrated = Predictor::load({cal});
  REQUIRE(calibrated.calibration().has_value());
  const models::EnsembleCalibration& c = *calibrated.calibration();
  REQUIRE(c.targets == std::vector<std::string>{"U0", "gap"});
  for (std::size_t t = 0; t < 2; ++t) {
    INFO(c.targets[t]);
    REQUIRE(before.targets[t].uncertainty->count == 20);
    CHECK(c.factors[t] == before.targets[t].uncertainty->std_coverage_scale);
    CHECK(c.factors[t] != before.targets[t].uncertainty->std_scale);
    CHECK(c.factors[t] != 1.0);
  }
  CHECK(c.method == "coverage");
  CHECK(c.data == "qm9.xyz");
  CHECK(c.subset.empty());
  CHECK(c.records == 20);

  // The stored entries round trip through the file, and repacking drops them.
  const io::ModelFile file = io::read_model_file(cal, models::kEnsembleFileFormat);
  CHECK(file.metadata("calibration.version") == "1");
  CHECK(file.metadata("calibration.method") == "coverage");
  CHECK(models::read_calibration(file, {"U0", "gap"}) == c);
  const std::string repacked = dir / "repacked.flt", packed = dir / "packed.flt";
  REQUIRE(save_ensemble({cal}, repacked) == 2);
  REQUIRE(save_ensemble({a, b}, packed) == 2);
  CHECK(slurp(repacked) == slurp(packed));
  CHECK_FALSE(Predictor::load({repacked}).calibration().has_value());
  // With other models the file's factors do not apply.
  CHECK_FALSE(Predictor::load({cal, a}).calibration().has_value());

  // Predictions: the same means, every std exactly the members' spread times its factor.
  std::vector<models::Molecule> molecules;
  for (const auto& p : read_all(qm9)) molecules.push_back(to_molecule(p));
  const auto x = plain.predict_batch(std::span<const models::Molecule>(molecules));
  const auto y = calibrated.predict_batch(std::span<const models::Molecule>(molecules));
  REQUIRE(x.size() == y.size());
  for (std::size_t i = 0; i < x.size(); ++i)
    for (std::size_t t = 0; t < 2; ++t) {
      CHECK(y[i].prediction->mean[t] == x[i].prediction->mean[t]);
      CHECK(y[i].prediction->stddev[t] == x[i].prediction->stddev[t] * c.factors[t]);
    }

  // flt predict names the calibrated column apart, with the values of the library.
  const std::string out = dir / "pred.csv";
  REQUIRE(run_flt("predict -m " + quoted(cal) + " " + quoted(qm9) + " -o " + quoted(out), dir).status == 0);
  const auto table = io::read_csv(out);
  CHECK(first_line(slurp(out)).find("flt_U0_std [eV]") == std::string::npos);
  for (std::size_t i = 0; i < table.rows.size(); ++i)
    CHECK(std::stod(table.rows[i][table.require_column("flt_U0_std_calibrated [eV]")]) ==
          Approx(y[i].prediction->stddev[0]).epsilon(1e-14));

  // flt eval scores the calibrated std and says so: on the calibration data itself q is 1 and
  // 68.27 % of the records (to 1/n) lie within 1 std.
  const std::string metrics = dir / "metrics.csv", preds = dir / "preds.csv";
  const auto eval = run_flt("eval -m " + quoted(cal) + " " + quoted(qm9) + " --rotations 0 --csv " + quoted(metrics) +
                                " --predictions " + quoted(preds),
                            dir);
  INFO(eval.out << eval.err);
  REQUIRE(eval.status == 0);
  CHECK(eval.out.find("uncertainty: the calibrated std") != std::string::npos);
  CHECK(eval.out.find("factor, method coverage, fitted on qm9.xyz") != std::string::npos);
  CHECK(eval.out.find("calibration factors (coverage, in the scored std)") != std::string::npos);
  const auto m = io::read_csv(metrics);
  for (std::size_t t = 0; t < 2; ++t) {
    CHECK(std::stod(m.rows[t][m.require_column("std_coverage_scale")]) == Approx(1.0).epsilon(1e-12));
    CHECK(std::stod(m.rows[t][m.require_column("within_1std [fraction]")]) == Approx(0.682689492).margin(1.0 / 20));
    CHECK(std::stod(m.rows[t][m.require_column("calibration_factor")]) == Approx(c.factors[t]).epsilon(1e-15));
  }
  CHECK(first_line(slurp(preds)).find("U0_std_calibrated [eV]") != std::string::npos);

  // flt info says what it was calibrated on.
  const auto info = run_flt("info " + quoted(cal), dir);
  REQUIRE(info.status == 0);
  CHECK(info.out.find("calibrated std (coverage) on 20 molecules of qm9.xyz; factors: U0 ") != std::string::npos);

  // An existing ensemble file is recalibrated (here on the first 10 records): new factors.
  const std::string ten = qm9_records(dir, 10, "ten.xyz"), recal = dir / "recal.flt";
  REQUIRE(run_flt("ensemble " + quoted(cal) + " -o " + quoted(recal) + " --calibrate " + quoted(ten), dir).status == 0);
  const auto r = Predictor::load({recal}).calibration();
  REQUIRE(r.has_value());
  CHECK(r->records == 10);
  CHECK(r->factors[0] == evaluate(plain, plain_eval(ten)).targets[0].uncertainty->std_coverage_scale);

  // With a split file and no --subset, the validation subset (not eval's default, test) is fitted.
  const std::string split = dir / "split.csv", fromsplit = dir / "split.flt";
  std::ofstream(split) << "subset,index\ntest,0\ntest,1\nvalidation,2\nvalidation,3\nvalidation,4\n";
  REQUIRE(run_flt("ensemble " + quoted(a) + " " + quoted(b) + " -o " + quoted(fromsplit) + " --calibrate " + quoted(qm9) +
                      " --split-file " + quoted(split),
                  dir)
              .status == 0);
  const auto v = Predictor::load({fromsplit}).calibration();
  REQUIRE(v.has_value());
  CHECK(v->subset == "validation");
  CHECK(v->records == 3);
}

TEST_CASE("calibration: --calibration-method zscaling fits std_scale and says so everywhere",
          "[calibration][ensemble][program]") {
  TempDir dir("calibration-zscaling");
  const std::string a = save_small_model(dir, "a.flt", 31), b = save_small_model(dir, "b.flt", 32);
  const std::string qm9 = qm9_records(dir, 20);
  const std::string cal = dir / "z.flt";
  const auto run = run_flt("ensemble " + quoted(a) + " " + quoted(b) + " -o " + quoted(cal) + " --calibrate " + quoted(qm9) +
                               " --calibration-method zscaling",
                           dir);
  INFO(run.out << run.err);
  REQUIRE(run.status == 0);
  CHECK(run.err.find("method zscaling:") != std::string::npos);
  const EvalResult before = evaluate(Predictor::load({a, b}), plain_eval(qm9));
  const auto c = Predictor::load({cal}).calibration();
  REQUIRE(c.has_value());
  CHECK(c->method == "zscaling");
  for (std::size_t t = 0; t < 2; ++t) CHECK(c->factors[t] == before.targets[t].uncertainty->std_scale);
  const io::ModelFile file = io::read_model_file(cal, models::kEnsembleFileFormat);
  CHECK(file.metadata("calibration.method") == "zscaling");
  CHECK(models::read_calibration(file, {"U0", "gap"}) == *c);
  // The library call takes the method too; the default is coverage.
  CHECK(fit_calibration(Predictor::load({a, b}), plain_eval(qm9), "zscaling") == *c);
  CHECK(fit_calibration(Predictor::load({a, b}), plain_eval(qm9)).method == "coverage");
  CHECK_THROWS_AS(fit_calibration(Predictor::load({a, b}), plain_eval(qm9), "median"), InvalidArgument);

  // On the calibration data itself s is 1; eval and info name the method.
  const std::string metrics = dir / "metrics.csv";
  const auto eval = run_flt("eval -m " + quoted(cal) + " " + quoted(qm9) + " --rotations 0 --csv " + quoted(metrics), dir);
  REQUIRE(eval.status == 0);
  CHECK(eval.out.find("factor, method zscaling, fitted on qm9.xyz") != std::string::npos);
  const auto m = io::read_csv(metrics);
  for (std::size_t t = 0; t < 2; ++t)
    CHECK(std::stod(m.rows[t][m.require_column("std_scale")]) == Approx(1.0).epsilon(1e-12));
  const auto info = run_flt("info " + quoted(cal), dir);
  CHECK(info.out.find("calibrated std (zscaling) on 20 molecules of qm9.xyz; factors: U0 ") != std::string::npos);

  // The option is checked: an unknown method, or one without --calibrate, is a usage error.
  const auto bad = run_flt("ensemble " + quoted(a) + " " + quoted(b) + " -o " + quoted(dir / "x.flt") + " --calibrate " +
                               quoted(qm9) + " --calibration-method median",
                           dir);
  CHECK(bad.status != 0);
  CHECK(bad.err.find("median") != std::string::npos);
  const auto alone =
      run_flt("ensemble " + quoted(a) + " " + quoted(b) + " -o " + quoted(dir / "y.flt") + " --calibration-method zscaling", dir);
  CHECK(alone.status != 0);
  CHECK(alone.err.find("--calibration-method needs --calibrate") != std::string::npos);
}

TEST_CASE("calibration: uncalibrated ensembles and their outputs are unchanged byte for byte",
          "[calibration][ensemble][program]") {
  TempDir dir("calibration-none");
  const std::string a = save_small_model(dir, "a.flt", 33), b = save_small_model(dir, "b.flt", 34);
  const std::string qm9 = qm9_records(dir, 8);
  const std::string ab = dir / "ab.flt";
  REQUIRE(run_flt("ensemble " + quoted(a) + " " + quoted(b) + " -o " + quoted(ab), dir).status == 0);
  // The file packing alone writes: nothing but the members.
  const std::string expected = dir / "expected.flt";
  const std::vector<io::ModelFile> files = {io::read_model_file(a), io::read_model_file(b)};
  io::write_model_file(expected, models::to_ensemble_file(files));
  CHECK(slurp(ab) == slurp(expected));
  // The bundled default model, an ensemble file written before calibration existed, repacks to
  // the same bytes.
  const std::string bundled = std::string(FLT_SOURCE_DIR) + "/models/default.flt", again = dir / "default.flt";
  REQUIRE(run_flt("ensemble " + quoted(bundled) + " -o " + quoted(again), dir).status == 0);
  CHECK(slurp(again) == slurp(bundled));
  CHECK_FALSE(Predictor::load({ab}).calibration().has_value());
  // Its predictions and evaluation files are those of the two model files, with the plain names.
  const std::string p1 = dir / "p1.csv", p2 = dir / "p2.csv", m1 = dir / "m1.csv", m2 = dir / "m2.csv";
  REQUIRE(run_flt("predict -m " + quoted(ab) + " " + quoted(qm9) + " -o " + quoted(p1), dir).status == 0);
  REQUIRE(run_flt("predict -m " + quoted(a) + " -m " + quoted(b) + " " + quoted(qm9) + " -o " + quoted(p2), dir).status == 0);
  CHECK(slurp(p1) == slurp(p2));
  CHECK(first_line(slurp(p1)).find("flt_U0_std [eV]") != std::string::npos);
  const auto e1 = run_flt("eval -m " + quoted(ab) + " " + quoted(qm9) + " --rotations 0 --csv " + quoted(m1), dir);
  REQUIRE(e1.status == 0);
  CHECK(e1.out.find("uncertainty: the spread (population std) of the 2 members") != std::string::npos);
  CHECK(first_line(slurp(m1)).find("calibration_factor") == std::string::npos);
  REQUIRE(run_flt("eval -m " + quoted(a) + " -m " + quoted(b) + " " + quoted(qm9) + " --rotations 0 --csv " + quoted(m2), dir)
              .status == 0);
  CHECK(slurp(m1) == slurp(m2));
}

TEST_CASE("calibration: a single model, unlabelled data, all std 0 and malformed entries are refused clearly",
          "[calibration][ensemble][program]") {
  TempDir dir("calibration-bad");
  const std::string a = save_small_model(dir, "a.flt", 35), b = save_small_model(dir, "b.flt", 36);
  const std::string qm9 = qm9_records(dir, 6);

  const auto single = run_flt("ensemble " + quoted(a) + " -o " + quoted(dir / "one.flt") + " --calibrate " + quoted(qm9), dir);
  CHECK(single.status == 2);
  CHECK(single.err.find("a single model cannot be calibrated") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "one.flt"));
  CHECK_THROWS_WITH(fit_calibration(Predictor::load({a}), plain_eval(qm9)), Catch::Contains("single model"));

  // Data without the labels: refused as flt eval refuses it, no file is written.
  const std::string bare = dir / "bare.xyz";
  std::ofstream(bare) << "3\nwater\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n3\nwater 2\nO 0 0 0\nH 0.97 0 0\nH -0.25 0.93 0\n";
  const auto unlabelled =
      run_flt("ensemble " + quoted(a) + " " + quoted(b) + " -o " + quoted(dir / "u.flt") + " --calibrate " + quoted(bare), dir);
  INFO(unlabelled.err);
  CHECK(unlabelled.status != 0);
  CHECK(unlabelled.err.find("none of the 2 molecules of " + bare + " has a label") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "u.flt"));
  // Labels, but none in the subset calibrated on: the data, the subset and the target are named.
  const std::string some = dir / "some.extxyz", split = dir / "split.csv";
  std::ofstream(some) << "3\nU0=-2000.0 gap=7.0\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n3\ntitle=w2\nO 0 0 0\nH 0.97 0 0\nH -0.25 0.93 0\n";
  std::ofstream(split) << "subset,index\ntrain,0\nvalidation,1\n";
  EvalOptions subset = plain_eval(some);
  subset.data.source_units = {{"U0", "eV"}, {"gap", "eV"}};
  subset.split_file = split;
  subset.subset = "validation";
  CHECK_THROWS_WITH(fit_calibration(Predictor::load({a, b}), subset),
                    Catch::Contains("some.extxyz (validation subset of") && Catch::Contains("no record has a label of U0"));

  // Two identical members: every std is 0, nothing to fit.
  CHECK_THROWS_WITH(fit_calibration(Predictor::load({a, a}), plain_eval(qm9)),
                    Catch::Contains("qm9.xyz") && Catch::Contains("all 6 labelled records of U0 have std = 0"));

  // Malformed or newer calibration entries name the file.
  const std::string ab = dir / "ab.flt";
  REQUIRE(save_ensemble({a, b}, ab) == 2);
  const io::ModelFile good = io::read_model_file(ab, models::kEnsembleFileFormat);
  const auto variant = [&](const std::string& name, const std::string& key, const std::string& value) {
    io::ModelFile f = good;
    models::set_calibration(f, {{"U0", "gap"}, {2.0, 3.0}, "qm9.xyz", "", 6});
    f.set_metadata(key, value);
    const std::string path = dir / name;
    io::write_model_file(path, f);
    try {
      (void)Predictor::load({path});
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK_THAT(variant("v2.flt", "calibration.version", "2"), Catch::Contains("v2.flt") && Catch::Contains("calibration version '2'"));
  CHECK_THAT(variant("neg.flt", "calibration.factor.gap", "-1"), Catch::Contains("factor of gap '-1'"));
  CHECK_THAT(variant("extra.flt", "calibration.factor.mu", "2"), Catch::Contains("factor for mu"));
  CHECK(variant("fine.flt", "calibration.data", "other.xyz").empty());
  // Both methods load; another is refused as a ModelFileError naming the file.
  CHECK(variant("zscaling.flt", "calibration.method", "zscaling").empty());
  CHECK(variant("coverage.flt", "calibration.method", "coverage").empty());
  CHECK_THAT(variant("median.flt", "calibration.method", "median"),
             Catch::Contains("median.flt") && Catch::Contains("calibration method 'median' is unknown"));
  io::ModelFile unknown = good;
  models::set_calibration(unknown, {{"U0", "gap"}, {2.0, 3.0}, "qm9.xyz", "", 6});
  unknown.set_metadata("calibration.method", "median");
  CHECK_THROWS_AS(models::read_calibration(unknown), ModelFileError);
  // A calibration keeps its method through set / read; an unknown one is not written.
  for (const char* method : {"coverage", "zscaling"}) {
    io::ModelFile f = good;
    const models::EnsembleCalibration c{{"U0", "gap"}, {2.0, 3.0}, "qm9.xyz", "", 6, method};
    models::set_calibration(f, c);
    CHECK(models::read_calibration(f, {"U0", "gap"}) == c);
  }
  io::ModelFile g = good;
  CHECK_THROWS_AS(models::set_calibration(g, {{"U0", "gap"}, {2.0, 3.0}, "qm9.xyz", "", 6, "median"}), InvalidArgument);
}

TEST_CASE("flt eval --forces with an ensemble: uncertainty metrics of the force components",
          "[calibration][eval][forces][uncertainty]") {
  TempDir dir("eval-force-uncertainty");
  const std::string a = save_small_model(dir, "a.flt", 37), b = save_small_model(dir, "b.flt", 38);
  // Extended XYZ frames of QM9 molecules with made-up reference forces (eV/A) and U0 labels.
  const auto records = read_all(qm9_records(dir, 5));
  const std::string input = dir / "forces.extxyz";
  {
    std::ofstream out(input);
    out.precision(17);
    int k = 0;
    for (const auto& p : records) {
      out << p.size() << "\nProperties=species:S:1:pos:R:3:forces:R:3 U0=" << -100.0 - k << " gap=1.5\n";
      for (std::size_t i = 0; i < p.size(); ++i) {
        const auto r = static_cast<Index>(i);
        out << chem::element_symbol(p.atomic_numbers[i]) << " " << p.positions(r, 0) << " " << p.positions(r, 1) << " "
            << p.positions(r, 2);
        for (int d = 0; d < 3; ++d) out << " " << 0.1 * std::sin(++k);
        out << "\n";
      }
    }
  }
  EvalOptions o = plain_eval(input);
  o.data.forces_column = "forces";
  o.data.source_units = {{"U0", "eV"}, {"gap", "eV"}};
  const EvalResult result = evaluate(Predictor::load({a, b}), o);
  REQUIRE(result.forces.has_value());
  REQUIRE(result.forces->uncertainty.has_value());
  const train::UncertaintyMetrics& u = *result.forces->uncertainty;

  // The same metrics from the predictor's forces and their spread, component by component.
  std::vector<double> pred, truth, sd;
  const Predictor predictor = Predictor::load({a, b});
  const auto target = predictor.forces_target();
  const auto frames = read_all(input);
  std::vector<models::Molecule> molecules;
  for (const auto& p : frames) molecules.push_back(to_molecule(p));
  const auto predicted = predictor.predict_batch(std::span<const models::Molecule>(molecules), 0, target);
  for (std::size_t s = 0; s < frames.size(); ++s) {
    const auto& column = frames[s].atom_columns;
    const auto it = std::find_if(column.begin(), column.end(), [](const auto& c) { return c.name == "forces"; });
    REQUIRE(it != column.end());
    for (Index i = 0; i < predicted[s].prediction->forces.rows(); ++i)
      for (Index d = 0; d < 3; ++d) {
        pred.push_back(predicted[s].prediction->forces(i, d));
        truth.push_back(it->values[static_cast<std::size_t>(3 * i + d)]);
        sd.push_back(predicted[s].prediction->forces_stddev(i, d));
      }
  }
  const train::UncertaintyMetrics expected = train::compute_uncertainty_metrics(pred, truth, sd);
  CHECK(u.count == pred.size());
  CHECK(u.count == result.forces->metrics.count);
  CHECK(u.std_scale == expected.std_scale);
  CHECK(u.within_1std == expected.within_1std);
  CHECK(u.spearman == expected.spearman);

  // The CSV's forces row has the columns filled; the table a forces row.
  const std::string csv = dir / "metrics.csv";
  write_eval_csv(csv, result);
  const auto table = io::read_csv(csv);
  REQUIRE(table.rows.size() == 3);
  CHECK(table.rows[2][table.require_column("uncertainty_count")] == std::to_string(pred.size()));
  CHECK(std::stod(table.rows[2][table.require_column("std_scale")]) == Approx(expected.std_scale).epsilon(1e-15));
  const std::string text = format_eval_table(result);
  CHECK(text.find("forces: per force component") != std::string::npos);
}
