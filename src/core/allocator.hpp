// Process-wide allocator settings for batched model evaluation.
//
// Every batch allocates its activations afresh (N x D matrices of a few hundred KiB for a batch
// of 64 QM9 molecules), and their sizes change from batch to batch. glibc serves blocks above
// its mmap threshold with mmap and returns memory above its trim threshold to the kernel when
// it is freed, so each batch paid for fresh zeroed pages (a large share of `flt predict`'s time:
// docs/core.md, "Allocator"). Raising both thresholds keeps freed blocks in the heap for the next
// batch.
//
// A library must not change process-wide state behind its caller's back, so nothing in flt calls
// this on its own: programs call it once at start-up (the flt command and the benchmarks do).
// Library users who evaluate models batch after batch can do the same, or set the equivalent
// GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...:glibc.malloc.trim_threshold=... .
#pragma once

#include <cstddef>

namespace flt {

// The thresholds set by tune_allocator_for_batches (bytes).
inline constexpr std::size_t kBatchMmapThreshold = std::size_t{32} << 20;    // 32 MiB
inline constexpr std::size_t kBatchTrimThreshold = std::size_t{512} << 20;   // 512 MiB

// Sets glibc's M_MMAP_THRESHOLD and M_TRIM_THRESHOLD to the values above. Returns false (and
// changes nothing) where the C library is not glibc or refuses a setting.
bool tune_allocator_for_batches() noexcept;

}  // namespace flt
