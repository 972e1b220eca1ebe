#include "train/engine_options.hpp"

#include "core/error.hpp"
#include "core/log.hpp"
#include "core/text.hpp"

#include <cstdio>
#include <filesystem>
#include <cstdlib>
#include <string>

namespace flt::train {

using io::OptionType;

namespace {

// The text of a default value: printf's %g where it reads back exactly ("0.0005", "1e-06"), the
// spelling config.ini files and resume fingerprints of earlier runs hold, else the shortest
// round-trip text.
std::string default_text(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%g", value);
  return std::strtod(buffer, nullptr) == value ? std::string(buffer) : shortest_number(value);
}

}  // namespace

void add_engine_options(io::OptionSchema& s, const EngineSettings& d, const std::string& examples,
                        DefaultWarmup warmup) {
  const auto number = [](double v) { return default_text(v); };
  s.option("epochs", "train", OptionType::integer, std::to_string(d.epochs),
           "training epochs (the schedule is planned over them)");
  s.option("batch-size", "train", OptionType::integer, std::to_string(d.batch_size), examples + " per mini-batch");
  s.option("lr", "train", OptionType::real, number(d.lr), "peak learning rate (AdamW)");
  s.option("min-lr", "train", OptionType::real, number(d.min_lr), "final learning rate (cosine) / floor (plateau)");
  s.option("weight-decay", "train", OptionType::real, number(d.weight_decay),
           "AdamW decoupled weight decay (matrices only)");
  s.option("schedule", "train", OptionType::string, d.schedule == Schedule::plateau ? "plateau" : "cosine",
           "warmup-cosine (cosine) or reduce-on-plateau (plateau)")
      .choices = {"cosine", "warmup-cosine", "plateau"};
  s.option("warmup-steps", "train", OptionType::integer, std::to_string(d.warmup_steps),
           warmup == DefaultWarmup::one_epoch ? "linear warm-up steps (-1: one epoch)"
                                              : "linear warm-up steps (-1: 5% of the planned steps)");
  s.option("plateau-factor", "train", OptionType::real, number(d.plateau_factor), "plateau: learning-rate factor");
  s.option("plateau-patience", "train", OptionType::integer, std::to_string(d.plateau_patience),
           "plateau: epochs without improvement");
  s.option("clip-norm", "train", OptionType::real, number(d.clip_norm), "clip gradients to this global norm (0: off)");
  s.option("ema-decay", "train", OptionType::real, number(d.ema_decay),
           "exponential moving average of weights (0: off)");
  s.option("time-budget", "train", OptionType::real, number(d.time_budget_minutes),
           "stop training when its wall time reaches this many minutes (0: off; the cosine schedule "
           "stays planned over --epochs)");
  s.option("patience", "train", OptionType::integer, std::to_string(d.patience),
           "early stopping: epochs without validation improvement (0: off)");
  s.option("seed", "train", OptionType::integer, std::to_string(d.seed),
           "seed of initialisation, random features, shuffling and augmentation");
  s.option("threads", "train", OptionType::integer, std::to_string(d.threads), "OpenMP threads (0: all cores)");
  s.option("eval-batch-size", "train", OptionType::integer, std::to_string(d.eval_batch_size),
           examples + " per batch when evaluating");
}

void engine_settings_from_options(const io::ResolvedOptions& o, EngineSettings& c) {
  const auto positive = [&](const char* name) {
    const auto v = o.get_int(name);
    if (v < 1) throw ConfigError(std::string("--") + name + " must be at least 1");
    return v;
  };
  const auto at_least_zero = [&](const char* name) {
    const auto v = o.get_int(name);
    if (v < 0) throw ConfigError(std::string("--") + name + " must be >= 0");
    return v;
  };
  c.epochs = positive("epochs");
  c.batch_size = static_cast<std::size_t>(positive("batch-size"));
  c.eval_batch_size = static_cast<std::size_t>(positive("eval-batch-size"));
  c.lr = o.get_real("lr");
  c.min_lr = o.get_real("min-lr");
  if (!(c.lr > 0)) throw ConfigError("--lr must be > 0");
  if (c.min_lr < 0 || c.min_lr > c.lr) throw ConfigError("--min-lr must lie in [0, lr]");
  c.weight_decay = o.get_real("weight-decay");
  if (c.weight_decay < 0) throw ConfigError("--weight-decay must be >= 0");
  c.schedule = o.get_string("schedule") == "plateau" ? Schedule::plateau : Schedule::cosine;
  c.warmup_steps = o.get_int("warmup-steps");
  if (c.warmup_steps < -1) throw ConfigError("--warmup-steps must be >= 0 (or -1: the default warm-up)");
  c.plateau_factor = o.get_real("plateau-factor");
  if (!(c.plateau_factor > 0 && c.plateau_factor < 1)) throw ConfigError("--plateau-factor must lie in (0, 1)");
  c.plateau_patience = at_least_zero("plateau-patience");
  c.clip_norm = o.get_real("clip-norm");
  if (c.clip_norm < 0) throw ConfigError("--clip-norm must be >= 0 (0: off)");
  c.ema_decay = o.get_real("ema-decay");
  if (!(c.ema_decay >= 0 && c.ema_decay < 1)) throw ConfigError("--ema-decay must lie in [0, 1)");
  c.patience = o.get_int("patience");
  if (c.patience < 0) throw ConfigError("--patience must be >= 0 (0: off)");
  c.time_budget_minutes = o.get_real("time-budget");
  if (!(c.time_budget_minutes >= 0)) throw ConfigError("--time-budget must be >= 0 (0: off)");
  c.seed = static_cast<std::uint64_t>(o.get_int("seed"));
  c.threads = static_cast<int>(at_least_zero("threads"));
}

std::optional<io::IniFile> training_config_file(const io::CommandLine& cl, bool* from_run_directory) {
  std::optional<io::IniFile> file;
  bool resume = false;
  std::string out;
  for (const auto& [name, value] : cl.options) {
    if (name == "config") file = io::IniFile::load(value);
    if (name == "resume") resume = io::parse_bool_value(value, "--resume");
    if (name == "out") out = value;
  }
  const bool from_run = !file && resume && !out.empty() && std::filesystem::exists(std::filesystem::path(out) / "config.ini");
  if (from_run) file = io::IniFile::load(std::filesystem::path(out) / "config.ini");
  if (from_run_directory) *from_run_directory = from_run;
  return file;
}

void check_options_without_effect(const io::ResolvedOptions& options, const std::vector<OptionWithoutEffect>& idle,
                                  const std::string& setting) {
  for (const OptionWithoutEffect& entry : idle) {
    const io::OptionSource& source = options.source(entry.option);
    const bool command_line = source.kind == io::OptionSource::Kind::command_line;
    const bool file_non_default = source.kind == io::OptionSource::Kind::file && !entry.at_default;
    if (!command_line && !file_non_default) continue;
    std::string message = "model options: --";
    message += entry.option;
    message += " (" + source.where + ") has no effect with " + setting + " (" + entry.why + ")";
    if (command_line) throw ConfigError(message + "; leave it out");
    log_warning(message + "; ignored");
  }
}

}  // namespace flt::train
