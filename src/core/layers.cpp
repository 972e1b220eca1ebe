// N rows (atoms/tokens), I input width, O output width, D feature width, H MLP hidden width,
// V embedding vocabulary, S sets. See layers.hpp for the equations of every kernel.
#include "core/layers.hpp"

#include "core/dual.hpp"
#include "core/error.hpp"
#include "core/gemm.hpp"
#include "core/parallel.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>
#include <type_traits>

namespace flt {
namespace {

std::string shape(Index rows, Index cols) {
  return std::to_string(rows) + "x" + std::to_string(cols);
}

void check_shape(const char* what, Index rows, Index cols, Index want_rows, Index want_cols) {
  if (rows != want_rows || cols != want_cols)
    throw InvalidArgument(std::string(what) + ": expected shape " + shape(want_rows, want_cols) +
                          ", got " + shape(rows, cols));
}

template <class T>
using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;

// One row (contiguous: MatRef is row-major with unit inner stride) as an Eigen array, so that
// element-wise expressions on it vectorise (Eigen's packet exp instead of one libm call per
// element: SiLU was about a tenth of the molecule model's forward time with the scalar loop).
// Eigen handles the elements before the first aligned address with scalar code, so a row
// reduction's summation order depends on the row's address modulo the vector size. Activations
// live in Eigen matrices, whose storage Eigen always aligns, so a given row has the same alignment
// in every run and with any thread count (the bitwise 1-vs-2-thread and resume tests check it).
template <class T>
Eigen::Map<const Arr<T>> row_array(const ConstMatRef<T>& m, Index r) {
  return {m.data() + r * m.outerStride(), m.cols()};
}
template <class T>
Eigen::Map<Arr<T>> row_array(MatRef<T>& m, Index r) {
  return {m.data() + r * m.outerStride(), m.cols()};
}

// The value (part 0) or tangent (part 1) parts of row r of a Dual matrix as a strided real array
// (Dual is two doubles, value first).
using DualPart = Eigen::Map<const Eigen::ArrayXd, 0, Eigen::InnerStride<2>>;
using MutableDualPart = Eigen::Map<Eigen::ArrayXd, 0, Eigen::InnerStride<2>>;
DualPart dual_part(const ConstMatRef<Dual>& m, Index r, int part) {
  return {reinterpret_cast<const double*>(m.data() + r * m.outerStride()) + part, m.cols()};
}
MutableDualPart dual_part(MatRef<Dual>& m, Index r, int part) {
  return {reinterpret_cast<double*>(m.data() + r * m.outerStride()) + part, m.cols()};
}
static_assert(sizeof(Dual) == 2 * sizeof(double) && std::is_standard_layout_v<Dual>);

// Output columns per block of linear_backward's weight-gradient product.
constexpr Index kGradColBlock = 64;
// Rows per parallel chunk of the row-wise kernels, whose rows are computed independently of one
// another (the packed products of linear_forward and dx, LayerNorm forward, activations,
// embedding lookup, residual adds): the chunking cannot change any result, so the chunks are
// small enough to balance two threads on a training batch (580 rows: 7 chunks instead of 3 of
// kRowChunk, which left one thread idle a third of the time); a multiple of the product
// kernel's 24-row blocks. LayerNorm backward uses the same chunks for its per-chunk partial
// parameter gradients (summed in chunk order: fixed by the sizes).
constexpr Index kRowwiseChunk = 96;
// Batch rows per packed weight-gradient product (float): a 16-column panel of dy of this depth
// (16 KiB) stays in L1 while the micro-kernel sweeps the rows of x^T.
constexpr Index kGradDepth = 256;

// ------------------------------------------------------------------------ Dual linear layers
// A Dual product splits into real ones, (A + eps A')(B + eps B') = A B + eps (A' B + A B'), run
// in S (double, or float under PassOptions::float_products) on stacked parts so that each
// weight matrix is packed once per call: [x_v; x_d] W gives the value and tangent rows of x W
// together. Weights carry no tangent in a Hessian-vector product (the terms with W' are skipped
// then); the sums and the results are Dual in double.

// The rows of a Dual matrix as one real matrix [values; tangents] (2n x cols), or
// [tangents; values] when tangents_first.
template <class S>
Mat<S> stacked_parts(ConstMatRef<Dual> m, bool tangents_first) {
  const Index n = m.rows(), c = m.cols();
  Mat<S> out(2 * n, c);
  const Index value_row = tangents_first ? n : 0, tangent_row = tangents_first ? 0 : n;
  for (Index r = 0; r < n; ++r) {
    const Dual* src = m.data() + r * m.outerStride();
    S* v = out.row(value_row + r).data();
    S* t = out.row(tangent_row + r).data();
    for (Index k = 0; k < c; ++k) {
      v[k] = static_cast<S>(src[k].v);
      t[k] = static_cast<S>(src[k].d);
    }
  }
  return out;
}

// One part of a Dual matrix: the values, or the tangents.
template <class S>
Mat<S> real_part(ConstMatRef<Dual> m, bool tangent) {
  Mat<S> out(m.rows(), m.cols());
  for (Index r = 0; r < m.rows(); ++r) {
    const Dual* src = m.data() + r * m.outerStride();
    S* dst = out.row(r).data();
    for (Index c = 0; c < m.cols(); ++c) dst[c] = static_cast<S>(tangent ? src[c].d : src[c].v);
  }
  return out;
}

bool has_tangent(ConstMatRef<Dual> m) {
  for (Index r = 0; r < m.rows(); ++r)
    for (Index c = 0; c < m.cols(); ++c)
      if (m(r, c).d != 0.0) return true;
  return false;
}

// c = a b, or a b^T when b_transposed, in S: the packed float kernel, or Eigen in double.
template <class S>
Mat<S> real_product(ConstMatRef<S> a, ConstMatRef<S> b, bool b_transposed = false) {
  Mat<S> c(a.rows(), b_transposed ? b.rows() : b.cols());
  if constexpr (std::is_same_v<S, float> && gemm::kFastKernelAvailable) {
    const auto packed = b_transposed ? gemm::PackedMatrix::pack_transposed(b) : gemm::PackedMatrix::pack(b);
    gemm::multiply(a, packed, {}, c, false);
  } else if (b_transposed) {
    c.noalias() = a * b.transpose();
  } else {
    c.noalias() = a * b;
  }
  return c;
}

template <class S>
Mat<S> real_transpose(const Mat<S>& m) {
  Mat<S> t;
  if constexpr (std::is_same_v<S, float> && gemm::kFastKernelAvailable) gemm::transpose(m, t);
  else t = m.transpose();
  return t;
}

// y = x W + b.
template <class S>
void dual_linear_forward(ConstMatRef<Dual> x, ConstMatRef<Dual> W, std::span<const Dual> b, MatRef<Dual> y) {
  const Index n = x.rows(), out = W.cols();
  const Mat<S> xs = stacked_parts<S>(x, false);
  const Mat<S> ys = real_product<S>(xs, real_part<S>(W, false));  // [x_v W; x_d W]
  Mat<S> weight_term;                                                     // x_v W'
  if (pass_options().parameter_tangents && has_tangent(W))
    weight_term = real_product<S>(xs.topRows(n), real_part<S>(W, true));
  for (Index r = 0; r < n; ++r)
    for (Index c = 0; c < out; ++c) {
      Dual value{static_cast<double>(ys(r, c)), static_cast<double>(ys(n + r, c))};
      if (weight_term.size() != 0) value.d += static_cast<double>(weight_term(r, c));
      if (!b.empty()) value += b[static_cast<std::size_t>(c)];
      y(r, c) = value;
    }
}

// dx += dy W^T, dW += x^T dy, db += sum_rows dy. The tangent of dW is x_d^T dy_v + x_v^T dy_d =
// [x_d; x_v]^T [dy_v; dy_d], one product of depth 2n; its value x_v^T dy_v only when asked for.
template <class S>
void dual_linear_backward(ConstMatRef<Dual> x, ConstMatRef<Dual> W, ConstMatRef<Dual> dy, MatRef<Dual> dx,
                          MatRef<Dual> dW, std::span<Dual> db) {
  const Index n = x.rows(), in = W.rows(), out = W.cols();
  const bool values = pass_options().parameter_gradient_values;
  const Mat<S> gs = stacked_parts<S>(dy, false);  // [dy_v; dy_d]
  if (dx.size() != 0) {
    const Mat<S> dxs = real_product<S>(gs, real_part<S>(W, false), true);  // [dy_v W^T; dy_d W^T]
    Mat<S> weight_term;                                                          // dy_v W'^T
    if (pass_options().parameter_tangents && has_tangent(W))
      weight_term = real_product<S>(gs.topRows(n), real_part<S>(W, true), true);
    for (Index r = 0; r < n; ++r)
      for (Index c = 0; c < in; ++c) {
        Dual g{static_cast<double>(dxs(r, c)), static_cast<double>(dxs(n + r, c))};
        if (weight_term.size() != 0) g.d += static_cast<double>(weight_term(r, c));
        dx(r, c) += g;
      }
  }
  if (n == 0) return;
  const Mat<S> xt = real_transpose<S>(stacked_parts<S>(x, true));  // in x 2n: [x_d; x_v]^T
  const Mat<S> dw_tangent = real_product<S>(xt, gs);
  Mat<S> dw_value;
  if (values) dw_value = real_product<S>(xt.rightCols(n), gs.topRows(n));
  for (Index r = 0; r < in; ++r)
    for (Index c = 0; c < out; ++c)
      dW(r, c) += Dual(values ? static_cast<double>(dw_value(r, c)) : 0.0, static_cast<double>(dw_tangent(r, c)));
  if (!db.empty()) {
    std::vector<Dual> acc(static_cast<std::size_t>(out), Dual(0.0));  // rows in order, per column
    for (Index r = 0; r < n; ++r) {
      const Dual* g = dy.data() + r * dy.outerStride();
      for (Index c = 0; c < out; ++c) acc[static_cast<std::size_t>(c)] += g[c];
    }
    for (Index c = 0; c < out; ++c) {
      if (!values) acc[static_cast<std::size_t>(c)].v = 0.0;
      db[static_cast<std::size_t>(c)] += acc[static_cast<std::size_t>(c)];
    }
  }
}

}  // namespace

// ------------------------------------------------------------------------------------- Linear

template <class T>
void linear_forward(ConstMatRef<T> x, ConstMatRef<T> W, std::span<const T> b, MatRef<T> y) {
  const Index n = x.rows();
  require(x.cols() == W.rows(), "linear_forward: x has " + std::to_string(x.cols()) +
                                    " columns but W has " + std::to_string(W.rows()) + " rows");
  check_shape("linear_forward: y", y.rows(), y.cols(), n, W.cols());
  require(b.empty() || static_cast<Index>(b.size()) == W.cols(),
          "linear_forward: bias length does not match W columns");
  if constexpr (is_dual_v<T>) {
    if (pass_options().float_products) dual_linear_forward<float>(x, W, b, y);
    else dual_linear_forward<double>(x, W, b, y);
  } else if constexpr (std::is_same_v<T, float> && gemm::kFastKernelAvailable) {
    // W packed once for all row chunks; the bias is added in the kernel (gemm.hpp).
    const gemm::PackedMatrix packed = gemm::PackedMatrix::pack(W);
    parallel_chunks(n, kRowwiseChunk, [&](Index, Index r0, Index r1) {
      gemm::multiply(x.middleRows(r0, r1 - r0), packed, b, y.middleRows(r0, r1 - r0), false);
    });
  } else {
    const Eigen::Map<const RowVec<T>> bias(b.data(), static_cast<Index>(b.size()));
    parallel_chunks(n, kRowChunk, [&](Index, Index r0, Index r1) {
      auto yb = y.middleRows(r0, r1 - r0);
      yb.noalias() = x.middleRows(r0, r1 - r0) * W;
      if (!b.empty()) yb.rowwise() += bias;
    });
  }
}

template <class T>
void linear_forward_reference(ConstMatRef<T> x, ConstMatRef<T> W, std::span<const T> b,
                              MatRef<T> y) {
  require(x.cols() == W.rows(), "linear_forward_reference: inner dimensions differ");
  check_shape("linear_forward_reference: y", y.rows(), y.cols(), x.rows(), W.cols());
  require(b.empty() || static_cast<Index>(b.size()) == W.cols(),
          "linear_forward_reference: bias length does not match W columns");
  for (Index n = 0; n < x.rows(); ++n)
    for (Index o = 0; o < W.cols(); ++o) {
      Accum<T> acc = b.empty() ? Accum<T>(0.0) : static_cast<Accum<T>>(b[static_cast<std::size_t>(o)]);
      for (Index i = 0; i < x.cols(); ++i)
        acc += static_cast<Accum<T>>(x(n, i)) * static_cast<Accum<T>>(W(i, o));
      y(n, o) = static_cast<T>(acc);
    }
}

template <class T>
void linear_backward(ConstMatRef<T> x, ConstMatRef<T> W, ConstMatRef<T> dy, MatRef<T> dx,
                     MatRef<T> dW, std::span<T> db) {
  const Index n = x.rows();
  const Index in = W.rows();
  const Index out = W.cols();
  check_shape("linear_backward: x", x.rows(), x.cols(), n, in);
  check_shape("linear_backward: dy", dy.rows(), dy.cols(), n, out);
  check_shape("linear_backward: dW", dW.rows(), dW.cols(), in, out);
  if (dx.size() != 0) check_shape("linear_backward: dx", dx.rows(), dx.cols(), n, in);
  require(db.empty() || static_cast<Index>(db.size()) == out,
          "linear_backward: bias gradient length does not match W columns");

  if constexpr (is_dual_v<T>) {
    if (pass_options().float_products) dual_linear_backward<float>(x, W, dy, dx, dW, db);
    else dual_linear_backward<double>(x, W, dy, dx, dW, db);
    return;
  }

  // dx += dy W^T, independent rows.
  if (dx.size() != 0) {
    if constexpr (std::is_same_v<T, float> && gemm::kFastKernelAvailable) {
      const gemm::PackedMatrix packed = gemm::PackedMatrix::pack_transposed(W);
      parallel_chunks(n, kRowwiseChunk, [&](Index, Index r0, Index r1) {
        gemm::multiply(dy.middleRows(r0, r1 - r0), packed, {}, dx.middleRows(r0, r1 - r0), true);
      });
    } else {
      parallel_chunks(n, kRowChunk, [&](Index, Index r0, Index r1) {
        dx.middleRows(r0, r1 - r0).noalias() += dy.middleRows(r0, r1 - r0) * W.transpose();
      });
    }
  }

  // dW += x^T dy and db += sum_n dy_n (unless only input gradients are wanted). Parallel over
  // fixed blocks of kGradColBlock output columns; every element is reduced over the n rows in an
  // order fixed by the sizes, so the result does not depend on the thread count.
  if (n == 0 || !pass_options().parameter_gradient_values) return;
  const Index col_blocks = chunk_count(out, kGradColBlock);
  if constexpr (std::is_same_v<T, float> && gemm::kFastKernelAvailable) {
    // x^T once, shared by the column blocks (Eigen's product packed x again for every block),
    // then per block and per kGradDepth batch rows one packed product accumulated into dW:
    // dW(i, j) += sum_{k in chunk} x(k, i) dy(k, j), chunks in order. db is the same product
    // with a row of ones for x^T, on the same packed panel of dy.
    Mat<T> x_t;
    gemm::transpose(x, x_t);
    const Mat<T> ones = Mat<T>::Ones(1, std::min(n, kGradDepth));
#pragma omp parallel for schedule(static) if (col_blocks > 1)
    for (Index cb = 0; cb < col_blocks; ++cb) {
      const Index c0 = cb * kGradColBlock;
      const Index nc = std::min(out, c0 + kGradColBlock) - c0;
      Mat<T> db_block = Mat<T>::Zero(1, nc);
      for (Index k0 = 0; k0 < n; k0 += kGradDepth) {
        const Index kc = std::min(kGradDepth, n - k0);
        const auto packed = gemm::PackedMatrix::pack(dy.block(k0, c0, kc, nc));
        gemm::multiply(x_t.middleCols(k0, kc), packed, {}, dW.middleCols(c0, nc), true);
        if (!db.empty()) gemm::multiply(ones.leftCols(kc), packed, {}, db_block, true);
      }
      if (!db.empty())
        for (Index c = 0; c < nc; ++c) db[static_cast<std::size_t>(c0 + c)] += db_block(0, c);
    }
  } else {
    // One deep Eigen product per block (its summation order depends on the sizes only: Eigen
    // runs single-threaded here); db summed in double.
#pragma omp parallel for schedule(static) if (col_blocks > 1)
    for (Index cb = 0; cb < col_blocks; ++cb) {
      const Index c0 = cb * kGradColBlock;
      const Index nc = std::min(out, c0 + kGradColBlock) - c0;
      dW.middleCols(c0, nc).noalias() += x.transpose() * dy.middleCols(c0, nc);
      if (!db.empty()) {
        std::vector<Accum<T>> acc(static_cast<std::size_t>(nc), Accum<T>(0.0));
        for (Index r = 0; r < n; ++r)
          for (Index c = 0; c < nc; ++c) acc[static_cast<std::size_t>(c)] += static_cast<Accum<T>>(dy(r, c0 + c));
        for (Index c = 0; c < nc; ++c) db[static_cast<std::size_t>(c0 + c)] += static_cast<T>(acc[static_cast<std::size_t>(c)]);
      }
    }
  }
}

// ---------------------------------------------------------------------------------- LayerNorm

template <class T>
void layernorm_forward(ConstMatRef<T> x, std::span<const T> gamma, std::span<const T> beta,
                       double eps, MatRef<T> y, MatRef<T> xhat, std::span<T> rstd) {
  const Index n = x.rows();
  const Index d = x.cols();
  require(d > 0, "layernorm_forward: zero feature width");
  require(eps > 0.0, "layernorm_forward: eps must be > 0");
  require(static_cast<Index>(gamma.size()) == d && static_cast<Index>(beta.size()) == d,
          "layernorm_forward: gamma/beta length must equal the feature width " +
              std::to_string(d));
  check_shape("layernorm_forward: y", y.rows(), y.cols(), n, d);
  check_shape("layernorm_forward: xhat", xhat.rows(), xhat.cols(), n, d);
  require(static_cast<Index>(rstd.size()) == n, "layernorm_forward: rstd length must equal rows");
  // Row statistics in T with Eigen's vectorised reductions (two passes: mean, then the mean
  // squared deviation, which avoids the cancellation of E[x^2] - E[x]^2). For float rows of a
  // few hundred entries the relative error of the mean and variance is ~1e-7, the precision of
  // the stored values; the scalar double loop this replaces cost about 8% of the molecule
  // model's forward time.
  const auto g = Eigen::Map<const Arr<T>>(gamma.data(), d);
  const auto b = Eigen::Map<const Arr<T>>(beta.data(), d);
  parallel_chunks(n, kRowwiseChunk, [&](Index, Index r0, Index r1) {
    for (Index r = r0; r < r1; ++r) {
      const auto xr = row_array<T>(x, r);
      const T mean = xr.sum() / static_cast<T>(d);
      const T var = (xr - mean).square().sum() / static_cast<T>(d);
      using std::sqrt;
      const T rs = static_cast<T>(1.0 / sqrt(static_cast<Accum<T>>(var) + eps));
      rstd[static_cast<std::size_t>(r)] = rs;
      auto h = row_array<T>(xhat, r);
      h = (xr - mean) * rs;
      row_array<T>(y, r) = h * g + b;
    }
  });
}

template <class T>
void layernorm_forward_reference(ConstMatRef<T> x, std::span<const T> gamma,
                                 std::span<const T> beta, double eps, MatRef<T> y) {
  const Index d = x.cols();
  require(static_cast<Index>(gamma.size()) == d && static_cast<Index>(beta.size()) == d,
          "layernorm_forward_reference: gamma/beta length mismatch");
  check_shape("layernorm_forward_reference: y", y.rows(), y.cols(), x.rows(), d);
  for (Index r = 0; r < x.rows(); ++r) {
    const Eigen::VectorXd row = x.row(r).template cast<double>().transpose();
    const double mean = row.mean();
    const double var = (row.array() - mean).square().mean();
    for (Index c = 0; c < d; ++c)
      y(r, c) = static_cast<T>((row(c) - mean) / std::sqrt(var + eps) *
                                   static_cast<double>(gamma[static_cast<std::size_t>(c)]) +
                               static_cast<double>(beta[static_cast<std::size_t>(c)]));
  }
}

template <class T>
void layernorm_backward(ConstMatRef<T> xhat, std::span<const T> rstd, std::span<const T> gamma,
                        ConstMatRef<T> dy, MatRef<T> dx, std::span<T> dgamma,
                        std::span<T> dbeta) {
  const Index n = xhat.rows();
  const Index d = xhat.cols();
  check_shape("layernorm_backward: dy", dy.rows(), dy.cols(), n, d);
  if (dx.size() != 0) check_shape("layernorm_backward: dx", dx.rows(), dx.cols(), n, d);
  require(static_cast<Index>(rstd.size()) == n, "layernorm_backward: rstd length must equal rows");
  require(static_cast<Index>(gamma.size()) == d && static_cast<Index>(dgamma.size()) == d &&
              static_cast<Index>(dbeta.size()) == d,
          "layernorm_backward: gamma/dgamma/dbeta length must equal the feature width");
  // Per-chunk partial sums of dgamma and dbeta (double), summed serially below in chunk order
  // (the small row-wise chunks balance two threads; the order stays fixed by n).
  const Index chunks = chunk_count(n, kRowwiseChunk);
  using A = Accum<T>;
  std::vector<A> partial(static_cast<std::size_t>(chunks * 2 * d), A(0.0));
  parallel_chunks(n, kRowwiseChunk, [&](Index chunk, Index r0, Index r1) {
    A* pg = partial.data() + chunk * 2 * d;
    A* pb = pg + d;
    for (Index r = r0; r < r1; ++r) {
      A mean_g = 0.0;
      A mean_gx = 0.0;
      for (Index c = 0; c < d; ++c) {
        const A g = static_cast<A>(dy(r, c)) *
                         static_cast<A>(gamma[static_cast<std::size_t>(c)]);
        mean_g += g;
        mean_gx += g * static_cast<A>(xhat(r, c));
        pg[c] += static_cast<A>(dy(r, c)) * static_cast<A>(xhat(r, c));
        pb[c] += static_cast<A>(dy(r, c));
      }
      if (dx.size() == 0) continue;
      mean_g /= static_cast<double>(d);
      mean_gx /= static_cast<double>(d);
      const A rs = static_cast<A>(rstd[static_cast<std::size_t>(r)]);
      for (Index c = 0; c < d; ++c) {
        const A g = static_cast<A>(dy(r, c)) *
                         static_cast<A>(gamma[static_cast<std::size_t>(c)]);
        dx(r, c) += static_cast<T>(rs * (g - mean_g - static_cast<A>(xhat(r, c)) * mean_gx));
      }
    }
  });
  if (!is_dual_v<T> && !pass_options().parameter_gradient_values) return;  // input gradients only
  for (Index c = 0; c < d; ++c) {
    A sg = 0.0;
    A sb = 0.0;
    for (Index k = 0; k < chunks; ++k) {
      sg += partial[static_cast<std::size_t>(k * 2 * d + c)];
      sb += partial[static_cast<std::size_t>(k * 2 * d + d + c)];
    }
    dgamma[static_cast<std::size_t>(c)] += static_cast<T>(sg);
    dbeta[static_cast<std::size_t>(c)] += static_cast<T>(sb);
  }
}

// -------------------------------------------------------------------------------- Activations

Activation parse_activation(std::string_view name) {
  if (name == "identity") return Activation::identity;
  if (name == "silu") return Activation::silu;
  if (name == "gelu" || name == "gelu_tanh") return Activation::gelu_tanh;
  if (name == "gelu_erf") return Activation::gelu_erf;
  throw ConfigError("unknown activation '" + std::string(name) +
                    "' (expected identity, silu, gelu_tanh, gelu or gelu_erf)");
}

const char* to_string(Activation activation) noexcept {
  switch (activation) {
    case Activation::identity: return "identity";
    case Activation::silu: return "silu";
    case Activation::gelu_tanh: return "gelu_tanh";
    case Activation::gelu_erf: return "gelu_erf";
  }
  return "unknown";
}

namespace {

constexpr double kSqrt2OverPi = 0.79788456080286535588;  // sqrt(2/pi)
constexpr double kGeluCubic = 0.044715;
constexpr double kInvSqrt2 = 0.70710678118654752440;    // 1/sqrt(2)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;  // 1/sqrt(2 pi), normal density at 0

template <class T>
inline T act_value(Activation a, T x) {
  using std::erf;
  using std::exp;
  using std::tanh;
  switch (a) {
    case Activation::identity: return x;
    case Activation::silu: return x / (T(1) + exp(-x));
    case Activation::gelu_tanh: {
      const T u = T(kSqrt2OverPi) * (x + T(kGeluCubic) * x * x * x);
      return T(0.5) * x * (T(1) + tanh(u));
    }
    case Activation::gelu_erf:
      return T(0.5) * x * (T(1) + erf(x * T(kInvSqrt2)));
  }
  return x;
}

template <class T>
inline T act_derivative(Activation a, T x) {
  using std::erf;
  using std::exp;
  using std::tanh;
  switch (a) {
    case Activation::identity: return T(1);
    case Activation::silu: {
      const T s = T(1) / (T(1) + exp(-x));
      return s * (T(1) + x * (T(1) - s));
    }
    case Activation::gelu_tanh: {
      const T u = T(kSqrt2OverPi) * (x + T(kGeluCubic) * x * x * x);
      const T t = tanh(u);
      const T du = T(kSqrt2OverPi) * (T(1) + T(3 * kGeluCubic) * x * x);
      return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * du;
    }
    case Activation::gelu_erf: {
      const T cdf = T(0.5) * (T(1) + erf(x * T(kInvSqrt2)));
      const T pdf = T(kInvSqrt2Pi) * exp(-x * x / T(2));
      return cdf + x * pdf;
    }
  }
  return T(1);
}

}  // namespace

template <class T>
void activation_forward(Activation activation, ConstMatRef<T> x, MatRef<T> y) {
  check_shape("activation_forward: y", y.rows(), y.cols(), x.rows(), x.cols());
  const Index cols = x.cols();
  if (activation == Activation::silu) {
    // silu(x) = x / (1 + exp(-x)); for x -> -inf exp(-x) -> inf and the quotient -> -0.
    if constexpr (is_dual_v<T>) {
      // Value parts vectorised; tangent silu'(x_v) x_d, silu' = s (1 + x (1 - s)).
      parallel_chunks(x.rows(), kRowwiseChunk, [&](Index, Index r0, Index r1) {
        Eigen::ArrayXd xv(cols), xd(cols), e(cols), s(cols);  // one row's parts, reused across rows
        for (Index r = r0; r < r1; ++r) {
          xv = dual_part(x, r, 0);  // contiguous: vectorised
          xd = dual_part(x, r, 1);
          e = (-xv).exp();
          s = (1.0 + e).inverse();
          dual_part(y, r, 0) = xv / (1.0 + e);
          dual_part(y, r, 1) = s * (1.0 + xv * (1.0 - s)) * xd;
        }
      });
      return;
    }
    parallel_chunks(x.rows(), kRowwiseChunk, [&](Index, Index r0, Index r1) {
      for (Index r = r0; r < r1; ++r) {
        const auto xr = row_array<T>(x, r);
        row_array<T>(y, r) = xr / (T(1) + (-xr).exp());
      }
    });
    return;
  }
  parallel_chunks(x.rows(), kRowwiseChunk, [&](Index, Index r0, Index r1) {
    for (Index r = r0; r < r1; ++r)
      for (Index c = 0; c < cols; ++c) y(r, c) = act_value<T>(activation, x(r, c));
  });
}

template <class T>
void activation_backward(Activation activation, ConstMatRef<T> x, ConstMatRef<T> dy,
                         MatRef<T> dx) {
  check_shape("activation_backward: dy", dy.rows(), dy.cols(), x.rows(), x.cols());
  if (dx.size() == 0) return;
  check_shape("activation_backward: dx", dx.rows(), dx.cols(), x.rows(), x.cols());
  const Index cols = x.cols();
  if (activation == Activation::silu) {
    // silu'(x) = s (1 + x (1 - s)), s = 1 / (1 + exp(-x)); vectorised as in activation_forward.
    if constexpr (is_dual_v<T>) {
      // dx += silu'(x) dy: value silu'(x_v) dy_v, tangent silu'(x_v) dy_d + silu''(x_v) x_d dy_v,
      // silu'' = s (1 - s) (2 + x (1 - 2 s)).
      parallel_chunks(x.rows(), kRowwiseChunk, [&](Index, Index r0, Index r1) {
        // One row's parts, reused across rows.
        Eigen::ArrayXd xv(cols), xd(cols), gv(cols), gd(cols), s(cols), first(cols), second(cols);
        for (Index r = r0; r < r1; ++r) {
          xv = dual_part(x, r, 0);  // contiguous: vectorised
          xd = dual_part(x, r, 1);
          gv = dual_part(dy, r, 0);
          gd = dual_part(dy, r, 1);
          s = (1.0 + (-xv).exp()).inverse();
          first = s * (1.0 + xv * (1.0 - s));
          second = s * (1.0 - s) * (2.0 + xv * (1.0 - 2.0 * s));
          dual_part(dx, r, 0) += first * gv;
          dual_part(dx, r, 1) += first * gd + second * xd * gv;
        }
      });
      return;
    }
    parallel_chunks(x.rows(), kRowwiseChunk, [&](Index, Index r0, Index r1) {
      for (Index r = r0; r < r1; ++r) {
        const auto xr = row_array<T>(x, r);
        const Arr<T> sig = T(1) / (T(1) + (-xr).exp());
        row_array<T>(dx, r) += sig * (T(1) + xr * (T(1) - sig)) * row_array<T>(dy, r);
      }
    });
    return;
  }
  parallel_chunks(x.rows(), kRowwiseChunk, [&](Index, Index r0, Index r1) {
    for (Index r = r0; r < r1; ++r)
      for (Index c = 0; c < cols; ++c) dx(r, c) += act_derivative<T>(activation, x(r, c)) * dy(r, c);
  });
}

// ---------------------------------------------------------------------------------- Embedding

namespace {
void check_ids(const char* what, std::span<const std::int32_t> ids, Index vocab) {
  for (std::size_t n = 0; n < ids.size(); ++n)
    if (ids[n] < 0 || ids[n] >= vocab)
      throw InvalidArgument(std::string(what) + ": id " + std::to_string(ids[n]) + " at row " +
                            std::to_string(n) + " is outside the table [0, " +
                            std::to_string(vocab) + ")");
}
}  // namespace

template <class T>
void embedding_forward(std::span<const std::int32_t> ids, ConstMatRef<T> table, MatRef<T> y) {
  const Index n = static_cast<Index>(ids.size());
  check_shape("embedding_forward: y", y.rows(), y.cols(), n, table.cols());
  check_ids("embedding_forward", ids, table.rows());
  parallel_chunks(n, kRowwiseChunk, [&](Index, Index r0, Index r1) {
    for (Index r = r0; r < r1; ++r) y.row(r) = table.row(ids[static_cast<std::size_t>(r)]);
  });
}

template <class T>
void embedding_backward(std::span<const std::int32_t> ids, ConstMatRef<T> dy, MatRef<T> dtable) {
  const Index n = static_cast<Index>(ids.size());
  check_shape("embedding_backward: dy", dy.rows(), dy.cols(), n, dtable.cols());
  check_ids("embedding_backward", ids, dtable.rows());
  if (!is_dual_v<T> && !pass_options().parameter_gradient_values) return;  // input gradients only
  // Serial scatter in row order: rows sharing an id are added in a fixed order.
  for (Index r = 0; r < n; ++r) dtable.row(ids[static_cast<std::size_t>(r)]) += dy.row(r);
}

// ----------------------------------------------------------------------------------- Residual

template <class T>
void residual_forward(ConstMatRef<T> a, ConstMatRef<T> b, MatRef<T> y) {
  check_shape("residual_forward: b", b.rows(), b.cols(), a.rows(), a.cols());
  check_shape("residual_forward: y", y.rows(), y.cols(), a.rows(), a.cols());
  parallel_chunks(a.rows(), kRowwiseChunk, [&](Index, Index r0, Index r1) {
    y.middleRows(r0, r1 - r0) = a.middleRows(r0, r1 - r0) + b.middleRows(r0, r1 - r0);
  });
}

template <class T>
void residual_backward(ConstMatRef<T> dy, MatRef<T> da, MatRef<T> db) {
  if (da.size() != 0) check_shape("residual_backward: da", da.rows(), da.cols(), dy.rows(), dy.cols());
  if (db.size() != 0) check_shape("residual_backward: db", db.rows(), db.cols(), dy.rows(), dy.cols());
  parallel_chunks(dy.rows(), kRowwiseChunk, [&](Index, Index r0, Index r1) {
    if (da.size() != 0) da.middleRows(r0, r1 - r0) += dy.middleRows(r0, r1 - r0);
    if (db.size() != 0) db.middleRows(r0, r1 - r0) += dy.middleRows(r0, r1 - r0);
  });
}

// ------------------------------------------------------------------------------------ Pooling

Pooling parse_pooling(std::string_view name) {
  if (name == "sum") return Pooling::sum;
  if (name == "mean") return Pooling::mean;
  throw ConfigError("unknown pooling '" + std::string(name) + "' (expected sum or mean)");
}

const char* to_string(Pooling pooling) noexcept {
  switch (pooling) {
    case Pooling::sum: return "sum";
    case Pooling::mean: return "mean";
  }
  return "unknown";
}

namespace {
constexpr Index kSetChunk = 64;  // sets per parallel chunk
}

template <class T>
void segment_pool_forward(Pooling pooling, const RaggedIndex& index, ConstMatRef<T> x,
                          MatRef<T> y) {
  const Index d = x.cols();
  require(x.rows() == index.total_rows(),
          "segment_pool_forward: x has " + std::to_string(x.rows()) +
              " rows but the ragged index covers " + std::to_string(index.total_rows()));
  check_shape("segment_pool_forward: y", y.rows(), y.cols(), index.num_sets(), d);
  parallel_chunks(index.num_sets(), kSetChunk, [&](Index, Index s0, Index s1) {
    std::vector<Accum<T>> acc(static_cast<std::size_t>(d));
    for (Index s = s0; s < s1; ++s) {
      const Index count = index.size(s);
      if (count == 0) {  // empty set: defined output 0 (sum and mean alike)
        y.row(s).setZero();
        continue;
      }
      std::fill(acc.begin(), acc.end(), Accum<T>(0.0));
      for (Index r = index.begin(s); r < index.end(s); ++r)
        for (Index c = 0; c < d; ++c) acc[static_cast<std::size_t>(c)] += x(r, c);
      const double scale = pooling == Pooling::mean ? 1.0 / static_cast<double>(count) : 1.0;
      for (Index c = 0; c < d; ++c) y(s, c) = static_cast<T>(acc[static_cast<std::size_t>(c)] * scale);
    }
  });
}

template <class T>
void segment_pool_backward(Pooling pooling, const RaggedIndex& index, ConstMatRef<T> dy,
                           MatRef<T> dx) {
  const Index d = dy.cols();
  require(dy.rows() == index.num_sets(), "segment_pool_backward: dy rows must equal the set count");
  if (dx.size() == 0) return;
  check_shape("segment_pool_backward: dx", dx.rows(), dx.cols(), index.total_rows(), d);
  parallel_chunks(index.num_sets(), kSetChunk, [&](Index, Index s0, Index s1) {
    for (Index s = s0; s < s1; ++s) {
      const Index count = index.size(s);
      if (count == 0) continue;
      const T scale = pooling == Pooling::mean ? T(1.0 / static_cast<double>(count)) : T(1);
      for (Index r = index.begin(s); r < index.end(s); ++r) dx.row(r) += scale * dy.row(s);
    }
  });
}

// ------------------------------------------------------------------------------ Layer structs

template <class T>
Linear<T> Linear<T>::create(ParameterStore<T>& store, const std::string& prefix, Index in_,
                            Index out_, bool bias_) {
  require(in_ > 0 && out_ > 0, "Linear::create(" + prefix + "): widths must be positive");
  Linear layer;
  layer.in = in_;
  layer.out = out_;
  layer.has_bias = bias_;
  layer.weight = store.add(prefix + ".weight", in_, out_);
  if (bias_) layer.bias = store.add(prefix + ".bias", out_, 1);
  return layer;
}

template <class T>
void Linear<T>::init(ParameterStore<T>& store, Rng& rng) const {
  require(store.allocated(), "Linear::init: allocate the parameter store first");
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  for (T& w : store.value_span(weight)) w = static_cast<T>(rng.uniform(-bound, bound));
  if (has_bias)
    for (T& b : store.value_span(bias)) b = static_cast<T>(rng.uniform(-bound, bound));
}

template <class T>
Mat<T> Linear<T>::forward(const ParameterStore<T>& store, ConstMatRef<T> x) const {
  Mat<T> y(x.rows(), out);
  linear_forward<T>(x, store.value(weight),
                    has_bias ? store.value_span(bias) : std::span<const T>{}, y);
  return y;
}

template <class T>
Mat<T> Linear<T>::forward(const ParameterStore<T>& store, ConstMatRef<T> x,
                          LinearCache<T>& cache) const {
  cache.x = x;
  return forward(store, x);
}

template <class T>
void Linear<T>::backward(ParameterStore<T>& store, const LinearCache<T>& cache, ConstMatRef<T> dy,
                         MatRef<T> dx) const {
  backward(store, cache.x, dy, dx);
}

template <class T>
void Linear<T>::backward(ParameterStore<T>& store, ConstMatRef<T> x, ConstMatRef<T> dy,
                         MatRef<T> dx) const {
  linear_backward<T>(x, store.value(weight), dy, dx, store.grad(weight),
                     has_bias ? store.grad_span(bias) : std::span<T>{});
}

template <class T>
LayerNorm<T> LayerNorm<T>::create(ParameterStore<T>& store, const std::string& prefix, Index dim_,
                                  double eps_) {
  require(dim_ > 0, "LayerNorm::create(" + prefix + "): width must be positive");
  require(eps_ > 0.0, "LayerNorm::create(" + prefix + "): eps must be positive");
  LayerNorm layer;
  layer.dim = dim_;
  layer.eps = eps_;
  layer.weight = store.add(prefix + ".weight", dim_, 1);
  layer.bias = store.add(prefix + ".bias", dim_, 1);
  return layer;
}

template <class T>
void LayerNorm<T>::init(ParameterStore<T>& store) const {
  require(store.allocated(), "LayerNorm::init: allocate the parameter store first");
  for (T& g : store.value_span(weight)) g = T(1);
  for (T& b : store.value_span(bias)) b = T(0);
}

template <class T>
Mat<T> LayerNorm<T>::forward(const ParameterStore<T>& store, ConstMatRef<T> x,
                             LayerNormCache<T>& cache) const {
  Mat<T> y(x.rows(), x.cols());
  cache.xhat.resize(x.rows(), x.cols());
  cache.rstd.resize(x.rows());
  layernorm_forward<T>(x, store.value_span(weight), store.value_span(bias), eps, y, cache.xhat,
                       std::span<T>(cache.rstd.data(), static_cast<std::size_t>(x.rows())));
  return y;
}

template <class T>
Mat<T> LayerNorm<T>::forward(const ParameterStore<T>& store, ConstMatRef<T> x) const {
  LayerNormCache<T> cache;
  return forward(store, x, cache);
}

template <class T>
void LayerNorm<T>::backward(ParameterStore<T>& store, const LayerNormCache<T>& cache,
                            ConstMatRef<T> dy, MatRef<T> dx) const {
  layernorm_backward<T>(
      cache.xhat,
      std::span<const T>(cache.rstd.data(), static_cast<std::size_t>(cache.rstd.size())),
      store.value_span(weight), dy, dx, store.grad_span(weight), store.grad_span(bias));
}

template <class T>
Mlp<T> Mlp<T>::create(ParameterStore<T>& store, const std::string& prefix, Index in, Index hidden,
                      Index out, Activation activation_) {
  Mlp mlp;
  mlp.fc1 = Linear<T>::create(store, prefix + ".fc1", in, hidden);
  mlp.fc2 = Linear<T>::create(store, prefix + ".fc2", hidden, out);
  mlp.activation = activation_;
  return mlp;
}

template <class T>
void Mlp<T>::init(ParameterStore<T>& store, Rng& rng) const {
  fc1.init(store, rng);
  fc2.init(store, rng);
}

template <class T>
Mat<T> Mlp<T>::forward(const ParameterStore<T>& store, ConstMatRef<T> x, MlpCache<T>& cache) const {
  cache.pre = fc1.forward(store, x, cache.fc1);
  cache.fc2.x.resize(cache.pre.rows(), cache.pre.cols());
  activation_forward<T>(activation, cache.pre, cache.fc2.x);
  return fc2.forward(store, cache.fc2.x);
}

template <class T>
Mat<T> Mlp<T>::forward(const ParameterStore<T>& store, ConstMatRef<T> x) const {
  const Mat<T> pre = fc1.forward(store, x);
  Mat<T> act(pre.rows(), pre.cols());
  activation_forward<T>(activation, pre, act);
  return fc2.forward(store, act);
}

template <class T>
void Mlp<T>::backward(ParameterStore<T>& store, const MlpCache<T>& cache, ConstMatRef<T> dy,
                      MatRef<T> dx) const {
  Mat<T> dact = Mat<T>::Zero(cache.pre.rows(), cache.pre.cols());
  fc2.backward(store, cache.fc2, dy, dact);
  Mat<T> dpre = Mat<T>::Zero(cache.pre.rows(), cache.pre.cols());
  activation_backward<T>(activation, cache.pre, dact, dpre);
  fc1.backward(store, cache.fc1, dpre, dx);
}

template <class T>
Embedding<T> Embedding<T>::create(ParameterStore<T>& store, const std::string& prefix,
                                  Index num_embeddings_, Index dim_, double init_std_) {
  require(num_embeddings_ > 0 && dim_ > 0,
          "Embedding::create(" + prefix + "): sizes must be positive");
  require(init_std_ >= 0.0, "Embedding::create(" + prefix + "): init_std must be >= 0");
  Embedding e;
  e.num_embeddings = num_embeddings_;
  e.dim = dim_;
  e.init_std = init_std_;
  e.weight = store.add(prefix + ".weight", num_embeddings_, dim_);
  return e;
}

template <class T>
void Embedding<T>::init(ParameterStore<T>& store, Rng& rng) const {
  require(store.allocated(), "Embedding::init: allocate the parameter store first");
  for (T& w : store.value_span(weight)) w = static_cast<T>(init_std * rng.normal());
}

template <class T>
Mat<T> Embedding<T>::forward(const ParameterStore<T>& store, std::span<const std::int32_t> ids) const {
  Mat<T> y(static_cast<Index>(ids.size()), dim);
  embedding_forward<T>(ids, store.value(weight), y);
  return y;
}

template <class T>
Mat<T> Embedding<T>::forward(const ParameterStore<T>& store, std::span<const std::int32_t> ids,
                             EmbeddingCache<T>& cache) const {
  Mat<T> y = forward(store, ids);
  cache.ids.assign(ids.begin(), ids.end());
  return y;
}

template <class T>
void Embedding<T>::backward(ParameterStore<T>& store, const EmbeddingCache<T>& cache,
                            ConstMatRef<T> dy) const {
  embedding_backward<T>(cache.ids, dy, store.grad(weight));
}

// ------------------------------------------------------------------- Explicit instantiations

#define FLT_INSTANTIATE_LAYERS(T)                                                                \
  template void linear_forward<T>(ConstMatRef<T>, ConstMatRef<T>, std::span<const T>, MatRef<T>); \
  template void linear_forward_reference<T>(ConstMatRef<T>, ConstMatRef<T>, std::span<const T>,  \
                                            MatRef<T>);                                          \
  template void linear_backward<T>(ConstMatRef<T>, ConstMatRef<T>, ConstMatRef<T>, MatRef<T>,    \
                                   MatRef<T>, std::span<T>);                                     \
  template void layernorm_forward<T>(ConstMatRef<T>, std::span<const T>, std::span<const T>,     \
                                     double, MatRef<T>, MatRef<T>, std::span<T>);                \
  template void layernorm_backward<T>(ConstMatRef<T>, std::span<const T>, std::span<const T>,    \
                                      ConstMatRef<T>, MatRef<T>, std::span<T>, std::span<T>);    \
  template void activation_forward<T>(Activation, ConstMatRef<T>, MatRef<T>);                   \
  template void activation_backward<T>(Activation, ConstMatRef<T>, ConstMatRef<T>, MatRef<T>);  \
  template void embedding_forward<T>(std::span<const std::int32_t>, ConstMatRef<T>, MatRef<T>);  \
  template void embedding_backward<T>(std::span<const std::int32_t>, ConstMatRef<T>, MatRef<T>); \
  template void residual_forward<T>(ConstMatRef<T>, ConstMatRef<T>, MatRef<T>);                  \
  template void residual_backward<T>(ConstMatRef<T>, MatRef<T>, MatRef<T>);                      \
  template void segment_pool_forward<T>(Pooling, const RaggedIndex&, ConstMatRef<T>, MatRef<T>); \
  template void segment_pool_backward<T>(Pooling, const RaggedIndex&, ConstMatRef<T>, MatRef<T>); \
  template struct Linear<T>;                                                                     \
  template struct LayerNorm<T>;                                                                  \
  template struct Mlp<T>;                                                                        \
  template struct Embedding<T>;

FLT_INSTANTIATE_LAYERS(float)
FLT_INSTANTIATE_LAYERS(double)
FLT_INSTANTIATE_LAYERS(Dual)
#undef FLT_INSTANTIATE_LAYERS
template void layernorm_forward_reference<float>(ConstMatRef<float>, std::span<const float>,
                                                 std::span<const float>, double, MatRef<float>);
template void layernorm_forward_reference<double>(ConstMatRef<double>, std::span<const double>,
                                                  std::span<const double>, double, MatRef<double>);

}  // namespace flt
