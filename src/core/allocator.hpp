// Process-wide allocator settings for repeated model evaluation.
//
// Every call allocates its activations afresh: N x D matrices of a few hundred KiB for a batch of
// 64 QM9 molecules, hundreds of MiB for one structure of 1e5 atoms. glibc serves blocks above its
// mmap threshold with mmap (at most 32 MiB, however it is set) and returns memory above its trim
// threshold to the kernel when it is freed, so each batch, training step or MD step paid for fresh
// zeroed pages again: a third of `flt predict`'s time on QM9 batches, more than half of a forward
// and backward pass on 1e5 atoms (docs/core.md, "Allocator"). Serving every block from the heap
// and never trimming it keeps freed blocks for the next call; the process keeps its peak memory,
// which it reached anyway.
//
// A library must not change process-wide state behind its caller's back, so nothing in flt calls
// this on its own: programs call it once at start-up (the flt command and the benchmarks do).
// Library users who evaluate models call after call can do the same, or set the equivalent
// GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=18446744073709551615 (adding
// glibc.malloc.hugetlb=1 also backs the heap with transparent huge pages, which only the
// environment can ask for: fewer faults the first time, docs/core.md).
#pragma once

#include <cstddef>

namespace flt {

// The mmap threshold set by tune_allocator_for_batches (bytes); moot while mmap is off, it is set
// so that glibc stops adjusting it.
inline constexpr std::size_t kBatchMmapThreshold = std::size_t{32} << 20;  // 32 MiB

// Sets glibc's M_MMAP_MAX to 0 (no block is served by mmap), M_TRIM_THRESHOLD to -1 (the heap is
// never trimmed) and M_MMAP_THRESHOLD to the value above. Returns false where the C library is not
// glibc or refuses a setting.
bool tune_allocator_for_batches() noexcept;

}  // namespace flt
