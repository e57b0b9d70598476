#include "bench/common/bandwidth.h"

#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

namespace crescent::bench {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Rate Summarize(std::vector<double> rates) {
  std::sort(rates.begin(), rates.end());
  return {rates.back(), rates[rates.size() / 2]};
}

constexpr int kStreams = 8;
constexpr size_t kPrefetchBytes = 512;

using U64x2 = uint64_t __attribute__((vector_size(16)));

// Sums [lo, hi) (64-byte aligned bounds) as kStreams interleaved streams.
uint64_t SumStreams(const uint8_t* a, size_t lo, size_t hi) {
  const size_t part = (hi - lo) / kStreams / 64 * 64;
  U64x2 acc[kStreams] = {};
  for (size_t off = 0; off < part; off += 64) {
    for (int k = 0; k < kStreams; ++k) {
      const uint8_t* p = a + lo + k * part + off;
      __builtin_prefetch(p + kPrefetchBytes);
      U64x2 v[4];
      std::memcpy(v, p, 64);
      acc[k] += (v[0] ^ v[1]) + (v[2] ^ v[3]);
    }
  }
  uint64_t total = 0;
  for (size_t i = lo + kStreams * part; i + 8 <= hi; i += 8) {
    uint64_t v;
    std::memcpy(&v, a + i, 8);
    total += v;
  }
  for (const U64x2& v : acc) total += v[0] + v[1];
  return total;
}

}  // namespace

PageBuffer AllocateTouched(ThreadPool* pool, size_t bytes, int value) {
  PageBuffer b(static_cast<uint8_t*>(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096)));
  // The same page size as the model's weights (the CPU backend's copy asks for 2 MiB pages):
  // with 4 KiB pages every 4 KiB read would start with a TLB miss, a nested page walk in a VM,
  // and the bound would be lower than the machine's. Advice only: without THP it stays 4 KiB.
  madvise(b.get(), (bytes + 4095) / 4096 * 4096, MADV_HUGEPAGE);
  pool->ParallelFor(static_cast<int64_t>(bytes), int64_t{1} << 22, [&](int64_t lo, int64_t hi) {
    std::memset(b.get() + lo, value, static_cast<size_t>(hi - lo));
  });
  return b;
}

DramProbe::DramProbe(ThreadPool* pool, size_t bytes)
    : pool_(pool),
      bytes_(bytes / 64 * 64),
      a_(AllocateTouched(pool, bytes_, 1)),
      b_(AllocateTouched(pool, bytes_, 2)) {}

DramBandwidth MeasureDramBandwidth(ThreadPool* pool, size_t bytes, int passes) {
  return DramProbe(pool, bytes).Measure(passes);
}

DramBandwidth DramProbe::Measure(int passes) {
  ThreadPool* pool = pool_;
  const size_t bytes = bytes_;
  uint8_t* a = a_.get();
  uint8_t* b = b_.get();
  const int nt = pool->num_threads();
  auto share = [&](int t) {
    const size_t lo = bytes / nt * t / 64 * 64;
    const size_t hi = t == nt - 1 ? bytes : bytes / nt * (t + 1) / 64 * 64;
    return std::pair(lo, hi);
  };
  DramBandwidth out;
  std::vector<double> rates;
  for (int pass = 0; pass < passes; ++pass) {
    const double t0 = Now();
    pool->Run([&](int t, int) {
      const auto [lo, hi] = share(t);
      std::memcpy(b + lo, a + lo, hi - lo);
    });
    rates.push_back(2.0 * static_cast<double>(bytes) / (Now() - t0) / 1e9);
  }
  out.copy = Summarize(std::move(rates));
  rates.clear();
  std::vector<uint64_t> sink(static_cast<size_t>(nt) * 8);  // one cache line per thread
  for (int pass = 0; pass < passes; ++pass) {
    const double t0 = Now();
    pool->Run([&](int t, int) {
      const auto [lo, hi] = share(t);
      sink[static_cast<size_t>(t) * 8] += SumStreams(a, lo, hi);
    });
    rates.push_back(static_cast<double>(bytes) / (Now() - t0) / 1e9);
  }
  out.read = Summarize(std::move(rates));
  // Keeps the sums alive: the loops must not be optimized away.
  volatile uint64_t keep = 0;
  for (uint64_t v : sink) keep = keep + v;
  return out;
}

}  // namespace crescent::bench
