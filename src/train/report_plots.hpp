// Pictures of a training run on io/svg_plot.hpp: the learning curve (train and validation MAE per
// epoch, logarithmic y axis) and parity plots (predicted against true with the y = x line and the
// MAE in the legend, or residuals where the spread of the target dwarfs its error). Units are on
// the axes.
#pragma once

#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace flt::train {

// Learning curve for one target: MAE per epoch in `unit`, train and validation, log y axis.
std::string learning_curve_svg(const std::string& target, const std::string& unit, std::span<const double> epochs,
                               std::span<const double> train_mae, std::span<const double> val_mae);
// Parity plot for one target; pairs with a NaN are skipped. The legend shows n and the MAE.
std::string parity_svg(const std::string& target, const std::string& unit, std::span<const double> truth,
                       std::span<const double> predicted, const std::string& subset = "test");

// A parity plot only shows something when the spread of the target is not many times its error:
// QM9's U0 spans thousands of eV (it grows with the number of atoms) against errors of a few
// hundredths, and every point then lies on the diagonal. The rule: with ratio = standard deviation
// of the true values / RMSE of the predictions, a ratio up to kParityReadableRatio gives the
// ordinary parity plot (the plot is about 480 px across: a larger ratio puts a typical error
// within a pixel or two of the diagonal). Above it, if per-molecule atom reference energies are
// given (QM9's free atoms, or the model's per-element references), the parity plot of the value
// minus the reference (e.g. the atomization energy) when its ratio is readable; otherwise the
// residuals (predicted - true) against the true value (minus the reference, if any).
constexpr double kParityReadableRatio = 100.0;
enum class ParityView { values, referenced, residuals };
const char* to_string(ParityView view) noexcept;

// Per-molecule reference values in the target's unit: what the "referenced" view subtracts.
struct ParityReference {
  std::string name;  // the quantity after subtraction, e.g. "atomization energy U0_atom"
  std::vector<double> values;
};

// The view the rule above picks; `reference` may be null (none available).
ParityView choose_parity_view(std::span<const double> truth, std::span<const double> predicted,
                              const ParityReference* reference);
// The picture of that view (parity_svg for values; residual_svg for residuals).
std::string readable_parity_svg(const std::string& target, const std::string& unit, std::span<const double> truth,
                                std::span<const double> predicted, const ParityReference* reference,
                                const std::string& subset = "test");
// Residuals (predicted - true) against the true value, with the zero line and +-MAE lines.
std::string residual_svg(const std::string& target, const std::string& unit, std::span<const double> truth,
                         std::span<const double> predicted, const std::string& subset = "test");

class LearningCurve;
// Writes dir/learning_curve_<target>.svg for every target of `curve` (one picture per target, as
// targets have different units); returns the paths written.
std::vector<std::filesystem::path> write_learning_curve_plots(const std::filesystem::path& dir, const LearningCurve& curve);

}  // namespace flt::train
