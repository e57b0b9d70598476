#include "kernels/cuda/matmul.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/quants.h"
#include "tests/kernels/cuda/cuda_test_util.h"

namespace crescent::kernels::cuda {
namespace {

using testing::Download;
using testing::F;
using testing::RandomFloats;
using testing::Upload;

struct Case {
  GgmlType type;
  int64_t rows, cols, m;
};

// y against a double-precision product of the decoded weights (kernels::DequantizeRow) and x,
// each entry within 1e-5 of the sum of |w||x| of its dot product (f32 sums of a few hundred to
// a few thousand terms).
void Check(const Case& c) {
  SCOPED_TRACE(::testing::Message()
               << GetTypeInfo(c.type).name << " " << c.rows << "x" << c.cols << " m=" << c.m);
  const size_t stride = RowBytes(c.type, c.cols);
  std::vector<uint8_t> w(stride * c.rows);
  std::vector<float> wf = RandomFloats(static_cast<size_t>(c.rows * c.cols), 7);
  for (int64_t r = 0; r < c.rows; ++r) {
    ASSERT_TRUE(QuantizeRow(c.type, &wf[r * c.cols], &w[r * stride], c.cols));
    DequantizeRow(c.type, &w[r * stride], &wf[r * c.cols], c.cols);
  }
  std::vector<float> x = RandomFloats(static_cast<size_t>(c.m * c.cols), 8, -2.0f, 2.0f);
  DeviceBuffer dw = Upload(w), dx = Upload(x);
  auto dy = DeviceBuffer::Create(sizeof(float) * c.m * c.rows);
  ASSERT_TRUE(dy.ok());
  DeviceMatrix mat{c.type, c.rows, c.cols, dw.data(), stride};
  ASSERT_TRUE(MatMul(mat, F(dx), c.m, F(*dy)).ok());
  std::vector<float> y = Download<float>(*dy, static_cast<size_t>(c.m * c.rows));
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t n = 0; n < c.rows; ++n) {
      double ref = 0, mag = 0;
      for (int64_t k = 0; k < c.cols; ++k) {
        ref += static_cast<double>(wf[n * c.cols + k]) * x[i * c.cols + k];
        mag += std::fabs(static_cast<double>(wf[n * c.cols + k]) * x[i * c.cols + k]);
      }
      ASSERT_NEAR(y[i * c.rows + n], ref, 1e-5 * mag + 1e-6) << "row " << i << " feature " << n;
    }
  }
}

TEST(CudaMatMulTest, EveryTypeSmallAndTiledBatches) {
  CRESCENT_REQUIRE_CUDA_DEVICE();
  for (GgmlType t : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ4_0,
                     GgmlType::kQ4_1, GgmlType::kQ8_0}) {
    for (int64_t m : {1, 3, 8, 9, 70}) Check({t, 67, 96, m});
    Check({t, 576, 576, 1});
    Check({t, 130, 1536, 130});
  }
  // K-quants: rows of 256-value super-blocks.
  for (GgmlType t : {GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    for (int64_t m : {1, 3, 8, 9, 70}) Check({t, 67, 256, m});
    Check({t, 576, 768, 1});
    Check({t, 130, 1536, 130});
  }
}

TEST(CudaMatMulTest, UnsupportedTypesAreErrors) {
  // Argument checks come before any device work, so these run everywhere.
  DeviceMatrix q3_k{GgmlType::kQ3_K, 16, 256, nullptr, RowBytes(GgmlType::kQ3_K, 256)};
  EXPECT_EQ(MatMul(q3_k, nullptr, 1, nullptr).code(), absl::StatusCode::kUnimplemented);
  EXPECT_FALSE(MatMulSupports(GgmlType::kQ5_0));
  EXPECT_TRUE(MatMulSupports(GgmlType::kQ4_1));
  EXPECT_TRUE(MatMulSupports(GgmlType::kQ6_K));
  DeviceMatrix ragged{GgmlType::kQ8_0, 16, 40, nullptr, 64};
  EXPECT_EQ(MatMul(ragged, nullptr, 1, nullptr).code(), absl::StatusCode::kInvalidArgument);
  DeviceMatrix ragged_k{GgmlType::kQ4_K, 16, 288, nullptr, 176};
  EXPECT_EQ(MatMul(ragged_k, nullptr, 1, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace crescent::kernels::cuda
