#include "kvstore/master/allocator.h"

#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace crescent::kvstore::master {
namespace {

TEST(RangeAllocatorTest, AllocatesFirstFitAlignedAndAccountsUsage) {
  RangeAllocator alloc(1000, 64);
  EXPECT_EQ(alloc.capacity(), 960u);  // Rounded down to the alignment.
  auto a = alloc.Allocate(1);
  auto b = alloc.Allocate(65);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, (Extent{0, 64}));
  EXPECT_EQ(*b, (Extent{64, 128}));
  EXPECT_EQ(alloc.used(), 192u);
  EXPECT_EQ(alloc.free_bytes(), 768u);
  EXPECT_EQ(alloc.allocation_count(), 2u);
}

TEST(RangeAllocatorTest, RejectsZeroAndUnknownFrees) {
  RangeAllocator alloc(256, 64);
  EXPECT_EQ(alloc.Allocate(0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(alloc.Free(0).code(), absl::StatusCode::kNotFound);
  auto a = alloc.Allocate(64);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(alloc.Free(32).code(), absl::StatusCode::kNotFound);  // Not an allocation start.
  EXPECT_TRUE(alloc.Free(a->offset).ok());
  EXPECT_EQ(alloc.Free(a->offset).code(), absl::StatusCode::kNotFound);  // Double free.
  EXPECT_EQ(alloc.used(), 0u);
}

TEST(RangeAllocatorTest, ExhaustionIsResourceExhaustedAndRecoversAfterFree) {
  RangeAllocator alloc(256, 64);
  std::vector<Extent> extents;
  for (int i = 0; i < 4; ++i) {
    auto e = alloc.Allocate(64);
    ASSERT_TRUE(e.ok()) << i;
    extents.push_back(*e);
  }
  auto full = alloc.Allocate(1);
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.status().message().find("largest free range 0"), std::string::npos)
      << full.status();
  ASSERT_TRUE(alloc.Free(extents[2].offset).ok());
  auto again = alloc.Allocate(64);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->offset, extents[2].offset);
  // Fragmented free space is not enough for a larger request.
  ASSERT_TRUE(alloc.Free(extents[0].offset).ok());
  ASSERT_TRUE(alloc.Free(extents[2].offset).ok());
  EXPECT_EQ(alloc.free_bytes(), 128u);
  EXPECT_EQ(alloc.Allocate(128).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(alloc.CanAllocate(128));
  EXPECT_TRUE(alloc.CanAllocate(64));
}

TEST(RangeAllocatorTest, FreeCoalescesWithBothNeighbours) {
  RangeAllocator alloc(64 * 5, 64);
  std::vector<uint64_t> offsets;
  for (int i = 0; i < 5; ++i) offsets.push_back(alloc.Allocate(64)->offset);
  ASSERT_TRUE(alloc.Free(offsets[1]).ok());
  ASSERT_TRUE(alloc.Free(offsets[3]).ok());
  EXPECT_EQ(alloc.free_range_count(), 2u);
  ASSERT_TRUE(alloc.Free(offsets[2]).ok());  // Joins [1] and [3] into one range.
  EXPECT_EQ(alloc.free_range_count(), 1u);
  EXPECT_EQ(alloc.LargestFree(), 192u);
  auto big = alloc.Allocate(192);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->offset, offsets[1]);
  ASSERT_TRUE(alloc.Free(big->offset).ok());
  ASSERT_TRUE(alloc.Free(offsets[0]).ok());
  ASSERT_TRUE(alloc.Free(offsets[4]).ok());
  EXPECT_EQ(alloc.free_range_count(), 1u);
  EXPECT_EQ(alloc.LargestFree(), alloc.capacity());
  EXPECT_EQ(alloc.used(), 0u);
}

// Random allocations and frees against a byte map: no two live extents overlap, every extent
// lies inside the capacity, and the allocator's accounting matches the map.
TEST(RangeAllocatorTest, RandomWorkloadNeverOverlaps) {
  constexpr uint64_t kCapacity = 64 * 1024;
  RangeAllocator alloc(kCapacity, 64);
  std::vector<int> owner(kCapacity, -1);
  std::vector<Extent> live;
  std::mt19937_64 rng(1234);
  int next_id = 0;
  for (int step = 0; step < 5000; ++step) {
    if (live.empty() || rng() % 3 != 0) {
      const uint64_t length = 1 + rng() % 2000;
      auto e = alloc.Allocate(length);
      if (!e.ok()) {
        ASSERT_EQ(e.status().code(), absl::StatusCode::kResourceExhausted);
        ASSERT_LT(alloc.LargestFree(), alloc.RoundUp(length));
        continue;
      }
      ASSERT_EQ(e->offset % 64, 0u);
      ASSERT_GE(e->length, length);
      ASSERT_LE(e->offset + e->length, kCapacity);
      for (uint64_t b = e->offset; b < e->offset + e->length; ++b) {
        ASSERT_EQ(owner[b], -1) << "byte " << b << " handed out twice at step " << step;
        owner[b] = next_id;
      }
      ++next_id;
      live.push_back(*e);
    } else {
      const size_t i = rng() % live.size();
      ASSERT_TRUE(alloc.Free(live[i].offset).ok());
      for (uint64_t b = live[i].offset; b < live[i].offset + live[i].length; ++b) owner[b] = -1;
      live[i] = live.back();
      live.pop_back();
    }
    uint64_t used = 0;
    for (const Extent& e : live) used += e.length;
    ASSERT_EQ(alloc.used(), used);
  }
  for (const Extent& e : live) ASSERT_TRUE(alloc.Free(e.offset).ok());
  EXPECT_EQ(alloc.free_range_count(), 1u);
  EXPECT_EQ(alloc.LargestFree(), kCapacity);
}

}  // namespace
}  // namespace crescent::kvstore::master
