// NVE molecular dynamics (src/pipeline/md.hpp) with a small near_far model: velocity Verlet
// conserves the total energy to second order in the time step, keeps the centre of mass at rest,
// is reproducible, and stops when the energy leaves its band; a run continued from a trajectory
// frame repeats the uninterrupted one; flt md end to end.
#include "chem/elements.hpp"
#include "chem/writer.hpp"
#include "pipeline/md.hpp"
#include "test_predict_util.hpp"

#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

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

TEST_CASE("flt md --record: bad records before the start record are passed over and a bad start record names file and record",
          "[md][program]") {
  TempDir dir("md_records");
  const std::string model = save_small_model(dir, "m.flt", 3, models::AttentionKind::near_far);
  // Record 1: two atoms 0.05 A apart (the reader rejects it); 2: a water; 3: sulfur, which the
  // model never saw; 4: a non-finite coordinate.
  std::ofstream(dir / "frames.xyz") << "2\ntoo close\nO 0 0 0\nH 0.05 0 0\n"
                                       "3\nwater\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n"
                                       "3\nsulfur\nS 0 0 0\nH 1.34 0 0\nH -0.34 1.30 0\n"
                                       "3\nnan\nO 0 0 0\nH 0.96 nan 0\nH -0.24 0.93 0\n";
  const std::string common = "md -m " + quoted(model) + " " + quoted(dir / "frames.xyz") + " --steps 5 -j 1 --record ";
  const auto water = run_flt(common + "2", dir);
  INFO(water.out << water.err);
  CHECK(water.status == 0);
  CHECK_THAT(water.out, Catch::Contains("NVE molecular dynamics: 3 atoms"));
  const auto close = run_flt(common + "1", dir);
  CHECK(close.status == 1);
  CHECK_THAT(close.err, Catch::Contains("frames.xyz: record 1: atoms 1 and 2 are 0.05 Angstrom apart"));
  const auto sulfur = run_flt(common + "3", dir);
  CHECK(sulfur.status == 1);
  CHECK_THAT(sulfur.err, Catch::Contains("frames.xyz: record 3: the model cannot predict this molecule: atom 1: element Z=16"));
  const auto last = run_flt(common + "last", dir);
  CHECK(last.status == 1);
  CHECK_THAT(last.err, Catch::Contains("frames.xyz: record 4: atom 2 has a non-finite coordinate"));
  const auto beyond = run_flt(common + "5", dir);
  CHECK(beyond.status == 1);
  CHECK_THAT(beyond.err, Catch::Contains("has 4 records; --record 5 does not exist"));
}

TEST_CASE("NVE: a run continued from a written trajectory frame repeats the uninterrupted run bit for bit",
          "[md]") {
  const Predictor predictor = near_far_predictor();
  TempDir dir("md_continue");
  const auto points = read_all(std::string(FLT_SOURCE_DIR) + "/datasets/rmd17-ethanol/train.xyz");
  REQUIRE(!points.empty());
  const chem::PointSet& start = points[0];
  constexpr std::size_t first = 12, more = 18;
  MdOptions straight;
  straight.timestep_fs = 0.3;
  straight.steps = first + more;
  straight.temperature_k = 400;
  straight.seed = 5;
  straight.threads = 1;
  Mat<double> x_end, p_end;
  auto writer = chem::MoleculeWriter::open((dir / "frame.xyz").string());
  run_nve(predictor, to_molecule(start), straight, [&](const MdFrame& f) {
    // Velocities in Angstrom/fs are the momenta in ASE's unit over the masses, times ASE's fs.
    for (Index i = 0; i < f.positions->rows(); ++i)
      for (int c = 0; c < 3; ++c)
        CHECK((*f.velocities)(i, c) == (*f.momenta)(i, c) / (*f.masses)[static_cast<std::size_t>(i)] * 0.09822694788464063);
    if (f.step == first) writer->write(trajectory_record(start, f));
    x_end = *f.positions;
    p_end = *f.momenta;
  });
  writer->close();
  const auto frames = read_all((dir / "frame.xyz").string());
  REQUIRE(frames.size() == 1);
  const chem::PointSet& frame = frames[0];
  CHECK(frame.title == "step 12");
  REQUIRE(frame.column("momenta") != nullptr);
  CHECK(frame.column("momenta")->unit == "sqrt(amu*eV)");
  REQUIRE(frame.column("masses") != nullptr);
  CHECK(frame.column("masses")->unit == "amu");
  REQUIRE(frame.column("forces") != nullptr);
  CHECK(frame.column("forces")->unit == "eV/A");

  MdOptions continued;
  continued.timestep_fs = straight.timestep_fs;
  continued.steps = more;
  continued.threads = 1;
  continue_from(frame, continued);
  CHECK(continued.first_step == first);
  CHECK(continued.start_time_fs == Approx(first * 0.3));
  CHECK(continued.masses == atomic_masses(to_molecule(start)));
  Mat<double> x_cont, p_cont;
  std::size_t last_step = 0;
  const MdSummary summary = run_nve(predictor, to_molecule(frame), continued, [&](const MdFrame& f) {
    x_cont = *f.positions;
    p_cont = *f.momenta;
    last_step = f.step;
  });
  CHECK(summary.steps == more);
  CHECK(last_step == first + more);
  // The file holds the exact state (positions and momenta written as shortest round-trip text)
  // and the forces follow from the positions: the same arithmetic, bit for bit.
  CHECK(x_cont == x_end);
  CHECK(p_cont == p_end);
  CHECK((x_cont - points[0].positions).norm() > 1e-2);  // and the atoms moved

  // A record without momenta, or with momenta in another unit, cannot be continued.
  MdOptions options;
  CHECK_THROWS_AS(continue_from(start, options), InputError);
  chem::PointSet other_unit = frame;
  for (auto& c : other_unit.atom_columns)
    if (c.name == "momenta") c.unit = "amu*A/fs";
  CHECK_THROWS_WITH(continue_from(other_unit, options), Catch::Contains("ASE's unit"));
}

TEST_CASE("flt md --velocities input: continuing the last frame of a trajectory gives the uninterrupted run's frames",
          "[md][program]") {
  TempDir dir("md_restart");
  const std::string model = save_small_model(dir, "m.flt", 3, models::AttentionKind::near_far);
  const std::string input = std::string(FLT_SOURCE_DIR) + "/datasets/rmd17-ethanol/train.xyz";
  const std::string common = "md -m " + quoted(model) + " --timestep 0.25 --every 10 -j 1 -q ";
  const auto full = run_flt(common + quoted(input) + " --record 3 --steps 40 --log " + quoted(dir / "full.csv") +
                                " -o " + quoted(dir / "full.xyz"),
                            dir);
  INFO(full.out << full.err);
  REQUIRE(full.status == 0);
  const auto half = run_flt(common + quoted(input) + " --record 3 --steps 20 -o " + quoted(dir / "half.xyz"), dir);
  REQUIRE(half.status == 0);
  const auto rest = run_flt(common + quoted(dir / "half.xyz") + " --record last --velocities input --steps 20 --log " +
                                quoted(dir / "rest.csv") + " -o " + quoted(dir / "rest.xyz"),
                            dir);
  INFO(rest.out << rest.err);
  REQUIRE(rest.status == 0);
  // Text of the trajectories' records (atom count, comment line, atom lines).
  const auto records = [](const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string count; std::getline(in, count);) {
      std::string record = count + "\n", line;
      for (int k = 0; k < std::stoi(count) + 1 && std::getline(in, line); ++k) record += line + "\n";
      out.push_back(record);
    }
    return out;
  };
  const auto full_frames = records(flt::test_support::slurp(dir / "full.xyz"));
  const auto rest_frames = records(flt::test_support::slurp(dir / "rest.xyz"));
  REQUIRE(full_frames.size() == 5);  // steps 0, 10, 20, 30, 40
  REQUIRE(rest_frames.size() == 3);  // steps 20 (the frame it starts from), 30, 40
  for (std::size_t k = 0; k < 3; ++k) CHECK(rest_frames[k] == full_frames[2 + k]);
  CHECK_THAT(rest_frames[2], Catch::Contains("title=\"step 40\""));
  CHECK_THAT(rest_frames[2], Catch::Contains("momenta_unit=sqrt(amu*eV)"));
  // The log's rows (step, time, energies, temperature) are the same numbers too.
  const std::string full_log = flt::test_support::slurp(dir / "full.csv");
  const std::string rest_log = flt::test_support::slurp(dir / "rest.csv");
  const std::size_t from_step_20 = full_log.find("\n20,");
  REQUIRE(from_step_20 != std::string::npos);
  CHECK(rest_log.substr(rest_log.find('\n')) == full_log.substr(from_step_20));

  // Velocities come from the record or from --temperature, not both; a record without momenta
  // cannot give them.
  const auto both = run_flt(common + quoted(dir / "half.xyz") + " --record last --velocities input --temperature 500", dir);
  CHECK(both.status == 2);
  CHECK_THAT(both.err, Catch::Contains("--temperature draws Maxwell-Boltzmann velocities"));
  const auto none = run_flt(common + quoted(input) + " --velocities input --steps 1", dir);
  CHECK(none.status != 0);
  CHECK_THAT(none.err, Catch::Contains("no momenta to continue from"));
  const auto bad_record = run_flt(common + quoted(input) + " --record first", dir);
  CHECK(bad_record.status == 2);
}
