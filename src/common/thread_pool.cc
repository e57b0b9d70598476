#include "src/common/thread_pool.h"

#include <sched.h>

#include <algorithm>
#include <cstdlib>

#if defined(__x86_64__)
#include <immintrin.h>
#define CRESCENT_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CRESCENT_CPU_RELAX() asm volatile("yield")
#else
#define CRESCENT_CPU_RELAX() std::this_thread::yield()
#endif

namespace crescent {
namespace {
// About a millisecond of pause instructions: long enough to bridge the gaps between the
// matmuls of one forward pass, short enough not to burn a core between requests.
constexpr int kSpinIterations = 1 << 14;
}  // namespace

ThreadPool::ThreadPool(int num_threads)
    : num_threads_(num_threads < 1 ? 1 : num_threads),
      shares_(std::make_unique<ShareState[]>(num_threads_)) {
  workers_.reserve(num_threads_ - 1);
  for (int i = 1; i < num_threads_; ++i) {
    workers_.emplace_back([this, i] { WorkerLoop(i); });
  }
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_seq_cst);
  generation_.fetch_add(1, std::memory_order_seq_cst);
  {
    std::lock_guard<std::mutex> lock(sleep_mu_);
    sleep_cv_.notify_all();
  }
  for (auto& t : workers_) t.join();
}

void ThreadPool::WorkerLoop(int index) {
  ShareState& mine = shares_[index];
  uint64_t seen = 0;
  for (;;) {
    uint64_t gen;
    int spins = 0;
    while ((gen = generation_.load(std::memory_order_acquire)) == seen) {
      if (++spins < kSpinIterations) {
        CRESCENT_CPU_RELAX();
        continue;
      }
      std::unique_lock<std::mutex> lock(sleep_mu_);
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      sleep_cv_.wait(lock, [&] { return generation_.load(std::memory_order_seq_cst) != seen; });
      sleepers_.fetch_sub(1, std::memory_order_seq_cst);
      spins = 0;
    }
    seen = gen;
    if (stop_.load(std::memory_order_acquire)) return;
    // Claim this generation's share unless the caller already has. A worker that wakes late,
    // after its job ended, finds `claimed` at or past gen (Run() does not return before every
    // share is claimed) and leaves it; once the claim succeeds, Run() waits for `done`, so job_
    // still holds this generation's job.
    uint64_t claimed = mine.claimed.load(std::memory_order_relaxed);
    if (claimed < gen && mine.claimed.compare_exchange_strong(
                             claimed, gen, std::memory_order_acq_rel, std::memory_order_relaxed)) {
      (*job_.load(std::memory_order_acquire))(index, num_threads_);
      mine.done.store(gen, std::memory_order_release);
      // The caller's hint for after this share (PrefetchAfterNextRun), consumed once.
      const int n = mine.prefetch_count.exchange(0, std::memory_order_relaxed);
      for (int r = 0; r < n; ++r) {
        const char* p =
            static_cast<const char*>(mine.prefetch_data[r].load(std::memory_order_relaxed));
        const size_t bytes = mine.prefetch_bytes[r].load(std::memory_order_relaxed);
        for (size_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off);
      }
    }
  }
}

void ThreadPool::Run(const std::function<void(int, int)>& fn) {
  if (num_threads_ == 1) {
    fn(0, 1);
    return;
  }
  std::lock_guard<std::mutex> run_lock(run_mu_);
  job_.store(&fn, std::memory_order_release);
  const uint64_t gen = generation_.load(std::memory_order_relaxed) + 1;
  generation_.store(gen, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(sleep_mu_);
    sleep_cv_.notify_all();
  }
  fn(0, num_threads_);
  for (int i = 1; i < num_threads_; ++i) {
    ShareState& share = shares_[i];
    uint64_t claimed = share.claimed.load(std::memory_order_acquire);
    if (claimed < gen && share.claimed.compare_exchange_strong(
                             claimed, gen, std::memory_order_acq_rel, std::memory_order_acquire)) {
      fn(i, num_threads_);  // its worker has not started: run it here.
      continue;
    }
    int spins = 0;
    while (share.done.load(std::memory_order_acquire) != gen) {
      if (++spins < kSpinIterations) {
        CRESCENT_CPU_RELAX();
      } else {
        std::this_thread::yield();
      }
    }
  }
}

void ThreadPool::PrefetchAfterNextRun(int worker, const ByteRange* ranges, int count) {
  if (worker < 1 || worker >= num_threads_) return;
  ShareState& share = shares_[worker];
  count = std::min(count, kMaxPrefetchRanges);
  for (int r = 0; r < count; ++r) {
    share.prefetch_data[r].store(ranges[r].data, std::memory_order_relaxed);
    share.prefetch_bytes[r].store(ranges[r].bytes, std::memory_order_relaxed);
  }
  share.prefetch_count.store(std::max(count, 0), std::memory_order_relaxed);
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  if (num_threads_ == 1 || n <= grain) {
    fn(0, n);
    return;
  }
  std::atomic<int64_t> next{0};
  Run([&](int, int) {
    for (;;) {
      int64_t begin = next.fetch_add(grain, std::memory_order_relaxed);
      if (begin >= n) return;
      fn(begin, begin + grain < n ? begin + grain : n);
    }
  });
}

int ThreadPool::DefaultThreadCount() {
  if (const char* env = std::getenv("CRESCENT_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

}  // namespace crescent
