#include "src/common/memory_size.h"

#include <limits>

#include "gtest/gtest.h"

namespace crescent {
namespace {

TEST(CheckMemoryMbTest, AcceptsTheClosedRange) {
  EXPECT_TRUE(CheckMemoryMb("--kv-cache-mb", 1, 1).ok());
  EXPECT_TRUE(CheckMemoryMb("--kv-cache-mb", kMaxMemoryMb, 1).ok());
  EXPECT_TRUE(CheckMemoryMb("--pool-dram-mb", 0, 0, "; 0 = none").ok());
}

TEST(CheckMemoryMbTest, RejectsBelowAndAboveNamingFlagRangeAndValue) {
  absl::Status s = CheckMemoryMb("--kv-cache-mb", 0, 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "--kv-cache-mb must be in [1, 16777216] (MiB), got 0");
  s = CheckMemoryMb("--pool-dram-mb", kMaxMemoryMb + 1, 0, "; 0 = none");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "--pool-dram-mb must be in [0, 16777216] (MiB; 0 = none), got 16777217");
  EXPECT_FALSE(CheckMemoryMb("--kv-cache-mb", -5, 1).ok());
  EXPECT_FALSE(CheckMemoryMb("--kv-cache-mb", std::numeric_limits<int64_t>::max(), 1).ok());
}

TEST(CheckMemoryMbTest, TheLargestValueStillFitsInBytes) {
  EXPECT_LT(kMaxMemoryMb, std::numeric_limits<int64_t>::max() >> 20);
}

}  // namespace
}  // namespace crescent
