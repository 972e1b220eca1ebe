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
#include "seq/task_lm.hpp"
#include "seq/task_property.hpp"
#include "io/ini.hpp"
#include "io/progress.hpp"

#include <omp.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
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
  io::OptionSchema s;
  s.option("task", "eval", io::OptionType::string, "property", "property or lm").choices = {"property", "lm"};
  s.option("model", "eval", io::OptionType::path, std::nullopt, "model file written by flt seq train");
  s.option("index", "eval", io::OptionType::path, "datasets/qm9/qm9_subset_index.csv.gz", "QM9 SMILES index");
  s.option("split-file", "eval", io::OptionType::path, "datasets/qm9/split.csv", "split file (subset,index,id)");
  s.option("subset", "eval", io::OptionType::string, "test", "train, validation or test").choices = {"train", "validation", "test"};
  s.option("batch-size", "eval", io::OptionType::integer, "256", "sequences per batch");
  s.option("threads", "eval", io::OptionType::integer, "0", "OpenMP threads (0: all cores)");
  s.option("out", "eval", io::OptionType::path, std::nullopt, "directory for the test_metrics files").optional = true;
  // The spellings every flt subcommand shares.
  s.add_spellings("model", 'm');
  s.add_spellings("threads", 'j');
  s.add_spellings("out", 'o', {"output"});
  return s;
}

// The task of a `train` command line: --task on the command line, else [data] task of the
// --config file, else of RUN_DIR/config.ini on --resume, else property.
std::string task_of(const std::vector<std::string>& args) {
  std::optional<std::string> task, config, out;
  bool resume = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    auto value = [&](const std::string& name) -> std::optional<std::string> {
      if (args[i] == "--" + name && i + 1 < args.size()) return args[i + 1];
      if (args[i].rfind("--" + name + "=", 0) == 0) return args[i].substr(name.size() + 3);
      return std::nullopt;
    };
    if (auto v = value("task")) task = v;
    if (auto v = value("config")) config = v;
    if (auto v = value("out")) out = v;
    if (auto v = value("output")) out = v;
    if (args[i] == "-o" && i + 1 < args.size()) out = args[i + 1];
    else if (args[i].size() > 2 && args[i].rfind("-o", 0) == 0) out = args[i].substr(2);
    if (args[i] == "--resume" || args[i] == "--resume=true") resume = true;
  }
  if (task) return *task;
  std::optional<std::filesystem::path> file;
  if (config) file = *config;
  else if (resume && out && std::filesystem::exists(std::filesystem::path(*out) / "config.ini")) file = std::filesystem::path(*out) / "config.ini";
  if (file) {
    const io::IniFile ini = io::IniFile::load(*file);
    if (const io::IniEntry* entry = ini.find("data", "task")) return entry->value;
  }
  return "property";
}

int run_seq(const std::vector<std::string>& raw_args) {
  if (raw_args.empty() || raw_args[0] == "-h" || raw_args[0] == "--help") {
    std::cout << kUsage << "train options (--task property):\n" << seq::property_option_schema().help()
              << "\ntrain options (--task lm):\n" << seq::lm_option_schema().help() << "\neval options:\n" << eval_schema().help();
    return raw_args.empty() ? kExitUsage : kExitOk;
  }
  const std::string action = raw_args[0];
  std::vector<std::string> args;
  bool quiet = false;
  const bool help = strip_common_flags(std::vector<std::string>(raw_args.begin() + 1, raw_args.end()), args, &quiet);
  seq::TaskOutput output;
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
                << (task == "lm" ? seq::lm_option_schema() : seq::property_option_schema()).help();
      return kExitOk;
    }
    if (task == "property") {
      static const io::OptionSchema schema = seq::property_option_schema();
      seq::PropertyTrainConfig config;
      try {
        std::vector<std::string> positional;
        config = seq::property_config_from_options(seq::parse_task_command_line(schema, args, &positional));
        if (!positional.empty()) throw ConfigError("unexpected argument '" + positional.front() + "'");
      } catch (const ConfigError& e) {
        throw UsageError(e.what());
      }
      const seq::PropertyTrainResult r = seq::run_property_training(config, output);
      std::cout << seq::format_property_summary(r) << std::flush;
      return kExitOk;
    }
    static const io::OptionSchema schema = seq::lm_option_schema();
    seq::LmTrainConfig config;
    try {
      std::vector<std::string> positional;
      config = seq::lm_config_from_options(seq::parse_task_command_line(schema, args, &positional));
      if (!positional.empty()) throw ConfigError("unexpected argument '" + positional.front() + "'");
    } catch (const ConfigError& e) {
      throw UsageError(e.what());
    }
    const seq::LmTrainResult r = seq::run_lm_training(config, output);
    std::cout << seq::format_lm_summary(r) << std::flush;
    return kExitOk;
  }
  if (action == "eval") {
    static const io::OptionSchema schema = eval_schema();
    if (help) {
      std::cout << kUsage << "eval options:\n" << schema.help();
      return kExitOk;
    }
    io::ResolvedOptions o;
    try {
      const io::CommandLine cl = io::parse_command_line(schema, args);
      if (!cl.positional.empty()) throw ConfigError("unexpected argument '" + cl.positional.front() + "'");
      o = io::resolve_options(schema, nullptr, cl.options);
      if (o.get_int("batch-size") < 1 || o.get_int("threads") < 0) throw ConfigError("--batch-size must be >= 1, --threads >= 0");
    } catch (const ConfigError& e) {
      throw UsageError(e.what());
    }
    if (o.get_int("threads") > 0) omp_set_num_threads(static_cast<int>(o.get_int("threads")));
    const auto batch = static_cast<std::size_t>(o.get_int("batch-size"));
    EvalProgressBar progress(progress_output(quiet));
    if (o.get_string("task") == "property") {
      const seq::PropertyEvaluation e = seq::evaluate_property_model(o.get_string("model"), o.get_string("index"),
                                                                     o.get_string("split-file"), o.get_string("subset"), batch,
                                                                     progress.callback());
      progress.finish();
      if (o.has("out")) {
        std::filesystem::create_directories(o.get_string("out"));
        seq::write_property_evaluation(o.get_string("out"), e);
      }
      std::cout << seq::format_property_evaluation(e) << std::flush;
    } else {
      const seq::LmEvaluation e = seq::evaluate_lm_model(o.get_string("model"), o.get_string("index"), o.get_string("split-file"),
                                                         o.get_string("subset"), batch, progress.callback());
      progress.finish();
      if (o.has("out")) {
        std::filesystem::create_directories(o.get_string("out"));
        seq::write_lm_evaluation(o.get_string("out"), e);
      }
      std::cout << seq::format_lm_evaluation(e) << std::flush;
    }
    return kExitOk;
  }
  throw UsageError("unknown action '" + action + "' (expected train or eval)");
}

const bool registered =
    register_command({"seq", "train or evaluate FLT sequence models on SMILES (property, language model)", 41, &run_seq});

}  // namespace
}  // namespace flt::cli
