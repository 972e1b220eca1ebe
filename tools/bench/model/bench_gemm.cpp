// bench_gemm: float matrix-product throughput for the shapes of the molecule model's Linear
// layers (N atom rows of a batch: 580 for training batches of 32 QM9 molecules, 1150 for
// prediction batches of 64; widths 128 and 256), side by side: Eigen's product as flt called it
// before core/gemm (row-major, single-threaded: EIGEN_DONT_PARALLELIZE; the forward in 256-row
// chunks, the weight gradient in 64-column blocks) and flt's Linear kernels as they run now
// (linear_forward, and linear_backward for dx = dy W^T and for dW = x^T dy + db).
// docs/benchmarks/model_throughput.md quotes it. Not part of ctest.
//   build-bench-model/tools/bench/model/bench_gemm [repetitions]
#include "core/gemm.hpp"
#include "core/layers.hpp"
#include "fma_peak.hpp"

#include <Eigen/Dense>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace {
using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <class F>
double gflops(double flop_per_call, int reps, F&& call) {
  call();  // warm-up
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; ++r) call();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return flop_per_call * reps / s * 1e-9;
}
}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::max(1, std::atoi(argv[1])) : 300;
  omp_set_num_threads(1);  // flt's kernels run their row chunks on OpenMP threads
  std::printf("| rows N | in | out | y = x W: Eigen | flt | dx = dy W^T: Eigen | flt | dW = x^T dy: Eigen | flt |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (int n : {580, 1150})
    for (int in : {128, 256})
      for (int out : {128, 256}) {
        const Mat x = Mat::Random(n, in), w = Mat::Random(in, out), dy = Mat::Random(n, out);
        const Mat bias = Mat::Random(1, out);
        const std::span<const float> b(bias.data(), static_cast<std::size_t>(out));
        Mat y(n, out), dx = Mat::Zero(n, in), dw = Mat::Zero(in, out), none;
        std::vector<float> db(static_cast<std::size_t>(out), 0.0f);
        const double flop = 2.0 * n * in * out;
        const double e_fwd = gflops(flop, reps, [&] {
          for (int r0 = 0; r0 < n; r0 += 256) {
            const int rows = std::min(256, n - r0);
            y.middleRows(r0, rows).noalias() = x.middleRows(r0, rows) * w;
          }
        });
        const double f_fwd = gflops(flop, reps, [&] { flt::linear_forward<float>(x, w, b, y); });
        const double e_dx = gflops(flop, reps, [&] { dx.noalias() += dy * w.transpose(); });
        const double e_dw = gflops(flop, reps, [&] {
          for (int c0 = 0; c0 < out; c0 += 64) dw.middleCols(c0, 64).noalias() += x.transpose() * dy.middleCols(c0, 64);
        });
        // linear_backward always computes dW (and db); its dx time is the difference.
        const double f_dw = gflops(flop, reps, [&] { flt::linear_backward<float>(x, w, dy, none, dw, db); });
        const double f_both = gflops(2 * flop, reps, [&] { flt::linear_backward<float>(x, w, dy, dx, dw, db); });
        const double f_dx = flop / (2 * flop / f_both - flop / f_dw);
        std::printf("| %d | %d | %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f |\n", n, in, out, e_fwd, f_fwd, e_dx,
                    f_dx, e_dw, f_dw);
      }
  flt_bench::fma_peak_gflops(1);  // warm-up (clock ramp)
  std::printf("\nGFLOP/s, one thread, %d repetitions each; float32 FMA peak of one thread measured in "
              "the same run (%s): %.1f GFLOP/s; kernel %s\n", reps, flt_bench::peak_description().c_str(),
              flt_bench::fma_peak_gflops(1), flt::gemm::isa_name(flt::gemm::active_isa()));
  return 0;
}
