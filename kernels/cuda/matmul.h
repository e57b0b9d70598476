// Matrix multiplication on the device against weights kept in their GGUF encoding: each weight
// is decoded where it is used (never dequantized wholesale) and multiplied in f32 with f32
// activations (no activation quantization, unlike the CPU kernels: results differ from theirs
// by that quantization's error).
#ifndef CRESCENT_KERNELS_CUDA_MATMUL_H_
#define CRESCENT_KERNELS_CUDA_MATMUL_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cpu/types.h"

namespace crescent::kernels::cuda {

// A weight matrix in device memory, GGUF layout: row r (`cols` values encoded as `type`)
// starts at data + r * row_stride. Not owning.
struct DeviceMatrix {
  GgmlType type = GgmlType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;  // device memory
  size_t row_stride = 0;       // bytes; even; >= RowBytes(type, cols)
};

// True for F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K.
bool MatMulSupports(GgmlType type);

// y[i][n] = sum_k x[i][k] * W[n][k] for i < m, n < w.rows, with x (m x w.cols) and y
// (m x w.rows) f32 row-major in device memory. Sums in f32, in an order that depends on m
// (m <= 8: one warp per output feature; larger m: 64 x 64 tiles), so a row's bits may change
// with the batch around it, within f32 rounding. Asynchronous: ordered on the default stream.
// Errors: Unimplemented for a type MatMulSupports rejects; InvalidArgument for a quantized
// matrix whose cols is not a multiple of its block (32; 256 for the K-quants); Internal when
// the launch fails.
// REQUIRES: m >= 0; y does not overlap x or the weights.
absl::Status MatMul(const DeviceMatrix& w, const float* x, int64_t m, float* y);

}  // namespace crescent::kernels::cuda

#endif  // CRESCENT_KERNELS_CUDA_MATMUL_H_
