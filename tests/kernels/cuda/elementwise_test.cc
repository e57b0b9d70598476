#include "kernels/cuda/elementwise.h"

#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "tests/kernels/cuda/cuda_test_util.h"

namespace crescent::kernels::cuda {
namespace {

using testing::Download;
using testing::F;
using testing::RandomFloats;
using testing::Upload;

TEST(CudaElementwiseTest, AddSwiGLUAndRowBiasMatchTheCpu) {
  CRESCENT_REQUIRE_CUDA_DEVICE();
  const int64_t n = 3 * 1536 + 5;
  std::vector<float> a = RandomFloats(n, 1, -8, 8), b = RandomFloats(n, 2, -8, 8), ref(n);
  DeviceBuffer da = Upload(a), db = Upload(b);
  auto out = DeviceBuffer::Create(sizeof(float) * n);
  ASSERT_TRUE(out.ok());

  ASSERT_TRUE(Add(F(da), F(db), F(*out), n).ok());
  kernels::Add(a.data(), b.data(), ref.data(), n);
  EXPECT_EQ(Download<float>(*out, n), ref);  // one f32 add: exact

  ASSERT_TRUE(SwiGLU(F(da), F(db), F(*out), n).ok());
  kernels::SwiGLU(a.data(), b.data(), ref.data(), n);
  std::vector<float> y = Download<float>(*out, n);
  for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(y[i], ref[i], 1e-5f * (1 + std::abs(ref[i]))) << i;

  const int64_t width = 96, rows = 7;
  std::vector<float> x = RandomFloats(rows * width, 3), bias = RandomFloats(width, 4);
  DeviceBuffer dx = Upload(x), dbias = Upload(bias);
  ASSERT_TRUE(AddRowBias(F(dx), rows, F(dbias), width).ok());
  y = Download<float>(dx, rows * width);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < width; ++i) ASSERT_EQ(y[r * width + i], x[r * width + i] + bias[i]);
  }
}

}  // namespace
}  // namespace crescent::kernels::cuda
