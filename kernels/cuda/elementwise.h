// Element-wise row operations on the device (device pointers; asynchronous; Internal when a
// launch fails). Outputs may be the same buffer as an input.
#ifndef CRESCENT_KERNELS_CUDA_ELEMENTWISE_H_
#define CRESCENT_KERNELS_CUDA_ELEMENTWISE_H_

#include <cstdint>

#include "absl/status/status.h"

namespace crescent::kernels::cuda {

// out[i] = a[i] + b[i] for i < n.
absl::Status Add(const float* a, const float* b, float* out, int64_t n);

// out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)), for i < n.
absl::Status SwiGLU(const float* gate, const float* up, float* out, int64_t n);

// x[r][i] += bias[i] for r < rows, i < width (x row-major, rows x width).
absl::Status AddRowBias(float* x, int64_t rows, const float* bias, int64_t width);

}  // namespace crescent::kernels::cuda

#endif  // CRESCENT_KERNELS_CUDA_ELEMENTWISE_H_
