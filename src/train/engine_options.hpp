// The [train] options of the training engine (train/engine.hpp), declared once for `flt train`
// and the token model's tasks: each command gives its own defaults and the word for its examples.
#pragma once

#include "io/options.hpp"
#include "train/engine.hpp"

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

}  // namespace flt::train
