// The training loop every flt trainer runs (`flt train` for molecules, the token model's tasks):
// it sees one flat parameter buffer and its gradients (core/params.hpp) and reaches the model and
// the data only through the Trainable interface below.
//
// Per step: zero gradients, Trainable::train_batch, a finite check, global-norm clipping, AdamW
// (decoupled decay on matrices only; warm-up + cosine or reduce-on-plateau), the EMA update.
// Per epoch: Trainable::validate with the evaluation weights, learning_curve.csv, checkpoints.
// An epoch's order is Rng(seed ^ "shuff").fork(epoch) and a step's stream
// Rng(seed ^ "augmen").fork(step), so a resumed run reaches the same parameters bit for bit.
// The run step by step, --time-budget and --resume: docs/training.md, "The training engine".
#pragma once

#include "core/params.hpp"
#include "core/random.hpp"
#include "train/checkpoint.hpp"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <vector>

namespace flt::train {

enum class Schedule { cosine, plateau };

// Warm-up steps when EngineConfig::warmup_steps is -1.
enum class DefaultWarmup {
  one_epoch,        // the first epoch's steps
  planned_fraction  // 5% of the planned steps (at least 1)
};

// The hyper-parameters of a run, read from the [train] options of every trainer
// (train/engine_options.hpp); `flt train` and the tasks' configurations extend this struct.
struct EngineSettings {
  std::int64_t epochs = 10;
  std::size_t batch_size = 32;
  double lr = 1e-3;
  double min_lr = 1e-6;              // end of the cosine; floor of the plateau schedule
  double weight_decay = 0.01;
  Schedule schedule = Schedule::cosine;
  std::int64_t warmup_steps = -1;    // -1: EngineConfig::default_warmup
  double plateau_factor = 0.5;
  std::int64_t plateau_patience = 10;
  double clip_norm = 10.0;           // 0: no clipping
  double ema_decay = 0.0;            // 0: no weight averaging
  std::int64_t patience = 0;         // early stopping: epochs without improvement (0: off)
  double time_budget_minutes = 0;    // 0: no budget
  std::uint64_t seed = 0;
  std::int64_t stop_after_epoch = 0; // test hook: stop (as if killed) after this epoch's checkpoint
  // Not the engine's own: the caller's evaluation batches and OpenMP threads (0: the default).
  std::size_t eval_batch_size = 256;
  int threads = 0;
};

struct EngineConfig : EngineSettings {
  DefaultWarmup default_warmup = DefaultWarmup::one_epoch;

  std::filesystem::path dir;         // the run directory (prepared)
  bool resume = false;
  bool writer = true;                // writes the run directory's files (rank 0 of an MPI job)
  std::string config_fingerprint;    // --resume refuses another one (see resume_fingerprint)
  // Also accepted on --resume: the fingerprint with the configuration's paths spelled as given,
  // relative ones unresolved (what runs stored before paths were made absolute); empty: none.
  std::string config_fingerprint_as_given;
  // Progress: a bar per epoch on a terminal, one line per epoch otherwise (null: silent).
  std::ostream* progress = nullptr;
  bool terminal = false;
  std::function<void()> on_step;     // after every optimiser step (e.g. to poll for an interrupt)
  std::function<void()> barrier;     // before the final checkpoint is read (MPI: rank 0 wrote it)
};

struct StepResult {
  double loss = 0;    // mean loss of the batch (the value whose gradient was accumulated)
  double weight = 0;  // its weight in the epoch mean (examples, or predicted tokens)
};

struct Validation {
  double loss = std::numeric_limits<double>::quiet_NaN();
  double selection = std::numeric_limits<double>::quiet_NaN();  // lower is better
  std::vector<double> columns;  // one per Trainable::curve_columns()
};

// What the engine passes to the trainable's epoch report.
struct EpochInfo {
  std::int64_t epoch = 0, epochs = 0, step = 0;
  std::size_t batches = 0;
  double lr = 0, train_loss = 0, seconds = 0, epoch_seconds = 0;
  const Validation* validation = nullptr;
  bool improved = false, stopped_early = false, stopped_by_budget = false;
  std::string eta;  // "run ETA ..." or empty
};

class Trainable {
 public:
  virtual ~Trainable() = default;
  virtual ParameterStore<float>& parameters() = 0;
  virtual std::size_t train_size() const = 0;
  // Cuts an epoch's order of positions into batches (default: consecutive runs of batch_size).
  virtual std::vector<std::vector<std::size_t>> batches(std::span<const std::size_t> order, std::size_t batch_size) const;
  // Whether the number of batches depends on the order (then the planned steps are counted over
  // every epoch's batches).
  virtual bool batch_count_varies() const { return false; }
  virtual void begin_epoch(std::int64_t /*epoch*/) {}
  virtual void begin_step(std::int64_t /*step*/) {}
  // Forward, loss and backward of the examples at `positions` into parameters().grads() (zeroed
  // by the engine). `rng` is this step's own stream.
  virtual StepResult train_batch(std::span<const std::size_t> positions, Rng& rng) = 0;
  // After an epoch's steps, before validation (e.g. to share per-rank results).
  virtual void end_epoch() {}
  // With the evaluation weights in parameters().
  virtual Validation validate() = 0;
  virtual std::vector<std::string> curve_columns() const = 0;
  // The checksum of the training data (io checksums); --resume refuses another one.
  virtual std::string data_checksum() const = 0;
  // The checksum of the validation data, which the best epoch is chosen on; --resume refuses
  // another one (the epochs' metrics would not compare). Empty: not checked.
  virtual std::string validation_checksum() const { return {}; }
  // On --resume, a stored checksum that is not data_checksum(): whether it is an earlier kind of
  // checksum of the same data (then the run continues; default: no).
  virtual bool accepts_stored_checksum(const std::string& /*stored*/) { return false; }
  // The trainable's own checkpoint entries (e.g. the random-feature draw) and their restoring.
  virtual void save_state(Checkpoint& /*checkpoint*/) const {}
  virtual void load_state(const Checkpoint& /*checkpoint*/) {}
  // Once, before the first step of this session (after a resume's state is loaded).
  virtual void before_training() {}
  // The text after "epoch N/M: " of an epoch's progress line (default: losses, columns, lr).
  virtual std::string epoch_summary(const EpochInfo& info) const;
  virtual void after_epoch(const EpochInfo& /*info*/) {}
};

struct CurveRow {
  std::int64_t epoch = 0, step = 0;
  double lr = 0, train_loss = 0, val_loss = 0, seconds = 0;
  std::vector<double> columns;
};

struct EngineResult {
  std::int64_t epochs_run = 0;       // completed (or budget-cut) epochs, resumed ones included
  std::int64_t steps = 0;            // optimiser steps so far
  std::int64_t planned_steps = 0;
  std::int64_t best_epoch = 0;       // of the weights in the buffer
  std::int64_t best_step = 0;        // steps of that checkpoint
  bool stopped_early = false;
  bool stopped_by_budget = false;
  bool stopped_by_hook = false;      // stop_after_epoch: the buffer holds the last weights
  bool ema = false;                  // the weights are the EMA shadow
  double seconds = 0;                // training wall time, all sessions
  std::int64_t session_steps = 0;
  double session_step_seconds = 0;   // wall time of this session's optimiser steps
  std::vector<CurveRow> curve;       // every epoch of the run
  std::optional<CurveRow> best_row;  // the curve row of best_epoch
};

// The configuration that must not change between an interrupted run and its --resume: the
// resolved INI text without the [run] section, [train] threads, and the options in
// `neutral_values` ("section.key" -> value) at their neutral value (options added after runs
// became resumable, at the value that behaves as before they existed).
std::string resume_fingerprint(const std::string& ini_text,
                               const std::vector<std::pair<std::string, std::string>>& neutral_values);
// The entries that differ between two resume fingerprints, e.g. "train.epochs = '4' (the run has '2')".
std::string fingerprint_difference(const std::string& now, const std::string& run);

class Engine {
 public:
  explicit Engine(EngineConfig config);
  // Throws ConfigError (bad settings, a --resume that does not match the run), NumericalError (a
  // non-finite loss or gradient norm, naming epoch and step), IoError.
  EngineResult run(Trainable& trainable);

 private:
  EngineConfig cfg_;
};

}  // namespace flt::train
