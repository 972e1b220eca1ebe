// The packed float product (core/gemm) against a double-precision triple loop, its bitwise
// independence of how rows are cut into chunks, and the Linear layer paths that use it.
#include "core/gemm.hpp"
#include "core/layers.hpp"
#include "core_test_util.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace flt;
using flt::test::kFloatU;
using flt::test::random_mat;

namespace {

// max_ij |C - C_ref| / bound_ij with bound_ij = (K + 3) u (|C0_ij| + |bias_j| + sum_k |A_ik B_kj|):
// the classical error bound of a length-K recursive sum of products plus the bias and the final
// addition to C0, in float (u = 2^-24). <= 1 for a correct float kernel.
double worst_error_ratio(const Mat<double>& a, const Mat<double>& b, const std::vector<double>& bias,
                         const Mat<double>& c0, bool accumulate, const Mat<float>& c) {
  double worst = 0.0;
  for (Index i = 0; i < a.rows(); ++i)
    for (Index j = 0; j < b.cols(); ++j) {
      double exact = bias.empty() ? 0.0 : bias[static_cast<std::size_t>(j)];
      double magnitude = std::abs(exact);
      for (Index k = 0; k < a.cols(); ++k) {
        exact += a(i, k) * b(k, j);
        magnitude += std::abs(a(i, k) * b(k, j));
      }
      if (accumulate) {
        exact += c0(i, j);
        magnitude += std::abs(c0(i, j));
      }
      const double bound = static_cast<double>(a.cols() + 3) * kFloatU * magnitude + 1e-30;
      worst = std::max(worst, std::abs(static_cast<double>(c(i, j)) - exact) / bound);
    }
  return worst;
}

}  // namespace

TEST_CASE("gemm: the AVX2 kernel is what x86-64 builds run", "[core][gemm]") {
#if defined(__x86_64__)
  // The project builds for x86-64-v3 (AVX2, FMA) by default; a build without them would
  // silently test only the portable loop.
  REQUIRE(gemm::kFastKernelAvailable);
#else
  SUCCEED("not an x86-64 build");
#endif
}

TEST_CASE("gemm: packed product matches a double triple loop on ragged shapes", "[core][gemm][reference]") {
  Rng rng(101);
  int cases = 0;
  for (Index m : {1, 5, 6, 7, 23, 24, 25, 61})
    for (Index k : {0, 1, 3, 16, 37, 128})
      for (Index n : {1, 8, 15, 16, 17, 40})
        for (int variant = 0; variant < 2; ++variant) {
          const bool accumulate = variant == 1;
          const bool with_bias = ((m + k + n) % 2 == 0) != accumulate;
          // Operands are views into wider matrices, so the strides differ from the widths.
          const Mat<double> a_wide = random_mat(rng, m, k + 3);
          const Mat<double> b = random_mat(rng, k, n);
          const Mat<double> c0 = random_mat(rng, m, n);
          std::vector<double> bias;
          if (with_bias)
            for (Index j = 0; j < n; ++j) bias.push_back(static_cast<float>(rng.uniform(-1, 1)));
          const Mat<double> a = a_wide.middleCols(1, k);
          const Mat<float> a_wide_f = a_wide.cast<float>();
          Mat<float> c_wide = Mat<float>::Zero(m, n + 5);
          c_wide.middleCols(2, n) = c0.cast<float>();
          std::vector<float> bias_f(bias.begin(), bias.end());
          const auto packed = gemm::PackedMatrix::pack(b.cast<float>());
          REQUIRE(packed.rows() == k);
          REQUIRE(packed.cols() == n);
          gemm::multiply(a_wide_f.middleCols(1, k), packed, bias_f, c_wide.middleCols(2, n), accumulate);
          const Mat<float> c = c_wide.middleCols(2, n);
          INFO("m=" << m << " k=" << k << " n=" << n << " accumulate=" << accumulate << " bias=" << with_bias);
          REQUIRE(worst_error_ratio(a, b, bias, c0, accumulate, c) <= 1.0);
          // Nothing outside the view was written.
          REQUIRE(c_wide.leftCols(2).isZero(0));
          REQUIRE(c_wide.rightCols(3).isZero(0));
          ++cases;
        }
  REQUIRE(cases == 8 * 6 * 6 * 2);
}

TEST_CASE("gemm: every kernel gives bitwise the same product", "[core][gemm][determinism]") {
  // The AVX-512, AVX2 and plain kernels run the same FMA sequence per element, so a model trains to
  // the same bits on any x86-64 machine. Ragged shapes: partial micro-kernels and panels, strides.
  Rng rng(107);
  std::vector<gemm::Isa> kernels;
  for (gemm::Isa isa : {gemm::Isa::portable, gemm::Isa::avx2, gemm::Isa::avx512})
    if (isa <= gemm::best_isa()) kernels.push_back(isa);
  if (gemm::best_isa() != gemm::Isa::avx512)
    WARN("this CPU has no AVX-512: the AVX-512 kernel is not compared");
  REQUIRE(kernels.size() >= 2);
  int compared = 0;
  for (Index m : {1, 5, 7, 11, 12, 13, 24, 25, 61})
    for (Index k : {0, 1, 37, 128})
      for (Index n : {1, 15, 16, 17, 40})
        for (bool accumulate : {false, true}) {
          const Mat<float> a_wide = random_mat(rng, m, k + 3).cast<float>();
          const Mat<float> b = random_mat(rng, k, n).cast<float>();
          const Mat<float> c0 = Mat<float>(random_mat(rng, m, n + 4).cast<float>());
          std::vector<float> bias;
          for (Index j = 0; j < n; ++j) bias.push_back(static_cast<float>(rng.uniform(-1, 1)));
          const auto packed = gemm::PackedMatrix::pack(b);
          Mat<float> want = c0;
          gemm::multiply(a_wide.middleCols(1, k), packed, bias, want.middleCols(1, n), accumulate,
                         gemm::Isa::portable);
          for (gemm::Isa isa : kernels) {
            Mat<float> got = c0;
            gemm::multiply(a_wide.middleCols(1, k), packed, bias, got.middleCols(1, n), accumulate, isa);
            INFO(gemm::isa_name(isa) << " m=" << m << " k=" << k << " n=" << n
                                     << " accumulate=" << accumulate);
            REQUIRE(got == want);  // bitwise, and nothing outside the view written
            ++compared;
          }
        }
  REQUIRE(compared == 9 * 4 * 5 * 2 * static_cast<int>(kernels.size()));
  // The model's own shapes: a training batch of 580 atom rows through the widest Linear maps
  // (K = 256 inputs, N = 384 outputs: the value projection of width 128 with vectors).
  const Mat<float> a = random_mat(rng, 580, 256).cast<float>();
  const Mat<float> b = random_mat(rng, 256, 384).cast<float>();
  const auto packed = gemm::PackedMatrix::pack(b);
  Mat<float> want(580, 384);
  gemm::multiply(a, packed, {}, want, false, gemm::Isa::portable);
  for (gemm::Isa isa : kernels) {
    Mat<float> got(580, 384);
    gemm::multiply(a, packed, {}, got, false, isa);
    INFO(gemm::isa_name(isa) << " at 580 x 256 x 384");
    REQUIRE(got == want);
  }
}

TEST_CASE("gemm: a kernel the CPU lacks is refused, FLT_ISA only narrows", "[core][gemm]") {
  REQUIRE(gemm::active_isa() <= gemm::best_isa());
  if (gemm::best_isa() != gemm::Isa::avx512) {
    Mat<float> a = Mat<float>::Zero(2, 4), c(2, 3);
    const auto packed = gemm::PackedMatrix::pack(Mat<float>::Zero(4, 3));
    REQUIRE_THROWS_AS(gemm::multiply(a, packed, {}, c, false, gemm::Isa::avx512), InvalidArgument);
  }
  REQUIRE(std::string(gemm::isa_name(gemm::Isa::avx512)) == "avx512");
}

TEST_CASE("gemm: results do not depend on how the rows are cut", "[core][gemm][determinism]") {
  Rng rng(102);
  const Mat<float> a = random_mat(rng, 97, 64).cast<float>();
  const Mat<float> b = random_mat(rng, 64, 40).cast<float>();
  const auto packed = gemm::PackedMatrix::pack(b);
  Mat<float> whole(97, 40), pieces(97, 40);
  gemm::multiply(a, packed, {}, whole, false);
  // Cuts that split the 24-row blocks and the 6-row micro-kernels differently.
  for (auto [r0, r1] : {std::pair<Index, Index>{0, 11}, {11, 13}, {13, 50}, {50, 97}})
    gemm::multiply(a.middleRows(r0, r1 - r0), packed, {}, pieces.middleRows(r0, r1 - r0), false);
  REQUIRE(whole == pieces);
}

TEST_CASE("gemm: pack_transposed packs W^T", "[core][gemm]") {
  Rng rng(103);
  const Mat<float> w = random_mat(rng, 21, 35).cast<float>();
  const Mat<float> wt = w.transpose();
  const auto p1 = gemm::PackedMatrix::pack_transposed(w);
  const auto p2 = gemm::PackedMatrix::pack(wt);
  REQUIRE(p1.rows() == 35);
  REQUIRE(p1.cols() == 21);
  REQUIRE(p1.panels() == 2);
  for (Index q = 0; q < p1.panels(); ++q)
    for (Index i = 0; i < p1.rows() * gemm::kPanelWidth; ++i) REQUIRE(p1.panel(q)[i] == p2.panel(q)[i]);
}

TEST_CASE("gemm: transpose of views with ragged edges", "[core][gemm]") {
  Rng rng(106);
  for (Index rows : {1, 7, 8, 9, 16, 23})
    for (Index cols : {1, 5, 8, 17, 24}) {
      const Mat<float> wide = random_mat(rng, rows, cols + 3).cast<float>();
      Mat<float> t;
      gemm::transpose(wide.middleCols(2, cols), t);
      INFO(rows << " x " << cols);
      REQUIRE(t == Mat<float>(wide.middleCols(2, cols).transpose()));
    }
}

TEST_CASE("gemm: shape mismatches are errors", "[core][gemm]") {
  const auto packed = gemm::PackedMatrix::pack(Mat<float>::Zero(4, 3));
  Mat<float> a = Mat<float>::Zero(2, 5), c(2, 3), c_bad(2, 4);
  REQUIRE_THROWS_AS(gemm::multiply(a, packed, {}, c, false), InvalidArgument);
  Mat<float> a_ok = Mat<float>::Zero(2, 4);
  REQUIRE_THROWS_AS(gemm::multiply(a_ok, packed, {}, c_bad, false), InvalidArgument);
  std::vector<float> bias(2, 0.0f);
  REQUIRE_THROWS_AS(gemm::multiply(a_ok, packed, bias, c, false), InvalidArgument);
}

TEST_CASE("Linear float forward and input gradient match the double reference", "[core][layers][gemm][reference]") {
  Rng rng(104);
  // 600 rows: three row chunks of linear_forward, the last one partial.
  const Index n = 600, in = 37, out = 19;
  const Mat<double> x = random_mat(rng, n, in), W = random_mat(rng, in, out), dy = random_mat(rng, n, out);
  const Mat<double> b = random_mat(rng, out, 1);
  std::vector<float> bf(b.data(), b.data() + out);
  Mat<float> y(n, out);
  linear_forward<float>(x.cast<float>(), W.cast<float>(), bf, y);
  Mat<double> yr(n, out);
  linear_forward_reference<double>(x, W, std::span<const double>(b.data(), out), yr);
  const double scale_y = (x.cwiseAbs() * W.cwiseAbs()).maxCoeff() + b.cwiseAbs().maxCoeff();
  REQUIRE((y.cast<double>() - yr).cwiseAbs().maxCoeff() <= (in + 3) * kFloatU * scale_y);

  // dx += dy W^T on top of a non-zero dx.
  const Mat<double> dx0 = random_mat(rng, n, in);
  Mat<float> dx = dx0.cast<float>(), dW = Mat<float>::Zero(in, out);
  std::vector<float> db(out, 0.0f);
  linear_backward<float>(x.cast<float>(), W.cast<float>(), dy.cast<float>(), dx, dW, db);
  const Mat<double> dx_ref = dx0 + dy * W.transpose();
  const double scale_dx = (dy.cwiseAbs() * W.transpose().cwiseAbs()).maxCoeff() + 1.0;
  REQUIRE((dx.cast<double>() - dx_ref).cwiseAbs().maxCoeff() <= (out + 3) * kFloatU * scale_dx);
  const Mat<double> dW_ref = x.transpose() * dy;
  REQUIRE((dW.cast<double>() - dW_ref).cwiseAbs().maxCoeff() <=
          (n + 3) * kFloatU * (x.cwiseAbs().transpose() * dy.cwiseAbs()).maxCoeff());
  for (Index o = 0; o < out; ++o)
    REQUIRE(std::abs(db[static_cast<std::size_t>(o)] - dy.col(o).sum()) <= (n + 3) * kFloatU * dy.col(o).cwiseAbs().sum());
}

TEST_CASE("Linear float weight gradient: many batch chunks and column blocks, accumulated", "[core][layers][gemm][reference]") {
  Rng rng(105);
  // 700 rows: three chunks of the weight-gradient depth; 150 outputs: three column blocks, the
  // last one partial and not a multiple of 16; dW and db start non-zero (accumulation).
  const Index n = 700, in = 21, out = 150;
  const Mat<double> x = random_mat(rng, n, in), dy = random_mat(rng, n, out), W = random_mat(rng, in, out);
  const Mat<double> dW0 = random_mat(rng, in, out), db0 = random_mat(rng, 1, out);
  Mat<float> dW = dW0.cast<float>(), none;
  std::vector<float> db(static_cast<std::size_t>(out));
  for (Index o = 0; o < out; ++o) db[static_cast<std::size_t>(o)] = static_cast<float>(db0(0, o));
  linear_backward<float>(x.cast<float>(), W.cast<float>(), dy.cast<float>(), none, dW, db);
  const Mat<double> ref = dW0 + x.transpose() * dy;
  const Mat<double> mag = dW0.cwiseAbs() + x.cwiseAbs().transpose() * dy.cwiseAbs();
  REQUIRE(((dW.cast<double>() - ref).array().abs() / mag.array()).maxCoeff() <= (n + 3) * kFloatU);
  for (Index o = 0; o < out; ++o) {
    const double want = db0(0, o) + dy.col(o).sum();
    REQUIRE(std::abs(db[static_cast<std::size_t>(o)] - want) <=
            (n + 3) * kFloatU * (std::abs(db0(0, o)) + dy.col(o).cwiseAbs().sum()));
  }
}
