#include "train/svg_plot.hpp"

#include "core/error.hpp"
#include "train/atomic_file.hpp"
#include "train/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace flt::train {
namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

std::string tick_label(double v, double step) {
  char buf[32];
  const double a = std::fabs(v);
  if (v == 0) return "0";
  if (a >= 1e5 || a < 1e-3) {
    std::snprintf(buf, sizeof buf, "%.3g", v);
  } else {
    const int decimals = step >= 1 ? 0 : std::min(6, static_cast<int>(std::ceil(-std::log10(step) - 1e-9)));
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  }
  return buf;
}

std::string log_tick_label(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

struct Range {
  double lo = std::numeric_limits<double>::infinity();
  double hi = -std::numeric_limits<double>::infinity();
  void add(double v) {
    if (!std::isfinite(v)) return;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  bool empty() const { return !(lo <= hi); }
};

// Pads a degenerate or empty range so the axis has some extent.
void pad_range(Range& r, bool log) {
  if (r.empty()) {
    r.lo = log ? 0.1 : 0.0;
    r.hi = log ? 10.0 : 1.0;
  } else if (r.lo == r.hi) {
    if (log) {
      r.lo /= 2;
      r.hi *= 2;
    } else {
      const double d = r.lo == 0 ? 1.0 : std::fabs(r.lo) * 0.1;
      r.lo -= d;
      r.hi += d;
    }
  }
}

}  // namespace

std::string xml_escape(std::string_view text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

std::vector<double> nice_ticks(double lo, double hi, int target) {
  std::vector<double> ticks;
  if (!(hi > lo) || !std::isfinite(lo) || !std::isfinite(hi)) return ticks;
  const double raw = (hi - lo) / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (const double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  const double first = std::ceil(lo / step - 1e-9) * step;
  for (int i = 0; i < 100; ++i) {
    const double t = first + i * step;
    if (t > hi + step * 1e-9) break;
    ticks.push_back(std::fabs(t) < step * 1e-9 ? 0.0 : t);
  }
  return ticks;
}

std::vector<double> log_ticks(double lo, double hi) {
  std::vector<double> ticks;
  if (!(lo > 0) || !(hi > lo)) return ticks;
  const int d0 = static_cast<int>(std::floor(std::log10(lo)));
  const int d1 = static_cast<int>(std::ceil(std::log10(hi)));
  const bool minor = d1 - d0 <= 3;
  for (int d = d0; d <= d1; ++d) {
    const double base = std::pow(10.0, d);
    for (const double m : {1.0, 2.0, 5.0}) {
      if (m != 1.0 && !minor) continue;
      const double t = m * base;
      if (t >= lo * (1 - 1e-9) && t <= hi * (1 + 1e-9)) ticks.push_back(t);
    }
  }
  return ticks;
}

std::string line_plot_svg(const std::vector<PlotSeries>& series, const PlotOptions& o) {
  const double left = 78, right = 20, top = o.title.empty() ? 20 : 44, bottom = 58;
  const double pw = o.width - left - right, ph = o.height - top - bottom;
  Range xr, yr;
  for (const auto& s : series) {
    require(s.x.size() == s.y.size(), "line_plot_svg: x and y differ in length for " + s.label);
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i]) || (o.log_y && s.y[i] <= 0)) continue;
      xr.add(s.x[i]);
      yr.add(s.y[i]);
    }
  }
  pad_range(xr, false);
  pad_range(yr, o.log_y);
  std::vector<double> yt;
  if (o.log_y) {
    // Whole decades (or a factor-2 margin) around the data.
    yr.lo = std::pow(10.0, std::floor(std::log10(yr.lo)));
    yr.hi = std::pow(10.0, std::ceil(std::log10(yr.hi)));
    if (yr.lo == yr.hi) yr.hi *= 10;
    yt = log_ticks(yr.lo, yr.hi);
  } else {
    const double margin = 0.05 * (yr.hi - yr.lo);
    yr.lo -= margin;
    yr.hi += margin;
    yt = nice_ticks(yr.lo, yr.hi);
  }
  const auto xt = nice_ticks(xr.lo, xr.hi);
  auto sx = [&](double x) { return left + (x - xr.lo) / (xr.hi - xr.lo) * pw; };
  auto sy = [&](double y) {
    const double f = o.log_y ? (std::log10(y) - std::log10(yr.lo)) / (std::log10(yr.hi) - std::log10(yr.lo))
                             : (y - yr.lo) / (yr.hi - yr.lo);
    return top + (1 - f) * ph;
  };
  std::string svg;
  svg += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(o.width) + "\" height=\"" +
         std::to_string(o.height) + "\" viewBox=\"0 0 " + std::to_string(o.width) + " " + std::to_string(o.height) +
         "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"13\">\n";
  svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  if (!o.title.empty())
    svg += "<text x=\"" + num(left + pw / 2) + "\" y=\"26\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\">" +
           xml_escape(o.title) + "</text>\n";
  // Grid and ticks.
  svg += "<g stroke=\"#e3e3e3\" stroke-width=\"1\">\n";
  for (const double t : xt) svg += "<line x1=\"" + num(sx(t)) + "\" y1=\"" + num(top) + "\" x2=\"" + num(sx(t)) + "\" y2=\"" + num(top + ph) + "\"/>\n";
  for (const double t : yt) svg += "<line x1=\"" + num(left) + "\" y1=\"" + num(sy(t)) + "\" x2=\"" + num(left + pw) + "\" y2=\"" + num(sy(t)) + "\"/>\n";
  svg += "</g>\n";
  svg += "<rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" + num(pw) + "\" height=\"" + num(ph) +
         "\" fill=\"none\" stroke=\"#333\"/>\n";
  const double xstep = xt.size() > 1 ? xt[1] - xt[0] : 1.0;
  for (const double t : xt)
    svg += "<text x=\"" + num(sx(t)) + "\" y=\"" + num(top + ph + 18) + "\" text-anchor=\"middle\">" + tick_label(t, xstep) + "</text>\n";
  const double ystep = yt.size() > 1 ? yt[1] - yt[0] : 1.0;
  for (const double t : yt)
    svg += "<text x=\"" + num(left - 6) + "\" y=\"" + num(sy(t) + 4) + "\" text-anchor=\"end\">" +
           (o.log_y ? log_tick_label(t) : tick_label(t, ystep)) + "</text>\n";
  svg += "<text x=\"" + num(left + pw / 2) + "\" y=\"" + num(o.height - 14.0) + "\" text-anchor=\"middle\">" + xml_escape(o.x_label) + "</text>\n";
  svg += "<text transform=\"translate(18 " + num(top + ph / 2) + ") rotate(-90)\" text-anchor=\"middle\">" + xml_escape(o.y_label) + "</text>\n";
  // Data, clipped to the plot area.
  svg += "<clipPath id=\"plot\"><rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" + num(pw) + "\" height=\"" + num(ph) + "\"/></clipPath>\n";
  svg += "<g clip-path=\"url(#plot)\">\n";
  for (const auto& s : series) {
    std::string points;
    std::string dots;
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i]) || (o.log_y && s.y[i] <= 0)) continue;
      const std::string px = num(sx(s.x[i])), py = num(sy(s.y[i]));
      points += px + "," + py + " ";
      if (s.markers) dots += "<circle cx=\"" + px + "\" cy=\"" + py + "\" r=\"2.2\"/>";
    }
    if (s.line && !points.empty())
      svg += "<polyline fill=\"none\" stroke=\"" + xml_escape(s.color) + "\" stroke-width=\"2\" points=\"" + points + "\"/>\n";
    if (!dots.empty()) svg += "<g fill=\"" + xml_escape(s.color) + "\" fill-opacity=\"0.55\">" + dots + "</g>\n";
  }
  svg += "</g>\n";
  // Legend (top right inside the plot).
  // Series without a label (e.g. the second of a pair of lines) stay out of the legend.
  std::vector<std::size_t> listed;
  std::size_t longest = 0;
  for (std::size_t i = 0; i < series.size(); ++i) {
    if (series[i].label.empty()) continue;
    listed.push_back(i);
    longest = std::max(longest, series[i].label.size());
  }
  const double lw = 40 + 7.2 * static_cast<double>(longest), lh = 8 + 20.0 * static_cast<double>(listed.size());
  const double lx = o.legend_left ? left + 8 : left + pw - lw - 8, ly = top + 8;
  if (!listed.empty()) {
    svg += "<rect x=\"" + num(lx) + "\" y=\"" + num(ly) + "\" width=\"" + num(lw) + "\" height=\"" + num(lh) +
           "\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#999\"/>\n";
    for (std::size_t k = 0; k < listed.size(); ++k) {
      const std::size_t i = listed[k];
      const double y = ly + 16 + 20.0 * static_cast<double>(k);
      if (series[i].line)
        svg += "<line x1=\"" + num(lx + 6) + "\" y1=\"" + num(y - 4) + "\" x2=\"" + num(lx + 28) + "\" y2=\"" + num(y - 4) +
               "\" stroke=\"" + xml_escape(series[i].color) + "\" stroke-width=\"2\"/>\n";
      else
        svg += "<circle cx=\"" + num(lx + 17) + "\" cy=\"" + num(y - 4) + "\" r=\"3\" fill=\"" + xml_escape(series[i].color) + "\"/>\n";
      svg += "<text x=\"" + num(lx + 34) + "\" y=\"" + num(y) + "\">" + xml_escape(series[i].label) + "</text>\n";
    }
  }
  svg += "</svg>\n";
  return svg;
}

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

std::string parity_svg(const std::string& target, const std::string& unit, std::span<const double> truth,
                       std::span<const double> predicted, const std::string& subset) {
  require(truth.size() == predicted.size(), "parity_svg: truth and predicted differ in length");
  const Metrics m = compute_metrics(predicted, truth);
  PlotSeries points{"", {}, {}, "#1f77b4", false, true};
  Range r;
  for (std::size_t i = 0; i < truth.size(); ++i) {
    if (!std::isfinite(truth[i]) || !std::isfinite(predicted[i])) continue;
    points.x.push_back(truth[i]);
    points.y.push_back(predicted[i]);
    r.add(truth[i]);
    r.add(predicted[i]);
  }
  pad_range(r, false);
  const double margin = 0.04 * (r.hi - r.lo);
  char mae[64];
  std::snprintf(mae, sizeof mae, "%.4g", m.mae);
  points.label = subset + ": n = " + std::to_string(points.x.size()) + ", MAE = " + mae + (unit.empty() ? "" : " " + unit);
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
  require(truth.size() == predicted.size(), "residual_svg: truth and predicted differ in length");
  const Metrics m = compute_metrics(predicted, truth);
  PlotSeries points{"", {}, {}, "#1f77b4", false, true};
  Range r;
  for (std::size_t i = 0; i < truth.size(); ++i) {
    if (!std::isfinite(truth[i]) || !std::isfinite(predicted[i])) continue;
    points.x.push_back(truth[i]);
    points.y.push_back(predicted[i] - truth[i]);
    r.add(truth[i]);
  }
  pad_range(r, false);
  const double margin = 0.04 * (r.hi - r.lo);
  char mae[64];
  std::snprintf(mae, sizeof mae, "%.4g", m.mae);
  const std::string u = unit.empty() ? std::string() : " " + unit;
  points.label = subset + ": n = " + std::to_string(points.x.size()) + ", MAE = " + mae + u;
  const std::vector<double> span_x = {r.lo - margin, r.hi + margin};
  PlotSeries zero{"zero error", span_x, {0.0, 0.0}, "#555555", true, false};
  std::vector<PlotSeries> series = {zero};
  if (std::isfinite(m.mae) && m.mae > 0) {
    series.push_back({std::string("+-MAE (") + mae + u + ")", span_x, {m.mae, m.mae}, "#d62728", true, false});
    series.push_back({"", span_x, {-m.mae, -m.mae}, "#d62728", true, false});
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

void write_svg(const std::filesystem::path& path, const std::string& svg) { write_file_atomic(path, svg); }

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
