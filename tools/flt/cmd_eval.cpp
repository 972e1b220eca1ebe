// flt eval: metrics (MAE, RMSE, R^2 per target, physical units) of a model or an ensemble against
// the labels of the inputs, and the rotation sensitivity next to the MAE; for an ensemble the
// calibration of its spread. See docs/prediction.md.
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

#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace flt::cli {
namespace {

const char* kUsage =
    "Usage: flt eval [-m MODEL.flt ...] INPUT... [-o METRICS.csv] [options]\n\n"
    "Evaluates a model (several --model: an ensemble mean; none: the default model) against the\n"
    "labels of the inputs (QM9 header values, extended-XYZ keys, SD tags) or of --labels CSV,\n"
    "converted into the model's units: MAE, RMSE and R^2 per target, and the rotation\n"
    "sensitivity (the standard deviation of the predictions over --rotations random rotations of\n"
    "each molecule, averaged over molecules, and its fraction of the MAE). For an ensemble also\n"
    "how well the members' spread describes the errors: Spearman rank correlation of |error| and\n"
    "std, fractions within 1 and 2 std, Gaussian NLL, miscalibration area, ENCE and the factor s\n"
    "that would calibrate the std (a second table; extra columns in --out). Progress (reading,\n"
    "evaluating, ETA) goes to stderr: a bar on a terminal, plain lines otherwise, nothing with -q.\n";

io::OptionSchema eval_schema() {
  using io::OptionType;
  io::OptionSchema s;
  s.optional_option("model", "", OptionType::list, "model file (.flt); repeat for an ensemble (default: the default model)");
  s.optional_option("inputs", "", OptionType::list, "input files, as the arguments (which replace these)");
  s.option("targets", "", OptionType::list, "", "targets to evaluate (default: every target of the model)");
  s.option("rotations", "", OptionType::integer, "8", "random rotations per molecule for the rotation sensitivity (0: off)");
  s.option("seed", "", OptionType::integer, "0", "seed of the random rotations");
  s.optional_option("out", "", OptionType::path, "write the metrics table as CSV to this file");
  s.optional_option("predictions", "", OptionType::path, "write per-molecule predictions and labels as CSV to this file");
  add_labelled_data_options(s);
  s.option("limit", "", OptionType::integer, "0", "evaluate at most this many molecules (0: all)");
  s.optional_option("forces", "", OptionType::string,
                    "also compare forces F = -dE/dr with the reference forces of this per-atom column (alone: forces, "
                    "extended XYZ forces:R:3)")
      .implicit_value = "forces";
  s.option("forces-unit", "", OptionType::string, "", "unit of the forces column when the input gives none, or to override it, e.g. eV/A, Hartree/Bohr");
  s.option("force-target", "", OptionType::string, "", "energy target whose forces are compared (default: the first extensive energy target)");
  add_common_options(s);
  s.add_spellings("out", 0, {"csv"});
  s.add_spellings("source-units", 0, {"source-unit"});
  return s;
}

int run_eval(const std::vector<std::string>& args) {
  static const io::OptionSchema schema = eval_schema();
  const std::optional<Arguments> parsed = parse_arguments(schema, args, kUsage);
  if (!parsed) return kExitOk;
  const io::ResolvedOptions& o = parsed->options;
  const std::vector<std::string> inputs = parsed->positional_or("inputs");
  std::vector<std::string> model_paths = o.has("model") ? o.get_list("model") : std::vector<std::string>{};
  const auto rotations = o.get_int("rotations");
  const auto limit = o.get_int("limit");
  const std::string split_file = parsed->string_or_empty("split-file");
  const std::string forces_column = parsed->string_or_empty("forces");
  if (inputs.empty()) throw UsageError("no input given");
  if (rotations < 0 || rotations == 1) throw UsageError("--rotations must be 0 or at least 2");
  if (limit < 0) throw UsageError("--limit must be >= 0");
  if (o.get_int("seed") < 0) throw UsageError("--seed must be >= 0");

  pipeline::EvalOptions eval;
  apply_labelled_data_options(*parsed, inputs, eval);
  eval.data.limit = static_cast<std::size_t>(limit);
  eval.targets = o.get_list("targets");
  eval.rotations = static_cast<int>(rotations);
  eval.seed = static_cast<std::uint64_t>(o.get_int("seed"));
  if (!split_file.empty() && limit != 0)
    throw UsageError("--limit cannot be combined with --split-file (the split indexes every record)");
  if (forces_column.empty() && (!o.get_string("forces-unit").empty() || !o.get_string("force-target").empty()))
    throw UsageError("--forces-unit and --force-target need --forces");
  eval.data.forces_column = forces_column;
  eval.data.forces_source_unit = o.get_string("forces-unit");
  eval.forces_target = o.get_string("force-target");

  if (model_paths.empty()) model_paths.push_back(pipeline::default_model_path().string());
  const pipeline::Predictor predictor =
      pipeline::Predictor::load(std::vector<std::filesystem::path>(model_paths.begin(), model_paths.end()));
  apply_trained_conformers(predictor, o, "conformer-seed", eval.data.read);
  const io::ProgressOutput progress = progress_output(parsed->quiet);
  pipeline::ReadProgressBar reading(progress, "reading", static_cast<std::size_t>(limit));
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
  if (o.has("out")) pipeline::write_eval_csv(o.get_string("out"), result);
  if (o.has("predictions")) pipeline::write_eval_predictions_csv(o.get_string("predictions"), result);
  std::cerr << "flt eval: " << result.summary.describe() << "\n";
  return result.summary.ok() ? kExitOk : kExitSkipped;
}

const bool registered = register_command(
    {"eval", "evaluate against labels: MAE, RMSE, R^2, rotation sensitivity, ensemble uncertainty", 45,
     &run_eval});

}  // namespace
}  // namespace flt::cli
