#include "train/metrics.hpp"

#include "core/error.hpp"
#include "io/atomic_file.hpp"
#include "io/csv.hpp"
#include "io/units.hpp"

#include <cmath>
#include <limits>
#include <sstream>

namespace flt::train {

using io::CsvTable;
using io::csv_error;
using io::csv_number;
using io::parse_csv;
using io::parse_csv_number;
using io::read_csv;
using io::with_unit_suffix;
using io::write_csv_row;
using io::write_file_atomic;
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Metrics metrics_strided(const double* p, const double* y, std::size_t n, std::size_t stride) {
  Metrics m;
  double sum_y = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double yi = y[i * stride];
    if (std::isnan(yi)) continue;
    ++m.count;
    sum_y += yi;
  }
  if (m.count == 0) {
    m.mae = m.rmse = m.r2 = m.max_abs_error = kNaN;
    return m;
  }
  const double mean = sum_y / static_cast<double>(m.count);
  double abs_sum = 0, sq_sum = 0, tot = 0, max_abs = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double yi = y[i * stride];
    if (std::isnan(yi)) continue;
    const double e = p[i * stride] - yi;
    abs_sum += std::fabs(e);
    sq_sum += e * e;
    tot += (yi - mean) * (yi - mean);
    const double ae = std::fabs(e);
    if (std::isnan(ae) || ae > max_abs) max_abs = ae;  // once NaN, stays NaN
  }
  const double n_used = static_cast<double>(m.count);
  m.mae = abs_sum / n_used;
  m.rmse = std::sqrt(sq_sum / n_used);
  m.r2 = (m.count < 2 || tot == 0.0) ? kNaN : 1.0 - sq_sum / tot;
  m.max_abs_error = max_abs;
  return m;
}

std::string lc_header(const std::vector<TargetColumn>& targets) {
  std::vector<std::string> h = {"epoch", "step", "lr", "train_loss", "val_loss", "seconds"};
  for (const auto& t : targets) {
    h.push_back(with_unit_suffix("train_mae_" + t.name, t.unit));
    h.push_back(with_unit_suffix("val_mae_" + t.name, t.unit));
  }
  std::ostringstream out;
  write_csv_row(out, h);
  return out.str();
}

}  // namespace

Metrics compute_metrics(std::span<const double> predicted, std::span<const double> truth) {
  require(predicted.size() == truth.size(), "compute_metrics: predicted and truth differ in size");
  return metrics_strided(predicted.data(), truth.data(), truth.size(), 1);
}

std::vector<Metrics> compute_metrics(std::span<const double> predicted, std::span<const double> truth,
                                     std::size_t num_targets) {
  require(num_targets > 0, "compute_metrics: no targets");
  require(predicted.size() == truth.size() && truth.size() % num_targets == 0,
          "compute_metrics: arrays must both be n x num_targets");
  std::vector<Metrics> out;
  const std::size_t n = truth.size() / num_targets;
  for (std::size_t t = 0; t < num_targets; ++t)
    out.push_back(metrics_strided(predicted.data() + t, truth.data() + t, n, num_targets));
  return out;
}

LearningCurve::LearningCurve(std::vector<TargetColumn> targets) : targets_(std::move(targets)) {}

void LearningCurve::append(EpochRecord record) {
  require(record.train_mae.size() == targets_.size() && record.val_mae.size() == targets_.size(),
          "LearningCurve::append: one train and one validation MAE per target");
  records_.push_back(std::move(record));
}

void LearningCurve::truncate(std::int64_t last_epoch) {
  std::erase_if(records_, [&](const EpochRecord& r) { return r.epoch > last_epoch; });
}

std::string LearningCurve::to_csv() const {
  std::string out = lc_header(targets_);
  for (const auto& r : records_) {
    std::vector<std::string> f = {std::to_string(r.epoch), std::to_string(r.step), csv_number(r.learning_rate),
                                  csv_number(r.train_loss), csv_number(r.val_loss), csv_number(r.seconds)};
    for (std::size_t t = 0; t < targets_.size(); ++t) {
      f.push_back(csv_number(r.train_mae[t]));
      f.push_back(csv_number(r.val_mae[t]));
    }
    std::ostringstream row;
    write_csv_row(row, f);
    out += row.str();
  }
  return out;
}

void LearningCurve::write(const std::filesystem::path& path) const { write_file_atomic(path, to_csv()); }

LearningCurve LearningCurve::read(const std::filesystem::path& path, std::vector<TargetColumn> targets) {
  LearningCurve lc(std::move(targets));
  const CsvTable csv = read_csv(path);
  const CsvTable expected = parse_csv(lc_header(lc.targets_), "<expected>");
  if (csv.header != expected.header)
    throw csv_error(path.string(), 1, "learning-curve columns do not match the run's targets and units");
  for (std::size_t r = 0; r < csv.rows.size(); ++r) {
    auto num = [&](std::size_t c) { return parse_csv_number(csv.rows[r][c], csv, r, c); };
    EpochRecord rec;
    const double epoch = num(0), step = num(1);
    if (!(epoch == std::floor(epoch)) || !(step == std::floor(step)))
      throw csv_error(path.string(), csv.row_lines[r], "epoch and step must be integers");
    rec.epoch = static_cast<std::int64_t>(epoch);
    rec.step = static_cast<std::int64_t>(step);
    rec.learning_rate = num(2);
    rec.train_loss = num(3);
    rec.val_loss = num(4);
    rec.seconds = num(5);
    for (std::size_t t = 0; t < lc.targets_.size(); ++t) {
      rec.train_mae.push_back(num(6 + 2 * t));
      rec.val_mae.push_back(num(7 + 2 * t));
    }
    lc.records_.push_back(std::move(rec));
  }
  return lc;
}

void write_predictions_csv(const std::filesystem::path& path, const std::string& key_header,
                           const std::vector<std::string>& keys, const std::vector<TargetColumn>& targets,
                           std::span<const double> predicted, std::span<const double> truth,
                           std::span<const double> stddev, const std::string& std_suffix) {
  const std::size_t n = keys.size(), t = targets.size();
  require(predicted.size() == n * t, "write_predictions_csv: predicted must be keys x targets");
  require(truth.empty() || truth.size() == n * t, "write_predictions_csv: truth must be keys x targets");
  require(stddev.empty() || stddev.size() == n * t, "write_predictions_csv: stddev must be keys x targets");
  std::ostringstream out;
  std::vector<std::string> h = {key_header};
  for (const auto& c : targets) {
    if (!truth.empty()) h.push_back(with_unit_suffix(c.name + "_true", c.unit));
    h.push_back(with_unit_suffix(c.name + "_pred", c.unit));
    if (!stddev.empty()) h.push_back(with_unit_suffix(c.name + std_suffix, c.unit));
  }
  write_csv_row(out, h);
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<std::string> f = {keys[i]};
    for (std::size_t j = 0; j < t; ++j) {
      if (!truth.empty()) f.push_back(csv_number(truth[i * t + j]));
      f.push_back(csv_number(predicted[i * t + j]));
      if (!stddev.empty()) f.push_back(csv_number(stddev[i * t + j]));
    }
    write_csv_row(out, f);
  }
  write_file_atomic(path, out.str());
}

void write_metrics_csv(const std::filesystem::path& path, const std::vector<TargetColumn>& targets,
                       const std::vector<Metrics>& metrics) {
  require(targets.size() == metrics.size(), "write_metrics_csv: one Metrics per target");
  std::ostringstream out;
  write_csv_row(out, {"target", "unit", "count", "MAE", "RMSE", "R2", "max_abs_error"});
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const Metrics& m = metrics[i];
    write_csv_row(out, {targets[i].name, targets[i].unit, std::to_string(m.count), csv_number(m.mae),
                        csv_number(m.rmse), csv_number(m.r2), csv_number(m.max_abs_error)});
  }
  write_file_atomic(path, out.str());
}

}  // namespace flt::train
