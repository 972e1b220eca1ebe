// Performer positive random features (E2) and backward (E27).
// n rows, D input width, m features.
#include "attention/performer.hpp"

#include "core/error.hpp"

#include <Eigen/QR>

#include <cmath>
#include <limits>

namespace flt::attn {

Mat<double> draw_performer_frequencies(Index m, Index D, bool orthogonal, FeatureNorms norms,
                                       Rng& rng) {
  require(m > 0 && D > 0, "draw_performer_frequencies: m and D must be positive");
  Mat<double> W(m, D);
  auto gaussian = [&](Index rows) {
    Mat<double> G(rows, D);
    for (Index i = 0; i < rows; ++i)
      for (Index j = 0; j < D; ++j) G(i, j) = rng.normal();
    return G;
  };
  if (orthogonal) {
    for (Index start = 0; start < m; start += D) {
      const Index rows = std::min(D, m - start);
      // Columns of the QR factor of a Gaussian D x D matrix are uniformly distributed
      // orthonormal directions (up to the sign convention, which is irrelevant: fix the sign by
      // R's diagonal so the distribution is exactly Haar).
      Eigen::MatrixXd G = gaussian(D);
      Eigen::HouseholderQR<Eigen::MatrixXd> qr(G);
      Eigen::MatrixXd Qm = qr.householderQ();
      const Eigen::MatrixXd Rm = qr.matrixQR().triangularView<Eigen::Upper>();
      for (Index c = 0; c < D; ++c)
        if (Rm(c, c) < 0) Qm.col(c) *= -1.0;
      for (Index r = 0; r < rows; ++r) W.row(start + r) = Qm.col(r).transpose();
    }
    for (Index a = 0; a < m; ++a) {
      double norm = std::sqrt(static_cast<double>(D));
      if (norms == FeatureNorms::chi) {
        double s = 0;
        for (Index j = 0; j < D; ++j) {
          const double x = rng.normal();
          s += x * x;
        }
        norm = std::sqrt(s);
      }
      W.row(a) *= norm;
    }
  } else {
    W = gaussian(m);
    if (norms == FeatureNorms::fixed)
      for (Index a = 0; a < m; ++a) W.row(a) *= std::sqrt(static_cast<double>(D)) / W.row(a).norm();
  }
  return W;
}

template <class T>
double performer_logit_max(ConstMatRef<T> X, ConstMatRef<T> W) {
  if (X.rows() == 0) return -std::numeric_limits<double>::infinity();
  Mat<T> U;
  U.noalias() = X * W.transpose();
  U.colwise() -= (X.rowwise().squaredNorm() * T(0.5));
  return static_cast<double>(U.maxCoeff());
}

template <class T>
void performer_features(ConstMatRef<T> X, ConstMatRef<T> W, bool per_row, double global_stab,
                        Mat<T>& phi) {
  const Index n = X.rows(), m = W.rows();
  phi.resize(n, m);
  if (n == 0) return;
  phi.noalias() = X * W.transpose();  // u_ia = w_a . x_i   (n x m GEMM)
  const T log_norm = static_cast<T>(-0.5 * std::log(static_cast<double>(m)));
  for (Index i = 0; i < n; ++i) {
    auto row = phi.row(i);
    const T half_sq = T(0.5) * X.row(i).squaredNorm();
    T stab = static_cast<T>(global_stab);
    if (per_row) stab = row.maxCoeff() - half_sq;
    // exp(u - |x|^2/2 - stab) m^(-1/2): the shift keeps every exponent <= 0 (queries) or
    // <= 0 for all keys of the set (global maximum).
    row.array() = (row.array() - (half_sq + stab - log_norm)).exp();
  }
}

template <class T>
void performer_backward(ConstMatRef<T> X, ConstMatRef<T> W, ConstMatRef<T> phi,
                        ConstMatRef<T> gam, MatRef<T> dX) {
  if (X.rows() == 0) return;
  Mat<T> ge = gam.cwiseProduct(phi);  // gam o e
  dX.noalias() += ge * W;             // W^T (gam o e), row form
  const Vec<T> s = ge.rowwise().sum();
  dX -= (X.array().colwise() * s.array()).matrix();
}

#define FLT_INSTANTIATE(T)                                                                     \
  template double performer_logit_max<T>(ConstMatRef<T>, ConstMatRef<T>);                      \
  template void performer_features<T>(ConstMatRef<T>, ConstMatRef<T>, bool, double, Mat<T>&);   \
  template void performer_backward<T>(ConstMatRef<T>, ConstMatRef<T>, ConstMatRef<T>,          \
                                      ConstMatRef<T>, MatRef<T>);
FLT_INSTANTIATE(float)
FLT_INSTANTIATE(double)
#undef FLT_INSTANTIATE

}  // namespace flt::attn
