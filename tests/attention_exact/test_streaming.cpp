// Tests of the streaming exact attention (attention/exact/streaming.hpp): equal to the readable direct
// reference (all three mask modes, ragged sets, several tiles per set, float and double), gradient
// checks in double for every input and parameter, bitwise determinism across thread counts.
#include "attention/exact/streaming.hpp"

#include "core/gradcheck.hpp"
#include "core/random.hpp"
#include "attention/exact/direct.hpp"
#include "../attention/flt_test_util.hpp"

#include <catch2/catch.hpp>
#include <omp.h>

#include <cmath>
#include <vector>

using namespace flt;
using namespace flt::exact;

using flt::attn::testing::random_normal_mat;

namespace {

struct Problem {
  StreamingAttentionConfig cfg;
  RaggedIndex sets;
  Mat<double> Q, K, V, R, A;
  Index d = 0, dv = 0;
};

Problem make_problem(DistanceMask mask, std::uint64_t seed, std::vector<Index> sizes, Index H,
                     Index d, Index dv, Index dc, Index block_q, Index block_k) {
  Rng rng(seed);
  Problem p;
  p.cfg.heads = H;
  p.cfg.mask = mask;
  p.cfg.basis = RadialBasis::uniform(5, 3.0);
  p.cfg.query_block = block_q;
  p.cfg.key_block = block_k;
  p.sets = RaggedIndex::from_sizes(sizes);
  const Index L = p.sets.total_rows();
  p.d = d;
  p.dv = dv;
  p.Q = random_normal_mat(rng, L, H * d);
  p.K = random_normal_mat(rng, L, H * d);
  p.V = random_normal_mat(rng, L, H * dv);
  p.R = random_normal_mat(rng, L, dc, 1.2);
  p.A = random_normal_mat(rng, H, p.cfg.basis.size());
  // A positive mask keeps the multiplicative (E4) denominators away from zero.
  if (mask == DistanceMask::multiplicative) p.A = p.A.cwiseAbs().array() + 0.2;
  return p;
}

// The same attention through the readable reference: f_h(z) = u_h(|z|) (or b_h for additive).
Mat<double> direct_reference(const Problem& p) {
  std::vector<OffsetFunction> per_head;
  for (Index h = 0; h < p.cfg.heads; ++h) {
    if (p.cfg.mask == DistanceMask::none) {
      per_head.push_back([](std::span<const double>) { return 1.0; });
      continue;
    }
    per_head.push_back([&p, h](std::span<const double> z) {
      double r2 = 0;
      for (double x : z) r2 += x * x;
      return p.cfg.basis.evaluate(p.A.row(h), std::sqrt(r2));
    });
  }
  const MaskKind kind =
      p.cfg.mask == DistanceMask::additive ? MaskKind::additive : MaskKind::multiplicative;
  return multihead_attention_direct<double>(p.Q, p.K, p.V, p.R, p.sets, per_head, kind);
}

template <class T>
StreamingAttentionCache<T> run_forward(const Problem& p) {
  StreamingAttentionCache<T> cache;
  streaming_attention_forward<T>(p.cfg, p.sets, p.Q.cast<T>(), p.K.cast<T>(), p.V.cast<T>(),
                                 p.R.cast<T>(), p.A.cast<T>(), cache);
  return cache;
}

const char* name(DistanceMask m) {
  return m == DistanceMask::none ? "none" : m == DistanceMask::additive ? "additive" : "multiplicative";
}

}  // namespace

TEST_CASE("streaming attention equals the direct reference (all masks, ragged, multi-tile)",
          "[flt_exact][streaming]") {
  for (DistanceMask mask : {DistanceMask::none, DistanceMask::additive, DistanceMask::multiplicative}) {
    INFO("mask " << name(mask));
    // Blocks 4 x 5 split sets of 11 and 13 rows into several tiles with ragged edges.
    const Problem p = make_problem(mask, 11, {11, 1, 0, 13, 3}, 3, 4, 3, 3, 4, 5);
    const Mat<double> ref = direct_reference(p);
    const auto c64 = run_forward<double>(p);
    CHECK((c64.out - ref).cwiseAbs().maxCoeff() < 1e-12);
    CHECK(c64.nonpositive_denominators == 0);
    const auto c32 = run_forward<float>(p);
    CHECK((c32.out.cast<double>() - ref).cwiseAbs().maxCoeff() < 2e-5 * ref.cwiseAbs().maxCoeff());
    // Block sizes are an implementation detail: one big tile gives the same result.
    Problem big = p;
    big.cfg.query_block = big.cfg.key_block = 64;
    CHECK((run_forward<double>(big).out - ref).cwiseAbs().maxCoeff() < 1e-12);
  }
}

TEST_CASE("streaming attention survives large logits (online softmax rescaling)",
          "[flt_exact][streaming]") {
  // Blocks 3 x 4: several key blocks rescale the running sums; 64: one tile.
  for (Index block : {Index(3), Index(64)}) {
  INFO("query block " << block);
  Problem p = make_problem(DistanceMask::additive, 12, {20}, 2, 4, 2, 3, block, block == 3 ? 4 : 64);
  p.Q *= 12.0;  // logits of order 100: exp() would overflow without the running maximum
  p.K *= 12.0;
  const Mat<double> ref = direct_reference(p);
  const auto c64 = run_forward<double>(p);
  REQUIRE(c64.out.allFinite());
  CHECK((c64.out - ref).cwiseAbs().maxCoeff() < 1e-10);
  const auto c32 = run_forward<float>(p);
  REQUIRE(c32.out.allFinite());
  CHECK((c32.out.cast<double>() - ref).cwiseAbs().maxCoeff() < 1e-3);
  }
}

TEST_CASE("streaming attention: one tile per set and many tiles per set agree, cache included",
          "[flt_exact][streaming]") {
  // Sets of 1..17 rows (one tile with 64-row blocks) and one of 70 rows (several tiles either
  // way); the cache (m_i, l_i) feeds the backward pass, so it must agree too.
  for (DistanceMask mask : {DistanceMask::none, DistanceMask::additive, DistanceMask::multiplicative}) {
    INFO("mask " << name(mask));
    const Problem small = make_problem(mask, 13, {1, 7, 8, 9, 16, 17, 70}, 3, 4, 5, 3, 64, 64);
    Problem tiled = small;
    tiled.cfg.query_block = 5;  // every set but the first is several tiles
    tiled.cfg.key_block = 6;
    const auto a = run_forward<double>(small), b = run_forward<double>(tiled);
    CHECK((a.out - b.out).cwiseAbs().maxCoeff() < 1e-12);
    CHECK((a.row_max - b.row_max).cwiseAbs().maxCoeff() < 1e-12);
    // l_i is relative to m_i: compare the denominators exp(m_i) l_i.
    const Mat<double> da = (a.row_max.array().exp() * a.row_sum.array()).matrix();
    const Mat<double> db = (b.row_max.array().exp() * b.row_sum.array()).matrix();
    CHECK(((da - db).array().abs() / db.array().abs()).maxCoeff() < 1e-12);
    const Mat<double> ref = direct_reference(small);
    CHECK((a.out - ref).cwiseAbs().maxCoeff() < 1e-12);
    const auto f = run_forward<float>(small);
    CHECK((f.out.cast<double>() - ref).cwiseAbs().maxCoeff() < 2e-5 * ref.cwiseAbs().maxCoeff());
  }
}

TEST_CASE("streaming attention gradients pass finite-difference checks in double",
          "[flt_exact][streaming][gradcheck]") {
  // Blocks 4 x 3 cut both sets into several tiles; blocks of 64 make each set a single tile (the
  // one-pass backward).
  for (Index block : {Index(0), Index(64)})
  for (DistanceMask mask : {DistanceMask::none, DistanceMask::additive, DistanceMask::multiplicative}) {
    INFO("mask " << name(mask) << ", blocks " << (block ? "64" : "4 x 3"));
    Problem p = make_problem(mask, 21, {6, 5}, 2, 3, 2, 3, block ? block : 4, block ? block : 3);
    const Index L = p.sets.total_rows();
    Rng rng(99);
    const Mat<double> G = random_normal_mat(rng, L, p.V.cols());  // loss = sum(G o out)
    auto loss = [&] {
      return (run_forward<double>(p).out.cwiseProduct(G)).sum();
    };
    const auto cache = run_forward<double>(p);
    Mat<double> dQ = Mat<double>::Zero(L, p.Q.cols()), dK = dQ;
    Mat<double> dV = Mat<double>::Zero(L, p.V.cols());
    Mat<double> dR = Mat<double>::Zero(L, p.R.cols());
    Mat<double> dA = Mat<double>::Zero(p.A.rows(), p.A.cols());
    streaming_attention_backward<double>(p.cfg, p.sets, p.Q, p.K, p.V, p.R, p.A, cache, G, dQ, dK,
                                         dV, dR, dA);
    auto check = [&](Mat<double>& x, const Mat<double>& g, const char* what) {
      const auto res = check_gradient(loss, std::span<double>(x.data(), static_cast<std::size_t>(x.size())),
                                      std::span<const double>(g.data(), static_cast<std::size_t>(g.size())));
      INFO(what << ": worst " << res.worst_index << " analytic " << res.worst_analytic
                << " numeric " << res.worst_numeric);
      CHECK(res.max_rel_error <= 1e-6);
    };
    check(p.Q, dQ, "dQ");
    check(p.K, dK, "dK");
    check(p.V, dV, "dV");
    if (mask != DistanceMask::none) {
      check(p.R, dR, "dcoords");
      check(p.A, dA, "dcoeffs");
      CHECK(dR.cwiseAbs().maxCoeff() > 1e-3);  // the mask really depends on coordinates
    }
  }
}

TEST_CASE("streaming attention backward accumulates into the gradient buffers",
          "[flt_exact][streaming]") {
  const Problem p = make_problem(DistanceMask::additive, 31, {7}, 1, 2, 2, 2, 4, 4);
  const Index L = p.sets.total_rows();
  const auto cache = run_forward<double>(p);
  const Mat<double> G = Mat<double>::Ones(L, p.V.cols());
  Mat<double> dQ1 = Mat<double>::Zero(L, p.Q.cols()), dK1 = dQ1, dV1 = Mat<double>::Zero(L, 2);
  Mat<double> dR1 = Mat<double>::Zero(L, 2), dA1 = Mat<double>::Zero(1, p.A.cols());
  streaming_attention_backward<double>(p.cfg, p.sets, p.Q, p.K, p.V, p.R, p.A, cache, G, dQ1, dK1,
                                       dV1, dR1, dA1);
  Mat<double> dQ2 = dQ1, dK2 = dK1, dV2 = dV1, dR2 = dR1, dA2 = dA1;
  streaming_attention_backward<double>(p.cfg, p.sets, p.Q, p.K, p.V, p.R, p.A, cache, G, dQ2, dK2,
                                       dV2, dR2, dA2);
  CHECK((dQ2 - 2 * dQ1).cwiseAbs().maxCoeff() < 1e-14);
  CHECK((dV2 - 2 * dV1).cwiseAbs().maxCoeff() < 1e-14);
  CHECK((dA2 - 2 * dA1).cwiseAbs().maxCoeff() < 1e-14);
  CHECK((dR2 - 2 * dR1).cwiseAbs().maxCoeff() < 1e-14);
}

TEST_CASE("streaming attention: a radial basis table gives bitwise the same forward and backward",
          "[flt_exact][streaming]") {
  // Sets of 1, 5 and 8 rows fit one 8 x 8 tile (tabulated); 19 rows span several (not tabulated).
  for (DistanceMask mask : {DistanceMask::additive, DistanceMask::multiplicative}) {
    INFO("mask " << name(mask));
    const Problem p = make_problem(mask, 71, {5, 19, 1, 8}, 2, 4, 3, 3, 8, 8);
    const Index L = p.sets.total_rows();
    const Mat<float> Q = p.Q.cast<float>(), K = p.K.cast<float>(), V = p.V.cast<float>();
    const Mat<float> R = p.R.cast<float>(), A = p.A.cast<float>();
    RadialBasisTable<float> table;
    radial_basis_table<float>(p.cfg, p.sets, R, table);
    REQUIRE(table.first_pair == std::vector<Index>{0, -1, 25, 26});
    REQUIRE(table.rho.size() == 25 + 1 + 64);
    Rng rng(72);
    const Mat<float> G = random_normal_mat(rng, L, p.V.cols()).cast<float>();
    auto run = [&](const RadialBasisTable<float>* t) {
      StreamingAttentionCache<float> cache;
      streaming_attention_forward<float>(p.cfg, p.sets, Q, K, V, R, A, cache, t);
      std::vector<Mat<float>> g = {Mat<float>::Zero(L, Q.cols()), Mat<float>::Zero(L, K.cols()),
                                   Mat<float>::Zero(L, V.cols()), Mat<float>::Zero(L, R.cols()),
                                   Mat<float>::Zero(A.rows(), A.cols())};
      streaming_attention_backward<float>(p.cfg, p.sets, Q, K, V, R, A, cache, G, g[0], g[1], g[2], g[3],
                                          g[4], t);
      g.push_back(cache.out);
      return g;
    };
    const auto with = run(&table), without = run(nullptr);
    for (std::size_t i = 0; i < with.size(); ++i) CHECK(with[i] == without[i]);
    // A table for other sets is rejected.
    RadialBasisTable<float> other;
    radial_basis_table<float>(p.cfg, RaggedIndex::from_sizes(std::vector<Index>{5, 19, 9}), R, other);
    StreamingAttentionCache<float> cache;
    CHECK_THROWS_AS(streaming_attention_forward<float>(p.cfg, p.sets, Q, K, V, R, A, cache, &other),
                    InvalidArgument);
  }
}

TEST_CASE("streaming attention is bitwise identical for 1 and 2 threads",
          "[flt_exact][streaming][threads]") {
  for (Index block : {Index(8), Index(64)}) {  // tiled sets; single-tile sets
  INFO("block " << block);
  const Problem p = make_problem(DistanceMask::additive, 41, {40, 9, 33}, 2, 4, 4, 3, block, block);
  const Index L = p.sets.total_rows();
  Rng rng(5);
  const Mat<float> G = random_normal_mat(rng, L, p.V.cols()).cast<float>();
  auto run = [&](int threads) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    const auto cache = run_forward<float>(p);
    std::vector<Mat<float>> grads = {Mat<float>::Zero(L, p.Q.cols()), Mat<float>::Zero(L, p.K.cols()),
                                     Mat<float>::Zero(L, p.V.cols()), Mat<float>::Zero(L, p.R.cols()),
                                     Mat<float>::Zero(p.A.rows(), p.A.cols())};
    streaming_attention_backward<float>(p.cfg, p.sets, p.Q.cast<float>(), p.K.cast<float>(),
                                        p.V.cast<float>(), p.R.cast<float>(), p.A.cast<float>(),
                                        cache, G, grads[0], grads[1], grads[2], grads[3], grads[4]);
    omp_set_num_threads(saved);
    grads.push_back(cache.out);
    return grads;
  };
  const auto one = run(1), two = run(2);
  for (std::size_t i = 0; i < one.size(); ++i) CHECK(one[i] == two[i]);
  }
}

TEST_CASE("streaming attention counts non-positive multiplicative denominators and rejects bad shapes",
          "[flt_exact][streaming]") {
  Problem p = make_problem(DistanceMask::multiplicative, 51, {6}, 1, 2, 2, 3, 4, 4);
  p.A = -p.A;  // u_h < 0 everywhere: every denominator is negative
  const auto cache = run_forward<double>(p);
  CHECK(cache.nonpositive_denominators == 6);
  StreamingAttentionCache<double> c;
  Problem bad = p;
  bad.A = Mat<double>::Ones(2, p.A.cols());  // wrong number of heads
  CHECK_THROWS_AS(streaming_attention_forward<double>(bad.cfg, bad.sets, bad.Q, bad.K, bad.V, bad.R,
                                                      bad.A, c),
                  InvalidArgument);
  CHECK_THROWS_AS(streaming_attention_forward<double>(p.cfg, RaggedIndex::single(5), p.Q, p.K, p.V,
                                                      p.R, p.A, c),
                  InvalidArgument);
}

TEST_CASE("streaming attention radial basis: recurrence and direct paths agree with the reference "
          "over short and very long distances",
          "[flt_exact][streaming]") {
  RadialBasis uneven;
  uneven.centres = {0.0, 0.7, 1.1, 2.9, 4.0};
  uneven.width = 0.8;
  // 20 even centres (groups of 8 with a partial last group) and an uneven set (direct exps).
  for (const RadialBasis& basis : {RadialBasis::uniform(20, 8.0), uneven}) {
    for (double spread : {1.0, 40.0}) {  // 40: many pairs far beyond the last centre
      INFO("centres " << basis.size() << ", spread " << spread);
      Problem p = make_problem(DistanceMask::additive, 61, {9, 14}, 2, 3, 2, 3, 4, 6);
      p.cfg.basis = basis;
      Rng rng(62);
      p.A = random_normal_mat(rng, 2, basis.size());
      p.R *= spread;
      const Mat<double> ref = direct_reference(p);
      CHECK((run_forward<double>(p).out - ref).cwiseAbs().maxCoeff() < 1e-12);
      const auto c32 = run_forward<float>(p);
      REQUIRE(c32.out.allFinite());
      CHECK((c32.out.cast<double>() - ref).cwiseAbs().maxCoeff() < 2e-5 * ref.cwiseAbs().maxCoeff());
    }
  }
}
