// Fourier RPE basis (E8) and its backward (E28).
// n rows, dc coordinate dimension, R frequencies; cs is n x 2R.
#include "attention/fourier_features.hpp"

#include "core/error.hpp"

#include <cmath>
#include <numbers>

namespace flt::attn {

template <class T>
void rpe_basis(ConstMatRef<T> coords, std::span<const double> centre, const Mat<double>& xi,
               Mat<T>& cs) {
  const Index n = coords.rows(), dc = coords.cols(), R = xi.rows();
  require(xi.cols() == dc && static_cast<Index>(centre.size()) == dc, "rpe_basis: shape mismatch");
  cs.resize(n, 2 * R);
  if (n == 0) return;
  // Phase in turns, t = xi . (r - centre) in double, reduced to [-1/2, 1/2] (section 8.5); only
  // then scaled by 2 pi and converted to T, so a float32 cos/sin sees an argument in [-pi, pi].
  Mat<double> r(n, dc);
  for (Index i = 0; i < n; ++i)
    for (Index a = 0; a < dc; ++a)
      r(i, a) = static_cast<double>(coords(i, a)) - centre[static_cast<std::size_t>(a)];
  Mat<double> turns;
  turns.noalias() = r * xi.transpose();  // n x R
  Mat<T> theta(n, R);
  const double two_pi = 2.0 * std::numbers::pi;
  for (Index i = 0; i < n; ++i)
    for (Index k = 0; k < R; ++k) {
      const double t = turns(i, k);
      theta(i, k) = static_cast<T>(two_pi * (t - std::nearbyint(t)));
    }
  cs.leftCols(R).array() = theta.array().cos();
  cs.rightCols(R).array() = theta.array().sin();
}

template <class T>
void rpe_basis_backward(const Mat<double>& xi, ConstMatRef<T> cs, ConstMatRef<T> dcs,
                        MatRef<T> dr) {
  const Index n = cs.rows(), R = xi.rows();
  require(cs.cols() == 2 * R && dcs.rows() == n && dcs.cols() == 2 * R && dr.rows() == n &&
              dr.cols() == xi.cols(),
          "rpe_basis_backward: shape mismatch");
  if (n == 0) return;
  // dtheta_ik = -dcs_ik sin theta_ik + dcs_i,R+k cos theta_ik;  dr_i += 2 pi dtheta_i xi
  Mat<T> dtheta = (dcs.rightCols(R).cwiseProduct(cs.leftCols(R)) -
                   dcs.leftCols(R).cwiseProduct(cs.rightCols(R)));
  const Mat<T> xi_t = (2.0 * std::numbers::pi * xi).template cast<T>();
  dr.noalias() += dtheta * xi_t;
}

void importance_weights(std::span<const double> g, std::span<const double> pdf,
                        std::span<double> ctilde) {
  require(g.size() == pdf.size() && g.size() == ctilde.size(), "importance_weights: sizes");
  const double R = static_cast<double>(g.size());
  for (std::size_t k = 0; k < g.size(); ++k) {
    if (!(pdf[k] > 0) || !std::isfinite(pdf[k]))
      throw NumericalError("importance_weights: proposal density of frequency " +
                           std::to_string(k) + " is not positive and finite");
    ctilde[k] = g[k] / (R * pdf[k]);
  }
}

#define FLT_INSTANTIATE(T)                                                                    \
  template void rpe_basis<T>(ConstMatRef<T>, std::span<const double>, const Mat<double>&,     \
                             Mat<T>&);                                                        \
  template void rpe_basis_backward<T>(const Mat<double>&, ConstMatRef<T>, ConstMatRef<T>,     \
                                      MatRef<T>);
FLT_INSTANTIATE(float)
FLT_INSTANTIATE(double)
#undef FLT_INSTANTIATE

}  // namespace flt::attn
