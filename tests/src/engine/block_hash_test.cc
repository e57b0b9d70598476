#include "src/engine/block_hash.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "src/common/hash.h"

namespace crescent::engine {
namespace {

std::vector<int32_t> Tokens(int n, int32_t first) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back(first + i);
  return t;
}

// Golden values, computed once by this implementation and pinned: the chain must give the same
// names in every process, on every host, across releases (the pool and other nodes rely on it).
// Changing them is a cluster-wide format change.
TEST(BlockHashTest, GoldenValuesAreStable) {
  const uint64_t seed = BlockHashSeed(0x0123456789abcdefULL, 0);
  EXPECT_EQ(seed, 0x0c172a9a4f01eaabULL);
  std::vector<uint64_t> h = BlockHashes(seed, Tokens(8, 100), 4);
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[0], 0x5085cb3517303278ULL);
  EXPECT_EQ(h[1], 0x468f425bd1e5804aULL);
  EXPECT_EQ(BlockHashSeed(0x0123456789abcdefULL, 42), 0xf61525b23eed5463ULL);
}

TEST(BlockHashTest, ChainMatchesDefinition) {
  const uint64_t seed = BlockHashSeed(7, 0);
  std::vector<int32_t> t = Tokens(12, 5);
  std::vector<uint64_t> h = BlockHashes(seed, t, 4);
  ASSERT_EQ(h.size(), 3u);
  EXPECT_EQ(h[0], ChainBlockHash(seed, 0, std::span<const int32_t>(t).subspan(0, 4)));
  EXPECT_EQ(h[1], ChainBlockHash(seed, h[0], std::span<const int32_t>(t).subspan(4, 4)));
  EXPECT_EQ(h[2], ChainBlockHash(seed, h[1], std::span<const int32_t>(t).subspan(8, 4)));
}

TEST(BlockHashTest, IsXxh3OverTheLittleEndianFields) {
  // seed = xxh3_64(fingerprint u64, salt u64); h = xxh3_64(seed u64, previous u64, tokens i32...)
  const uint64_t fp_salt[2] = {0xfeedULL, 3};
  const uint64_t seed = BlockHashSeed(0xfeedULL, 3);
  EXPECT_EQ(seed, Hash64(fp_salt, sizeof(fp_salt), 0));
  const std::vector<int32_t> t = {7, -1, 70000, 0};
  std::vector<uint8_t> bytes(16 + 16);
  const uint64_t previous = 0x1234;
  std::memcpy(bytes.data(), &seed, 8);
  std::memcpy(bytes.data() + 8, &previous, 8);
  std::memcpy(bytes.data() + 16, t.data(), 16);
  EXPECT_EQ(ChainBlockHash(seed, previous, t), Hash64(bytes.data(), bytes.size(), 0));
}

TEST(BlockHashTest, OnlyFullBlocksAreHashed) {
  const uint64_t seed = BlockHashSeed(7, 0);
  EXPECT_EQ(BlockHashes(seed, Tokens(3, 0), 4).size(), 0u);
  EXPECT_EQ(BlockHashes(seed, Tokens(11, 0), 4).size(), 2u);
  // A partial tail does not change the full blocks' hashes.
  EXPECT_EQ(BlockHashes(seed, Tokens(11, 0), 4), BlockHashes(seed, Tokens(8, 0), 4));
}

TEST(BlockHashTest, DependsOnFingerprintSaltTokensAndPrefix) {
  const std::vector<int32_t> t = Tokens(8, 100);
  const uint64_t base_seed = BlockHashSeed(1, 0);
  const std::vector<uint64_t> base = BlockHashes(base_seed, t, 4);
  EXPECT_NE(BlockHashSeed(2, 0), base_seed);  // another model
  EXPECT_NE(BlockHashSeed(1, 9), base_seed);  // another tenant
  EXPECT_NE(BlockHashes(BlockHashSeed(2, 0), t, 4)[0], base[0]);
  EXPECT_NE(BlockHashes(BlockHashSeed(1, 9), t, 4)[0], base[0]);
  std::vector<int32_t> u = t;
  u[5] = 999;  // second block differs: first hash equal, second not
  const std::vector<uint64_t> hu = BlockHashes(base_seed, u, 4);
  EXPECT_EQ(hu[0], base[0]);
  EXPECT_NE(hu[1], base[1]);
  std::vector<int32_t> v = t;
  v[0] = 999;  // first block differs: the chain carries it into every later hash
  const std::vector<uint64_t> hv = BlockHashes(base_seed, v, 4);
  EXPECT_NE(hv[0], base[0]);
  EXPECT_NE(hv[1], base[1]);
  // The same block after different prefixes gets different names.
  std::vector<int32_t> same_second = {1, 2, 3, 4, 104, 105, 106, 107};
  EXPECT_NE(BlockHashes(base_seed, same_second, 4)[1], base[1]);
  // block_tokens is part of what is hashed (through the block boundaries).
  EXPECT_NE(BlockHashes(base_seed, t, 8)[0], base[0]);
}

}  // namespace
}  // namespace crescent::engine
