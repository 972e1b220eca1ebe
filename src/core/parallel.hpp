// Deterministic OpenMP helpers. Work is cut into chunks whose boundaries depend only on the problem
// size (never on the thread count); each chunk is processed by exactly one thread, and any
// reduction across chunks is summed serially in chunk order afterwards. Hence a kernel built on
// these helpers gives bitwise-identical results for any number of threads.
//
// Nested use: when called from inside another parallel region OpenMP runs the inner loop on one
// thread (nesting is off by default); the result is the same.
#pragma once

#include "core/tensor.hpp"

#include <algorithm>

namespace flt {

// Rows per chunk for row-parallel kernels and for per-chunk partial parameter-gradient sums.
inline constexpr Index kRowChunk = 256;
// Elements per chunk for flat-buffer reductions (gradient norm).
inline constexpr Index kFlatChunk = 1 << 14;

// Number of chunks of `chunk` items covering n items (0 when n == 0).
inline Index chunk_count(Index n, Index chunk) noexcept { return n <= 0 ? 0 : (n + chunk - 1) / chunk; }

// Calls f(chunk_index, begin, end) for every chunk [begin, end) of [0, n), in parallel over chunks.
// f must not throw (an exception cannot leave an OpenMP region): validate arguments before.
template <class F>
void parallel_chunks(Index n, Index chunk, F&& f) {
  const Index chunks = chunk_count(n, chunk);
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (Index c = 0; c < chunks; ++c) f(c, c * chunk, std::min(n, (c + 1) * chunk));
}

}  // namespace flt
