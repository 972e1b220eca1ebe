// Evaluation of a model (or an ensemble) against labels: MAE, RMSE and R^2 per target in physical
// units, and the rotation sensitivity. What `flt eval` runs.
//
// Shapes: S evaluated molecules, P evaluated targets, N rotations.
//
// Labels are converted by load_dataset (dataset.hpp) into the unit the model predicts each
// target in; metrics as train/metrics.hpp (NaN labels masked). Rotation sensitivity of target t,
// R_k uniformly random rotations about the centroid drawn from Rng(seed).fork(s):
//   sd_st = sqrt((1/N) sum_k (y_t(R_k s) - mean_k y_t(R_k s))^2),
//   rotation_std_t = (1/S) sum_s sd_st,   also reported as rotation_std_t / MAE_t.
// What it measures and its target: docs/prediction.md, "flt eval".
// For an ensemble (M >= 2 members) also the calibration of the spread against the errors, per
// target over the labelled molecules (train/uncertainty.hpp: Spearman, coverage, Gaussian NLL,
// miscalibration area, ENCE, variance-scaling factor; molecules with std 0 counted and left out).
#pragma once

#include "pipeline/dataset.hpp"
#include "pipeline/predict.hpp"
#include "train/metrics.hpp"
#include "train/uncertainty.hpp"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace flt::pipeline {

struct EvalOptions {
  // Inputs, reader options, error policy, label source (records or labels_csv/label_key),
  // source_units for labels without a unit, limit. `targets`, `units`, `pooling` and `max_z` are
  // filled in from the model by evaluate().
  DatasetOptions data;
  // Targets to evaluate (names the model predicts); empty: every target of the model.
  std::vector<std::string> targets;
  int rotations = 8;           // N random rotations per molecule; 0 skips the sensitivity
  std::uint64_t seed = 0;      // rotations' random seed
  int threads = 0;             // OpenMP threads per call, 0 = OpenMP default
  std::size_t batch_size = 64; // molecules per model call
  // Evaluate one subset of a split file (subset,index,id as `flt train` writes it, e.g.
  // datasets/qm9/split.csv): `subset` is train, validation or test. The split is validated
  // against the loaded records (indices in range, ids equal), so a split of other data is an
  // error rather than a silent mismatch. Empty split_file: every record.
  std::string split_file;
  std::string subset = "test";
  // Forces: compare the model's forces F = -dE/dr of an energy target with the reference forces
  // of data.forces_column (dataset.hpp; "": no force evaluation). forces_target: the energy
  // target ("": Predictor::forces_target()).
  std::string forces_target;
  // Called before the first batch (done = 0) and after every batch with the molecules evaluated
  // so far and their number (after reading; data.on_progress reports the reading); may be empty.
  std::function<void(std::size_t done, std::size_t total)> on_progress;
};

struct TargetEvaluation {
  std::string name;
  std::string unit;            // of the metrics, the predictions and the labels
  train::Metrics metrics;      // MAE, RMSE, R^2, max |error| over molecules with a label
  double rotation_std = std::numeric_limits<double>::quiet_NaN();       // target's unit
  double rotation_fraction = std::numeric_limits<double>::quiet_NaN();  // rotation_std / MAE
  // Ensembles only: how well the members' spread (stddev) describes the errors.
  std::optional<train::UncertaintyMetrics> uncertainty;
};

struct EvalResult {
  std::vector<TargetEvaluation> targets;  // P
  // With EvalOptions::data.forces_column: the force components of the molecules with reference
  // forces (name "<target> forces", unit "<target unit>/A"); rotation fields unused.
  std::optional<TargetEvaluation> forces;
  std::vector<std::string> ids;           // S evaluated molecules (dataset ids: "gdb 17", ...)
  Mat<double> predicted;                  // S x P, ensemble mean
  Mat<double> stddev;                     // S x P, ensemble spread (zeros for one model)
  Mat<double> truth;                      // S x P, NaN = missing label
  Mat<double> rotation_sd;                // S x P per-molecule rotation std (0 x P when N = 0)
  int rotations = 0;
  std::size_t ensemble_size = 1;
  // The calibration of the ensemble file (Predictor::calibration): stddev, and the uncertainty
  // metrics, are then of the calibrated std (the spread times each target's factor); nullopt:
  // the members' plain spread. Forces are never calibrated.
  std::optional<models::EnsembleCalibration> calibration;
  // Records read, and skipped: unreadable, without a required label (per the dataset policy) or
  // that the model cannot handle (unknown element), with file, record and reason.
  chem::ReadSummary summary;
};

// Runs the evaluation. Throws ConfigError for a target the model does not predict, the dataset
// errors of load_dataset (IoError, InputError under ErrorPolicy::fail), InputError naming the file
// and record for a molecule the model cannot handle under ErrorPolicy::fail, and InputError("no
// molecules ...") when nothing is left to evaluate.
EvalResult evaluate(const Predictor& predictor, const EvalOptions& options);

// Calibration of an ensemble: evaluates the members' plain spread (predictor.uncalibrated(), no
// rotations) on the labelled records of `options` (read exactly as evaluate reads them, split and
// subset included) and fits per target, over the labelled records with std > 0, the factor of
// `method` (models::EnsembleCalibration): "coverage", q_t = the 68.27 % quantile of |e|/std
// (UncertaintyMetrics::std_coverage_scale), or "zscaling", s_t = sqrt(mean (e/std)^2)
// (UncertaintyMetrics::std_scale). data / subset / records describe the data in the calibration.
// InvalidArgument for a single model or an unknown method; InputError naming the data and the
// target when a target has no labelled record, when every labelled record has std = 0, or when a
// prediction or std is not finite (or the factor is 0: more than 68 % of the errors are 0).
models::EnsembleCalibration fit_calibration(const Predictor& predictor, EvalOptions options,
                                            const std::string& method = models::kCalibrationCoverage);

// The metrics table as text (one line per target: count, MAE, RMSE, R^2, rotation std and its
// fraction of the MAE, with units); for an ensemble a second table, the uncertainty metrics.
std::string format_eval_table(const EvalResult& result);

// CSV: target,unit,count,MAE,RMSE,R2,max_abs_error,rotations,rotation_std,rotation_std_over_MAE
// (written atomically; NaN as an empty field); for an ensemble followed by the uncertainty
// columns uncertainty_count,zero_std_count,spearman_abs_error_std,within_1std [fraction],
// within_2std [fraction],NLL [nats per record in unit],miscalibration_area,ENCE,std_scale,
// std_coverage_scale (in the forces row those of the force components' spread), and for a calibrated ensemble
// calibration_factor (the factor the scored std carries; 1 in the forces row).
void write_eval_csv(const std::filesystem::path& path, const EvalResult& result);

// Per-molecule CSV: id,<t>_true [unit],<t>_pred [unit][,<t>_std [unit]] (train/metrics.hpp),
// the std columns for ensembles, named <t>_std_calibrated [unit] for a calibrated ensemble.
void write_eval_predictions_csv(const std::filesystem::path& path, const EvalResult& result);

}  // namespace flt::pipeline
