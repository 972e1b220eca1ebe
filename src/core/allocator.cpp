// See allocator.hpp.
#include "core/allocator.hpp"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace flt {

bool tune_allocator_for_batches() noexcept {
#if defined(__GLIBC__)
  // mallopt returns 1 on success. Setting M_MMAP_THRESHOLD also turns off glibc's dynamic
  // adjustment of both thresholds, so the values stay as set.
  const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, static_cast<int>(kBatchMmapThreshold)) == 1;
  const bool trim_ok = mallopt(M_TRIM_THRESHOLD, static_cast<int>(kBatchTrimThreshold)) == 1;
  return mmap_ok && trim_ok;
#else
  return false;
#endif
}

}  // namespace flt
