#include "kernels/cuda/kv_store.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/fp16.h"
#include "tests/kernels/cuda/cuda_test_util.h"

namespace crescent::kernels::cuda {
namespace {

using testing::Download;
using testing::F;
using testing::RandomFloats;
using testing::Upload;

// Each row lands, rounded as kernels::F32ToF16Row rounds, in the slot of its position in its
// sequence's block table, in the K and V pages of the layer; nothing else changes.
TEST(CudaKvStoreTest, WritesRowsIntoTheirSlots) {
  CRESCENT_REQUIRE_CUDA_DEVICE();
  const int n_layers = 3, n_kv = 2, hd = 16, bt = 4, n_blocks = 5, layer = 1;
  const int kv_dim = n_kv * hd;
  const size_t page = static_cast<size_t>(bt) * kv_dim * 2;
  const size_t block = page * 2 * n_layers;
  std::vector<uint16_t> cache(block * n_blocks / 2, 0x1234);
  DeviceBuffer dc = Upload(cache);
  KvPages pages{static_cast<uint8_t*>(dc.data()), block, page, bt, n_kv, hd};
  // Two sequences: A's table is blocks {4, 0} (offset 0), B's {2, 3} (offset 2). Rows: A at
  // positions 3 and 4, B at 5; they land in block 4 slot 3, block 0 slot 0, block 3 slot 1.
  const std::vector<int32_t> table = {4, 0, 2, 3}, table_off = {0, 0, 2}, pos = {3, 4, 5};
  const std::vector<int32_t> blocks = {4, 0, 3}, slots = {3, 0, 1};
  const int64_t rows = 3;
  std::vector<float> k = RandomFloats(rows * kv_dim, 1, -100, 100),
                     v = RandomFloats(rows * kv_dim, 2, -100, 100);
  DeviceBuffer dk = Upload(k), dv = Upload(v), dp = Upload(pos), dt = Upload(table),
               doff = Upload(table_off);
  ASSERT_TRUE(StoreKv(F(dk), F(dv), rows, static_cast<const int32_t*>(dp.data()),
                      static_cast<const int32_t*>(dt.data()),
                      static_cast<const int32_t*>(doff.data()), pages, layer)
                  .ok());
  std::vector<uint16_t> got = Download<uint16_t>(dc, cache.size());
  std::vector<uint16_t> want = cache;
  for (int64_t r = 0; r < rows; ++r) {
    const size_t kpos = (blocks[r] * block + 2 * layer * page) / 2 + slots[r] * kv_dim;
    F32ToF16Row(&k[r * kv_dim], &want[kpos], kv_dim);
    F32ToF16Row(&v[r * kv_dim], &want[kpos + page / 2], kv_dim);
  }
  EXPECT_EQ(got, want);
}

}  // namespace
}  // namespace crescent::kernels::cuda
