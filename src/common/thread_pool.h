// ThreadPool: a fixed set of threads that run one data-parallel job at a time with low wake-up
// latency. Built for the kernels: a decode step issues hundreds of short parallel matmuls, so
// idle workers spin briefly before they sleep, and the calling thread takes a share of the work.
#ifndef CRESCENT_SRC_COMMON_THREAD_POOL_H_
#define CRESCENT_SRC_COMMON_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"

namespace crescent {

class ThreadPool {
 public:
  // Creates a pool of `num_threads` threads in all, the caller of Run() counted as one, so
  // ThreadPool(1) runs everything on the calling thread. REQUIRES: num_threads >= 1.
  explicit ThreadPool(int num_threads);
  // Joins the workers. REQUIRES: no Run() in progress.
  ~ThreadPool();

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn(share, num_threads) exactly once for each share in [0, num_threads) and returns
  // when all calls have returned. The calling thread runs share 0, first; share i > 0 is worker
  // i's, but any share a worker has not claimed by the time the caller is done with its own
  // (e.g. because it is descheduled on an oversubscribed machine) runs on the caller, so Run()
  // never waits for a thread that has not started — only for shares already running. A share
  // never runs on two threads at once, so per-share scratch indexed by `share` is safe.
  // Thread-safe: concurrent callers are serialized. REQUIRES: fn does not call Run() on this
  // pool.
  void Run(const std::function<void(int thread_index, int num_threads)>& fn);

  // A byte range for PrefetchAfterNextRun.
  struct ByteRange {
    const void* data = nullptr;
    size_t bytes = 0;
  };
  static constexpr int kMaxPrefetchRanges = 16;

  // A hint for worker `worker` (in [1, num_threads)): right after its share of the next Run()
  // (or the first Run it takes part in), it prefetches `ranges` (at most kMaxPrefetchRanges;
  // more are ignored) into its caches, typically the start of what it will read in the Run
  // after, while the caller is still busy with the serial work between the two. The caller does
  // not wait for it. The ranges are only prefetched, never read, so a stale or wrong range
  // costs time, never correctness. A later call before that Run replaces the hint.
  // Thread-compatible with Run(): call it from the thread that calls Run().
  void PrefetchAfterNextRun(int worker, const ByteRange* ranges, int count);

  // Splits [0, n) into chunks of at least `grain` items, handed out dynamically, and calls
  // fn(begin, end) for each. Returns when all are done. Same thread-safety as Run().
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // Threads to use by default: CRESCENT_THREADS if set, else the CPUs this process may run on.
  static int DefaultThreadCount();

 private:
  // Share i's handshake for the job of generation g: whoever moves `claimed` from below g to
  // g runs the share; the worker then sets `done` to g. Worker i is the only writer of `done`,
  // and the caller writes `claimed` only to take a share its worker has not, so in the usual
  // case each Run moves this line between the two cores once.
  struct alignas(64) ShareState {
    std::atomic<uint64_t> claimed{0};
    std::atomic<uint64_t> done{0};
    // PrefetchAfterNextRun's hint: count, then the ranges. Atomics so that a hint rewritten
    // while the worker reads the previous one is a mixed hint, not a data race.
    std::atomic<int> prefetch_count{0};
    std::atomic<const void*> prefetch_data[kMaxPrefetchRanges] = {};
    std::atomic<size_t> prefetch_bytes[kMaxPrefetchRanges] = {};
  };

  void WorkerLoop(int index);

  const int num_threads_;
  std::vector<std::thread> workers_;
  std::unique_ptr<ShareState[]> shares_;  // [num_threads_]; entry 0 unused.

  std::mutex run_mu_;  // serializes Run() callers.
  // The job's generation, bumped by each Run() (and by the destructor, to stop the workers),
  // and the job: valid from that bump until every share of it is claimed and done. Alone on
  // its cache line, which idle workers spin on.
  alignas(64) std::atomic<uint64_t> generation_{0};
  std::atomic<const std::function<void(int, int)>*> job_{nullptr};
  std::atomic<bool> stop_{false};
  // Rarely written: read by every Run() to see whether a worker needs waking.
  alignas(64) std::atomic<int> sleepers_{0};

  std::mutex sleep_mu_;
  std::condition_variable sleep_cv_;
};

}  // namespace crescent

#endif  // CRESCENT_SRC_COMMON_THREAD_POOL_H_
