#include "core/error.hpp"
#include "core/random.hpp"
#include "../common/scratch_dir.hpp"
#include "io/atomic_file.hpp"
#include "io/data_checksum.hpp"
#include "train/metrics.hpp"
#include "io/progress.hpp"
#include "io/svg_plot.hpp"
#include "train/report_plots.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <sstream>

using namespace flt::io;
using namespace flt::train;

namespace {
std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}
}  // namespace

TEST_CASE("progress bar: redrawn line on a terminal, plain lines otherwise", "[train][progress]") {
  double now = 0;
  auto clock = [&] { return now; };
  SECTION("terminal") {
    std::ostringstream out;
    ProgressBar bar(out, true, "epoch 1", 100, clock);
    for (int i = 1; i <= 100; ++i) {
      now += 0.05;  // 20 items per second, redraws limited to 10 per second
      bar.update(static_cast<std::size_t>(i), "loss 0.5");
    }
    bar.finish("val MAE 0.1 eV");
    const std::string s = out.str();
    CHECK(count(s, "\n") == 1);  // one line, redrawn in place
    CHECK(count(s, "\r") <= 52);
    CHECK(count(s, "\r") >= 40);
    CHECK_THAT(s, Catch::Contains("[########################]") && Catch::Contains("100% 100/100") &&
                      Catch::Contains("val MAE 0.1 eV"));
    CHECK_THAT(s, Catch::Contains("ETA"));
  }
  SECTION("not a terminal") {
    std::ostringstream out;
    ProgressBar bar(out, false, "predict", 1000, clock, 30.0);
    for (int i = 1; i <= 1000; ++i) {
      now += 0.01;
      bar.update(static_cast<std::size_t>(i));
    }
    bar.finish("done");
    const std::string s = out.str();
    CHECK(count(s, "\r") == 0);
    CHECK(count(s, "\n") == 11);  // one per 10% plus the final line
    CHECK_THAT(s, Catch::Contains("predict  10% 100/1000") && Catch::Contains("ETA 9.0s"));
    CHECK_THAT(s, !Catch::Contains("#"));
  }
  SECTION("slow plain progress still reports every interval") {
    std::ostringstream out;
    ProgressBar bar(out, false, "train", 1000, clock, 30.0);
    bar.update(0);
    for (int i = 1; i <= 5; ++i) {
      now += 31;
      bar.update(static_cast<std::size_t>(i));
    }
    CHECK(count(out.str(), "\n") == 5);
  }
  CHECK(format_duration(3.04) == "3.0s");
  CHECK(format_duration(65) == "1m05s");
  CHECK(format_duration(3725) == "1h02m");
  CHECK(format_duration(-1) == "?");
}

TEST_CASE("ticks: nice linear steps and log decades", "[train][plot]") {
  CHECK(nice_ticks(0, 1, 5) == std::vector<double>{0, 0.2, 0.4, 0.6000000000000001, 0.8, 1});
  const auto t = nice_ticks(-13, 87, 6);
  REQUIRE(t.size() >= 4);
  CHECK(t.front() >= -13);
  CHECK(t.back() <= 87);
  CHECK(t[1] - t[0] == 20);
  CHECK(log_ticks(0.01, 10) == std::vector<double>{0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10});
  CHECK(log_ticks(1e-4, 1e4).size() == 9);  // decades only
  CHECK(xml_escape("a<b & \"c\">") == "a&lt;b &amp; &quot;c&quot;&gt;");
}

TEST_CASE("learning-curve and parity SVGs hold the data, units and MAE", "[train][plot]") {
  flt::test_support::ScratchDir tmp("svg");
  const std::vector<double> epochs = {1, 2, 3, 4, 5};
  const std::vector<double> train = {1.0, 0.5, 0.25, 0.12, 0.06};
  const std::vector<double> val = {1.2, 0.6, 0.4, std::nan(""), 0.3};
  const std::string lc = learning_curve_svg("U0", "eV", epochs, train, val);
  CHECK(lc.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0) == 0);
  CHECK(lc.find("</svg>") != std::string::npos);
  CHECK(count(lc, "<polyline") == 2);
  CHECK_THAT(lc, Catch::Contains("MAE of U0 [eV] (log scale)") && Catch::Contains("validation MAE"));
  CHECK_THAT(lc, Catch::Contains(">0.01<") && Catch::Contains(">1<") && Catch::Contains(">10<"));  // log ticks
  CHECK(count(lc, "<circle") == 9);  // the NaN point is skipped
  const std::vector<double> truth = {-1, 0, 1, 2, std::nan("")};
  const std::vector<double> pred = {-0.9, 0.1, 1.1, 1.9, 5};
  const std::string par = parity_svg("gap", "eV", truth, pred);
  CHECK_THAT(par, Catch::Contains("test: n = 4, MAE = 0.1 eV") && Catch::Contains("true gap [eV]") &&
                      Catch::Contains("predicted gap [eV]") && Catch::Contains("y = x"));
  CHECK(count(par, "<circle") == 4 + 1);  // 4 points (the NaN pair skipped) + the legend marker
  write_svg(tmp / "p.svg", par);
  CHECK(read_file(tmp / "p.svg") == par);
  LearningCurve curve({{"U0", "eV"}, {"mu", "Debye"}});
  for (std::size_t e = 0; e < epochs.size(); ++e)
    curve.append({static_cast<std::int64_t>(e + 1), 0, 0, 0, 0, 0, {train[e], 0.1}, {val[e], 0.2}});
  const auto paths = write_learning_curve_plots(tmp.path(), curve);
  REQUIRE(paths.size() == 2);
  CHECK(paths[1].filename() == "learning_curve_mu.svg");
  CHECK_THAT(read_file(paths[1]), Catch::Contains("MAE of mu [Debye]"));
  // Degenerate inputs still give a valid picture.
  CHECK_NOTHROW(parity_svg("x", "", std::vector<double>{}, std::vector<double>{}));
  CHECK_NOTHROW(learning_curve_svg("x", "", std::vector<double>{1}, std::vector<double>{0}, std::vector<double>{0}));
  CHECK_THROWS_AS(parity_svg("x", "", std::vector<double>{1}, std::vector<double>{}), flt::InvalidArgument);
}

TEST_CASE("data fingerprint depends on every coordinate, label and the order", "[train][checksum]") {
  const std::vector<int> z = {6, 1, 1, 1, 1};
  std::vector<double> xyz = {0, 0, 0, 0.63, 0.63, 0.63, -0.63, -0.63, 0.63, -0.63, 0.63, -0.63, 0.63, -0.63, -0.63};
  const std::vector<double> labels = {-40.47, 0.5};
  DataFingerprint a, b;
  a.add_molecule(z, xyz, labels);
  a.add_molecule(std::vector<int>{8}, std::vector<double>{0, 0, 0}, labels);
  b.add_molecule(z, xyz, labels);
  b.add_molecule(std::vector<int>{8}, std::vector<double>{0, 0, 0}, labels);
  CHECK(a.digest() == b.digest());
  CHECK(a.hex().rfind("fnv1a64:", 0) == 0);
  CHECK(a.hex().size() == 8 + 16);
  CHECK(a.molecules() == 2);
  // float coordinates that are exactly representable give the same fingerprint as doubles.
  DataFingerprint f;
  const std::vector<float> xyzf(xyz.begin(), xyz.end());
  std::vector<double> xyz_rounded(xyzf.begin(), xyzf.end());
  DataFingerprint g;
  f.add_molecule(z, xyzf, labels);
  g.add_molecule(z, xyz_rounded, labels);
  CHECK(f.digest() == g.digest());
  // Any change is seen: a coordinate, a label, the order, an extra empty molecule.
  DataFingerprint c1, c2, c3, c4;
  auto moved = xyz;
  moved[7] = std::nextafter(moved[7], 1.0);
  c1.add_molecule(z, moved, labels);
  c1.add_molecule(std::vector<int>{8}, std::vector<double>{0, 0, 0}, labels);
  c2.add_molecule(z, xyz, std::vector<double>{-40.47, 0.50000001});
  c2.add_molecule(std::vector<int>{8}, std::vector<double>{0, 0, 0}, labels);
  c3.add_molecule(std::vector<int>{8}, std::vector<double>{0, 0, 0}, labels);
  c3.add_molecule(z, xyz, labels);
  c4 = a;
  c4.add_molecule(std::vector<int>{}, std::vector<double>{}, {});
  for (const auto* other : {&c1, &c2, &c3, &c4}) CHECK(other->digest() != a.digest());
  CHECK_THROWS_AS(a.add_molecule(z, std::vector<double>{0, 0}, labels), flt::InvalidArgument);
}

TEST_CASE("training data checksum: per-molecule digests combined in order", "[train][checksum]") {
  const std::vector<int> z = {6, 1, 1, 1, 1};
  const std::vector<double> xyz = {0, 0, 0, 0.63, 0.63, 0.63, -0.63, -0.63, 0.63, -0.63, 0.63, -0.63, 0.63, -0.63, -0.63};
  const std::vector<double> labels = {-40.47, 0.5};
  const std::uint64_t methane = molecule_digest(z, xyz, labels);
  const std::uint64_t oxygen = molecule_digest(std::vector<int>{8}, std::vector<double>{0, 0, 0}, labels);
  // A molecule's digest is the FNV-1a of its encoding (the one the earlier whole-set fingerprint
  // concatenated).
  Fnv1a64 expected;
  expected.update_u64(z.size());
  for (std::size_t i = 0; i < z.size(); ++i) {
    expected.update_i64(z[i]);
    for (std::size_t k = 0; k < 3; ++k) expected.update_f64(xyz[3 * i + k]);
  }
  expected.update_u64(labels.size());
  for (double v : labels) expected.update_f64(v);
  CHECK(methane == expected.digest());
  // The checksum: FNV-1a of the count and the digests, with its own prefix.
  const std::vector<std::uint64_t> both{methane, oxygen};
  Fnv1a64 combined;
  combined.update_u64(2);
  combined.update_u64(methane);
  combined.update_u64(oxygen);
  CHECK(training_data_checksum(both) == "fnv1a64-mol:" + combined.hex());
  // Any change is seen: a coordinate, a label, the order, a molecule more.
  auto moved = xyz;
  moved[7] = std::nextafter(moved[7], 1.0);
  CHECK(molecule_digest(z, moved, labels) != methane);
  CHECK(molecule_digest(z, xyz, std::vector<double>{-40.47, 0.50000001}) != methane);
  CHECK(training_data_checksum(std::vector<std::uint64_t>{oxygen, methane}) != training_data_checksum(both));
  CHECK(training_data_checksum(std::vector<std::uint64_t>{methane, oxygen, oxygen}) != training_data_checksum(both));
  CHECK(training_data_checksum(std::vector<std::uint64_t>{}) != training_data_checksum(both));
  CHECK_THROWS_AS(molecule_digest(z, std::vector<double>{0, 0}, labels), flt::InvalidArgument);
}

TEST_CASE("progress: plain lines for bytes and unknown totals, no repeated final line, run ETA", "[train][progress]") {
  double now = 0;
  auto clock = [&] { return now; };
  SECTION("bytes: sizes and rate in B/kB/MB, one line per 10%") {
    std::ostringstream out;
    ProgressBar bar(out, false, "reading", 2'000'000, clock, 30.0);
    bar.set_unit(ProgressUnit::bytes);
    for (int i = 1; i <= 20; ++i) {
      now += 0.5;
      bar.update(static_cast<std::size_t>(i) * 100'000, "12 records");
    }
    bar.finish();
    const std::string s = out.str();
    CHECK(count(s, "\n") == 10);  // the 100% line is the last one: finish() adds nothing
    CHECK_THAT(s, Catch::Contains("reading  10% 200.0 kB/2.0 MB 200.0 kB/s ETA 9.0s elapsed 1.0s  12 records"));
    CHECK_THAT(s, Catch::Contains("reading 100% 2.0 MB/2.0 MB"));
  }
  SECTION("records decoded after the 100% line: the final line gives their count") {
    std::ostringstream out;
    ProgressBar bar(out, false, "converting", 7900, clock, 30.0);
    bar.set_unit(ProgressUnit::bytes);
    now = 0.1;
    bar.update(7900, "1 records");  // the whole file read with the first record
    bar.update(7900, "2 records");
    bar.update(7900, "3 records");
    bar.finish();
    const std::string s = out.str();
    CHECK(count(s, "\n") == 2);
    CHECK_THAT(s, Catch::EndsWith("3 records\n"));
  }
  SECTION("a summary still gets its own final line") {
    std::ostringstream out;
    ProgressBar bar(out, false, "predicting", 10, clock, 30.0);
    now = 1;
    bar.update(10);
    bar.finish("done");
    CHECK(count(out.str(), "\n") == 2);
    CHECK_THAT(out.str(), Catch::EndsWith("done\n"));
  }
  SECTION("unknown total (standard input): count and rate every interval, no percentage or ETA") {
    std::ostringstream out;
    ProgressBar bar(out, false, "reading", 0, clock, 30.0);
    bar.set_unit(ProgressUnit::bytes);
    for (int i = 1; i <= 100; ++i) {
      now += 1;
      bar.update(static_cast<std::size_t>(i) * 1000);
    }
    const std::string s = out.str();
    CHECK(count(s, "\n") == 3);  // at 30, 60 and 90 s
    CHECK_THAT(s, Catch::Contains("reading 30.0 kB 1.0 kB/s elapsed 30s"));
    CHECK_THAT(s, !Catch::Contains("%") && !Catch::Contains("ETA"));
  }
  SECTION("terminal with an unknown total: redrawn, no bar") {
    std::ostringstream out;
    ProgressBar bar(out, true, "reading", 0, clock);
    now = 1;
    bar.update(5);
    bar.finish();
    CHECK(count(out.str(), "\n") == 1);
    CHECK_THAT(out.str(), Catch::Contains("\rreading 5 5/s") && !Catch::Contains("["));
  }
  CHECK(format_bytes(512) == "512 B");
  CHECK(format_bytes(12345) == "12.3 kB");
  CHECK(format_bytes(4.5e6) == "4.5 MB");
  CHECK(format_bytes(1.234e9) == "1.23 GB");
  // The whole run's ETA: 2.5 epochs took 50 s, 7.5 remain.
  REQUIRE(run_eta(50, 2.5, 7.5).has_value());
  CHECK(*run_eta(50, 2.5, 7.5) == Approx(150));
  CHECK_FALSE(run_eta(0, 0, 10).has_value());
  CHECK_FALSE(run_eta(10, 0, 10).has_value());
  CHECK(*run_eta(10, 1, 0) == 0);
}

TEST_CASE("parity plots: the rule for targets whose spread dwarfs their error", "[train][plot]") {
  // QM9-like totals: thousands of eV from the number of atoms, errors of 0.3 eV (a small model).
  std::vector<double> truth, predicted, per_atom_reference;
  flt::Rng rng(3);
  for (int i = 0; i < 200; ++i) {
    const int atoms = 5 + i % 20;
    const double reference = -1000.0 * atoms;        // what the composition explains
    const double rest = -2.0 * atoms + rng.normal();  // "atomization energy": a few eV of spread
    truth.push_back(reference + rest);
    predicted.push_back(reference + rest + 0.3 * rng.normal());
    per_atom_reference.push_back(reference);
  }
  const ParityReference reference{"U0_atom (atomization energy)", per_atom_reference};
  // Spread / RMSE about 2e4: the raw parity plot shows nothing; minus the reference (spread about
  // 11 eV) it is readable.
  CHECK(choose_parity_view(truth, predicted, nullptr) == ParityView::residuals);
  CHECK(choose_parity_view(truth, predicted, &reference) == ParityView::referenced);
  const std::string referenced = readable_parity_svg("U0", "eV", truth, predicted, &reference);
  CHECK_THAT(referenced, Catch::Contains("Parity: U0_atom (atomization energy)") &&
                             Catch::Contains("true U0_atom (atomization energy) [eV]"));
  const std::string residuals = readable_parity_svg("U0", "eV", truth, predicted, nullptr);
  CHECK_THAT(residuals, Catch::Contains("Residuals: U0") && Catch::Contains("predicted - true U0 [eV]") &&
                            Catch::Contains("zero error") && Catch::Contains("+-MAE"));
  CHECK(count(residuals, "<circle") == 200 + 1);  // every point and the legend marker

  // A target whose spread is comparable with its error keeps the ordinary parity plot.
  std::vector<double> gap_truth, gap_pred;
  for (int i = 0; i < 200; ++i) {
    gap_truth.push_back(6.0 + 1.3 * rng.normal());
    gap_pred.push_back(gap_truth.back() + 0.1 * rng.normal());
  }
  CHECK(choose_parity_view(gap_truth, gap_pred, nullptr) == ParityView::values);
  CHECK_THAT(readable_parity_svg("gap", "eV", gap_truth, gap_pred, nullptr), Catch::Contains("Parity: gap") &&
                                                                                   Catch::Contains("y = x"));

  // Minus the reference still too spread (a good model: 0.05 eV, like QM9's atomization energy
  // against the default model's error): residuals of the referenced value.
  std::vector<double> sharp = truth;
  for (std::size_t i = 0; i < sharp.size(); ++i) sharp[i] = truth[i] + 0.05 * (i % 2 == 0 ? 1 : -1);
  CHECK(choose_parity_view(truth, sharp, &reference) == ParityView::residuals);
  CHECK_THAT(readable_parity_svg("U0", "eV", truth, sharp, &reference),
             Catch::Contains("Residuals: U0_atom (atomization energy)"));

  // The threshold itself: a ratio of exactly kParityReadableRatio is readable, just above is not.
  const std::vector<double> two = {-1.0, 1.0};  // standard deviation 1
  CHECK(choose_parity_view(two, std::vector<double>{-1.0 + 1.0 / kParityReadableRatio, 1.0 - 1.0 / kParityReadableRatio},
                           nullptr) == ParityView::values);
  CHECK(choose_parity_view(two, std::vector<double>{-1.0 + 0.9 / kParityReadableRatio, 1.0 - 0.9 / kParityReadableRatio},
                           nullptr) == ParityView::residuals);
  // Degenerate inputs: no pairs, or a perfect constant prediction, keep the ordinary plot.
  CHECK(choose_parity_view(std::vector<double>{}, std::vector<double>{}, nullptr) == ParityView::values);
  CHECK(choose_parity_view(std::vector<double>{1, 1}, std::vector<double>{1, 1}, nullptr) == ParityView::values);
  CHECK_THROWS_AS(choose_parity_view(two, two, &reference), flt::InvalidArgument);  // 2 values, 200 references
}
