// See allocator.hpp.
#include "core/allocator.hpp"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace flt {

bool tune_allocator_for_batches() noexcept {
#if defined(__GLIBC__)
  // mallopt returns 1 on success. Setting M_MMAP_THRESHOLD also turns off glibc's dynamic
  // adjustment of both thresholds; a trim threshold of -1 turns trimming off (mallopt(3)).
  const bool threshold_ok = mallopt(M_MMAP_THRESHOLD, static_cast<int>(kBatchMmapThreshold)) == 1;
  const bool mmap_ok = mallopt(M_MMAP_MAX, 0) == 1 && threshold_ok;
  const bool trim_ok = mallopt(M_TRIM_THRESHOLD, -1) == 1;
  return mmap_ok && trim_ok;
#else
  return false;
#endif
}

}  // namespace flt
