// End to end: the flt program's `image` and `seq` subcommands (tiny models, a few hundred
// examples): train, eval, --config round trip, --resume, exit codes and messages; `flt info` of their
// models.
#include "task_test_util.hpp"
#include "models/token_model.hpp"
#include "io/atomic_file.hpp"
#include "io/compressed.hpp"
#include "io/csv.hpp"
#include "io/json.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

using namespace flt;
using flt::tasks::testing::Scratch;
using flt::tasks::testing::run_flt;
namespace fs = std::filesystem;
using namespace std::string_literals;

namespace {

std::string q(const fs::path& p) {
  std::string s = "'";
  s += p.string();
  s += "'";
  return s;
}

// The per-token (LM) head has no hidden layer, so --head-hidden is an option of the pooled-head
// tasks (image, property) only; a Performer model has no RPE, so --num-frequencies is not one of
// its options.
const std::string kTinyEncoder = " --width 16 --heads 2 --blocks 1 --mlp-hidden 32 --num-features 8 --threads 1";
const std::string kTinyTokenModel = kTinyEncoder + " --num-frequencies 8";
const std::string kTinyModel = kTinyTokenModel + " --head-hidden 16";
const std::string kTinyPerformerModel = kTinyEncoder + " --head-hidden 16 --attention performer";

}  // namespace

TEST_CASE("flt image: train, eval, --config round trip, resume, errors", "[seq][program]") {
  Scratch dir("prog-image");
  tasks::testing::write_synthetic_idx(dir / "data", 320, 64, /*gz=*/false);
  const std::string common = " --data-dir "s + q(dir / "data") + " --validation 64 --epochs 6 --batch-size 16 --lr 1e-2"s + kTinyModel;
  auto r = run_flt("image train --out "s + q(dir / "a") + common, dir.path());
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.out.find("test accuracy:") != std::string::npos);
  CHECK(r.err.find("epoch 6/6") != std::string::npos);  // progress on stderr
  CHECK(r.err.find("run ETA") != std::string::npos);    // with the whole run's ETA
  const nlohmann::json m = io::parse_json(io::read_file(dir / "a" / "test_metrics.json"));
  const double acc = m.at("test_accuracy").get<double>();
  CHECK(acc > 0.8);

  // eval of the saved model gives the same accuracy; it writes metrics files with --out.
  // (Short spellings -m and -o, shared with the other subcommands.)
  r = run_flt("image eval -m "s + q(dir / "a" / "model.flt") + " --data-dir "s + q(dir / "data") + " -o "s + q(dir / "ev"),
              dir.path());
  REQUIRE(r.status == 0);
  CHECK(io::parse_json(io::read_file(dir / "ev" / "test_metrics.json")).at("test_accuracy").get<double>() == acc);
  CHECK(io::read_csv(dir / "ev" / "test_predictions.csv").rows.size() == 64);  // one row per test image
  CHECK(r.err.find("evaluating") != std::string::npos);  // progress of the evaluation on stderr
  CHECK(r.out.find("evaluating") == std::string::npos);
  r = run_flt("image eval -q -m "s + q(dir / "a" / "model.flt") + " --data-dir "s + q(dir / "data"), dir.path());
  REQUIRE(r.status == 0);
  CHECK(r.err.find("evaluating") == std::string::npos);

  // The run's config.ini repeats the run exactly (here quietly: -q leaves no progress on stderr).
  r = run_flt("image train -q --config "s + q(dir / "a" / "config.ini") + " --output "s + q(dir / "b"), dir.path());
  REQUIRE(r.status == 0);
  CHECK(r.err.find("epoch") == std::string::npos);
  CHECK(io::read_file(dir / "a" / "model.flt") == io::read_file(dir / "b" / "model.flt"));

  // Interrupted after epoch 1, resumed (configuration read from the run directory).
  r = run_flt("image train --out "s + q(dir / "c") + common + " --stop-after-epoch 1", dir.path());
  REQUIRE(r.status == 0);
  r = run_flt("image train --resume --out "s + q(dir / "c"), dir.path());
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(io::read_file(dir / "a" / "model.flt") == io::read_file(dir / "c" / "model.flt"));

  // Usage errors exit 2, run-time errors exit 1, each with a message.
  r = run_flt("image train --out "s + q(dir / "d") + " --attention softmax", dir.path());
  CHECK(r.status == 2);
  CHECK(r.err.find("softmax") != std::string::npos);
  r = run_flt("image frobnicate", dir.path());
  CHECK(r.status == 2);
  r = run_flt("image train --out "s + q(dir / "a") + common, dir.path());  // existing run directory
  CHECK(r.status == 1);
  CHECK(r.err.find("--overwrite") != std::string::npos);
  r = run_flt("image train --out "s + q(dir / "e") + " --data-dir "s + q(dir / "nowhere") + kTinyModel, dir.path());
  CHECK(r.status == 1);
  CHECK(r.err.find("nowhere") != std::string::npos);
  r = run_flt("image eval --model "s + q(dir / "nowhere.flt"), dir.path());
  CHECK(r.status == 1);
  r = run_flt("image --help", dir.path());
  CHECK(r.status == 0);
  CHECK(r.out.find("--time-budget") != std::string::npos);

  // flt info on an image model: task, patch grid, pixel scaling, class names.
  r = run_flt("info -m "s + q(dir / "a" / "model.flt"), dir.path());
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.out.find("task: image") != std::string::npos);
  CHECK(r.out.find("8x8 pixel images cut into 4x4 patches: a 2x2 grid of 4 tokens") != std::string::npos);
  CHECK(r.out.find("2-D RPE") != std::string::npos);
  CHECK(r.out.find("pixel scaling: x = (p / 255 - ") != std::string::npos);
  CHECK(r.out.find("classes (10):\n  0 T-shirt/top\n") != std::string::npos);
  CHECK(r.out.find("  9 Ankle boot\n") != std::string::npos);
  CHECK(r.out.find("training.data_checksum = fnv1a64-mol:") != std::string::npos);
}

TEST_CASE("flt seq: property and lm train and eval on the QM9 SMILES, task checks", "[seq][program]") {
  Scratch dir("prog-seq");
  const std::string data = " --index "s + q(tasks::testing::qm9_index()) + " --split-file "s + q(tasks::testing::qm9_split());
  auto r = run_flt("seq train --task lm --out "s + q(dir / "lm") + data + " --train-limit 200 --test-limit 100 --epochs 1"s + kTinyTokenModel,
                   dir.path());
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.out.find("bits per character:") != std::string::npos);
  const nlohmann::json lm = io::parse_json(io::read_file(dir / "lm" / "test_metrics.json"));
  CHECK(lm.at("test_bpc").get<double>() > 0.5);
  CHECK(io::read_csv(dir / "lm" / "test_sequences.csv").rows.size() == 100);  // one row per test string
  r = run_flt("seq eval --task lm --model "s + q(dir / "lm" / "model.flt") + data + " --subset validation", dir.path());
  REQUIRE(r.status == 0);
  CHECK(r.out.find("strings: 1000") != std::string::npos);
  // Validation and test molecules with an element no training molecule has (O: the training set
  // is methane and ammonia) leave their subsets with a warning, as in flt train.
  io::write_file_atomic(dir / "tiny_split.csv", "subset,index,id\ntrain,0,gdb 1\ntrain,1,gdb 2\nvalidation,2,gdb 3\n"
                                                  "validation,5,gdb 7\ntest,3,gdb 5\ntest,4,gdb 6\n");
  r = run_flt("seq train --task property --targets U0 --out "s + q(dir / "tiny") + " --index "s +
                  q(tasks::testing::qm9_index()) + " --split-file "s + q(dir / "tiny_split.csv") + " --epochs 1"s +
                  kTinyModel,
              dir.path());
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.err.find("1 validation molecule left out: an element not among the training molecules' (gdb 3)") !=
        std::string::npos);
  CHECK(r.err.find("1 test molecule left out") != std::string::npos);
  CHECK(io::read_file(dir / "tiny" / "test_predictions.csv").find("gdb 6") == std::string::npos);
  // Without --task: the model's own task.
  r = run_flt("seq eval --model "s + q(dir / "lm" / "model.flt") + data + " --subset validation", dir.path());
  REQUIRE(r.status == 0);
  CHECK(r.out.find("strings: 1000") != std::string::npos);
  // --stop-after-epoch takes no negative value.
  r = run_flt("seq train --task lm --out "s + q(dir / "neg") + data + " --stop-after-epoch -1", dir.path());
  CHECK(r.status == 2);
  CHECK(r.err.find("--stop-after-epoch must be >= 0") != std::string::npos);

  // Options that change nothing for the attention kind are usage errors naming option and kind
  // (before any data is read); the kind without them trains.
  r = run_flt("seq train --task property --out "s + q(dir / "p") + data + kTinyPerformerModel + " --num-frequencies 8",
              dir.path());
  CHECK(r.status == 2);
  CHECK(r.err.find("--num-frequencies (command line) has no effect with --attention performer") != std::string::npos);
  r = run_flt("seq train --task lm --out "s + q(dir / "p") + data + " --attention performer --spectrum local_window",
              dir.path());
  CHECK(r.status == 2);
  CHECK(r.err.find("--spectrum (command line) has no effect with --attention performer") != std::string::npos);
  r = run_flt("seq train --task lm --out "s + q(dir / "p") + data + " --attention toeplitz --num-frequencies 8", dir.path());
  CHECK(r.status == 2);
  CHECK(r.err.find("--num-frequencies (command line) has no effect with --attention toeplitz") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "p"));
  // From a --config file (a recipe combined with another kind): a warning, and the run goes on.
  std::ofstream(dir / "rpe.ini") << "[model]\nnum-frequencies = 8\n";
  r = run_flt("seq train --task property --targets gap --config "s + q(dir / "rpe.ini") + " --out " + q(dir / "pf") +
                  data + " --train-limit 50 --test-limit 20 --epochs 1" + kTinyPerformerModel,
              dir.path());
  INFO(r.err);
  CHECK(r.status == 0);
  CHECK(r.err.find("rpe.ini:2) has no effect with --attention performer") != std::string::npos);
  CHECK(r.err.find("ignored") != std::string::npos);
  r = run_flt("seq train --task property --targets gap,mu --out "s + q(dir / "p") + data +
                  " --train-limit 200 --test-limit 100 --epochs 1"s + kTinyPerformerModel,
              dir.path());
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.out.find("gap") != std::string::npos);
  CHECK(r.out.find("Debye") != std::string::npos);
  // flt info describes the token models as it does molecule models: task, architecture,
  // parameters, vocabulary, targets with units, training metadata.
  r = run_flt("info "s + q(dir / "p" / "model.flt"), dir.path());
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.out.find("format: flt-model, version 1") != std::string::npos);
  CHECK(r.out.find("kind: flt-token-model, version 1") != std::string::npos);
  CHECK(r.out.find("task: property") != std::string::npos);
  CHECK(r.out.find("parameters: " + std::to_string(models::TokenModel<float>::load(dir / "p" / "model.flt")->params().size()) +
                   "\n") != std::string::npos);
  CHECK(r.out.find("attention: performer, bidirectional, 8 Performer features per head; no relative positional encoding") !=
        std::string::npos);
  CHECK(r.out.find("vocabulary (") != std::string::npos);
  CHECK(r.out.find("atom-level tokens): <pad> <unk> <bos> <eos>") != std::string::npos);
  CHECK(r.out.find("  gap        eV             no") != std::string::npos);
  CHECK(r.out.find("  mu         Debye          no") != std::string::npos);
  CHECK(r.out.find("training.seed = 0") != std::string::npos);
  CHECK(r.out.find("training.epochs = 1") != std::string::npos);
  r = run_flt("info "s + q(dir / "lm" / "model.flt"), dir.path());
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.out.find("task: lm") != std::string::npos);
  CHECK(r.out.find("attention: flt, causal") != std::string::npos);
  CHECK(r.out.find("1-D RPE") != std::string::npos);
  CHECK(r.out.find("8 random Fourier features per head") != std::string::npos);
  CHECK(r.out.find("character-level tokens): <pad> <unk> <bos> <eos>") != std::string::npos);
  CHECK(r.out.find("head: per token") != std::string::npos);
  r = run_flt("seq eval --task property --model "s + q(dir / "p" / "model.flt") + data, dir.path());
  REQUIRE(r.status == 0);
  CHECK(r.out.find("molecules: 1000") != std::string::npos);
  // An evaluation never writes into a training run directory (its test results would be
  // replaced), and its files are named by the subset evaluated.
  const std::string run_metrics = io::read_file(dir / "p" / "test_metrics.json");
  r = run_flt("seq eval --task property --model "s + q(dir / "p" / "model.flt") + data + " --subset train --out "s +
                  q(dir / "p"),
              dir.path());
  CHECK(r.status == 2);
  CHECK(r.err.find("is a training run directory") != std::string::npos);
  CHECK(io::read_file(dir / "p" / "test_metrics.json") == run_metrics);
  r = run_flt("seq eval --task property --model "s + q(dir / "p" / "model.flt") + data + " --subset validation --out "s +
                  q(dir / "pv"),
              dir.path());
  REQUIRE(r.status == 0);
  const nlohmann::json pv = io::parse_json(io::read_file(dir / "pv" / "validation_metrics.json"));
  CHECK(pv.at("subset").get<std::string>() == "validation");
  CHECK(pv.contains("validation_mae.gap"));
  CHECK(std::filesystem::exists(dir / "pv" / "validation_predictions.csv"));
  CHECK_FALSE(std::filesystem::exists(dir / "pv" / "test_metrics.json"));
  // A test molecule whose SMILES has a token the training never saw (gdb 129 as [CH3]CNC=O): read
  // as <unk>, and counted.
  {
    std::string index = io::read_maybe_gzip(tasks::testing::qm9_index());
    const auto at = index.find(",CCNC=O,");
    REQUIRE(at != std::string::npos);
    index.replace(at, 8, ",[CH3]CNC=O,");
    io::write_file_atomic(dir / "unk_index.csv", index);
  }
  r = run_flt("seq eval --task property --model "s + q(dir / "p" / "model.flt") + " --index "s + q(dir / "unk_index.csv") +
                  " --split-file "s + q(tasks::testing::qm9_split()) + " --out "s + q(dir / "unk"),
              dir.path());
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.out.find("SMILES tokens outside the vocabulary") != std::string::npos);
  CHECK(io::parse_json(io::read_file(dir / "unk" / "test_metrics.json")).at("test_unknown_tokens").get<double>() >= 1);
  // The task is read back from the run's config.ini on --resume (nothing left to do: same model).
  const std::string before = io::read_file(dir / "p" / "model.flt");
  r = run_flt("seq train --resume --out "s + q(dir / "p"), dir.path());
  REQUIRE(r.status == 0);
  CHECK(io::read_file(dir / "p" / "model.flt") == before);

  // Wrong task for a model file, unknown target, option of the other task.
  r = run_flt("seq eval --task lm --model "s + q(dir / "p" / "model.flt") + data, dir.path());
  CHECK(r.status == 1);
  CHECK(r.err.find("not a SMILES language model") != std::string::npos);
  r = run_flt("seq train --task property --targets nonsense --out "s + q(dir / "x") + data + kTinyModel, dir.path());
  CHECK(r.status == 1);
  CHECK(r.err.find("unknown QM9 target 'nonsense'") != std::string::npos);
  r = run_flt("seq train --task lm --targets gap --out "s + q(dir / "y") + data, dir.path());
  CHECK(r.status == 2);
  // An option the LM's per-token head would ignore is refused, not silently accepted.
  r = run_flt("seq train --task lm --head-hidden 16 --out "s + q(dir / "y2") + data, dir.path());
  CHECK(r.status == 2);
  CHECK(r.err.find("head-hidden") != std::string::npos);
  r = run_flt("seq train --task words --out "s + q(dir / "z"), dir.path());
  CHECK(r.status == 2);
}

TEST_CASE("flt seq property: missing labels are counted per subset and target, in the log and the metrics", "[seq][program]") {
  Scratch dir("prog-seq-missing");
  // Thirteen molecules of the QM9 index (H, C, N, O in each subset), with labels removed: mu of
  // two training molecules and one validation molecule, U0 of one test molecule.
  const std::vector<std::string> keep{"1", "2", "3", "5", "6", "7", "14", "29", "40", "48", "52", "66", "76"};
  const std::map<std::string, std::size_t> blank{{"2", 10}, {"7", 10}, {"48", 10}, {"76", 17}};  // gdb -> column
  std::string index, split = "subset,index,id\n";
  {
    std::istringstream in(io::read_maybe_gzip(tasks::testing::qm9_index()));
    std::string line;
    std::getline(in, line);
    REQUIRE(line.rfind("gdb_index,has_geometry,n_atoms,n_heavy,label_sources,mol_id,smiles,A,B,C,mu,", 0) == 0);
    REQUIRE(line.find(",zpve,u0,") != std::string::npos);  // u0: column 17
    index = line + "\n";
    std::size_t row = 0;
    while (std::getline(in, line)) {
      std::vector<std::string> fields;
      std::istringstream f(line);
      for (std::string x; std::getline(f, x, ',');) fields.push_back(x);
      if (std::find(keep.begin(), keep.end(), fields[0]) == keep.end()) continue;
      if (const auto b = blank.find(fields[0]); b != blank.end()) fields[b->second].clear();
      std::string joined;
      for (std::size_t k = 0; k < fields.size(); ++k) {
        if (k) joined += ',';
        joined += fields[k];
      }
      index += joined + "\n";
      const char* subset = row < 8 ? "train" : row < 11 ? "validation" : "test";
      split += std::string(subset) + "," + std::to_string(row) + ",gdb " + fields[0] + "\n";
      ++row;
    }
    REQUIRE(row == keep.size());
  }
  io::write_file_atomic(dir / "index.csv", index);
  io::write_file_atomic(dir / "split.csv", split);
  const std::string data = " --index "s + q(dir / "index.csv") + " --split-file "s + q(dir / "split.csv");
  auto r = run_flt("seq train --task property --targets U0,mu --epochs 1 --out "s + q(dir / "run") + data + kTinyModel,
                   dir.path());
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.err.find("labels missing (masked in the loss and the metrics): train (8 molecules) mu 2; validation (3) mu 1; "
                   "test (2) U0 1\n") != std::string::npos);
  const nlohmann::json m = io::parse_json(io::read_file(dir / "run" / "test_metrics.json"));
  CHECK(m.at("train_missing_labels.U0").get<int>() == 0);
  CHECK(m.at("train_missing_labels.mu").get<int>() == 2);
  CHECK(m.at("validation_missing_labels.U0").get<int>() == 0);
  CHECK(m.at("validation_missing_labels.mu").get<int>() == 1);
  CHECK(m.at("test_missing_labels.U0").get<int>() == 1);
  CHECK(m.at("test_missing_labels.mu").get<int>() == 0);
  CHECK(r.out.find("labels missing (masked): U0 1") != std::string::npos);  // the test summary
  // An evaluation counts its subset's.
  r = run_flt("seq eval --model "s + q(dir / "run" / "model.flt") + data + " --subset train --out "s + q(dir / "ev"),
              dir.path());
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.out.find("molecules: 8; labels missing (masked): mu 2\n") != std::string::npos);
  const nlohmann::json e = io::parse_json(io::read_file(dir / "ev" / "train_metrics.json"));
  CHECK(e.at("train_missing_labels.mu").get<int>() == 2);
  CHECK(e.at("train_missing_labels.U0").get<int>() == 0);
}
