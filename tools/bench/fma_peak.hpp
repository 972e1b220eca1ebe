// The float32 FMA peak of this machine, measured: per thread 12 independent FMA chains of the
// widest vectors the CPU runs (latency 4, 2 FMA pipes need >= 8 in flight) -- 16-float AVX-512
// registers where cpuid has AVX-512F (a Zen 5 core retires two per cycle: twice the AVX2 rate; a
// Zen 4 core splits them in halves: the same rate), else 8-float AVX2. The peak is the machine's,
// not the kernels': a kernel built for AVX2 on an AVX-512 CPU reaches at most half of it there.
// Benchmarks print it in the same run as their kernels so that fractions of peak compare like with
// like. Header-only, for tools/bench; the AVX-512 loop is compiled by a target attribute into the
// x86-64-v3 build and run only where the CPU has it.
#pragma once

#include <chrono>
#include <iostream>
#include <string>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace flt_bench {

enum class PeakIsa { avx512, avx2, scalar };

inline PeakIsa peak_isa() {
#if defined(__AVX2__) && defined(__FMA__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") ? PeakIsa::avx512 : PeakIsa::avx2;
#else
  return PeakIsa::scalar;
#endif
}

// "float32 AVX-512" etc.: what the peak loop ran.
inline std::string peak_description(PeakIsa isa = peak_isa()) {
  switch (isa) {
    case PeakIsa::avx512: return "float32 AVX-512 (16 lanes)";
    case PeakIsa::avx2: return "float32 AVX2 (8 lanes)";
    case PeakIsa::scalar: return "float32 scalar";
  }
  return "float32";
}

namespace detail {

#if defined(__AVX2__) && defined(__FMA__)
// Returns a sum of the lanes (keeps the chains alive).
inline float fma_chains_avx2(long iters) {
  __m256 acc[12];
  for (int k = 0; k < 12; ++k) acc[k] = _mm256_set1_ps(static_cast<float>(k) * 1e-3f);
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (long i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int k = 0; k < 12; ++k) acc[k] = _mm256_fmadd_ps(acc[k], a, b);
  }
  float lanes[8];
  __m256 total = acc[0];
  for (int k = 1; k < 12; ++k) total = _mm256_add_ps(total, acc[k]);
  _mm256_storeu_ps(lanes, total);
  float sum = 0;
  for (float v : lanes) sum += v;
  return sum;
}

__attribute__((target("avx512f"))) inline float fma_chains_avx512(long iters) {
  __m512 acc[12];
  for (int k = 0; k < 12; ++k) acc[k] = _mm512_set1_ps(static_cast<float>(k) * 1e-3f);
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (long i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int k = 0; k < 12; ++k) acc[k] = _mm512_fmadd_ps(acc[k], a, b);
  }
  __m512 total = acc[0];
  for (int k = 1; k < 12; ++k) total = _mm512_add_ps(total, acc[k]);
  float lanes[16];
  _mm512_storeu_ps(lanes, total);
  float sum = 0;
  for (float v : lanes) sum += v;
  return sum;
}
#endif

inline float fma_chains_scalar(long iters) {
  float acc[96];
  for (int k = 0; k < 96; ++k) acc[k] = static_cast<float>(k) * 1e-3f;
  for (long i = 0; i < iters; ++i)
    for (int k = 0; k < 96; ++k) acc[k] = acc[k] * 0.999999f + 1e-7f;
  float sum = 0;
  for (float v : acc) sum += v;
  return sum;
}

}  // namespace detail

// GFLOP/s of `threads` OpenMP threads each running the chains for `iters` iterations, with the
// vectors of `isa` (default: the widest this CPU has).
inline double fma_peak_gflops(int threads, long iters = 40'000'000, PeakIsa isa = peak_isa()) {
  double sink = 0.0;
  const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
  {
#if defined(__AVX2__) && defined(__FMA__)
    if (isa == PeakIsa::avx512) sink += detail::fma_chains_avx512(iters / 2);
    else if (isa == PeakIsa::avx2) sink += detail::fma_chains_avx2(iters);
    else sink += detail::fma_chains_scalar(iters);
#else
    sink += detail::fma_chains_scalar(iters);
#endif
  }
  const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (sink == 12345.0) std::cerr << "";  // keep the loop alive
  // Per iteration and thread: 12 chains x 8 lanes x 2 flops (AVX2 and the scalar loop's 96
  // accumulators); AVX-512 runs half the iterations of 16 lanes, the same flops.
  return static_cast<double>(threads) * static_cast<double>(iters) * 12.0 * 8.0 * 2.0 / t / 1e9;
}

}  // namespace flt_bench
