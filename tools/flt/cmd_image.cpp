// flt image: trains and evaluates the image model (patch embedding + FLT encoder with 2-D RPE) on
// Fashion-MNIST IDX files (docs/sequence-image.md). Options come from the command line
// and an INI file (--config), the command line overriding; progress goes to stderr, the summary
// to stdout.
#include "core/error.hpp"
#include "core/log.hpp"
#include "commands.hpp"
#include "exit_codes.hpp"
#include "options_util.hpp"
#include "tasks/task_image.hpp"
#include "io/progress.hpp"

#include <omp.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

namespace flt::cli {
namespace {

const char* kUsage =
    "Usage: flt image train --out RUN_DIR [options]\n"
    "       flt image train --config FILE [options]\n"
    "       flt image train --resume --out RUN_DIR\n"
    "       flt image eval --model RUN_DIR/model.flt [--subset test|train] [--limit N] [--out DIR]\n\n"
    "Trains the FLT image classifier (patches on a 2-D grid, FLT attention with a 2-D RPE, or the\n"
    "performer / toeplitz baselines with --attention) on Fashion-MNIST (IDX files of the Debian\n"
    "package dataset-fashion-mnist, or --data-dir). Every option may also be given in an INI file\n"
    "read with --config (sections [data], [train], [model], [run]); the command line overrides the\n"
    "file. RUN_DIR/config.ini holds the resolved configuration of a run.\n"
    "Also: -h/--help, -q/--quiet (errors only, no progress), -v/--verbose (log every step).\n"
    "Exit status: 0 success, 1 error, 2 usage error.\n\n";

io::OptionSchema eval_schema() {
  using io::OptionType;
  io::OptionSchema s;
  s.option("model", "", OptionType::path, std::nullopt, "model file written by flt image train");
  s.optional_option("data-dir", "", OptionType::path, "IDX directory (default: Fashion-MNIST)");
  s.option("subset", "", OptionType::string, "test", "test or train").choices = {"test", "train"};
  s.option("limit", "", OptionType::integer, "0", "evaluate the first n images (0: all)");
  s.option("batch-size", "", OptionType::integer, "256", "images per batch");
  s.option("threads", "", OptionType::integer, "0", "OpenMP threads (0: all cores)");
  s.optional_option("out", "", OptionType::path, "directory for test_metrics.json/.csv and confusion.csv");
  add_common_options(s);
  return s;
}

int run_image_eval(const std::vector<std::string>& args) {
  static const io::OptionSchema schema = eval_schema();
  const std::optional<Arguments> parsed = parse_arguments(schema, args, kUsage, 0);
  if (!parsed) return kExitOk;
  const io::ResolvedOptions& o = parsed->options;
  if (o.get_int("limit") < 0 || o.get_int("batch-size") < 1 || o.get_int("threads") < 0)
    throw UsageError("--limit and --threads must be >= 0, --batch-size >= 1");
  if (o.get_int("threads") > 0) omp_set_num_threads(static_cast<int>(o.get_int("threads")));
  EvalProgressBar progress(progress_output(parsed->quiet));
  const tasks::ImageEvaluation e =
      tasks::evaluate_image_model(o.get_string("model"), parsed->string_or_empty("data-dir"), o.get_string("subset"),
                                static_cast<std::size_t>(o.get_int("limit")), static_cast<std::size_t>(o.get_int("batch-size")),
                                progress.callback());
  progress.finish();
  if (o.has("out")) {
    prepare_evaluation_directory(o.get_string("out"));
    tasks::write_image_evaluation(o.get_string("out"), e);
  }
  std::cout << tasks::format_image_evaluation(e) << std::flush;
  return kExitOk;
}

int run_image(const std::vector<std::string>& raw_args) {
  if (raw_args.empty() || raw_args[0] == "-h" || raw_args[0] == "--help") {
    std::cout << kUsage << "train options:\n" << tasks::image_option_schema().help() << "\neval options:\n" << eval_schema().help();
    return raw_args.empty() ? kExitUsage : kExitOk;
  }
  const std::string action = raw_args[0];
  const std::vector<std::string> rest(raw_args.begin() + 1, raw_args.end());
  if (action == "eval") return run_image_eval(rest);
  std::vector<std::string> args;
  bool quiet = false;
  const bool help = strip_common_flags(rest, args, &quiet);
  if (action == "train") {
    if (help) {
      std::cout << kUsage << "train options:\n" << tasks::image_option_schema().help();
      return kExitOk;
    }
    tasks::ImageTrainConfig config;
    try {
      config = tasks::parse_image_train_command_line(args);
    } catch (const ConfigError& e) {
      throw UsageError(e.what());
    }
    tasks::TaskOutput output;
    output.progress = progress_output(quiet).stream;
    output.terminal = progress_output(quiet).terminal;
    const tasks::ImageTrainResult result = tasks::run_image_training(config, output);
    std::cout << tasks::format_image_summary(result) << std::flush;
    return kExitOk;
  }
  throw UsageError("unknown action '" + action + "' (expected train or eval)");
}

const bool registered =
    register_command({"image", "train or evaluate the FLT image classifier (Fashion-MNIST, 2-D RPE)", 40, &run_image});

}  // namespace
}  // namespace flt::cli
