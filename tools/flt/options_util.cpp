#include "options_util.hpp"

#include "core/error.hpp"
#include "core/log.hpp"
#include "commands.hpp"
#include "io/progress.hpp"
#include "train/run_dir.hpp"

#include <filesystem>
#include <iostream>

namespace flt::cli {

void add_common_options(io::OptionSchema& schema) {
  schema.option("help", "", io::OptionType::boolean, "false", "show this help").persist = false;
  schema.option("quiet", "", io::OptionType::boolean, "false", "log errors only, no progress");
  schema.option("verbose", "", io::OptionType::boolean, "false", "log every step");
  io::OptionSpec& config = schema.option("config", "", io::OptionType::path, std::nullopt,
                                         "INI file of these options, 'name = value' per line (a list option may "
                                         "repeat its name); the command line overrides it");
  config.optional = true;
  config.persist = false;
  schema.add_spellings("help", 'h');
  schema.add_spellings("quiet", 'q');
  schema.add_spellings("verbose", 'v');
  const struct {
    const char* name;
    char short_name;
    std::vector<std::string> aliases;
  } shared[] = {{"model", 'm', {}}, {"out", 'o', {"output"}}, {"threads", 'j', {}},
                {"format", 'f', {}}, {"targets", 't', {}},   {"inputs", 0, {"input"}}};
  for (const auto& s : shared)
    if (schema.find(s.name) != nullptr) schema.add_spellings(s.name, s.short_name, s.aliases);
}

std::vector<std::string> Arguments::positional_or(std::string_view name) const {
  if (!positional.empty() || !options.has(name)) return positional;
  return options.get_list(name);
}

std::string Arguments::string_or_empty(std::string_view name) const {
  return options.has(name) ? options.get_string(name) : std::string();
}

std::optional<Arguments> parse_arguments(const io::OptionSchema& schema, const std::vector<std::string>& args,
                                         std::string_view usage, std::size_t max_positional) {
  Arguments a;
  try {
    const io::CommandLine given = io::parse_command_line(schema, args);
    for (const auto& [name, value] : given.options)
      if (name == "help" && io::parse_bool_value(value, "--help")) {
        std::cout << usage << "\n" << schema.help();
        return std::nullopt;
      }
    a.options = io::resolve_command_line(schema, args, &a.positional);
  } catch (const ConfigError& e) {
    throw UsageError(e.what());
  }
  if (a.positional.size() > max_positional) throw UsageError("unexpected argument '" + a.positional[max_positional] + "'");
  const bool verbose = a.options.get_bool("verbose");
  a.quiet = a.options.get_bool("quiet") && !verbose;
  if (verbose) set_log_sink(stderr_log_sink(LogLevel::info));
  else if (a.quiet) set_log_sink(stderr_log_sink(LogLevel::error));
  return a;
}

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

void add_conformer_options(io::OptionSchema& s) {
  s.option("optimize", "", io::OptionType::string, "none", "clean-up of generated conformers: none or mmff (MMFF94)");
  s.option("conformer-attempts", "", io::OptionType::integer, "0",
           "ETKDG attempts per try, before and after the random-coordinate fallback (0: RDKit's bound, 10 x atoms)");
  s.option("smiles-column", "", io::OptionType::string, "", "SMILES input: the column holding the SMILES, by name (CSV, or a SMILES file with a header line) or by number in a SMILES file without one (default: the column named smiles; field 1)");
  s.option("pdb-water", "", io::OptionType::string, "drop", "PDB input: waters keep, drop or fail (the record is bad)").choices = {
      "keep", "drop", "fail"};
  s.option("pdb-hetero", "", io::OptionType::string, "keep", "PDB input: other HETATM groups (ligands, ions) keep, drop or fail")
      .choices = {"keep", "drop", "fail"};
  s.option("periodic", "", io::OptionType::string, "error",
           "extended XYZ records with periodic boundary conditions (a T in pbc, or a Lattice without pbc): error (the record is bad) or isolated (read as an isolated structure, the cell ignored)")
      .choices = {"error", "isolated"};
}

void apply_trained_conformers(const pipeline::Predictor& predictor, const io::ResolvedOptions& o,
                              const std::string& seed_option, chem::ReadOptions& read) {
  const auto trained = pipeline::trained_conformers(predictor);
  if (!trained) return;
  const auto unset = [&](const char* name) { return o.source(name).kind == io::OptionSource::Kind::default_value; };
  if (unset(seed_option.c_str())) read.seed = trained->seed;
  if (unset("optimize")) read.optimize = trained->optimize;
  if (unset("conformer-attempts")) read.conformer_attempts = trained->attempts;
  log_info("conformers of SMILES and 2-D records: seed ", read.seed, ", clean-up ",
           read.optimize == chem::Optimize::mmff ? "mmff" : "none", ", attempts ", read.conformer_attempts,
           " (the model's training used seed ", trained->seed, ", ",
           trained->optimize == chem::Optimize::mmff ? "mmff" : "none", ", ", trained->attempts, ")");
}

void prepare_evaluation_directory(const std::string& dir) {
  if (train::is_run_directory(dir))
    throw UsageError("--out " + dir + " is a training run directory: the evaluation's files would replace the run's "
                     "results; write them to another directory");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw IoError(dir, "cannot create the directory: " + ec.message());
}

void refuse_output_among_inputs(const std::vector<std::string>& inputs, const std::string& output) {
  if (output.empty() || output == "-") return;
  for (const std::string& input : inputs) {
    if (input == "-") continue;
    std::error_code ec;
    if (std::filesystem::equivalent(input, output, ec) && !ec)
      throw UsageError("the output " + output + " is also an input (" + input +
                       "): writing it would replace what is being read; write to another file");
  }
}

void apply_conformer_options(const io::ResolvedOptions& o, chem::ReadOptions& read) {
  try {
    read.optimize = chem::optimize_from_name(o.get_string("optimize"));
  } catch (const InvalidArgument& e) {
    throw UsageError(std::string("--optimize: ") + e.what());
  }
  const auto attempts = o.get_int("conformer-attempts");
  if (attempts < 0 || attempts > 1000000) throw UsageError("--conformer-attempts must be in 0..1000000");
  read.conformer_attempts = static_cast<int>(attempts);
  read.smiles_column = o.get_string("smiles-column");
  read.pdb_water = chem::pdb_part_from_name(o.get_string("pdb-water"));
  read.pdb_hetero = chem::pdb_part_from_name(o.get_string("pdb-hetero"));
  read.periodic = chem::periodic_from_name(o.get_string("periodic"));
}

chem::Format format_option(const io::ResolvedOptions& o, std::string_view name) {
  if (!o.has(name)) return chem::Format::unknown;
  try {
    return chem::format_from_name(o.get_string(name));
  } catch (const InvalidArgument& e) {
    throw UsageError("--" + std::string(name) + ": " + e.what());
  }
}

void add_labelled_data_options(io::OptionSchema& s) {
  using io::OptionType;
  s.optional_option("labels", "", OptionType::path, "labels from this CSV (keyed by id/title/name) instead of the records");
  s.option("label-key", "", OptionType::string, "", "key column of --labels (default: the first of id, title, name)");
  s.optional_option("source-units", "", OptionType::list,
                    "NAME=UNIT[,NAME=UNIT...]: unit of labels given without one, as in flt train (repeatable)");
  s.optional_option("format", "", OptionType::string, "input format: sdf, mol, xyz, extxyz, qm9, pdb, csv (SMILES CSV), smi (SMILES file) (default: from each file name)");
  s.option("on-error", "", OptionType::string, "skip", "skip or fail").choices = {"skip", "fail"};
  // SMILES records get conformers as in flt train: the same settings give the training geometries.
  s.option("conformer-seed", "", OptionType::integer, "42", "random seed of generated conformers (as flt train's --conformer-seed)");
  add_conformer_options(s);
  s.optional_option("split-file", "", OptionType::path, "evaluate one subset of this split CSV (subset,index,id; e.g. datasets/qm9/split.csv)");
  s.option("subset", "", OptionType::string, "test", "with --split-file: train, validation or test").choices = {"train", "validation", "test"};
  s.option("batch-size", "", OptionType::integer, "64", "molecules per model call");
  s.option("threads", "", OptionType::integer, "0", "OpenMP threads (0: all cores / OMP_NUM_THREADS)");
}

void apply_labelled_data_options(const Arguments& parsed, const std::vector<std::string>& inputs,
                                 pipeline::EvalOptions& eval) {
  const io::ResolvedOptions& o = parsed.options;
  const auto threads = o.get_int("threads");
  const auto batch_size = o.get_int("batch-size");
  if (batch_size < 1) throw UsageError("--batch-size must be at least 1");
  if (threads < 0) throw UsageError("--threads must be >= 0");
  eval.data.inputs = inputs;
  eval.data.read.format = format_option(o, "format");
  eval.data.read.keep_molecule = false;
  apply_conformer_options(o, eval.data.read);
  const auto conformer_seed = o.get_int("conformer-seed");
  if (conformer_seed < 0 || conformer_seed > 0xffffffff) throw UsageError("--conformer-seed must be in 0..4294967295");
  eval.data.read.seed = static_cast<std::uint32_t>(conformer_seed);
  eval.data.policy = o.get_string("on-error") == "fail" ? chem::ErrorPolicy::fail : chem::ErrorPolicy::skip;
  eval.data.labels_csv = parsed.string_or_empty("labels");
  eval.data.label_key = o.get_string("label-key");
  if (o.has("source-units"))
    for (const auto& item : o.get_list("source-units")) {
      const auto eq = item.find('=');
      if (eq == std::string::npos || eq == 0) throw UsageError("--source-units needs NAME=UNIT, not '" + item + "'");
      eval.data.source_units[item.substr(0, eq)] = item.substr(eq + 1);
    }
  eval.threads = static_cast<int>(threads);
  eval.batch_size = static_cast<std::size_t>(batch_size);
  const std::string split_file = parsed.string_or_empty("split-file");
  if (o.source("subset").kind != io::OptionSource::Kind::default_value && split_file.empty())
    throw UsageError("--subset needs --split-file");
  eval.split_file = split_file;
  eval.subset = o.get_string("subset");
}

}  // namespace flt::cli
