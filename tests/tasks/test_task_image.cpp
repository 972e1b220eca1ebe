// The image task and the shared engine on a small synthetic IDX set (8x8 images, two classes):
// it learns, runs are deterministic, --resume reproduces an uninterrupted run byte for byte,
// the time budget stops training, outputs are complete; evaluation counts agree with a manual
// argmax, and the per-image predictions file lists every evaluated image.
#include "tasks/task_image.hpp"
#include "task_test_util.hpp"
#include "io/atomic_file.hpp"
#include "io/csv.hpp"
#include "io/json.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <map>

using namespace flt;
using namespace flt::tasks;
using flt::tasks::testing::Scratch;
namespace fs = std::filesystem;

namespace {

ImageTrainConfig tiny_config(const fs::path& data, const fs::path& out) {
  ImageTrainConfig c;
  c.data_dir = data;
  c.validation = 64;
  c.model.patch = 4;
  c.model.width = 16;
  c.model.heads = 2;
  c.model.blocks = 1;
  c.model.mlp_hidden = 32;
  c.model.head_hidden = 16;
  c.model.num_features = 8;
  c.model.num_frequencies = 8;
  c.run.epochs = 3;
  c.run.batch_size = 16;
  c.run.lr = 1e-2;
  c.run.threads = 1;
  c.run.seed = 3;
  c.run.out = out;
  c.run.resolved_ini = "[train]\nepochs = 3\n";
  return c;
}

}  // namespace

TEST_CASE("image task: learns a separable synthetic set, outputs, determinism, evaluation counts", "[seq][task][image]") {
  Scratch dir("task-image");
  testing::write_synthetic_idx(dir / "data", 320, 100);
  ImageTrainConfig cfg = tiny_config(dir / "data", dir / "run1");
  const ImageTrainResult r = run_image_training(cfg);
  CHECK(r.train_size == 256);
  CHECK(r.validation_size == 64);
  CHECK(r.test_size == 100);
  CHECK(r.run.epochs_run == 3);
  CHECK(r.run.steps == 3 * 16);
  CHECK(r.run.planned_steps == 48);
  CHECK_FALSE(r.run.stopped_by_budget);
  // Top-bright vs bottom-bright: a working model separates them (chance is 0.5).
  CHECK(r.test.accuracy >= 0.9);
  CHECK(r.test.count == 100);
  for (const char* f : {"model.flt", "config.ini", "learning_curve.csv", "checkpoint-last.flt", "checkpoint-best.flt",
                        "test_metrics.json", "test_metrics.csv", "confusion.csv", "learning_curve_loss.svg",
                        "learning_curve_accuracy.svg"})
    CHECK(fs::exists(dir / "run1" / f));
  const io::CsvTable curve = io::read_csv(dir / "run1" / "learning_curve.csv");
  CHECK(curve.rows.size() == 3);
  CHECK(curve.header.back() == "val_accuracy");
  const nlohmann::json j = io::parse_json(io::read_file(dir / "run1" / "test_metrics.json"));
  CHECK(j.at("test_accuracy").get<double>() == Approx(r.test.accuracy));
  // Counts are JSON integers; a non-integral metric stays a double.
  CHECK(j.at("test_images").is_number_unsigned());
  CHECK(j.at("test_images").get<std::uint64_t>() == 100);
  CHECK(j.at("epochs").get<std::uint64_t>() == 3);
  CHECK(j.at("test_loss").is_number_float());
  CHECK(io::read_file(dir / "run1" / "test_metrics.json").find("\"test_images\":100,") != std::string::npos);

  // Confusion matrix and per-class counts agree with the accuracy.
  std::size_t diag = 0, total = 0;
  for (std::size_t c = 0; c < r.test.confusion.size(); ++c) {
    std::size_t row = 0;
    for (auto v : r.test.confusion[c]) row += v;
    CHECK(row == r.test.per_class_count[c]);
    diag += r.test.confusion[c][c];
    total += row;
  }
  CHECK(total == 100);
  CHECK(static_cast<double>(diag) / 100.0 == Approx(r.test.accuracy));

  // The saved model evaluates to the same accuracy (pixel scaling read from the model file), and
  // its predictions equal a manual argmax of the logits.
  const ImageEvaluation again = evaluate_image_model(dir / "run1" / "model.flt", dir / "data", "test", 0, 7);
  CHECK(again.accuracy == r.test.accuracy);
  CHECK(again.predicted == r.test.predicted);

  // test_predictions.csv: one row per test image, in order; class names in the header; the
  // probabilities sum to 1, their argmax is the predicted class, and the rows give the accuracy.
  const io::CsvTable pred = io::read_csv(dir / "run1" / "test_predictions.csv");
  REQUIRE(pred.header.size() == 3 + 10);
  CHECK(pred.header[0] == "index");
  CHECK(pred.header[1] == "true_class");
  CHECK(pred.header[2] == "predicted_class");
  CHECK(pred.header[3] == "p(T-shirt/top)");
  CHECK(pred.header[12] == "p(Ankle boot)");
  REQUIRE(pred.rows.size() == 100);
  const ImageSet test_set = load_fashion_mnist(dir / "data", "test");
  std::size_t correct = 0;
  for (std::size_t i = 0; i < pred.rows.size(); ++i) {
    const auto& row = pred.rows[i];
    CHECK(std::stoul(row[0]) == i);
    CHECK(std::stoi(row[1]) == test_set.labels[i]);
    CHECK(std::stoi(row[2]) == r.test.predicted[i]);
    double sum = 0, best = -1;
    std::size_t argmax = 0;
    for (std::size_t c = 0; c < 10; ++c) {
      const double p = std::stod(row[3 + c]);
      sum += p;
      if (p > best) {
        best = p;
        argmax = c;
      }
    }
    CHECK(sum == Approx(1.0).epsilon(1e-12));
    CHECK(static_cast<int>(argmax) == r.test.predicted[i]);
    correct += row[1] == row[2] ? 1 : 0;
  }
  CHECK(static_cast<double>(correct) / 100.0 == Approx(r.test.accuracy));
  // An evaluation of another subset writes its own file, every evaluated image in it.
  const ImageEvaluation train_eval = evaluate_image_model(dir / "run1" / "model.flt", dir / "data", "train", 37, 16);
  write_image_evaluation(dir.path(), train_eval);
  const io::CsvTable train_pred = io::read_csv(dir / "train_predictions.csv");
  REQUIRE(train_pred.rows.size() == 37);
  CHECK(train_pred.rows.back()[0] == "36");

  // Same configuration, same thread count: a byte-identical model file.
  cfg.run.out = dir / "run2";
  run_image_training(cfg);
  CHECK(io::read_file(dir / "run1" / "model.flt") == io::read_file(dir / "run2" / "model.flt"));
}

TEST_CASE("image task: --resume after an interruption reproduces the uninterrupted run, time budget", "[seq][task][image]") {
  Scratch dir("task-image-resume");
  testing::write_synthetic_idx(dir / "data", 192, 40);
  ImageTrainConfig full = tiny_config(dir / "data", dir / "full");
  full.shift = 1;  // augmentation draws from the step's own Rng: resume must redraw the same
  full.flip = true;
  run_image_training(full);

  ImageTrainConfig part = full;
  part.run.out = dir / "part";
  part.run.stop_after_epoch = 1;
  const ImageTrainResult stopped = run_image_training(part);
  CHECK(stopped.run.stopped_by_hook);
  CHECK_FALSE(fs::exists(dir / "part" / "model.flt"));
  part.run.stop_after_epoch = 0;
  part.run.resume = true;
  const ImageTrainResult resumed = run_image_training(part);
  CHECK(resumed.run.epochs_run == 3);
  CHECK(io::read_file(dir / "full" / "model.flt") == io::read_file(dir / "part" / "model.flt"));
  CHECK(io::read_csv(dir / "part" / "learning_curve.csv").rows.size() == 3);

  // A changed configuration is refused on resume.
  ImageTrainConfig changed = part;
  changed.run.resolved_ini = "[train]\nepochs = 4\n";
  CHECK_THROWS_AS(run_image_training(changed), ConfigError);
  // An existing run directory is not overwritten by a fresh run.
  ImageTrainConfig again = full;
  CHECK_THROWS_AS(run_image_training(again), ConfigError);

  // Time budget: a budget shorter than one step stops after the first step; the model is still
  // written, validated and marked.
  ImageTrainConfig budget = full;
  budget.run.out = dir / "budget";
  budget.run.time_budget_minutes = 1e-9;
  const ImageTrainResult b = run_image_training(budget);
  CHECK(b.run.stopped_by_budget);
  CHECK(b.run.steps == 1);
  CHECK(b.run.planned_steps == 3 * 8);
  CHECK(b.run.epochs_run == 1);
  CHECK(fs::exists(dir / "budget" / "model.flt"));
}

TEST_CASE("image options: command line over INI file over defaults, resolved config reads back", "[seq][task][image]") {
  Scratch dir("task-image-options");
  io::write_file_atomic(dir / "c.ini", "[train]\nepochs = 7\nlr = 0.01\n[model]\nattention = performer\nwidth = 32\n");
  const ImageTrainConfig c = parse_image_train_command_line(
      {"--config", (dir / "c.ini").string(), "--lr", "0.002", "--out", (dir / "o").string(), "--shift", "2"});
  CHECK(c.run.epochs == 7);
  CHECK(c.run.lr == 0.002);
  CHECK(c.model.attention == TokenAttention::performer);
  CHECK(c.model.width == 32);
  CHECK(c.shift == 2);
  io::write_file_atomic(dir / "resolved.ini", c.run.resolved_ini);
  const ImageTrainConfig d = parse_image_train_command_line({"--config", (dir / "resolved.ini").string()});
  CHECK(d.run.resolved_ini == c.run.resolved_ini);
  // Paths are written absolute (relative ones from the working directory): a run's config.ini
  // names the same files when --resume reads it from another directory.
  const ImageTrainConfig relative = parse_image_train_command_line({"--out", "runs/r", "--data-dir", "data/../idx"});
  CHECK_THAT(relative.run.resolved_ini, Catch::Contains("data-dir = " + (fs::current_path() / "idx").string() + "\n") &&
                                            Catch::Contains("out = " + (fs::current_path() / "runs" / "r").string() + "\n"));
  CHECK_THAT(relative.run.resolved_ini_as_given, Catch::Contains("data-dir = data/../idx\n"));
  CHECK_THROWS_AS(parse_image_train_command_line({"--out", "x", "--attention", "softmax"}), ConfigError);
  CHECK_THROWS_AS(parse_image_train_command_line({"--out", "x", "--epochs", "0"}), ConfigError);
  CHECK_THROWS_AS(parse_image_train_command_line({"--out", "x", "--no-such-option", "1"}), ConfigError);
  CHECK_THROWS_AS(parse_image_train_command_line({"--out", "x", "--width", "abc"}), ConfigError);
}

TEST_CASE("model options that change nothing for the attention kind are refused on the command line, naming option and kind", "[seq][task][image]") {
  Scratch dir("task-image-kind-options");
  // The ConfigError's message, or "" when the command line is accepted.
  const auto error = [&](std::vector<std::string> args) {
    args.insert(args.end(), {"--out", (dir / "o").string()});
    try {
      parse_image_train_command_line(args);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const auto names = [](const std::string& message, const std::string& option, const std::string& kind) {
    return message.find("--" + option + " ") != std::string::npos &&
           message.find("no effect with --attention " + kind) != std::string::npos;
  };
  // performer has no RPE: every option of the mask and of its Fourier features, at any value
  // given on the command line (the default value too).
  for (const auto& [option, value] : std::vector<std::pair<std::string, std::string>>{
           {"variant", "kronecker"}, {"num-frequencies", "8"}, {"num-frequencies", "16"}, {"spectrum", "local_window"},
           {"spectrum-components", "3"}, {"window-radii", "1,2"}, {"proposal", "gaussian"}, {"proposal-scale", "0.25"},
           {"init-sigma-min", "0.05"}, {"init-sigma-max", "0.2"}, {"init-beta", "2"}, {"block-size", "64"}}) {
    INFO(option << " " << value);
    CHECK(names(error({"--attention", "performer", "--" + option, value}), option, "performer"));
  }
  // toeplitz applies the mask exactly: FLT's Fourier-feature count and streaming block only.
  CHECK(names(error({"--attention", "toeplitz", "--num-frequencies", "8"}), "num-frequencies", "toeplitz"));
  CHECK(names(error({"--attention", "toeplitz", "--block-size", "64"}), "block-size", "toeplitz"));
  // What applies is accepted: the defaults, Performer features for every kind, the mask for
  // toeplitz, everything for flt.
  CHECK(error({}).empty());
  CHECK(error({"--attention", "performer"}).empty());
  CHECK(error({"--attention", "performer", "--num-features", "16", "--redraw-features", "true"}).empty());
  CHECK(error({"--attention", "toeplitz", "--variant", "kronecker", "--spectrum", "local_window", "--window-radii", "1,2"}).empty());
  CHECK(error({"--attention", "toeplitz", "--init-beta", "2", "--proposal", "gaussian", "--proposal-scale", "0.3"}).empty());
  CHECK(error({"--attention", "flt", "--num-frequencies", "8", "--block-size", "64", "--proposal", "gaussian"}).empty());
  // In a file: accepted (a warning, which the seq program test reads), also at a value other than
  // the default; a run's resolved configuration (every option listed, at the default where not
  // set) reads back.
  io::write_file_atomic(dir / "p.ini", "[model]\nattention = performer\nnum-frequencies = 8\n");
  CHECK(error({"--config", (dir / "p.ini").string()}).empty());
  const ImageTrainConfig performer = parse_image_train_command_line({"--attention", "performer", "--out", (dir / "o").string()});
  io::write_file_atomic(dir / "resolved.ini", performer.run.resolved_ini);
  CHECK(performer.run.resolved_ini.find("num-frequencies = 16") != std::string::npos);
  CHECK(error({"--config", (dir / "resolved.ini").string()}).empty());
}

TEST_CASE("model options that change nothing for the spectrum, variant or proposal are refused on the command line", "[seq][task][image]") {
  Scratch dir("task-image-setting-options");
  const auto error = [&](std::vector<std::string> args) {
    args.insert(args.end(), {"--out", (dir / "o").string()});
    try {
      parse_image_train_command_line(args);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const auto refused = [&](std::vector<std::string> args, const std::string& option, const std::string& why) {
    const std::string message = error(std::move(args));
    INFO(message);
    return message.find("--" + option + " (command line) has no effect with --attention ") != std::string::npos &&
           message.find("(" + why + "); leave it out") != std::string::npos;
  };
  // Window radii with the gaussian_mixture spectrum (the default), for flt and toeplitz alike.
  CHECK(refused({"--window-radii", "1,3"}, "window-radii", "only with spectrum = local_window"));
  CHECK(refused({"--attention", "toeplitz", "--spectrum", "gaussian_mixture", "--window-radii", "1,3"}, "window-radii",
                "only with spectrum = local_window"));
  // local_window: always the uniform_box proposal, no sigma ladder.
  for (const auto& [option, value] : std::vector<std::pair<std::string, std::string>>{
           {"proposal", "gaussian"}, {"proposal-scale", "0.3"}, {"init-sigma-min", "0.05"}, {"init-sigma-max", "0.2"}}) {
    INFO(option);
    CHECK(error({"--spectrum", "local_window", "--" + option, value}).find("--" + option + " (command line) has no effect") !=
          std::string::npos);
  }
  // init_beta belongs to the bias variant; proposal_scale to the gaussian proposal.
  CHECK(refused({"--variant", "kronecker", "--init-beta", "2"}, "init-beta", "only with variant = bias"));
  CHECK(refused({"--attention", "toeplitz", "--variant", "kronecker", "--init-beta", "2"}, "init-beta",
                "only with variant = bias"));
  CHECK(refused({"--proposal-scale", "0.3"}, "proposal-scale", "only with proposal = gaussian"));
  CHECK(refused({"--proposal", "uniform_box", "--proposal-scale", "0.3"}, "proposal-scale", "only with proposal = gaussian"));
  // Where they apply they are accepted.
  CHECK(error({"--spectrum", "local_window", "--window-radii", "1,3"}).empty());
  CHECK(error({"--variant", "bias", "--init-beta", "2", "--proposal", "gaussian", "--proposal-scale", "0.3",
               "--init-sigma-min", "0.05", "--init-sigma-max", "0.2"})
            .empty());
  // From a file at a value other than the default: accepted (a warning); the spectrum the file's
  // keys belong to can then be chosen on the command line.
  io::write_file_atomic(dir / "window.ini", "[model]\nspectrum = local_window\nwindow-radii = 1,3\n");
  CHECK(error({"--config", (dir / "window.ini").string(), "--spectrum", "gaussian_mixture"}).empty());
}

TEST_CASE("image task: EMA, plateau schedule and early stopping from the options", "[seq][task][image]") {
  Scratch dir("task-image-engine");
  testing::write_synthetic_idx(dir / "data", 192, 40);
  const std::vector<std::string> base{"--data-dir", (dir / "data").string(), "--validation", "64", "--patch", "4",
                                      "--width", "16", "--heads", "2", "--blocks", "1", "--mlp-hidden", "32",
                                      "--head-hidden", "16", "--num-features", "8", "--num-frequencies", "8",
                                      "--threads", "1", "--batch-size", "16", "--seed", "3"};
  const auto config = [&](const std::string& out, std::vector<std::string> extra) {
    std::vector<std::string> args = base;
    args.insert(args.end(), {"--out", (dir / out).string()});
    args.insert(args.end(), extra.begin(), extra.end());
    return parse_image_train_command_line(args);
  };
  const auto metadata = [](const fs::path& model) {
    std::map<std::string, std::string> meta;
    TokenModel<float>::load(model, &meta);
    return meta;
  };
  // The defaults keep the features off.
  const ImageTrainConfig plain = config("plain", {"--epochs", "2", "--lr", "1e-2"});
  CHECK(plain.run.ema_decay == 0);
  CHECK(plain.run.patience == 0);
  CHECK(plain.run.schedule == train::Schedule::cosine);
  run_image_training(plain);
  CHECK_FALSE(metadata(dir / "plain" / "model.flt").contains("training.weights"));

  // EMA: the averaged weights are the model's.
  const ImageTrainConfig ema = config("ema", {"--epochs", "2", "--lr", "1e-2", "--ema-decay", "0.9"});
  CHECK(ema.run.ema_decay == 0.9);
  run_image_training(ema);
  CHECK(metadata(dir / "ema" / "model.flt").at("training.weights") == "ema");
  CHECK(io::read_file(dir / "ema" / "model.flt") != io::read_file(dir / "plain" / "model.flt"));

  // A rate so small that the validation accuracy does not change: the metric never improves after
  // epoch 1, so the plateau schedule lowers the rate after epoch 2 (patience 0) and early stopping
  // (patience 2) ends the run after epoch 3 of 8.
  const ImageTrainConfig stall = config("stall", {"--epochs", "8", "--lr", "1e-7", "--min-lr", "0", "--schedule",
                                                  "plateau", "--plateau-patience", "0", "--plateau-factor", "0.5",
                                                  "--patience", "2"});
  const ImageTrainResult r = run_image_training(stall);
  CHECK(r.run.stopped_early);
  CHECK(r.run.epochs_run == 3);
  CHECK(r.run.best_epoch == 1);
  const io::CsvTable curve = io::read_csv(dir / "stall" / "learning_curve.csv");
  REQUIRE(curve.rows.size() == 3);
  CHECK(std::stod(curve.rows[0][2]) == 1e-7);
  CHECK(std::stod(curve.rows[1][2]) == 1e-7);
  CHECK(std::stod(curve.rows[2][2]) == 5e-8);

  CHECK_THROWS_AS(config("bad", {"--ema-decay", "1"}), ConfigError);
  CHECK_THROWS_AS(config("bad", {"--patience", "-1"}), ConfigError);
  CHECK_THROWS_AS(config("bad", {"--schedule", "step"}), ConfigError);
}
