// The token model's three tasks (image classification, SMILES property regression, SMILES
// language model) on the training engine of `flt train` (train/engine.hpp): a task supplies its
// data and loss through TrainableTask; also the [train], [model] and [run] options they share.
//
// One run (run_task):
//   1. prepare the run directory (fresh, --overwrite or --resume) and write config.ini;
//   2. AdamW, linear warm-up then cosine decay over the planned steps
//      = epochs x ceil(train_size / batch_size) (or reduce-on-plateau);
//   3. per epoch: shuffled mini-batches (forward, loss, backward, clipping, AdamW), validation,
//      learning_curve.csv, checkpoint-last.flt and, on improvement, checkpoint-best.flt;
//   4. --time-budget: stop after the first step past the budget (the schedule is not shortened);
//   5. model.flt: the best checkpoint's weights with the task's metadata.
// Details, determinism and --resume: docs/sequence-image.md, "The loop".
#pragma once

#include "core/random.hpp"
#include "models/token_model.hpp"
#include "io/options.hpp"
#include "train/engine.hpp"
#include "train/split.hpp"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <ostream>
#include <span>
#include <string>
#include <vector>

namespace flt::tasks {

// The tasks train the token model of models/token_model.hpp.
using models::InputKind;
using models::OutputHead;
using models::TokenAttention;
using models::TokenBatch;
using models::TokenCache;
using models::TokenModel;
using models::TokenModelConfig;

// Progress of an evaluation: called after each batch with the examples done and the total.
using EvalProgress = std::function<void(std::size_t done, std::size_t total)>;

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The engine's settings (train/engine.hpp) with the tasks' defaults, and the run directory.
struct TaskRunConfig : train::EngineSettings {
  TaskRunConfig() {
    batch_size = 64;
    min_lr = 1e-5;
    weight_decay = 0.05;
    clip_norm = 1.0;
  }
  std::filesystem::path out;
  bool overwrite = false;
  bool resume = false;
  std::string resolved_ini;           // config.ini text, paths absolute (set_resolved_ini)
  // The same with the paths as given: runs made before config.ini held absolute paths stored
  // that spelling in their checkpoints, and --resume accepts it (empty: none).
  std::string resolved_ini_as_given;
  // The same with every path reduced to its file name: the resume fingerprint's and the model's
  // training.config text, independent of where the data lies (pipeline::TrainConfig's).
  std::string fingerprint_ini;
};

// One evaluation pass (validation or test).
struct EvalResult {
  double loss = kNaN;            // the training loss on the subset
  std::vector<double> metrics;   // one per TrainableTask::metric_columns()
  double selection = kNaN;       // lower is better: picks the best checkpoint
  std::size_t count = 0;         // examples evaluated
};

struct StepResult {
  double loss = 0;    // mean loss of the batch (the value whose gradient was accumulated)
  double weight = 0;  // its weight in the epoch mean (examples, or predicted tokens for the LM)
};

class TrainableTask {
 public:
  virtual ~TrainableTask() = default;
  virtual std::size_t train_size() const = 0;
  // Column names of EvalResult::metrics with units, e.g. "accuracy", "MAE_U0 [eV]", "bpc".
  virtual std::vector<std::string> metric_columns() const = 0;
  // Forward, loss and backward of training examples `examples` (0-based positions in the training
  // subset) into model.params().grads() (zeroed by the caller). `rng` is this step's own stream.
  virtual StepResult train_batch(TokenModel<float>& model, std::span<const std::size_t> examples, Rng& rng) = 0;
  virtual EvalResult validate(TokenModel<float>& model) = 0;
  // The checksum of the training data: io::training_data_checksum of the examples' digests
  // (example_digest) in training order; --resume refuses other data.
  virtual std::string data_fingerprint() const = 0;
  // The same of the validation examples (--resume refuses other validation data); empty: none.
  virtual std::string validation_fingerprint() const { return {}; }
  // Metadata stored in model.flt (keys not starting with "model."): vocabulary, normalisation...
  virtual std::map<std::string, std::string> model_metadata() const = 0;
};

struct TaskOutput {
  std::ostream* progress = nullptr;  // null: silent
  bool terminal = false;
};

struct TaskRunResult {
  std::filesystem::path run_dir;
  std::filesystem::path model_path;   // empty when stopped by the test hook
  std::int64_t epochs_run = 0;        // completed (or budget-cut) epochs, resumed ones included
  std::int64_t planned_epochs = 0;
  std::int64_t steps = 0;
  std::int64_t planned_steps = 0;
  std::int64_t best_epoch = 0;
  bool stopped_by_budget = false;
  bool stopped_early = false;         // early stopping (--patience)
  bool stopped_by_hook = false;
  double seconds = 0;                 // training wall time, all sessions
  EvalResult best_validation;
};

// Runs steps 1-5 above on `model` (freshly built with the configuration's seed). On return the
// model holds the best checkpoint's weights. Throws ConfigError, IoError, NumericalError (a
// non-finite loss or gradient norm, naming epoch and step).
TaskRunResult run_task(const TaskRunConfig& config, TokenModel<float>& model, TrainableTask& task,
                       const TaskOutput& output = {});

// The lines every task's summary starts with: the run directory, then either "stopped after epoch
// N (continue with --resume)" (returns false: nothing more to report) or the model file with
// `model_note` (e.g. "106574 parameters"), the example counts ("images: 55000 train, ...") and the
// epochs/steps/training-time line (returns true).
bool write_run_summary(std::ostream& out, const TaskRunResult& run, const std::string& model_note,
                       const std::string& examples, std::size_t train, std::size_t validation,
                       std::size_t test);

// ---------------------------------------------------------------------------------------------
// Options shared by the subcommands (flt image, flt seq): sections [train], [model], [run].

// Adds the [train] and [run] options (epochs, batch-size, lr, min-lr, weight-decay, warmup-steps,
// clip-norm, schedule, plateau-factor, plateau-patience, ema-decay, patience, seed, threads,
// time-budget, eval-batch-size; out, overwrite, resume, config, stop-after-epoch) with the given
// defaults for epochs, batch size and lr.
void add_run_options(io::OptionSchema& schema, std::int64_t epochs, std::size_t batch_size, double lr);
// Adds every TokenModelConfig key as a [model] option ('_' written '-'), defaults from `defaults`,
// except the keys in `owned` (set by the task from its data).
void add_model_options(io::OptionSchema& schema, const TokenModelConfig& defaults,
                       const std::vector<std::string>& owned);
// The TokenModelConfig keys the two SMILES tasks (property, lm) set from their data and run
// rather than from [model] options. (The image task also lets the user choose `patch`.) Keys the
// model's output head does not use (head_hidden with a per-token head) are never options either.
const std::vector<std::string>& sequence_task_owned_keys();
TaskRunConfig run_config_from_options(const io::ResolvedOptions& options);
// Sets `run`'s resolved_ini (the persisted options, path options absolute, so that --resume and
// --config RUN_DIR/config.ini read the same files from any working directory) and
// resolved_ini_as_given and fingerprint_ini, all under `header`.
void set_resolved_ini(TaskRunConfig& run, const io::ResolvedOptions& options, std::string_view header);
// The [train] options added after task runs became resumable, at the value that behaves as
// before they existed: left out of the resume fingerprint there (train::resume_fingerprint).
const std::vector<std::pair<std::string, std::string>>& task_options_neutral_values();
// The [model] options over `base` (whose owned keys are kept). ConfigError naming the option.
TokenModelConfig model_config_from_options(const io::ResolvedOptions& options, const TokenModelConfig& base,
                                           const std::vector<std::string>& owned);
// Parses a subcommand's arguments like `flt train`: --config FILE, or on --resume without
// --config the run directory's config.ini, below the command line. Positional arguments go to
// `positional`.
io::ResolvedOptions parse_task_command_line(const io::OptionSchema& schema, const std::vector<std::string>& args,
                                               std::vector<std::string>* positional = nullptr);

// ---------------------------------------------------------------------------------------------
// Small helpers shared by the tasks.

// Contiguous batches of `order`.
std::vector<std::span<const std::size_t>> batch_spans(std::span<const std::size_t> order, std::size_t batch_size);
// The numbers of a run every task's test_metrics.json holds (epochs, best_epoch, steps,
// planned_steps, training_seconds, parameters), then `extra`.
std::vector<std::pair<std::string, double>> run_numbers(const TaskRunResult& run, std::size_t parameters,
                                                        std::vector<std::pair<std::string, double>> extra);
// The first `limit` entries of `v` (0: all).
std::vector<std::size_t> first_n(std::vector<std::size_t> v, std::size_t limit);
// `limit` entries of `v` drawn at random with `seed` (Rng::shuffle of the positions), kept in
// their order in `v` (0 or limit >= size: all). For subsets of id-ordered splits, whose first
// rows are not a sample (QM9's first ids are its smallest molecules).
std::vector<std::size_t> sample_n(const std::vector<std::size_t>& v, std::size_t limit, std::uint64_t seed);
// The rows of subset "train", "validation" or "test" (ConfigError naming --subset otherwise).
const std::vector<std::size_t>& subset_rows(const train::Split& split, const std::string& subset);
// The FNV-1a digest of one training example's canonical bytes (for TrainableTask::data_fingerprint).
std::uint64_t example_digest(std::string_view bytes);
// Shortest round-trip text of a double / a list of doubles ("1.5,2,-3e-05") and back (InputError
// naming `what` when malformed).
std::string format_doubles(std::span<const double> values);
std::vector<double> parse_doubles(std::string_view text, const std::string& what);
// Metadata lookup with a clear error (ModelFileError naming the model file and the key).
const std::string& require_metadata(const std::map<std::string, std::string>& metadata, const std::string& key,
                                    const std::string& source);
// Writes a small JSON object of name -> number/string pairs atomically (numbers: shortest
// round-trip; NaN written as null).
void write_metrics_json(const std::filesystem::path& path, const std::vector<std::pair<std::string, double>>& numbers,
                        const std::vector<std::pair<std::string, std::string>>& strings = {});

}  // namespace flt::tasks
