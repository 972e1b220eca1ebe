// Radial functions shared by the exact near field and the Fourier far field of the geometric FLT
// attention: the smooth cutoff envelope and the spherical-Bessel basis on radial frequency nodes.
//
// A radial mask f(rho) = f(|r_i - r_j|) has the radial spectrum of (E29),
//   f(rho) = integral_0^inf 4 pi kappa^2 G(kappa) j0(2 pi kappa rho) d kappa,  j0(x) = sin(x)/x.
// On frequency nodes kappa_n this becomes a finite sum of j0 terms; every radial function of the
// model is such a sum over one set of nodes: the near-field filters (learned linear combinations)
// and the far-field mask (non-negative combinations, positive definite by Bochner).
//
//   basis:     b_n(rho) = j0(2 pi kappa_n rho),  kappa_n = first + n spacing  (cycles / Angstrom)
//   envelope:  e(rho) = 1 - 28 x^6 + 48 x^7 - 21 x^8 for x = rho / r_c < 1, else 0
//              (the p = 6 polynomial of DimeNet: e(0) = 1, e'(0) = 0, and e, e', e'' vanish at
//              r_c, so a function multiplied by it goes to zero smoothly at the cutoff).
#pragma once

#include "core/tensor.hpp"

namespace flt::attn {

// Frequency nodes kappa_n = first + n * spacing, n = 0..count-1 (cycles per Angstrom).
struct RadialNodes {
  Index count = 16;
  double spacing = 0.1;
  double first = 0.1;

  double kappa(Index n) const noexcept { return first + static_cast<double>(n) * spacing; }
  // The nodes of the sine (Bessel) basis on [0, r_c]: kappa_n = (n + 1) / (2 r_c), i.e.
  // b_n(rho) = sin((n + 1) pi rho / r_c) / ((n + 1) pi rho / r_c).
  static RadialNodes bessel(Index count, double cutoff);
  void validate() const;  // throws ConfigError
};

// j0(x) = sin(x) / x with j0(0) = 1, and its derivative (accurate near 0 by a series).
double spherical_j0(double x) noexcept;
double spherical_j0_derivative(double x) noexcept;
double spherical_j0_second_derivative(double x) noexcept;

// Envelope value and derivative d e / d rho (zero for rho >= cutoff).
double envelope(double rho, double cutoff) noexcept;
double envelope_derivative(double rho, double cutoff) noexcept;
double envelope_second_derivative(double rho, double cutoff) noexcept;

// b_n(rho) for every node into `values` (count entries) and, if `derivatives` is non-null,
// d b_n / d rho. Uses the Chebyshev recurrence for sin(n t) when the nodes are equally spaced
// from first = spacing (the Bessel nodes), direct sin otherwise.
void radial_basis(const RadialNodes& nodes, double rho, double* values, double* derivatives);
// Second derivatives b_n''(rho) = (2 pi kappa_n)^2 j0''(2 pi kappa_n rho) (for exact second
// derivatives of the model, core/dual.hpp).
void radial_basis_second_derivative(const RadialNodes& nodes, double rho, double* second);

}  // namespace flt::attn
