// `flt train --force-weight`: training on energies and forces read from extended XYZ (rMD17
// ethanol frames). Forces are read, converted and masked where a frame has none; the run reports
// force metrics; the same seed gives the same model; bad inputs and settings are refused clearly.
// (The gradient itself: tests/models/test_second_derivatives.cpp.)
#include "pipeline/dataset.hpp"
#include "test_train_util.hpp"

#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using flt::pipeline::testing::ScratchDir;
using flt::pipeline::testing::run_flt;
using flt::pipeline::testing::slurp;
namespace fs = std::filesystem;

namespace {

// The first `count` frames of the bundled rMD17 ethanol file, as text blocks.
std::vector<std::string> ethanol_frames(std::size_t count) {
  std::ifstream in(std::string(FLT_SOURCE_DIR) + "/datasets/rmd17-ethanol/train.xyz");
  REQUIRE(in);
  std::vector<std::string> frames;
  std::string line;
  while (frames.size() < count && std::getline(in, line)) {
    const int n = std::stoi(line);
    std::string frame = line + "\n";
    for (int i = 0; i < n + 1; ++i) {
      REQUIRE(std::getline(in, line));
      frame += line + "\n";
    }
    frames.push_back(frame);
  }
  REQUIRE(frames.size() == count);
  return frames;
}

// The frame with its Properties declaration `from` replaced by `to` and each atom line cut to its
// first `columns` fields.
std::string rewrite_frame(const std::string& frame, const std::string& from, const std::string& to,
                          int columns) {
  std::istringstream in(frame);
  std::string line, out;
  std::getline(in, line);
  out += line + "\n";
  std::getline(in, line);
  const auto at = line.find(from);
  REQUIRE(at != std::string::npos);
  line.replace(at, from.size(), to);
  out += line + "\n";
  while (std::getline(in, line)) {
    std::istringstream atom(line);
    std::string field, cut;
    for (int k = 0; k < columns && atom >> field; ++k) cut += (k ? " " : "") + field;
    out += cut + "\n";
  }
  return out;
}

// A frame without its forces column (species and positions only).
std::string without_forces(const std::string& frame) {
  return rewrite_frame(frame, "Properties=species:S:1:pos:R:3:forces:R:3", "Properties=species:S:1:pos:R:3", 4);
}

// A frame whose forces column declares 2 components (the last force component dropped).
std::string two_component_forces(const std::string& frame) {
  return rewrite_frame(frame, "forces:R:3", "forces:R:2", 6);
}

void write(const fs::path& path, const std::vector<std::string>& frames) {
  std::ofstream out(path);
  for (const auto& f : frames) out << f;
}

std::string args(const fs::path& input, const std::string& extra, const fs::path& out) {
  return "train '" + input.string() + "' --targets energy --epochs 2 --batch-size 8 --width 16 --heads 2 --blocks 1"
         " --mlp-hidden 16 --head-hidden 16 --radial-nodes 8 --split 40,10,rest --threads 1"
         " --seed 1 --lr 1e-3 " + extra + " --out '" + out.string() + "'";
}

}  // namespace

TEST_CASE("flt train --force-weight: forces read and masked, force metrics reported, deterministic",
          "[train][forces]") {
  ScratchDir dir("train_forces");
  auto frames = ethanol_frames(60);
  for (std::size_t i = 5; i < 10; ++i) frames[i] = without_forces(frames[i]);  // 5 frames without forces
  const fs::path input = dir / "ethanol.xyz";
  write(input, frames);

  const auto run = run_flt(args(input, "--force-weight 10", dir / "ef"), dir.path());
  INFO(run.err);
  REQUIRE(run.status == 0);
  CHECK_THAT(run.err, Catch::Contains("forces: 5 molecules without (masked)"));
  CHECK_THAT(run.err, Catch::Contains("training on energies and forces: target energy, force weight 10"));
  CHECK_THAT(run.err, Catch::Contains("forces val "));
  CHECK_THAT(run.out, Catch::Contains("forces    eV/A"));
  CHECK_THAT(slurp(dir / "ef" / "test_metrics.csv"), Catch::Contains("energy forces,eV/A,"));
  // The validation force MAE per epoch, in the learning curve as in the progress lines.
  CHECK_THAT(slurp(dir / "ef" / "learning_curve.csv"), Catch::Contains("val_force_mae_energy [eV/A]"));
  CHECK_THAT(slurp(dir / "ef" / "config.ini"), Catch::Contains("force-weight = 10"));

  // flt eval --forces on the test subset reproduces the run's test force metrics.
  const auto eval = run_flt("eval -m '" + (dir / "ef" / "model.flt").string() + "' '" + input.string() +
                                "' --split-file '" + (dir / "ef" / "split.csv").string() +
                                "' --forces --rotations 0 -q -o '" + (dir / "eval.csv").string() + "'",
                            dir.path());
  INFO(eval.err);
  REQUIRE(eval.status == 0);
  CHECK_THAT(eval.out, Catch::Contains("per force component of energy forces"));
  const std::string metrics = slurp(dir / "eval.csv");
  CHECK_THAT(metrics, Catch::Contains("energy forces,eV/A,"));
  {
    // The MAE of the forces row of both files (test_metrics.csv: target,unit,count,MAE,...).
    auto mae_of = [](const std::string& text, const std::string& row_start) {
      const auto at = text.find(row_start);
      REQUIRE(at != std::string::npos);
      std::istringstream row(text.substr(at, text.find('\n', at) - at));
      std::string field;
      for (int k = 0; k < 4; ++k) std::getline(row, field, ',');
      return std::stod(field);
    };
    CHECK(mae_of(metrics, "energy forces,") ==
          Approx(mae_of(slurp(dir / "ef" / "test_metrics.csv"), "energy forces,")).epsilon(1e-6));
  }
  const auto no_forces = run_flt("eval -m '" + (dir / "ef" / "model.flt").string() + "' '" + input.string() +
                                     "' --forces-unit eV/A",
                                 dir.path());
  CHECK(no_forces.status != 0);
  CHECK_THAT(no_forces.err, Catch::Contains("need --forces"));
  // A forces column the file does not have: an error, not a forces row of no values.
  const auto wrong_column = run_flt("eval -m '" + (dir / "ef" / "model.flt").string() + "' '" + input.string() +
                                        "' --rotations 0 --forces-unit eV/A --forces REF_forces",
                                    dir.path());
  CHECK(wrong_column.status == 1);
  CHECK_THAT(wrong_column.err, Catch::Contains("has forces in column 'REF_forces'"));

  // The same configuration again: the same model, bit for bit.
  const auto again = run_flt("train --config '" + (dir / "ef" / "config.ini").string() + "' --out '" +
                                 (dir / "again").string() + "'",
                             dir.path());
  INFO(again.err);
  REQUIRE(again.status == 0);
  CHECK(slurp(dir / "again" / "model.flt") == slurp(dir / "ef" / "model.flt"));

  // Interrupted after epoch 1 and resumed: the same model as the uninterrupted run.
  const auto cut = run_flt(args(input, "--force-weight 10 --stop-after-epoch 1", dir / "cut"), dir.path());
  INFO(cut.err);
  REQUIRE(cut.status == 0);
  const auto resumed = run_flt("train --out '" + (dir / "cut").string() + "' --resume", dir.path());
  INFO(resumed.err);
  REQUIRE(resumed.status == 0);
  CHECK(slurp(dir / "cut" / "model.flt") == slurp(dir / "ef" / "model.flt"));

  // Energies only: another model, and no force lines.
  const auto energy = run_flt(args(input, "", dir / "e"), dir.path());
  INFO(energy.err);
  REQUIRE(energy.status == 0);
  CHECK(energy.err.find("training on energies and forces") == std::string::npos);
  CHECK(slurp(dir / "e" / "model.flt") != slurp(dir / "ef" / "model.flt"));
}

TEST_CASE("flt train --force-weight: bad forces columns and settings are refused clearly", "[train][forces]") {
  ScratchDir dir("train_forces_bad");
  auto frames = ethanol_frames(60);
  frames[3] = two_component_forces(frames[3]);
  const fs::path input = dir / "ethanol.xyz";
  write(input, frames);

  // A forces column of the wrong shape: the record is bad (skipped and reported, or the run stops).
  const auto skip = run_flt(args(input, "--force-weight 1", dir / "skip"), dir.path());
  INFO(skip.err);
  REQUIRE(skip.status == 3);  // completed, with skipped records
  CHECK_THAT(skip.err, Catch::Contains("record 4"));
  CHECK_THAT(skip.err, Catch::Contains("forces need 3 real components per atom"));
  const auto fail = run_flt(args(input, "--force-weight 1 --on-error fail", dir / "fail"), dir.path());
  CHECK(fail.status != 0);
  CHECK_THAT(fail.err, Catch::Contains("record 4"));

  write(input, ethanol_frames(60));
  // No energy target to take forces of.
  const auto intensive = run_flt(args(input, "--force-weight 1 --pooling energy=mean", dir / "intensive"), dir.path());
  CHECK(intensive.status != 0);
  CHECK_THAT(intensive.err, Catch::Contains("needs an extensive energy target"));
  // Attention kinds without exact second derivatives.
  // (without --radial-nodes, a near_far option that the exact kind refuses on its own)
  std::string exact_args = args(input, "--force-weight 1 --attention exact", dir / "exact");
  exact_args.replace(exact_args.find(" --radial-nodes 8"), 17, "");
  const auto exact = run_flt(exact_args, dir.path());
  CHECK(exact.status != 0);
  CHECK_THAT(exact.err, Catch::Contains("second derivatives") && Catch::Contains("near_far"));
  // Units that are not a force, a column that is not there.
  const auto unit = run_flt(args(input, "--force-weight 1 --forces-unit eV", dir / "unit"), dir.path());
  CHECK(unit.status != 0);
  CHECK_THAT(unit.err, Catch::Contains("<energy>/<length>"));
  const auto column = run_flt(args(input, "--force-weight 1 --forces-column grad", dir / "column"), dir.path());
  CHECK(column.status != 0);
  CHECK_THAT(column.err, Catch::Contains("no training molecule has forces in column 'grad'"));
  const auto negative = run_flt(args(input, "--force-weight -1", dir / "negative"), dir.path());
  CHECK(negative.status != 0);
  CHECK_THAT(negative.err, Catch::Contains("--force-weight must be >= 0"));
}

TEST_CASE("dataset: forces converted to eV/A from the unit given, masked when missing", "[dataset][forces]") {
  ScratchDir dir("dataset_forces");
  auto frames = ethanol_frames(3);
  frames[1] = without_forces(frames[1]);
  const fs::path input = dir / "ethanol.xyz";
  write(input, frames);
  flt::pipeline::DatasetOptions options;
  options.inputs = {input.string()};
  options.targets = {"energy"};
  options.forces_column = "forces";
  const auto ev = flt::pipeline::load_dataset(options);
  REQUIRE(ev.has_forces());
  CHECK(ev.forces_missing == 1);
  CHECK(ev.forces[0].rows() == 9);
  CHECK(ev.forces[1].rows() == 0);
  CHECK(ev.forces[0](0, 0) == Approx(-4.15950961));  // the file's first component, eV/A
  options.forces_source_unit = "Hartree/Bohr";
  const auto au = flt::pipeline::load_dataset(options);
  CHECK(au.forces[0](0, 0) == Approx(-4.15950961 * 27.211386245988 / 0.529177210903).epsilon(1e-9));
  // A batch carries NaN rows for the molecule without forces.
  const std::vector<std::size_t> all{0, 1, 2};
  const auto batch = flt::pipeline::make_batch(ev, all);
  CHECK(batch.forces.rows() == 27);
  CHECK(std::isnan(batch.forces(9, 0)));
  CHECK(batch.forces(0, 0) == Approx(-4.15950961));
  CHECK_THROWS_WITH(flt::pipeline::force_unit_to_ev_per_angstrom("Hartree"), Catch::Contains("<energy>/<length>"));
  CHECK_THROWS_WITH(flt::pipeline::force_unit_to_ev_per_angstrom("Debye/A"), Catch::Contains("energy per length"));
}

TEST_CASE("dataset: energies given another unit than the file's leave the forces' unit to be given too",
          "[dataset][forces]") {
  // rMD17 frames are ASE files (energy in eV, forces in eV/A by ASE's convention). A user whose
  // ASE-written file holds kcal/mol and kcal/mol/A (MD17 as SchNetPack and TorchMD-Net use it) says
  // so for the energy with --source-units; the forces would otherwise stay eV/A, 23 times too large.
  ScratchDir dir("dataset_forces_units");
  const fs::path input = dir / "ethanol.xyz";
  write(input, ethanol_frames(3));
  flt::pipeline::DatasetOptions options;
  options.inputs = {input.string()};
  options.targets = {"energy"};
  options.forces_column = "forces";
  options.source_units = {{"energy", "kcal/mol"}};
  CHECK_THROWS_WITH(flt::pipeline::load_dataset(options),
                    Catch::Contains("ethanol.xyz: record 1: --source-units reads 'energy' in kcal/mol instead of the "
                                    "file's eV, but the forces column 'forces' would still be read in eV/A: give the "
                                    "forces' unit with --forces-unit (kcal/mol/A"));
  options.forces_source_unit = "kcal/mol/A";
  const auto kcal = flt::pipeline::load_dataset(options);
  CHECK(kcal.forces[0](0, 0) == Approx(-4.15950961 * 4184.0 / 96485.33212331001).epsilon(1e-9));
  options.forces_source_unit = "eV/A";  // the file's unit, confirmed
  CHECK(flt::pipeline::load_dataset(options).forces[0](0, 0) == Approx(-4.15950961));
  // The file's own unit given again changes nothing, and energies alone need no forces' unit.
  options.forces_source_unit.clear();
  options.source_units = {{"energy", "eV"}};
  CHECK(flt::pipeline::load_dataset(options).forces[0](0, 0) == Approx(-4.15950961));
  options.source_units = {{"energy", "kcal/mol"}};
  options.forces_column.clear();
  CHECK_FALSE(flt::pipeline::load_dataset(options).has_forces());
}

TEST_CASE("flt train: an ASE file's energy read in eV by convention is a warning only when no unit was given",
          "[dataset][forces]") {
  // The reader marks the label's unit as ASE's convention; the dataset, which knows whether
  // --source-units named the target, warns once when it relies on it.
  ScratchDir dir("dataset_ase_convention");
  const fs::path input = dir / "ethanol.xyz";
  write(input, ethanol_frames(60));
  const auto plain = run_flt(args(input, "--split-only", dir / "plain"), dir.path());
  REQUIRE(plain.status == 0);
  CHECK_THAT(plain.err, Catch::Contains("ethanol.xyz: record 1: label 'energy' has no unit in the file and is read in "
                                        "eV by ASE's convention (forces in eV/A); if the file holds another unit, give "
                                        "it with --source-units energy=<unit> and --forces-unit"));
  const auto given = run_flt(args(input, "--split-only --source-units energy=eV", dir / "given"), dir.path());
  REQUIRE(given.status == 0);
  CHECK_THAT(given.err, !Catch::Contains("convention"));
  const auto other = run_flt(args(input, "--split-only --source-units energy=kcal/mol", dir / "other"), dir.path());
  REQUIRE(other.status == 0);  // no forces read: the forces' unit is not needed
  CHECK_THAT(other.err, !Catch::Contains("convention"));
}

namespace {

// `flt eval` of RUN's model on the `subset` (train, validation, test) of RUN's split of `input`:
// the energy MAE it writes.
double eval_energy_mae(const ScratchDir& dir, const fs::path& input, const fs::path& run, const std::string& subset) {
  const fs::path out = dir / ("eval-" + subset + ".csv");
  const auto eval = run_flt("eval -m '" + (run / "model.flt").string() + "' '" + input.string() + "' --split-file '" +
                                (run / "split.csv").string() + "' --subset " + subset + " --rotations 0 -q -o '" +
                                out.string() + "'",
                            dir.path());
  INFO(eval.err);
  REQUIRE(eval.status == 0);
  const std::string metrics = slurp(out);
  const auto at = metrics.find("\nenergy,");
  REQUIRE(at != std::string::npos);
  std::istringstream row(metrics.substr(at + 1, metrics.find('\n', at + 1) - at - 1));
  std::string field;
  for (int k = 0; k < 4; ++k) std::getline(row, field, ',');
  return std::stod(field);
}

}  // namespace

TEST_CASE("flt train --three-body: the reference is fitted, reported, and the run's validation error is the model's",
          "[train][three_body]") {
  // The trainer keeps each molecule's label offsets (with the three-body reference's share) once
  // computed; flt eval, which computes them afresh, must reproduce the best epoch's validation MAE.
  ScratchDir dir("train_three_body");
  const fs::path input = dir / "ethanol.xyz";
  write(input, ethanol_frames(60));
  const auto run = run_flt(args(input, "--three-body true --three-body-radial 4 --three-body-lmax 2",
                                dir / "tb"),
                           dir.path());
  INFO(run.err);
  REQUIRE(run.status == 0);
  // announced before the fit (which takes about a minute for QM9), then reported
  const auto announced = run.err.find("fitting the three-body reference on ");
  CHECK(announced != std::string::npos);
  CHECK(announced < run.err.find("three-body reference of 'energy'"));
  CHECK_THAT(run.err, Catch::Contains("three-body reference of 'energy': 738 weights, lambda"));
  CHECK_THAT(slurp(dir / "tb" / "config.ini"), Catch::Contains("three-body = true"));

  // The smallest validation MAE of the learning curve (epoch,step,lr,train loss,val loss,seconds,
  // train MAE,val MAE) is that of the saved model.
  std::istringstream curve(slurp(dir / "tb" / "learning_curve.csv"));
  std::string line;
  std::getline(curve, line);
  double best = 1e300;
  while (std::getline(curve, line)) {
    std::istringstream row(line);
    std::string field;
    for (int k = 0; k < 8; ++k) std::getline(row, field, ',');
    best = std::min(best, std::stod(field));
  }
  CHECK(eval_energy_mae(dir, input, dir / "tb", "validation") == Approx(best).epsilon(1e-6));

  // The training structures' offsets come from the fit's descriptor matrix (no second descriptor
  // pass): with weights that do not move (lr 1e-12, no EMA, no redraw), the learning curve's
  // training MAE (predictions denormalised with those offsets) is flt eval's on the training
  // subset (offsets computed afresh from the coordinates).
  std::string still_args = args(input, "--three-body true --three-body-radial 4 --three-body-lmax 2 --lr 1e-12"
                                       " --min-lr 0 --ema-decay 0 --redraw-features false",
                                 dir / "still");
  still_args.replace(still_args.find("--lr 1e-3 "), 10, "");  // one --lr
  still_args.replace(still_args.find("--epochs 2"), 10, "--epochs 1");
  const auto still = run_flt(still_args, dir.path());
  INFO(still.err);
  REQUIRE(still.status == 0);
  std::istringstream still_curve(slurp(dir / "still" / "learning_curve.csv"));
  std::getline(still_curve, line);
  REQUIRE(std::getline(still_curve, line));
  std::istringstream still_row(line);
  std::string field;
  for (int k = 0; k < 7; ++k) std::getline(still_row, field, ',');
  const double curve_train_mae = std::stod(field);
  // (The curve's training MAE comes from the training forward's float outputs, eval's from the
  // pooled sums kept in double: they agree to the float rounding of a structure's sum.)
  CHECK(eval_energy_mae(dir, input, dir / "still", "train") == Approx(curve_train_mae).epsilon(1e-7));

  // The reference changes the model (its weights are in the file).
  const auto plain = run_flt(args(input, "", dir / "plain"), dir.path());
  INFO(plain.err);
  REQUIRE(plain.status == 0);
  CHECK(slurp(dir / "plain" / "model.flt") != slurp(dir / "tb" / "model.flt"));
}

TEST_CASE("flt train --three-body --force-weight --three-body-fit forces: the reference is fitted to energies and forces",
          "[train][three_body][forces]") {
  // With --three-body-fit forces, training on forces fits the reference to the training
  // structures' force components as well (those of frames with forces), and says so; a run on
  // energies alone fits energies only.
  ScratchDir dir("train_three_body_forces");
  auto frames = ethanol_frames(60);
  for (std::size_t i = 0; i < 60; i += 6) frames[i] = without_forces(frames[i]);  // 10 frames without forces
  const fs::path input = dir / "ethanol.xyz";
  write(input, frames);
  const std::string basis = "--three-body true --three-body-radial 4 --three-body-lmax 2";
  const auto forces = run_flt(args(input, basis + " --force-weight 1 --three-body-fit forces", dir / "forces"), dir.path());
  INFO(forces.err);
  REQUIRE(forces.status == 0);
  const auto line = forces.err.find("three-body reference of 'energy': 738 weights");
  REQUIRE(line != std::string::npos);
  const std::string reported = forces.err.substr(line, forces.err.find('\n', line) - line);
  CHECK_THAT(reported, Catch::Contains("; fitted to energies and ") &&
                           Catch::Contains(" force components (leave-one-structure-out), forces MAE ") &&
                           Catch::EndsWith("eV/A"));
  // 3 x 9 components for each of the training frames that have forces.
  const auto count = std::stoll(reported.substr(reported.find("energies and ") + 13));
  CHECK(count % 27 == 0);
  CHECK(count > 0);
  CHECK(count < 27 * 40);
  const auto energies = run_flt(args(input, basis, dir / "energies"), dir.path());
  INFO(energies.err);
  REQUIRE(energies.status == 0);
  CHECK_THAT(energies.err, Catch::Contains("three-body reference of 'energy': 738 weights") &&
                               !Catch::Contains("force components"));
  // Training on forces without --three-body-fit forces keeps the energies-only fit (the default),
  // and the option is refused where it cannot apply.
  const auto default_fit = run_flt(args(input, basis + " --force-weight 1", dir / "default_fit"), dir.path());
  INFO(default_fit.err);
  REQUIRE(default_fit.status == 0);
  CHECK_THAT(default_fit.err, Catch::Contains("three-body reference of 'energy': 738 weights") &&
                                  !Catch::Contains("force components"));
  const auto refused = run_flt(args(input, basis + " --three-body-fit forces", dir / "refused"), dir.path());
  CHECK(refused.status == 2);
  CHECK_THAT(refused.err, Catch::Contains("--three-body-fit forces (command line) needs --three-body true and --force-weight > 0"));
}
