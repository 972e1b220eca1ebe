// flt ensemble: packs trained models into one ensemble file (format "flt-ensemble",
// docs/model-format.md) that predict, eval, md, info and the library load as the members' mean.
#include "core/error.hpp"
#include "commands.hpp"
#include "exit_codes.hpp"
#include "options_util.hpp"
#include "pipeline/predict.hpp"

#include <boost/program_options.hpp>

#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

namespace flt::cli {
namespace {

namespace po = boost::program_options;

int run_ensemble(const std::vector<std::string>& args) {
  std::vector<std::string> inputs;
  std::string output;
  po::options_description options(
      "Usage: flt ensemble MODEL.flt MODEL.flt [...] -o ENSEMBLE.flt\n\n"
      "Packs trained models (ensemble files among them are flattened) into one ensemble file. Every\n"
      "command that takes a model loads it as the members' mean, with their spread as the\n"
      "uncertainty, exactly as it loads the same files given one by one. The members must predict\n"
      "the same targets in the same units.\n\n"
      "Options");
  options.add_options()
      ("help,h", "show this help")
      ("out,output,o", po::value(&output), "ensemble file to write (also spelled --output)")
      ("quiet,q", "log errors only")
      ("verbose,v", "log every step");
  const po::variables_map vm = parse_arguments(args, options, "input", po::value(&inputs));
  if (vm.count("help") != 0) {
    std::cout << options << "\n";
    return kExitOk;
  }
  apply_verbosity(vm);
  if (output.empty()) throw UsageError("give the ensemble file to write with -o");
  if (inputs.empty()) throw UsageError("give the model files to pack");
  const std::vector<std::filesystem::path> paths(inputs.begin(), inputs.end());
  const std::size_t members = pipeline::save_ensemble(paths, output);
  if (!is_quiet(vm)) std::cerr << "flt ensemble: wrote " << output << " (" << members << " models)\n";
  return kExitOk;
}

const bool registered = register_command(
    {"ensemble", "pack trained models into one ensemble file (predictions: the members' mean)", 52,
     &run_ensemble});

}  // namespace
}  // namespace flt::cli
