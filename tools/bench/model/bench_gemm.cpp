// bench_gemm: throughput of Eigen's float matrix product for the shapes of the molecule model's
// Linear layers (N atom rows of a batch: 580 for training batches of 32 QM9 molecules, 1150 for
// prediction batches of 64; widths 128 and 256), as flt calls it (row-major, single-threaded:
// EIGEN_DONT_PARALLELIZE). Prints GFLOP/s for the forward product y = x W (whole batch and in
// 256-row chunks, as linear_forward runs it), the input gradient dx = dy W^T and the weight
// gradient dW = x^T dy. docs/benchmarks/model_throughput.md quotes it as the practical ceiling of
// the matrix products. Not part of ctest.
//   build-bench-model/tools/bench/model/bench_gemm [repetitions]
#include <Eigen/Dense>

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
  std::printf("| rows N | in | out | y = x W | y = x W (256-row chunks) | dx = dy W^T | dW = x^T dy |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (int n : {580, 1150})
    for (int in : {128, 256})
      for (int out : {128, 256}) {
        const Mat x = Mat::Random(n, in), w = Mat::Random(in, out), dy = Mat::Random(n, out);
        Mat y(n, out), dx(n, in), dw(in, out);
        const double flop = 2.0 * n * in * out;
        const double fwd = gflops(flop, reps, [&] { y.noalias() = x * w; });
        const double chunked = gflops(flop, reps, [&] {
          for (int r0 = 0; r0 < n; r0 += 256) {
            const int rows = std::min(256, n - r0);
            y.middleRows(r0, rows).noalias() = x.middleRows(r0, rows) * w;
          }
        });
        const double bx = gflops(flop, reps, [&] { dx.noalias() = dy * w.transpose(); });
        const double bw = gflops(flop, reps, [&] { dw.noalias() = x.transpose() * dy; });
        std::printf("| %d | %d | %d | %.1f | %.1f | %.1f | %.1f |\n", n, in, out, fwd, chunked, bx, bw);
      }
  std::printf("\nGFLOP/s, one thread, %d repetitions each\n", reps);
  return 0;
}
