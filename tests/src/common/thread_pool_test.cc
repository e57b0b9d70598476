#include "src/common/thread_pool.h"

#include <atomic>
#include <cstdint>
#include <numeric>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace crescent {
namespace {

TEST(ThreadPoolTest, RunCallsEveryThreadOnce) {
  for (int n : {1, 2, 4}) {
    ThreadPool pool(n);
    std::vector<std::atomic<int>> calls(n);
    for (int iter = 0; iter < 200; ++iter) {
      pool.Run([&](int index, int count) {
        ASSERT_EQ(count, n);
        calls[index].fetch_add(1);
      });
    }
    for (int i = 0; i < n; ++i) EXPECT_EQ(calls[i].load(), 200) << "thread " << i;
  }
}

TEST(ThreadPoolTest, CallerRunsShareZero) {
  ThreadPool pool(3);
  const std::thread::id caller = std::this_thread::get_id();
  for (int iter = 0; iter < 100; ++iter) {
    std::thread::id ran_on;
    pool.Run([&](int share, int) {
      if (share == 0) ran_on = std::this_thread::get_id();
    });
    ASSERT_EQ(ran_on, caller) << "iteration " << iter;
  }
}

// Plain (non-atomic) writes of every share are visible to the caller once Run() returns, and
// the next Run() may overwrite them: TSan checks the hand-offs in both directions.
TEST(ThreadPoolTest, SharesHandOffPlainMemory) {
  ThreadPool pool(2);
  std::vector<int64_t> out(2, 0);
  int64_t expected = 0;
  for (int iter = 1; iter <= 5000; ++iter) {
    pool.Run([&](int share, int) { out[share] += iter; });
    expected += iter;
    ASSERT_EQ(out[0], expected);
    ASSERT_EQ(out[1], expected);
  }
}

TEST(ThreadPoolTest, ParallelForCoversRangeExactlyOnce) {
  ThreadPool pool(3);
  for (int64_t n : {0, 1, 7, 1000, 12345}) {
    std::vector<std::atomic<int>> hits(n);
    pool.ParallelFor(n, 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << i;
  }
}

TEST(ThreadPoolTest, WakesAfterSleeping) {
  ThreadPool pool(2);
  std::atomic<int> sum{0};
  pool.Run([&](int, int) { sum.fetch_add(1); });
  // Long enough for the worker to stop spinning and block.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  pool.Run([&](int, int) { sum.fetch_add(1); });
  EXPECT_EQ(sum.load(), 4);
}

TEST(ThreadPoolTest, ConcurrentCallersAreSerialized) {
  ThreadPool pool(2);
  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 3; ++c) {
    callers.emplace_back([&] {
      for (int i = 0; i < 100; ++i) {
        pool.ParallelFor(100, 10, [&](int64_t b, int64_t e) { total.fetch_add(e - b); });
      }
    });
  }
  for (auto& t : callers) t.join();
  EXPECT_EQ(total.load(), 3 * 100 * 100);
}

}  // namespace
}  // namespace crescent

namespace crescent {
namespace {

// Far more threads than cores: workers are often descheduled, and the caller must pick up
// their shares instead of waiting for them. Every share still runs exactly once per Run().
TEST(ThreadPoolTest, OversubscribedPoolRunsEveryShareOnce) {
  ThreadPool pool(8);
  std::vector<std::atomic<int>> calls(8);
  std::atomic<int> overlap{0};
  std::vector<std::atomic<int>> running(8);
  for (int iter = 0; iter < 2000; ++iter) {
    pool.Run([&](int share, int n) {
      ASSERT_EQ(n, 8);
      if (running[share].fetch_add(1) != 0) overlap.fetch_add(1);
      calls[share].fetch_add(1);
      running[share].fetch_sub(1);
    });
  }
  for (int i = 0; i < 8; ++i) EXPECT_EQ(calls[i].load(), 2000) << "share " << i;
  EXPECT_EQ(overlap.load(), 0) << "a share ran on two threads at once";
}

// PrefetchAfterNextRun's ranges are hints: workers prefetch them, never read them, so even
// addresses that map nothing are harmless, and rewriting hints while workers consume them is
// not a data race (TSan). Out-of-range workers and counts are ignored.
TEST(ThreadPoolTest, PrefetchHintsAreNeverDereferenced) {
  for (int n : {1, 2, 3}) {
    ThreadPool pool(n);
    std::vector<char> real(1 << 16, 1);
    ThreadPool::ByteRange ranges[ThreadPool::kMaxPrefetchRanges + 4];
    for (int r = 0; r < ThreadPool::kMaxPrefetchRanges + 4; ++r) {
      // Alternately a real buffer and the first page, which is never mapped.
      ranges[r] = r % 2 == 0
                      ? ThreadPool::ByteRange{real.data(), real.size()}
                      : ThreadPool::ByteRange{reinterpret_cast<const void*>(uintptr_t{64}), 4096};
    }
    std::vector<int64_t> out(n, 0);
    int64_t expected = 0;
    for (int iter = 1; iter <= 500; ++iter) {
      for (int w = -1; w <= n; ++w) {
        pool.PrefetchAfterNextRun(w, ranges,
                                  iter % 3 == 0 ? ThreadPool::kMaxPrefetchRanges + 4 : iter % 3);
      }
      pool.Run([&](int share, int) { out[share] += iter; });
      expected += iter;
      for (int i = 0; i < n; ++i) ASSERT_EQ(out[i], expected) << "share " << i << " of " << n;
    }
  }
}

}  // namespace
}  // namespace crescent
