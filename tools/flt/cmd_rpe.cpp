// flt rpe: writes a model's learned RPE functions f(distance) per block and head as CSV and an SVG
// plot (see src/pipeline/rpe_export.hpp).
#include "core/error.hpp"
#include "commands.hpp"
#include "exit_codes.hpp"
#include "options_util.hpp"
#include "pipeline/rpe_export.hpp"

#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

namespace flt::cli {
namespace {

const char* kUsage =
    "Usage: flt rpe [[-m] MODEL.flt] [-o OUT.csv] [--plot OUT.svg] [options]\n\n"
    "Samples the learned relative positional encoding f(distance) of every block and head on\n"
    "[0, --max-distance] Angstrom and writes it as CSV (distance [Angstrom], then one column\n"
    "block<b>.head<h> per block and head; standard output without -o or with -o -) and,\n"
    "with --plot, as an SVG with one panel per block. Without MODEL: the default model.\n";

io::OptionSchema rpe_schema() {
  using io::OptionType;
  io::OptionSchema s;
  s.optional_option("model", "", OptionType::path, "model file (.flt), or as the argument (default: the default model)");
  s.option("out", "", OptionType::path, "-", "CSV output file ('-': standard output)");
  s.optional_option("plot", "", OptionType::path, "SVG plot output file");
  s.option("max-distance", "", OptionType::real, "10", "largest distance in Angstrom");
  s.option("points", "", OptionType::integer, "200", "number of distances, 0 to max-distance inclusive");
  s.option("member", "", OptionType::integer, "1", "for an ensemble file: which member, 1 to M");
  add_common_options(s);
  return s;
}

int run_rpe(const std::vector<std::string>& args) {
  static const io::OptionSchema schema = rpe_schema();
  const std::optional<Arguments> parsed = parse_arguments(schema, args, kUsage, 1);
  if (!parsed) return kExitOk;
  const io::ResolvedOptions& o = parsed->options;
  if (o.source("model").kind == io::OptionSource::Kind::command_line && !parsed->positional.empty())
    throw UsageError("give the model once: as -m MODEL or as the argument");
  std::string model = parsed->positional.empty() ? parsed->string_or_empty("model") : parsed->positional.front();
  const std::string output = o.get_string("out"), plot = parsed->string_or_empty("plot");
  const double max_distance = o.get_real("max-distance");
  const auto points = o.get_int("points"), member = o.get_int("member");
  if (!(max_distance > 0)) throw UsageError("--max-distance must be positive");
  if (points < 2 || points > 10000000) throw UsageError("--points must be in 2..10000000");
  if (model.empty()) model = pipeline::default_model_path().string();
  const auto members = pipeline::LoadedModel::load_members(model);
  if (member < 1 || static_cast<std::size_t>(member) > members.size())
    throw UsageError("--member " + std::to_string(member) + ": " + model + " holds " +
                     std::to_string(members.size()) + (members.size() == 1 ? " model" : " models"));
  const auto& loaded = members[static_cast<std::size_t>(member - 1)];
  const pipeline::RpeTable table = pipeline::rpe_table(*loaded, max_distance, static_cast<int>(points));
  if (output == "-") {
    std::cout << pipeline::rpe_csv_text(table);
  } else {
    pipeline::write_rpe_csv(output, table);
  }
  if (!plot.empty())
    pipeline::write_rpe_svg(plot, table, std::filesystem::path(model).filename().string());
  if (output != "-" && !parsed->quiet)
    std::cerr << "flt rpe: wrote " << table.curves.size() << " functions (" << table.distances.size()
              << " distances) to " << output << (plot.empty() ? "" : " and " + plot) << "\n";
  return kExitOk;
}

const bool registered = register_command(
    {"rpe", "write a model's learned RPE functions f(distance) per layer and head (CSV, SVG)", 55,
     &run_rpe});

}  // namespace
}  // namespace flt::cli
