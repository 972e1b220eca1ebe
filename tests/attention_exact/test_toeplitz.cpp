// Tests of the FFTW Toeplitz / block-Toeplitz path (attention/exact/toeplitz.hpp): equal to the O(L^2)
// computation with the same mask (1-D, causal 1-D, 2-D; float and double), the O(L^2) reference
// itself checked against the general E4 reference, gradient checks in double, thread-count
// determinism, typed errors.
#include "attention/exact/toeplitz.hpp"

#include "core/error.hpp"
#include "core/gradcheck.hpp"
#include "core/random.hpp"
#include "attention/exact/direct.hpp"

#include <catch2/catch.hpp>
#include <omp.h>

#include <cmath>
#include <vector>

using namespace flt;
using namespace flt::exact;

namespace {

struct Case {
  ToeplitzGrid grid;
  Mat<double> PhiQ, PhiK, V;
  std::vector<double> mask;
};

// Positive features (as Performer features are), a positive mask that is not symmetric in the
// offset (so f(n) vs f(-n) mix-ups show), random values.
Case make_case(const ToeplitzGrid& grid, Index m, Index dv, std::uint64_t seed) {
  Rng rng(seed);
  Case c;
  c.grid = grid;
  const Index L = grid.tokens();
  c.PhiQ.resize(L, m);
  c.PhiK.resize(L, m);
  c.V.resize(L, dv);
  for (Index i = 0; i < L; ++i) {
    for (Index a = 0; a < m; ++a) {
      c.PhiQ(i, a) = std::exp(0.5 * rng.normal());
      c.PhiK(i, a) = std::exp(0.5 * rng.normal());
    }
    for (Index k = 0; k < dv; ++k) c.V(i, k) = rng.normal();
  }
  c.mask.resize(static_cast<std::size_t>(grid.mask_size()));
  for (auto& f : c.mask) f = 0.2 + rng.uniform();
  return c;
}

template <class T>
std::vector<T> cast_vec(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

template <class T>
Mat<T> fft_out(const Case& c) {
  ToeplitzForward<T> fwd;
  const std::vector<T> mask = cast_vec<T>(c.mask);
  toeplitz_attention_forward<T>(c.grid, c.PhiQ.cast<T>(), c.PhiK.cast<T>(), c.V.cast<T>(), mask, fwd);
  return fwd.out;
}

double rel_err(const Mat<double>& a, const Mat<double>& ref) {
  return (a - ref).cwiseAbs().maxCoeff() / ref.cwiseAbs().maxCoeff();
}

}  // namespace

TEST_CASE("toeplitz O(L^2) reference equals the general E4 reference", "[flt_exact][toeplitz]") {
  // With Q = K = 0 (A_ij = 1) and token indices as 1-D coordinates, E4 with the mask
  // f_i(z) = PhiQ_i PhiK_j mask(pos_i - pos_j), j = i - z, is the Toeplitz attention of row i
  // (m = 1 feature, 2-D grid, so the block-Toeplitz indexing is exercised).
  const Case c = make_case(ToeplitzGrid::image(3, 4), 1, 2, 7);
  const Index L = c.grid.tokens();
  Mat<double> coords(L, 1);
  for (Index i = 0; i < L; ++i) coords(i, 0) = static_cast<double>(i);
  const Mat<double> tref = toeplitz_attention_direct<double>(c.grid, c.PhiQ, c.PhiK, c.V, c.mask);
  const Mat<double> Z = Mat<double>::Zero(L, 1);
  for (Index i = 0; i < L; ++i) {
    auto fi = [&, i](std::span<const double> z) {
      const auto j = static_cast<Index>(std::lround(static_cast<double>(i) - z[0]));
      return c.PhiQ(i, 0) * c.PhiK(j, 0) *
             c.mask[static_cast<std::size_t>(c.grid.mask_index(i, j))];
    };
    const Mat<double> e4 = masked_attention_direct<double>(Z, Z, c.V, coords, fi);
    CHECK((e4.row(i) - tref.row(i)).cwiseAbs().maxCoeff() < 1e-13);
  }
}

TEST_CASE("toeplitz FFT path equals the O(L^2) computation, 1-D sequence", "[flt_exact][toeplitz]") {
  for (Index L : {1, 2, 17, 64, 200}) {
    INFO("L = " << L);
    const Case c = make_case(ToeplitzGrid::sequence(L), 6, 3, 100 + static_cast<std::uint64_t>(L));
    const Mat<double> ref = toeplitz_attention_direct<double>(c.grid, c.PhiQ, c.PhiK, c.V, c.mask);
    CHECK(rel_err(fft_out<double>(c), ref) < 1e-12);
    CHECK(rel_err(fft_out<float>(c).cast<double>(), ref) < 1e-5);
  }
}

TEST_CASE("toeplitz FFT path equals the O(L^2) computation, causal 1-D", "[flt_exact][toeplitz]") {
  const Case c = make_case(ToeplitzGrid::sequence(150, true), 5, 4, 3);
  const Mat<double> ref = toeplitz_attention_direct<double>(c.grid, c.PhiQ, c.PhiK, c.V, c.mask);
  CHECK((ref.row(0) - c.V.row(0)).cwiseAbs().maxCoeff() < 1e-14);  // row 0 sees only itself
  CHECK(rel_err(fft_out<double>(c), ref) < 1e-12);
  CHECK(rel_err(fft_out<float>(c).cast<double>(), ref) < 1e-5);
  // The negative-offset half of the mask is ignored.
  Case changed = c;
  for (std::size_t n = 0; n < 149; ++n) changed.mask[n] = 100.0;
  CHECK(fft_out<double>(changed) == fft_out<double>(c));
}

TEST_CASE("toeplitz FFT path equals the O(L^2) computation, 2-D block-Toeplitz grid",
          "[flt_exact][toeplitz]") {
  for (auto [h, w] : std::vector<std::pair<Index, Index>>{{1, 5}, {4, 1}, {5, 7}, {16, 12}}) {
    INFO("grid " << h << " x " << w);
    const Case c = make_case(ToeplitzGrid::image(h, w), 4, 3, static_cast<std::uint64_t>(h * 31 + w));
    const Mat<double> ref = toeplitz_attention_direct<double>(c.grid, c.PhiQ, c.PhiK, c.V, c.mask);
    CHECK(rel_err(fft_out<double>(c), ref) < 1e-12);
    CHECK(rel_err(fft_out<float>(c).cast<double>(), ref) < 1e-5);
  }
}

TEST_CASE("toeplitz FFT gradients pass finite-difference checks in double",
          "[flt_exact][toeplitz][gradcheck]") {
  for (const ToeplitzGrid& grid :
       {ToeplitzGrid::sequence(9), ToeplitzGrid::sequence(8, true), ToeplitzGrid::image(3, 4)}) {
    INFO("grid rank " << grid.shape.size() << (grid.causal ? " causal" : ""));
    Case c = make_case(grid, 3, 2, 55);
    const Index L = grid.tokens();
    Rng rng(8);
    Mat<double> G(L, 2);
    for (Index i = 0; i < L; ++i) G.row(i) << rng.normal(), rng.normal();
    auto loss = [&] {
      ToeplitzForward<double> f;
      toeplitz_attention_forward<double>(c.grid, c.PhiQ, c.PhiK, c.V, c.mask, f);
      return f.out.cwiseProduct(G).sum();
    };
    ToeplitzForward<double> fwd;
    toeplitz_attention_forward<double>(c.grid, c.PhiQ, c.PhiK, c.V, c.mask, fwd);
    Mat<double> dQ = Mat<double>::Zero(L, 3), dK = dQ, dV = Mat<double>::Zero(L, 2);
    std::vector<double> dmask(c.mask.size(), 0.0);
    toeplitz_attention_backward<double>(c.grid, c.PhiQ, c.PhiK, c.V, c.mask, fwd, G, dQ, dK, dV,
                                        dmask);
    auto check = [&](std::span<double> x, std::span<const double> g, const char* what) {
      const auto res = check_gradient(loss, x, g);
      INFO(what << ": worst " << res.worst_index << " analytic " << res.worst_analytic
                << " numeric " << res.worst_numeric);
      CHECK(res.max_rel_error <= 1e-6);
    };
    check({c.PhiQ.data(), static_cast<std::size_t>(c.PhiQ.size())},
          {dQ.data(), static_cast<std::size_t>(dQ.size())}, "dPhiQ");
    check({c.PhiK.data(), static_cast<std::size_t>(c.PhiK.size())},
          {dK.data(), static_cast<std::size_t>(dK.size())}, "dPhiK");
    check({c.V.data(), static_cast<std::size_t>(c.V.size())},
          {dV.data(), static_cast<std::size_t>(dV.size())}, "dV");
    check(c.mask, dmask, "dmask");
    if (grid.causal) {
      for (Index n = 0; n < L - 1; ++n) CHECK(dmask[static_cast<std::size_t>(n)] == 0.0);
    }
  }
}

TEST_CASE("toeplitz FFT path is bitwise identical for 1 and 2 threads, float plans reused",
          "[flt_exact][toeplitz][threads]") {
  const Case c = make_case(ToeplitzGrid::image(12, 10), 20, 5, 9);
  const Index L = c.grid.tokens();
  const std::vector<float> mask = cast_vec<float>(c.mask);
  const Mat<float> Q = c.PhiQ.cast<float>(), K = c.PhiK.cast<float>(), V = c.V.cast<float>();
  const Mat<float> G = Mat<float>::Constant(L, 5, 0.5f);
  auto run = [&](int threads) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    ToeplitzForward<float> fwd;
    toeplitz_attention_forward<float>(c.grid, Q, K, V, mask, fwd);
    Mat<float> dQ = Mat<float>::Zero(L, 20), dK = dQ, dV = Mat<float>::Zero(L, 5);
    std::vector<float> dm(mask.size(), 0.0f);
    toeplitz_attention_backward<float>(c.grid, Q, K, V, mask, fwd, G, dQ, dK, dV, dm);
    omp_set_num_threads(saved);
    Mat<float> dmm = Eigen::Map<Mat<float>>(dm.data(), 1, static_cast<Index>(dm.size()));
    return std::vector<Mat<float>>{fwd.out, dQ, dK, dV, dmm};
  };
  const auto one = run(1), two = run(2), again = run(2);
  for (std::size_t i = 0; i < one.size(); ++i) {
    CHECK(one[i] == two[i]);
    CHECK(two[i] == again[i]);
  }
}

TEST_CASE("toeplitz attention rejects bad shapes and grids with typed errors",
          "[flt_exact][toeplitz]") {
  const Case c = make_case(ToeplitzGrid::sequence(5), 2, 2, 1);
  ToeplitzForward<double> fwd;
  std::vector<double> short_mask(c.mask.begin(), c.mask.end() - 1);
  CHECK_THROWS_AS(toeplitz_attention_forward<double>(c.grid, c.PhiQ, c.PhiK, c.V, short_mask, fwd),
                  InvalidArgument);
  CHECK_THROWS_AS(toeplitz_attention_forward<double>(ToeplitzGrid::sequence(6), c.PhiQ, c.PhiK, c.V,
                                                     c.mask, fwd),
                  InvalidArgument);
  ToeplitzGrid causal_image = ToeplitzGrid::image(2, 2);
  causal_image.causal = true;
  CHECK_THROWS_AS(causal_image.validate(), InvalidArgument);
  CHECK_THROWS_AS(ToeplitzGrid::sequence(0), InvalidArgument);
}
