// Private to kernels/cpu: a resumable walk that prefetches byte ranges a few cache lines at a
// time, for data a thread will read after the work it spreads the requests over (the K/V ride-
// along of a batch-1 matmul, the next attention item's K/V). Not part of the library's API.
#ifndef CRESCENT_KERNELS_CPU_INTERNAL_PREFETCH_WALK_H_
#define CRESCENT_KERNELS_CPU_INTERNAL_PREFETCH_WALK_H_

#include <cstddef>
#include <cstdint>

#include "src/common/thread_pool.h"

namespace crescent::kernels::internal {

// Walks ranges[0, count) front to back. A default-constructed walk has nothing to walk. The
// ranges are only prefetched, never read, and must stay in place (not necessarily alive) while
// the walk uses them.
struct PrefetchWalk {
  const ThreadPool::ByteRange* ranges = nullptr;
  size_t count = 0;
  size_t range = 0;  // where the walk stands: ranges[range], `offset` bytes in
  size_t offset = 0;

  // Prefetches up to `lines` cache lines from where the walk stands, into L2 (T1): the lines
  // are read after other streaming work that would evict them from L1.
  void Prefetch(int64_t lines) {
    while (lines > 0 && range < count) {
      const auto* p = static_cast<const char*>(ranges[range].data);
      const size_t bytes = ranges[range].bytes;
      for (; lines > 0 && offset < bytes; --lines, offset += 64)
        __builtin_prefetch(p + offset, 0, 2);
      if (offset >= bytes) {
        ++range;
        offset = 0;
      }
    }
  }
};

}  // namespace crescent::kernels::internal

#endif  // CRESCENT_KERNELS_CPU_INTERNAL_PREFETCH_WALK_H_
