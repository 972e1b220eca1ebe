// flt info and flt rpe on a model built with the model API.
#include "pipeline/info.hpp"
#include "pipeline/rpe_export.hpp"
#include "test_predict_util.hpp"
#include "io/csv.hpp"

#include <catch2/catch.hpp>

using namespace flt;
using namespace flt::pipeline;
using namespace flt::pipeline::testing;

TEST_CASE("flt info prints format, configuration, elements, targets with units, counts, metadata",
          "[info][program]") {
  TempDir dir("info");
  const std::string model = save_small_model(dir, "m.flt", 21);
  const auto run = run_flt("info " + quoted(model), dir);
  INFO(run.err);
  REQUIRE(run.status == 0);
  const std::string& o = run.out;
  CHECK(o.find("format: flt-model, version 1") != std::string::npos);
  CHECK(o.find("parameters: " + std::to_string(small_model(21).parameters().size())) != std::string::npos);
  CHECK(o.find("attention") != std::string::npos);
  CHECK(o.find("kronecker") != std::string::npos);
  CHECK(o.find("elements (4): H(1) C(6) N(7) O(8)") != std::string::npos);
  CHECK(o.find("U0         eV") != std::string::npos);
  CHECK(o.find("gap        eV           mean") != std::string::npos);
  CHECK(o.find("-1027.4") != std::string::npos);  // carbon's reference energy
  CHECK(o.find("training.seed = 21") != std::string::npos);
  CHECK(o.find("training.note = test model") != std::string::npos);
  // A corrupted file is rejected with the file's name.
  std::string bytes = slurp(model);
  bytes[bytes.size() - 3] = static_cast<char>(bytes[bytes.size() - 3] ^ 1);
  std::ofstream(dir / "bad.flt", std::ios::binary) << bytes;
  const auto bad = run_flt("info " + quoted(dir / "bad.flt"), dir);
  CHECK(bad.status == 1);
  CHECK(bad.err.find("bad.flt") != std::string::npos);
}

TEST_CASE("flt rpe writes f(distance) per block and head as CSV and SVG", "[rpe][program]") {
  TempDir dir("rpe");
  const std::string path = save_small_model(dir, "m.flt", 22);
  const auto run = run_flt("rpe " + quoted(path) + " -o " + quoted(dir / "rpe.csv") + " --plot " +
                               quoted(dir / "rpe.svg") + " --max-distance 8 --points 33",
                           dir);
  INFO(run.err);
  REQUIRE(run.status == 0);
  const auto table = io::read_csv(dir / "rpe.csv");
  const std::vector<std::string> header{"distance [Angstrom]", "block0.head0", "block0.head1", "block1.head0",
                                        "block1.head1"};
  CHECK(table.header == header);
  REQUIRE(table.rows.size() == 33);
  CHECK(std::stod(table.rows.front()[0]) == 0.0);
  CHECK(std::stod(table.rows.back()[0]) == 8.0);
  // The values are the model's own RPE functions (shortest round-trip text: exact).
  const auto model = LoadedModel::load(path);
  std::vector<double> rho;
  for (const auto& row : table.rows) rho.push_back(std::stod(row[0]));
  for (Index b = 0; b < 2; ++b)
    for (Index h = 0; h < 2; ++h) {
      const auto f = model->rpe_function(b, h, rho);
      for (std::size_t i = 0; i < rho.size(); ++i)
        CHECK(std::stod(table.rows[i][static_cast<std::size_t>(1 + 2 * b + h)]) == f[i]);
      // A radial spectrum initialised with f(0) = 1 that decays with distance.
      CHECK(f.front() == Approx(1.0).margin(1e-6));
      CHECK(std::abs(f.back()) < f.front());
    }
  const std::string svg = slurp(dir / "rpe.svg");
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(svg.find("block 0") != std::string::npos);
  CHECK(svg.find("block 1") != std::string::npos);
  CHECK(svg.find("distance [Angstrom]") != std::string::npos);
  // A Performer model has no RPE: a clear error.
  const auto perf = run_flt("rpe " + quoted(save_small_model(dir, "p.flt", 23, models::AttentionKind::performer)), dir);
  CHECK(perf.status == 1);
  CHECK(perf.err.find("no relative positional encoding") != std::string::npos);
  CHECK(run_flt("rpe " + quoted(path) + " --points 1", dir).status == 2);
}
