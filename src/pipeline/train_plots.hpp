// What the test parity plot of a target subtracts when the target's spread dwarfs its error
// (train::readable_parity_svg): QM9's free-atom energies for U0, U, H and G (the atomization
// energy, when every molecule holds only H, C, N, O, F), else the model's fitted per-element
// reference energies of an extensive target.
#pragma once

#include "models/molecule_model.hpp"
#include "pipeline/dataset.hpp"
#include "train/report_plots.hpp"

#include <optional>
#include <span>

namespace flt::pipeline {

// Per-molecule references for the molecules at `indices` of `data`, target `t`; nullopt when the
// target has none (intensive targets without QM9 free-atom energies).
std::optional<train::ParityReference> parity_reference(const Dataset& data, std::span<const std::size_t> indices,
                                                       std::size_t t, const models::Normalisation& normalisation);

}  // namespace flt::pipeline
