#include "kvstore/tier/fault_tier.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/tier/dram_tier.h"

namespace crescent::kvstore {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kSize = 64 * 1024;

std::unique_ptr<FaultTier> Make(const FaultTierOptions& options) {
  auto inner = CreateDramTier(kSize, 64);
  EXPECT_TRUE(inner.ok());
  return std::make_unique<FaultTier>(std::move(*inner), options);
}

size_t CountDifferences(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  size_t n = 0;
  for (size_t i = 0; i < a.size(); ++i) n += a[i] != b[i];
  return n;
}

TEST(FaultTierTest, PassesThroughWithoutFaults) {
  auto tier = Make({});
  EXPECT_EQ(tier->capacity(), kSize);
  EXPECT_EQ(tier->alignment(), 64u);
  EXPECT_EQ(tier->name(), "dram");
  std::vector<uint8_t> data(128, 5), out(128);
  ASSERT_TRUE(tier->Write(64, data).ok());
  ASSERT_TRUE(tier->Read(64, out).ok());
  EXPECT_EQ(out, data);
  EXPECT_EQ(tier->counters().operations, 2u);
  EXPECT_EQ(tier->counters().failed, 0u);
}

TEST(FaultTierTest, FailAfterNFailsEveryLaterOperationWithoutTouchingMemory) {
  FaultTierOptions o;
  o.fail_after = 2;
  auto tier = Make(o);
  std::vector<uint8_t> data(64, 1);
  EXPECT_TRUE(tier->Write(0, data).ok());
  EXPECT_TRUE(tier->Write(64, data).ok());
  std::vector<uint8_t> other(64, 2);
  absl::Status s = tier->Write(0, other);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);  // EIO
  EXPECT_THAT(std::string(s.message()), HasSubstr("injected fault: write of 64 bytes at offset 0"));
  std::vector<uint8_t> out(64);
  EXPECT_FALSE(tier->Read(0, out).ok());
  // The inner tier still holds the first write.
  ASSERT_TRUE(tier->inner()->Read(0, out).ok());
  EXPECT_EQ(out, data);
  EXPECT_EQ(tier->counters().failed, 2u);
  // SetOptions restarts the count.
  tier->SetOptions({});
  EXPECT_TRUE(tier->Read(0, out).ok());
}

TEST(FaultTierTest, FailEveryKthRequestInsideBatches) {
  FaultTierOptions o;
  o.fail_every = 3;
  o.fail_errno = ENOSPC;
  auto tier = Make(o);
  std::vector<std::vector<uint8_t>> datas;
  std::vector<WriteRequest> writes;
  for (int i = 0; i < 6; ++i) {
    datas.emplace_back(64, static_cast<uint8_t>(i + 1));
  }
  for (int i = 0; i < 6; ++i) writes.push_back({static_cast<uint64_t>(i) * 64, datas[i]});
  absl::Status s = tier->WriteBatch(writes);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("request 2"));
  // Requests 2 and 5 (operations 3 and 6) were not performed; the others were.
  for (int i = 0; i < 6; ++i) {
    std::vector<uint8_t> out(64);
    ASSERT_TRUE(tier->inner()->Read(i * 64, out).ok());
    const bool failed = i == 2 || i == 5;
    EXPECT_EQ(out, failed ? std::vector<uint8_t>(64, 0) : datas[i]) << i;
  }
  EXPECT_EQ(tier->counters().failed, 2u);
}

TEST(FaultTierTest, FailuresCanBeLimitedToReads) {
  FaultTierOptions o;
  o.fail_after = 0;
  o.fail_writes = false;
  auto tier = Make(o);
  std::vector<uint8_t> data(64, 1), out(64);
  EXPECT_TRUE(tier->Write(0, data).ok());
  EXPECT_FALSE(tier->Read(0, out).ok());
}

TEST(FaultTierTest, CorruptsReadsButNotTheMedium) {
  FaultTierOptions o;
  o.corrupt_read_probability = 1.0;
  o.corrupt_bytes = 3;
  auto tier = Make(o);
  std::vector<uint8_t> data(4096, 0x5a), out(4096);
  ASSERT_TRUE(tier->Write(0, data).ok());
  ASSERT_TRUE(tier->Read(0, out).ok());
  const size_t diffs = CountDifferences(out, data);
  EXPECT_GE(diffs, 1u);
  EXPECT_LE(diffs, 3u);
  EXPECT_EQ(tier->counters().corrupted_reads, 1u);
  ASSERT_TRUE(tier->inner()->Read(0, out).ok());
  EXPECT_EQ(out, data);
}

TEST(FaultTierTest, CorruptsWritesOnTheMediumWithoutTouchingTheCallersBuffer) {
  FaultTierOptions o;
  o.corrupt_write_probability = 1.0;
  auto tier = Make(o);
  std::vector<uint8_t> data(4096, 0x11);
  const auto original = data;
  ASSERT_TRUE(tier->Write(0, data).ok());
  EXPECT_EQ(data, original);
  std::vector<uint8_t> out(4096);
  ASSERT_TRUE(tier->inner()->Read(0, out).ok());
  EXPECT_EQ(CountDifferences(out, data), 1u);
  EXPECT_EQ(tier->counters().corrupted_writes, 1u);
}

TEST(FaultTierTest, SameSeedSameFaults) {
  FaultTierOptions o;
  o.seed = 77;
  o.fail_probability = 0.3;
  auto run = [&] {
    auto tier = Make(o);
    std::vector<bool> results;
    std::vector<uint8_t> out(64);
    for (int i = 0; i < 50; ++i) results.push_back(tier->Read(0, out).ok());
    return results;
  };
  const auto a = run();
  EXPECT_EQ(a, run());
  const size_t failures = std::count(a.begin(), a.end(), false);
  EXPECT_GT(failures, 0u);
  EXPECT_LT(failures, 50u);
}

TEST(FaultTierTest, DelaysBatches) {
  FaultTierOptions o;
  o.delay_probability = 1.0;
  o.delay = std::chrono::milliseconds(20);
  auto tier = Make(o);
  std::vector<uint8_t> out(64);
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(tier->Read(0, out).ok());
  // A lower bound only: the sleep must have happened (never an upper bound on timing).
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(20));
  EXPECT_EQ(tier->counters().delayed, 1u);
}

TEST(FaultTierTest, ValidationComesBeforeFaults) {
  FaultTierOptions o;
  o.fail_after = 0;
  auto tier = Make(o);
  std::vector<uint8_t> out(10);
  EXPECT_EQ(tier->Read(0, out).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tier->counters().operations, 0u);
}

}  // namespace
}  // namespace crescent::kvstore
