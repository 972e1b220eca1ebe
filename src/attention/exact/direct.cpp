// L tokens, H heads, d query/key width per head, dv value width per head, dc coordinate dimension.
// Readable O(L^2 (d + dv)) reference of E4 and of the additive-bias form; see direct.hpp.
#include "attention/exact/direct.hpp"

#include "core/error.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace flt::exact {
namespace {

template <class T>
void check_shapes(ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V, ConstMatRef<T> coords,
                  const RaggedIndex& sets, Index heads) {
  const Index L = Q.rows();
  require(heads >= 1, "exact attention (direct): need at least one head");
  require(K.rows() == L && V.rows() == L && coords.rows() == L,
          "exact attention (direct): Q, K, V and coords must have the same number of rows (tokens)");
  require(K.cols() == Q.cols(), "exact attention (direct): Q and K must have the same width");
  require(Q.cols() % heads == 0 && V.cols() % heads == 0,
          "exact attention (direct): Q/K and V widths must be multiples of the number of heads");
  require(Q.cols() > 0, "exact attention (direct): query/key width must be positive");
  require(sets.total_rows() == L,
          "exact attention (direct): the ragged index must cover exactly the L rows of Q");
}

// One head h of one set [begin, end): writes rows of `out` (columns of head h).
template <class T>
void attend_one_head(ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V, ConstMatRef<T> coords,
                     Index begin, Index end, Index h, Index d, Index dv,
                     const OffsetFunction& fn, MaskKind kind, bool causal, Mat<T>& out) {
  const Index dc = coords.cols();
  const double inv_sqrt_d = 1.0 / std::sqrt(static_cast<double>(d));
  std::vector<double> logit, mask, offset(static_cast<std::size_t>(dc));
  std::vector<double> acc(static_cast<std::size_t>(dv));
  for (Index i = begin; i < end; ++i) {
    const Index last = causal ? i + 1 : end;  // keys j in [begin, last)
    const auto n = static_cast<std::size_t>(last - begin);
    logit.assign(n, 0.0);
    mask.assign(n, 0.0);
    for (Index j = begin; j < last; ++j) {
      double s = 0.0;  // q_i . k_j / sqrt(d)   (E1 exponent)
      for (Index c = 0; c < d; ++c)
        s += static_cast<double>(Q(i, h * d + c)) * static_cast<double>(K(j, h * d + c));
      s *= inv_sqrt_d;
      for (Index c = 0; c < dc; ++c)
        offset[static_cast<std::size_t>(c)] =
            static_cast<double>(coords(i, c)) - static_cast<double>(coords(j, c));
      const double value = fn(std::span<const double>(offset));
      const auto jj = static_cast<std::size_t>(j - begin);
      if (kind == MaskKind::multiplicative) {
        logit[jj] = s;
        mask[jj] = value;
      } else {
        logit[jj] = s + value;  // softmax logit with additive bias
        mask[jj] = 1.0;
      }
    }
    // The common factor exp(-max logit) cancels between numerator and denominator; it only keeps
    // exp() from overflowing.
    const double shift = *std::max_element(logit.begin(), logit.end());
    std::fill(acc.begin(), acc.end(), 0.0);
    double den = 0.0;
    for (Index j = begin; j < last; ++j) {
      const auto jj = static_cast<std::size_t>(j - begin);
      const double w = std::exp(logit[jj] - shift) * mask[jj];
      den += w;
      for (Index c = 0; c < dv; ++c)
        acc[static_cast<std::size_t>(c)] += w * static_cast<double>(V(j, h * dv + c));
    }
    if (den == 0.0 || !std::isfinite(den))
      throw NumericalError("exact attention (direct): denominator sum_j A_ij f_ij is " +
                           std::to_string(den) + " for row " + std::to_string(i) + ", head " +
                           std::to_string(h));
    for (Index c = 0; c < dv; ++c)
      out(i, h * dv + c) = static_cast<T>(acc[static_cast<std::size_t>(c)] / den);
  }
}

}  // namespace

template <class T>
Mat<T> multihead_attention_direct(ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V,
                                  ConstMatRef<T> coords, const RaggedIndex& sets,
                                  std::span<const OffsetFunction> per_head, MaskKind kind,
                                  bool causal) {
  const auto heads = static_cast<Index>(per_head.size());
  check_shapes<T>(Q, K, V, coords, sets, heads);
  const Index d = Q.cols() / heads;
  const Index dv = V.cols() / heads;
  Mat<T> out = Mat<T>::Zero(Q.rows(), V.cols());
  for (Index s = 0; s < sets.num_sets(); ++s)
    for (Index h = 0; h < heads; ++h)
      attend_one_head<T>(Q, K, V, coords, sets.begin(s), sets.end(s), h, d, dv,
                         per_head[static_cast<std::size_t>(h)], kind, causal, out);
  return out;
}

template <class T>
Mat<T> masked_attention_direct(ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V,
                               ConstMatRef<T> coords, const RaggedIndex& sets,
                               const OffsetFunction& f, bool causal) {
  return multihead_attention_direct<T>(Q, K, V, coords, sets, std::span<const OffsetFunction>(&f, 1),
                                       MaskKind::multiplicative, causal);
}

template <class T>
Mat<T> masked_attention_direct(ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V,
                               ConstMatRef<T> coords, const OffsetFunction& f, bool causal) {
  return masked_attention_direct<T>(Q, K, V, coords, RaggedIndex::single(Q.rows()), f, causal);
}

template <class T>
Mat<T> biased_attention_direct(ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V,
                               ConstMatRef<T> coords, const RaggedIndex& sets,
                               const OffsetFunction& b, bool causal) {
  return multihead_attention_direct<T>(Q, K, V, coords, sets, std::span<const OffsetFunction>(&b, 1),
                                       MaskKind::additive, causal);
}

template <class T>
Mat<T> biased_attention_direct(ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V,
                               ConstMatRef<T> coords, const OffsetFunction& b, bool causal) {
  return biased_attention_direct<T>(Q, K, V, coords, RaggedIndex::single(Q.rows()), b, causal);
}

#define FLT_EXACT_DIRECT_INSTANTIATE(T)                                                          \
  template Mat<T> masked_attention_direct<T>(ConstMatRef<T>, ConstMatRef<T>, ConstMatRef<T>,     \
                                             ConstMatRef<T>, const OffsetFunction&, bool);       \
  template Mat<T> masked_attention_direct<T>(ConstMatRef<T>, ConstMatRef<T>, ConstMatRef<T>,     \
                                             ConstMatRef<T>, const RaggedIndex&,                 \
                                             const OffsetFunction&, bool);                       \
  template Mat<T> biased_attention_direct<T>(ConstMatRef<T>, ConstMatRef<T>, ConstMatRef<T>,     \
                                             ConstMatRef<T>, const OffsetFunction&, bool);       \
  template Mat<T> biased_attention_direct<T>(ConstMatRef<T>, ConstMatRef<T>, ConstMatRef<T>,     \
                                             ConstMatRef<T>, const RaggedIndex&,                 \
                                             const OffsetFunction&, bool);                       \
  template Mat<T> multihead_attention_direct<T>(ConstMatRef<T>, ConstMatRef<T>, ConstMatRef<T>,  \
                                                ConstMatRef<T>, const RaggedIndex&,              \
                                                std::span<const OffsetFunction>, MaskKind, bool);

FLT_EXACT_DIRECT_INSTANTIATE(float)
FLT_EXACT_DIRECT_INSTANTIATE(double)
#undef FLT_EXACT_DIRECT_INSTANTIATE

}  // namespace flt::exact
