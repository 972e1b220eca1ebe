// flt info: prints a model file's metadata (format version, configuration, elements, targets with
// units, normalisation, reference energies, parameter count, training metadata).
#include "core/error.hpp"
#include "commands.hpp"
#include "exit_codes.hpp"
#include "options_util.hpp"
#include "pipeline/info.hpp"

#include <boost/program_options.hpp>

#include <iostream>
#include <string>
#include <vector>

namespace flt::cli {
namespace {

namespace po = boost::program_options;

int run_info(const std::vector<std::string>& args) {
  std::vector<std::string> models;
  po::options_description options(
      "Usage: flt info [-m] [MODEL.flt ...]\n\n"
      "Prints each model's metadata (every member's, for an ensemble file); without a model, the\n"
      "default model's (and where it is).\n\n"
      "Options");
  std::vector<std::string> named;
  options.add_options()
      ("help,h", "show this help")
      ("model,m", po::value(&named), "model file (.flt), as a positional argument; repeatable")
      ("quiet,q", "log errors only")
      ("verbose,v", "log every step");
  const po::variables_map vm = parse_arguments(args, options, "input", po::value(&models));
  models.insert(models.begin(), named.begin(), named.end());
  if (vm.count("help") != 0) {
    std::cout << options << "\n";
    return kExitOk;
  }
  apply_verbosity(vm);
  if (models.empty()) models.push_back(pipeline::default_model_path().string());
  for (std::size_t i = 0; i < models.size(); ++i) {
    if (i > 0) std::cout << "\n";
    const auto members = pipeline::LoadedModel::load_members(models[i]);
    if (members.size() > 1) std::cout << models[i] << ": an ensemble of " << members.size() << " models\n\n";
    for (std::size_t k = 0; k < members.size(); ++k) {
      if (k > 0) std::cout << "\n";
      std::cout << pipeline::describe_model(*members[k]);
    }
  }
  return kExitOk;
}

const bool registered =
    register_command({"info", "print a model file's metadata (configuration, targets, units, ...)", 50,
                      &run_info});

}  // namespace
}  // namespace flt::cli
