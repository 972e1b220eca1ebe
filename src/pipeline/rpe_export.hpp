// `flt rpe`: the learned relative positional encoding functions f(distance) of a model, per block
// (layer) and head, sampled on a distance grid, as CSV and as an SVG plot.
//
// Grid: `points` distances rho_i = i * max_distance / (points - 1), i = 0..points-1, in Angstrom.
// Values are dimensionless (LoadedModel::rpe_function): for "kronecker" the multiplicative
// attention mask f(rho) (f(0) = 1 at initialisation), for "bias" the additive logit bias
// beta_h f(rho), for "exact" the radial logit bias u_h(rho). The "performer" kind has no RPE
// (rpe_table throws InvalidArgument).
#pragma once

#include "pipeline/predict.hpp"

#include <filesystem>
#include <string>
#include <vector>

namespace flt::pipeline {

struct RpeCurve {
  Index block = 0;  // 0-based, as in the parameter names ("block0")
  Index head = 0;   // 0-based
  std::vector<double> values;  // one per distance
};

struct RpeTable {
  std::string attention;           // "kronecker", "bias", "exact"
  std::vector<double> distances;   // Angstrom
  std::vector<RpeCurve> curves;    // block-major: (0,0), (0,1), ..., (1,0), ...
};

// Samples every block and head. Throws InvalidArgument for max_distance <= 0, points < 2 or a
// model without RPE.
RpeTable rpe_table(const LoadedModel& model, double max_distance = 10.0, int points = 200);

// CSV: "distance [Angstrom],block0.head0,block0.head1,..." one row per distance (written
// atomically; "-" writes to standard output through `out` instead, see rpe_csv_text).
std::string rpe_csv_text(const RpeTable& table);
void write_rpe_csv(const std::filesystem::path& path, const RpeTable& table);

// One SVG: a panel per block (stacked vertically), one line per head, x = distance [Angstrom],
// y = f (dimensionless).
std::string rpe_svg(const RpeTable& table, const std::string& title);
void write_rpe_svg(const std::filesystem::path& path, const RpeTable& table, const std::string& title);

}  // namespace flt::pipeline
