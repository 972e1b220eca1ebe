// The linear three-body reference: descriptors, energy and gradient, ridge fit (three_body.hpp).
#include "models/three_body.hpp"

#include "attention/neighbours.hpp"
#include "core/error.hpp"
#include "core/linalg.hpp"
#include "core/parallel.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numbers>
#include <string>

namespace flt::models {

Index ThreeBodyBasis::block_size() const noexcept {
  const Index U = channels();
  return U + U * (U + 1) / 2 * (lmax + 1);
}

void ThreeBodyBasis::validate() const {
  if (!(cutoff > 0) || !std::isfinite(cutoff)) throw InvalidArgument("three-body basis: the cutoff must be > 0");
  if (radial < 1 || radial > 32) throw InvalidArgument("three-body basis: radial must be in [1, 32]");
  if (lmax < 0 || lmax > 12) throw InvalidArgument("three-body basis: lmax must be in [0, 12]");
  if (elements.empty()) throw InvalidArgument("three-body basis: no elements");
  for (std::size_t i = 0; i < elements.size(); ++i)
    if (elements[i] < 1 || (i > 0 && elements[i] <= elements[i - 1]))
      throw InvalidArgument("three-body basis: elements must be sorted, unique atomic numbers");
}

namespace {

// One neighbour j of the centre atom: channel base b_j P, distance, unit vector, R_p and dR_p/dr.
struct Neighbour {
  Index row = 0;   // the neighbour's row in the batch
  Index base = 0;
  double r = 0.0;
  std::array<double, 3> u{};
  std::vector<double> radial, slope;
};

// The neighbours of every atom of a structure, gathered once per atom from the neighbour list.
class Environment {
 public:
  Environment(const ThreeBodyBasis& basis, const RaggedIndex& sets, ConstMatRef<double> coords,
              const std::vector<std::int32_t>& atomic_numbers)
      : basis_(basis), coords_(coords), z_(atomic_numbers) {
    basis.validate();
    const Index N = sets.total_rows();
    if (coords.rows() != N || coords.cols() != 3 || static_cast<Index>(atomic_numbers.size()) != N)
      throw InvalidArgument("three-body: coordinates must be N x 3 with one atomic number per atom");
    element_of_.assign(atomic_numbers.size(), 0);
    for (Index s = 0; s < sets.num_sets(); ++s)
      for (Index i = sets.begin(s); i < sets.end(s); ++i) {
        const auto it = std::lower_bound(basis.elements.begin(), basis.elements.end(), z_[static_cast<std::size_t>(i)]);
        if (it == basis.elements.end() || *it != z_[static_cast<std::size_t>(i)])
          throw InvalidArgument("three-body: structure " + std::to_string(s) + ", atom " +
                                std::to_string(i - sets.begin(s) + 1) + ": element " +
                                std::to_string(z_[static_cast<std::size_t>(i)]) +
                                " is not among the reference's elements");
        element_of_[static_cast<std::size_t>(i)] = static_cast<Index>(it - basis.elements.begin());
      }
    list_ = attn::build_neighbour_list(sets, coords, basis.cutoff, /*include_self=*/false);
    // Refused here, before the parallel loops (gather does not throw).
    for (Index p = 0; p < list_.num_pairs(); ++p) {
      const Index i = list_.target[static_cast<std::size_t>(p)], j = list_.source[static_cast<std::size_t>(p)];
      if ((coords.row(i) - coords.row(j)).squaredNorm() == 0.0)
        throw InvalidArgument("three-body: atoms " + std::to_string(i + 1) + " and " + std::to_string(j + 1) +
                              " of the batch coincide (distance 0)");
    }
  }

  Index element(Index i) const { return element_of_[static_cast<std::size_t>(i)]; }

  // Fills `out` with the neighbours of atom i.
  void gather(Index i, std::vector<Neighbour>& out) const {
    const double rc = basis_.cutoff, pi = std::numbers::pi;
    const Index P = basis_.radial;
    const auto begin = list_.offsets[static_cast<std::size_t>(i)], end = list_.offsets[static_cast<std::size_t>(i) + 1];
    out.resize(static_cast<std::size_t>(end - begin));
    for (auto p = begin; p < end; ++p) {
      const Index j = list_.source[static_cast<std::size_t>(p)];
      Neighbour& n = out[static_cast<std::size_t>(p - begin)];
      n.row = j;
      double d2 = 0.0;
      for (Index a = 0; a < 3; ++a) {
        n.u[static_cast<std::size_t>(a)] = coords_(j, a) - coords_(i, a);
        d2 += n.u[static_cast<std::size_t>(a)] * n.u[static_cast<std::size_t>(a)];
      }
      n.r = std::sqrt(d2);
      for (double& c : n.u) c /= n.r;
      n.base = element(j) * P;
      // f_c = (1 + cos(pi r / r_c)) / 2; R_p = sin(p pi r / r_c) / r f_c.
      const double fc = 0.5 * (1.0 + std::cos(pi * n.r / rc)), dfc = -0.5 * pi / rc * std::sin(pi * n.r / rc);
      n.radial.resize(static_cast<std::size_t>(P));
      n.slope.resize(static_cast<std::size_t>(P));
      for (Index q = 0; q < P; ++q) {
        const double k = static_cast<double>(q + 1) * pi / rc;
        const double s = std::sin(k * n.r), c = std::cos(k * n.r);
        const double g = s / n.r, dg = k * c / n.r - s / (n.r * n.r);
        n.radial[static_cast<std::size_t>(q)] = g * fc;
        n.slope[static_cast<std::size_t>(q)] = dg * fc + g * dfc;
      }
    }
  }

 private:
  const ThreeBodyBasis& basis_;
  ConstMatRef<double> coords_;
  const std::vector<std::int32_t>& z_;
  std::vector<Index> element_of_;
  attn::NeighbourList list_;
};

// P_l(c), l = 0..L, and their derivatives: P_{l+1} = ((2l + 1) c P_l - l P_{l-1}) / (l + 1),
// P'_{l+1} = (l + 1) P_l + c P'_l.
void legendre(double c, Index L, std::vector<double>& p, std::vector<double>& dp) {
  p.assign(static_cast<std::size_t>(L + 1), 0.0);
  dp.assign(static_cast<std::size_t>(L + 1), 0.0);
  p[0] = 1.0;
  if (L >= 1) {
    p[1] = c;
    dp[1] = 1.0;
  }
  for (Index l = 1; l < L; ++l) {
    const auto ls = static_cast<std::size_t>(l);
    const double ld = static_cast<double>(l);
    p[ls + 1] = ((2.0 * ld + 1.0) * c * p[ls] - ld * p[ls - 1]) / (ld + 1.0);
    dp[ls + 1] = (ld + 1.0) * p[ls] + c * dp[ls];
  }
}

// Index of the pair of channels u <= v among the U (U + 1) / 2.
inline Index pair_index(Index u, Index v, Index U) { return u * U - u * (u - 1) / 2 + (v - u); }

double dot3(const std::array<double, 3>& a, const std::array<double, 3>& b) {
  return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

}  // namespace

Mat<double> three_body_features(const ThreeBodyBasis& basis, const RaggedIndex& sets,
                                ConstMatRef<double> coords, const std::vector<std::int32_t>& atomic_numbers) {
  const Environment env(basis, sets, coords, atomic_numbers);
  const Index S = sets.num_sets(), P = basis.radial, L = basis.lmax, U = basis.channels();
  const Index B = basis.block_size();
  Mat<double> features = Mat<double>::Zero(S, basis.feature_count());
  // One structure per iteration, its atoms in order: the sums do not depend on the thread count.
#pragma omp parallel for schedule(dynamic)
  for (Index s = 0; s < S; ++s) {
    std::vector<Neighbour> nb;
    std::vector<double> pl, dpl;
    for (Index i = sets.begin(s); i < sets.end(s); ++i) {
      env.gather(i, nb);
      const Index block = env.element(i) * B;
      for (const Neighbour& j : nb)
        for (Index p = 0; p < P; ++p) features(s, block + j.base + p) += j.radial[static_cast<std::size_t>(p)];
      for (const Neighbour& j : nb)
        for (const Neighbour& k : nb) {
          if (&j == &k) continue;
          legendre(dot3(j.u, k.u), L, pl, dpl);
          for (Index p = 0; p < P; ++p)
            for (Index q = 0; q < P; ++q) {
              const Index u = j.base + p, v = k.base + q;
              if (u > v) continue;
              const double rr = j.radial[static_cast<std::size_t>(p)] * k.radial[static_cast<std::size_t>(q)];
              const Index at = block + U + pair_index(u, v, U) * (L + 1);
              for (Index l = 0; l <= L; ++l) features(s, at + l) += rr * pl[static_cast<std::size_t>(l)];
            }
        }
    }
  }
  return features;
}

ThreeBodyEnergy three_body_energy(const ThreeBodyBasis& basis, const RaggedIndex& sets,
                                  ConstMatRef<double> coords, const std::vector<std::int32_t>& atomic_numbers,
                                  const Vec<double>& weights, bool want_gradient) {
  const Environment env(basis, sets, coords, atomic_numbers);
  require(weights.size() == basis.feature_count(), "three_body_energy: one weight per feature");
  const Index S = sets.num_sets(), N = sets.total_rows(), P = basis.radial, L = basis.lmax, U = basis.channels();
  const Index B = basis.block_size();
  ThreeBodyEnergy out;
  out.per_structure = Vec<double>::Zero(S);
  out.per_atom = Vec<double>::Zero(N);
  if (want_gradient) out.gradient = Mat<double>::Zero(N, 3);
#pragma omp parallel for schedule(dynamic)
  for (Index s = 0; s < S; ++s) {
    std::vector<Neighbour> nb;
    std::vector<double> pl, dpl, dr;  // dr: dE_i / dr_ij per neighbour
    double total = 0.0;
    for (Index i = sets.begin(s); i < sets.end(s); ++i) {
      env.gather(i, nb);
      const double* w = weights.data() + env.element(i) * B;
      double e = 0.0;
      dr.assign(nb.size(), 0.0);
      for (std::size_t a = 0; a < nb.size(); ++a)
        for (Index p = 0; p < P; ++p) {
          e += w[nb[a].base + p] * nb[a].radial[static_cast<std::size_t>(p)];
          dr[a] += w[nb[a].base + p] * nb[a].slope[static_cast<std::size_t>(p)];
        }
      for (std::size_t a = 0; a < nb.size(); ++a)
        for (std::size_t b = 0; b < nb.size(); ++b) {
          if (a == b) continue;
          const Neighbour &j = nb[a], &k = nb[b];
          const double c = dot3(j.u, k.u);
          legendre(c, L, pl, dpl);
          double dc = 0.0;
          for (Index p = 0; p < P; ++p)
            for (Index q = 0; q < P; ++q) {
              const Index u = j.base + p, v = k.base + q;
              if (u > v) continue;
              const double* wl = w + U + pair_index(u, v, U) * (L + 1);
              double ang = 0.0, dang = 0.0;  // sum_l w P_l(c) and sum_l w P'_l(c)
              for (Index l = 0; l <= L; ++l) {
                ang += wl[l] * pl[static_cast<std::size_t>(l)];
                dang += wl[l] * dpl[static_cast<std::size_t>(l)];
              }
              const auto ps = static_cast<std::size_t>(p), qs = static_cast<std::size_t>(q);
              e += j.radial[ps] * k.radial[qs] * ang;
              if (!want_gradient) continue;
              dr[a] += j.slope[ps] * k.radial[qs] * ang;
              dr[b] += j.radial[ps] * k.slope[qs] * ang;
              dc += j.radial[ps] * k.radial[qs] * dang;
            }
          if (!want_gradient) continue;
          // dc/dr_j = (u_k - c u_j) / r_j, dc/dr_k = (u_j - c u_k) / r_k, dc/dr_i = -(both).
          for (Index x = 0; x < 3; ++x) {
            const auto xs = static_cast<std::size_t>(x);
            const double gj = dc * (k.u[xs] - c * j.u[xs]) / j.r, gk = dc * (j.u[xs] - c * k.u[xs]) / k.r;
            out.gradient(j.row, x) += gj;
            out.gradient(k.row, x) += gk;
            out.gradient(i, x) -= gj + gk;
          }
        }
      if (want_gradient)
        // dr_ij/dr_j = u_ij, dr_ij/dr_i = -u_ij.
        for (std::size_t a = 0; a < nb.size(); ++a)
          for (Index x = 0; x < 3; ++x) {
            const double g = dr[a] * nb[a].u[static_cast<std::size_t>(x)];
            out.gradient(nb[a].row, x) += g;
            out.gradient(i, x) -= g;
          }
      total += e;
      out.per_atom(i) = e;
    }
    out.per_structure(s) = total;
  }
  return out;
}

std::vector<RidgeFit> fit_ridge_loo(const Mat<double>& features, const Mat<double>& labels,
                                    const Vec<double>& intercept_column) {
  const Index M = features.rows(), F = features.cols(), T = labels.cols();
  require(M >= 3 && labels.rows() == M && T >= 1,
          "fit_ridge_loo: need at least 3 rows and one label per row (and at least one label column)");
  require(features.allFinite() && labels.allFinite(), "fit_ridge_loo: non-finite input");
  require(intercept_column.size() == 0 || intercept_column.size() == M,
          "fit_ridge_loo: the intercept column needs one value per row");
  const double Md = static_cast<double>(M);
  // The unpenalised term's column u (ones: a plain intercept). Features and labels are centred by
  // removing their projection on u, so the penalised weights never carry what u explains.
  const Eigen::VectorXd u = intercept_column.size() == 0 ? Eigen::VectorXd::Ones(M) : Eigen::VectorXd(intercept_column);
  const double uu = u.squaredNorm();
  require(u.allFinite() && uu > 0.0, "fit_ridge_loo: the intercept column must be finite and not all zero");
  const double u_rms = std::sqrt(uu / Md);
  const Vec<double> mean = (features.transpose() * u) / uu;  // each column's coefficient on u
  Vec<double> sd(F);
  std::vector<Index> kept;
  for (Index c = 0; c < F; ++c) {
    sd(c) = std::sqrt((features.col(c) - mean(c) * u).squaredNorm() / Md);
    if (sd(c) > 1e-12 * (1.0 + std::abs(mean(c)) * u_rms)) kept.push_back(c);
  }
  const auto K = static_cast<Index>(kept.size());
  Eigen::MatrixXd X(M, K);
  for (Index c = 0; c < K; ++c) {
    const Index col = kept[static_cast<std::size_t>(c)];
    X.col(c) = (features.col(col) - mean(col) * u) / sd(col);
  }

  // Hat matrix of the centred problem: H = u u^T / u.u + X (X^T X + lambda' I)^-1 X^T, lambda' = lambda M.
  // Dual (M <= K): X X^T = V diag(e) V^T, H_mm = 1/M + sum_k V_mk^2 e_k / (e_k + lambda'),
  //   w = X^T V diag(1 / (e + lambda')) V^T y.
  // Primal (M > K): X^T X = Q diag(e) Q^T, Z = X Q, H_mm = 1/M + sum_k Z_mk^2 / (e_k + lambda'),
  //   w = Q diag(1 / (e + lambda')) Z^T y.
  // The eigendecomposition and the leverages depend on X and lambda only, so every label column
  // shares them; per column only Z^T y and the fitted values are its own.
  const bool dual = M <= K;
  // Memory: at QM9's full size (110k x 6,096) one M x K matrix is 5.4 GB; besides the features
  // the fit holds only X (Z overwrites it in the primal case) and K x K matrices.
  const linalg::SymmetricEigen eig = linalg::symmetric_eigen(
      dual ? linalg::chunked_product(X, X.transpose(), false) : linalg::chunked_product(X, X, true));
  const Eigen::VectorXd e = eig.values.cwiseMax(0.0);
  const Eigen::MatrixXd& V = eig.vectors;
  if (!dual) linalg::multiply_rows_in_place(X, V);  // X becomes Z = X Q
  const Eigen::MatrixXd& Z = dual ? V : X;
  // h = diag(H) - 1/M = sum_k Z_mk^2 shrink_k, column by column in fixed row chunks (no M x K
  // matrix of squares).
  const auto leverage = [&](const Eigen::VectorXd& shrink) {
    Eigen::VectorXd h = u.array().square() / uu;
    parallel_chunks(M, kRowChunk, [&](Index, Index r0, Index r1) {
      for (Index k = 0; k < Z.cols(); ++k)
        h.segment(r0, r1 - r0).array() += Z.col(k).segment(r0, r1 - r0).array().square() * shrink(k);
    });
    return h;
  };

  struct Column {
    double ybar = 0.0;
    Eigen::VectorXd y, Zty, best_coef;
    double best_mse = std::numeric_limits<double>::infinity();
    RidgeFit best;
  };
  std::vector<Column> cols(static_cast<std::size_t>(T));
  for (Index t = 0; t < T; ++t) {
    Column& c = cols[static_cast<std::size_t>(t)];
    const Eigen::VectorXd column = labels.col(t);  // contiguous: the same sums as a single vector
    c.ybar = u.dot(column) / uu;
    c.y = column - c.ybar * u;
    c.Zty = Z.transpose() * c.y;
  }
  for (int k = 0; k <= 14; ++k) {
    const double lambda = std::pow(10.0, -8.0 + 0.5 * k), lp = lambda * Md;
    Eigen::VectorXd shrink(e.size()), inv(e.size());
    for (Index q = 0; q < e.size(); ++q) {
      inv(q) = 1.0 / (e(q) + lp);
      shrink(q) = dual ? e(q) * inv(q) : inv(q);
    }
    const Eigen::VectorXd h = leverage(shrink);
    for (Column& c : cols) {
      const Eigen::VectorXd yhat = dual ? Eigen::VectorXd(Z * shrink.cwiseProduct(c.Zty))
                                        : Eigen::VectorXd(Z * inv.cwiseProduct(c.Zty));
      double mse = 0.0, mae = 0.0;
      Vec<double> loo(M);
      for (Index m = 0; m < M; ++m) {
        const double r = (c.y(m) - yhat(m)) / (1.0 - h(m));
        loo(m) = r;
        mse += r * r;
        mae += std::abs(r);
      }
      mse /= Md;
      mae /= Md;
      if (mse < c.best_mse) {
        c.best_mse = mse;
        c.best.lambda = lambda;
        c.best.loo_mae = mae;
        c.best.loo_rmse = std::sqrt(mse);
        c.best.loo_residuals = std::move(loo);
        c.best_coef = inv.cwiseProduct(c.Zty);
      }
    }
  }
  std::vector<RidgeFit> fits;
  fits.reserve(static_cast<std::size_t>(T));
  for (Column& c : cols) {
    if (!std::isfinite(c.best_mse)) throw NumericalError("fit_ridge_loo: no finite leave-one-out error");
    const Eigen::VectorXd w_std =
        dual ? Eigen::VectorXd(X.transpose() * (V * c.best_coef)) : Eigen::VectorXd(V * c.best_coef);
    RidgeFit& best = c.best;
    best.weights = Vec<double>::Zero(F);
    best.intercept = c.ybar;
    for (Index q = 0; q < K; ++q) {
      const Index col = kept[static_cast<std::size_t>(q)];
      best.weights(col) = w_std(q) / sd(col);
      best.intercept -= best.weights(col) * mean(col);
    }
    fits.push_back(std::move(best));
  }
  return fits;
}

RidgeFit fit_ridge_loo(const Mat<double>& features, const Vec<double>& labels, const Vec<double>& intercept_column) {
  require(labels.size() == features.rows(), "fit_ridge_loo: need at least 3 rows and one label per row");
  const Mat<double> column = labels;
  return std::move(fit_ridge_loo(features, column, intercept_column).front());
}

}  // namespace flt::models
