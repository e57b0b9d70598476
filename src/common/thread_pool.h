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

  // Calls fn(thread_index, num_threads) once on each of the pool's threads (index 0 is the
  // caller) and returns when all calls have returned. Thread-safe: concurrent callers are
  // serialized. REQUIRES: fn does not call Run() on this pool.
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
  const std::function<void(int, int)>* job_ = nullptr;  // valid while a Run() is in progress.
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};

  std::mutex sleep_mu_;
  std::condition_variable sleep_cv_;
};

}  // namespace crescent

#endif  // CRESCENT_SRC_COMMON_THREAD_POOL_H_
