// DRAM bandwidth as the CPU benchmarks (model_bench, kernels_bench) state their bounds: measured
// on the threads that run the model, over buffers far larger than the last-level cache.
#ifndef CRESCENT_BENCH_COMMON_BANDWIDTH_H_
#define CRESCENT_BENCH_COMMON_BANDWIDTH_H_

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "src/common/thread_pool.h"

namespace crescent::bench {

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};
using PageBuffer = std::unique_ptr<uint8_t[], FreeDeleter>;

// `bytes` of 4 KiB-aligned memory filled with `value`, advised to use transparent huge pages
// (as the model's weights are), each page first touched by one of the pool's threads (first
// touch places pages near the threads that will read them).
PageBuffer AllocateTouched(ThreadPool* pool, size_t bytes, int value);

// GB/s over the passes of one test: the fastest pass and the middle one. On a shared machine the
// best pass is the closest to the uncontended figure; the median shows the interference.
struct Rate {
  double best = 0;
  double median = 0;
};

struct DramBandwidth {
  // STREAM copy: memcpy of one buffer onto another, bytes read + bytes written per second.
  Rate copy;
  // Bytes read per second by a summing loop in which each thread walks its share as 8
  // interleaved sequential streams with software prefetch: one stream per core reaches only
  // about half of this on many machines, because each stream feeds one hardware prefetcher.
  // This is the most a decode step, which only reads its weights, can draw.
  Rate read;
};

// Both tests over two buffers of `bytes` each, allocated and first touched by the pool's threads
// once, so that the bandwidth can be measured again and again around other work (model_bench
// measures it right before and after each batch-1 run). Thread-compatible. REQUIRES: bytes >=
// 1 MiB; `pool` outlives the probe.
class DramProbe {
 public:
  DramProbe(ThreadPool* pool, size_t bytes);

  // `passes` passes of each test. REQUIRES: passes >= 1.
  DramBandwidth Measure(int passes);

 private:
  ThreadPool* pool_;
  size_t bytes_;
  PageBuffer a_, b_;
};

// DramProbe(pool, bytes).Measure(passes).
DramBandwidth MeasureDramBandwidth(ThreadPool* pool, size_t bytes, int passes);

}  // namespace crescent::bench

#endif  // CRESCENT_BENCH_COMMON_BANDWIDTH_H_
