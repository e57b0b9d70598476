#include "kernels/cuda/rms_norm.h"

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

TEST(CudaRmsNormTest, MatchesTheCpuKernel) {
  CRESCENT_REQUIRE_CUDA_DEVICE();
  for (int64_t n : {16, 576, 1000}) {
    const int64_t rows = 5;
    std::vector<float> x = RandomFloats(rows * n, 1, -3, 3), w = RandomFloats(n, 2);
    DeviceBuffer dx = Upload(x), dw = Upload(w);
    auto dy = DeviceBuffer::Create(sizeof(float) * rows * n);
    ASSERT_TRUE(dy.ok());
    for (bool weighted : {true, false}) {
      ASSERT_TRUE(RmsNorm(F(dx), weighted ? F(dw) : nullptr, rows, n, 1e-5f, F(*dy)).ok());
      std::vector<float> y = Download<float>(*dy, rows * n), ref(n);
      for (int64_t r = 0; r < rows; ++r) {
        kernels::RmsNorm(&x[r * n], weighted ? w.data() : nullptr, n, 1e-5f, ref.data());
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_NEAR(y[r * n + i], ref[i], 1e-5f * (1 + std::abs(ref[i]))) << r << "," << i;
        }
      }
    }
    // In place.
    ASSERT_TRUE(RmsNorm(F(dx), F(dw), rows, n, 1e-5f, F(dx)).ok());
    std::vector<float> y = Download<float>(dx, rows * n), ref(n);
    kernels::RmsNorm(&x[0], w.data(), n, 1e-5f, ref.data());
    for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(y[i], ref[i], 1e-5f * (1 + std::abs(ref[i])));
  }
}

}  // namespace
}  // namespace crescent::kernels::cuda
