// The device's per-value weight decoders (kernels/cuda/internal/weights.cuh), run on the host:
// WeightAt is __host__ __device__ and its host build is the same source, so every type the
// CUDA kernels read is checked here against kernels::DequantizeRow, on any machine, device or
// not (the kernels that call it are checked against the CPU on a device: matmul_test,
// get_rows_test).
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/quants.h"
#include "kernels/cuda/internal/weights.cuh"

namespace crescent::kernels::cuda::internal {
namespace {

TEST(CudaWeightsTest, WeightAtDecodesEveryTypeAsTheCpuDoes) {
  int checked = 0;
  for (GgmlType t : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ4_0,
                     GgmlType::kQ4_1, GgmlType::kQ8_0, GgmlType::kQ4_K, GgmlType::kQ5_K,
                     GgmlType::kQ6_K, GgmlType::kQ3_K, GgmlType::kQ8_1}) {
    SCOPED_TRACE(GetTypeInfo(t).name);
    const bool decodable = DispatchType(t, [&](auto tc) {
      constexpr GgmlType T = decltype(tc)::value;
      const int64_t n = 1024;  // four K-quant super-blocks, 32 blocks of 32
      std::mt19937 rng(static_cast<uint32_t>(T) + 1);
      std::uniform_real_distribution<float> u(-1.5f, 1.0f);
      std::vector<float> src(n);
      for (float& v : src) v = u(rng);
      std::vector<uint8_t> row(RowBytes(T, n));
      ASSERT_TRUE(QuantizeRow(T, src.data(), row.data(), n));
      std::vector<float> want(n);
      DequantizeRow(T, row.data(), want.data(), n);
      for (int64_t k = 0; k < n; ++k) {
        const float got = WeightAt<T>(row.data(), k);
        // Bit for bit but for a multiply-add the compiler may fuse: within an ulp of the terms.
        ASSERT_NEAR(got, want[k], 4e-7f * (1.0f + std::fabs(want[k]))) << "value " << k;
      }
      ++checked;
    });
    EXPECT_EQ(decodable, Decodable(t));
  }
  EXPECT_EQ(checked, 9);
  EXPECT_FALSE(Decodable(GgmlType::kQ3_K));
  EXPECT_TRUE(Decodable(GgmlType::kQ6_K));
}

// The K-quants' scale fields: ScaleMinK4 unpacks what kernels::PackScalesK4 packed, for every
// sub-block and every 6-bit value.
TEST(CudaWeightsTest, ScaleMinK4UnpacksEverySubBlock) {
  for (int base = 0; base < 64; base += 7) {
    uint8_t sc[8], m[8], packed[12];
    for (int j = 0; j < 8; ++j) {
      sc[j] = static_cast<uint8_t>((base + 9 * j) % 64);
      m[j] = static_cast<uint8_t>((base * 3 + 5 * j + 1) % 64);
    }
    PackScalesK4(sc, m, packed);
    for (int j = 0; j < 8; ++j) {
      int s = -1, mn = -1;
      ScaleMinK4(packed, j, &s, &mn);
      EXPECT_EQ(s, sc[j]) << base << " " << j;
      EXPECT_EQ(mn, m[j]) << base << " " << j;
    }
  }
}

}  // namespace
}  // namespace crescent::kernels::cuda::internal
