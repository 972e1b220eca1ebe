// The linear three-body reference: descriptors, energy and gradient, ridge fit (three_body.hpp).
#include "models/three_body.hpp"

#include "attention/neighbours.hpp"
#include "core/error.hpp"
#include "core/linalg.hpp"
#include "core/parallel.hpp"

#include <Eigen/Cholesky>

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

// dX_s/dr of structure s into `jac` (3 n_s x F, zeroed here): row 3 a + x is the derivative of
// the structure's feature row with respect to coordinate x of its atom a (a = 0..n_s - 1).
void structure_jacobian(const Environment& env, const ThreeBodyBasis& basis, const RaggedIndex& sets, Index s,
                        Mat<double>& jac, std::vector<Neighbour>& nb, std::vector<double>& pl,
                        std::vector<double>& dpl) {
  const Index P = basis.radial, L = basis.lmax, U = basis.channels(), B = basis.block_size();
  const Index first = sets.begin(s);
  jac.setZero(3 * sets.size(s), basis.feature_count());
  for (Index i = first; i < sets.end(s); ++i) {
    env.gather(i, nb);
    const Index block = env.element(i) * B, ri = 3 * (i - first);
    // Two-body: dR_p(r_ij)/dr_j = R'_p u_ij, the opposite for the centre i.
    for (const Neighbour& j : nb) {
      const Index rj = 3 * (j.row - first);
      for (Index p = 0; p < P; ++p) {
        const Index col = block + j.base + p;
        for (Index x = 0; x < 3; ++x) {
          const double g = j.slope[static_cast<std::size_t>(p)] * j.u[static_cast<std::size_t>(x)];
          jac(rj + x, col) += g;
          jac(ri + x, col) -= g;
        }
      }
    }
    for (const Neighbour& j : nb)
      for (const Neighbour& k : nb) {
        if (&j == &k) continue;
        const double c = dot3(j.u, k.u);
        legendre(c, L, pl, dpl);
        const Index rj = 3 * (j.row - first), rk = 3 * (k.row - first);
        // dc/dr_j = (u_k - c u_j) / r_j, dc/dr_k = (u_j - c u_k) / r_k, dc/dr_i = -(both).
        std::array<double, 3> dcj{}, dck{};
        for (std::size_t x = 0; x < 3; ++x) {
          dcj[x] = (k.u[x] - c * j.u[x]) / j.r;
          dck[x] = (j.u[x] - c * k.u[x]) / k.r;
        }
        for (Index p = 0; p < P; ++p)
          for (Index q = 0; q < P; ++q) {
            const Index u = j.base + p, v = k.base + q;
            if (u > v) continue;
            const auto ps = static_cast<std::size_t>(p), qs = static_cast<std::size_t>(q);
            const double rr = j.radial[ps] * k.radial[qs], sr = j.slope[ps] * k.radial[qs],
                         rs = j.radial[ps] * k.slope[qs];
            const Index at = block + U + pair_index(u, v, U) * (L + 1);
            for (Index l = 0; l <= L; ++l) {
              const auto ls = static_cast<std::size_t>(l);
              const double a = sr * pl[ls], b = rs * pl[ls], d = rr * dpl[ls];
              for (Index x = 0; x < 3; ++x) {
                const auto xs = static_cast<std::size_t>(x);
                const double gj = a * j.u[xs] + d * dcj[xs], gk = b * k.u[xs] + d * dck[xs];
                jac(rj + x, at + l) += gj;
                jac(rk + x, at + l) += gk;
                jac(ri + x, at + l) -= gj + gk;
              }
            }
          }
      }
  }
}

}  // namespace

Mat<double> three_body_feature_jacobian(const ThreeBodyBasis& basis, const RaggedIndex& sets,
                                        ConstMatRef<double> coords, const std::vector<std::int32_t>& atomic_numbers) {
  const Environment env(basis, sets, coords, atomic_numbers);
  const Index S = sets.num_sets();
  Mat<double> out = Mat<double>::Zero(3 * sets.total_rows(), basis.feature_count());
#pragma omp parallel for schedule(dynamic)
  for (Index s = 0; s < S; ++s) {
    std::vector<Neighbour> nb;
    std::vector<double> pl, dpl;
    Mat<double> jac;
    structure_jacobian(env, basis, sets, s, jac, nb, pl, dpl);
    out.middleRows(3 * sets.begin(s), jac.rows()) = jac;
  }
  return out;
}

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

RidgeFit fit_ridge_loo_with_forces(const Mat<double>& features, const Vec<double>& labels,
                                   const Vec<double>& intercept_column, const ForceRows& fr) {
  require(fr.basis && fr.sets && fr.coords && fr.atomic_numbers && fr.forces,
          "fit_ridge_loo_with_forces: the force rows need a basis, a batch and its forces");
  const ThreeBodyBasis& basis = *fr.basis;
  const RaggedIndex& sets = *fr.sets;
  const Mat<double>& force = *fr.forces;
  const Index M = features.rows(), F = features.cols();
  require(M >= 3 && labels.size() == M && intercept_column.size() == M && static_cast<Index>(fr.structures.size()) == M,
          "fit_ridge_loo_with_forces: need at least 3 rows, each with a label, an intercept value and a structure");
  require(F == basis.feature_count(), "fit_ridge_loo_with_forces: one feature column per basis feature");
  require(force.rows() == sets.total_rows() && force.cols() == 3, "fit_ridge_loo_with_forces: forces must be N x 3");
  require(fr.weight > 0 && std::isfinite(fr.weight), "fit_ridge_loo_with_forces: the force weight must be > 0");
  require(features.allFinite() && labels.allFinite() && intercept_column.allFinite(),
          "fit_ridge_loo_with_forces: non-finite input");
  const Environment env(basis, sets, *fr.coords, *fr.atomic_numbers);
  const auto structure = [&](Index m) { return fr.structures[static_cast<std::size_t>(m)]; };
  const auto labelled = [&](Index i) { return force.row(i).allFinite(); };

  // Force rows per fit row; chunks of whole structures of up to kChunkRows rows (memory: one chunk's
  // rows x F), their bounds fixed by the data alone.
  constexpr Index kChunkRows = 2048;
  std::vector<Index> rows_of(static_cast<std::size_t>(M), 0), chunks{0};
  Index force_rows = 0, in_chunk = 0;
  for (Index m = 0; m < M; ++m) {
    const Index s = structure(m);
    require(s >= 0 && s < sets.num_sets(), "fit_ridge_loo_with_forces: structure index out of range");
    Index n = 0;
    for (Index i = sets.begin(s); i < sets.end(s); ++i) n += labelled(i) ? 3 : 0;
    rows_of[static_cast<std::size_t>(m)] = n;
    if (in_chunk > 0 && in_chunk + n > kChunkRows) {
      chunks.push_back(m);
      in_chunk = 0;
    }
    in_chunk += n;
    force_rows += n;
  }
  chunks.push_back(M);
  if (force_rows == 0) throw InvalidArgument("fit_ridge_loo_with_forces: no structure of the fit has force labels");
  const double c = fr.weight, root_c = std::sqrt(c);
  // The weighted force rows sqrt(c) dX/dr of the fit rows [m0, m1) and their labels -sqrt(c) F
  // (the gradient of the energy); offsets[m - m0]: the first row of fit row m.
  const auto chunk_rows = [&](Index m0, Index m1, Eigen::MatrixXd& rows, Eigen::VectorXd& target,
                              std::vector<Index>& offsets) {
    offsets.assign(static_cast<std::size_t>(m1 - m0 + 1), 0);
    for (Index m = m0; m < m1; ++m)
      offsets[static_cast<std::size_t>(m - m0 + 1)] = offsets[static_cast<std::size_t>(m - m0)] + rows_of[static_cast<std::size_t>(m)];
    rows.resize(offsets.back(), F);
    target.resize(offsets.back());
#pragma omp parallel for schedule(dynamic)
    for (Index m = m0; m < m1; ++m) {
      std::vector<Neighbour> nb;
      std::vector<double> pl, dpl;
      Mat<double> jac;
      const Index s = structure(m);
      structure_jacobian(env, basis, sets, s, jac, nb, pl, dpl);
      Index r = offsets[static_cast<std::size_t>(m - m0)];
      for (Index a = 0; a < sets.size(s); ++a) {
        const Index i = sets.begin(s) + a;
        if (!labelled(i)) continue;
        for (Index x = 0; x < 3; ++x, ++r) {
          rows.row(r) = root_c * jac.row(3 * a + x);
          target(r) = -root_c * force(i, x);
        }
      }
    }
  };

  // Pass 1: the force rows' normal equations, chunk after chunk.
  Eigen::MatrixXd gram_f = Eigen::MatrixXd::Zero(F, F);
  Eigen::VectorXd rhs_f = Eigen::VectorXd::Zero(F);
  {
    Eigen::MatrixXd rows;
    Eigen::VectorXd target;
    std::vector<Index> offsets;
    for (std::size_t k = 0; k + 1 < chunks.size(); ++k) {
      chunk_rows(chunks[k], chunks[k + 1], rows, target, offsets);
      gram_f += linalg::chunked_product(rows, rows, true);
      rhs_f.noalias() += rows.transpose() * target;
    }
  }

  // Centring on the intercept column (zero on force rows: the forces do not see it) and the
  // columns' spreads over energy and weighted force rows, as fit_ridge_loo does for energies.
  const double Md = static_cast<double>(M);
  const Eigen::VectorXd u = intercept_column;
  const double uu = u.squaredNorm();
  require(uu > 0.0, "fit_ridge_loo_with_forces: the intercept column must not be all zero");
  const double u_rms = std::sqrt(uu / Md);
  const Vec<double> mean = (features.transpose() * u) / uu;
  Vec<double> sd(F);
  std::vector<Index> kept;
  for (Index col = 0; col < F; ++col) {
    sd(col) = std::sqrt(((features.col(col) - mean(col) * u).squaredNorm() + gram_f(col, col)) / Md);
    if (sd(col) > 1e-12 * (1.0 + std::abs(mean(col)) * u_rms)) kept.push_back(col);
  }
  const auto K = static_cast<Index>(kept.size());
  const auto kept_at = [&](Index q) { return kept[static_cast<std::size_t>(q)]; };
  Eigen::MatrixXd X(M, K);
  for (Index q = 0; q < K; ++q) X.col(q) = (features.col(kept_at(q)) - mean(kept_at(q)) * u) / sd(kept_at(q));
  const double ybar = u.dot(Eigen::VectorXd(labels)) / uu;
  const Eigen::VectorXd y = Eigen::VectorXd(labels) - ybar * u;
  Eigen::MatrixXd gram = linalg::chunked_product(X, X, true);
  Eigen::VectorXd rhs = X.transpose() * y;
  for (Index a = 0; a < K; ++a) {
    rhs(a) += rhs_f(kept_at(a)) / sd(kept_at(a));
    for (Index b = 0; b < K; ++b) gram(a, b) += gram_f(kept_at(a), kept_at(b)) / (sd(kept_at(a)) * sd(kept_at(b)));
  }
  gram_f.resize(0, 0);
  const linalg::SymmetricEigen eig = linalg::symmetric_eigen(std::move(gram));
  const Eigen::VectorXd e = eig.values.cwiseMax(0.0);
  const Eigen::MatrixXd& Q = eig.vectors;
  const Eigen::VectorXd Qtb = Q.transpose() * rhs;
  constexpr int kLambdas = 15;
  std::vector<double> lambdas(kLambdas);
  Eigen::MatrixXd inv(K, kLambdas);  // column k: 1 / (e + lambda_k M)
  for (int k = 0; k < kLambdas; ++k) {
    lambdas[static_cast<std::size_t>(k)] = std::pow(10.0, -8.0 + 0.5 * k);
    for (Index q = 0; q < K; ++q) inv(q, k) = 1.0 / (e(q) + lambdas[static_cast<std::size_t>(k)] * Md);
  }

  // Pass 2: each structure's rows A_g (its energy row and force rows) left out together: with
  // Z_g = A_g Q, H_gg = u_g u_g^T / u.u + Z_g diag(inv) Z_g^T and r_g = (I - H_gg)^-1 (y_g - Z_g coef).
  Eigen::MatrixXd energy_res(M, kLambdas), force_sq(M, kLambdas), force_abs(M, kLambdas);
  {
    Eigen::MatrixXd rows;
    Eigen::VectorXd target;
    std::vector<Index> offsets;
    for (std::size_t k = 0; k + 1 < chunks.size(); ++k) {
      const Index m0 = chunks[k], m1 = chunks[k + 1];
      chunk_rows(m0, m1, rows, target, offsets);
#pragma omp parallel for schedule(dynamic)
      for (Index m = m0; m < m1; ++m) {
        const Index first = offsets[static_cast<std::size_t>(m - m0)], nf = rows_of[static_cast<std::size_t>(m)];
        Eigen::MatrixXd A(1 + nf, K);
        A.row(0) = X.row(m);
        for (Index r = 0; r < nf; ++r)
          for (Index q = 0; q < K; ++q) A(1 + r, q) = rows(first + r, kept_at(q)) / sd(kept_at(q));
        Eigen::VectorXd yg(1 + nf);
        yg(0) = y(m);
        yg.tail(nf) = target.segment(first, nf);
        const Eigen::MatrixXd Z = A * Q;
        for (int l = 0; l < kLambdas; ++l) {
          const Eigen::VectorXd resid = yg - Z * inv.col(l).cwiseProduct(Qtb);
          Eigen::MatrixXd I_H = -(Z * inv.col(l).asDiagonal()) * Z.transpose();
          I_H.diagonal().array() += 1.0;
          I_H(0, 0) -= u(m) * u(m) / uu;
          const Eigen::VectorXd r = I_H.ldlt().solve(resid);
          energy_res(m, l) = r(0);
          force_sq(m, l) = r.tail(nf).squaredNorm() / c;
          force_abs(m, l) = r.tail(nf).cwiseAbs().sum() / root_c;
        }
      }
    }
  }
  // The objective's leave-one-structure-out value per lambda, summed in row order.
  int best = -1;
  double best_score = std::numeric_limits<double>::infinity();
  for (int l = 0; l < kLambdas; ++l) {
    double score = 0.0;
    for (Index m = 0; m < M; ++m) score += energy_res(m, l) * energy_res(m, l) + c * force_sq(m, l);
    if (score < best_score) {  // NaN never wins
      best_score = score;
      best = l;
    }
  }
  if (best < 0) throw NumericalError("fit_ridge_loo_with_forces: no finite leave-one-out error");
  RidgeFit fit;
  fit.lambda = lambdas[static_cast<std::size_t>(best)];
  fit.loo_residuals = energy_res.col(best);
  double mse = 0.0, mae = 0.0, fsq = 0.0, fabs_sum = 0.0;
  for (Index m = 0; m < M; ++m) {
    mse += energy_res(m, best) * energy_res(m, best);
    mae += std::abs(energy_res(m, best));
    fsq += force_sq(m, best);
    fabs_sum += force_abs(m, best);
  }
  fit.loo_rmse = std::sqrt(mse / Md);
  fit.loo_mae = mae / Md;
  fit.force_components = force_rows;
  fit.force_loo_rmse = std::sqrt(fsq / static_cast<double>(force_rows));
  fit.force_loo_mae = fabs_sum / static_cast<double>(force_rows);
  const Eigen::VectorXd w_std = Q * inv.col(best).cwiseProduct(Qtb);
  fit.weights = Vec<double>::Zero(F);
  fit.intercept = ybar;
  for (Index q = 0; q < K; ++q) {
    fit.weights(kept_at(q)) = w_std(q) / sd(kept_at(q));
    fit.intercept -= fit.weights(kept_at(q)) * mean(kept_at(q));
  }
  return fit;
}

}  // namespace flt::models
