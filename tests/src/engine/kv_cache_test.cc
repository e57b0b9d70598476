#include "src/engine/kv_cache.h"

#include <set>

#include "gtest/gtest.h"

namespace crescent::engine {
namespace {

KvCacheConfig SmallConfig(int64_t blocks) {
  KvCacheConfig c;
  c.n_layers = 3;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.block_tokens = 4;
  c.num_blocks = blocks;
  return c;
}

TEST(KvCacheTest, RejectsBadConfig) {
  KvCacheConfig c = SmallConfig(0);
  EXPECT_EQ(KvCache::Create(c).status().code(), absl::StatusCode::kInvalidArgument);
  c = SmallConfig(4);
  c.head_dim = 0;
  EXPECT_EQ(KvCache::Create(c).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(KvCacheTest, AllocatesUntilFullAndReusesFreed) {
  auto cache = *KvCache::Create(SmallConfig(3));
  std::set<KvCache::BlockId> ids;
  for (int i = 0; i < 3; ++i) ids.insert(cache->Allocate());
  EXPECT_EQ(ids.size(), 3u);
  EXPECT_EQ(cache->Allocate(), -1);
  EXPECT_EQ(cache->num_free_blocks(), 0);
  KvCache::BlockId b = *ids.begin();
  cache->Ref(b);
  cache->Unref(b);
  EXPECT_EQ(cache->Allocate(), -1) << "a block with references left must stay allocated";
  cache->Unref(b);
  EXPECT_EQ(cache->num_free_blocks(), 1);
  EXPECT_EQ(cache->Allocate(), b);
}

TEST(KvCacheTest, PagesTileTheBlockInCanonicalOrder) {
  auto cache = *KvCache::Create(SmallConfig(2));
  const KvCacheConfig& c = cache->config();
  EXPECT_EQ(c.PageBytes(), 4u * 2 * 8 * 2);
  EXPECT_EQ(c.BlockBytes(), c.PageBytes() * 2 * 3);
  for (KvCache::BlockId b = 0; b < 2; ++b) {
    uint8_t* base = cache->BlockData(b);
    for (int l = 0; l < 3; ++l) {
      EXPECT_EQ(reinterpret_cast<uint8_t*>(cache->KPage(b, l)), base + (2 * l) * c.PageBytes());
      EXPECT_EQ(reinterpret_cast<uint8_t*>(cache->VPage(b, l)), base + (2 * l + 1) * c.PageBytes());
    }
  }
  EXPECT_EQ(cache->BlockData(1), cache->BlockData(0) + c.BlockBytes());
}

}  // namespace
}  // namespace crescent::engine
