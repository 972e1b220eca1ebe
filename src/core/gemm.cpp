// M rows of A and C, K inner width, N output columns, panels of 16 columns of B.
// Equations and summation order in gemm.hpp.
#include "core/gemm.hpp"

#include "core/error.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace flt::gemm {

// Packs B (rows x cols) with B(k, j) = src[k * row_step + j * col_step].
PackedMatrix PackedMatrix::pack_strided(const float* src, Index rows, Index cols, Index row_step,
                                        Index col_step) {
  PackedMatrix p;
  p.rows_ = rows;
  p.cols_ = cols;
  p.data_.assign(static_cast<std::size_t>(p.panels() * rows * kPanelWidth), 0.0f);
  for (Index q = 0; q < p.panels(); ++q) {
    const Index c0 = q * kPanelWidth, nc = std::min(kPanelWidth, cols - c0);
    float* dst = p.data_.data() + q * rows * kPanelWidth;
    for (Index k = 0; k < rows; ++k) {
      const float* from = src + k * row_step + c0 * col_step;
      float* to = dst + k * kPanelWidth;
      if (col_step == 1)
        std::copy_n(from, nc, to);  // rows of B contiguous: the common case of pack()
      else
        for (Index j = 0; j < nc; ++j) to[j] = from[j * col_step];
    }
  }
  return p;
}

PackedMatrix PackedMatrix::pack(ConstMatRef<float> b) {
  return pack_strided(b.data(), b.rows(), b.cols(), b.outerStride(), 1);
}

PackedMatrix PackedMatrix::pack_transposed(ConstMatRef<float> w) {
  // B(k, j) = W(j, k): row j of W is column j of B.
  return pack_strided(w.data(), w.cols(), w.rows(), 1, w.outerStride());
}

namespace {

// Rows of A per outer block: the panels of B are reused by the block's micro-kernels (four of 6
// rows in AVX2, three of 8 rows over two panels in AVX-512). (Sizing the block to keep rows and
// panel within L1 at every depth -- 6 rows at K = 256 -- measured slower in bench_gemm, so the
// block is fixed.)
constexpr Index kRowBlock = 24;

using MicroKernel = void (*)(const float*, Index, const float*, Index, const float*, float*, Index,
                             Index, bool);

// Portable kernel with the same summation order (one k at a time from the bias, fused).
template <int R>
void plain_kernel(const float* a, Index lda, const float* panel, Index k_len, const float* bias16,
                  float* c, Index ldc, Index nc, bool accumulate) {
  for (int r = 0; r < R; ++r)
    for (Index j = 0; j < nc; ++j) {
      float acc = bias16[j];
      for (Index k = 0; k < k_len; ++k) acc = std::fma(a[r * lda + k], panel[k * kPanelWidth + j], acc);
      float& out = c[r * ldc + j];
      out = accumulate ? out + acc : acc;
    }
}
constexpr int kPlainRows = 6;
constexpr MicroKernel kPlainKernels[kPlainRows + 1] = {nullptr,         plain_kernel<1>, plain_kernel<2>,
                                                       plain_kernel<3>, plain_kernel<4>, plain_kernel<5>,
                                                       plain_kernel<6>};

#if defined(__AVX2__) && defined(__FMA__)

// C[0..R) x [0..nc) (=|+=) A[0..R) B_panel + bias_panel. The loops over r are fully unrolled (the
// pragma) so that the 2R accumulators live in registers: without it GCC keeps the arrays in
// memory and the kernel runs at a third of the speed.
template <int R>
void micro_kernel(const float* a, Index lda, const float* panel, Index k_len, const float* bias16,
                  float* c, Index ldc, Index nc, bool accumulate) {
  __m256 lo[R], hi[R];
  const __m256 bias_lo = _mm256_loadu_ps(bias16), bias_hi = _mm256_loadu_ps(bias16 + 8);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    lo[r] = bias_lo;
    hi[r] = bias_hi;
  }
  for (Index k = 0; k < k_len; ++k) {
    const __m256 b_lo = _mm256_loadu_ps(panel + k * kPanelWidth);
    const __m256 b_hi = _mm256_loadu_ps(panel + k * kPanelWidth + 8);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r * lda + k);
      lo[r] = _mm256_fmadd_ps(av, b_lo, lo[r]);
      hi[r] = _mm256_fmadd_ps(av, b_hi, hi[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    float* row = c + r * ldc;
    if (nc == kPanelWidth) {
      if (accumulate) {
        lo[r] = _mm256_add_ps(_mm256_loadu_ps(row), lo[r]);
        hi[r] = _mm256_add_ps(_mm256_loadu_ps(row + 8), hi[r]);
      }
      _mm256_storeu_ps(row, lo[r]);
      _mm256_storeu_ps(row + 8, hi[r]);
    } else {
      alignas(32) float tmp[kPanelWidth];
      _mm256_store_ps(tmp, lo[r]);
      _mm256_store_ps(tmp + 8, hi[r]);
      for (Index j = 0; j < nc; ++j) row[j] = accumulate ? row[j] + tmp[j] : tmp[j];
    }
  }
}
constexpr int kAvx2Rows = 6;
constexpr MicroKernel kAvx2Kernels[kAvx2Rows + 1] = {nullptr,          micro_kernel<1>, micro_kernel<2>,
                                                     micro_kernel<3>,  micro_kernel<4>, micro_kernel<5>,
                                                     micro_kernel<6>};

// The AVX-512 kernels: one 16-float register holds a whole panel row. Over one panel, 12 rows give
// the 12 independent accumulators that two FMA pipes of latency 4 need; over two panels, 8 rows
// give 16 and each broadcast of A feeds two FMAs (measured in bench_gemm: about 1.3x the one-panel
// kernel, 1.9x the AVX2 kernel on a Zen 5 core). Compiled for AVX-512 by the target attribute in an
// x86-64-v3 build and called only when the CPU has it. Per element the same FMAs in the same
// order as micro_kernel.
#define FLT_AVX512_TARGET __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw")))
template <int R>
FLT_AVX512_TARGET void micro_kernel_avx512(const float* a, Index lda, const float* panel, Index k_len,
                                           const float* bias16, float* c, Index ldc, Index nc,
                                           bool accumulate) {
  __m512 acc[R];
  const __m512 bias = _mm512_loadu_ps(bias16);
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r) acc[r] = bias;
  for (Index k = 0; k < k_len; ++k) {
    const __m512 b = _mm512_loadu_ps(panel + k * kPanelWidth);
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(a[r * lda + k]), b, acc[r]);
  }
  const __mmask16 mask = static_cast<__mmask16>((1u << nc) - 1u);
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r) {
    float* row = c + r * ldc;
    if (accumulate) acc[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, row), acc[r]);
    _mm512_mask_storeu_ps(row, mask, acc[r]);
  }
}
// Two panels (32 columns) of R rows: 2R accumulators, one broadcast of A feeds two FMAs.
template <int R>
FLT_AVX512_TARGET void micro_kernel_avx512_wide(const float* a, Index lda, const float* panel0,
                                                const float* panel1, Index k_len, const float* bias32,
                                                float* c, Index ldc, Index nc1, bool accumulate) {
  __m512 acc0[R], acc1[R];
  const __m512 bias0 = _mm512_loadu_ps(bias32), bias1 = _mm512_loadu_ps(bias32 + kPanelWidth);
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r) {
    acc0[r] = bias0;
    acc1[r] = bias1;
  }
  for (Index k = 0; k < k_len; ++k) {
    const __m512 b0 = _mm512_loadu_ps(panel0 + k * kPanelWidth);
    const __m512 b1 = _mm512_loadu_ps(panel1 + k * kPanelWidth);
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * lda + k]);
      acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
    }
  }
  const __mmask16 mask1 = static_cast<__mmask16>((1u << nc1) - 1u);
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r) {
    float* row = c + r * ldc;
    if (accumulate) {
      acc0[r] = _mm512_add_ps(_mm512_loadu_ps(row), acc0[r]);
      acc1[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(mask1, row + kPanelWidth), acc1[r]);
    }
    _mm512_storeu_ps(row, acc0[r]);
    _mm512_mask_storeu_ps(row + kPanelWidth, mask1, acc1[r]);
  }
}
using WideKernel = void (*)(const float*, Index, const float*, const float*, Index, const float*, float*,
                            Index, Index, bool);
constexpr int kAvx512WideRows = 8;
constexpr WideKernel kAvx512WideKernels[kAvx512WideRows + 1] = {
    nullptr,                       micro_kernel_avx512_wide<1>, micro_kernel_avx512_wide<2>,
    micro_kernel_avx512_wide<3>,   micro_kernel_avx512_wide<4>, micro_kernel_avx512_wide<5>,
    micro_kernel_avx512_wide<6>,   micro_kernel_avx512_wide<7>, micro_kernel_avx512_wide<8>};
constexpr int kAvx512Rows = 12;
constexpr MicroKernel kAvx512Kernels[kAvx512Rows + 1] = {
    nullptr,                  micro_kernel_avx512<1>,  micro_kernel_avx512<2>,  micro_kernel_avx512<3>,
    micro_kernel_avx512<4>,   micro_kernel_avx512<5>,  micro_kernel_avx512<6>,  micro_kernel_avx512<7>,
    micro_kernel_avx512<8>,   micro_kernel_avx512<9>,  micro_kernel_avx512<10>, micro_kernel_avx512<11>,
    micro_kernel_avx512<12>};

#endif

Isa detect_best_isa() noexcept {
#if defined(__AVX2__) && defined(__FMA__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
    return Isa::avx512;
  return Isa::avx2;
#else
  return Isa::portable;
#endif
}

Isa detect_active_isa() noexcept {
  const Isa best = best_isa();
  const char* env = std::getenv("FLT_ISA");
  if (env == nullptr) return best;
  for (Isa isa : {Isa::portable, Isa::avx2, Isa::avx512})
    if (std::strcmp(env, isa_name(isa)) == 0 && isa <= best) return isa;
  return best;
}

#if defined(__AVX2__) && defined(__FMA__)
// Transposes the 8 x 8 block at src (row stride lds) into dst (row stride ldd).
inline void transpose8x8(const float* src, Index lds, float* dst, Index ldd) {
  const __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lds);
  const __m256 r2 = _mm256_loadu_ps(src + 2 * lds), r3 = _mm256_loadu_ps(src + 3 * lds);
  const __m256 r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds);
  const __m256 r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}
#endif

}  // namespace

void transpose(ConstMatRef<float> in, Mat<float>& out) {
  const Index rows = in.rows(), cols = in.cols(), lds = in.outerStride();
  out.resize(cols, rows);
  const float* src = in.data();
  float* dst = out.data();
  Index i0 = 0;
#if defined(__AVX2__) && defined(__FMA__)
  for (; i0 + 8 <= rows; i0 += 8) {
    Index j0 = 0;
    for (; j0 + 8 <= cols; j0 += 8) transpose8x8(src + i0 * lds + j0, lds, dst + j0 * rows + i0, rows);
    for (Index j = j0; j < cols; ++j)
      for (Index i = i0; i < i0 + 8; ++i) dst[j * rows + i] = src[i * lds + j];
  }
#endif
  for (Index j = 0; j < cols; ++j)
    for (Index i = i0; i < rows; ++i) dst[j * rows + i] = src[i * lds + j];
}

const char* isa_name(Isa isa) noexcept {
  switch (isa) {
    case Isa::portable: return "portable";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "unknown";
}

Isa best_isa() noexcept {
  static const Isa best = detect_best_isa();
  return best;
}

Isa active_isa() noexcept {
  static const Isa active = detect_active_isa();
  return active;
}

void multiply(ConstMatRef<float> a, const PackedMatrix& b, std::span<const float> bias, MatRef<float> c,
              bool accumulate) {
  multiply(a, b, bias, c, accumulate, active_isa());
}

void multiply(ConstMatRef<float> a, const PackedMatrix& b, std::span<const float> bias, MatRef<float> c,
              bool accumulate, Isa isa) {
  const Index m = a.rows(), k_len = a.cols(), n = b.cols();
  if (k_len != b.rows() || c.rows() != m || c.cols() != n)
    throw InvalidArgument("gemm::multiply: shapes " + std::to_string(m) + "x" + std::to_string(k_len) +
                          " times " + std::to_string(b.rows()) + "x" + std::to_string(n) + " into " +
                          std::to_string(c.rows()) + "x" + std::to_string(c.cols()));
  require(bias.empty() || static_cast<Index>(bias.size()) == n,
          "gemm::multiply: bias length does not match the output columns");
  if (isa > best_isa())
    throw InvalidArgument(std::string("gemm::multiply: the ") + isa_name(isa) +
                          " kernel is not available on this CPU or build (best: " +
                          isa_name(best_isa()) + ")");
  if (m == 0 || n == 0) return;
  const MicroKernel* kernels = kPlainKernels;
  Index micro_rows = kPlainRows;
#if defined(__AVX2__) && defined(__FMA__)
  if (isa == Isa::avx512) {
    kernels = kAvx512Kernels;
    micro_rows = kAvx512Rows;
  } else if (isa == Isa::avx2) {
    kernels = kAvx2Kernels;
    micro_rows = kAvx2Rows;
  }
#endif
  const Index lda = a.outerStride(), ldc = c.outerStride();
#if defined(__AVX2__) && defined(__FMA__)
  if (isa == Isa::avx512) {
    for (Index i0 = 0; i0 < m; i0 += kRowBlock) {
      const Index i1 = std::min(m, i0 + kRowBlock);
      for (Index q = 0; q < b.panels(); q += 2) {
        const Index c0 = q * kPanelWidth;
        alignas(64) float bias32[2 * kPanelWidth] = {};
        if (!bias.empty()) std::copy_n(bias.data() + c0, std::min(2 * kPanelWidth, n - c0), bias32);
        if (q + 1 < b.panels()) {
          const Index nc1 = std::min(kPanelWidth, n - c0 - kPanelWidth);
          for (Index i = i0; i < i1; i += kAvx512WideRows) {
            const Index rows = std::min<Index>(kAvx512WideRows, i1 - i);
            kAvx512WideKernels[rows](a.data() + i * lda, lda, b.panel(q), b.panel(q + 1), k_len, bias32,
                                     c.data() + i * ldc + c0, ldc, nc1, accumulate);
          }
        } else {
          const Index nc = std::min(kPanelWidth, n - c0);
          for (Index i = i0; i < i1; i += kAvx512Rows) {
            const Index rows = std::min<Index>(kAvx512Rows, i1 - i);
            kAvx512Kernels[rows](a.data() + i * lda, lda, b.panel(q), k_len, bias32, c.data() + i * ldc + c0,
                                 ldc, nc, accumulate);
          }
        }
      }
    }
    return;
  }
#endif
  for (Index i0 = 0; i0 < m; i0 += kRowBlock) {
    const Index i1 = std::min(m, i0 + kRowBlock);
    for (Index q = 0; q < b.panels(); ++q) {
      const Index c0 = q * kPanelWidth, nc = std::min(kPanelWidth, n - c0);
      alignas(64) float bias16[kPanelWidth] = {};
      if (!bias.empty()) std::copy_n(bias.data() + c0, nc, bias16);
      for (Index i = i0; i < i1; i += micro_rows) {
        const Index rows = std::min(micro_rows, i1 - i);
        kernels[rows](a.data() + i * lda, lda, b.panel(q), k_len, bias16, c.data() + i * ldc + c0, ldc, nc,
                      accumulate);
      }
    }
  }
}

}  // namespace flt::gemm
