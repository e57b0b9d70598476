#include "kernels/cuda/attention.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/fp16.h"
#include "tests/kernels/cuda/cuda_test_util.h"

namespace crescent::kernels::cuda {
namespace {

using testing::Download;
using testing::F;
using testing::RandomFloats;
using testing::Upload;

struct Shape {
  int n_heads, n_kv, hd, bt;
};

// Two sequences (a prefill chunk of 5 queries at positions 37..41 and a decode query at 130)
// over pages in scrambled block order, against kernels::Attention over the same f16 pages.
void Check(const Shape& sh) {
  SCOPED_TRACE(::testing::Message() << sh.n_heads << "/" << sh.n_kv << " heads, head_dim " << sh.hd
                                    << ", block " << sh.bt);
  const int n_layers = 2, layer = 1, kv_dim = sh.n_kv * sh.hd, q_dim = sh.n_heads * sh.hd;
  const size_t page = static_cast<size_t>(sh.bt) * kv_dim * 2, block = page * 2 * n_layers;
  const int n_blocks = 2 * (131 + sh.bt - 1) / sh.bt + 2;
  std::vector<uint16_t> cache(block * n_blocks / 2);
  {
    std::vector<float> kv = RandomFloats(cache.size(), 9, -2, 2);
    F32ToF16Row(kv.data(), cache.data(), static_cast<int64_t>(cache.size()));
  }
  // Sequence 0 uses the odd blocks from the top down, sequence 1 the even ones.
  std::vector<int32_t> table0, table1;
  for (int b = n_blocks - 1; b >= 0; --b) (b % 2 ? table0 : table1).push_back(b);
  const int64_t pos0 = 37, n_q0 = 5, pos1 = 130;
  const int64_t rows = n_q0 + 1;
  std::vector<float> q = RandomFloats(rows * q_dim, 10, -2, 2);
  const float scale = 1.0f / std::sqrt(static_cast<float>(sh.hd));

  // CPU reference.
  std::vector<float> ref(rows * q_dim);
  auto pages_of = [&](const std::vector<int32_t>& t, size_t off) {
    std::vector<const uint16_t*> p;
    for (int32_t b : t) p.push_back(cache.data() + (b * block + 2 * layer * page + off) / 2);
    return p;
  };
  auto k0 = pages_of(table0, 0), v0 = pages_of(table0, page), k1 = pages_of(table1, 0),
       v1 = pages_of(table1, page);
  AttentionSeq seqs[2];
  seqs[0] = {q.data(), static_cast<int>(n_q0), pos0, k0.data(), v0.data(), ref.data()};
  seqs[1] = {q.data() + n_q0 * q_dim, 1, pos1, k1.data(), v1.data(), ref.data() + n_q0 * q_dim};
  kernels::Attention(nullptr, seqs, 2, sh.n_heads, sh.n_kv, sh.hd, sh.bt, scale);

  // Device.
  std::vector<int32_t> table = table0;
  table.insert(table.end(), table1.begin(), table1.end());
  std::vector<int32_t> pos, off;
  for (int64_t j = 0; j < n_q0; ++j) {
    pos.push_back(static_cast<int32_t>(pos0 + j));
    off.push_back(0);
  }
  pos.push_back(static_cast<int32_t>(pos1));
  off.push_back(static_cast<int32_t>(table0.size()));
  DeviceBuffer dc = Upload(cache), dq = Upload(q), dt = Upload(table), dp = Upload(pos),
               doff = Upload(off);
  auto dout = DeviceBuffer::Create(sizeof(float) * rows * q_dim);
  ASSERT_TRUE(dout.ok());
  AttentionRows ar{F(dq),
                   F(*dout),
                   static_cast<const int32_t*>(dp.data()),
                   static_cast<const int32_t*>(dt.data()),
                   static_cast<const int32_t*>(doff.data()),
                   rows};
  KvPages pages{static_cast<uint8_t*>(dc.data()), block, page, sh.bt, sh.n_kv, sh.hd};
  ASSERT_TRUE(Attention(ar, pages, layer, sh.n_heads, scale).ok());
  std::vector<float> out = Download<float>(*dout, rows * q_dim);
  for (int64_t i = 0; i < rows * q_dim; ++i) ASSERT_NEAR(out[i], ref[i], 2e-5f) << i;
}

TEST(CudaAttentionTest, MatchesTheCpuKernel) {
  CRESCENT_REQUIRE_CUDA_DEVICE();
  Check({9, 3, 64, 16});   // SmolLM2-135M's heads
  Check({4, 4, 16, 4});    // the tests' tiny model: head_dim below a warp
  Check({8, 2, 128, 32});  // Llama's head_dim
  Check({2, 1, 256, 8});   // the largest head_dim taken
}

TEST(CudaAttentionTest, ShapesItCannotTakeAreErrors) {
  KvPages pages{nullptr, 0, 0, 16, 3, 512};
  EXPECT_EQ(Attention({}, pages, 0, 9, 1.0f).code(), absl::StatusCode::kInvalidArgument);
  pages.head_dim = 64;
  EXPECT_EQ(Attention({}, pages, 0, 8, 1.0f).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace crescent::kernels::cuda
