#include "options_util.hpp"

#include "core/error.hpp"
#include "core/log.hpp"
#include "core/text.hpp"
#include "commands.hpp"
#include "io/progress.hpp"

#include <fstream>
#include <iostream>
#include <sstream>

namespace flt::cli {

namespace po = boost::program_options;

po::variables_map parse_arguments(const std::vector<std::string>& args,
                                  const po::options_description& visible,
                                  const char* positional_name,
                                  const po::value_semantic* positional_value, int max_positional) {
  po::options_description hidden;
  hidden.add_options()(positional_name, positional_value);
  po::options_description all;
  all.add(visible).add(hidden);
  po::positional_options_description positional;
  positional.add(positional_name, max_positional);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(all).positional(positional).run(), vm);
  if (visible.find_nothrow("config", false) != nullptr && vm.count("config") != 0) {
    const std::string path = vm["config"].as<std::string>();
    std::ifstream file(path);
    if (!file) throw IoError(path, "cannot open the --config file");
    // Values already given on the command line win: store() keeps the first value of a name.
    try {
      po::store(po::parse_config_file(file, all), vm);
    } catch (const po::error& e) {
      throw po::error(path + ": " + e.what());
    }
  }
  po::notify(vm);
  return vm;
}

void apply_verbosity(const po::variables_map& vm) {
  if (vm.count("verbose") != 0) {
    set_log_sink(stderr_log_sink(LogLevel::info));
  } else if (vm.count("quiet") != 0) {
    set_log_sink(stderr_log_sink(LogLevel::error));
  }
}

bool is_quiet(const po::variables_map& vm) { return vm.count("quiet") != 0 && vm.count("verbose") == 0; }

io::ProgressOutput progress_output(bool quiet) {
  if (quiet) return {};
  return {&std::cerr, io::is_terminal(stderr)};
}

bool strip_common_flags(const std::vector<std::string>& raw, std::vector<std::string>& args, bool* quiet) {
  for (const auto& a : raw) {
    if (a == "-h" || a == "--help") return true;
    if (a == "-q" || a == "--quiet") {
      set_log_sink(stderr_log_sink(LogLevel::error));
      if (quiet != nullptr) *quiet = true;
      continue;
    }
    if (a == "-v" || a == "--verbose") {
      set_log_sink(stderr_log_sink(LogLevel::info));
      continue;
    }
    args.push_back(a);
  }
  return false;
}

void add_conformer_options(po::options_description& options, ConformerFlags& flags) {
  options.add_options()
      ("optimize", po::value(&flags.optimize), "clean-up of generated conformers: none (default) or mmff (MMFF94)")
      ("conformer-attempts", po::value(&flags.attempts), "ETKDG attempts per try, before and after the random-coordinate fallback (default 0: RDKit's bound, 10 x atoms)")
      ("smiles-column", po::value(&flags.smiles_column), "CSV input: the column holding the SMILES (default: the column named smiles)")
      ("pdb-water", po::value(&flags.pdb_water), "PDB input: waters keep, drop (default) or fail (the record is bad)")
      ("pdb-hetero", po::value(&flags.pdb_hetero), "PDB input: other HETATM groups (ligands, ions) keep (default), drop or fail");
}

void apply_conformer_options(const ConformerFlags& flags, chem::ReadOptions& read) {
  try {
    read.optimize = chem::optimize_from_name(flags.optimize);
  } catch (const InvalidArgument& e) {
    throw UsageError(std::string("--optimize: ") + e.what());
  }
  if (flags.attempts < 0) throw UsageError("--conformer-attempts must be >= 0");
  read.conformer_attempts = flags.attempts;
  read.smiles_column = flags.smiles_column;
  try {
    read.pdb_water = chem::pdb_part_from_name(flags.pdb_water);
  } catch (const InvalidArgument& e) {
    throw UsageError(std::string("--pdb-water: ") + e.what());
  }
  try {
    read.pdb_hetero = chem::pdb_part_from_name(flags.pdb_hetero);
  } catch (const InvalidArgument& e) {
    throw UsageError(std::string("--pdb-hetero: ") + e.what());
  }
}

}  // namespace flt::cli
