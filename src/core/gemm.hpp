// Float matrix products for the Linear layers: C = [C +] A B [+ 1 bias^T] with A (M x K) and C
// (M x N) row-major views and B (K x N) pre-packed into panels of 16 columns.
//
// Summation order: C(i, j) = bias(j) + sum_k A(i, k) B(k, j), accumulated one k at a time from
// k = 0 (fused multiply-adds), whatever M, the row range or the thread count -- so results are
// bitwise independent of how callers cut the rows into chunks. linear_forward_reference (double
// accumulation) is the readable reference. Kernels, chosen at run time (active_isa()): AVX-512
// on CPUs that have it (8 x 32 micro-kernel over two panels, 12 x 16 for a last odd panel; one
// 16-float register per row and panel), AVX2 and FMA (6 x 16, two 8-float registers per row), and
// a plain loop. All three run the same FMA sequence per
// element, so every kernel gives bitwise the same C: a model trains to the same bits on an AVX2 and
// an AVX-512 machine. Without AVX2 at compile time kFastKernelAvailable is false and only the plain
// loop exists. Why not Eigen's product: docs/core.md, "GEMM".
#pragma once

#include "core/tensor.hpp"

#include <span>
#include <vector>

namespace flt::gemm {

#if defined(__AVX2__) && defined(__FMA__)
inline constexpr bool kFastKernelAvailable = true;
#else
inline constexpr bool kFastKernelAvailable = false;
#endif

// Instruction sets of the kernels, narrowest first.
enum class Isa { portable, avx2, avx512 };
const char* isa_name(Isa isa) noexcept;
// The widest kernel this build and CPU run.
Isa best_isa() noexcept;
// The kernel multiply() uses: best_isa(), or a narrower one named by the environment variable
// FLT_ISA (portable, avx2 or avx512; for side-by-side benchmarks). A value that names no kernel or
// one wider than best_isa() is ignored; read once, at the first call.
Isa active_isa() noexcept;

// Columns per packed panel (two 8-float AVX registers).
inline constexpr Index kPanelWidth = 16;

// B (K x N) as ceil(N / 16) panels, each K rows of 16 floats (columns past N are zero).
class PackedMatrix {
 public:
  PackedMatrix() = default;
  // Packs B (K x N).
  static PackedMatrix pack(ConstMatRef<float> b);
  // Packs B = W^T for W (N x K): the operand of dx = dy W^T.
  static PackedMatrix pack_transposed(ConstMatRef<float> w);

  Index rows() const noexcept { return rows_; }  // K
  Index cols() const noexcept { return cols_; }  // N
  Index panels() const noexcept { return (cols_ + kPanelWidth - 1) / kPanelWidth; }
  const float* panel(Index p) const noexcept { return data_.data() + p * rows_ * kPanelWidth; }

 private:
  static PackedMatrix pack_strided(const float* src, Index rows, Index cols, Index row_step,
                                   Index col_step);
  Index rows_ = 0, cols_ = 0;
  std::vector<float> data_;
};

// out (cols x rows) = in^T, 8 x 8 blocks through AVX registers (a scalar row-major to row-major
// transpose costs several cycles per element: every element is a strided access).
void transpose(ConstMatRef<float> in, Mat<float>& out);

// C = A B + 1 bias^T (accumulate false) or C += A B + 1 bias^T (accumulate true); bias empty
// means zero. A: M x K, C: M x N, both row-major with unit inner stride; B.rows() == K,
// B.cols() == N. Single-threaded: callers parallelise over row chunks. Throws InvalidArgument on a
// shape mismatch.
void multiply(ConstMatRef<float> a, const PackedMatrix& b, std::span<const float> bias, MatRef<float> c,
              bool accumulate);
// The same with a named kernel (tests, benchmarks); throws InvalidArgument when isa is wider than
// best_isa().
void multiply(ConstMatRef<float> a, const PackedMatrix& b, std::span<const float> bias, MatRef<float> c,
              bool accumulate, Isa isa);

}  // namespace flt::gemm
