// Spectral parameterisations of g (E15-E17, E19, E22), matching masks f, and proposals.
// R frequencies, T components, dc coordinate dimension.
#include "attention/spectrum.hpp"

#include "core/error.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

namespace flt::attn {

namespace {

constexpr double kPi = std::numbers::pi;

double softplus(double x) {
  if (x > 30.0) return x;
  if (x < -30.0) return std::exp(x);
  return std::log1p(std::exp(x));
}
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
// Inverse of softplus for y > 0.
double softplus_inverse(double y) { return y > 30.0 ? y : std::log(std::expm1(y)); }

// Dirichlet kernel D_v(x) = sin(pi (2v+1) x) / sin(pi x), D_v(0) = 2v + 1.
double dirichlet(Index v, double x) {
  const double s = std::sin(kPi * x);
  if (std::abs(s) < 1e-9) return static_cast<double>(2 * v + 1);
  return std::sin(kPi * static_cast<double>(2 * v + 1) * x) / s;
}
double sinc(double y) { return std::abs(y) < 1e-12 ? 1.0 : std::sin(kPi * y) / (kPi * y); }

// int_0^inf exp(-(s - kappa)^2 / sigma^2) s^2 ds in closed form (f(0) of a radial shell / 4 pi).
double shell_second_moment(double kappa, double sigma) {
  const double e = std::exp(-kappa * kappa / (sigma * sigma));
  const double i0 = 0.5 * sigma * std::sqrt(kPi) * std::erfc(-kappa / sigma);
  return i0 * (0.5 * sigma * sigma + kappa * kappa) + 0.5 * sigma * sigma * kappa * e;
}

// R directions spread over a half sphere (dc = 3), half circle (dc = 2) or signs (dc = 1),
// rotated by one uniformly random rotation. Each row is marginally uniform on the sphere.
Mat<double> spread_directions(Index R, Index dc, Rng& rng) {
  Mat<double> u(R, dc);
  if (dc == 1) {
    for (Index k = 0; k < R; ++k) u(k, 0) = rng.uniform() < 0.5 ? -1.0 : 1.0;
    return u;
  }
  if (dc == 2) {
    const double phi0 = 2.0 * kPi * rng.uniform();
    for (Index k = 0; k < R; ++k) {
      const double a = phi0 + kPi * (static_cast<double>(k) + 0.5) / static_cast<double>(R);
      u(k, 0) = std::cos(a);
      u(k, 1) = std::sin(a);
    }
    return u;
  }
  // Fibonacci points on the upper hemisphere (xi and -xi give the same cos term), then a Haar
  // random rotation from a uniformly random unit quaternion.
  const double golden = kPi * (3.0 - std::sqrt(5.0));
  Mat<double> base(R, 3);
  for (Index k = 0; k < R; ++k) {
    const double z = (static_cast<double>(k) + 0.5) / static_cast<double>(R);
    const double rad = std::sqrt(std::max(0.0, 1.0 - z * z));
    const double a = golden * static_cast<double>(k);
    base(k, 0) = rad * std::cos(a);
    base(k, 1) = rad * std::sin(a);
    base(k, 2) = z;
  }
  double q[4];
  double n2 = 0;
  do {
    n2 = 0;
    for (double& x : q) {
      x = rng.normal();
      n2 += x * x;
    }
  } while (n2 < 1e-12);
  const double inv = 1.0 / std::sqrt(n2);
  const double w = q[0] * inv, x = q[1] * inv, y = q[2] * inv, z = q[3] * inv;
  Eigen::Matrix3d rot;
  rot << 1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
      2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
      2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y);
  u = base * rot.transpose();
  return u;
}

}  // namespace

const char* to_string(SpectrumKind kind) noexcept {
  switch (kind) {
    case SpectrumKind::gaussian_mixture: return "gaussian_mixture";
    case SpectrumKind::radial_gaussian: return "radial_gaussian";
    case SpectrumKind::radial_shells: return "radial_shells";
    case SpectrumKind::local_window: return "local_window";
  }
  return "?";
}
const char* to_string(ProposalKind kind) noexcept {
  switch (kind) {
    case ProposalKind::gaussian: return "gaussian";
    case ProposalKind::uniform_box: return "uniform_box";
    case ProposalKind::spectrum: return "spectrum";
  }
  return "?";
}
SpectrumKind spectrum_kind_from_string(const std::string& name) {
  for (auto k : {SpectrumKind::gaussian_mixture, SpectrumKind::radial_gaussian,
                 SpectrumKind::radial_shells, SpectrumKind::local_window})
    if (name == to_string(k)) return k;
  throw ConfigError("unknown spectrum kind '" + name +
                    "' (gaussian_mixture, radial_gaussian, radial_shells, local_window)");
}
ProposalKind proposal_kind_from_string(const std::string& name) {
  for (auto k : {ProposalKind::gaussian, ProposalKind::uniform_box, ProposalKind::spectrum})
    if (name == to_string(k)) return k;
  throw ConfigError("unknown proposal '" + name + "' (gaussian, uniform_box, spectrum)");
}

Spectrum::Spectrum(SpectrumConfig config) : config_(std::move(config)) {
  const auto& c = config_;
  const Index dc = c.coord_dim, T = c.components;
  if (dc < 1 || dc > 3) throw ConfigError("spectrum: coordinate dimension must be 1, 2 or 3");
  if (T < 1) throw ConfigError("spectrum: need at least one component");
  if (!(c.proposal_scale > 0)) throw ConfigError("spectrum: proposal_scale must be positive");
  if (!(c.init_sigma_min > 0) || !(c.init_sigma_max >= c.init_sigma_min))
    throw ConfigError("spectrum: need 0 < init_sigma_min <= init_sigma_max");
  switch (c.kind) {
    case SpectrumKind::gaussian_mixture:
      tensors_ = {{"logw", T, 1}, {"mu", T, dc}, {"lambda", T, dc}};
      break;
    case SpectrumKind::radial_gaussian:
      tensors_ = {{"logw", T, 1}, {"lambda", T, 1}};
      break;
    case SpectrumKind::radial_shells:
      if (dc != 3) throw ConfigError("spectrum: radial_shells needs 3-D coordinates (E19)");
      tensors_ = {{"logw", T, 1}, {"kappa", T, 1}, {"lambda", T, 1}};
      break;
    case SpectrumKind::local_window:
      if (c.proposal != ProposalKind::uniform_box)
        throw ConfigError("spectrum: local_window needs the uniform_box proposal (integer grids)");
      if (static_cast<Index>(c.window_radii.size()) != T)
        throw ConfigError("spectrum: local_window needs one window radius per component");
      for (Index v : c.window_radii)
        if (v < 0) throw ConfigError("spectrum: window radii must be >= 0");
      tensors_ = {{"loga", T, 1}};
      break;
  }
  if (c.proposal == ProposalKind::spectrum && c.kind == SpectrumKind::local_window)
    throw ConfigError("spectrum: local_window cannot be sampled from |g| (signed Dirichlet "
                      "spectrum); use uniform_box");
  for (const auto& t : tensors_) num_params_ += t.rows * t.cols;
  sigma2_max_ = std::numeric_limits<double>::infinity();
  if (c.proposal == ProposalKind::gaussian) {
    const double s2 = c.proposal_scale * c.proposal_scale;
    sigma2_max_ = c.kind == SpectrumKind::radial_gaussian ? 2.0 * s2 : s2;
  }
}

double Spectrum::mixture_exponent(const Mat<double>& xi, Index k, const double* mu,
                                  const double* lam) const noexcept {
  double q = 0;
  for (Index a = 0; a < config_.coord_dim; ++a) {
    const double diff = xi(k, a) - mu[a];
    q += diff * diff * std::exp(-clamped_log_sigma2(lam[a]));
  }
  return q;
}

double Spectrum::clamped_log_sigma2(double lambda) const noexcept {
  if (!std::isfinite(sigma2_max_)) return lambda;
  const double lmax = std::log(sigma2_max_);
  return lmax - softplus(lmax - lambda);
}
double Spectrum::clamped_log_sigma2_derivative(double lambda) const noexcept {
  if (!std::isfinite(sigma2_max_)) return 1.0;
  return sigmoid(std::log(sigma2_max_) - lambda);
}

void Spectrum::init(std::span<double> p, Rng& rng) const {
  require(static_cast<Index>(p.size()) == num_params_, "Spectrum::init: wrong parameter count");
  const auto& c = config_;
  const Index T = c.components, dc = c.coord_dim;
  auto sigma_of = [&](Index t) {
    if (T == 1) return std::sqrt(c.init_sigma_min * c.init_sigma_max);
    const double a = static_cast<double>(t) / static_cast<double>(T - 1);
    return c.init_sigma_min * std::pow(c.init_sigma_max / c.init_sigma_min, a);
  };
  // lambda such that the clamped value equals log(sigma^2) (kept below the bound).
  auto lambda_of = [&](double sigma) {
    double ls = std::log(sigma * sigma);
    if (!std::isfinite(sigma2_max_)) return ls;
    const double lmax = std::log(sigma2_max_);
    ls = std::min(ls, lmax - 0.1);
    return lmax - softplus_inverse(lmax - ls);
  };
  auto eff_sigma = [&](double lambda) { return std::exp(0.5 * clamped_log_sigma2(lambda)); };
  const double share = 1.0 / static_cast<double>(T);
  switch (c.kind) {
    case SpectrumKind::gaussian_mixture: {
      double* logw = p.data();
      double* mu = logw + T;
      double* lam = mu + T * dc;
      for (Index t = 0; t < T; ++t) {
        double norm = 1.0;
        for (Index a = 0; a < dc; ++a) {
          mu[t * dc + a] = c.init_mean_stddev * rng.normal();
          lam[t * dc + a] = lambda_of(sigma_of(t));
          const double s = eff_sigma(lam[t * dc + a]);
          norm *= std::sqrt(kPi) * s;
        }
        logw[t] = std::log(share / norm);
      }
      break;
    }
    case SpectrumKind::radial_gaussian: {
      double* logw = p.data();
      double* lam = logw + T;
      for (Index t = 0; t < T; ++t) {
        lam[t] = lambda_of(sigma_of(t));
        const double s = eff_sigma(lam[t]);
        logw[t] = std::log(share / std::pow(std::sqrt(kPi) * s, static_cast<double>(dc)));
      }
      break;
    }
    case SpectrumKind::radial_shells: {
      double* logw = p.data();
      double* kap = logw + T;
      double* lam = kap + T;
      for (Index t = 0; t < T; ++t) {
        kap[t] = T == 1 ? 0.0 : c.init_kappa_max * static_cast<double>(t) / static_cast<double>(T - 1);
        lam[t] = lambda_of(sigma_of(t));
        const double s = eff_sigma(lam[t]);
        logw[t] = std::log(share / (4.0 * kPi * shell_second_moment(kap[t], s)));
      }
      break;
    }
    case SpectrumKind::local_window:
      for (Index t = 0; t < T; ++t) p[static_cast<std::size_t>(t)] = std::log(share);
      break;
  }
}

void Spectrum::evaluate(std::span<const double> p, const Mat<double>& xi,
                        std::span<double> g) const {
  const Index T = config_.components, dc = config_.coord_dim, R = xi.rows();
  require(xi.cols() == dc && static_cast<Index>(g.size()) == R &&
              static_cast<Index>(p.size()) == num_params_,
          "Spectrum::evaluate: shape mismatch");
  const double* logw = p.data();
  for (Index k = 0; k < R; ++k) {
    double sum = 0;
    for (Index t = 0; t < T; ++t) {
      const double w = std::exp(logw[t]);
      switch (config_.kind) {
        case SpectrumKind::gaussian_mixture: {
          const double* mu = logw + T + t * dc;
          const double* lam = logw + T + T * dc + t * dc;
          const double q = mixture_exponent(xi, k, mu, lam);
          sum += w * std::exp(-q);
          break;
        }
        case SpectrumKind::radial_gaussian:
          sum += w * std::exp(-xi.row(k).squaredNorm() * std::exp(-clamped_log_sigma2(logw[T + t])));
          break;
        case SpectrumKind::radial_shells: {
          const double diff = xi.row(k).norm() - logw[T + t];
          sum += w * std::exp(-diff * diff * std::exp(-clamped_log_sigma2(logw[2 * T + t])));
          break;
        }
        case SpectrumKind::local_window: {
          double prod = w;
          for (Index a = 0; a < dc; ++a)
            prod *= dirichlet(config_.window_radii[static_cast<std::size_t>(t)], xi(k, a));
          sum += prod;
          break;
        }
      }
    }
    g[static_cast<std::size_t>(k)] = sum;
  }
}

void Spectrum::evaluate_backward(std::span<const double> p, const Mat<double>& xi,
                                 std::span<const double> dg, std::span<double> dp) const {
  const Index T = config_.components, dc = config_.coord_dim, R = xi.rows();
  require(xi.cols() == dc && static_cast<Index>(dg.size()) == R &&
              static_cast<Index>(p.size()) == num_params_ &&
              static_cast<Index>(dp.size()) == num_params_,
          "Spectrum::evaluate_backward: shape mismatch");
  const double* logw = p.data();
  double* dlogw = dp.data();
  for (Index k = 0; k < R; ++k) {
    const double gk = dg[static_cast<std::size_t>(k)];
    if (gk == 0.0) continue;
    for (Index t = 0; t < T; ++t) {
      const double w = std::exp(logw[t]);
      switch (config_.kind) {
        case SpectrumKind::gaussian_mixture: {
          // E17 per axis: dg/dmu = w e 2 (xi - mu)/sigma^2, dg/dlambda = w e (xi - mu)^2/sigma^2
          const double* mu = logw + T + t * dc;
          const double* lam = logw + T + T * dc + t * dc;
          const double q = mixture_exponent(xi, k, mu, lam);
          const double we = w * std::exp(-q) * gk;
          dlogw[t] += we;
          for (Index a = 0; a < dc; ++a) {
            const double inv_s2 = std::exp(-clamped_log_sigma2(lam[a]));
            const double diff = xi(k, a) - mu[a];
            dp[static_cast<std::size_t>(T + t * dc + a)] += we * 2.0 * diff * inv_s2;
            dp[static_cast<std::size_t>(T + T * dc + t * dc + a)] +=
                we * diff * diff * inv_s2 * clamped_log_sigma2_derivative(lam[a]);
          }
          break;
        }
        case SpectrumKind::radial_gaussian: {
          const double lam = logw[T + t];
          const double inv_s2 = std::exp(-clamped_log_sigma2(lam));
          const double s2 = xi.row(k).squaredNorm();
          const double we = w * std::exp(-s2 * inv_s2) * gk;
          dlogw[t] += we;
          dp[static_cast<std::size_t>(T + t)] +=
              we * s2 * inv_s2 * clamped_log_sigma2_derivative(lam);
          break;
        }
        case SpectrumKind::radial_shells: {
          const double lam = logw[2 * T + t];
          const double inv_s2 = std::exp(-clamped_log_sigma2(lam));
          const double diff = xi.row(k).norm() - logw[T + t];
          const double we = w * std::exp(-diff * diff * inv_s2) * gk;
          dlogw[t] += we;
          dp[static_cast<std::size_t>(T + t)] += we * 2.0 * diff * inv_s2;
          dp[static_cast<std::size_t>(2 * T + t)] +=
              we * diff * diff * inv_s2 * clamped_log_sigma2_derivative(lam);
          break;
        }
        case SpectrumKind::local_window: {
          double prod = w * gk;
          for (Index a = 0; a < dc; ++a)
            prod *= dirichlet(config_.window_radii[static_cast<std::size_t>(t)], xi(k, a));
          dlogw[t] += prod;
          break;
        }
      }
    }
  }
}

double Spectrum::mask_at(std::span<const double> p, std::span<const double> z) const {
  const Index T = config_.components, dc = config_.coord_dim;
  require(static_cast<Index>(z.size()) == dc && static_cast<Index>(p.size()) == num_params_,
          "Spectrum::mask_at: shape mismatch");
  const double* logw = p.data();
  double z2 = 0;
  for (double v : z) z2 += v * v;
  double f = 0;
  for (Index t = 0; t < T; ++t) {
    const double w = std::exp(logw[t]);
    switch (config_.kind) {
      case SpectrumKind::gaussian_mixture: {  // E16, per axis
        const double* mu = logw + T + t * dc;
        const double* lam = logw + T + T * dc + t * dc;
        double term = w, phase = 0;
        for (Index a = 0; a < dc; ++a) {
          const double s2 = std::exp(clamped_log_sigma2(lam[a]));
          const double za = z[static_cast<std::size_t>(a)];
          term *= std::sqrt(kPi * s2) * std::exp(-kPi * kPi * s2 * za * za);
          phase += mu[a] * za;
        }
        f += term * std::cos(2.0 * kPi * phase);
        break;
      }
      case SpectrumKind::radial_gaussian: {
        const double s2 = std::exp(clamped_log_sigma2(logw[T + t]));
        f += w * std::pow(kPi * s2, 0.5 * static_cast<double>(dc)) * std::exp(-kPi * kPi * s2 * z2);
        break;
      }
      case SpectrumKind::radial_shells: {
        const double kappa = logw[T + t];
        const double sigma = std::exp(0.5 * clamped_log_sigma2(logw[2 * T + t]));
        const double rho = std::sqrt(z2);
        if (rho < 1e-9) {
          f += w * 4.0 * kPi * shell_second_moment(kappa, sigma);
          break;
        }
        // E19: f(rho) = (2/rho) int_0^inf G(s) s sin(2 pi s rho) ds, composite Simpson over the
        // support of this shell (|s - kappa| <= 10 sigma), >= 40 nodes per oscillation period.
        const double lo = std::max(0.0, kappa - 10.0 * sigma);
        const double hi = kappa + 10.0 * sigma;
        if (hi <= lo) break;
        const double periods = rho * (hi - lo);
        Index n = static_cast<Index>(std::ceil(std::max(400.0, 40.0 * periods)));
        if (n % 2) ++n;
        const double h = (hi - lo) / static_cast<double>(n);
        auto integrand = [&](double s) {
          const double d = (s - kappa) / sigma;
          return std::exp(-d * d) * s * std::sin(2.0 * kPi * s * rho);
        };
        double acc = integrand(lo) + integrand(hi);
        for (Index i = 1; i < n; ++i) acc += (i % 2 ? 4.0 : 2.0) * integrand(lo + h * static_cast<double>(i));
        f += w * (2.0 / rho) * acc * h / 3.0;
        break;
      }
      case SpectrumKind::local_window: {
        const Index v = config_.window_radii[static_cast<std::size_t>(t)];
        double term = w;
        for (Index a = 0; a < dc; ++a) {
          double s = 0;
          for (Index n = -v; n <= v; ++n) s += sinc(z[static_cast<std::size_t>(a)] - static_cast<double>(n));
          term *= s;
        }
        f += term;
        break;
      }
    }
  }
  return f;
}

void Spectrum::mask(std::span<const double> p, const Mat<double>& z, std::span<double> f) const {
  require(z.cols() == config_.coord_dim && static_cast<Index>(f.size()) == z.rows(),
          "Spectrum::mask: shape mismatch");
  std::vector<double> row(static_cast<std::size_t>(z.cols()));
  for (Index i = 0; i < z.rows(); ++i) {
    for (Index a = 0; a < z.cols(); ++a) row[static_cast<std::size_t>(a)] = z(i, a);
    f[static_cast<std::size_t>(i)] = mask_at(p, row);
  }
}

void Spectrum::sample(std::span<const double> p, Index R, Rng& rng, Mat<double>& xi,
                      Vec<double>& pdf) const {
  require(R > 0 && static_cast<Index>(p.size()) == num_params_, "Spectrum::sample: bad arguments");
  const auto& c = config_;
  const Index dc = c.coord_dim, T = c.components;
  xi.resize(R, dc);
  pdf.resize(R);
  auto chi = [&](double scale) {
    double s = 0;
    for (Index a = 0; a < dc; ++a) {
      const double x = rng.normal();
      s += x * x;
    }
    return scale * std::sqrt(s);
  };
  switch (c.proposal) {
    case ProposalKind::gaussian: {
      const double s0 = c.proposal_scale;
      if (c.spread_directions && dc >= 2) {
        const Mat<double> u = spread_directions(R, dc, rng);
        for (Index k = 0; k < R; ++k) xi.row(k) = chi(s0) * u.row(k);
      } else {
        for (Index k = 0; k < R; ++k)
          for (Index a = 0; a < dc; ++a) xi(k, a) = s0 * rng.normal();
      }
      const double norm = std::pow(2.0 * kPi * s0 * s0, -0.5 * static_cast<double>(dc));
      for (Index k = 0; k < R; ++k)
        pdf(k) = norm * std::exp(-xi.row(k).squaredNorm() / (2.0 * s0 * s0));
      return;
    }
    case ProposalKind::uniform_box:
      for (Index k = 0; k < R; ++k)
        for (Index a = 0; a < dc; ++a) xi(k, a) = rng.uniform() - 0.5;
      pdf.setOnes();
      return;
    case ProposalKind::spectrum: {
      // Blob masses: w_t prod_a sqrt(pi sigma_ta^2); g >= 0 so p = g / total mass.
      // Shells: mass_t = 4 pi w_t int_0^inf exp(-(s - kappa_t)^2/sigma_t^2) s^2 ds.
      std::vector<double> mass(static_cast<std::size_t>(T));
      double total = 0;
      const bool gm = c.kind == SpectrumKind::gaussian_mixture;
      const bool shells = c.kind == SpectrumKind::radial_shells;
      auto sigma_at = [&](Index t, Index a) {
        const double lam = gm ? p[static_cast<std::size_t>(T + T * dc + t * dc + a)]
                              : p[static_cast<std::size_t>((shells ? 2 * T : T) + t)];
        return std::exp(0.5 * clamped_log_sigma2(lam));
      };
      for (Index t = 0; t < T; ++t) {
        double m = std::exp(p[static_cast<std::size_t>(t)]);
        if (shells)
          m *= 4.0 * kPi * shell_second_moment(p[static_cast<std::size_t>(T + t)], sigma_at(t, 0));
        else
          for (Index a = 0; a < dc; ++a) m *= std::sqrt(kPi) * sigma_at(t, a);
        mass[static_cast<std::size_t>(t)] = m;
        total += m;
      }
      // Radius of shell t: density prop. to (u + kappa)^2 exp(-u^2/sigma^2), u = s - kappa >= -kappa,
      // by rejection from the envelope (2u^2 + 2 kappa^2) exp(-u^2/sigma^2), a mixture of a
      // Maxwell (|u| = sigma/sqrt2 chi_3, random sign) and a Gaussian N(0, sigma^2/2) with weights
      // sigma^2 : 2 kappa^2; accept with probability (u + kappa)^2 / (2u^2 + 2kappa^2).
      auto shell_radius = [&](Index t) {
        const double kappa = p[static_cast<std::size_t>(T + t)], sigma = sigma_at(t, 0);
        const double tau = sigma / std::sqrt(2.0);
        const double p_maxwell = sigma * sigma / (sigma * sigma + 2.0 * kappa * kappa);
        for (int iter = 0; iter < 1000000; ++iter) {
          double u;
          if (rng.uniform() < p_maxwell) {
            double q = 0;
            for (int a = 0; a < 3; ++a) {
              const double x = rng.normal();
              q += x * x;
            }
            u = tau * std::sqrt(q) * (rng.uniform() < 0.5 ? -1.0 : 1.0);
          } else {
            u = tau * rng.normal();
          }
          if (u < -kappa) continue;
          const double accept = (u + kappa) * (u + kappa) / (2.0 * u * u + 2.0 * kappa * kappa);
          if (rng.uniform() < accept) return u + kappa;
        }
        throw NumericalError("Spectrum::sample: radial shell sampler did not converge");
      };
      Mat<double> u;
      if (!gm && c.spread_directions && dc >= 2) u = spread_directions(R, dc, rng);
      if (shells && u.rows() == 0) {
        u.resize(R, dc);
        for (Index k = 0; k < R; ++k) {
          for (Index a = 0; a < dc; ++a) u(k, a) = rng.normal();
          u.row(k).normalize();
        }
      }
      for (Index k = 0; k < R; ++k) {
        double target = rng.uniform() * total;
        Index t = 0;
        while (t + 1 < T && target >= mass[static_cast<std::size_t>(t)]) {
          target -= mass[static_cast<std::size_t>(t)];
          ++t;
        }
        if (gm) {
          for (Index a = 0; a < dc; ++a)
            xi(k, a) = p[static_cast<std::size_t>(T + t * dc + a)] +
                       sigma_at(t, a) / std::sqrt(2.0) * rng.normal();
        } else if (shells) {
          xi.row(k) = shell_radius(t) * u.row(k);
        } else if (u.rows() > 0) {
          xi.row(k) = chi(sigma_at(t, 0) / std::sqrt(2.0)) * u.row(k);
        } else {
          for (Index a = 0; a < dc; ++a) xi(k, a) = sigma_at(t, 0) / std::sqrt(2.0) * rng.normal();
        }
      }
      std::vector<double> g(static_cast<std::size_t>(R));
      evaluate(p, xi, g);
      for (Index k = 0; k < R; ++k) pdf(k) = g[static_cast<std::size_t>(k)] / total;
      return;
    }
  }
}

}  // namespace flt::attn
