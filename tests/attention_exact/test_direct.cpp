// Tests of the readable O(L^2) references (attention/exact/direct.hpp) against independent
// computations: plain Eigen softmax attention, hand-computed two-token cases, prefix and per-set
// decompositions.
#include "attention/exact/direct.hpp"

#include "core/error.hpp"
#include "core/random.hpp"
#include "../attention/flt_test_util.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

using namespace flt;
using namespace flt::exact;

using flt::attn::testing::random_normal_mat;

namespace {

// softmax(Q K^T / sqrt(d) + Bias) V with dense matrices (independent of the code under test).
Mat<double> dense_softmax_attention(const Mat<double>& Q, const Mat<double>& K, const Mat<double>& V,
                                    const Mat<double>& bias) {
  Mat<double> S = Q * K.transpose() / std::sqrt(static_cast<double>(Q.cols())) + bias;
  for (Index i = 0; i < S.rows(); ++i) {
    const double mx = S.row(i).maxCoeff();
    S.row(i) = (S.row(i).array() - mx).exp().matrix();
    S.row(i) /= S.row(i).sum();
  }
  return S * V;
}

double gaussian_of_distance(std::span<const double> z) {
  double r2 = 0;
  for (double x : z) r2 += x * x;
  return std::exp(-0.5 * r2) + 0.1;
}

}  // namespace

TEST_CASE("direct E4 with f = 1 and bias b = 0 equal dense softmax attention",
          "[flt_exact][direct]") {
  Rng rng(1);
  const Index L = 9, d = 4, dv = 3, dc = 3;
  const Mat<double> Q = random_normal_mat(rng, L, d), K = random_normal_mat(rng, L, d), V = random_normal_mat(rng, L, dv);
  const Mat<double> R = random_normal_mat(rng, L, dc);
  const Mat<double> ref = dense_softmax_attention(Q, K, V, Mat<double>::Zero(L, L));
  const Mat<double> a = masked_attention_direct<double>(Q, K, V, R, [](auto) { return 1.0; });
  const Mat<double> b = biased_attention_direct<double>(Q, K, V, R, [](auto) { return 0.0; });
  CHECK((a - ref).cwiseAbs().maxCoeff() < 1e-13);
  CHECK((b - ref).cwiseAbs().maxCoeff() < 1e-13);
}

TEST_CASE("direct additive bias equals dense softmax with the bias matrix, any dimension",
          "[flt_exact][direct]") {
  Rng rng(2);
  for (Index dc : {1, 2, 3}) {
    const Index L = 8, d = 5, dv = 2;
    const Mat<double> Q = random_normal_mat(rng, L, d), K = random_normal_mat(rng, L, d);
    const Mat<double> V = random_normal_mat(rng, L, dv), R = random_normal_mat(rng, L, dc, 2.0);
    // A bias that is not symmetric in the offset, to catch r_i - r_j vs r_j - r_i mix-ups.
    auto bias_fn = [](std::span<const double> z) { return 0.7 * z[0] - 0.3 * z[0] * z[0]; };
    Mat<double> B(L, L);
    for (Index i = 0; i < L; ++i)
      for (Index j = 0; j < L; ++j) {
        const double z0 = R(i, 0) - R(j, 0);
        B(i, j) = 0.7 * z0 - 0.3 * z0 * z0;
      }
    const Mat<double> ref = dense_softmax_attention(Q, K, V, B);
    const Mat<double> got = biased_attention_direct<double>(Q, K, V, R, bias_fn);
    CHECK((got - ref).cwiseAbs().maxCoeff() < 1e-12);
    // exp(b) as a multiplicative mask is the same attention (E4 with f = exp b).
    const Mat<double> mult = masked_attention_direct<double>(
        Q, K, V, R, [&](std::span<const double> z) { return std::exp(bias_fn(z)); });
    CHECK((mult - ref).cwiseAbs().maxCoeff() < 1e-12);
  }
}

TEST_CASE("direct E4 on two tokens matches the hand-computed formula", "[flt_exact][direct]") {
  // Q = K = 0 so A_ij = 1: out_0 = (f(0) v0 + f(r0 - r1) v1) / (f(0) + f(r0 - r1)).
  Mat<double> Q = Mat<double>::Zero(2, 2), K = Mat<double>::Zero(2, 2);
  Mat<double> V(2, 1), R(2, 1);
  V << 1.0, 3.0;
  R << 0.0, 2.0;
  auto f = [](std::span<const double> z) { return z[0] < 0 ? 0.25 : 1.0; };  // f(-2) = 0.25
  const Mat<double> out = masked_attention_direct<double>(Q, K, V, R, f);
  CHECK(out(0, 0) == Approx((1.0 * 1.0 + 0.25 * 3.0) / 1.25).epsilon(1e-14));
  CHECK(out(1, 0) == Approx((1.0 * 1.0 + 1.0 * 3.0) / 2.0).epsilon(1e-14));
}

TEST_CASE("direct causal attention equals non-causal attention on each prefix",
          "[flt_exact][direct]") {
  Rng rng(3);
  const Index L = 7, d = 3, dv = 2, dc = 1;
  const Mat<double> Q = random_normal_mat(rng, L, d), K = random_normal_mat(rng, L, d), V = random_normal_mat(rng, L, dv);
  Mat<double> R(L, dc);
  for (Index i = 0; i < L; ++i) R(i, 0) = static_cast<double>(i);
  const Mat<double> causal = masked_attention_direct<double>(Q, K, V, R, gaussian_of_distance, true);
  CHECK((causal.row(0) - V.row(0)).cwiseAbs().maxCoeff() < 1e-14);
  for (Index n = 1; n <= L; ++n) {
    const Mat<double> prefix = masked_attention_direct<double>(
        Q.topRows(n), K.topRows(n), V.topRows(n), R.topRows(n), gaussian_of_distance, false);
    CHECK((causal.row(n - 1) - prefix.row(n - 1)).cwiseAbs().maxCoeff() < 1e-14);
  }
  const Mat<double> full = masked_attention_direct<double>(Q, K, V, R, gaussian_of_distance, false);
  CHECK((full.row(0) - causal.row(0)).cwiseAbs().maxCoeff() > 1e-6);  // causality matters
}

TEST_CASE("direct ragged batch equals separate calls per set, multi-head equals per-head calls",
          "[flt_exact][direct]") {
  Rng rng(4);
  const std::vector<Index> sizes = {3, 0, 5, 1, 4};
  const RaggedIndex sets = RaggedIndex::from_sizes(sizes);
  const Index L = sets.total_rows(), H = 2, d = 3, dv = 2, dc = 3;
  const Mat<double> Q = random_normal_mat(rng, L, H * d), K = random_normal_mat(rng, L, H * d);
  const Mat<double> V = random_normal_mat(rng, L, H * dv), R = random_normal_mat(rng, L, dc);
  std::vector<OffsetFunction> fs = {gaussian_of_distance,
                                    [](std::span<const double> z) { return 1.0 + 0.5 * z[1]; }};
  for (MaskKind kind : {MaskKind::multiplicative, MaskKind::additive}) {
    const Mat<double> batched = multihead_attention_direct<double>(Q, K, V, R, sets, fs, kind);
    for (Index s = 0; s < sets.num_sets(); ++s) {
      const Index b = sets.begin(s), n = sets.size(s);
      if (n == 0) continue;  // an empty set has no rows (maxCoeff of nothing is undefined)
      for (Index h = 0; h < H; ++h) {
        const auto& fn = fs[static_cast<std::size_t>(h)];
        auto Qs = Q.block(b, h * d, n, d), Ks = K.block(b, h * d, n, d);
        auto Vs = V.block(b, h * dv, n, dv);
        const Mat<double> one = kind == MaskKind::multiplicative
                                    ? masked_attention_direct<double>(Qs, Ks, Vs, R.middleRows(b, n), fn)
                                    : biased_attention_direct<double>(Qs, Ks, Vs, R.middleRows(b, n), fn);
        CHECK((batched.block(b, h * dv, n, dv) - one).cwiseAbs().maxCoeff() == 0.0);
      }
    }
  }
}

TEST_CASE("direct attention is translation invariant and float agrees with double",
          "[flt_exact][direct]") {
  Rng rng(5);
  const Index L = 10, d = 4, dv = 3, dc = 3;
  const Mat<double> Q = random_normal_mat(rng, L, d), K = random_normal_mat(rng, L, d), V = random_normal_mat(rng, L, dv);
  const Mat<double> R = random_normal_mat(rng, L, dc);
  Mat<double> shifted = R;
  shifted.rowwise() += RowVec<double>::Constant(dc, 3.0);
  const Mat<double> a = masked_attention_direct<double>(Q, K, V, R, gaussian_of_distance);
  const Mat<double> b = masked_attention_direct<double>(Q, K, V, shifted, gaussian_of_distance);
  CHECK((a - b).cwiseAbs().maxCoeff() < 1e-12);
  const Mat<float> af = masked_attention_direct<float>(Q.cast<float>(), K.cast<float>(),
                                                       V.cast<float>(), R.cast<float>(),
                                                       gaussian_of_distance);
  CHECK((af.cast<double>() - a).cwiseAbs().maxCoeff() < 1e-5);
}

TEST_CASE("direct E4 rejects a zero denominator and bad shapes with typed errors",
          "[flt_exact][direct]") {
  Rng rng(6);
  const Mat<double> Q = random_normal_mat(rng, 4, 2), V = random_normal_mat(rng, 4, 2), R = random_normal_mat(rng, 4, 1);
  CHECK_THROWS_AS(masked_attention_direct<double>(Q, Q, V, R, [](auto) { return 0.0; }),
                  NumericalError);
  CHECK_THROWS_AS(masked_attention_direct<double>(Q, Q, V.topRows(3), R, [](auto) { return 1.0; }),
                  InvalidArgument);
  CHECK_THROWS_AS(masked_attention_direct<double>(Q, Q, V, R, RaggedIndex::single(3),
                                                  [](auto) { return 1.0; }),
                  InvalidArgument);
}
