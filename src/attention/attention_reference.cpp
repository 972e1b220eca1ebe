// Readable reference of FLT attention (tests compare the streaming kernel against it).
// Per set and head: materialise Q~ (n x m 2R) and K~ (kronecker, E9) or the Performer features of
// x^ and y^ (bias, E12), then out_i = sum_j (Q~_i . K~_j) v_j / sum_j (Q~_i . K~_j), j <= i when
// causal (E10 written as an explicit double sum). No stabiliser, no blocking, no threads, double
// arithmetic throughout; phases computed directly as 2 pi xi . (r - centre).
#include "core/error.hpp"
#include "attention/attention.hpp"

#include <cmath>
#include <numbers>

namespace flt::attn {

namespace {

// E2 without stabilisation: phi_a = m^(-1/2) exp(w_a . x - |x|^2 / 2).
Vec<double> performer_phi(const Vec<double>& x, const Mat<double>& W) {
  const double m = static_cast<double>(W.rows());
  Vec<double> phi(W.rows());
  for (Index a = 0; a < W.rows(); ++a)
    phi(a) = std::exp(W.row(a).dot(x.transpose()) - 0.5 * x.squaredNorm()) / std::sqrt(m);
  return phi;
}

}  // namespace

template <class T>
Mat<T> flt_attention_reference(const FltAttention<T>& layer, const ParameterStore<T>& store,
                               std::type_identity_t<ConstMatRef<T>> Q,
                               std::type_identity_t<ConstMatRef<T>> K,
                               std::type_identity_t<ConstMatRef<T>> V,
                               std::type_identity_t<ConstMatRef<T>> coords,
                               const RaggedIndex& batch) {
  const auto& c = layer.config();
  require(layer.has_features(), "flt_attention_reference: features not drawn");
  const Index H = c.heads, d = c.head_dim, dv = c.value_dim, dc = c.coord_dim(),
              R = c.frequencies();
  const Index L = batch.total_rows();
  Mat<T> out(L, H * dv);
  const double pi2 = 2.0 * std::numbers::pi;
  for (Index h = 0; h < H; ++h) {
    const auto& W = layer.features().omega[static_cast<std::size_t>(h)];
    const auto& xi = layer.features().xi[static_cast<std::size_t>(h)];
    const auto ct = layer.head_ctilde(store, h);
    const double beta =
        c.variant == Variant::bias ? static_cast<double>(store.value(layer.beta_param())(h, 0)) : 1.0;
    for (Index s = 0; s < batch.num_sets(); ++s) {
      const Index b0 = batch.begin(s), n = batch.size(s);
      if (n == 0) continue;
      Vec<double> centre = Vec<double>::Zero(dc);
      if (c.centring()) {
        for (Index i = 0; i < n; ++i)
          for (Index a = 0; a < dc; ++a) centre(a) += static_cast<double>(coords(b0 + i, a));
        centre /= static_cast<double>(n);
      }
      // psiQ (with c~_k / R folded into c~) and psiK (E8), rows = tokens.
      Mat<double> psiQ(n, 2 * R), psiK(n, 2 * R);
      for (Index i = 0; i < n; ++i)
        for (Index k = 0; k < R; ++k) {
          double t = 0;
          for (Index a = 0; a < dc; ++a)
            t += xi(k, a) * (static_cast<double>(coords(b0 + i, a)) - centre(a));
          const double th = pi2 * t;
          psiK(i, k) = std::cos(th);
          psiK(i, R + k) = std::sin(th);
          psiQ(i, k) = ct[static_cast<std::size_t>(k)] * std::cos(th);
          psiQ(i, R + k) = ct[static_cast<std::size_t>(k)] * std::sin(th);
        }
      const double qs = std::pow(static_cast<double>(d), -0.25);
      Mat<double> QT, KT;  // materialised features, one row per token
      for (Index i = 0; i < n; ++i) {
        Vec<double> q(d), k(d);
        for (Index a = 0; a < d; ++a) {
          q(a) = qs * static_cast<double>(Q(b0 + i, h * d + a));
          k(a) = qs * static_cast<double>(K(b0 + i, h * d + a));
        }
        Vec<double> fq, fk;
        if (c.variant == Variant::kronecker) {
          const Vec<double> pq = performer_phi(q, W), pk = performer_phi(k, W);
          fq.resize(pq.size() * 2 * R);
          fk.resize(pk.size() * 2 * R);
          for (Index a = 0; a < pq.size(); ++a)
            for (Index b = 0; b < 2 * R; ++b) {
              fq(a * 2 * R + b) = pq(a) * psiQ(i, b);  // (E9) phi kron psi
              fk(a * 2 * R + b) = pk(a) * psiK(i, b);
            }
        } else {
          Vec<double> xq(d + 2 * R), yk(d + 2 * R);
          xq.head(d) = q;
          yk.head(d) = k;
          // clean one-sided form balanced by sqrt(R): beta sqrt(R) c~ on queries, 1/sqrt(R) on keys
          const double root = std::sqrt(static_cast<double>(R));
          xq.tail(2 * R) = beta * root * psiQ.row(i).transpose();
          yk.tail(2 * R) = psiK.row(i).transpose() / root;
          fq = performer_phi(xq, W);
          fk = performer_phi(yk, W);
        }
        if (i == 0) {
          QT.resize(n, fq.size());
          KT.resize(n, fk.size());
        }
        QT.row(i) = fq.transpose();
        KT.row(i) = fk.transpose();
      }
      for (Index i = 0; i < n; ++i) {
        Vec<double> num = Vec<double>::Zero(dv);
        double den = 0;
        const Index jmax = c.causal ? i + 1 : n;
        for (Index j = 0; j < jmax; ++j) {
          const double aij = QT.row(i).dot(KT.row(j));
          den += aij;
          for (Index e = 0; e < dv; ++e) num(e) += aij * static_cast<double>(V(b0 + j, h * dv + e));
        }
        for (Index e = 0; e < dv; ++e) out(b0 + i, h * dv + e) = static_cast<T>(num(e) / den);
      }
    }
  }
  return out;
}

template Mat<float> flt_attention_reference<float>(const FltAttention<float>&,
                                                   const ParameterStore<float>&, ConstMatRef<float>,
                                                   ConstMatRef<float>, ConstMatRef<float>,
                                                   ConstMatRef<float>, const RaggedIndex&);
template Mat<double> flt_attention_reference<double>(const FltAttention<double>&,
                                                     const ParameterStore<double>&,
                                                     ConstMatRef<double>, ConstMatRef<double>,
                                                     ConstMatRef<double>, ConstMatRef<double>,
                                                     const RaggedIndex&);

}  // namespace flt::attn
