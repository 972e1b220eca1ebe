// Spectral parameterisations of the RPE mask (method sections 3 and 5): the learned spectrum g of
// one head, its gradient with respect to its parameters (E17), the matching mask f (closed form or
// numerical radial transform, E16, E19), and the proposal p the frequencies xi_k are drawn from.
//
// Shapes: dc = coordinate dimension (1, 2 or 3); T = components; xi: R x dc (rows = frequencies).
// Units: xi is in cycles per coordinate unit (1/Angstrom for molecules, 1/position for grids).
//
// Kinds (w_t = exp(logw_t) > 0 and sigma_t^2 = exp(lambda_eff_t), see clamp below):
//   gaussian_mixture (any dc, anisotropic, E15-E16):
//     g(xi) = sum_t w_t exp(-sum_a (xi_a - mu_ta)^2 / sigma_ta^2)
//     f(z)  = sum_t w_t prod_a sqrt(pi sigma_ta^2) exp(-pi^2 sigma_ta^2 z_a^2) cos(2 pi mu_t . z)
//     tensors: logw (T x 1), mu (T x dc), lambda (T x dc)
//   radial_gaussian (any dc, rotation invariant, E15 with mu = 0):
//     g(xi) = sum_t w_t exp(-|xi|^2 / sigma_t^2),  f(z) = sum_t w_t (pi sigma_t^2)^(dc/2) exp(-pi^2 sigma_t^2 |z|^2)
//     tensors: logw (T x 1), lambda (T x 1)
//   radial_shells (dc = 3, rotation invariant, f oscillates in distance):
//     g(xi) = G(|xi|),  G(s) = sum_t w_t exp(-(s - kappa_t)^2 / sigma_t^2)
//     f(rho) = (2/rho) int_0^inf G(s) s sin(2 pi s rho) ds  (E19, evaluated by composite Simpson
//     quadrature; f(0) = 4 pi int_0^inf G(s) s^2 ds)
//     tensors: logw (T x 1), kappa (T x 1), lambda (T x 1)
//   local_window (integer grids, any dc, E22; window radii v_t fixed by configuration):
//     f(n) = sum_t a_t prod_a 1[|n_a| <= v_t] on integer offsets n,
//     g(xi) = sum_t a_t prod_a sin(pi (2 v_t + 1) xi_a) / sin(pi xi_a) on [-1/2, 1/2]^dc;
//     for non-integer z the estimator targets f(z) = sum_t a_t prod_a sum_{|n|<=v_t} sinc(z_a - n)
//     tensors: loga (T x 1)
//
// f(0) > 0 by construction: every weight is exp(.) > 0 and every kind's f(0) is a positive
// combination of the weights. Initialisation gives f(0) = 1 (equal share per component).
//
// Proposals (the density p of xi_k; c_k = g(xi_k)/p(xi_k), E7):
//   gaussian:    xi ~ N(0, s0^2 I). The importance weights g/p stay bounded only while every
//                sigma^2 <= 2 s0^2 (mu = 0) or sigma^2 <= s0^2 (with a mean shift mu or shell
//                radius kappa: the exponent then grows linearly otherwise), so lambda is clamped
//                smoothly: lambda_eff = lmax - softplus(lmax - lambda), lmax = log(sigma2_max()).
//                With spread_directions (dc >= 2) the directions of the R frequencies of one draw
//                are spread evenly (2-D: equally spaced angles on a half circle; 3-D: Fibonacci
//                points on a hemisphere), then rotated by one uniformly random rotation, and the
//                radii are drawn independently from s0 * chi(dc): every xi_k is still marginally
//                N(0, s0^2 I), so the estimator stays unbiased while its rotation error shrinks.
//   uniform_box: xi ~ U[-1/2, 1/2]^dc (integer grids: aliasing makes only this box matter).
//   spectrum:    xi drawn from g >= 0 itself at draw time (all kinds but local_window): blob t
//                with probability proportional to its mass, then xi = mu_t + sigma_t/sqrt(2) eps
//                (Gaussians) or radius from s^2 exp(-(s - kappa_t)^2/sigma_t^2) by exact rejection
//                sampling and a (spread) direction (shells). Every weight then equals the total
//                mass f(0): bounded, and the variance no longer depends on how narrow g is. This is
//                the recommended proposal (default): a fixed N(0, s0^2 I) proposal wastes almost
//                every sample when g is much narrower than s0 (with s0 = 1 and sigma = 0.15 in
//                3-D the relative standard deviation of the f(0) estimate from R = 64
//                frequencies is about 1; one draw gave 0.53 for f(0) = 1).
//                The density at draw time is stored with the frequencies (frozen proposal):
//                redraw after parameter updates (AttentionConfig::redraw_each_step).
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
  bool spread_directions = true;         // gaussian proposal, dc >= 2 (see header)
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
