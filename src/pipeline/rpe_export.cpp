// Sampling, CSV and SVG of the learned RPE functions (see rpe_export.hpp).
#include "pipeline/rpe_export.hpp"

#include "core/error.hpp"
#include "io/atomic_file.hpp"
#include "io/csv.hpp"
#include "io/svg_plot.hpp"

#include <sstream>

namespace flt::pipeline {

RpeTable rpe_table(const LoadedModel& model, double max_distance, int points) {
  require(max_distance > 0 && std::isfinite(max_distance), "rpe: the maximum distance must be positive");
  require(points >= 2, "rpe: at least 2 points are needed");
  const auto& config = model.config();
  if (config.attention == models::AttentionKind::performer)
    throw InvalidArgument("rpe: the model " + model.source() +
                          " uses the 'performer' attention, which has no relative positional encoding");
  RpeTable table;
  table.attention = models::to_string(config.attention);
  table.distances.resize(static_cast<std::size_t>(points));
  for (int i = 0; i < points; ++i)
    table.distances[static_cast<std::size_t>(i)] = max_distance * i / (points - 1);
  for (Index b = 0; b < config.blocks; ++b)
    for (Index h = 0; h < config.heads; ++h)
      table.curves.push_back({b, h, model.rpe_function(b, h, table.distances)});
  return table;
}

std::string rpe_csv_text(const RpeTable& table) {
  std::ostringstream o;
  std::vector<std::string> header{"distance [Angstrom]"};
  for (const auto& c : table.curves)
    header.push_back("block" + std::to_string(c.block) + ".head" + std::to_string(c.head));
  io::write_csv_row(o, header);
  for (std::size_t i = 0; i < table.distances.size(); ++i) {
    std::vector<std::string> row{io::csv_number(table.distances[i])};
    for (const auto& c : table.curves) row.push_back(io::csv_number(c.values[i]));
    io::write_csv_row(o, row);
  }
  return o.str();
}

void write_rpe_csv(const std::filesystem::path& path, const RpeTable& table) {
  io::write_file_atomic(path, rpe_csv_text(table));
}

std::string rpe_svg(const RpeTable& table, const std::string& title) {
  static const char* kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  Index blocks = 0;
  for (const auto& c : table.curves) blocks = std::max(blocks, c.block + 1);
  const int panel_w = 720, panel_h = 400;
  std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(panel_w) +
                    "\" height=\"" + std::to_string(panel_h * blocks) + "\">\n";
  for (Index b = 0; b < blocks; ++b) {
    std::vector<io::PlotSeries> series;
    for (const auto& c : table.curves) {
      if (c.block != b) continue;
      io::PlotSeries s;
      s.label = "head " + std::to_string(c.head);
      s.x = table.distances;
      s.y = c.values;
      s.color = kColors[static_cast<std::size_t>(c.head) % (sizeof kColors / sizeof kColors[0])];
      series.push_back(std::move(s));
    }
    io::PlotOptions options;
    options.title = title + " - block " + std::to_string(b) + " (" + table.attention + ")";
    options.x_label = "distance [Angstrom]";
    options.y_label = table.attention == "kronecker" ? "f(distance) (attention mask)"
                                                     : "f(distance) (logit bias)";
    options.width = panel_w;
    options.height = panel_h;
    // Each panel is a complete <svg>, nested at its offset (nested svg elements are positioned by
    // their x/y attributes).
    std::string panel = io::line_plot_svg(series, options);
    const auto at = panel.find("<svg");
    if (at != std::string::npos)
      panel.insert(at + 4, " x=\"0\" y=\"" + std::to_string(panel_h * b) + "\"");
    svg += panel.substr(at == std::string::npos ? 0 : at);
  }
  svg += "</svg>\n";
  return svg;
}

void write_rpe_svg(const std::filesystem::path& path, const RpeTable& table, const std::string& title) {
  io::write_svg(path, rpe_svg(table, title));
}

}  // namespace flt::pipeline
