#include "kvstore/tier/tier_copy.h"

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/tier/block_codec.h"
#include "kvstore/tier/dram_tier.h"
#include "kvstore/tier/fault_tier.h"
#include "kvstore/tier/ssd_tier.h"
#include "src/common/hash.h"
#include "tests/kvstore/tier/temp_dir.h"

namespace crescent::kvstore {
namespace {

using ::testing::HasSubstr;

std::vector<uint8_t> Payload(size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937_64 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

class TierCopyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dram = CreateDramTier(1 << 20, 64);
    ASSERT_TRUE(dram.ok());
    dram_ = std::move(*dram);
    SsdTierOptions o;
    o.path = dir_.File("ssd.seg");
    o.capacity = 4 << 20;
    auto ssd = OpenSsdTier(o);
    ASSERT_TRUE(ssd.ok()) << ssd.status();
    ssd_ = std::move(*ssd);
  }

  TempDir dir_;
  std::unique_ptr<StorageTier> dram_;
  std::unique_ptr<SsdTier> ssd_;
};

TEST_F(TierCopyTest, FootprintsFollowTheFormat) {
  EXPECT_EQ(BlockFootprint(*ssd_, BlockFormat::kFramed, 65536), 65536u + 4096);
  EXPECT_EQ(BlockFootprint(*ssd_, BlockFormat::kFramed, 100), 8192u);
  EXPECT_EQ(BlockFootprint(*dram_, BlockFormat::kRaw, 100), 128u);
  EXPECT_EQ(BlockFootprint(*dram_, BlockFormat::kFramed, 100), 192u);
}

TEST_F(TierCopyTest, FramedBlocksRoundTripOnSsd) {
  for (size_t n : {1, 4096, 5000, 65536}) {
    const auto payload = Payload(n, n);
    ASSERT_TRUE(WriteFramedBlock(*ssd_, 8192, n, payload).ok());
    std::vector<uint8_t> out(n);
    ASSERT_TRUE(ReadFramedBlock(*ssd_, 8192, n, out, BlockChecksum(payload)).ok());
    EXPECT_EQ(out, payload);
  }
}

TEST_F(TierCopyTest, ReadFramedBlockRejectsWrongLengthKeyAndChecksum) {
  const auto payload = Payload(3000, 1);
  ASSERT_TRUE(WriteFramedBlock(*ssd_, 0, 11, payload).ok());
  std::vector<uint8_t> out(3000);
  EXPECT_EQ(ReadFramedBlock(*ssd_, 0, 12, out).code(), absl::StatusCode::kDataLoss);
  std::vector<uint8_t> shorter(2999);
  absl::Status s = ReadFramedBlock(*ssd_, 0, 11, shorter);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr("stored length 3000"));
  s = ReadFramedBlock(*ssd_, 0, 11, out, BlockChecksum(payload) + 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  // Never-written space is a miss, not zeros handed on.
  s = ReadFramedBlock(*ssd_, 1 << 20, 11, out);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
}

TEST_F(TierCopyTest, DemoteThenPromoteLikeTheMastersMoveTasks) {
  const auto payload = Payload(10000, 2);  // Not a multiple of either alignment.
  const uint64_t key = 0xfeedface;
  const uint64_t checksum = Hash64(payload.data(), payload.size());
  std::vector<uint8_t> padded(BlockFootprint(*dram_, BlockFormat::kRaw, payload.size()), 0);
  std::memcpy(padded.data(), payload.data(), payload.size());
  ASSERT_TRUE(dram_->Write(640, padded).ok());
  // Demote: raw DRAM -> framed SSD.
  auto demoted =
      CopyBlock({dram_.get(), 640, BlockFormat::kRaw}, {ssd_.get(), 4096 * 3, BlockFormat::kFramed},
                {key, payload.size(), checksum});
  ASSERT_TRUE(demoted.ok()) << demoted.status();
  EXPECT_EQ(*demoted, checksum);
  std::vector<uint8_t> out(payload.size());
  ASSERT_TRUE(ReadFramedBlock(*ssd_, 4096 * 3, key, out, checksum).ok());
  EXPECT_EQ(out, payload);
  // Promote: framed SSD -> raw DRAM elsewhere.
  auto promoted =
      CopyBlock({ssd_.get(), 4096 * 3, BlockFormat::kFramed},
                {dram_.get(), 65536, BlockFormat::kRaw}, {key, payload.size(), checksum});
  ASSERT_TRUE(promoted.ok()) << promoted.status();
  std::vector<uint8_t> back(padded.size(), 0xee);
  ASSERT_TRUE(dram_->Read(65536, back).ok());
  EXPECT_EQ(back, padded);  // Payload, then zero padding to the alignment.
}

TEST_F(TierCopyTest, CorruptSourceIsDataLossAndTheDestinationIsUntouched) {
  const auto payload = Payload(4096, 3);
  const uint64_t checksum = BlockChecksum(payload);
  ASSERT_TRUE(WriteFramedBlock(*ssd_, 0, 5, payload).ok());
  // Flip one payload bit on the medium, behind the tier's back, through a second handle.
  {
    SsdTierOptions o;
    o.path = ssd_->path();
    o.capacity = ssd_->capacity();
    o.truncate = false;
    auto raw = OpenSsdTier(o);
    ASSERT_TRUE(raw.ok());
    std::vector<uint8_t> block(8192);
    ASSERT_TRUE((*raw)->Read(0, block).ok());
    block[4096 + 100] ^= 0x04;
    ASSERT_TRUE((*raw)->Write(0, block).ok());
  }
  std::vector<uint8_t> sentinel(4096, 0x77);
  ASSERT_TRUE(dram_->Write(0, sentinel).ok());
  auto promoted = CopyBlock({ssd_.get(), 0, BlockFormat::kFramed},
                            {dram_.get(), 0, BlockFormat::kRaw}, {5, payload.size(), checksum});
  ASSERT_EQ(promoted.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(promoted.status().message()), HasSubstr("checksum mismatch"));
  std::vector<uint8_t> out(4096);
  ASSERT_TRUE(dram_->Read(0, out).ok());
  EXPECT_EQ(out, sentinel);
}

TEST_F(TierCopyTest, RawSourceIsCheckedAgainstTheGivenChecksum) {
  const auto payload = Payload(256, 4);
  ASSERT_TRUE(dram_->Write(0, payload).ok());
  auto copied =
      CopyBlock({dram_.get(), 0, BlockFormat::kRaw}, {ssd_.get(), 0, BlockFormat::kFramed},
                {9, payload.size(), BlockChecksum(payload) ^ 1});
  EXPECT_EQ(copied.status().code(), absl::StatusCode::kDataLoss);
  std::vector<uint8_t> out(256);
  EXPECT_EQ(ReadFramedBlock(*ssd_, 0, 9, out).code(), absl::StatusCode::kDataLoss);
}

TEST_F(TierCopyTest, CorruptionInjectedOnReadIsCaught) {
  FaultTierOptions fo;
  fo.corrupt_read_probability = 1.0;
  auto ssd_for_fault = OpenSsdTier({.path = dir_.File("f.seg"), .capacity = 1 << 20});
  ASSERT_TRUE(ssd_for_fault.ok());
  FaultTier faulty(std::move(*ssd_for_fault), fo);
  const auto payload = Payload(20000, 5);
  ASSERT_TRUE(WriteFramedBlock(faulty, 0, 3, payload).ok());  // Writes are not corrupted.
  std::vector<uint8_t> out(payload.size());
  int caught = 0;
  for (int i = 0; i < 20; ++i)
    caught += ReadFramedBlock(faulty, 0, 3, out).code() == absl::StatusCode::kDataLoss;
  // A flipped byte in zero padding goes unnoticed; in header or payload it must be caught.
  EXPECT_GT(caught, 10);
  faulty.SetOptions({});
  EXPECT_TRUE(ReadFramedBlock(faulty, 0, 3, out).ok());
  EXPECT_EQ(out, payload);
}

TEST_F(TierCopyTest, IoErrorsPropagate) {
  FaultTierOptions fo;
  fo.fail_after = 0;
  auto inner = CreateDramTier(1 << 16, 64);
  ASSERT_TRUE(inner.ok());
  FaultTier dead(std::move(*inner), fo);
  const auto payload = Payload(64, 6);
  ASSERT_TRUE(dram_->Write(0, payload).ok());
  auto copied = CopyBlock({dram_.get(), 0, BlockFormat::kRaw}, {&dead, 0, BlockFormat::kFramed},
                          {1, payload.size(), std::nullopt});
  EXPECT_EQ(copied.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(CopyBlock({nullptr, 0, BlockFormat::kRaw}, {&dead, 0, BlockFormat::kRaw}, {1, 1, {}})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace crescent::kvstore
