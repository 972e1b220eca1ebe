// L atoms, H heads, d per-head width, m Performer features. See performer_attention.hpp.
#include "models/performer_attention.hpp"

#include "core/error.hpp"
#include "attention/performer.hpp"

#include <cmath>

namespace flt::models::detail {

namespace {

struct Dims {
  Index H, d, m;
};

template <class T>
Dims dims_of(const std::vector<Mat<T>>& omega, ConstMatRef<T> Q, ConstMatRef<T> K,
             ConstMatRef<T> V, const RaggedIndex& sets) {
  require(!omega.empty(), "performer attention: no heads");
  const Index H = static_cast<Index>(omega.size());
  const Index d = omega[0].cols(), m = omega[0].rows();
  for (const auto& w : omega)
    require(w.rows() == m && w.cols() == d, "performer attention: frequencies must be m x d per head");
  const Index L = sets.total_rows();
  require(Q.rows() == L && K.rows() == L && V.rows() == L && Q.cols() == H * d &&
              K.cols() == H * d && V.cols() == H * d,
          "performer attention: Q, K, V must be L x (H d)");
  return {H, d, m};
}

}  // namespace

template <class T>
void performer_attention_forward(const std::vector<Mat<T>>& omega, const RaggedIndex& sets,
                                 ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V,
                                 Mat<T>& out, Mat<T>& den, std::vector<double>& key_stab) {
  const auto [H, d, m] = dims_of<T>(omega, Q, K, V, sets);
  const Index L = sets.total_rows(), S = sets.num_sets();
  out.resize(L, H * d);
  den.resize(L, H);
  key_stab.assign(static_cast<std::size_t>(S * H), 0.0);
  const T scale = static_cast<T>(std::pow(static_cast<double>(d), -0.25));
  const Index pairs = S * H;
#pragma omp parallel for schedule(dynamic, 1)
  for (Index p = 0; p < pairs; ++p) {
    const Index s = p / H, h = p % H, b = sets.begin(s), n = sets.size(s);
    if (n == 0) continue;
    const Mat<T> X = Q.block(b, h * d, n, d) * scale;
    const Mat<T> Y = K.block(b, h * d, n, d) * scale;
    const Mat<T>& W = omega[static_cast<std::size_t>(h)];
    const double stab = attn::performer_logit_max<T>(Y, W);
    key_stab[static_cast<std::size_t>(p)] = stab;
    Mat<T> phiQ, phiK;
    attn::performer_features<T>(X, W, true, 0.0, phiQ);
    attn::performer_features<T>(Y, W, false, stab, phiK);
    const Mat<T> Sm = phiK.transpose() * V.block(b, h * d, n, d);  // m x d
    const Vec<T> z = phiK.colwise().sum().transpose();              // m
    const Mat<T> num = phiQ * Sm;                                   // n x d
    const Vec<T> dn = phiQ * z;                                     // n
    for (Index i = 0; i < n; ++i) {
      den(b + i, h) = dn(i);
      out.block(b + i, h * d, 1, d) = num.row(i) / dn(i);
    }
  }
}

template <class T>
void performer_attention_backward(const std::vector<Mat<T>>& omega, const RaggedIndex& sets,
                                  ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V,
                                  const Mat<T>& out, const Mat<T>& den,
                                  const std::vector<double>& key_stab, ConstMatRef<T> dout,
                                  MatRef<T> dQ, MatRef<T> dK, MatRef<T> dV) {
  const auto [H, d, m] = dims_of<T>(omega, Q, K, V, sets);
  const Index L = sets.total_rows(), S = sets.num_sets();
  require(dout.rows() == L && dout.cols() == H * d && dQ.rows() == L && dK.rows() == L &&
              dV.rows() == L && out.rows() == L && den.rows() == L,
          "performer attention backward: shape mismatch");
  const T scale = static_cast<T>(std::pow(static_cast<double>(d), -0.25));
  const Index pairs = S * H;
#pragma omp parallel for schedule(dynamic, 1)
  for (Index p = 0; p < pairs; ++p) {
    const Index s = p / H, h = p % H, b = sets.begin(s), n = sets.size(s);
    if (n == 0) continue;
    const Mat<T> X = Q.block(b, h * d, n, d) * scale;
    const Mat<T> Y = K.block(b, h * d, n, d) * scale;
    const Mat<T> Vb = V.block(b, h * d, n, d);
    const Mat<T>& W = omega[static_cast<std::size_t>(h)];
    Mat<T> phiQ, phiK;
    attn::performer_features<T>(X, W, true, 0.0, phiQ);
    attn::performer_features<T>(Y, W, false, key_stab[static_cast<std::size_t>(p)], phiK);
    const Mat<T> Sm = phiK.transpose() * Vb;
    const Vec<T> z = phiK.colwise().sum().transpose();
    // Ga_i = G_i / den_i, c_i = (G_i . out_i) / den_i.
    Mat<T> Ga(n, d);
    Vec<T> c(n);
    for (Index i = 0; i < n; ++i) {
      const T a = T(1) / den(b + i, h);
      Ga.row(i) = dout.row(b + i).segment(h * d, d) * a;
      c(i) = dout.row(b + i).segment(h * d, d).dot(out.row(b + i).segment(h * d, d)) * a;
    }
    const Mat<T> dphiQ = Ga * Sm.transpose() - c * z.transpose();  // n x m
    const Mat<T> dS = phiQ.transpose() * Ga;                         // m x d
    const Vec<T> dz = -(phiQ.transpose() * c);                       // m
    dV.block(b, h * d, n, d) += phiK * dS;
    const Mat<T> dphiK = Vb * dS.transpose() + Vec<T>::Ones(n) * dz.transpose();  // n x m
    Mat<T> dX = Mat<T>::Zero(n, d), dY = Mat<T>::Zero(n, d);
    attn::performer_backward<T>(X, W, phiQ, dphiQ, dX);
    attn::performer_backward<T>(Y, W, phiK, dphiK, dY);
    dQ.block(b, h * d, n, d) += dX * scale;
    dK.block(b, h * d, n, d) += dY * scale;
  }
}

template <class T>
Mat<T> performer_attention_reference(const std::vector<Mat<T>>& omega, const RaggedIndex& sets,
                                     ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V) {
  const auto [H, d, m] = dims_of<T>(omega, Q, K, V, sets);
  Mat<T> out(sets.total_rows(), H * d);
  const double sc = std::pow(static_cast<double>(d), -0.25);
  // Unstabilised E2 features in double: phi_a(x) = m^-1/2 exp(w_a.x - |x|^2/2).
  auto phi = [&](const Mat<T>& W, auto row) {
    std::vector<double> f(static_cast<std::size_t>(m));
    double sq = 0;
    for (Index c = 0; c < d; ++c) sq += static_cast<double>(row(c)) * sc * static_cast<double>(row(c)) * sc;
    for (Index a = 0; a < m; ++a) {
      double dot = 0;
      for (Index c = 0; c < d; ++c) dot += static_cast<double>(W(a, c)) * static_cast<double>(row(c)) * sc;
      f[static_cast<std::size_t>(a)] = std::exp(dot - sq / 2) / std::sqrt(static_cast<double>(m));
    }
    return f;
  };
  for (Index s = 0; s < sets.num_sets(); ++s)
    for (Index h = 0; h < H; ++h) {
      const Mat<T>& W = omega[static_cast<std::size_t>(h)];
      for (Index i = sets.begin(s); i < sets.end(s); ++i) {
        const auto fq = phi(W, Q.row(i).segment(h * d, d));
        std::vector<double> num(static_cast<std::size_t>(d), 0.0);
        double dn = 0;
        for (Index j = sets.begin(s); j < sets.end(s); ++j) {
          const auto fk = phi(W, K.row(j).segment(h * d, d));
          double w = 0;
          for (Index a = 0; a < m; ++a) w += fq[static_cast<std::size_t>(a)] * fk[static_cast<std::size_t>(a)];
          dn += w;
          for (Index c = 0; c < d; ++c) num[static_cast<std::size_t>(c)] += w * static_cast<double>(V(j, h * d + c));
        }
        for (Index c = 0; c < d; ++c) out(i, h * d + c) = static_cast<T>(num[static_cast<std::size_t>(c)] / dn);
      }
    }
  return out;
}

#define FLT_INSTANTIATE(T)                                                                          \
  template void performer_attention_forward<T>(const std::vector<Mat<T>>&, const RaggedIndex&,     \
                                               ConstMatRef<T>, ConstMatRef<T>, ConstMatRef<T>,     \
                                               Mat<T>&, Mat<T>&, std::vector<double>&);            \
  template void performer_attention_backward<T>(                                                   \
      const std::vector<Mat<T>>&, const RaggedIndex&, ConstMatRef<T>, ConstMatRef<T>,              \
      ConstMatRef<T>, const Mat<T>&, const Mat<T>&, const std::vector<double>&, ConstMatRef<T>,    \
      MatRef<T>, MatRef<T>, MatRef<T>);                                                            \
  template Mat<T> performer_attention_reference<T>(const std::vector<Mat<T>>&, const RaggedIndex&, \
                                                   ConstMatRef<T>, ConstMatRef<T>, ConstMatRef<T>);
FLT_INSTANTIATE(float)
FLT_INSTANTIATE(double)
#undef FLT_INSTANTIATE

}  // namespace flt::models::detail
