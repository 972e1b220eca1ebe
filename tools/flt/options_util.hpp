// Command-line handling shared by the flt subcommands: every subcommand declares its options as an
// io::OptionSchema and reads them through io/options (Boost.Program_options underneath), so each
// accepts --config FILE with the same INI syntax and prints the schema's help for -h/--help.
#pragma once

#include "chem/reader.hpp"
#include "pipeline/eval.hpp"
#include "pipeline/predict.hpp"
#include "io/options.hpp"
#include "io/progress.hpp"

#include <cstddef>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace flt::cli {

// Completes a subcommand's schema: adds the options every subcommand has, in the unnamed section
// (-h/--help, -q/--quiet: errors only, no progress, -v/--verbose: log every step, --config FILE:
// an INI file of the other options, `name = value` before any [section], below the command line),
// and the spellings shared by every subcommand to those of its options that exist: -m/--model,
// -o/--out (also --output), -j/--threads, -f/--format, -t/--targets, --inputs (also --input).
void add_common_options(io::OptionSchema& schema);

// A subcommand's resolved options (defaults < --config file < command line) and its positional
// arguments.
struct Arguments {
  io::ResolvedOptions options;
  std::vector<std::string> positional;
  bool quiet = false;  // -q/--quiet without -v/--verbose: no progress either

  // The positional arguments, or if there are none, the list option `name` (from the file or
  // --name): the command line replaces the file's list.
  std::vector<std::string> positional_or(std::string_view name) const;
  // The option's value, or "" when it is unset.
  std::string string_or_empty(std::string_view name) const;
};

// Parses a subcommand's arguments against `schema` (built with add_common_options) and installs
// the log sink of -q/-v. Returns nullopt after printing `usage` and the schema's help to standard
// output for -h/--help. Throws UsageError for a bad command line or --config file (naming the
// option and where it was given), also for more than `max_positional` positional arguments, and
// flt::IoError when the --config file cannot be read.
std::optional<Arguments> parse_arguments(const io::OptionSchema& schema, const std::vector<std::string>& args,
                                         std::string_view usage,
                                         std::size_t max_positional = std::numeric_limits<std::size_t>::max());

// For flt train, seq train and image train, whose options the libraries parse: copies `raw` into
// `args` without -q/--quiet and -v/--verbose (installing the matching log sink; `quiet`, if given,
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
// --optimize none|mmff, --conformer-attempts N, --smiles-column NAME|N, --pdb-water and
// --pdb-hetero keep|drop|fail, --periodic error|isolated.
void add_conformer_options(io::OptionSchema& schema);
// Copies them into `read`; throws UsageError for a bad value.
void apply_conformer_options(const io::ResolvedOptions& options, chem::ReadOptions& read);

// Conformers of SMILES and 2-D records as the model's training made them (its recorded seed,
// clean-up and attempts; pipeline::trained_conformers), for each of those settings the command
// line and config leave at its default; `seed_option` names the seed option ("seed" or
// "conformer-seed"). Logs what it took.
void apply_trained_conformers(const pipeline::Predictor& predictor, const io::ResolvedOptions& options,
                              const std::string& seed_option, chem::ReadOptions& read);

// The directory an evaluation writes into (--out), created if missing; a training run directory
// (its .flt-run marker) is refused (UsageError): evaluation files would replace the run's own.
void prepare_evaluation_directory(const std::string& dir);

// UsageError when `output` names the same file as one of `inputs` (writing it would replace the
// input being read); "-" and paths that do not exist yet are never the same.
void refuse_output_among_inputs(const std::vector<std::string>& inputs, const std::string& output);

// The option `name` (a molecule format name) as a chem::Format, Format::unknown when unset;
// UsageError for an unknown name.
chem::Format format_option(const io::ResolvedOptions& options, std::string_view name);

// How flt eval reads labelled data: --format, --on-error, --labels, --label-key, --source-units,
// --conformer-seed and the conformer options, --split-file, --subset, --batch-size, --threads.
// flt ensemble --calibrate takes the same, so labels, units, splits and bad records behave
// identically there.
void add_labelled_data_options(io::OptionSchema& schema);
// Fills `eval` from them for `inputs` (its data, split, batch size and threads); UsageError for a
// bad value. Call apply_trained_conformers once the model is loaded.
void apply_labelled_data_options(const Arguments& parsed, const std::vector<std::string>& inputs,
                                 pipeline::EvalOptions& eval);

}  // namespace flt::cli
