#include "io/svg_plot.hpp"

#include "core/error.hpp"
#include "io/atomic_file.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace flt::io {
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

}  // namespace

void pad_plot_range(PlotRange& r, bool log) {
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
  PlotRange xr, yr;
  for (const auto& s : series) {
    require(s.x.size() == s.y.size(), "line_plot_svg: x and y differ in length for " + s.label);
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i]) || (o.log_y && s.y[i] <= 0)) continue;
      xr.add(s.x[i]);
      yr.add(s.y[i]);
    }
  }
  pad_plot_range(xr, false);
  pad_plot_range(yr, o.log_y);
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

void write_svg(const std::filesystem::path& path, const std::string& svg) { write_file_atomic(path, svg); }

}  // namespace flt::io
