// End-to-end tests of `flt train` (the built program, FLT_EXE): a tiny model on a few hundred
// bundled QM9 molecules; every output file exists and parses; the loss goes down; the same seed,
// data and threads give a byte-identical model file; --config reads the resolved configuration
// back; a run stopped after an epoch (test hook) or killed with SIGKILL and resumed gives the same
// model file as an uninterrupted run; bad inputs give clear errors while the rest is processed.
#include "test_train_util.hpp"
#include "../common/text_input.hpp"

#include "core/text.hpp"
#include "pipeline/dataset.hpp"
#include "models/model_io.hpp"
#include "train/checkpoint.hpp"
#include "io/atomic_file.hpp"
#include "io/csv.hpp"
#include "io/data_checksum.hpp"
#include "train/metrics.hpp"
#include "train/split.hpp"

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <thread>

using namespace flt;
using namespace flt::pipeline;
using flt::pipeline::testing::ScratchDir;
using flt::pipeline::testing::run_flt;
using flt::pipeline::testing::slurp;
namespace fs = std::filesystem;

namespace {

std::string qm9_subset() { return std::string(FLT_SOURCE_DIR) + "/datasets/qm9/qm9_subset.xyz.gz"; }

// A tiny configuration: 300 molecules (200/50/50), width 32, 1 block, 3 epochs, 1 thread.
std::string tiny_args(int epochs = 3) {
  // Built with append() (GCC 12 -Wrestrict false positive on chained operator+ here).
  std::string args = "'";
  args.append(qm9_subset());
  args.append("' --limit 300 --targets U0,gap --epochs ");
  args.append(std::to_string(epochs));
  args.append(" --batch-size 16 --width 32 --heads 4 --blocks 1 --mlp-hidden 64 --head-hidden 32 --split 200,50,rest"
              " --lr 2e-3 --threads 1 --seed 7");
  return args;
}

bool is_svg(const fs::path& p) {
  const std::string text = slurp(p);
  return text.find("<svg") != std::string::npos && text.find("</svg>") != std::string::npos;
}

}  // namespace

TEST_CASE("flt train: tiny model end to end, determinism, --config round trip, resume", "[train][e2e]") {
  ScratchDir dir("e2e");
  const fs::path run1 = dir / "run1";
  const auto r1 = run_flt("train " + tiny_args() + " --out '" + run1.string() + "'", dir.path());
  INFO(r1.err);
  REQUIRE(r1.status == 0);
  CHECK_THAT(r1.out, Catch::Contains("test metrics") && Catch::Contains("U0") && Catch::Contains("eV"));
  // Plain progress lines (stderr is not a terminal): one per epoch with per-target MAE.
  CHECK_THAT(r1.err, Catch::Contains("epoch 3/3") && Catch::Contains("val"));
  // Reading progress, and the whole run's ETA on every epoch line but the last.
  CHECK_THAT(r1.err, Catch::Contains("reading 100% ") && Catch::Contains("run ETA"));
  CHECK(r1.err.find("run ETA") < r1.err.find("epoch 3/3"));
  CHECK(r1.err.find("run ETA", r1.err.find("epoch 3/3")) == std::string::npos);
  CHECK(r1.out.find("reading") == std::string::npos);  // progress never on stdout

  for (const char* f : {"model.flt", "checkpoint-best.flt", "checkpoint-last.flt", "config.ini", "split.csv",
                        "learning_curve.csv", "attention_stats.csv", "test_metrics.csv", "test_predictions.csv",
                        ".flt-run"})
    CHECK(fs::exists(run1 / f));
  for (const char* f : {"learning_curve_U0.svg", "learning_curve_gap.svg", "parity_U0.svg", "parity_gap.svg"})
    CHECK(is_svg(run1 / f));
  // U0 spans thousands of eV: its plot shows the atomization energy (or its residuals), not U0
  // itself; the gap keeps the ordinary parity plot.
  CHECK_THAT(slurp(run1 / "parity_U0.svg"), Catch::Contains("U0_atom (atomization energy)") && !Catch::Contains("Parity: U0<"));
  CHECK_THAT(slurp(run1 / "parity_gap.svg"), Catch::Contains("Parity: gap<"));

  // Learning curve: 3 epochs, finite values, the loss went down.
  const auto curve = train::LearningCurve::read(run1 / "learning_curve.csv", {{"U0", "eV"}, {"gap", "eV"}});
  REQUIRE(curve.records().size() == 3);
  for (const auto& rec : curve.records()) {
    CHECK(std::isfinite(rec.train_loss));
    CHECK(std::isfinite(rec.val_loss));
    for (double v : rec.val_mae) CHECK(std::isfinite(v));
  }
  CHECK(curve.records()[2].train_loss < curve.records()[0].train_loss);
  CHECK(curve.records()[2].val_mae[0] < curve.records()[0].val_mae[0]);

  // Split: 200/50/50 of the 300 molecules, with QM9 ids.
  DatasetOptions data;
  data.inputs = {qm9_subset()};
  data.targets = {"U0", "gap"};
  data.limit = 300;
  const Dataset ds = load_dataset(data);
  const train::Split split = train::read_split_file(run1 / "split.csv", ds.size(), ds.ids);
  CHECK(split.train.size() == 200);
  CHECK(split.validation.size() == 50);
  CHECK(split.test.size() == 50);

  // Test metrics: finite, one row per target.
  const io::CsvTable metrics = io::read_csv(run1 / "test_metrics.csv");
  REQUIRE(metrics.rows.size() == 2);
  const std::size_t mae_col = metrics.require_column("MAE");
  for (std::size_t r = 0; r < 2; ++r) {
    const double mae = io::parse_csv_number(metrics.rows[r][mae_col], metrics, r, mae_col);
    CHECK(std::isfinite(mae));
    CHECK(mae > 0);
  }

  // Model file: loads, carries targets with units and training metadata, and reproduces the test
  // predictions written by the run.
  std::map<std::string, std::string> loaded_metadata;
  const auto loaded_model = models::load_model(run1 / "model.flt", &loaded_metadata);
  REQUIRE(loaded_model->config().targets.size() == 2);
  CHECK(loaded_model->config().targets[0].name == "U0");
  CHECK(loaded_model->config().targets[0].unit == "eV");
  CHECK(loaded_model->config().targets[0].extensive);
  CHECK_FALSE(loaded_model->config().targets[1].extensive);
  CHECK(loaded_metadata.at("training.seed") == "7");
  CHECK_THAT(loaded_metadata.at("training.data_checksum"), Catch::StartsWith("fnv1a64-mol:"));
  CHECK(loaded_metadata.count("training.code_version") == 1);
  const io::CsvTable preds = io::read_csv(run1 / "test_predictions.csv");
  REQUIRE(preds.rows.size() == 50);
  CHECK(preds.header[0] == "id");
  CHECK(preds.header[1] == "title");
  const std::size_t pred_col = preds.require_column("U0_pred [eV]");
  const std::size_t true_col = preds.require_column("U0_true [eV]");
  CHECK_THAT(preds.rows[0][0], Catch::StartsWith("gdb "));
  const Batch b = make_batch(ds, std::vector<std::size_t>(split.test.begin(), split.test.begin() + 5));
  const Mat<double> p = loaded_model->predict(b.molecules);
  for (Index i = 0; i < 5; ++i) {
    CHECK(p(i, 0) == Approx(io::parse_csv_number(preds.rows[static_cast<std::size_t>(i)][pred_col], preds,
                                                    static_cast<std::size_t>(i), pred_col))
                         .margin(1e-5));  // float network, batch composition may change the last bit
    CHECK(io::parse_csv_number(preds.rows[static_cast<std::size_t>(i)][true_col], preds, static_cast<std::size_t>(i),
                                  true_col) == b.labels(i, 0));
  }

  SECTION("same seed, data and threads: byte-identical model; --config reads the resolved INI back") {
    const fs::path run2 = dir / "run2";
    const auto r2 = run_flt("train --config '" + (run1 / "config.ini").string() + "' --out '" + run2.string() + "'",
                            dir.path());
    INFO(r2.err);
    REQUIRE(r2.status == 0);
    CHECK(slurp(run2 / "model.flt") == slurp(run1 / "model.flt"));
    CHECK(slurp(run2 / "split.csv") == slurp(run1 / "split.csv"));
    // The resolved configuration is the same apart from the run directory.
    std::string c1 = slurp(run1 / "config.ini"), c2 = slurp(run2 / "config.ini");
    c1 = c1.substr(0, c1.find("[run]"));
    c2 = c2.substr(0, c2.find("[run]"));
    CHECK(c1 == c2);
  }
  SECTION("stopped after epoch 1 and resumed: the same model file as the uninterrupted run") {
    const fs::path run3 = dir / "run3";
    const auto r3 = run_flt("train " + tiny_args() + " --out '" + run3.string() + "' --stop-after-epoch 1", dir.path());
    INFO(r3.err);
    REQUIRE(r3.status == 0);
    CHECK_THAT(r3.out, Catch::Contains("stopped after epoch 1"));
    CHECK_FALSE(fs::exists(run3 / "model.flt"));
    const auto r4 = run_flt("train --resume --out '" + run3.string() + "'", dir.path());
    INFO(r4.err);
    REQUIRE(r4.status == 0);
    CHECK_THAT(r4.err, Catch::Contains("resuming"));
    CHECK(slurp(run3 / "model.flt") == slurp(run1 / "model.flt"));
    const auto curve3 = train::LearningCurve::read(run3 / "learning_curve.csv", {{"U0", "eV"}, {"gap", "eV"}});
    REQUIRE(curve3.records().size() == 3);
    CHECK(curve3.records()[2].train_loss == curve.records()[2].train_loss);
  }
  SECTION("--resume with other validation data is refused") {
    const fs::path run8 = dir / "run8";
    const auto r8 = run_flt("train " + tiny_args() + " --out '" + run8.string() + "' --stop-after-epoch 1", dir.path());
    INFO(r8.err);
    REQUIRE(r8.status == 0);
    train::Checkpoint ck = train::read_checkpoint(run8 / "checkpoint-last.flt");
    REQUIRE(ck.has_text("validation_checksum"));
    ck.set_text("validation_checksum", "fnv1a64-mol:0123456789abcdef");  // as if a validation label changed
    train::write_checkpoint(run8 / "checkpoint-last.flt", ck);
    const auto other = run_flt("train --resume --out '" + run8.string() + "'", dir.path());
    CHECK(other.status != 0);
    CHECK_THAT(other.err, Catch::Contains("different validation data"));
  }
  SECTION("a run whose checkpoint has the earlier data checksum resumes after the data are checked against it") {
    const fs::path run7 = dir / "run7";
    const auto r7 = run_flt("train " + tiny_args() + " --out '" + run7.string() + "' --stop-after-epoch 1", dir.path());
    INFO(r7.err);
    REQUIRE(r7.status == 0);
    // The whole-set fingerprint of the training molecules (split order), as earlier runs wrote it.
    CHECK(slurp(run7 / "split.csv") == slurp(run1 / "split.csv"));
    io::DataFingerprint legacy;
    for (std::size_t i : split.train) {
      std::vector<double> xyz;
      for (const auto& r : ds.molecules[i].positions) xyz.insert(xyz.end(), r.begin(), r.end());
      legacy.add_molecule(ds.molecules[i].atomic_numbers, xyz, ds.label_row(i));
    }
    const auto set_checksum = [&](const std::string& value) {
      train::Checkpoint ck = train::read_checkpoint(run7 / "checkpoint-last.flt");
      REQUIRE_THAT(ck.text("data_checksum"), Catch::StartsWith("fnv1a64"));
      ck.set_text("data_checksum", value);
      train::write_checkpoint(run7 / "checkpoint-last.flt", ck);
    };
    set_checksum("fnv1a64:0123456789abcdef");
    const auto wrong = run_flt("train --resume --out '" + run7.string() + "'", dir.path());
    CHECK(wrong.status != 0);
    CHECK_THAT(wrong.err, Catch::Contains("different training data"));
    // An earlier flt had no --batch-atoms: at its neutral value the option is not in the compared
    // configuration, which is then what that flt wrote.
    CHECK_THAT(train::read_checkpoint(run7 / "checkpoint-last.flt").text("config"),
               !Catch::Contains("batch-atoms"));
    set_checksum(legacy.hex());
    const auto resumed = run_flt("train --resume --out '" + run7.string() + "'", dir.path());
    INFO(resumed.err);
    REQUIRE(resumed.status == 0);
    CHECK_THAT(resumed.err, Catch::Contains("the run's data checksum is of the earlier kind; the data match"));
    CHECK(slurp(run7 / "model.flt") == slurp(run1 / "model.flt"));
  }
  SECTION("the original command line with --resume added resumes like --resume --out alone") {
    const fs::path run5 = dir / "run5";
    const std::string command = "train " + tiny_args() + " --out '" + run5.string() + "'";
    const auto r5 = run_flt(command + " --stop-after-epoch 1", dir.path());
    INFO(r5.err);
    REQUIRE(r5.status == 0);
    // A changed setting is named, not just "differs".
    const auto changed = run_flt("train " + tiny_args(4) + " -o '" + run5.string() + "' --resume", dir.path());
    CHECK(changed.status != 0);
    CHECK_THAT(changed.err, Catch::Contains("train.epochs = '4' (the run has '3')"));
    // The inputs are given again (positionally): they replace the run's list, not extend it.
    const auto r6 = run_flt(command + " --resume", dir.path());
    INFO(r6.err);
    REQUIRE(r6.status == 0);
    CHECK_THAT(r6.err, Catch::Contains("resuming"));
    CHECK(slurp(run5 / "model.flt") == slurp(run1 / "model.flt"));
    const std::string config = slurp(run5 / "config.ini");
    CHECK(config.find("qm9_subset.xyz.gz") == config.rfind("qm9_subset.xyz.gz"));  // listed once
    const auto curve5 = train::LearningCurve::read(run5 / "learning_curve.csv", {{"U0", "eV"}, {"gap", "eV"}});
    REQUIRE(curve5.records().size() == 3);
    CHECK(curve5.records()[2].train_loss == curve.records()[2].train_loss);
  }
  SECTION("an existing non-empty run directory is never overwritten without --overwrite") {
    const auto r = run_flt("train " + tiny_args(1) + " --out '" + run1.string() + "'", dir.path());
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Catch::Contains("--overwrite"));
    CHECK(fs::exists(run1 / "model.flt"));
    const auto again = run_flt("train " + tiny_args(1) + " --overwrite --out '" + run1.string() + "'", dir.path());
    CHECK(again.status == 0);
    // The directory now holds the 1-epoch run only.
    const auto replaced = train::LearningCurve::read(run1 / "learning_curve.csv", {{"U0", "eV"}, {"gap", "eV"}});
    CHECK(replaced.records().size() == 1);
  }
}

TEST_CASE("flt train: a run killed with SIGKILL after a checkpoint and resumed matches an uninterrupted run",
          "[train][e2e]") {
  ScratchDir dir("kill");
  const fs::path full = dir / "full";
  const auto rf = run_flt("train " + tiny_args(4) + " --out '" + full.string() + "'", dir.path());
  INFO(rf.err);
  REQUIRE(rf.status == 0);

  const fs::path killed = dir / "killed";
  const std::string cmd = std::string("exec '") + FLT_EXE + "' train " + tiny_args(4) + " --out '" + killed.string() +
                          "' >/dev/null 2>&1";
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // Kill it as soon as the first checkpoint exists (mid-run: the run has 4 epochs).
  bool killed_mid_run = false;
  for (int i = 0; i < 20000; ++i) {
    if (fs::exists(killed / "checkpoint-last.flt")) {
      killed_mid_run = !fs::exists(killed / "model.flt");
      ::kill(pid, SIGKILL);
      break;
    }
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) break;
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  WARN("killed mid-run: " << killed_mid_run);
  const auto rr = run_flt("train --resume --out '" + killed.string() + "'", dir.path());
  INFO(rr.err);
  REQUIRE(rr.status == 0);
  CHECK(slurp(killed / "model.flt") == slurp(full / "model.flt"));
}

TEST_CASE("flt train: bad inputs give clear errors, the rest is processed", "[train][e2e]") {
  ScratchDir dir("bad");
  {
    std::ofstream out(dir / "mixed.xyz");
    out << "3\nProperties=species:S:1:pos:R:3 energy=-10.5 title=water\n"
           "O 0.0 0.0 0.0\nH 0.96 0.0 0.0\nH -0.24 0.93 0.0\n"
           "2\nProperties=species:S:1:pos:R:3 title=nolabel\n"
           "H 0.0 0.0 0.0\nH 0.74 0.0 0.0\n"
           "2\nProperties=species:S:1:pos:R:3 energy=-1.0 title=nancoord\n"
           "H 0.0 0.0 0.0\nH nan 0.0 0.0\n"
           "0\nProperties=species:S:1:pos:R:3 energy=-2.0 title=empty\n"
           "1\nProperties=species:S:1:pos:R:3 energy=-0.5 title=atom\n"
           "H 0.0 0.0 0.0\n"
           "2\nProperties=species:S:1:pos:R:3 energy=-31.0 title=hydrogen\n"
           "H 0.0 0.0 0.0\nH 0.74 0.0 0.0\n";
  }
  const std::string small = " --width 16 --heads 2 --blocks 1 --mlp-hidden 16 --head-hidden 16"
                            " --epochs 2 --batch-size 2 --threads 1";
  std::string mixed = "'";
  mixed.append((dir / "mixed.xyz").string()).append("'");

  SECTION("missing label, NaN coordinates, empty and single-atom molecules") {
    const auto r = run_flt("train " + mixed + " --targets energy --source-units energy=eV --split 3,1,rest" + small +
                               " --out '" + (dir / "run").string() + "'",
                           dir.path());
    INFO(r.err);
    CHECK(r.status == 3);  // trained, but bad records were skipped
    CHECK_THAT(r.err, Catch::Contains("record 3") && Catch::Contains("record 4"));
    CHECK_THAT(r.out, Catch::Contains("skipped 2 records") && Catch::Contains("energy: 1 label missing"));
    CHECK(fs::exists(dir / "run" / "model.flt"));
    const auto rmin = run_flt("train " + mixed + " --targets energy --source-units energy=eV --split 2,1,rest" +
                                  small + " --min-atoms 2 --out '" + (dir / "run2").string() + "'",
                              dir.path());
    CHECK(rmin.status == 3);
    CHECK_THAT(rmin.out, Catch::Contains("skipped 3 records"));
  }
  SECTION("--on-error fail stops at the first bad record, naming it") {
    const auto r = run_flt("train " + mixed + " --targets energy --source-units energy=eV --on-error fail" + small +
                               " --out '" + (dir / "run").string() + "'",
                           dir.path());
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Catch::Contains("mixed.xyz") && Catch::Contains("record 3"));
  }
  SECTION("unknown target") {
    const auto r = run_flt("train " + mixed + " --targets enrgy --source-units enrgy=eV" + small + " --out '" +
                               (dir / "run").string() + "'",
                           dir.path());
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Catch::Contains("unknown target 'enrgy'"));
  }
  SECTION("unwritable --out") {
    { std::ofstream(dir / "file.txt") << "x"; }
    const auto r = run_flt("train " + mixed + " --targets energy --source-units energy=eV" + small + " --out '" +
                               (dir / "file.txt" / "run").string() + "'",
                           dir.path());
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Catch::Contains("file.txt"));
  }
  SECTION("bad options are usage errors") {
    CHECK(run_flt("train " + mixed + " --no-such-option 3 --out x", dir.path()).status == 2);
    const auto r = run_flt("train " + mixed + " --targets energy --epochs 0 --out x", dir.path());
    CHECK(r.status == 2);
    CHECK_THAT(r.err, Catch::Contains("--epochs"));
    CHECK(run_flt("train " + mixed + " --targets energy --attention nonsense --out x", dir.path()).status == 2);
  }
  SECTION("a failed --overwrite leaves the previous run in place") {
    const std::string out = " --out '" + (dir / "run").string() + "'";
    const auto first = run_flt("train " + mixed + " --targets energy --source-units energy=eV --split 3,1,rest" +
                                   small + out, dir.path());
    REQUIRE(first.status == 3);
    const std::string model = slurp(dir / "run" / "model.flt");
    REQUIRE(!model.empty());
    const auto failed = run_flt("train " + mixed + " --targets enrgy --source-units enrgy=eV --overwrite" + small + out,
                                dir.path());
    CHECK(failed.status == 1);
    CHECK(slurp(dir / "run" / "model.flt") == model);
    CHECK(fs::exists(dir / "run" / "config.ini"));
    const auto again = run_flt("train " + mixed + " --targets energy --source-units energy=eV --split 3,1,rest" +
                                   small + " --overwrite" + out, dir.path());
    CHECK(again.status == 3);
  }
  SECTION("validation and test molecules with an element the training molecules lack are left out") {
    {
      std::ofstream out(dir / "hf.xyz");
      for (int k = 0; k < 6; ++k)
        out << "2\nProperties=species:S:1:pos:R:3 energy=" << -31.0 - 0.01 * k << " title=h2_" << k
            << "\nH 0.0 0.0 0.0\nH " << 0.70 + 0.01 * k << " 0.0 0.0\n";
      out << "2\nProperties=species:S:1:pos:R:3 energy=-2700.0 title=hf\nH 0.0 0.0 0.0\nF 0.92 0.0 0.0\n";
      std::ofstream split(dir / "split_hf.csv");
      split << "subset,index,id\ntrain,0,h2_0\ntrain,1,h2_1\ntrain,2,h2_2\ntrain,3,h2_3\nvalidation,4,h2_4\n"
               "test,5,h2_5\ntest,6,hf\n";
    }
    std::string hf = "'";
    hf.append((dir / "hf.xyz").string()).append("' --split-file '").append((dir / "split_hf.csv").string());
    const auto r = run_flt("train " + hf + "' --targets energy --source-units energy=eV" + small + " --out '" +
                               (dir / "run").string() + "'",
                           dir.path());
    INFO(r.err);
    CHECK(r.status == 0);
    CHECK_THAT(r.err, Catch::Contains("1 test molecule left out: element Z=9 not among the training molecules'") &&
                          Catch::Contains(": hf"));
    CHECK(fs::exists(dir / "run" / "model.flt"));
    const std::string written = slurp(dir / "run" / "split.csv");
    CHECK(written.find("hf") == std::string::npos);
    CHECK(written.find("test,5,h2_5") != std::string::npos);
  }
  SECTION("a diverging run stops with a clear error") {
    const auto r = run_flt("train '" + qm9_subset() + "' --limit 40 --targets U0 --split 30,5,rest --lr 1e30"
                           " --clip-norm 0 --warmup-steps 0" + small + " --out '" + (dir / "run").string() + "'",
                           dir.path());
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Catch::Contains("non-finite"));
  }
}

TEST_CASE("flt eval and predict make SMILES conformers as the model's training made them", "[train][e2e]") {
  ScratchDir dir("smiles_conformers");
  {
    // 40 QM9 molecules as a SMILES file with a header naming the label and its unit.
    flt::test::TextInput index(std::string(FLT_SOURCE_DIR) + "/datasets/qm9/qm9_subset_index.csv.gz");
    REQUIRE(index.opened());
    std::string line;
    std::getline(index, line);  // gdb_index,...,mol_id,smiles,...,u0,...
    std::ofstream out(dir / "qm9.smi");
    out << "SMILES Name U0[Hartree]\n";
    for (int k = 0; k < 40 && std::getline(index, line); ++k) {
      const std::vector<std::string> cells = split(line, ',');
      out << cells[6] << ' ' << cells[5] << ' ' << cells[17] << '\n';
    }
  }
  // Arguments built with append() (GCC 12 -Wrestrict false positive on chained operator+).
  const auto quoted = [](const fs::path& p) {
    std::string q = "'";
    q.append(p.string()).append("'");
    return q;
  };
  std::string train_args = "train ";
  train_args.append(quoted(dir / "qm9.smi"))
      .append(" --targets U0 --optimize mmff --conformer-seed 7 --epochs 1 --width 32 --heads 2 --blocks 1"
              " --mlp-hidden 32 --head-hidden 32 --split 30,5,rest --threads 1 --out ")
      .append(quoted(dir / "run"));
  const auto train = run_flt(train_args, dir.path());
  INFO(train.err);
  REQUIRE(train.status == 0);
  const auto eval_args = [&](const std::string& extra, const std::string& out) {
    std::string a = "eval -m ";
    a.append(quoted(dir / "run" / "model.flt")).append(" ").append(quoted(dir / "qm9.smi"));
    a.append(" --split-file ").append(quoted(dir / "run" / "split.csv")).append(" --rotations 0 -v ");
    a.append(extra).append(" -o ").append(quoted(dir / out));
    return a;
  };
  const auto mae = [](const std::string& text) {
    const auto at = text.find("\nU0,");
    REQUIRE(at != std::string::npos);
    const std::vector<std::string> cells = split(text.substr(at + 1, text.find('\n', at + 1) - at - 1), ',');
    return cells.at(3);
  };
  // No conformer options: the model's (seed 7, MMFF94) are used, so eval reproduces the run.
  const auto eval = run_flt(eval_args("", "eval.csv"), dir.path());
  INFO(eval.err);
  REQUIRE(eval.status == 0);
  CHECK_THAT(eval.err, Catch::Contains("the model's training used seed 7, mmff"));
  CHECK(mae(slurp(dir / "eval.csv")) == mae(slurp(dir / "run" / "test_metrics.csv")));
  // Given explicitly, another seed gives other conformers (and another MAE).
  const auto other = run_flt(eval_args("--conformer-seed 8", "other.csv"), dir.path());
  REQUIRE(other.status == 0);
  CHECK(mae(slurp(dir / "other.csv")) != mae(slurp(dir / "run" / "test_metrics.csv")));
}

TEST_CASE("flt train --resume from another working directory reads the run's files, not that directory's",
          "[train][e2e]") {
  ScratchDir dir("resume_cwd");
  // Two files of the same relative name: the run's, and a decoy beside the other working directory.
  const std::string ethanol = slurp(fs::path(FLT_SOURCE_DIR) / "datasets/rmd17-ethanol/train.xyz");
  const auto records = [&](std::size_t first, std::size_t count) {
    std::istringstream in(ethanol);
    std::string out, line;
    for (std::size_t k = 0; k < (first + count) * 11 && std::getline(in, line); ++k)
      if (k >= first * 11) out += line + "\n";
    return out;
  };
  fs::create_directories(dir / "data");
  fs::create_directories(dir / "elsewhere" / "data");
  std::ofstream(dir / "data" / "eth.xyz") << records(0, 60);
  std::ofstream(dir / "elsewhere" / "data" / "eth.xyz") << records(60, 60);
  const std::string args = "train data/eth.xyz --targets energy --split 40,10,rest --epochs 2 --batch-size 8 --width 16"
                           " --heads 2 --blocks 1 --mlp-hidden 16 --head-hidden 16"
                           " --threads 1 --seed 3 -q";
  const auto run_in = [&](const std::string& a, const fs::path& scratch, const std::string& cd) {
    return flt::test_support::run_program(FLT_EXE, a, scratch, cd);
  };
  const std::string in_dir = "cd '" + dir.path().string() + "' &&";
  const auto straight = run_in(args + " --out straight", dir.path(), in_dir);
  INFO(straight.err);
  REQUIRE(straight.status == 0);
  // config.ini names the input by its absolute path.
  const std::string absolute = (dir / "data" / "eth.xyz").string();
  CHECK_THAT(slurp(dir / "straight" / "config.ini"), Catch::Contains("inputs = " + absolute + "\n"));

  const auto stopped = run_in(args + " --out stopped --stop-after-epoch 1", dir.path(), in_dir);
  INFO(stopped.err);
  REQUIRE(stopped.status == 0);
  const auto resumed = run_in("train --resume --out ../stopped -q", dir.path(),
                               "cd '" + (dir / "elsewhere").string() + "' &&");
  INFO(resumed.err);
  REQUIRE(resumed.status == 0);
  CHECK(slurp(dir / "stopped" / "model.flt") == slurp(dir / "straight" / "model.flt"));

  // The same data in another directory, the same command there: the same model file (its
  // training.config metadata names the files, not where they lie).
  fs::create_directories(dir / "copy" / "data");
  std::ofstream(dir / "copy" / "data" / "eth.xyz") << records(0, 60);
  const auto copy = run_in(args + " --out straight", dir.path(), "cd '" + (dir / "copy").string() + "' &&");
  INFO(copy.err);
  REQUIRE(copy.status == 0);
  CHECK(slurp(dir / "copy" / "straight" / "model.flt") == slurp(dir / "straight" / "model.flt"));

  // A run of an earlier flt, whose config.ini and checkpoint hold the path as given, still
  // resumes from the directory it was started in.
  const auto earlier = run_in(args + " --out earlier --stop-after-epoch 1", dir.path(), in_dir);
  INFO(earlier.err);
  REQUIRE(earlier.status == 0);
  const auto relative = [&](std::string text) {
    for (std::size_t at; (at = text.find(absolute)) != std::string::npos;) text.replace(at, absolute.size(), "data/eth.xyz");
    return text;
  };
  io::write_file_atomic(dir / "earlier" / "config.ini", relative(slurp(dir / "earlier" / "config.ini")));
  train::Checkpoint ck = train::read_checkpoint(dir / "earlier" / "checkpoint-last.flt");
  // The fingerprint names the input by its file name; the earlier one spelled it as given.
  std::string fingerprint = ck.text("config");
  const std::string named = "data.inputs = eth.xyz\n";
  const std::size_t at = fingerprint.find(named);
  REQUIRE(at != std::string::npos);
  fingerprint.replace(at, named.size(), "data.inputs = data/eth.xyz\n");
  ck.set_text("config", fingerprint);
  train::write_checkpoint(dir / "earlier" / "checkpoint-last.flt", ck);
  const auto old_run = run_in("train --resume --out earlier -q", dir.path(), in_dir);
  INFO(old_run.err);
  REQUIRE(old_run.status == 0);
  CHECK(slurp(dir / "earlier" / "model.flt") == slurp(dir / "straight" / "model.flt"));
}

TEST_CASE("flt train refuses command-line model options without effect, warns of a file's, accepts recipes and resumed runs",
          "[train][e2e][options]") {
  ScratchDir dir("train_no_effect");
  std::string data = " --inputs '";
  data.append(qm9_subset()).append("' --limit 40 --targets U0 --split 30,5,rest --threads 1");
  const auto out = [&](const char* name) { return " --out '" + (dir / name).string() + "'"; };
  const auto split_only = [&](const std::string& options, const char* name) {
    return run_flt("train" + data + " --split-only " + options + out(name), dir.path());
  };
  // On the command line: refused at any value (far-degree 12 is its default), naming the option,
  // where it was given and the kind.
  auto r = split_only("--num-frequencies 32", "a");
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Catch::Contains("--num-frequencies (command line) has no effect with --attention near_far"));
  r = split_only("--far-field none --far-degree 12", "b");
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Catch::Contains("--far-degree (command line) has no effect with --attention near_far") &&
                        Catch::Contains("far_field = none"));
  r = split_only("--attention exact --cutoff 4", "c");
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Catch::Contains("--cutoff (command line) has no effect with --attention exact"));
  r = split_only("--three-body-lmax 3", "d");
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Catch::Contains("--three-body-lmax") && Catch::Contains("three_body = true"));
  // Where they apply they are taken.
  CHECK(split_only("--attention kronecker --num-frequencies 32 --kronecker-floor 0.2", "e").status == 0);
  CHECK(split_only("--far-design iid --far-directions 32 --three-body true --three-body-lmax 3", "f").status == 0);
  // From a file: a warning at a value other than the default, nothing at the default (a resolved
  // config.ini lists every option).
  std::ofstream(dir / "set.ini") << "[model]\nnum-frequencies = 32\n";
  r = run_flt("train --config '" + (dir / "set.ini").string() + "'" + data + " --split-only" + out("g"), dir.path());
  CHECK(r.status == 0);
  CHECK_THAT(r.err, Catch::Contains("--num-frequencies (") && Catch::Contains("set.ini:2) has no effect") &&
                        Catch::Contains("ignored"));
  std::ofstream(dir / "default.ini") << "[model]\nnum-frequencies = 16\nexact-rbf = 32\n";
  r = run_flt("train --config '" + (dir / "default.ini").string() + "'" + data + " --split-only" + out("h"), dir.path());
  CHECK(r.status == 0);
  CHECK_THAT(r.err, !Catch::Contains("has no effect"));
  // A recipe's feature switched off on the command line: its options from the file are ignored.
  r = run_flt("train --config '" + std::string(FLT_SOURCE_DIR) + "/datasets/rmd17-ethanol/energy_model.ini'" + data +
                  " --split-only --three-body false" + out("i"),
              dir.path());
  INFO(r.err);
  CHECK(r.status == 0);
  CHECK_THAT(r.err, Catch::Contains("--three-body-lmax (") && Catch::Contains("ignored"));
  // The shared recipe with another kind (tools/results/run_qm9_ablation.sh).
  const std::string recipe = " --config '" + std::string(FLT_SOURCE_DIR) + "/datasets/qm9/default_model.ini'";
  for (const char* kind : {"kronecker", "bias", "performer", "exact"}) {
    r = run_flt("train" + recipe + data + " --split-file none --split-only --attention " + kind + out(kind),
                dir.path());
    INFO(kind << ": " << r.err);
    CHECK(r.status == 0);
  }
  // A run stopped after its first epoch resumes from its config.ini, which lists every option.
  const std::string tiny = " --width 16 --heads 2 --blocks 1 --mlp-hidden 16 --head-hidden 16 --epochs 2";
  r = run_flt("train" + data + tiny + " --far-design iid --stop-after-epoch 1" + out("run"), dir.path());
  INFO(r.err);
  REQUIRE(r.status == 0);
  r = run_flt("train --resume" + out("run"), dir.path());
  INFO(r.err);
  CHECK(r.status == 0);
  CHECK_THAT(r.err, Catch::Contains("resuming"));
  CHECK(fs::exists(dir / "run" / "model.flt"));
}
