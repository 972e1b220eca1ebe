// flt ensemble: packs trained models into one ensemble file (format "flt-ensemble",
// docs/model-format.md) that predict, eval, md, info and the library load as the members' mean.
#include "core/error.hpp"
#include "commands.hpp"
#include "exit_codes.hpp"
#include "options_util.hpp"
#include "pipeline/dataset_progress.hpp"
#include "pipeline/eval.hpp"
#include "pipeline/predict.hpp"

#include <cstdio>

#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

namespace flt::cli {
namespace {

const char* kUsage =
    "Usage: flt ensemble MODEL.flt MODEL.flt [...] -o ENSEMBLE.flt [--calibrate DATA [options]]\n\n"
    "Packs trained models (ensemble files among them are flattened) into one ensemble file. Every\n"
    "command that takes a model loads it as the members' mean, with their spread as the\n"
    "uncertainty, exactly as it loads the same files given one by one. The members must predict\n"
    "the same targets in the same units.\n\n"
    "--calibrate DATA fits per target a factor of the members' spread on the labelled records of\n"
    "DATA (read as flt eval reads them: --labels, --source-units, --split-file and --subset, whose\n"
    "default here is validation) and stores it in the file: predict, eval and the library then\n"
    "report the calibrated std (std times the factor; columns *_std_calibrated). The factor, by\n"
    "--calibration-method: coverage (default), the 68.27 % quantile of |error|/std, so that 68.27 %\n"
    "of those records lie within 1 calibrated std; zscaling, s = sqrt(mean (error/std)^2)\n"
    "(Chemprop's), which one record with a huge error/std can dominate.\n"
    "One ensemble file alone is recalibrated; without --calibrate a file's calibration is dropped.\n";

io::OptionSchema ensemble_schema() {
  io::OptionSchema s;
  s.optional_option("model", "", io::OptionType::list, "model files to pack, as the arguments (which replace these)");
  s.optional_option("out", "", io::OptionType::path, "ensemble file to write");
  s.optional_option("calibrate", "", io::OptionType::list,
                    "fit calibration factors of the std on the labelled records of these files (e.g. a validation split)");
  s.optional_option("calibration-method", "", io::OptionType::string,
                    "with --calibrate: coverage (the 68.27 % quantile of |error|/std; the default) or "
                    "zscaling (sqrt(mean (error/std)^2))")
      .choices = {"coverage", "zscaling"};
  add_labelled_data_options(s);
  add_common_options(s);
  return s;
}

int run_ensemble(const std::vector<std::string>& args) {
  static const io::OptionSchema schema = ensemble_schema();
  const std::optional<Arguments> parsed = parse_arguments(schema, args, kUsage);
  if (!parsed) return kExitOk;
  const std::vector<std::string> inputs = parsed->positional_or("model");
  const std::string output = parsed->string_or_empty("out");
  if (output.empty()) throw UsageError("give the ensemble file to write with -o");
  if (inputs.empty()) throw UsageError("give the model files to pack");
  const std::vector<std::filesystem::path> paths(inputs.begin(), inputs.end());
  const io::ResolvedOptions& o = parsed->options;
  if (!o.has("calibrate")) {
    for (const auto& name : {"labels", "source-units", "split-file", "format", "calibration-method"})
      if (o.has(name)) throw UsageError(std::string("--") + name + " needs --calibrate");
    const std::size_t members = pipeline::save_ensemble(paths, output);
    if (!parsed->quiet) std::cerr << "flt ensemble: wrote " << output << " (" << members << " models)\n";
    return kExitOk;
  }
  const std::vector<std::string> data = o.get_list("calibrate");
  if (data.empty()) throw UsageError("--calibrate needs the labelled data to fit on");
  refuse_output_among_inputs(data, output);
  pipeline::EvalOptions eval;
  apply_labelled_data_options(*parsed, data, eval);
  // flt eval's default subset is test; a factor fitted there would flatter every later test score.
  if (o.source("subset").kind == io::OptionSource::Kind::default_value) eval.subset = "validation";
  eval.rotations = 0;
  const pipeline::Predictor predictor = pipeline::Predictor::load(paths).uncalibrated();
  if (predictor.ensemble_size() < 2)
    throw UsageError("--calibrate: a single model cannot be calibrated (it has no spread); give two models or more");
  apply_trained_conformers(predictor, o, "conformer-seed", eval.data.read);
  const io::ProgressOutput progress = progress_output(parsed->quiet);
  pipeline::ReadProgressBar reading(progress, "reading", 0);
  eval.data.on_progress = reading.callback();
  eval.on_progress = [&](std::size_t, std::size_t) { reading.finish(); };
  const models::EnsembleCalibration calibration = pipeline::fit_calibration(
      predictor, eval, o.has("calibration-method") ? o.get_string("calibration-method") : models::kCalibrationCoverage);
  reading.finish();
  const std::size_t members = pipeline::save_ensemble(paths, output, calibration);
  if (!parsed->quiet) {
    std::cerr << "flt ensemble: wrote " << output << " (" << members << " models), std calibrated on "
              << calibration.records << " molecules of " << calibration.data
              << (calibration.subset.empty() ? std::string() : " (" + calibration.subset + " subset)") << ", method "
              << calibration.method << ":";
    for (std::size_t t = 0; t < calibration.targets.size(); ++t) {
      char factor[64];
      std::snprintf(factor, sizeof factor, "%.4g", calibration.factors[t]);
      std::cerr << (t == 0 ? " " : ", ") << calibration.targets[t] << " x " << factor;
    }
    std::cerr << "\n";
  }
  return kExitOk;
}

const bool registered = register_command(
    {"ensemble", "pack trained models into one ensemble file (predictions: the members' mean)", 52,
     &run_ensemble});

}  // namespace
}  // namespace flt::cli
