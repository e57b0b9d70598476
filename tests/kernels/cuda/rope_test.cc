#include "kernels/cuda/rope.h"

#include <cmath>
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

// Against kernels::Rope with the same angles (tables computed here in double, as the CPU
// kernel does internally).
TEST(CudaRopeTest, MatchesTheCpuKernelInBothModes) {
  CRESCENT_REQUIRE_CUDA_DEVICE();
  const int n_heads = 3, head_dim = 64;
  const float base = 10000.0f;
  for (int rot : {64, 32}) {
    for (RopeMode mode : {RopeMode::kNormal, RopeMode::kNeox}) {
      const int64_t rows = 4;
      const int half = rot / 2;
      std::vector<float> x = RandomFloats(rows * n_heads * head_dim, 3), cs(rows * half),
                         sn(rows * half);
      const int64_t pos[rows] = {0, 1, 17, 4000};
      for (int64_t r = 0; r < rows; ++r) {
        for (int i = 0; i < half; ++i) {
          const double theta = pos[r] * std::pow(static_cast<double>(base), -2.0 * i / rot);
          cs[r * half + i] = static_cast<float>(std::cos(theta));
          sn[r * half + i] = static_cast<float>(std::sin(theta));
        }
      }
      DeviceBuffer dx = Upload(x), dc = Upload(cs), ds = Upload(sn);
      ASSERT_TRUE(
          Rope(F(dx), rows, n_heads, head_dim, rot, F(dc), F(ds), mode == RopeMode::kNeox).ok());
      std::vector<float> y = Download<float>(dx, x.size());
      for (int64_t r = 0; r < rows; ++r) {
        float* ref = &x[r * n_heads * head_dim];
        kernels::Rope(ref, n_heads, head_dim, rot, pos[r], base, 1.0f, mode);
        for (int i = 0; i < n_heads * head_dim; ++i) {
          ASSERT_NEAR(y[r * n_heads * head_dim + i], ref[i], 2e-5f) << r << "," << i;
        }
      }
    }
  }
}

}  // namespace
}  // namespace crescent::kernels::cuda
