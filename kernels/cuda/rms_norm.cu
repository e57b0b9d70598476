#include "kernels/cuda/rms_norm.h"

#include <cuda_runtime.h>

#include "kernels/cuda/device.h"
#include "kernels/cuda/internal/weights.cuh"

namespace crescent::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    RmsNormKernel(const float* x, const float* w, int64_t n, float eps, float* out) {
  __shared__ float partial[kThreads / 32];
  const float* xr = x + static_cast<int64_t>(blockIdx.x) * n;
  float* yr = out + static_cast<int64_t>(blockIdx.x) * n;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) ss = fmaf(xr[i], xr[i], ss);
  ss = internal::WarpSum(ss);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = ss;
  __syncthreads();
  float total = 0.0f;
#pragma unroll
  for (int i = 0; i < kThreads / 32; ++i) total += partial[i];
  const float inv = rsqrtf(total / static_cast<float>(n) + eps);
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    yr[i] = xr[i] * inv * (w != nullptr ? w[i] : 1.0f);
  }
}

}  // namespace

absl::Status RmsNorm(const float* x, const float* w, int64_t rows, int64_t n, float eps,
                     float* out) {
  if (rows <= 0) return absl::OkStatus();
  RmsNormKernel<<<static_cast<unsigned>(rows), kThreads>>>(x, w, n, eps, out);
  return LaunchStatus("RmsNorm");
}

}  // namespace crescent::kernels::cuda
