#include "../common/scratch_dir.hpp"
#include "io/atomic_file.hpp"
#include "io/csv.hpp"
#include "train/metrics.hpp"
#include "train/split.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

using namespace flt::io;
using namespace flt::train;

namespace {
const double kNaN = std::numeric_limits<double>::quiet_NaN();
}

TEST_CASE("metrics: MAE, RMSE, R^2 with masked labels", "[train][metrics]") {
  const std::vector<double> y = {1, 2, 3, 4, kNaN};
  const std::vector<double> p = {1.5, 2, 2, 4, 100};
  const Metrics m = compute_metrics(p, y);
  CHECK(m.count == 4);
  CHECK(m.mae == Approx(1.5 / 4));
  CHECK(m.rmse == Approx(std::sqrt(1.25 / 4)));
  // mean 2.5, SS_tot = 5, SS_res = 1.25.
  CHECK(m.r2 == Approx(1 - 1.25 / 5));
  CHECK(m.max_abs_error == 1.0);
  // Perfect predictions.
  const Metrics perfect = compute_metrics(y, y);
  CHECK(perfect.mae == 0);
  CHECK(perfect.r2 == 1);
  // Nothing labelled, constant truth, NaN prediction.
  CHECK(std::isnan(compute_metrics(std::vector<double>{1}, std::vector<double>{kNaN}).mae));
  CHECK(std::isnan(compute_metrics(std::vector<double>{1, 2}, std::vector<double>{3, 3}).r2));
  const Metrics bad = compute_metrics(std::vector<double>{kNaN, 1}, std::vector<double>{1, 2});
  CHECK(std::isnan(bad.mae));
  CHECK(std::isnan(bad.max_abs_error));
  // Multi-target row-major equals per-column.
  const std::vector<double> Y = {1, 10, 2, kNaN, 3, 30};
  const std::vector<double> P = {1, 11, 3, 99, 3, 28};
  const auto ms = compute_metrics(P, Y, 2);
  REQUIRE(ms.size() == 2);
  CHECK(ms[0].mae == Approx(1.0 / 3));
  CHECK(ms[1].count == 2);
  CHECK(ms[1].mae == Approx(1.5));
  CHECK_THROWS_AS(compute_metrics(P, Y, 4), flt::InvalidArgument);
}

TEST_CASE("metrics accumulate in index order (bitwise equal to a plain serial loop)", "[train][metrics]") {
  // The documented order is a serial double sum over i = 0..n-1: the result must not depend on
  // threads or batching. A plain loop written here gives the reference bits.
  std::vector<double> y(1001), p(1001);
  for (std::size_t i = 0; i < y.size(); ++i) {
    y[i] = std::sin(static_cast<double>(i)) * 1e3;
    p[i] = y[i] + std::cos(static_cast<double>(i) * 0.7) * (i % 7 == 0 ? 1e6 : 1.0);
  }
  y[17] = kNaN;
  double abs_sum = 0, sq_sum = 0;
  std::size_t n = 0;
  for (std::size_t i = 0; i < y.size(); ++i) {
    if (std::isnan(y[i])) continue;
    abs_sum += std::fabs(p[i] - y[i]);
    sq_sum += (p[i] - y[i]) * (p[i] - y[i]);
    ++n;
  }
  const double mae = abs_sum / static_cast<double>(n);
  const double rmse = std::sqrt(sq_sum / static_cast<double>(n));
  const Metrics a = compute_metrics(p, y);
  CHECK(std::memcmp(&a.mae, &mae, sizeof(double)) == 0);
  CHECK(std::memcmp(&a.rmse, &rmse, sizeof(double)) == 0);
}

TEST_CASE("learning curve and prediction CSVs carry units and read back", "[train][metrics]") {
  flt::test_support::ScratchDir dir("lc");
  const std::vector<TargetColumn> targets = {{"U0", "eV"}, {"mu", "Debye"}};
  LearningCurve lc(targets);
  for (int e = 1; e <= 3; ++e)
    lc.append({e, 100 * e, 1e-3 / e, 1.0 / e, 1.5 / e, 2.5 * e, {0.5 / e, 0.1 / e}, {0.6 / e, kNaN}});
  CHECK_THROWS_AS(lc.append({4, 400, 0, 0, 0, 0, {1}, {1}}), flt::InvalidArgument);
  lc.write(dir / "learning_curve.csv");
  const CsvTable csv = read_csv(dir / "learning_curve.csv");
  CHECK(csv.header == std::vector<std::string>{"epoch", "step", "lr", "train_loss", "val_loss", "seconds",
                                               "train_mae_U0 [eV]", "val_mae_U0 [eV]", "train_mae_mu [Debye]",
                                               "val_mae_mu [Debye]"});
  LearningCurve back = LearningCurve::read(dir / "learning_curve.csv", targets);
  REQUIRE(back.records().size() == 3);
  CHECK(back.records()[2].train_mae[0] == 0.5 / 3);  // shortest round-trip text: exact
  CHECK(std::isnan(back.records()[1].val_mae[1]));
  back.truncate(2);
  CHECK(back.records().size() == 2);
  CHECK_THROWS_AS(LearningCurve::read(dir / "learning_curve.csv", {{"U0", "kcal/mol"}, {"mu", "Debye"}}), flt::InputError);

  const std::vector<double> pred = {1.25, 2, 3, 4};
  const std::vector<double> truth = {1, kNaN, 3.5, 4};
  write_predictions_csv(dir / "predictions.csv", "title", {"gdb 1", "gdb, 2"}, targets, pred, truth);
  const CsvTable pc = read_csv(dir / "predictions.csv");
  CHECK(pc.header == std::vector<std::string>{"title", "U0_true [eV]", "U0_pred [eV]", "mu_true [Debye]", "mu_pred [Debye]"});
  CHECK(pc.rows[1][0] == "gdb, 2");
  CHECK(pc.rows[0][2] == "1.25");
  CHECK(pc.rows[0][3].empty());
  write_predictions_csv(dir / "ensemble.csv", "title", {"a"}, {{"gap", "eV"}}, std::vector<double>{1}, {},
                        std::vector<double>{0.1});
  CHECK(read_csv(dir / "ensemble.csv").header == std::vector<std::string>{"title", "gap_pred [eV]", "gap_std [eV]"});
  write_metrics_csv(dir / "metrics.csv", targets, compute_metrics(pred, truth, 2));
  const CsvTable mc = read_csv(dir / "metrics.csv");
  CHECK(mc.header[3] == "MAE");
  CHECK(mc.rows[0][0] == "U0");
  CHECK(mc.rows[0][2] == "2");
}

TEST_CASE("random splits: sizes, determinism, disjointness", "[train][split]") {
  const SplitSizes s = parse_split_sizes("0.8,0.1,0.1");
  const Split a = random_split(1000, s, 42);
  CHECK(a.train.size() == 800);
  CHECK(a.validation.size() == 100);
  CHECK(a.test.size() == 100);
  CHECK_NOTHROW(validate_split(a, 1000));
  std::vector<std::size_t> all;
  for (const auto* v : {&a.train, &a.validation, &a.test}) {
    CHECK(std::is_sorted(v->begin(), v->end()));
    all.insert(all.end(), v->begin(), v->end());
  }
  std::sort(all.begin(), all.end());
  std::vector<std::size_t> expect(1000);
  std::iota(expect.begin(), expect.end(), std::size_t{0});
  CHECK(all == expect);
  const Split b = random_split(1000, s, 42);
  CHECK(b.train == a.train);
  CHECK(random_split(1000, s, 43).train != a.train);
  // Counts and rest.
  const Split c = random_split(50, parse_split_sizes("30,rest,5"), 1);
  CHECK(c.train.size() == 30);
  CHECK(c.validation.size() == 15);
  CHECK(c.test.size() == 5);
  const Split d = random_split(10, parse_split_sizes("5,2"), 1);
  CHECK(d.test.size() == 3);
  CHECK_THROWS_AS(random_split(10, parse_split_sizes("8,5"), 1), flt::ConfigError);
  CHECK_THROWS_AS(parse_split_sizes("rest,rest"), flt::ConfigError);
  CHECK_THROWS_AS(parse_split_sizes("1.5,0.1"), flt::ConfigError);
  CHECK_THROWS_AS(parse_split_sizes("-3,1"), flt::ConfigError);
  CHECK_THROWS_AS(parse_split_sizes("1"), flt::ConfigError);
}

TEST_CASE("split files round trip and are validated", "[train][split]") {
  flt::test_support::ScratchDir dir("split");
  const Split s = random_split(20, parse_split_sizes("10,5,5"), 3);
  std::vector<std::string> ids;
  for (int i = 0; i < 20; ++i) ids.push_back("gdb " + std::to_string(i + 1));
  write_split_file(dir / "split.csv", s, ids);
  const Split back = read_split_file(dir / "split.csv", 20, ids);
  CHECK(back.train == s.train);
  CHECK(back.validation == s.validation);
  CHECK(back.test == s.test);
  // Without ids, and by ids only.
  write_split_file(dir / "plain.csv", s);
  CHECK(read_split_file(dir / "plain.csv", 20).test == s.test);
  const Split by_id = parse_split_csv("subset,id\ntrain,gdb 3\ntest,gdb 1\n", "ids.csv", 20, ids);
  CHECK(by_id.train == std::vector<std::size_t>{2});
  CHECK(by_id.test == std::vector<std::size_t>{0});
  // Records without titles are named "<input path>:<record>": another spelling of the path (or
  // the file copied elsewhere) names the same records; another file or record does not.
  const std::vector<std::string> untitled = {"data/eth.xyz:1", "data/eth.xyz:2", "data/eth.xyz:3"};
  const Split moved = parse_split_csv("subset,index,id\ntrain,0,./eth.xyz:1\ntest,2,/abs/eth.xyz:3\n"
                                      "validation,,eth.xyz:2\n", "moved.csv", 3, untitled);
  CHECK(moved.train == std::vector<std::size_t>{0});
  CHECK(moved.validation == std::vector<std::size_t>{1});
  CHECK(moved.test == std::vector<std::size_t>{2});
  CHECK_THROWS_WITH(parse_split_csv("subset,index,id\ntrain,0,data/other.xyz:1\n", "o.csv", 3, untitled),
                    Catch::Contains("another dataset"));
  CHECK_THROWS_WITH(parse_split_csv("subset,index,id\ntrain,0,data/eth.xyz:2\n", "r.csv", 3, untitled),
                    Catch::Contains("another dataset"));
  // Errors.
  CHECK_THROWS_WITH(parse_split_csv("subset,index\ntrain,20\n", "r.csv", 20), Catch::Contains("r.csv:2:") && Catch::Contains("out of range"));
  CHECK_THROWS_WITH(parse_split_csv("subset,index\ntrain,1\ntest,1\n", "o.csv", 20),
                    Catch::Contains("o.csv:3:") && Catch::Contains("already listed on line 2"));
  CHECK_THROWS_WITH(parse_split_csv("subset,index\ntraining,1\n", "s.csv", 20), Catch::Contains("unknown subset"));
  CHECK_THROWS_WITH(parse_split_csv("subset,index,id\ntrain,1,gdb 7\n", "m.csv", 20, ids),
                    Catch::Contains("another dataset"));
  CHECK_THROWS_WITH(parse_split_csv("subset,id\ntrain,gdb 99\n", "n.csv", 20, ids), Catch::Contains("no record with id"));
  CHECK_THROWS_WITH(parse_split_csv("subset,id\ntrain,gdb 1\n", "x.csv", 20), Catch::Contains("dataset has no ids"));
  CHECK_THROWS_WITH(parse_split_csv("subset,index\ntrain,x\n", "i.csv", 20), Catch::Contains("not an integer"));
  Split overlap;
  overlap.train = {1, 2};
  overlap.test = {2};
  CHECK_THROWS_WITH(validate_split(overlap, 5), Catch::Contains("record 2 is in train and in test"));
  Split range;
  range.validation = {5};
  CHECK_THROWS_WITH(validate_split(range, 5), Catch::Contains("out of range"));
}
