// flt eval: metrics (MAE, RMSE, R^2 per target, physical units) of a model or an ensemble against
// the labels of the inputs, and the rotation sensitivity next to the MAE. See docs/prediction.md.
#include "chem/reader.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "commands.hpp"
#include "exit_codes.hpp"
#include "options_util.hpp"
#include "pipeline/dataset_progress.hpp"
#include "io/progress.hpp"

#include <memory>
#include "pipeline/eval.hpp"

#include <boost/program_options.hpp>

#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace flt::cli {
namespace {

namespace po = boost::program_options;

const char* kUsage =
    "Usage: flt eval [-m MODEL.flt ...] INPUT... [-o METRICS.csv] [options]\n\n"
    "Evaluates a model (several --model: an ensemble mean; none: the default model) against the\n"
    "labels of the inputs (QM9 header values, extended-XYZ keys, SD tags) or of --labels CSV,\n"
    "converted into the model's units: MAE, RMSE and R^2 per target, and the rotation\n"
    "sensitivity (the standard deviation of the predictions over --rotations random rotations of\n"
    "each molecule, averaged over molecules, and its fraction of the MAE). Progress (reading,\n"
    "evaluating, ETA) goes to stderr: a bar on a terminal, plain lines otherwise, nothing with -q.\n\n"
    "Options";

int run_eval(const std::vector<std::string>& args) {
  std::vector<std::string> inputs, model_paths, source_units;
  std::string targets, in_format, on_error = "skip", csv, predictions, labels, label_key;
  std::string split_file, subset = "test";
  std::string forces_column, forces_unit, force_target;
  int rotations = 8, threads = 0;
  std::uint64_t seed = 0;
  std::size_t batch_size = 64, limit = 0;
  po::options_description options(kUsage);
  options.add_options()
      ("help,h", "show this help")
      ("model,m", po::value(&model_paths), "model file (.flt); repeat for an ensemble (default: the default model)")
      ("targets,t", po::value(&targets), "comma-separated targets to evaluate (default: every target of the model)")
      ("rotations", po::value(&rotations), "random rotations per molecule for the rotation sensitivity (default 8; 0: off)")
      ("seed", po::value(&seed), "seed of the random rotations (default 0)")
      ("out,output,o", po::value(&csv), "write the metrics table as CSV to this file (also spelled --output; older spelling: --csv)")
      ("csv", po::value(&csv), "the same as --out")
      ("predictions", po::value(&predictions), "write per-molecule predictions and labels as CSV to this file")
      ("labels", po::value(&labels), "labels from this CSV (keyed by id/title/name) instead of the records")
      ("label-key", po::value(&label_key), "key column of --labels (default: the first of id, title, name)")
      ("source-units", po::value(&source_units), "NAME=UNIT[,NAME=UNIT...]: unit of labels given without one, as in flt train (repeatable)")
      ("source-unit", po::value(&source_units), "the same as --source-units (older spelling)")
      ("config", po::value<std::string>(), "INI-style file of options, one 'name = value' per line (inputs as 'input = FILE'); the command line overrides it")
      ("format,f", po::value(&in_format), "input format: sdf, mol, xyz, extxyz, qm9 (default: from each file name)")
      ("on-error", po::value(&on_error), "skip (default) or fail")
      ("limit", po::value(&limit), "evaluate at most this many molecules (default 0: all)")
      ("split-file", po::value(&split_file), "evaluate one subset of this split CSV (subset,index,id; e.g. datasets/qm9/split.csv)")
      ("subset", po::value(&subset), "with --split-file: train, validation or test (default test)")
      ("forces", po::value(&forces_column)->implicit_value("forces"),
       "also compare forces F = -dE/dr with the reference forces of this per-atom column (default column: forces, extended XYZ forces:R:3)")
      ("forces-unit", po::value(&forces_unit), "unit of the forces column when the input gives none, or to override it, e.g. eV/A, Hartree/Bohr")
      ("force-target", po::value(&force_target), "energy target whose forces are compared (default: the first extensive energy target)")
      ("batch-size", po::value(&batch_size), "molecules per model call (default 64)")
      ("threads,j", po::value(&threads), "OpenMP threads (default 0: all cores / OMP_NUM_THREADS)")
      ("quiet,q", "log errors only, no progress")
      ("verbose,v", "log every step");
  const po::variables_map vm = parse_arguments(args, options, "input", po::value(&inputs));
  if (vm.count("help") != 0) {
    std::cout << options << "\n";
    return kExitOk;
  }
  apply_verbosity(vm);
  if (inputs.empty()) throw UsageError("no input given");
  if (on_error != "skip" && on_error != "fail")
    throw UsageError("--on-error must be skip or fail, not '" + on_error + "'");
  if (rotations < 0 || rotations == 1) throw UsageError("--rotations must be 0 or at least 2");
  if (batch_size < 1) throw UsageError("--batch-size must be at least 1");
  if (threads < 0) throw UsageError("--threads must be >= 0");

  pipeline::EvalOptions eval;
  eval.data.inputs = inputs;
  try {
    if (!in_format.empty()) eval.data.read.format = chem::format_from_name(in_format);
  } catch (const InvalidArgument& e) {
    throw UsageError(e.what());
  }
  eval.data.read.keep_molecule = false;
  eval.data.policy = on_error == "fail" ? chem::ErrorPolicy::fail : chem::ErrorPolicy::skip;
  eval.data.labels_csv = labels;
  eval.data.label_key = label_key;
  eval.data.limit = limit;
  for (const auto& group : source_units)
    for (const auto& item : split_list(group)) {
      const auto eq = item.find('=');
      if (eq == std::string::npos || eq == 0)
        throw UsageError("--source-units needs NAME=UNIT, not '" + item + "'");
      eval.data.source_units[item.substr(0, eq)] = item.substr(eq + 1);
    }
  eval.targets = split_list(targets);
  eval.rotations = rotations;
  eval.seed = seed;
  eval.threads = threads;
  eval.batch_size = batch_size;
  if (subset != "train" && subset != "validation" && subset != "test")
    throw UsageError("--subset must be train, validation or test, not '" + subset + "'");
  if (vm.count("subset") != 0 && split_file.empty()) throw UsageError("--subset needs --split-file");
  if (!split_file.empty() && limit != 0)
    throw UsageError("--limit cannot be combined with --split-file (the split indexes every record)");
  eval.split_file = split_file;
  eval.subset = subset;
  if (forces_column.empty() && (!forces_unit.empty() || !force_target.empty()))
    throw UsageError("--forces-unit and --force-target need --forces");
  eval.data.forces_column = forces_column;
  eval.data.forces_source_unit = forces_unit;
  eval.forces_target = force_target;

  if (model_paths.empty()) model_paths.push_back(pipeline::default_model_path().string());
  const pipeline::Predictor predictor =
      pipeline::Predictor::load(std::vector<std::filesystem::path>(model_paths.begin(), model_paths.end()));
  const io::ProgressOutput progress = progress_output(is_quiet(vm));
  pipeline::ReadProgressBar reading(progress, "reading", limit);
  eval.data.on_progress = reading.callback();
  std::unique_ptr<io::ProgressBar> evaluating;
  eval.on_progress = [&](std::size_t done, std::size_t total) {
    if (!progress.stream) return;
    if (!evaluating) {
      reading.finish();
      evaluating = std::make_unique<io::ProgressBar>(*progress.stream, progress.terminal,
                                                        rotations > 0 ? "evaluating (with rotations)" : "evaluating", total);
    }
    evaluating->update(done);
  };
  const pipeline::EvalResult result = pipeline::evaluate(predictor, eval);
  reading.finish();
  if (evaluating) evaluating->finish();
  std::cout << pipeline::format_eval_table(result);
  if (!csv.empty()) pipeline::write_eval_csv(csv, result);
  if (!predictions.empty()) pipeline::write_eval_predictions_csv(predictions, result);
  std::cerr << "flt eval: " << result.summary.describe() << "\n";
  return result.summary.ok() ? kExitOk : kExitSkipped;
}

const bool registered = register_command(
    {"eval", "evaluate a model against labels: MAE, RMSE, R^2 and rotation sensitivity", 45,
     &run_eval});

}  // namespace
}  // namespace flt::cli
