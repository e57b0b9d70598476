// ThreadPool: a fixed set of threads that run one data-parallel job at a time with low wake-up
// latency. Built for the kernels: a decode step issues hundreds of short parallel matmuls, so
// idle workers spin briefly before they sleep, and the calling thread takes a share of the work.
#ifndef CRESCENT_SRC_COMMON_THREAD_POOL_H_
#define CRESCENT_SRC_COMMON_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
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
  // when all calls have returned. Shares are claimed dynamically: the caller takes shares too,
  // and any share a worker has not claimed by then (e.g. because it is descheduled on an
  // oversubscribed machine) runs on the caller, so Run() never waits for a thread that has
  // not started — only for shares already running. A share never runs on two threads at
  // once, so per-share scratch indexed by `share` is safe. Thread-safe: concurrent callers
  // are serialized. REQUIRES: fn does not call Run() on this pool.
  void Run(const std::function<void(int thread_index, int num_threads)>& fn);

  // Splits [0, n) into chunks of at least `grain` items, handed out dynamically, and calls
  // fn(begin, end) for each. Returns when all are done. Same thread-safety as Run().
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // Threads to use by default: CRESCENT_THREADS if set, else the CPUs this process may run on.
  static int DefaultThreadCount();

 private:
  void WorkerLoop(int index);

  const int num_threads_;
  std::vector<std::thread> workers_;

  std::mutex run_mu_;  // serializes Run() callers.
  // The job in progress: valid while open_ is true or a worker counted in active_ runs it.
  std::atomic<const std::function<void(int, int)>*> job_{nullptr};
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> next_share_{0};  // next share index to claim
  std::atomic<bool> open_{false};   // the job still accepts workers
  std::atomic<int> active_{0};      // workers that joined the job and have not left it
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};

  std::mutex sleep_mu_;
  std::condition_variable sleep_cv_;
};

}  // namespace crescent

#endif  // CRESCENT_SRC_COMMON_THREAD_POOL_H_
