#include "kvstore/tier/dram_tier.h"

#include <numeric>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace crescent::kvstore {
namespace {

using ::testing::HasSubstr;

TEST(DramTierTest, StartsZeroedAndRoundTrips) {
  auto tier = CreateDramTier(1 << 16);
  ASSERT_TRUE(tier.ok()) << tier.status();
  EXPECT_EQ((*tier)->capacity(), 1u << 16);
  EXPECT_EQ((*tier)->alignment(), 1u);
  EXPECT_EQ((*tier)->name(), "dram");
  std::vector<uint8_t> out(1 << 16, 1);
  ASSERT_TRUE((*tier)->Read(0, out).ok());
  EXPECT_EQ(out, std::vector<uint8_t>(1 << 16, 0));
  for (uint64_t offset : {0, 1, 17, 4095, 60000}) {
    for (size_t len : {1, 3, 100, 5000}) {
      if (offset + len > (1 << 16)) continue;
      std::vector<uint8_t> data(len);
      std::iota(data.begin(), data.end(), static_cast<uint8_t>(offset + len));
      ASSERT_TRUE((*tier)->Write(offset, data).ok());
      std::vector<uint8_t> back(len);
      ASSERT_TRUE((*tier)->Read(offset, back).ok());
      EXPECT_EQ(back, data) << offset << "+" << len;
    }
  }
}

TEST(DramTierTest, BatchesAndEmptyRequests) {
  auto tier = CreateDramTier(4096, 64);
  ASSERT_TRUE(tier.ok());
  std::vector<uint8_t> a(64, 1), b(128, 2);
  std::vector<WriteRequest> writes = {{0, a}, {128, b}, {256, {}}};
  ASSERT_TRUE((*tier)->WriteBatch(writes).ok());
  std::vector<uint8_t> ra(64), rb(128);
  std::vector<ReadRequest> reads = {{128, rb}, {0, ra}};
  ASSERT_TRUE((*tier)->ReadBatch(reads).ok());
  EXPECT_EQ(ra, a);
  EXPECT_EQ(rb, b);
}

TEST(DramTierTest, RejectsMisalignedAndOutOfRange) {
  auto tier = CreateDramTier(4096, 64);
  ASSERT_TRUE(tier.ok());
  std::vector<uint8_t> buf(128);
  absl::Status s = (*tier)->Write(32, {buf.data(), 64});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("offset 32"));
  s = (*tier)->Read(0, {buf.data(), 65});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  s = (*tier)->Read(4096 - 64, buf);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("capacity 4096"));
  s = (*tier)->Read(UINT64_MAX & ~63ull, {buf.data(), 64});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  // The batch is checked before anything is written.
  std::vector<uint8_t> ones(64, 1);
  std::vector<WriteRequest> writes = {{0, ones}, {4096, ones}};
  s = (*tier)->WriteBatch(writes);
  EXPECT_THAT(std::string(s.message()), HasSubstr("request 1"));
  std::vector<uint8_t> out(64, 9);
  ASSERT_TRUE((*tier)->Read(0, out).ok());
  EXPECT_EQ(out, std::vector<uint8_t>(64, 0));
}

TEST(DramTierTest, WrapsExternalMemory) {
  std::vector<uint8_t> region(1024, 7);
  auto tier = WrapDramTier(region.data(), region.size());
  ASSERT_TRUE(tier.ok());
  std::vector<uint8_t> out(16);
  ASSERT_TRUE((*tier)->Read(100, out).ok());
  EXPECT_EQ(out, std::vector<uint8_t>(16, 7));
  std::vector<uint8_t> data(16, 3);
  ASSERT_TRUE((*tier)->Write(1000, data).ok());
  EXPECT_EQ(region[1000], 3);
  EXPECT_EQ(region[1015], 3);
  EXPECT_EQ(region[999], 7);
  tier->reset();
  EXPECT_EQ(region[1000], 3);  // The region outlives the tier, untouched.
}

TEST(DramTierTest, RejectsBadShapes) {
  EXPECT_EQ(CreateDramTier(0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateDramTier(100, 64).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateDramTier(96, 48).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WrapDramTier(nullptr, 64).status().code(), absl::StatusCode::kInvalidArgument);
  uint8_t byte = 0;
  EXPECT_EQ(WrapDramTier(&byte, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace crescent::kvstore
