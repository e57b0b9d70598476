#include "kernels/cuda/elementwise.h"

#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/cuda/device.h"

namespace crescent::kernels::cuda {
namespace {

constexpr int kThreads = 256;

unsigned Blocks(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535));
}

__global__ void AddKernel(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = a[i] + b[i];
  }
}

__global__ void SwiGLUKernel(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void AddRowBiasKernel(float* x, int64_t n, const float* bias, int64_t width) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] += bias[i % width];
  }
}

}  // namespace

absl::Status Add(const float* a, const float* b, float* out, int64_t n) {
  if (n <= 0) return absl::OkStatus();
  AddKernel<<<Blocks(n), kThreads>>>(a, b, out, n);
  return LaunchStatus("Add");
}

absl::Status SwiGLU(const float* gate, const float* up, float* out, int64_t n) {
  if (n <= 0) return absl::OkStatus();
  SwiGLUKernel<<<Blocks(n), kThreads>>>(gate, up, out, n);
  return LaunchStatus("SwiGLU");
}

absl::Status AddRowBias(float* x, int64_t rows, const float* bias, int64_t width) {
  if (rows <= 0 || width <= 0) return absl::OkStatus();
  AddRowBiasKernel<<<Blocks(rows * width), kThreads>>>(x, rows * width, bias, width);
  return LaunchStatus("AddRowBias");
}

}  // namespace crescent::kernels::cuda
