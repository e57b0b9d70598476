#include "kernels/cuda/matmul.h"

#include <cuda_runtime.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/internal/weights.cuh"

namespace crescent::kernels::cuda {
namespace {

using internal::WarpSum;
using internal::WeightAt;

constexpr int kWarps = 8;      // warps (output features) per block in the small-m kernel
constexpr int kSmallM = 8;     // rows of x one small-m block keeps sums for
constexpr int kTile = 64;      // tiled kernel: 64 features x 64 rows of x per block
constexpr int kTileK = 32;     // values of K staged in shared memory per step

// m <= kSmallM at a time: warp w of block b computes feature n = b * kWarps + w for rows
// [blockIdx.y * kSmallM, ...) of x. Lanes walk K 32 apart, so a warp reads each weight block
// (and x) contiguously; the per-lane sums are reduced across the warp at the end.
template <GgmlType T>
__global__ void __launch_bounds__(kWarps * 32)
    MatMulSmallM(const uint8_t* w, size_t stride, int64_t rows, int64_t cols, const float* x,
                 int64_t m, float* y) {
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (n >= rows) return;  // the whole warp leaves together
  const int64_t i0 = static_cast<int64_t>(blockIdx.y) * kSmallM;
  const int mi = static_cast<int>(min(static_cast<int64_t>(kSmallM), m - i0));
  const uint8_t* row = w + n * stride;
  const float* xr = x + i0 * cols;
  float acc[kSmallM] = {};
  for (int64_t k = lane; k < cols; k += 32) {
    const float wv = WeightAt<T>(row, k);
#pragma unroll
    for (int i = 0; i < kSmallM; ++i) {
      if (i < mi) acc[i] = fmaf(wv, xr[i * cols + k], acc[i]);
    }
  }
#pragma unroll
  for (int i = 0; i < kSmallM; ++i) {
    if (i < mi) {
      const float s = WarpSum(acc[i]);
      if (lane == 0) y[(i0 + i) * rows + n] = s;
    }
  }
}

// Larger m: block (bx, by) computes features [64 bx, +64) for rows [64 by, +64) of x. Each
// step decodes a 64 x 32 tile of weights and stages 32 values of 64 rows of x in shared
// memory; each of the 256 threads keeps a 4 x 4 patch of sums.
template <GgmlType T>
__global__ void __launch_bounds__(256)
    MatMulTiled(const uint8_t* w, size_t stride, int64_t rows, int64_t cols, const float* x,
                int64_t m, float* y) {
  __shared__ float ws[kTileK][kTile + 1];
  __shared__ float xs[kTileK][kTile + 1];
  const int tx = threadIdx.x % 16;
  const int ty = threadIdx.x / 16;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t i0 = static_cast<int64_t>(blockIdx.y) * kTile;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < cols; k0 += kTileK) {
    for (int e = threadIdx.x; e < kTile * kTileK; e += 256) {
      const int r = e / kTileK;
      const int kk = e % kTileK;
      const int64_t k = k0 + kk;
      const int64_t n = n0 + r;
      const int64_t i = i0 + r;
      ws[kk][r] = (n < rows && k < cols) ? WeightAt<T>(w + n * stride, k) : 0.0f;
      xs[kk][r] = (i < m && k < cols) ? x[i * cols + k] : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kTileK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        a[u] = xs[kk][ty + 16 * u];
        b[u] = ws[kk][tx + 16 * u];
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
#pragma unroll
        for (int v = 0; v < 4; ++v) acc[u][v] = fmaf(a[u], b[v], acc[u][v]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int u = 0; u < 4; ++u) {
#pragma unroll
    for (int v = 0; v < 4; ++v) {
      const int64_t i = i0 + ty + 16 * u;
      const int64_t n = n0 + tx + 16 * v;
      if (i < m && n < rows) y[i * rows + n] = acc[u][v];
    }
  }
}

}  // namespace

bool MatMulSupports(GgmlType type) { return internal::Decodable(type); }

absl::Status MatMul(const DeviceMatrix& w, const float* x, int64_t m, float* y) {
  if (!MatMulSupports(w.type)) {
    return absl::UnimplementedError(
        absl::StrCat("no CUDA matmul kernel for ", GetTypeInfo(w.type).name, " weights"));
  }
  const TypeInfo info = GetTypeInfo(w.type);
  if (info.quantized && w.cols % info.block_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("a ", info.name, " matrix of ", w.cols,
                                                   " columns (not a multiple of ",
                                                   info.block_size, ")"));
  }
  if (m <= 0 || w.rows == 0) return absl::OkStatus();
  const auto* data = static_cast<const uint8_t*>(w.data);
  internal::DispatchType(w.type, [&](auto t) {
    constexpr GgmlType T = decltype(t)::value;
    if (m <= kSmallM) {
      dim3 grid(static_cast<unsigned>((w.rows + kWarps - 1) / kWarps), 1);
      MatMulSmallM<T><<<grid, kWarps * 32>>>(data, w.row_stride, w.rows, w.cols, x, m, y);
    } else {
      dim3 grid(static_cast<unsigned>((w.rows + kTile - 1) / kTile),
                static_cast<unsigned>((m + kTile - 1) / kTile));
      MatMulTiled<T><<<grid, 256>>>(data, w.row_stride, w.rows, w.cols, x, m, y);
    }
  });
  return LaunchStatus("MatMul");
}

}  // namespace crescent::kernels::cuda
