// The float32 FMA peak of this machine, measured: per thread 12 independent 8-wide FMA chains
// (latency 4, 2 FMA pipes on Zen 3/4 need >= 8 in flight). Benchmarks print it in the same run
// as their kernels so that fractions of peak compare like with like. Header-only, for tools/bench.
#pragma once

#include <chrono>
#include <iostream>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace flt_bench {

// GFLOP/s of `threads` OpenMP threads each running the chains for `iters` iterations.
inline double fma_peak_gflops(int threads, long iters = 40'000'000) {
  double sink = 0.0;
  const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
  {
#if defined(__AVX2__) && defined(__FMA__)
    __m256 acc[12];
    for (int k = 0; k < 12; ++k) acc[k] = _mm256_set1_ps(static_cast<float>(k) * 1e-3f);
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (long i = 0; i < iters; ++i) {
      for (int k = 0; k < 12; ++k) acc[k] = _mm256_fmadd_ps(acc[k], a, b);
    }
    float lanes[8];
    __m256 total = acc[0];
    for (int k = 1; k < 12; ++k) total = _mm256_add_ps(total, acc[k]);
    _mm256_storeu_ps(lanes, total);
    for (float v : lanes) sink += v;
#else
    float acc[96];
    for (int k = 0; k < 96; ++k) acc[k] = static_cast<float>(k) * 1e-3f;
    for (long i = 0; i < iters; ++i)
      for (int k = 0; k < 96; ++k) acc[k] = acc[k] * 0.999999f + 1e-7f;
    for (float v : acc) sink += v;
#endif
  }
  const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (sink == 12345.0) std::cerr << "";  // keep the loop alive
  return static_cast<double>(threads) * static_cast<double>(iters) * 12.0 * 8.0 * 2.0 / t / 1e9;
}

}  // namespace flt_bench
