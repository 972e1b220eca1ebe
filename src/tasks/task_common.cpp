// The shared training engine of the token-model tasks (see task_common.hpp for the algorithm,
// the time budget and the determinism/resume contract).
#include "tasks/task_common.hpp"

#include "core/error.hpp"
#include "core/log.hpp"
#include "core/optim.hpp"
#include "core/text.hpp"
#include "core/version.hpp"
#include "io/atomic_file.hpp"
#include "train/checkpoint.hpp"
#include "train/engine.hpp"
#include "train/engine_options.hpp"
#include "io/checksum.hpp"
#include "io/csv.hpp"
#include "io/ini.hpp"
#include "io/json.hpp"
#include "io/progress.hpp"
#include "train/run_dir.hpp"
#include "io/svg_plot.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <numeric>
#include <optional>
#include <sstream>

namespace flt::tasks {

namespace fs = std::filesystem;
using io::OptionType;

namespace {

std::string dashed(std::string key) {
  std::replace(key.begin(), key.end(), '_', '-');
  return key;
}

void write_curve_plots(const fs::path& dir, const std::vector<std::string>& metrics, const std::vector<train::CurveRow>& rows) {
  std::vector<double> x, tl, vl;
  for (const auto& r : rows) {
    x.push_back(static_cast<double>(r.epoch));
    tl.push_back(r.train_loss);
    vl.push_back(r.val_loss);
  }
  io::PlotOptions o;
  o.title = "training and validation loss";
  o.x_label = "epoch";
  o.y_label = "loss";
  o.log_y = true;
  io::write_svg(dir / "learning_curve_loss.svg",
                   io::line_plot_svg({{"train", x, tl, "#1f77b4", true, true}, {"validation", x, vl, "#d62728", true, true}}, o));
  for (std::size_t m = 0; m < metrics.size(); ++m) {
    std::vector<double> y;
    for (const auto& r : rows) y.push_back(r.columns[m]);
    io::PlotOptions om;
    om.title = "validation " + metrics[m];
    om.x_label = "epoch";
    om.y_label = metrics[m];
    std::string stem = metrics[m];
    // "MAE_U0 [eV]" -> "MAE_U0_eV": other characters become '_', runs of '_' collapse.
    std::string clean;
    for (char c : stem) {
      const char k = std::isalnum(static_cast<unsigned char>(c)) || c == '-' ? c : '_';
      if (k != '_' || (!clean.empty() && clean.back() != '_')) clean += k;
    }
    while (!clean.empty() && clean.back() == '_') clean.pop_back();
    stem = clean;
    io::write_svg(dir / ("learning_curve_" + stem + ".svg"), io::line_plot_svg({{"validation", x, y, "#d62728", true, true}}, om));
  }
}

// The token model and a task as the engine's Trainable.
class TokenTrainable final : public train::Trainable {
 public:
  TokenTrainable(TokenModel<float>& model, TrainableTask& task) : model_(model), task_(task), metrics_(task.metric_columns()) {}
  ParameterStore<float>& parameters() override { return model_.params(); }
  std::size_t train_size() const override { return task_.train_size(); }
  void begin_epoch(std::int64_t) override { model_.reset_attention_stats(); }
  void begin_step(std::int64_t step) override {
    if (model_.config().redraw_features) model_.begin_step(static_cast<std::uint64_t>(step));
  }
  train::StepResult train_batch(std::span<const std::size_t> positions, Rng& rng) override {
    const StepResult r = task_.train_batch(model_, positions, rng);
    return {r.loss, r.weight};
  }
  train::Validation validate() override {
    const EvalResult e = task_.validate(model_);
    train::Validation v;
    v.loss = e.loss;
    v.selection = e.selection;
    v.columns = e.metrics;
    v.columns.resize(metrics_.size(), kNaN);  // no validation examples: no metrics
    return v;
  }
  std::vector<std::string> curve_columns() const override {
    std::vector<std::string> c;
    for (const auto& m : metrics_) c.push_back("val_" + m);
    return c;
  }
  std::string data_checksum() const override { return task_.data_fingerprint(); }
  std::string validation_checksum() const override { return task_.validation_fingerprint(); }
  void save_state(train::Checkpoint& ck) const override {
    ck.set_integer("feature_draw", static_cast<std::int64_t>(model_.feature_draw()));
  }
  void load_state(const train::Checkpoint& ck) override {
    if (model_.config().redraw_features) model_.begin_step(static_cast<std::uint64_t>(ck.integer("feature_draw")));
  }

 private:
  TokenModel<float>& model_;
  TrainableTask& task_;
  std::vector<std::string> metrics_;
};

}  // namespace

const std::vector<std::pair<std::string, std::string>>& task_options_neutral_values() {
  static const std::vector<std::pair<std::string, std::string>> values{{"train.schedule", "cosine"},
                                                                       {"train.plateau-factor", "0.5"},
                                                                       {"train.plateau-patience", "10"},
                                                                       {"train.ema-decay", "0"},
                                                                       {"train.patience", "0"}};
  return values;
}

// ---------------------------------------------------------------------------------------------

TaskRunResult run_task(const TaskRunConfig& cfg, TokenModel<float>& model, TrainableTask& task, const TaskOutput& output) {
  if (cfg.out.empty()) throw ConfigError("--out: a run directory is required");
  if (cfg.threads > 0) omp_set_num_threads(cfg.threads);
  train::EngineConfig ec;
  static_cast<train::EngineSettings&>(ec) = cfg;
  ec.default_warmup = train::DefaultWarmup::planned_fraction;
  ec.resume = cfg.resume;
  ec.config_fingerprint = train::resume_fingerprint(cfg.fingerprint_ini.empty() ? cfg.resolved_ini : cfg.fingerprint_ini,
                                                    task_options_neutral_values());
  if (!cfg.resolved_ini_as_given.empty())
    ec.config_fingerprint_as_given = train::resume_fingerprint(cfg.resolved_ini_as_given, task_options_neutral_values());
  ec.progress = output.progress;
  ec.terminal = output.terminal;
  ec.dir = cfg.out;
  train::Engine{ec};  // checks the settings before the run directory is touched
  const train::RunMode mode = cfg.resume ? train::RunMode::resume : cfg.overwrite ? train::RunMode::overwrite : train::RunMode::fresh;
  const train::RunDirectoryLock run_lock = train::prepare_run_directory(cfg.out, mode);
  ec.dir = run_lock.path();
  if (!cfg.resume && !cfg.resolved_ini.empty()) io::write_file_atomic(ec.dir / "config.ini", cfg.resolved_ini);

  TokenTrainable trainable(model, task);
  const train::EngineResult run = train::Engine(ec).run(trainable);
  TaskRunResult result;
  result.run_dir = ec.dir;
  result.planned_epochs = cfg.epochs;
  result.planned_steps = run.planned_steps;
  result.epochs_run = run.epochs_run;
  result.steps = run.steps;
  result.best_epoch = run.best_epoch;
  result.stopped_by_budget = run.stopped_by_budget;
  result.stopped_early = run.stopped_early;
  result.stopped_by_hook = run.stopped_by_hook;
  result.seconds = run.seconds;
  if (run.stopped_by_hook) return result;
  if (run.best_row) {
    result.best_validation.loss = run.best_row->val_loss;
    result.best_validation.metrics = run.best_row->columns;
  }

  std::map<std::string, std::string> meta = task.model_metadata();
  meta["training.data_checksum"] = task.data_fingerprint();
  meta["training.seed"] = std::to_string(cfg.seed);
  meta["training.code_version"] = std::string(flt::version()) + " (" + flt::git_commit() + ")";
  meta["training.epochs"] = std::to_string(run.epochs_run);
  meta["training.best_epoch"] = std::to_string(run.best_epoch);
  meta["training.steps"] = std::to_string(run.best_step);
  meta["training.planned_steps"] = std::to_string(run.planned_steps);
  meta["training.stopped_by_budget"] = run.stopped_by_budget ? "true" : "false";
  meta["training.config"] = ec.config_fingerprint;
  if (run.ema) meta["training.weights"] = "ema";
  result.model_path = ec.dir / "model.flt";
  model.save(result.model_path, meta);
  write_curve_plots(ec.dir, task.metric_columns(), run.curve);
  return result;
}

// ---------------------------------------------------------------------------------------------
// Options.

void add_run_options(io::OptionSchema& s, std::int64_t epochs, std::size_t batch_size, double lr) {
  TaskRunConfig defaults;
  defaults.epochs = epochs;
  defaults.batch_size = batch_size;
  defaults.lr = lr;
  train::add_engine_options(s, defaults, "examples", train::DefaultWarmup::planned_fraction);
  s.option("out", "run", OptionType::path, std::nullopt, "run directory (new or empty; see --overwrite, --resume)");
  s.option("overwrite", "run", OptionType::boolean, "false", "replace an existing flt run directory").persist = false;
  s.option("resume", "run", OptionType::boolean, "false", "continue the interrupted run in --out").persist = false;
  {
    io::OptionSpec& c = s.option("config", "run", OptionType::path, std::nullopt, "INI file of options (command line overrides)");
    c.optional = true;
    c.persist = false;
  }
  s.option("stop-after-epoch", "run", OptionType::integer, "0", "testing: stop after this epoch's checkpoint as if interrupted (0: off)")
      .persist = false;
  // The spellings every flt subcommand shares.
  s.add_spellings("out", 'o', {"output"});
  s.add_spellings("threads", 'j');
}

namespace {

// A key the task sets itself rather than from a [model] option: one of `owned`, or a key the
// model's output head does not use (head_hidden sizes the pooled head's MLP only; a per-token head
// is one Linear layer), which would otherwise be an option that changes nothing.
bool task_owns(const std::string& key, const std::vector<std::string>& owned, const TokenModelConfig& base) {
  if (std::find(owned.begin(), owned.end(), key) != owned.end()) return true;
  return key == "head_hidden" && base.head == OutputHead::per_token;
}

}  // namespace

void add_model_options(io::OptionSchema& s, const TokenModelConfig& defaults, const std::vector<std::string>& owned) {
  for (const auto& [key, value] : models::config_to_strings(defaults)) {
    if (task_owns(key, owned, defaults)) continue;
    std::string help = "model hyper-parameter " + key;
    if (key == "attention") help = "attention: flt (FLT with RPE), performer (no RPE), toeplitz (exact RPE by FFT)";
    else if (key == "num_features") help = "Performer random features per head (m)";
    else if (key == "num_frequencies") help = "RPE random frequencies per head (R, flt)";
    else if (key == "spectrum") help = "RPE spectrum: gaussian_mixture or local_window (local RPE)";
    else if (key == "width") help = "model width D";
    else if (key == "heads") help = "attention heads H";
    else if (key == "blocks") help = "encoder blocks";
    else if (key == "patch") help = "patch side p in pixels (images)";
    else if (key == "causal") help = "causal attention (tokens only)";
    io::OptionSpec& spec = s.option(dashed(key), "model", OptionType::string, value, help);
    if (key == "attention") spec.choices = {"flt", "performer", "toeplitz"};
  }
}

TaskRunConfig run_config_from_options(const io::ResolvedOptions& o) {
  TaskRunConfig c;
  train::engine_settings_from_options(o, c);
  c.out = o.get_string("out");
  c.overwrite = o.get_bool("overwrite");
  c.resume = o.get_bool("resume");
  if (c.overwrite && c.resume) throw ConfigError("--overwrite and --resume exclude each other");
  c.stop_after_epoch = o.get_int("stop-after-epoch");
  if (c.stop_after_epoch < 0) throw ConfigError("--stop-after-epoch must be >= 0 (0: off)");
  return c;
}

TokenModelConfig model_config_from_options(const io::ResolvedOptions& o, const TokenModelConfig& base,
                                           const std::vector<std::string>& owned) {
  std::map<std::string, std::string> values, defaults;
  for (const auto& [key, value] : models::config_to_strings(base)) {
    defaults[key] = value;
    if (task_owns(key, owned, base)) values[key] = value;
    else values[key] = o.get_string(dashed(key));
  }
  TokenModelConfig config;
  try {
    config = models::token_config_from_strings(values);
  } catch (const ConfigError& e) {
    throw ConfigError(std::string("model options: ") + e.what());
  }
  // An option that changes nothing for the chosen attention kind, spectrum, variant or proposal: a
  // Performer run given RPE options would otherwise look like an RPE experiment.
  std::vector<train::OptionWithoutEffect> idle;
  for (const models::KeyWithoutEffect& unused : models::config_keys_without_effect(config)) {
    if (task_owns(unused.key, owned, base)) continue;
    idle.push_back({dashed(unused.key), unused.why, values.at(unused.key) == defaults.at(unused.key)});
  }
  train::check_options_without_effect(o, idle, "--attention " + std::string(models::to_string(config.attention)));
  return config;
}

void set_resolved_ini(TaskRunConfig& run, const io::ResolvedOptions& options, std::string_view header) {
  io::IniFile ini = options.to_ini();
  run.resolved_ini_as_given = ini.dump(header);
  io::IniFile named = ini;
  io::reduce_paths_to_file_names(named, options.schema());
  run.fingerprint_ini = named.dump(header);
  io::make_paths_absolute(ini, options.schema());
  run.resolved_ini = ini.dump(header);
}

io::ResolvedOptions parse_task_command_line(const io::OptionSchema& schema, const std::vector<std::string>& args,
                                               std::vector<std::string>* positional) {
  const io::CommandLine cl = io::parse_command_line(schema, args);
  const std::optional<io::IniFile> file = train::training_config_file(cl);
  if (positional) *positional = cl.positional;
  return io::resolve_options(schema, file ? &*file : nullptr, cl.options);
}

// ---------------------------------------------------------------------------------------------
// Helpers.

std::vector<std::span<const std::size_t>> batch_spans(std::span<const std::size_t> order, std::size_t batch_size) {
  require(batch_size > 0, "batch_spans: batch size must be positive");
  std::vector<std::span<const std::size_t>> out;
  for (std::size_t b = 0; b < order.size(); b += batch_size) out.push_back(order.subspan(b, std::min(batch_size, order.size() - b)));
  return out;
}

std::vector<std::pair<std::string, double>> run_numbers(const TaskRunResult& run, std::size_t parameters,
                                                        std::vector<std::pair<std::string, double>> extra) {
  std::vector<std::pair<std::string, double>> out{{"epochs", static_cast<double>(run.epochs_run)},
                                                  {"best_epoch", static_cast<double>(run.best_epoch)},
                                                  {"steps", static_cast<double>(run.steps)},
                                                  {"planned_steps", static_cast<double>(run.planned_steps)},
                                                  {"training_seconds", run.seconds},
                                                  {"parameters", static_cast<double>(parameters)}};
  out.insert(out.end(), extra.begin(), extra.end());
  return out;
}

std::vector<std::size_t> first_n(std::vector<std::size_t> v, std::size_t limit) {
  if (limit > 0 && v.size() > limit) v.resize(limit);
  return v;
}

std::vector<std::size_t> sample_n(const std::vector<std::size_t>& v, std::size_t limit, std::uint64_t seed) {
  if (limit == 0 || v.size() <= limit) return v;
  std::vector<std::size_t> position(v.size());
  std::iota(position.begin(), position.end(), std::size_t{0});
  Rng rng(seed);
  rng.shuffle(position);
  position.resize(limit);
  std::sort(position.begin(), position.end());
  std::vector<std::size_t> out;
  out.reserve(limit);
  for (const std::size_t p : position) out.push_back(v[p]);
  return out;
}

const std::vector<std::size_t>& subset_rows(const train::Split& split, const std::string& subset) {
  if (subset == "train") return split.train;
  if (subset == "validation") return split.validation;
  if (subset == "test") return split.test;
  throw ConfigError("--subset '" + subset + "' (expected train, validation or test)");
}

std::uint64_t example_digest(std::string_view bytes) {
  io::Fnv1a64 h;
  h.update(bytes);
  return h.digest();
}

std::string format_doubles(std::span<const double> values) {
  std::string out;
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (std::isnan(values[i])) throw InvalidArgument("format_doubles: NaN");
    if (i) out += ',';
    out += io::csv_number(values[i]);
  }
  return out;
}

std::vector<double> parse_doubles(std::string_view text, const std::string& what) {
  std::vector<double> out;
  if (text.empty()) return out;
  std::size_t pos = 0;
  while (true) {
    const std::size_t comma = text.find(',', pos);
    const std::string item(text.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos));
    char* end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    if (item.empty() || end != item.c_str() + item.size() || !std::isfinite(v))
      throw InputError(what, 0, "'" + item + "' is not a finite number");
    out.push_back(v);
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return out;
}

const std::string& require_metadata(const std::map<std::string, std::string>& metadata, const std::string& key,
                                    const std::string& source) {
  const auto it = metadata.find(key);
  if (it == metadata.end()) throw ModelFileError(source, "missing metadata entry '" + key + "' (not a model of this task?)");
  return it->second;
}

void write_metrics_json(const fs::path& path, const std::vector<std::pair<std::string, double>>& numbers,
                        const std::vector<std::pair<std::string, std::string>>& strings) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : numbers) {
    // Counts arrive as doubles: integral values are written as JSON integers (6, not 6.0).
    if (!std::isfinite(v)) j[k] = nullptr;
    else if (v == std::trunc(v) && std::fabs(v) < 0x1p53) j[k] = static_cast<std::int64_t>(v);
    else j[k] = v;
  }
  for (const auto& [k, v] : strings) j[k] = v;
  io::write_file_atomic(path, io::dump_json(j) + "\n");
}

bool write_run_summary(std::ostream& out, const TaskRunResult& run, const std::string& model_note,
                       const std::string& examples, std::size_t train, std::size_t validation,
                       std::size_t test) {
  out << "run directory: " << run.run_dir.string() << "\n";
  if (run.stopped_by_hook) {
    out << "stopped after epoch " << run.epochs_run << " (continue with --resume)\n";
    return false;
  }
  out << "model: " << run.model_path.string() << " (" << model_note << ")\n";
  out << examples << ": " << train << " train, " << validation << " validation, " << test << " test\n";
  out << "epochs: " << run.epochs_run << " of " << run.planned_epochs << " (best " << run.best_epoch << "), steps "
      << run.steps << " of " << run.planned_steps << (run.stopped_by_budget ? ", stopped by the time budget" : "")
      << "; training time " << io::format_duration(run.seconds) << "\n";
  return true;
}

const std::vector<std::string>& sequence_task_owned_keys() {
  static const std::vector<std::string> keys = {"input", "vocab_size", "image_height", "image_width", "patch",
                                                "head", "num_outputs", "causal", "seed"};
  return keys;
}

}  // namespace flt::tasks
