// Spectral parameterisations of the RPE mask (method sections 3 and 5): the learned spectrum g of
// one head, its gradient with respect to its parameters (E17), the matching mask f (closed form or
// numerical radial transform, E16, E19), and the proposal p the frequencies xi_k are drawn from.
//
// Shapes: dc = coordinate dimension (1, 2 or 3); T = components; xi: R x dc (rows = frequencies),
// in cycles per coordinate unit (1/Angstrom for molecules, 1/position for grids).
// Kinds (w_t = exp(logw_t) > 0, sigma_t^2 = exp(lambda_eff_t)):
//   gaussian_mixture (E15-E16): g(xi) = sum_t w_t exp(-sum_a (xi_a - mu_ta)^2 / sigma_ta^2)
//   radial_gaussian (E15, mu = 0): g(xi) = sum_t w_t exp(-|xi|^2 / sigma_t^2)
//   radial_shells (dc = 3, E19): g(xi) = sum_t w_t exp(-(|xi| - kappa_t)^2 / sigma_t^2)
//   local_window (integer grids, E22): f(n) = sum_t a_t prod_a 1[|n_a| <= v_t]
// Proposals (c_k = g(xi_k) / p(xi_k), E7): gaussian N(0, s0^2 I), uniform_box U[-1/2, 1/2]^dc,
// spectrum (xi drawn from g itself; the default). f(0) > 0 by construction, 1 at initialisation.
// Each kind's f and tensors, the clamp of sigma, the proposals and their variance:
// docs/attention.md, "Spectra".
#pragma once

#include "core/random.hpp"
#include "core/tensor.hpp"

#include <span>
#include <string>
#include <vector>

namespace flt::attn {

enum class SpectrumKind { gaussian_mixture, radial_gaussian, radial_shells, local_window };
enum class ProposalKind { gaussian, uniform_box, spectrum };

const char* to_string(SpectrumKind kind) noexcept;
const char* to_string(ProposalKind kind) noexcept;
SpectrumKind spectrum_kind_from_string(const std::string& name);  // throws ConfigError
ProposalKind proposal_kind_from_string(const std::string& name);  // throws ConfigError

struct SpectrumConfig {
  SpectrumKind kind = SpectrumKind::radial_gaussian;
  Index coord_dim = 3;                   // dc
  Index components = 4;                  // T
  ProposalKind proposal = ProposalKind::spectrum;
  double proposal_scale = 1.0;           // s0 of the gaussian proposal (cycles per unit)
  bool spread_directions = true;         // gaussian proposal, dc >= 2 (docs/attention.md)
  std::vector<Index> window_radii;       // local_window: v_t per component (size T, each >= 0)
  // Initialisation (per component t of T, geometric ladders so the heads start multi-scale):
  double init_sigma_min = 0.15;          // smallest sigma_t (cycles per unit)
  double init_sigma_max = 0.6;           // largest sigma_t
  double init_mean_stddev = 0.0;         // gaussian_mixture: mu_t ~ N(0, this^2)
  double init_kappa_max = 0.5;           // radial_shells: kappa_t evenly spaced in [0, this]
};

// A spectrum family; the parameters of one head are a flat vector (tensors() concatenated, each
// row-major). Stateless apart from the configuration: thread-safe.
class Spectrum {
 public:
  struct Tensor {
    std::string name;
    Index rows;
    Index cols;
  };

  explicit Spectrum(SpectrumConfig config);  // validates; throws ConfigError

  const SpectrumConfig& config() const noexcept { return config_; }
  Index dim() const noexcept { return config_.coord_dim; }
  const std::vector<Tensor>& tensors() const noexcept { return tensors_; }
  Index num_params() const noexcept { return num_params_; }

  // Upper bound on sigma^2 enforced by the smooth clamp (infinity when there is none).
  double sigma2_max() const noexcept { return sigma2_max_; }

  // Initial parameters of one head (f(0) = 1); rng supplies mu_t for gaussian_mixture.
  void init(std::span<double> params, Rng& rng) const;

  // g(xi_k) for every row of xi (R x dc).
  void evaluate(std::span<const double> params, const Mat<double>& xi, std::span<double> g) const;
  // dparams += sum_k dg[k] * dg(xi_k)/dparams  (E17 and its analogues).
  void evaluate_backward(std::span<const double> params, const Mat<double>& xi,
                         std::span<const double> dg, std::span<double> dparams) const;

  // f(z) for every row of z (n x dc).
  void mask(std::span<const double> params, const Mat<double>& z, std::span<double> f) const;
  double mask_at(std::span<const double> params, std::span<const double> z) const;

  // Draws R frequencies and stores the proposal density at each (frozen at draw time).
  void sample(std::span<const double> params, Index R, Rng& rng, Mat<double>& xi,
              Vec<double>& pdf) const;

  // sigma^2 of the effective (clamped) lambda, and d sigma^2-log / d lambda (chain factor).
  double clamped_log_sigma2(double lambda) const noexcept;
  double clamped_log_sigma2_derivative(double lambda) const noexcept;
  // q = sum_a (xi_ka - mu_a)^2 / sigma_a^2 of a gaussian_mixture component (E16's exponent).
  double mixture_exponent(const Mat<double>& xi, Index k, const double* mu, const double* lam) const noexcept;

 private:
  SpectrumConfig config_;
  std::vector<Tensor> tensors_;
  Index num_params_ = 0;
  double sigma2_max_ = 0.0;
};

}  // namespace flt::attn
