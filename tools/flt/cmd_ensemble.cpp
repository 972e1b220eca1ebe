// flt ensemble: packs trained models into one ensemble file (format "flt-ensemble",
// docs/model-format.md) that predict, eval, md, info and the library load as the members' mean.
#include "core/error.hpp"
#include "commands.hpp"
#include "exit_codes.hpp"
#include "options_util.hpp"
#include "pipeline/predict.hpp"

#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

namespace flt::cli {
namespace {

const char* kUsage =
    "Usage: flt ensemble MODEL.flt MODEL.flt [...] -o ENSEMBLE.flt\n\n"
    "Packs trained models (ensemble files among them are flattened) into one ensemble file. Every\n"
    "command that takes a model loads it as the members' mean, with their spread as the\n"
    "uncertainty, exactly as it loads the same files given one by one. The members must predict\n"
    "the same targets in the same units.\n";

io::OptionSchema ensemble_schema() {
  io::OptionSchema s;
  s.optional_option("model", "", io::OptionType::list, "model files to pack, as the arguments (which replace these)");
  s.optional_option("out", "", io::OptionType::path, "ensemble file to write");
  add_common_options(s);
  return s;
}

int run_ensemble(const std::vector<std::string>& args) {
  static const io::OptionSchema schema = ensemble_schema();
  const std::optional<Arguments> parsed = parse_arguments(schema, args, kUsage);
  if (!parsed) return kExitOk;
  const std::vector<std::string> inputs = parsed->positional_or("model");
  const std::string output = parsed->string_or_empty("out");
  if (output.empty()) throw UsageError("give the ensemble file to write with -o");
  if (inputs.empty()) throw UsageError("give the model files to pack");
  const std::vector<std::filesystem::path> paths(inputs.begin(), inputs.end());
  const std::size_t members = pipeline::save_ensemble(paths, output);
  if (!parsed->quiet) std::cerr << "flt ensemble: wrote " << output << " (" << members << " models)\n";
  return kExitOk;
}

const bool registered = register_command(
    {"ensemble", "pack trained models into one ensemble file (predictions: the members' mean)", 52,
     &run_ensemble});

}  // namespace
}  // namespace flt::cli
