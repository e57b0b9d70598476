// Rotary position embedding on the device.
#ifndef CRESCENT_KERNELS_CUDA_ROPE_H_
#define CRESCENT_KERNELS_CUDA_ROPE_H_

#include <cstdint>

#include "absl/status/status.h"

namespace crescent::kernels::cuda {

// Rotates, in place, `rows` tokens of x ([rows][n_heads][head_dim], device): pair i < rot_dim/2
// of every head of row r turns by the angle whose cosine and sine are cos[r * rot_dim/2 + i]
// and sin[...] (device tables the caller computes, e.g. in double as the CPU backend does).
// neox: pairs (i, i + rot_dim/2), else adjacent pairs (2i, 2i + 1). Dimensions from rot_dim on
// are left as they are. Asynchronous. Errors: Internal when the launch fails.
// REQUIRES: rows >= 0; rot_dim even; 0 < rot_dim <= head_dim.
absl::Status Rope(float* x, int64_t rows, int n_heads, int head_dim, int rot_dim, const float* cos,
                  const float* sin, bool neox);

}  // namespace crescent::kernels::cuda

#endif  // CRESCENT_KERNELS_CUDA_ROPE_H_
