#include "core/error.hpp"
#include "temp_dir.hpp"
#include "train/atomic_file.hpp"
#include "train/data_checksum.hpp"
#include "train/metrics.hpp"
#include "train/progress.hpp"
#include "train/svg_plot.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <sstream>

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
  testing::TempDir tmp("svg");
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
