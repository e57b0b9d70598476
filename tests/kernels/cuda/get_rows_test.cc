#include "kernels/cuda/get_rows.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/quants.h"
#include "tests/kernels/cuda/cuda_test_util.h"

namespace crescent::kernels::cuda {
namespace {

using testing::Download;
using testing::F;
using testing::RandomFloats;
using testing::Upload;

// Decoded rows match kernels::GetRow's to f32 rounding (Q4_1's multiply-add may be fused on
// the device).
TEST(CudaGetRowsTest, DecodesLikeTheCpuForEveryType) {
  CRESCENT_REQUIRE_CUDA_DEVICE();
  const int64_t rows = 11;
  for (GgmlType t :
       {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ4_0, GgmlType::kQ4_1,
        GgmlType::kQ8_0, GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    SCOPED_TRACE(GetTypeInfo(t).name);
    const int64_t n = GetTypeInfo(t).block_size == 256 ? 512 : 576;
    const size_t stride = RowBytes(t, n);
    std::vector<uint8_t> table(stride * rows);
    std::vector<float> src = RandomFloats(rows * n, 5);
    for (int64_t r = 0; r < rows; ++r)
      ASSERT_TRUE(QuantizeRow(t, &src[r * n], &table[r * stride], n));
    std::vector<int32_t> ids = {3, 0, 10, 3};
    DeviceBuffer dt = Upload(table), di = Upload(ids);
    auto out = DeviceBuffer::Create(sizeof(float) * ids.size() * n);
    ASSERT_TRUE(out.ok());
    ASSERT_TRUE(GetRows(t, dt.data(), stride, static_cast<const int32_t*>(di.data()),
                        static_cast<int64_t>(ids.size()), n, F(*out))
                    .ok());
    std::vector<float> y = Download<float>(*out, ids.size() * n), ref(n);
    for (size_t i = 0; i < ids.size(); ++i) {
      kernels::GetRow(t, &table[ids[i] * stride], n, ref.data());
      for (int64_t k = 0; k < n; ++k)
        ASSERT_NEAR(y[i * n + k], ref[k], 1e-6f * (1 + std::abs(ref[k]))) << i << "," << k;
    }
  }
}

TEST(CudaGetRowsTest, UndecodableTypeIsUnimplemented) {
  EXPECT_EQ(GetRows(GgmlType::kQ3_K, nullptr, 0, nullptr, 1, 256, nullptr).code(),
            absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace crescent::kernels::cuda
