// Regression metrics per target, masked for missing labels (NaN truth), accumulated in double in
// index order (fixed order: the result does not depend on threads or batching):
//   MAE  = (1/n) sum |p_i - y_i|
//   RMSE = sqrt((1/n) sum (p_i - y_i)^2)
//   R^2  = 1 - sum (p_i - y_i)^2 / sum (y_i - mean(y))^2   (two passes; NaN if n < 2 or y constant)
// And the CSV files of a run: the learning curve, test predictions and the metrics table, with
// units in the column headers ("U0_pred [eV]").
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace flt::train {

struct Metrics {
  std::size_t count = 0;  // labelled pairs used
  double mae = 0, rmse = 0, r2 = 0, max_abs_error = 0;  // NaN when count == 0
};

// One target. predicted.size() must equal truth.size(). NaN in truth masks the pair; a NaN
// prediction with a label propagates NaN (a broken model must not look good).
Metrics compute_metrics(std::span<const double> predicted, std::span<const double> truth);
// Row-major [n x num_targets] arrays; one Metrics per target.
std::vector<Metrics> compute_metrics(std::span<const double> predicted, std::span<const double> truth,
                                     std::size_t num_targets);

struct TargetColumn {
  std::string name;  // "U0"
  std::string unit;  // "eV"
};

struct EpochRecord {
  std::int64_t epoch = 0;  // 1-based
  std::int64_t step = 0;   // optimiser steps so far
  double learning_rate = 0;
  double train_loss = 0;
  double val_loss = 0;
  double seconds = 0;      // wall time of the run so far
  std::vector<double> train_mae, val_mae;  // per target, in the target's unit
};

// learning_curve.csv: epoch,step,lr,train_loss,val_loss,seconds,
// then train_mae_<t> [unit] and val_mae_<t> [unit] for each target.
class LearningCurve {
 public:
  explicit LearningCurve(std::vector<TargetColumn> targets);
  const std::vector<TargetColumn>& targets() const noexcept { return targets_; }
  const std::vector<EpochRecord>& records() const noexcept { return records_; }
  void append(EpochRecord record);     // InvalidArgument if the vectors' sizes are wrong
  void truncate(std::int64_t last_epoch);  // keep records with epoch <= last_epoch (for --resume)
  std::string to_csv() const;
  void write(const std::filesystem::path& path) const;  // atomic
  // Reads a file written by write() with the same targets; InputError (file:line) otherwise.
  static LearningCurve read(const std::filesystem::path& path, std::vector<TargetColumn> targets);

 private:
  std::vector<TargetColumn> targets_;
  std::vector<EpochRecord> records_;
};

// predictions.csv: <key_header>,<t>_true [unit],<t>_pred [unit][,<t>_std [unit]] per target.
// predicted/truth/stddev are row-major [keys.size() x targets.size()]; truth or stddev may be empty
// (columns omitted). NaN is written as an empty field.
void write_predictions_csv(const std::filesystem::path& path, const std::string& key_header,
                           const std::vector<std::string>& keys, const std::vector<TargetColumn>& targets,
                           std::span<const double> predicted, std::span<const double> truth = {},
                           std::span<const double> stddev = {}, const std::string& std_suffix = "_std");

// metrics.csv: target,unit,count,MAE,RMSE,R2,max_abs_error.
void write_metrics_csv(const std::filesystem::path& path, const std::vector<TargetColumn>& targets,
                       const std::vector<Metrics>& metrics);

}  // namespace flt::train
