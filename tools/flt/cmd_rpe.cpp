// flt rpe: writes a model's learned RPE functions f(distance) per block and head as CSV and an SVG
// plot (see src/pipeline/rpe_export.hpp).
#include "core/error.hpp"
#include "commands.hpp"
#include "exit_codes.hpp"
#include "options_util.hpp"
#include "pipeline/rpe_export.hpp"

#include <boost/program_options.hpp>

#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

namespace flt::cli {
namespace {

namespace po = boost::program_options;

int run_rpe(const std::vector<std::string>& args) {
  std::string model, named_model, output, plot;
  double max_distance = 10.0;
  int points = 200;
  int member = 1;
  po::options_description options(
      "Usage: flt rpe [[-m] MODEL.flt] [-o OUT.csv] [--plot OUT.svg] [options]\n\n"
      "Samples the learned relative positional encoding f(distance) of every block and head on\n"
      "[0, --max-distance] Angstrom and writes it as CSV (distance [Angstrom], then one column\n"
      "block<b>.head<h> per block and head; standard output without -o or with -o -) and,\n"
      "with --plot, as an SVG with one panel per block. Without MODEL: the default model.\n\n"
      "Options");
  options.add_options()
      ("help,h", "show this help")
      ("model,m", po::value(&named_model), "model file (.flt), or as the positional argument (default: the default model)")
      ("out,output,o", po::value(&output), "CSV output file ('-': standard output, the default); also spelled --output")
      ("plot", po::value(&plot), "SVG plot output file")
      ("max-distance", po::value(&max_distance), "largest distance in Angstrom (default 10)")
      ("points", po::value(&points), "number of distances, 0 to max-distance inclusive (default 200)")
      ("member", po::value(&member), "for an ensemble file: which member, 1 to M (default 1)")
      ("quiet,q", "log errors only")
      ("verbose,v", "log every step");
  const po::variables_map vm = parse_arguments(args, options, "input", po::value(&model), 1);
  if (vm.count("help") != 0) {
    std::cout << options << "\n";
    return kExitOk;
  }
  apply_verbosity(vm);
  if (!named_model.empty()) {
    if (!model.empty()) throw UsageError("give the model once: as -m MODEL or as the argument");
    model = named_model;
  }
  if (!(max_distance > 0)) throw UsageError("--max-distance must be positive");
  if (points < 2) throw UsageError("--points must be at least 2");
  if (model.empty()) model = pipeline::default_model_path().string();
  const auto members = pipeline::LoadedModel::load_members(model);
  if (member < 1 || static_cast<std::size_t>(member) > members.size())
    throw UsageError("--member " + std::to_string(member) + ": " + model + " holds " +
                     std::to_string(members.size()) + (members.size() == 1 ? " model" : " models"));
  const auto& loaded = members[static_cast<std::size_t>(member - 1)];
  const pipeline::RpeTable table = pipeline::rpe_table(*loaded, max_distance, points);
  if (output.empty() || output == "-") {
    std::cout << pipeline::rpe_csv_text(table);
  } else {
    pipeline::write_rpe_csv(output, table);
  }
  if (!plot.empty())
    pipeline::write_rpe_svg(plot, table, std::filesystem::path(model).filename().string());
  if (!output.empty() && output != "-" && !is_quiet(vm))
    std::cerr << "flt rpe: wrote " << table.curves.size() << " functions (" << table.distances.size()
              << " distances) to " << output << (plot.empty() ? "" : " and " + plot) << "\n";
  return kExitOk;
}

const bool registered = register_command(
    {"rpe", "write a model's learned RPE functions f(distance) per layer and head (CSV, SVG)", 55,
     &run_rpe});

}  // namespace
}  // namespace flt::cli
