// The [train] options of the training engine (train/engine.hpp), declared once for `flt train`
// and the token model's tasks: each command gives its own defaults and the word for its examples.
#pragma once

#include "io/options.hpp"
#include "train/engine.hpp"

#include <optional>
#include <string>
#include <vector>

namespace flt::train {

// Adds, in this order: epochs, batch-size, lr, min-lr, weight-decay, schedule, warmup-steps,
// plateau-factor, plateau-patience, clip-norm, ema-decay, time-budget, patience, seed, threads,
// eval-batch-size; defaults from `defaults`. `examples` names what a batch holds ("molecules",
// "examples"); `warmup` says what --warmup-steps -1 means for this command.
void add_engine_options(io::OptionSchema& schema, const EngineSettings& defaults, const std::string& examples,
                        DefaultWarmup warmup);

// Reads and checks those options into `settings` (the other fields are left as they are).
// ConfigError naming the option when a value is out of range.
void engine_settings_from_options(const io::ResolvedOptions& options, EngineSettings& settings);

// The INI file below a training command's command line: --config FILE, or on --resume without
// --config the run directory's config.ini (--out), so that a resumed run reads its own
// configuration; nullopt when neither applies. `from_run_directory` says which.
std::optional<io::IniFile> training_config_file(const io::CommandLine& command_line, bool* from_run_directory = nullptr);

// A model option that changes nothing for the configuration chosen: a near_far model given
// --num-frequencies, a Performer token model given RPE options.
struct OptionWithoutEffect {
  std::string option;       // the option's name in the schema, without dashes
  std::string why;          // why it has no effect, e.g. "the far field is off"
  bool at_default = false;  // its resolved value is the schema's default
};

// Such an option would make a run look as if it had tried it. Given on the command line it is
// refused (ConfigError, at any value); from a file at a value other than its default it is a
// warning: shared recipe files are combined with other settings on the command line, and a
// run's resolved config.ini (read back by --config and --resume) lists every option. `setting`
// names what makes them idle ("--attention near_far"). Messages:
//   model options: --OPTION (WHERE) has no effect with SETTING (WHY); leave it out | ignored
void check_options_without_effect(const io::ResolvedOptions& options, const std::vector<OptionWithoutEffect>& idle,
                                  const std::string& setting);

}  // namespace flt::train
