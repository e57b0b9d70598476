#include "prefill_node/cache_report.h"

#include <cstdint>
#include <map>
#include <span>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace crescent::prefill_node {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

// A fake prefix cache: the set of cached hashes; a chain's prefix is its leading cached run.
struct FakeCache {
  std::map<uint64_t, bool> cached;
  CacheReport::PrefixFn Fn() {
    return [this](std::span<const uint64_t> chain) {
      int64_t n = 0;
      while (n < static_cast<int64_t>(chain.size()) && cached[chain[n]]) ++n;
      return n;
    };
  }
};

TEST(CacheReportTest, ReportsCachedPrefixesAndWhatLeft) {
  FakeCache cache;
  CacheReport report;
  for (uint64_t h : {1, 2, 3, 7}) cache.cached[h] = true;
  report.AddChain({1, 2, 3});
  report.AddChain({1, 2, 7, 8});  // 8 not cached: 1, 2, 7 are
  CacheReport::Delta d = report.Update(cache.Fn());
  EXPECT_THAT(d.cached, ElementsAre(1, 2, 3, 7));
  EXPECT_THAT(d.removed, IsEmpty());

  cache.cached[2] = false;  // evicting 2 cuts both chains after 1
  d = report.Update(cache.Fn());
  EXPECT_THAT(d.cached, ElementsAre(1));
  EXPECT_THAT(d.removed, ElementsAre(2, 3, 7));

  cache.cached[1] = false;
  d = report.Update(cache.Fn());
  EXPECT_THAT(d.cached, IsEmpty());
  EXPECT_THAT(d.removed, ElementsAre(1));
  EXPECT_EQ(report.num_chains(), 0u);  // chains with nothing cached are forgotten
}

TEST(CacheReportTest, DuplicateChainsAndTheCap) {
  FakeCache cache;
  CacheReport report(/*max_chains=*/2);
  for (uint64_t h = 1; h <= 9; ++h) cache.cached[h] = true;
  report.AddChain({1, 2});
  report.AddChain({1, 2});
  EXPECT_EQ(report.num_chains(), 1u);
  report.AddChain({3});
  report.AddChain({4, 5});  // the oldest, {1, 2}, is forgotten
  EXPECT_EQ(report.num_chains(), 2u);
  EXPECT_THAT(report.Update(cache.Fn()).cached, ElementsAre(3, 4, 5));
  report.AddChain({});  // ignored
  EXPECT_EQ(report.num_chains(), 2u);
}

}  // namespace
}  // namespace crescent::prefill_node
