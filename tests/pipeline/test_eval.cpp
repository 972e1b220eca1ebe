// flt eval: metrics against QM9 labels in the model's units, rotation sensitivity, CSV outputs.
#include "pipeline/eval.hpp"
#include "test_predict_util.hpp"
#include "io/csv.hpp"
#include "io/units.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <numbers>

using namespace flt;
using namespace flt::pipeline;
using namespace flt::pipeline::testing;

TEST_CASE("flt eval: MAE, RMSE, R^2 in eV against QM9 Hartree labels, and rotation sensitivity",
          "[eval][program]") {
  TempDir dir("eval");
  const std::string model = save_small_model(dir, "m.flt", 11);
  const std::string qm9 = qm9_records(dir, 20);
  const std::string csv = dir / "metrics.csv", preds = dir / "predictions.csv";
  const auto run = run_flt("eval -m " + quoted(model) + " " + quoted(qm9) + " --rotations 4 --csv " + quoted(csv) +
                               " --predictions " + quoted(preds),
                           dir);
  INFO(run.err);
  REQUIRE(run.status == 0);
  CHECK(run.out.find("evaluated 20 molecules") != std::string::npos);
  CHECK(run.out.find("rotation std") != std::string::npos);

  // Independent computation: the library's predictions against the labels converted by hand.
  const auto predictor = Predictor::load({model});
  const auto points = read_all(qm9);
  REQUIRE(points.size() == 20);
  const double hartree = io::convert(1.0, "Hartree", "eV");
  double abs_u0 = 0, abs_gap = 0, sq_u0 = 0;
  for (const auto& p : points) {
    const auto y = predictor.predict(p);
    const double u0 = *p.number("U0") * hartree, gap = *p.number("gap") * hartree;
    abs_u0 += std::abs(y.mean[0] - u0);
    sq_u0 += (y.mean[0] - u0) * (y.mean[0] - u0);
    abs_gap += std::abs(y.mean[1] - gap);
  }
  const auto table = io::read_csv(csv);
  REQUIRE(table.rows.size() == 2);
  const auto col = [&](std::size_t r, const char* name) { return std::stod(table.rows[r][table.require_column(name)]); };
  CHECK(table.rows[0][0] == "U0");
  CHECK(table.rows[0][table.require_column("unit")] == "eV");
  CHECK(table.rows[1][0] == "gap");
  CHECK(col(0, "count") == 20);
  CHECK(col(0, "MAE") == Approx(abs_u0 / 20).epsilon(1e-6));
  CHECK(col(0, "RMSE") == Approx(std::sqrt(sq_u0 / 20)).epsilon(1e-6));
  CHECK(col(1, "MAE") == Approx(abs_gap / 20).epsilon(1e-6));
  CHECK(col(0, "rotations") == 4);
  // The kronecker RPE is rotation invariant only up to its Monte-Carlo error: a small, finite
  // spread, reported as a fraction of the MAE.
  const double rot = col(0, "rotation_std");
  CHECK(rot >= 0);
  CHECK(std::isfinite(rot));
  CHECK(col(0, "rotation_std_over_MAE") == Approx(rot / col(0, "MAE")).epsilon(1e-9));

  const auto per_molecule = io::read_csv(preds);
  CHECK(per_molecule.rows.size() == 20);
  CHECK(per_molecule.column("U0_true [eV]").has_value());
  CHECK(per_molecule.column("U0_pred [eV]").has_value());
  CHECK(per_molecule.rows[0][0] == "gdb 1");

  // --targets selects; an unknown target is a clear error.
  const auto only_gap = run_flt("eval -m " + quoted(model) + " " + quoted(qm9) + " --targets gap --rotations 0", dir);
  REQUIRE(only_gap.status == 0);
  CHECK(only_gap.out.find("U0") == std::string::npos);
  const auto unknown = run_flt("eval -m " + quoted(model) + " " + quoted(qm9) + " --targets mu", dir);
  CHECK(unknown.status == 1);
  CHECK(unknown.err.find("does not predict 'mu'") != std::string::npos);
}

TEST_CASE("eval: an exactly rotation-invariant model has zero rotation sensitivity", "[eval]") {
  TempDir dir("rotation");
  // The "exact" kind (softmax with a radial distance bias) sees distances only: rotations change
  // its predictions by float rounding alone; the kronecker model's random RPE features do more.
  const auto exact = Predictor::load({save_small_model(dir, "exact.flt", 12, models::AttentionKind::exact)});
  const auto kron = Predictor::load({save_small_model(dir, "kron.flt", 12)});
  EvalOptions options;
  options.data.inputs = {qm9_records(dir, 10)};
  options.rotations = 6;
  const auto re = evaluate(exact, options);
  const auto rk = evaluate(kron, options);
  REQUIRE(re.targets.size() == 2);
  for (std::size_t t = 0; t < 2; ++t) {
    CHECK(re.targets[t].rotation_std < 1e-4);
    CHECK(re.targets[t].rotation_std < rk.targets[t].rotation_std);
  }
  // Deterministic: the same seed gives the same rotations.
  const auto again = evaluate(kron, options);
  CHECK(again.targets[0].rotation_std == rk.targets[0].rotation_std);
}

TEST_CASE("eval: molecules the model cannot handle are skipped and listed", "[eval]") {
  TempDir dir("eval-skip");
  const auto predictor = Predictor::load({save_small_model(dir, "m.flt", 13)});
  // Three QM9 records and a copy of the first with its carbon replaced by sulphur (record 4).
  const std::string qm9 = qm9_records(dir, 3);
  std::string text = slurp(qm9);
  std::istringstream lines(text);
  std::string line, extra;
  for (int i = 0; i < 7 && std::getline(lines, line); ++i) {  // gdb 1: 5 atoms + 2 lines
    if (i == 2) line[0] = 'S';
    extra += line + "\n";
  }
  std::ofstream(qm9, std::ios::app) << extra;
  EvalOptions options;
  options.data.inputs = {qm9};
  options.rotations = 0;
  const auto result = evaluate(predictor, options);
  REQUIRE(result.summary.skipped.size() == 1);
  const auto& s = result.summary.skipped.front();
  CHECK(s.file == qm9);
  CHECK(s.record == 4);
  CHECK(s.reason.find("Z=16 was not in the model's training set") != std::string::npos);
  CHECK(result.ids.size() == 3);
  CHECK(result.targets[0].metrics.count == 3);
  // With --on-error fail the same record stops the evaluation with file and record.
  options.data.policy = chem::ErrorPolicy::fail;
  try {
    (void)evaluate(predictor, options);
    FAIL("expected an InputError");
  } catch (const InputError& e) {
    CHECK(e.record() == 4);
  }
  // Through the program: exit status 3 and the record named on stderr.
  const auto run = run_flt("eval -m " + quoted(dir / "m.flt") + " " + quoted(qm9) + " --rotations 0", dir);
  CHECK(run.status == 3);
  CHECK(run.err.find("record 4") != std::string::npos);
}

TEST_CASE("eval: --split-file evaluates one subset, and a split of other data is an error", "[eval]") {
  TempDir dir("eval-split");
  const auto predictor = Predictor::load({save_small_model(dir, "m.flt", 14)});
  const std::string qm9 = qm9_records(dir, 6);
  EvalOptions all;
  all.data.inputs = {qm9};
  all.rotations = 0;
  const auto every = evaluate(predictor, all);
  REQUIRE(every.ids.size() == 6);
  const auto& id = every.ids;
  const fs::path split = dir / "split.csv";
  std::ofstream(split) << "subset,index,id\ntrain,0," << id[0] << "\ntrain,1," << id[1] << "\ntest,2,"
                       << id[2] << "\nvalidation,3," << id[3] << "\ntest,5," << id[5] << "\ntrain,4,"
                       << id[4] << "\n";
  EvalOptions options = all;
  options.split_file = split.string();
  const auto test = evaluate(predictor, options);
  CHECK(test.ids == std::vector<std::string>{id[2], id[5]});
  CHECK(test.targets[0].metrics.count == 2);
  // The same predictions as evaluating everything and picking the rows.
  CHECK(every.predicted(2, 0) == test.predicted(0, 0));
  CHECK(every.predicted(5, 0) == test.predicted(1, 0));
  options.subset = "validation";
  CHECK(evaluate(predictor, options).ids == std::vector<std::string>{id[3]});
  // A split whose ids do not match the records names the split file.
  std::ofstream(split) << "subset,index,id\ntrain,0," << id[0] << "\ntest,1,gdb 999999\n";
  options.subset = "test";
  CHECK_THROWS_WITH(evaluate(predictor, options), Catch::Contains("split.csv"));
  // Through the program: --subset without --split-file is a usage error.
  const auto run = run_flt("eval -m " + quoted(dir / "m.flt") + " " + quoted(qm9) +
                               " --rotations 0 --subset test",
                           dir);
  CHECK(run.status == 2);
}

TEST_CASE("flt eval: an ensemble's uncertainty table and CSV columns, and a single model's output unchanged",
          "[eval][program][uncertainty]") {
  TempDir dir("eval-uncertainty");
  const std::string a = save_small_model(dir, "a.flt", 21), b = save_small_model(dir, "b.flt", 22);
  const std::string qm9 = qm9_records(dir, 20);
  const std::string csv = dir / "metrics.csv", preds = dir / "predictions.csv";
  const auto run = run_flt("eval -m " + quoted(a) + " -m " + quoted(b) + " " + quoted(qm9) +
                               " --rotations 0 --csv " + quoted(csv) + " --predictions " + quoted(preds),
                           dir);
  INFO(run.out << run.err);
  REQUIRE(run.status == 0);
  CHECK(run.out.find("uncertainty: the spread (population std) of the 2 members") != std::string::npos);
  CHECK(run.out.find("Spearman") != std::string::npos);

  // The CSV's uncertainty columns, recomputed from the per-molecule predictions, labels and stds.
  const auto per_molecule = io::read_csv(preds);
  const auto table = io::read_csv(csv);
  REQUIRE(table.rows.size() == 2);
  CHECK(table.header[9] == "rotation_std_over_MAE");  // the existing columns stay where they were
  const auto col = [&](std::size_t r, const char* name) { return std::stod(table.rows[r][table.require_column(name)]); };
  const std::vector<std::string> names = {"U0", "gap"};
  for (std::size_t r = 0; r < 2; ++r) {
    const auto value = [&](std::size_t row, const std::string& column) {
      return std::stod(per_molecule.rows[row][per_molecule.require_column(names[r] + column + " [eV]")]);
    };
    std::vector<double> abs_error, sd, abs_z;
    double in1 = 0, in2 = 0, z2 = 0, nll = 0;
    for (std::size_t i = 0; i < per_molecule.rows.size(); ++i) {
      const double e = value(i, "_pred") - value(i, "_true"), s = value(i, "_std");
      REQUIRE(s > 0);
      abs_error.push_back(std::abs(e));
      sd.push_back(s);
      in1 += std::abs(e) <= s;
      in2 += std::abs(e) <= 2 * s;
      z2 += e * e / (s * s);
      abs_z.push_back(std::abs(e) / s);
      nll += 0.5 * std::log(2 * std::numbers::pi * s * s) + 0.5 * e * e / (s * s);
    }
    INFO(names[r]);
    CHECK(table.rows[r][0] == names[r]);
    CHECK(col(r, "uncertainty_count") == 20);
    CHECK(col(r, "zero_std_count") == 0);
    CHECK(col(r, "within_1std [fraction]") == Approx(in1 / 20).epsilon(1e-12));
    CHECK(col(r, "within_2std [fraction]") == Approx(in2 / 20).epsilon(1e-12));
    CHECK(col(r, "std_scale") == Approx(std::sqrt(z2 / 20)).epsilon(1e-9));
    // The new column follows std_scale (the CSV's numbers are rounded: a loose tolerance).
    CHECK(table.require_column("std_coverage_scale") == table.require_column("std_scale") + 1);
    CHECK(col(r, "std_coverage_scale") == Approx(train::linear_quantile(abs_z, 0.682689492)).epsilon(1e-9));
    CHECK(col(r, "NLL [nats per record in unit]") == Approx(nll / 20).epsilon(1e-9));
    CHECK(col(r, "spearman_abs_error_std") == Approx(train::spearman_correlation(abs_error, sd)).epsilon(1e-12));
    CHECK(col(r, "miscalibration_area") >= 0);
    CHECK(col(r, "ENCE") >= 0);
  }

  // Two identical members: every std is 0, counted and named, nothing measured.
  const auto same = run_flt("eval -m " + quoted(a) + " -m " + quoted(a) + " " + quoted(qm9) +
                                " --rotations 0 --csv " + quoted(csv),
                            dir);
  REQUIRE(same.status == 0);
  CHECK(same.out.find("U0: 20 of 20 labelled molecules have std = 0") != std::string::npos);
  const auto zero = io::read_csv(csv);
  CHECK(zero.rows[0][zero.require_column("zero_std_count")] == "20");
  CHECK(zero.rows[0][zero.require_column("uncertainty_count")] == "0");
  CHECK(zero.rows[0][zero.require_column("std_scale")].empty());
  CHECK(zero.rows[0][zero.require_column("std_coverage_scale")].empty());

  // One model: no second table, and the CSV has exactly the columns it always had.
  const auto single = run_flt("eval -m " + quoted(a) + " " + quoted(qm9) + " --rotations 0 --csv " + quoted(csv), dir);
  REQUIRE(single.status == 0);
  CHECK(single.out.find("uncertainty") == std::string::npos);
  const std::string text = slurp(csv);
  CHECK(text.substr(0, text.find('\n')) ==
        "target,unit,count,MAE,RMSE,R2,max_abs_error,rotations,rotation_std,rotation_std_over_MAE");
}
