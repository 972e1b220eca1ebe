#include "train/report_plots.hpp"

#include "core/error.hpp"
#include "io/svg_plot.hpp"
#include "train/metrics.hpp"

#include <cmath>
#include <cstdio>

namespace flt::train {

using io::line_plot_svg;
using io::PlotOptions;
using io::PlotSeries;
using io::write_svg;

std::string learning_curve_svg(const std::string& target, const std::string& unit, std::span<const double> epochs,
                               std::span<const double> train_mae, std::span<const double> val_mae) {
  require(epochs.size() == train_mae.size() && epochs.size() == val_mae.size(),
          "learning_curve_svg: epochs, train_mae and val_mae differ in length");
  const std::vector<double> x(epochs.begin(), epochs.end());
  std::vector<PlotSeries> series = {
      {"train MAE", x, std::vector<double>(train_mae.begin(), train_mae.end()), "#1f77b4", true, epochs.size() < 60},
      {"validation MAE", x, std::vector<double>(val_mae.begin(), val_mae.end()), "#d62728", true, epochs.size() < 60}};
  PlotOptions o;
  o.title = "Learning curve: " + target;
  o.x_label = "epoch";
  o.y_label = "MAE of " + target + (unit.empty() ? std::string() : " [" + unit + "]") + " (log scale)";
  o.log_y = true;
  return line_plot_svg(series, o);
}

namespace {

// The finite points of a parity plot (predicted against true) or, with `residuals`, of a residual
// plot (predicted - true against true); the padded range of the true values (and of the
// predictions for a parity plot, whose axes share it); the MAE and its text.
struct Scatter {
  PlotSeries points{"", {}, {}, "#1f77b4", false, true};
  io::PlotRange range;
  double mae = 0;
  std::string mae_text;
};

Scatter scatter(std::span<const double> truth, std::span<const double> predicted, bool residuals, const char* caller) {
  require(truth.size() == predicted.size(), std::string(caller) + ": truth and predicted differ in length");
  Scatter sc;
  for (std::size_t i = 0; i < truth.size(); ++i) {
    if (!std::isfinite(truth[i]) || !std::isfinite(predicted[i])) continue;
    sc.points.x.push_back(truth[i]);
    sc.points.y.push_back(residuals ? predicted[i] - truth[i] : predicted[i]);
    sc.range.add(truth[i]);
    if (!residuals) sc.range.add(predicted[i]);
  }
  io::pad_plot_range(sc.range, false);
  sc.mae = compute_metrics(predicted, truth).mae;
  char text[64];
  std::snprintf(text, sizeof text, "%.4g", sc.mae);
  sc.mae_text = text;
  return sc;
}

}  // namespace

std::string parity_svg(const std::string& target, const std::string& unit, std::span<const double> truth,
                       std::span<const double> predicted, const std::string& subset) {
  Scatter sc = scatter(truth, predicted, false, "parity_svg");
  PlotSeries& points = sc.points;
  const io::PlotRange& r = sc.range;
  const double margin = 0.04 * (r.hi - r.lo);
  points.label = subset + ": n = " + std::to_string(points.x.size()) + ", MAE = " + sc.mae_text +
                 (unit.empty() ? "" : " " + unit);
  // y = x drawn across the whole (square) range, underneath the points.
  PlotSeries diagonal{"y = x", {r.lo - margin, r.hi + margin}, {r.lo - margin, r.hi + margin}, "#555555", true, false};
  PlotOptions o;
  o.title = "Parity: " + target;
  const std::string u = unit.empty() ? std::string() : " [" + unit + "]";
  o.x_label = "true " + target + u;
  o.y_label = "predicted " + target + u;
  o.width = 560;
  o.height = 560;
  o.legend_left = true;  // the points lie along the diagonal: the top-left corner is free
  return line_plot_svg({diagonal, points}, o);
}

std::string residual_svg(const std::string& target, const std::string& unit, std::span<const double> truth,
                         std::span<const double> predicted, const std::string& subset) {
  Scatter sc = scatter(truth, predicted, true, "residual_svg");
  PlotSeries& points = sc.points;
  const io::PlotRange& r = sc.range;
  const double margin = 0.04 * (r.hi - r.lo);
  const std::string u = unit.empty() ? std::string() : " " + unit;
  points.label = subset + ": n = " + std::to_string(points.x.size()) + ", MAE = " + sc.mae_text + u;
  const std::vector<double> span_x = {r.lo - margin, r.hi + margin};
  PlotSeries zero{"zero error", span_x, {0.0, 0.0}, "#555555", true, false};
  std::vector<PlotSeries> series = {zero};
  if (std::isfinite(sc.mae) && sc.mae > 0) {
    series.push_back({"+-MAE (" + sc.mae_text + u + ")", span_x, {sc.mae, sc.mae}, "#d62728", true, false});
    series.push_back({"", span_x, {-sc.mae, -sc.mae}, "#d62728", true, false});
  }
  series.push_back(points);
  PlotOptions o;
  o.title = "Residuals: " + target;
  const std::string bracket = unit.empty() ? std::string() : " [" + unit + "]";
  o.x_label = "true " + target + bracket;
  o.y_label = "predicted - true " + target + bracket;
  o.width = 640;
  o.height = 480;
  return line_plot_svg(series, o);
}

const char* to_string(ParityView view) noexcept {
  switch (view) {
    case ParityView::values: return "values";
    case ParityView::referenced: return "referenced";
    case ParityView::residuals: return "residuals";
  }
  return "?";
}

namespace {

// Standard deviation of the true values over the pairs where both are finite / RMSE there.
double spread_to_error(std::span<const double> truth, std::span<const double> predicted) {
  double n = 0, mean = 0, m2 = 0, se = 0;
  for (std::size_t i = 0; i < truth.size(); ++i) {
    if (!std::isfinite(truth[i]) || !std::isfinite(predicted[i])) continue;
    n += 1;
    const double d = truth[i] - mean;
    mean += d / n;
    m2 += d * (truth[i] - mean);
    se += (predicted[i] - truth[i]) * (predicted[i] - truth[i]);
  }
  if (n < 2) return 0.0;
  const double rmse = std::sqrt(se / n);
  const double sd = std::sqrt(m2 / n);
  if (rmse == 0) return sd == 0 ? 0.0 : std::numeric_limits<double>::infinity();
  return sd / rmse;
}

std::vector<double> minus(std::span<const double> a, const std::vector<double>& b) {
  std::vector<double> out(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) out[i] = a[i] - b[i];
  return out;
}

}  // namespace

ParityView choose_parity_view(std::span<const double> truth, std::span<const double> predicted,
                              const ParityReference* reference) {
  require(truth.size() == predicted.size(), "choose_parity_view: truth and predicted differ in length");
  if (spread_to_error(truth, predicted) <= kParityReadableRatio) return ParityView::values;
  if (reference != nullptr) {
    require(reference->values.size() == truth.size(), "choose_parity_view: one reference value per molecule");
    if (spread_to_error(minus(truth, reference->values), minus(predicted, reference->values)) <= kParityReadableRatio)
      return ParityView::referenced;
  }
  return ParityView::residuals;
}

std::string readable_parity_svg(const std::string& target, const std::string& unit, std::span<const double> truth,
                                std::span<const double> predicted, const ParityReference* reference,
                                const std::string& subset) {
  switch (choose_parity_view(truth, predicted, reference)) {
    case ParityView::values: return parity_svg(target, unit, truth, predicted, subset);
    case ParityView::referenced:
      return parity_svg(reference->name, unit, minus(truth, reference->values), minus(predicted, reference->values), subset);
    case ParityView::residuals:
      if (reference != nullptr)
        return residual_svg(reference->name, unit, minus(truth, reference->values), minus(predicted, reference->values),
                            subset);
      return residual_svg(target, unit, truth, predicted, subset);
  }
  return parity_svg(target, unit, truth, predicted, subset);
}


std::vector<std::filesystem::path> write_learning_curve_plots(const std::filesystem::path& dir, const LearningCurve& curve) {
  std::vector<std::filesystem::path> written;
  std::vector<double> epochs;
  for (const auto& r : curve.records()) epochs.push_back(static_cast<double>(r.epoch));
  for (std::size_t t = 0; t < curve.targets().size(); ++t) {
    std::vector<double> train, val;
    for (const auto& r : curve.records()) {
      train.push_back(r.train_mae[t]);
      val.push_back(r.val_mae[t]);
    }
    const auto& target = curve.targets()[t];
    const auto path = dir / ("learning_curve_" + target.name + ".svg");
    write_svg(path, learning_curve_svg(target.name, target.unit, epochs, train, val));
    written.push_back(path);
  }
  return written;
}

}  // namespace flt::train
