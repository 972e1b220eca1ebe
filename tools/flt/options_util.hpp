// Command-line parsing shared by the flt subcommands (Boost.Program_options stays in tools/).
#pragma once

#include "chem/reader.hpp"
#include "core/text.hpp"
#include "io/progress.hpp"

#include <boost/program_options.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace flt::cli {

// Parses `args` against the documented `visible` options plus one hidden option named
// `positional_name` that receives the positional arguments (at most `max_positional`, -1: all)
// through `positional_value` (e.g. po::value(&inputs); ownership passes to the parser).
// If `visible` has an option "config" and it is given, that file is read too ("name = value"
// lines, '#' comments, a repeated name for repeatable options, the positional arguments under
// `positional_name`); the command line overrides it.
// Throws boost::program_options::error on a bad command line (main() turns it into exit 2) and
// flt::IoError when the --config file cannot be read.
boost::program_options::variables_map parse_arguments(
    const std::vector<std::string>& args, const boost::program_options::options_description& visible,
    const char* positional_name, const boost::program_options::value_semantic* positional_value,
    int max_positional = -1);

// Installs the stderr log sink chosen by -v/--verbose (info) or -q/--quiet (errors only);
// leaves the default (warnings) otherwise.
void apply_verbosity(const boost::program_options::variables_map& vm);

// True if -q/--quiet was given (progress output is then off as well).
bool is_quiet(const boost::program_options::variables_map& vm);

// For the subcommands whose options come from a io::OptionSchema rather than
// Program_options (flt train, image, seq): copies `raw` into `args` without -q/--quiet and
// -v/--verbose (installing the matching log sink, as apply_verbosity does; `quiet`, if given,
// is set when -q/--quiet was seen) and returns true as soon as -h/--help is seen.
bool strip_common_flags(const std::vector<std::string>& raw, std::vector<std::string>& args, bool* quiet = nullptr);

// Where a subcommand's progress goes: stderr (a redrawn bar on a terminal, plain lines
// otherwise), or nowhere with -q/--quiet. Never standard output.
io::ProgressOutput progress_output(bool quiet);

// A progress bar for an evaluation loop ("evaluating" N examples) on `output` (silent when its
// stream is null), as a tasks::EvalProgress-style callback; finish() completes the line.
class EvalProgressBar {
 public:
  explicit EvalProgressBar(const io::ProgressOutput& output) : output_(output) {}
  std::function<void(std::size_t, std::size_t)> callback() {
    return [this](std::size_t done, std::size_t total) {
      if (output_.stream == nullptr) return;
      if (!bar_) bar_ = std::make_unique<io::ProgressBar>(*output_.stream, output_.terminal, "evaluating", total);
      bar_->update(done);
    };
  }
  void finish() {
    if (bar_) bar_->finish();
  }

 private:
  io::ProgressOutput output_;
  std::unique_ptr<io::ProgressBar> bar_;
};

// Conformer generation, SMILES and PDB input options shared by flt predict and flt convert:
// --optimize none|mmff, --conformer-attempts N, --smiles-column NAME, --pdb-water and
// --pdb-hetero keep|drop|fail.
struct ConformerFlags {
  std::string optimize = "none";
  int attempts = 0;
  std::string smiles_column;
  // PDB input: --pdb-water, --pdb-hetero (keep|drop|fail).
  std::string pdb_water = "drop";
  std::string pdb_hetero = "keep";
};
void add_conformer_options(boost::program_options::options_description& options,
                           ConformerFlags& flags);
// Copies the flags into `read`; throws UsageError for a bad value.
void apply_conformer_options(const ConformerFlags& flags, chem::ReadOptions& read);

}  // namespace flt::cli
