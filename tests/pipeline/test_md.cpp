// NVE molecular dynamics (src/pipeline/md.hpp) with a small near_far model: velocity Verlet
// conserves the total energy to second order in the time step, keeps the centre of mass at rest,
// is reproducible, and stops when the energy leaves its band; flt md end to end.
#include "chem/elements.hpp"
#include "pipeline/md.hpp"
#include "test_predict_util.hpp"

#include <catch2/catch.hpp>

#include <fstream>

#include <cmath>

using namespace flt;
using namespace flt::pipeline;
using namespace flt::pipeline::testing;

namespace {

// The first configuration of the bundled rMD17 ethanol file (9 atoms, Angstrom).
models::Molecule ethanol() {
  const auto points = read_all(std::string(FLT_SOURCE_DIR) + "/datasets/rmd17-ethanol/train.xyz");
  REQUIRE(!points.empty());
  return to_molecule(points[0]);
}

Predictor near_far_predictor() {
  std::vector<std::shared_ptr<const LoadedModel>> members{
      LoadedModel::from_model(small_model(3, models::AttentionKind::near_far), "md")};
  return Predictor(std::move(members));
}

struct Run {
  MdSummary summary;
  std::vector<double> total;
  Mat<double> last_positions;
};

Run run(const Predictor& predictor, double dt, double duration_fs, std::uint64_t seed = 1) {
  MdOptions options;
  options.timestep_fs = dt;
  options.steps = static_cast<std::size_t>(std::llround(duration_fs / dt));
  options.temperature_k = 300;
  options.seed = seed;
  options.threads = 1;
  Run out;
  out.summary = run_nve(predictor, ethanol(), options, [&](const MdFrame& f) {
    out.total.push_back(f.total_ev);
    out.last_positions = *f.positions;
  });
  return out;
}

}  // namespace

TEST_CASE("NVE: velocity Verlet conserves energy to second order in the time step", "[md]") {
  const Predictor predictor = near_far_predictor();
  const Run coarse = run(predictor, 0.4, 40);
  const Run fine = run(predictor, 0.2, 40);
  REQUIRE(coarse.summary.steps == 100);
  REQUIRE(fine.summary.steps == 200);
  INFO("largest |E_tot - E_tot(0)| [eV]: dt 0.4 fs " << coarse.summary.max_total_change_ev
       << ", dt 0.2 fs " << fine.summary.max_total_change_ev);
  // The kinetic energy at 300 K is about 0.3 eV for 9 atoms: the error is far below it.
  CHECK(fine.summary.max_total_change_ev < 3e-3);
  CHECK(fine.summary.max_total_change_ev > 0);
  // Second order: halving dt divides the energy error by about 4 (a first-order or
  // non-conservative integrator gives 2 or no gain).
  const double ratio = coarse.summary.max_total_change_ev / fine.summary.max_total_change_ev;
  CHECK(ratio > 2.8);
  CHECK(ratio < 6.0);
}

TEST_CASE("NVE: no centre-of-mass drift, reproducible, stops when the energy leaves its band",
          "[md]") {
  const Predictor predictor = near_far_predictor();
  const models::Molecule start = ethanol();
  const std::vector<double> mass = atomic_masses(start);
  CHECK(mass[0] == Approx(chem::standard_atomic_weight(start.atomic_numbers[0])));
  CHECK(chem::standard_atomic_weight(6) == Approx(12.011).epsilon(1e-4));
  CHECK(chem::standard_atomic_weight(1) == Approx(1.008).epsilon(1e-3));
  const Run a = run(predictor, 0.25, 25, 7);
  const Run b = run(predictor, 0.25, 25, 7);
  CHECK(a.last_positions == b.last_positions);
  CHECK(a.total == b.total);
  const Run other_seed = run(predictor, 0.25, 25, 8);
  CHECK(other_seed.last_positions != a.last_positions);
  // Forces of an isolated molecule sum to zero and the initial velocities carry no momentum, so
  // the centre of mass stays where it started.
  auto centre = [&](const Mat<double>& x) {
    Eigen::Vector3d c = Eigen::Vector3d::Zero();
    double m = 0;
    for (Index i = 0; i < x.rows(); ++i) {
      c += mass[static_cast<std::size_t>(i)] * x.row(i).transpose();
      m += mass[static_cast<std::size_t>(i)];
    }
    return Eigen::Vector3d(c / m);
  };
  Mat<double> x0(static_cast<Index>(start.positions.size()), 3);
  for (Index i = 0; i < x0.rows(); ++i) {
    for (int k = 0; k < 3; ++k) x0(i, k) = start.positions[static_cast<std::size_t>(i)][static_cast<std::size_t>(k)];
  }
  CHECK((centre(a.last_positions) - centre(x0)).norm() < 1e-4);
  CHECK((a.last_positions - x0).norm() > 1e-2);  // but the atoms moved

  MdOptions strict;
  strict.steps = 50;
  strict.max_energy_change_per_atom = 1e-9;
  try {
    run_nve(predictor, start, strict, {});
    FAIL("the energy band was not enforced");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("at step") != std::string::npos);
  }
  MdOptions bad;
  bad.timestep_fs = 0;
  CHECK_THROWS_AS(run_nve(predictor, start, bad, {}), InvalidArgument);
}

TEST_CASE("flt md: log and trajectory with units, summary on stdout", "[md][program]") {
  TempDir dir("md");
  const std::string model = save_small_model(dir, "m.flt", 3, models::AttentionKind::near_far);
  const std::string input = std::string(FLT_SOURCE_DIR) + "/datasets/rmd17-ethanol/train.xyz";
  const auto r = run_flt("md -m " + quoted(model) + " " + quoted(input) +
                             " --record 2 --steps 40 --timestep 0.25 --every 10 -j 1 -q --log " +
                             quoted(dir / "md.csv") + " -o " + quoted(dir / "traj.xyz"),
                         dir);
  INFO(r.out << r.err);
  REQUIRE(r.status == 0);
  CHECK(r.out.find("NVE molecular dynamics: 9 atoms, 40 steps of 0.25 fs") != std::string::npos);
  const std::string log = flt::test_support::slurp(dir / "md.csv");
  CHECK(log.rfind("step,time [fs],potential_energy [eV],kinetic_energy [eV],total_energy [eV],"
                  "temperature [K]\n",
                  0) == 0);
  CHECK(std::count(log.begin(), log.end(), '\n') == 1 + 5);  // steps 0, 10, 20, 30, 40
  const auto frames = read_all((dir / "traj.xyz").string());
  REQUIRE(frames.size() == 5);
  CHECK(frames[4].title == "step 40");
  REQUIRE(frames[4].property("total_energy") != nullptr);
  CHECK(frames[4].property("total_energy")->unit == "eV");
  const auto missing = run_flt("md -m " + quoted(model) + " " + quoted(input) + " --record 5000", dir);
  CHECK(missing.status == 1);
  CHECK(missing.err.find("does not exist") != std::string::npos);

  // A run that leaves the energy band stops with exit status 1 and keeps its frames up to and
  // including the one that broke the band.
  const auto blown = run_flt("md -m " + quoted(model) + " " + quoted(input) +
                                 " --record 2 --steps 40 --timestep 0.25 --every 10 -j 1 -q --max-energy-change 1e-9"
                                 " --log " + quoted(dir / "blown.csv") + " -o " + quoted(dir / "blown.xyz"),
                             dir);
  CHECK(blown.status == 1);
  CHECK_THAT(blown.err, Catch::Contains("at step 1 "));
  const std::string blown_log = flt::test_support::slurp(dir / "blown.csv");
  CHECK(std::count(blown_log.begin(), blown_log.end(), '\n') == 1 + 2);  // steps 0 and 1
  CHECK(read_all((dir / "blown.xyz").string()).size() == 2);

  // One atom: no internal motion, and the summary says it stayed at 0 K.
  std::ofstream(dir / "neon.xyz") << "1\nneon\nC 0 0 0\n";
  const auto atom = run_flt("md -m " + quoted(model) + " " + quoted(dir / "neon.xyz") + " --steps 5 -j 1", dir);
  INFO(atom.err);
  CHECK(atom.status == 0);
  CHECK_THAT(atom.out, Catch::Contains("started at 0 K"));
  CHECK_THAT(atom.err, Catch::Contains("single atom has no internal motion"));
}
