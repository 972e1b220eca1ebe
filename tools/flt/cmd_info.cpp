// flt info: prints a model file's metadata (format version, configuration, elements, targets with
// units, normalisation, reference energies, parameter count, training metadata); for a token model
// (flt seq, flt image) its task, architecture, vocabulary or classes instead of the elements.
#include "core/error.hpp"
#include "commands.hpp"
#include "exit_codes.hpp"
#include "options_util.hpp"
#include "models/model_io.hpp"
#include "pipeline/info.hpp"
#include "tasks/token_model_info.hpp"

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

namespace flt::cli {
namespace {

const char* kUsage =
    "Usage: flt info [-m] [MODEL.flt ...]\n\n"
    "Prints each model's metadata (every member's, for an ensemble file); without a model, the\n"
    "default model's (and where it is). Molecule models (flt train) and the models of flt seq and\n"
    "flt image (task, architecture, vocabulary or classes, targets and units) alike.\n";

io::OptionSchema info_schema() {
  io::OptionSchema s;
  s.optional_option("model", "", io::OptionType::list, "model file (.flt), as the arguments; repeatable");
  add_common_options(s);
  return s;
}

int run_info(const std::vector<std::string>& args) {
  static const io::OptionSchema schema = info_schema();
  const std::optional<Arguments> parsed = parse_arguments(schema, args, kUsage);
  if (!parsed) return kExitOk;
  std::vector<std::string> models = parsed->options.has("model") ? parsed->options.get_list("model") : std::vector<std::string>{};
  models.insert(models.end(), parsed->positional.begin(), parsed->positional.end());
  if (models.empty()) models.push_back(pipeline::default_model_path().string());
  for (std::size_t i = 0; i < models.size(); ++i) {
    if (i > 0) std::cout << "\n";
    // Molecule models (flt train) and token models (flt seq, flt image) share the container.
    io::ModelFile file = io::read_model_file(models[i], {});
    const std::optional<models::EnsembleCalibration> calibration = models::read_calibration(file);
    const std::vector<io::ModelFile> members = models::member_files(std::move(file));
    if (members.size() > 1) std::cout << models[i] << ": an ensemble of " << members.size() << " models\n";
    if (calibration) {
      std::cout << "calibrated std (" << calibration->method << ") on " << calibration->records << " molecules of " << calibration->data
                << (calibration->subset.empty() ? std::string() : ", subset " + calibration->subset) << "; factors:";
      for (std::size_t t = 0; t < calibration->targets.size(); ++t) {
        char factor[64];
        std::snprintf(factor, sizeof factor, "%.6g", calibration->factors[t]);
        std::cout << (t == 0 ? " " : ", ") << calibration->targets[t] << " " << factor;
      }
      std::cout << "\n";
    }
    if (members.size() > 1) std::cout << "\n";
    for (std::size_t k = 0; k < members.size(); ++k) {
      if (k > 0) std::cout << "\n";
      if (tasks::is_token_model_file(members[k])) std::cout << tasks::describe_token_model(members[k]);
      else std::cout << pipeline::describe_model(*pipeline::LoadedModel::from_file(members[k]));
    }
  }
  return kExitOk;
}

const bool registered =
    register_command({"info", "print a model file's metadata (configuration, targets, units, ...)", 50,
                      &run_info});

}  // namespace
}  // namespace flt::cli
