#include "attention/radial.hpp"

#include "core/error.hpp"

#include <cmath>
#include <numbers>
#include <string>

namespace flt::attn {

RadialNodes RadialNodes::bessel(Index count, double cutoff) {
  if (!(cutoff > 0) || !std::isfinite(cutoff))
    throw ConfigError("radial nodes: the cutoff must be positive and finite, got " + std::to_string(cutoff));
  RadialNodes nodes;
  nodes.count = count;
  nodes.spacing = 1.0 / (2.0 * cutoff);
  nodes.first = nodes.spacing;
  nodes.validate();
  return nodes;
}

void RadialNodes::validate() const {
  if (count < 1) throw ConfigError("radial nodes: need at least one node, got " + std::to_string(count));
  if (!(spacing > 0) || !std::isfinite(spacing))
    throw ConfigError("radial nodes: the spacing must be positive and finite");
  if (!(first >= 0) || !std::isfinite(first))
    throw ConfigError("radial nodes: the first node must be non-negative and finite");
}

double spherical_j0(double x) noexcept {
  const double ax = std::abs(x);
  if (ax < 1e-3) {
    const double x2 = x * x;
    return 1.0 - x2 / 6.0 + x2 * x2 / 120.0;  // next term x^6/5040 < 2e-22
  }
  return std::sin(x) / x;
}

double spherical_j0_derivative(double x) noexcept {
  const double ax = std::abs(x);
  if (ax < 1e-3) {
    const double x2 = x * x;
    return -x / 3.0 + x * x2 / 30.0;  // next term x^5/840 < 2e-18
  }
  return (x * std::cos(x) - std::sin(x)) / (x * x);
}

double spherical_j0_second_derivative(double x) noexcept {
  // From j0'' + (2 / x) j0' + j0 = 0; near 0 the series -1/3 + x^2 / 10 - x^4 / 168.
  const double ax = std::abs(x);
  if (ax < 1e-2) {
    const double x2 = x * x;
    return -1.0 / 3.0 + x2 / 10.0 - x2 * x2 / 168.0;  // next term x^6 / 6480 < 2e-16
  }
  return -spherical_j0(x) - 2.0 * spherical_j0_derivative(x) / x;
}

double envelope(double rho, double cutoff) noexcept {
  const double x = rho / cutoff;
  if (x >= 1.0) return 0.0;
  const double x2 = x * x, x6 = x2 * x2 * x2;
  return 1.0 + x6 * (-28.0 + x * (48.0 - 21.0 * x));
}

double envelope_derivative(double rho, double cutoff) noexcept {
  const double x = rho / cutoff;
  if (x >= 1.0) return 0.0;
  const double x2 = x * x, x5 = x2 * x2 * x;
  // d/dx (1 - 28 x^6 + 48 x^7 - 21 x^8) = -168 x^5 + 336 x^6 - 168 x^7 = -168 x^5 (1 - x)^2
  return -168.0 * x5 * (1.0 - x) * (1.0 - x) / cutoff;
}

double envelope_second_derivative(double rho, double cutoff) noexcept {
  const double x = rho / cutoff;
  if (x >= 1.0) return 0.0;
  const double x2 = x * x, x4 = x2 * x2;
  // d/dx (-168 x^5 (1 - x)^2) = -168 x^4 (1 - x) (5 - 7 x)
  return -168.0 * x4 * (1.0 - x) * (5.0 - 7.0 * x) / (cutoff * cutoff);
}

void radial_basis(const RadialNodes& nodes, double rho, double* values, double* derivatives) {
  // Angles t_n = 2 pi kappa_n rho advance by a fixed step, so sin t_n and cos t_n follow from the
  // angle-addition recurrence with one sin/cos pair for the start and one for the step (the
  // rounding error grows about linearly in n: below 1e-14 for a hundred nodes).
  const double two_pi = 2.0 * std::numbers::pi;
  const double t0 = two_pi * nodes.first * rho, dt = two_pi * nodes.spacing * rho;
  const double sd = std::sin(dt), cd = std::cos(dt);
  // The usual first nodes, 0 and the spacing, need no second sin/cos pair (the same values).
  double s = 0.0, c = 1.0;
  if (nodes.first == nodes.spacing) {
    s = sd;
    c = cd;
  } else if (nodes.first != 0.0) {
    s = std::sin(t0);
    c = std::cos(t0);
  }
  for (Index n = 0; n < nodes.count; ++n) {
    const double k = two_pi * nodes.kappa(n);  // d t_n / d rho
    const double t = k * rho;
    if (std::abs(t) < 1e-3) {
      values[n] = spherical_j0(t);
      if (derivatives) derivatives[n] = k * spherical_j0_derivative(t);
    } else {
      values[n] = s / t;
      if (derivatives) derivatives[n] = k * (t * c - s) / (t * t);
    }
    const double s_next = s * cd + c * sd;
    c = c * cd - s * sd;
    s = s_next;
  }
}

void radial_basis_second_derivative(const RadialNodes& nodes, double rho, double* second) {
  const double two_pi = 2.0 * std::numbers::pi;
  for (Index n = 0; n < nodes.count; ++n) {
    const double k = two_pi * nodes.kappa(n);
    second[n] = k * k * spherical_j0_second_derivative(k * rho);
  }
}

}  // namespace flt::attn
