// Performer features (E2, E27), spectra (E15-E19, E22) and the RPE estimator (E7, E8).
#include "core/error.hpp"
#include "core/gradcheck.hpp"
#include "core/random.hpp"
#include "attention/performer.hpp"
#include "attention/fourier_features.hpp"
#include "attention/spectrum.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <numbers>
#include <vector>

using namespace flt;
using namespace flt::attn;

namespace {

SpectrumConfig spectrum_config(SpectrumKind kind, ProposalKind proposal, Index dc) {
  SpectrumConfig c;
  c.kind = kind;
  c.proposal = proposal;
  c.coord_dim = dc;
  c.components = 3;
  if (kind == SpectrumKind::local_window) c.window_radii = {0, 2, 5};
  if (kind == SpectrumKind::gaussian_mixture) c.init_mean_stddev = 0.3;
  return c;
}

std::vector<double> init_params(const Spectrum& s, std::uint64_t seed) {
  std::vector<double> p(static_cast<std::size_t>(s.num_params()));
  Rng rng(seed);
  s.init(p, rng);
  // move away from the symmetric initial point so every parameter matters
  for (auto& v : p) v += 0.1 * rng.normal();
  return p;
}

}  // namespace

TEST_CASE("Performer frequencies: orthogonal blocks with chi or fixed norms", "[flt][performer]") {
  Rng rng(5);
  const Index D = 6, m = 14;
  const Mat<double> W = draw_performer_frequencies(m, D, true, FeatureNorms::fixed, rng);
  for (Index a = 0; a < m; ++a) CHECK(W.row(a).norm() == Approx(std::sqrt(6.0)).epsilon(1e-12));
  // rows inside a block of D are mutually orthogonal
  for (Index blk = 0; blk < m; blk += D)
    for (Index a = blk; a < std::min(m, blk + D); ++a)
      for (Index b = a + 1; b < std::min(m, blk + D); ++b) CHECK(std::abs(W.row(a).dot(W.row(b))) < 1e-10);
  // chi norms: E|w|^2 = D over many rows
  const Mat<double> Wc = draw_performer_frequencies(3000, D, true, FeatureNorms::chi, rng);
  const double mean_sq = Wc.rowwise().squaredNorm().mean();
  CHECK(std::abs(mean_sq - D) < 5 * std::sqrt(2.0 * D / 3000.0));
  // seeded: same seed, same matrix
  Rng r1(9), r2(9);
  CHECK((draw_performer_frequencies(8, 4, true, FeatureNorms::chi, r1) -
         draw_performer_frequencies(8, 4, true, FeatureNorms::chi, r2)).norm() == 0.0);
}

TEST_CASE("Performer features are positive and unbiased for exp(q.k) (E2)", "[flt][performer]") {
  const Index D = 4, m = 16, trials = 3000;
  Mat<double> x(1, D), y(1, D);
  x << 0.3, -0.2, 0.4, 0.1;
  y << -0.1, 0.5, 0.2, -0.3;
  const double target = std::exp(x.row(0).dot(y.row(0)));
  double sum = 0, sum2 = 0;
  Rng rng(17);
  for (Index t = 0; t < trials; ++t) {
    const Mat<double> W = draw_performer_frequencies(m, D, true, FeatureNorms::chi, rng);
    Mat<double> px, py;
    performer_features<double>(x, W, false, 0.0, px);
    performer_features<double>(y, W, false, 0.0, py);
    REQUIRE(px.minCoeff() > 0);
    const double e = px.row(0).dot(py.row(0));
    sum += e;
    sum2 += e * e;
  }
  const double mean = sum / trials, se = std::sqrt((sum2 / trials - mean * mean) / trials);
  INFO("mean " << mean << " target " << target << " se " << se);
  CHECK(std::abs(mean - target) < 5 * se);
  CHECK(se < 0.02 * target);
  // stabilisers cancel in ratios: per-row features are a row-wise rescaling
  Rng r(3);
  const Mat<double> W = draw_performer_frequencies(m, D, true, FeatureNorms::chi, r);
  Mat<double> a, b;
  performer_features<double>(x, W, false, 0.0, a);
  performer_features<double>(x, W, true, 0.0, b);
  CHECK(((a / a.sum()) - (b / b.sum())).cwiseAbs().maxCoeff() < 1e-14);
  CHECK(b.maxCoeff() == Approx(1.0 / std::sqrt(double(m))));
}

TEST_CASE("Performer backward matches central differences (E27)", "[flt][performer][gradcheck]") {
  Rng rng(23);
  const Index n = 3, D = 5, m = 7;
  const Mat<double> W = draw_performer_frequencies(m, D, true, FeatureNorms::chi, rng);
  Mat<double> X(n, D), G(n, m);
  for (Index i = 0; i < n; ++i) {
    for (Index j = 0; j < D; ++j) X(i, j) = 0.4 * rng.normal();
    for (Index j = 0; j < m; ++j) G(i, j) = rng.normal();
  }
  for (bool per_row : {false, true}) {
    // per-row stabiliser: loss sum(G o phi) is not invariant to it, so use the ratio-invariant
    // loss sum_i (G_i . phi_i) / sum_a phi_ia, through which the stabiliser cancels.
    auto loss = [&] {
      Mat<double> phi;
      performer_features<double>(X, W, per_row, 0.3, phi);
      if (!per_row) return phi.cwiseProduct(G).sum();
      double s = 0;
      for (Index i = 0; i < n; ++i) s += phi.row(i).dot(G.row(i)) / phi.row(i).sum();
      return s;
    };
    Mat<double> phi;
    performer_features<double>(X, W, per_row, 0.3, phi);
    Mat<double> gam = G;
    if (per_row)
      for (Index i = 0; i < n; ++i) {
        const double z = phi.row(i).sum(), num = phi.row(i).dot(G.row(i));
        gam.row(i) = (G.row(i).array() / z - num / (z * z)).matrix();
      }
    Mat<double> dX = Mat<double>::Zero(n, D);
    performer_backward<double>(X, W, phi, gam, dX);
    const auto r = check_gradient(loss, std::span<double>(X.data(), X.size()),
                                  std::span<const double>(dX.data(), dX.size()));
    INFO("per_row " << per_row);
    CHECK(r.max_rel_error < 1e-6);
  }
}

TEST_CASE("Spectrum gradients match central differences for every kind (E17)", "[flt][spectrum][gradcheck]") {
  struct Case { SpectrumKind kind; ProposalKind proposal; Index dc; };
  const std::vector<Case> cases = {
      {SpectrumKind::gaussian_mixture, ProposalKind::gaussian, 1},
      {SpectrumKind::gaussian_mixture, ProposalKind::gaussian, 3},
      {SpectrumKind::gaussian_mixture, ProposalKind::spectrum, 2},
      {SpectrumKind::radial_gaussian, ProposalKind::gaussian, 3},
      {SpectrumKind::radial_gaussian, ProposalKind::spectrum, 2},
      {SpectrumKind::radial_shells, ProposalKind::gaussian, 3},
      {SpectrumKind::radial_shells, ProposalKind::spectrum, 3},
      {SpectrumKind::local_window, ProposalKind::uniform_box, 1},
      {SpectrumKind::local_window, ProposalKind::uniform_box, 2}};
  for (const auto& cs : cases) {
    const Spectrum sp(spectrum_config(cs.kind, cs.proposal, cs.dc));
    auto p = init_params(sp, 7);
    // push one lambda close to the clamp so the smooth clamp's chain factor is exercised
    if (cs.kind != SpectrumKind::local_window) p.back() += 0.5;
    Rng rng(8);
    Mat<double> xi;
    Vec<double> pdf;
    sp.sample(p, 6, rng, xi, pdf);
    std::vector<double> dg(6), g(6);
    for (auto& v : dg) v = rng.normal();
    auto loss = [&] {
      sp.evaluate(p, xi, g);
      double s = 0;
      for (std::size_t k = 0; k < g.size(); ++k) s += g[k] * dg[k];
      return s;
    };
    std::vector<double> dp(p.size(), 0.0);
    sp.evaluate_backward(p, xi, dg, dp);
    const auto r = check_gradient(loss, p, dp);
    INFO(to_string(cs.kind) << " / " << to_string(cs.proposal) << " dc " << cs.dc);
    CHECK(r.max_rel_error < 1e-6);
  }
}

TEST_CASE("Masks: f(0) = 1 at initialisation, box values on integers, shell quadrature", "[flt][spectrum]") {
  for (auto kind : {SpectrumKind::gaussian_mixture, SpectrumKind::radial_gaussian,
                    SpectrumKind::radial_shells, SpectrumKind::local_window}) {
    const Index dc = kind == SpectrumKind::local_window ? 1 : 3;
    const auto proposal = kind == SpectrumKind::local_window ? ProposalKind::uniform_box : ProposalKind::gaussian;
    const Spectrum sp(spectrum_config(kind, proposal, dc));
    std::vector<double> p(static_cast<std::size_t>(sp.num_params()));
    Rng rng(1);
    sp.init(p, rng);
    const std::vector<double> zero(static_cast<std::size_t>(dc), 0.0);
    INFO(to_string(kind));
    CHECK(sp.mask_at(p, zero) == Approx(1.0).epsilon(1e-12));
  }
  // local window: f(n) = sum_t a_t 1[|n| <= v_t], radii {0, 2, 5}, equal shares 1/3
  const Spectrum lw(spectrum_config(SpectrumKind::local_window, ProposalKind::uniform_box, 1));
  std::vector<double> p(3);
  Rng rng(1);
  lw.init(p, rng);
  const double expect[] = {1.0, 2.0 / 3, 2.0 / 3, 1.0 / 3, 1.0 / 3, 1.0 / 3, 0.0, 0.0};
  for (int n = 0; n < 8; ++n) {
    const double z[] = {static_cast<double>(n)};
    CHECK(std::abs(lw.mask_at(p, z) - expect[n]) < 1e-12);
  }
  // radial shells: with kappa = 0 a shell is a radial Gaussian, so the E19 quadrature (and the
  // closed-form f(0) of a shell) must reproduce the closed form of E16 with mu = 0.
  SpectrumConfig sc = spectrum_config(SpectrumKind::radial_shells, ProposalKind::gaussian, 3);
  sc.components = 1;
  const Spectrum sh(sc);
  SpectrumConfig gc = spectrum_config(SpectrumKind::radial_gaussian, ProposalKind::gaussian, 3);
  gc.components = 1;
  gc.proposal_scale = std::sqrt(0.5);  // same clamp bound sigma^2 <= 1 as the shells
  const Spectrum rg(gc);
  REQUIRE(rg.sigma2_max() == Approx(sh.sigma2_max()));
  const std::vector<double> ps = {0.3, 0.0, std::log(0.4)};  // logw, kappa = 0, lambda
  const std::vector<double> pg = {0.3, std::log(0.4)};
  for (double rho : {1e-4, 0.3, 1.0, 2.5, 6.0}) {
    const double z[] = {rho, 0.0, 0.0};
    INFO("rho " << rho);
    CHECK(std::abs(sh.mask_at(ps, z) - rg.mask_at(pg, z)) < 1e-9 * std::max(1.0, std::abs(rg.mask_at(pg, z))));
  }
}

namespace {

// Mean and standard error over seeds of the E8 estimate psiQ(r1).psiK(r2) of f(r1 - r2).
void check_estimator(const Spectrum& sp, const std::vector<double>& p, const Mat<double>& offsets,
                     Index R, Index seeds) {
  const Index dc = sp.dim(), n = offsets.rows();
  std::vector<double> sum(static_cast<std::size_t>(n), 0.0), sum2(sum.size(), 0.0);
  Mat<double> zero = Mat<double>::Zero(1, dc);
  const std::vector<double> centre(static_cast<std::size_t>(dc), 0.0);
  for (Index s = 0; s < seeds; ++s) {
    Rng rng(1000 + static_cast<std::uint64_t>(s));
    Mat<double> xi;
    Vec<double> pdf;
    sp.sample(p, R, rng, xi, pdf);
    std::vector<double> g(static_cast<std::size_t>(R)), ct(g.size());
    sp.evaluate(p, xi, g);
    importance_weights(g, std::span<const double>(pdf.data(), pdf.size()), ct);
    Mat<double> csq, csk;
    rpe_basis<double>(offsets, centre, xi, csq);
    rpe_basis<double>(zero, centre, xi, csk);
    for (Index i = 0; i < n; ++i) {
      double e = 0;
      for (Index k = 0; k < R; ++k)
        e += ct[static_cast<std::size_t>(k)] * (csq(i, k) * csk(0, k) + csq(i, R + k) * csk(0, R + k));
      sum[static_cast<std::size_t>(i)] += e;
      sum2[static_cast<std::size_t>(i)] += e * e;
    }
  }
  std::vector<double> f(static_cast<std::size_t>(n));
  sp.mask(p, offsets, f);
  for (Index i = 0; i < n; ++i) {
    const auto is = static_cast<std::size_t>(i);
    const double mean = sum[is] / seeds;
    const double se = std::sqrt(std::max(0.0, sum2[is] / seeds - mean * mean) / seeds);
    INFO(to_string(sp.config().kind) << " / " << to_string(sp.config().proposal) << " dc " << dc
                                     << " offset " << i << ": mean " << mean << " f " << f[is]
                                     << " se " << se);
    CHECK(std::abs(mean - f[is]) <= 5 * se + 1e-12);
    CHECK(se < 0.05 * std::abs(f[0]));  // the tolerance is tight enough to mean something
  }
}

}  // namespace

TEST_CASE("The RPE estimate averaged over seeds matches the closed-form or numerical f (E7, E8)",
          "[flt][rpe][statistics]") {
  struct Case { SpectrumKind kind; ProposalKind proposal; Index dc; };
  const std::vector<Case> cases = {
      {SpectrumKind::gaussian_mixture, ProposalKind::gaussian, 1},
      {SpectrumKind::gaussian_mixture, ProposalKind::gaussian, 3},
      {SpectrumKind::gaussian_mixture, ProposalKind::spectrum, 2},
      {SpectrumKind::radial_gaussian, ProposalKind::gaussian, 3},
      {SpectrumKind::radial_gaussian, ProposalKind::spectrum, 3},
      {SpectrumKind::radial_shells, ProposalKind::gaussian, 3},
      {SpectrumKind::radial_shells, ProposalKind::spectrum, 3},
      {SpectrumKind::local_window, ProposalKind::uniform_box, 1},
      {SpectrumKind::local_window, ProposalKind::uniform_box, 2}};
  for (const auto& cs : cases) {
    const Spectrum sp(spectrum_config(cs.kind, cs.proposal, cs.dc));
    const auto p = init_params(sp, 3);
    Mat<double> offsets(4, cs.dc);
    Rng rng(2);
    offsets.row(0).setZero();
    for (Index i = 1; i < 4; ++i)
      for (Index a = 0; a < cs.dc; ++a)
        offsets(i, a) = cs.kind == SpectrumKind::local_window ? double(i + a) : 0.8 * rng.normal();
    check_estimator(sp, p, offsets, 8, 3000);
  }
}

TEST_CASE("Phases keep float32 accuracy for large coordinates (method 8.5)", "[flt][rpe]") {
  Mat<double> xi(2, 1);
  xi << 0.123456789, -0.37;
  Mat<float> rf(3, 1);
  rf << 1000000.0f, 999999.0f, 524287.0f;  // exactly representable integers
  const Mat<double> rd = rf.cast<double>();
  const std::vector<double> centre = {0.0};
  Mat<float> csf;
  Mat<double> csd;
  rpe_basis<float>(rf, centre, xi, csf);
  rpe_basis<double>(rd, centre, xi, csd);
  CHECK((csf.cast<double>() - csd).cwiseAbs().maxCoeff() < 2e-6);
}

TEST_CASE("Gaussian-proposal importance weights stay bounded under the lambda clamp", "[flt][spectrum]") {
  SpectrumConfig c = spectrum_config(SpectrumKind::radial_gaussian, ProposalKind::gaussian, 3);
  c.components = 1;
  const Spectrum sp(c);
  const std::vector<double> p = {0.0, 8.0};  // w = 1, lambda far above log(2 s0^2)
  CHECK(std::exp(sp.clamped_log_sigma2(8.0)) <= sp.sigma2_max());
  Rng rng(4);
  Mat<double> xi;
  Vec<double> pdf;
  sp.sample(p, 20000, rng, xi, pdf);
  std::vector<double> g(20000);
  sp.evaluate(p, xi, g);
  // g/p <= w (2 pi s0^2)^(3/2) when sigma^2 <= 2 s0^2
  const double bound = std::pow(2 * std::numbers::pi, 1.5);
  double worst = 0;
  for (Index k = 0; k < 20000; ++k) worst = std::max(worst, g[static_cast<std::size_t>(k)] / pdf(k));
  CHECK(worst <= bound * (1 + 1e-12));
  // an invalid configuration is rejected with a typed error
  SpectrumConfig bad = c;
  bad.kind = SpectrumKind::radial_shells;
  bad.coord_dim = 2;
  CHECK_THROWS_AS(Spectrum{bad}, ConfigError);
}
