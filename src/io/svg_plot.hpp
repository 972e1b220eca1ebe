// Standalone SVG x-y plots, written without any plotting dependency (lines and markers, linear or
// logarithmic y axis, ticks, grid, legend). The training reports (learning curves, parity plots)
// are built on it in train/report_plots.hpp. Open them in any browser; `rsvg-convert -o x.png
// x.svg` makes a PNG.
#pragma once

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

namespace flt::io {

struct PlotSeries {
  std::string label;
  std::vector<double> x, y;  // same length; non-finite points are skipped
  std::string color;         // SVG colour, e.g. "#1f77b4"
  bool line = true;          // polyline through the points
  bool markers = false;      // a dot at each point
};

struct PlotOptions {
  std::string title;
  std::string x_label, y_label;
  bool log_y = false;
  bool legend_left = false;  // legend in the top-left corner instead of the top-right
  int width = 640, height = 480;
};

// The extent of an axis: add() ignores non-finite values.
struct PlotRange {
  double lo = std::numeric_limits<double>::infinity();
  double hi = -std::numeric_limits<double>::infinity();
  void add(double v) {
    if (!std::isfinite(v)) return;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  bool empty() const { return !(lo <= hi); }
};
// Pads a degenerate or empty range so that the axis has some extent.
void pad_plot_range(PlotRange& range, bool log);

// A generic x-y plot (lines and/or markers) with axes, ticks, grid and a legend.
std::string line_plot_svg(const std::vector<PlotSeries>& series, const PlotOptions& options);

// Writes `svg` to `path` atomically.
void write_svg(const std::filesystem::path& path, const std::string& svg);

// "Nice" tick positions covering [lo, hi] (about `target` ticks, steps of 1, 2 or 5 x 10^k).
std::vector<double> nice_ticks(double lo, double hi, int target = 6);
// Tick positions for a log axis over [lo, hi] (lo > 0): decades, plus 2 and 5 when few decades.
std::vector<double> log_ticks(double lo, double hi);
// Escapes &, <, >, " for SVG text and attributes.
std::string xml_escape(std::string_view text);

}  // namespace flt::io
