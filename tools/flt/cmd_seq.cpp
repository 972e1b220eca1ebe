// flt seq: trains and evaluates the sequence models (token embedding + FLT encoder with 1-D RPE)
// on the SMILES of the bundled QM9 index (docs/sequence-image.md): --task property
// (regression of the 3-D model's targets) or --task lm (causal character language model, bits per
// character). Options come from the command line and an INI file (--config), the command line
// overriding; progress goes to stderr, the summary to stdout.
#include "core/error.hpp"
#include "core/log.hpp"
#include "commands.hpp"
#include "exit_codes.hpp"
#include "options_util.hpp"
#include "tasks/task_lm.hpp"
#include "tasks/task_property.hpp"
#include "io/ini.hpp"
#include "io/model_file.hpp"
#include "io/progress.hpp"

#include <omp.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace flt::cli {
namespace {

const char* kUsage =
    "Usage: flt seq train --task property|lm --out RUN_DIR [options]\n"
    "       flt seq train --config FILE [options]\n"
    "       flt seq train --resume --out RUN_DIR\n"
    "       flt seq eval --task property|lm --model RUN_DIR/model.flt [--subset test] [--out DIR]\n\n"
    "Trains a sequence FLT model (FLT attention with a 1-D RPE, or the performer / toeplitz\n"
    "baselines with --attention) on the SMILES of the QM9 index with the 3-D model's split:\n"
    "  --task property  regression of QM9 targets (same targets, units and split as flt train)\n"
    "  --task lm        causal character-level language model (bits per character)\n"
    "Every option may also be given in an INI file read with --config (sections [data], [train],\n"
    "[model], [run]); the command line overrides the file. RUN_DIR/config.ini holds the resolved\n"
    "configuration. Run from the repository root (default data paths are relative to it).\n"
    "Also: -h/--help, -q/--quiet (errors only, no progress), -v/--verbose (log every step).\n"
    "Exit status: 0 success, 1 error, 2 usage error.\n\n";

io::OptionSchema eval_schema() {
  using io::OptionType;
  io::OptionSchema s;
  s.option("task", "", OptionType::string, "property", "property or lm (default: the model's own task)").choices = {
      "property", "lm"};
  s.option("model", "", OptionType::path, std::nullopt, "model file written by flt seq train");
  s.option("index", "", OptionType::path, "datasets/qm9/qm9_subset_index.csv.gz", "QM9 SMILES index");
  s.option("split-file", "", OptionType::path, "datasets/qm9/split.csv", "split file (subset,index,id)");
  s.option("subset", "", OptionType::string, "test", "train, validation or test").choices = {"train", "validation", "test"};
  s.option("batch-size", "", OptionType::integer, "256", "sequences per batch");
  s.option("threads", "", OptionType::integer, "0", "OpenMP threads (0: all cores)");
  s.optional_option("out", "", OptionType::path, "directory for the test_metrics files");
  add_common_options(s);
  return s;
}

// The options of both tasks, to read --task, --config, --out and --resume before the task's own
// schema reads the rest.
const io::OptionSchema& both_tasks_schema() {
  static const io::OptionSchema schema = [] {
    io::OptionSchema s = tasks::property_option_schema();
    const io::OptionSchema lm = tasks::lm_option_schema();
    for (const io::OptionSpec& o : lm.options())
      if (s.find(o.name) == nullptr) s.add(o);
    return s;
  }();
  return schema;
}

// The task of a `train` command line: --task on the command line, else [data] task of the
// --config file, else of RUN_DIR/config.ini on --resume, else property.
std::string task_of(const std::vector<std::string>& args) {
  const io::CommandLine cl = io::parse_command_line(both_tasks_schema(), args);
  const std::map<std::string, std::string> given(cl.options.begin(), cl.options.end());
  if (given.contains("task")) return given.at("task");
  std::optional<std::filesystem::path> file;
  if (given.contains("config")) file = given.at("config");
  else if (given.contains("resume") && io::parse_bool_value(given.at("resume"), "--resume") && given.contains("out"))
    file = std::filesystem::path(given.at("out")) / "config.ini";
  if (file && (given.contains("config") || std::filesystem::exists(*file))) {
    const io::IniFile ini = io::IniFile::load(*file);
    if (const io::IniEntry* entry = ini.find("data", "task")) return entry->value;
  }
  return "property";
}

int run_seq_eval(const std::vector<std::string>& args) {
  static const io::OptionSchema schema = eval_schema();
  const std::optional<Arguments> parsed = parse_arguments(schema, args, kUsage, 0);
  if (!parsed) return kExitOk;
  const io::ResolvedOptions& o = parsed->options;
  if (o.get_int("batch-size") < 1 || o.get_int("threads") < 0) throw UsageError("--batch-size must be >= 1, --threads >= 0");
  if (o.get_int("threads") > 0) omp_set_num_threads(static_cast<int>(o.get_int("threads")));
  const auto batch = static_cast<std::size_t>(o.get_int("batch-size"));
  EvalProgressBar progress(progress_output(parsed->quiet));
  // Without --task: the task the model was trained for (its task.kind).
  std::string task = o.get_string("task");
  if (o.source("task").kind == io::OptionSource::Kind::default_value) {
    const io::ModelFile file = io::read_model_file(o.get_string("model"));
    if (file.has_metadata("task.kind") && file.metadata("task.kind") == "lm") task = "lm";
  }
  if (task == "property") {
    const tasks::PropertyEvaluation e = tasks::evaluate_property_model(o.get_string("model"), o.get_string("index"),
                                                                   o.get_string("split-file"), o.get_string("subset"), batch,
                                                                   progress.callback());
    progress.finish();
    if (o.has("out")) {
      prepare_evaluation_directory(o.get_string("out"));
      tasks::write_property_evaluation(o.get_string("out"), e);
    }
    std::cout << tasks::format_property_evaluation(e) << std::flush;
  } else {
    const tasks::LmEvaluation e = tasks::evaluate_lm_model(o.get_string("model"), o.get_string("index"), o.get_string("split-file"),
                                                       o.get_string("subset"), batch, progress.callback());
    progress.finish();
    if (o.has("out")) {
      prepare_evaluation_directory(o.get_string("out"));
      tasks::write_lm_evaluation(o.get_string("out"), e);
    }
    std::cout << tasks::format_lm_evaluation(e) << std::flush;
  }
  return kExitOk;
}

int run_seq(const std::vector<std::string>& raw_args) {
  if (raw_args.empty() || raw_args[0] == "-h" || raw_args[0] == "--help") {
    std::cout << kUsage << "train options (--task property):\n" << tasks::property_option_schema().help()
              << "\ntrain options (--task lm):\n" << tasks::lm_option_schema().help() << "\neval options:\n" << eval_schema().help();
    return raw_args.empty() ? kExitUsage : kExitOk;
  }
  const std::string action = raw_args[0];
  const std::vector<std::string> rest(raw_args.begin() + 1, raw_args.end());
  if (action == "eval") return run_seq_eval(rest);
  std::vector<std::string> args;
  bool quiet = false;
  const bool help = strip_common_flags(rest, args, &quiet);
  tasks::TaskOutput output;
  output.progress = progress_output(quiet).stream;
  output.terminal = progress_output(quiet).terminal;
  if (action == "train") {
    std::string task;
    try {
      task = task_of(args);
    } catch (const ConfigError& e) {
      throw UsageError(e.what());
    }
    if (task != "property" && task != "lm") throw UsageError("--task '" + task + "' (expected property or lm)");
    if (help) {
      std::cout << kUsage << "train options (--task " << task << "):\n"
                << (task == "lm" ? tasks::lm_option_schema() : tasks::property_option_schema()).help();
      return kExitOk;
    }
    if (task == "property") {
      static const io::OptionSchema schema = tasks::property_option_schema();
      tasks::PropertyTrainConfig config;
      try {
        std::vector<std::string> positional;
        config = tasks::property_config_from_options(tasks::parse_task_command_line(schema, args, &positional));
        if (!positional.empty()) throw ConfigError("unexpected argument '" + positional.front() + "'");
      } catch (const ConfigError& e) {
        throw UsageError(e.what());
      }
      const tasks::PropertyTrainResult r = tasks::run_property_training(config, output);
      std::cout << tasks::format_property_summary(r) << std::flush;
      return kExitOk;
    }
    static const io::OptionSchema schema = tasks::lm_option_schema();
    tasks::LmTrainConfig config;
    try {
      std::vector<std::string> positional;
      config = tasks::lm_config_from_options(tasks::parse_task_command_line(schema, args, &positional));
      if (!positional.empty()) throw ConfigError("unexpected argument '" + positional.front() + "'");
    } catch (const ConfigError& e) {
      throw UsageError(e.what());
    }
    const tasks::LmTrainResult r = tasks::run_lm_training(config, output);
    std::cout << tasks::format_lm_summary(r) << std::flush;
    return kExitOk;
  }
  throw UsageError("unknown action '" + action + "' (expected train or eval)");
}

const bool registered =
    register_command({"seq", "train or evaluate FLT sequence models on SMILES (property, language model)", 41, &run_seq});

}  // namespace
}  // namespace flt::cli
