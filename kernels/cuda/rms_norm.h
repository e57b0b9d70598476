// RMS normalization of rows on the device.
#ifndef CRESCENT_KERNELS_CUDA_RMS_NORM_H_
#define CRESCENT_KERNELS_CUDA_RMS_NORM_H_

#include <cstdint>

#include "absl/status/status.h"

namespace crescent::kernels::cuda {

// For each of `rows` rows of n values: out = x / sqrt(mean(x^2) + eps) * w (w == nullptr: all
// ones), as kernels::RmsNorm does on the CPU, with the sum of squares in f32 over a block
// reduction. Device pointers; x and out may be the same. Asynchronous.
// Errors: Internal when the launch fails. REQUIRES: rows >= 0, n > 0.
absl::Status RmsNorm(const float* x, const float* w, int64_t rows, int64_t n, float eps,
                     float* out);

}  // namespace crescent::kernels::cuda

#endif  // CRESCENT_KERNELS_CUDA_RMS_NORM_H_
