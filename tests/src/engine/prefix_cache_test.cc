#include "src/engine/prefix_cache.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace crescent::engine {
namespace {

using ::testing::ElementsAre;

TEST(BlockPoolTest, AllocateAndFreeWithoutHashes) {
  BlockPool pool(3, /*prefix_cache=*/true);
  EXPECT_EQ(pool.num_available(), 3);
  BlockPool::BlockId a = pool.Allocate(), b = pool.Allocate(), c = pool.Allocate();
  EXPECT_EQ(a, 0);
  EXPECT_EQ(b, 1);
  EXPECT_EQ(c, 2);
  EXPECT_EQ(pool.Allocate(), -1);
  EXPECT_EQ(pool.num_available(), 0);
  pool.Unref(b);  // no hash: straight back to free
  EXPECT_EQ(pool.num_free(), 1);
  EXPECT_EQ(pool.num_cached(), 0);
  EXPECT_EQ(pool.Allocate(), b);
}

TEST(BlockPoolTest, RefCountsKeepSharedBlocks) {
  BlockPool pool(2, true);
  BlockPool::BlockId a = pool.Allocate();
  pool.Register(a, 111);
  pool.Ref(a);  // a second sequence shares it
  EXPECT_EQ(pool.RefCount(a), 2);
  pool.Unref(a);
  EXPECT_EQ(pool.RefCount(a), 1);
  EXPECT_FALSE(pool.IsCached(a));
  EXPECT_EQ(pool.num_cached(), 0);
  pool.Unref(a);
  EXPECT_TRUE(pool.IsCached(a));
  EXPECT_EQ(pool.num_cached(), 1);
  EXPECT_EQ(pool.num_available(), 2);
}

TEST(BlockPoolTest, HitRevivesCachedBlock) {
  BlockPool pool(4, true);
  BlockPool::BlockId a = pool.Allocate();
  pool.Register(a, 42);
  pool.Unref(a);
  EXPECT_EQ(pool.Lookup(42), a);
  EXPECT_EQ(pool.Lookup(43), -1);
  pool.Ref(a);  // a hit
  EXPECT_EQ(pool.RefCount(a), 1);
  EXPECT_EQ(pool.num_cached(), 0);
  EXPECT_EQ(pool.num_free(), 3);
  EXPECT_EQ(pool.HashOf(a), 42u);
}

TEST(BlockPoolTest, EvictsLeastRecentlyReleasedOnlyWhenFreeRunsOut) {
  BlockPool pool(4, true);
  std::vector<BlockPool::BlockId> b;
  for (int i = 0; i < 4; ++i) {
    b.push_back(pool.Allocate());
    pool.Register(b[i], 100 + i);
  }
  // Released in the order 2, 0, 3, 1.
  for (int i : {2, 0, 3, 1}) pool.Unref(b[i]);
  EXPECT_THAT(pool.CachedInLruOrder(), ElementsAre(b[2], b[0], b[3], b[1]));
  // A hit on 0 takes it out; released again it becomes the most recent.
  pool.Ref(b[0]);
  pool.Unref(b[0]);
  EXPECT_THAT(pool.CachedInLruOrder(), ElementsAre(b[2], b[3], b[1], b[0]));
  // Allocation under pressure evicts 2, then 3, forgetting their hashes.
  EXPECT_EQ(pool.Allocate(), b[2]);
  EXPECT_EQ(pool.Lookup(102), -1);
  EXPECT_EQ(pool.HashOf(b[2]), 0u);
  EXPECT_EQ(pool.Allocate(), b[3]);
  EXPECT_EQ(pool.Lookup(103), -1);
  EXPECT_EQ(pool.Lookup(101), b[1]);
  EXPECT_EQ(pool.Lookup(100), b[0]);
  EXPECT_EQ(pool.num_cached(), 2);
  // A free block is preferred to evicting a cached one.
  pool.Unref(b[2]);  // no hash any more: free
  EXPECT_EQ(pool.Allocate(), b[2]);
  EXPECT_EQ(pool.num_cached(), 2);
}

TEST(BlockPoolTest, FirstRegistrationOfAHashWins) {
  BlockPool pool(3, true);
  BlockPool::BlockId a = pool.Allocate(), b = pool.Allocate();
  pool.Register(a, 7);
  pool.Register(b, 7);  // same content computed twice: b stays anonymous
  EXPECT_EQ(pool.Lookup(7), a);
  EXPECT_EQ(pool.HashOf(b), 0u);
  pool.Register(a, 8);  // a block keeps its first name
  EXPECT_EQ(pool.Lookup(8), -1);
  pool.Unref(b);
  EXPECT_EQ(pool.num_free(), 2);
}

TEST(BlockPoolTest, MatchPrefixStopsAtFirstMiss) {
  BlockPool pool(4, true);
  for (uint64_t h : {1, 2, 3}) pool.Register(pool.Allocate(), h);
  std::vector<uint64_t> q = {1, 2, 9, 3};
  EXPECT_EQ(pool.MatchPrefix(q), 2);
  std::vector<uint64_t> q2 = {9, 1};
  EXPECT_EQ(pool.MatchPrefix(q2), 0);
}

TEST(BlockPoolTest, DisabledCacheNeverCaches) {
  BlockPool pool(2, /*prefix_cache=*/false);
  BlockPool::BlockId a = pool.Allocate();
  pool.Register(a, 5);
  EXPECT_EQ(pool.Lookup(5), -1);
  pool.Unref(a);
  EXPECT_EQ(pool.num_cached(), 0);
  EXPECT_EQ(pool.num_free(), 2);
}

}  // namespace
}  // namespace crescent::engine
