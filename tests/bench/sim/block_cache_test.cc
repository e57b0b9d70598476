#include "bench/sim/block_cache.h"

#include "gtest/gtest.h"

namespace crescent::bench::sim {
namespace {

TEST(LruBlockCache, EvictsTheLeastRecentlyUsed) {
  LruBlockCache c(3);
  c.Touch(1);
  c.Touch(2);
  c.Touch(3);
  c.Touch(1);  // 2 is now the oldest
  c.Touch(4);
  EXPECT_TRUE(c.Contains(1));
  EXPECT_FALSE(c.Contains(2));
  EXPECT_TRUE(c.Contains(3));
  EXPECT_TRUE(c.Contains(4));
  EXPECT_EQ(c.size(), 3);
  EXPECT_EQ(c.evictions(), 1);
}

TEST(LruBlockCache, TouchingAHeldBlockDoesNotGrowIt) {
  LruBlockCache c(2);
  for (int i = 0; i < 10; ++i) c.Touch(7);
  EXPECT_EQ(c.size(), 1);
  EXPECT_EQ(c.evictions(), 0);
}

TEST(LruBlockCache, ZeroCapacityHoldsNothing) {
  LruBlockCache c(0);
  c.Touch(1);
  EXPECT_FALSE(c.Contains(1));
  EXPECT_EQ(c.size(), 0);
}

}  // namespace
}  // namespace crescent::bench::sim
