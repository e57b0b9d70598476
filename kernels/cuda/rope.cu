#include "kernels/cuda/rope.h"

#include <cuda_runtime.h>

#include "kernels/cuda/device.h"

namespace crescent::kernels::cuda {
namespace {

__global__ void RopeKernel(float* x, int n_heads, int head_dim, int half, const float* cos,
                           const float* sin, bool neox) {
  const int64_t r = blockIdx.x;
  float* xr = x + r * n_heads * head_dim;
  const float* c = cos + r * half;
  const float* s = sin + r * half;
  for (int e = threadIdx.x; e < n_heads * half; e += blockDim.x) {
    const int h = e / half;
    const int i = e % half;
    float* v = xr + h * head_dim;
    const int ia = neox ? i : 2 * i;
    const int ib = neox ? i + half : 2 * i + 1;
    const float a = v[ia];
    const float b = v[ib];
    v[ia] = a * c[i] - b * s[i];
    v[ib] = a * s[i] + b * c[i];
  }
}

}  // namespace

absl::Status Rope(float* x, int64_t rows, int n_heads, int head_dim, int rot_dim, const float* cos,
                  const float* sin, bool neox) {
  if (rows <= 0) return absl::OkStatus();
  RopeKernel<<<static_cast<unsigned>(rows), 128>>>(x, n_heads, head_dim, rot_dim / 2, cos, sin,
                                                   neox);
  return LaunchStatus("Rope");
}

}  // namespace crescent::kernels::cuda
