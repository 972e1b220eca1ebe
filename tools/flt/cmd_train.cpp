// flt train: trains an FLT molecule model. Options come from the command line and an INI
// file (--config), the command line overriding; the run directory receives the model, checkpoints,
// split, learning curve, metrics, predictions, plots and the resolved configuration
// (see docs/training.md). Progress goes to stderr, the final summary to stdout.
#include "comm/communicator.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "commands.hpp"
#include "exit_codes.hpp"
#include "options_util.hpp"
#include "pipeline/train.hpp"
#include "io/progress.hpp"

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

namespace flt::cli {
namespace {

const char* kUsage =
    "Usage: flt train INPUT... --out RUN_DIR [options]\n"
    "       flt train --config FILE [INPUT...] [options]\n"
    "       flt train --resume --out RUN_DIR\n\n"
    "Trains an FLT molecule model on molecules with labels (QM9 files, extended XYZ keys, SD tags,\n"
    "or a CSV file with --labels). Every option may also be given in an INI file read with --config\n"
    "(section [data], [split], [train], [model] or [run]; 'name = value'); the command line\n"
    "overrides the file. RUN_DIR/config.ini holds the resolved configuration of a run.\n"
    "Exit status: 0 success, 1 error, 2 usage error, 3 trained but skipped bad input records.\n\n"
    "Progress (reading, epochs with the whole run's ETA) goes to stderr: a bar on a terminal, plain\n"
    "lines otherwise, nothing with -q.\n\n"
    "Options (also: -h/--help, -q/--quiet: errors only, no progress, -v/--verbose: log every step):\n";

int run_train(const std::vector<std::string>& raw_args) {
  std::vector<std::string> args;
  bool quiet = false;
  if (strip_common_flags(raw_args, args, &quiet)) {
    std::cout << kUsage << flt::pipeline::train_option_schema().help();
    return kExitOk;
  }
  flt::pipeline::TrainConfig config;
  try {
    config = flt::pipeline::parse_train_command_line(args);
  } catch (const ConfigError& e) {
    throw UsageError(e.what());
  }
  flt::pipeline::TrainOutput output;
  const flt::io::ProgressOutput progress = progress_output(quiet);
  output.progress = progress.stream;
  output.terminal = progress.terminal;
  const flt::pipeline::TrainResult result = flt::pipeline::run_training(config, output);
  if (flt::comm::world().rank() == 0) std::cout << flt::pipeline::format_summary(result) << std::flush;
  return result.skipped_records > 0 ? kExitSkipped : kExitOk;
}

const bool registered = register_command({"train", "train a molecule model (FLT) on labelled molecules", 30, &run_train});

}  // namespace
}  // namespace flt::cli
