#include "kvstore/tier/block_codec.h"

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/common/hash.h"

namespace crescent::kvstore {
namespace {

using ::testing::HasSubstr;

std::vector<uint8_t> Payload(size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937_64 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

std::vector<uint8_t> Frame(uint64_t key, const std::vector<uint8_t>& payload, uint64_t align) {
  std::vector<uint8_t> frame(EncodedSize(payload.size(), align), 0xaa);
  absl::Status s = EncodeFrame(key, payload, align, frame);
  EXPECT_TRUE(s.ok()) << s;
  return frame;
}

TEST(BlockCodecTest, SizesArePaddedToTheAlignment) {
  EXPECT_EQ(HeaderRegionSize(1), kBlockHeaderSize);
  EXPECT_EQ(HeaderRegionSize(64), 64u);
  EXPECT_EQ(HeaderRegionSize(4096), 4096u);
  EXPECT_EQ(EncodedSize(0, 4096), 4096u);
  EXPECT_EQ(EncodedSize(1, 4096), 8192u);
  EXPECT_EQ(EncodedSize(4096, 4096), 8192u);
  EXPECT_EQ(EncodedSize(4097, 4096), 12288u);
  EXPECT_EQ(EncodedSize(100, 1), 164u);
  EXPECT_EQ(EncodedSize(100, 64), 192u);
}

TEST(BlockCodecTest, RoundTripsAtManySizesAndAlignments) {
  for (uint64_t align : {1, 64, 512, 4096}) {
    for (size_t n : {0, 1, 63, 64, 65, 4095, 4096, 4097, 100000}) {
      const auto payload = Payload(n, n + align);
      const uint64_t key = 0x1234567890abcdefull ^ n;
      const auto frame = Frame(key, payload, align);
      ASSERT_EQ(frame.size() % align, 0u);
      auto verified = Verify(key, frame);
      ASSERT_TRUE(verified.ok()) << verified.status() << " n=" << n << " align=" << align;
      EXPECT_EQ(std::vector<uint8_t>(verified->begin(), verified->end()), payload);
      // Padding is zeroed, never left as whatever the buffer held.
      const uint64_t end = HeaderRegionSize(align) + n;
      for (uint64_t i = end; i < frame.size(); ++i) ASSERT_EQ(frame[i], 0) << i;
      auto header = DecodeHeader(frame);
      ASSERT_TRUE(header.ok());
      EXPECT_EQ(header->key, key);
      EXPECT_EQ(header->payload_length, n);
      EXPECT_EQ(header->payload_offset, HeaderRegionSize(align));
      EXPECT_EQ(header->checksum, Hash64(payload.data(), payload.size()));
    }
  }
}

TEST(BlockCodecTest, ChecksumMatchesTheMastersReplicaChecksum) {
  const auto payload = Payload(5000, 1);
  EXPECT_EQ(BlockChecksum(payload), Hash64(payload.data(), payload.size(), 0));
}

TEST(BlockCodecTest, EveryFlippedPayloadBitIsDetected) {
  const auto payload = Payload(300, 2);
  const uint64_t key = 42;
  auto frame = Frame(key, payload, 64);
  const uint64_t start = HeaderRegionSize(64);
  for (uint64_t byte = start; byte < start + payload.size(); byte += 7) {
    for (int bit = 0; bit < 8; bit += 3) {
      frame[byte] ^= static_cast<uint8_t>(1u << bit);
      auto verified = Verify(key, frame);
      ASSERT_FALSE(verified.ok()) << "byte " << byte << " bit " << bit;
      EXPECT_EQ(verified.status().code(), absl::StatusCode::kDataLoss);
      EXPECT_THAT(std::string(verified.status().message()), HasSubstr("checksum mismatch"));
      EXPECT_THAT(std::string(verified.status().message()), HasSubstr("000000000000002a"));
      frame[byte] ^= static_cast<uint8_t>(1u << bit);
    }
  }
  EXPECT_TRUE(Verify(key, frame).ok());
}

TEST(BlockCodecTest, MismatchMessageNamesExpectedAndActual) {
  const auto payload = Payload(128, 3);
  auto frame = Frame(7, payload, 64);
  frame[64] ^= 1;
  auto verified = Verify(7, frame);
  ASSERT_FALSE(verified.ok());
  const std::string expected = absl::StrFormat("%016x", BlockChecksum(payload));
  std::vector<uint8_t> damaged(frame.begin() + 64, frame.begin() + 64 + 128);
  const std::string actual = absl::StrFormat("%016x", BlockChecksum(damaged));
  EXPECT_THAT(std::string(verified.status().message()),
              HasSubstr("expected " + expected + ", actual " + actual));
}

TEST(BlockCodecTest, EveryFlippedHeaderBitIsDetected) {
  const auto payload = Payload(100, 4);
  auto frame = Frame(9, payload, 64);
  for (uint64_t byte = 0; byte < 48; ++byte) {  // The checked part of the header.
    frame[byte] ^= 0x10;
    auto verified = Verify(9, frame);
    EXPECT_EQ(verified.status().code(), absl::StatusCode::kDataLoss) << "byte " << byte;
    frame[byte] ^= 0x10;
  }
}

TEST(BlockCodecTest, WrongKeyIsDataLoss) {
  auto frame = Frame(0x1111, Payload(64, 5), 64);
  auto verified = Verify(0x2222, frame);
  ASSERT_EQ(verified.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(verified.status().message()), HasSubstr("0000000000002222"));
  EXPECT_THAT(std::string(verified.status().message()), HasSubstr("holds key 0000000000001111"));
}

TEST(BlockCodecTest, TruncationIsDataLoss) {
  const auto payload = Payload(1000, 6);
  const auto frame = Frame(1, payload, 64);
  for (size_t keep :
       {size_t{0}, size_t{10}, size_t{63}, size_t{64}, size_t{500}, size_t{64 + 999}}) {
    auto verified = Verify(1, std::span<const uint8_t>(frame.data(), keep));
    EXPECT_EQ(verified.status().code(), absl::StatusCode::kDataLoss) << keep;
    if (keep >= 64) {
      EXPECT_THAT(std::string(verified.status().message()), HasSubstr("truncated"));
    }
  }
  EXPECT_TRUE(Verify(1, std::span<const uint8_t>(frame.data(), 64 + 1000)).ok());
}

TEST(BlockCodecTest, ZeroedOrGarbageRegionsAreDataLoss) {
  std::vector<uint8_t> zeros(4096, 0);
  auto verified = Verify(1, zeros);
  ASSERT_EQ(verified.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(verified.status().message()), HasSubstr("bad magic"));
  auto garbage = Payload(4096, 7);
  std::memcpy(garbage.data(), &kBlockMagic, 4);  // Right magic, garbage elsewhere.
  verified = Verify(1, garbage);
  ASSERT_EQ(verified.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(verified.status().message()), HasSubstr("header checksum"));
}

TEST(BlockCodecTest, EncodeRejectsShortBuffersAndBadAlignment) {
  const auto payload = Payload(100, 8);
  std::vector<uint8_t> small(100);
  EXPECT_EQ(EncodeFrame(1, payload, 64, small).code(), absl::StatusCode::kInvalidArgument);
  std::vector<uint8_t> big(4096);
  EXPECT_EQ(EncodeFrame(1, payload, 48, big).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodeHeader(1, 100, 0, 4096, small).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(EncodeHeader(1, 100, 0, 64, small).ok());
}

}  // namespace
}  // namespace crescent::kvstore
