#include "kernels/cuda/attention.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/internal/weights.cuh"

namespace crescent::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxDimsPerLane = 8;  // head_dim <= 256

__global__ void __launch_bounds__(kWarps * 32)
    AttentionKernel(AttentionRows rows, KvPages pages, int layer, int n_heads, float scale) {
  __shared__ float s_max[kWarps];
  __shared__ float s_sum[kWarps];
  __shared__ float s_acc[kWarps][kMaxDimsPerLane * 32];
  const int64_t r = blockIdx.x;
  const int h = blockIdx.y;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int hd = pages.head_dim;
  const int kv_dim = pages.n_kv_heads * hd;
  const int kvh = h / (n_heads / pages.n_kv_heads);
  const int pos = rows.pos[r];
  const int32_t* table = rows.table + rows.table_off[r];

  // Lane `lane` holds dimensions lane + 32 j of the head.
  float q[kMaxDimsPerLane];
  float acc[kMaxDimsPerLane];
  const float* qr = rows.q + (r * n_heads + h) * hd;
#pragma unroll
  for (int j = 0; j < kMaxDimsPerLane; ++j) {
    const int d = lane + 32 * j;
    q[j] = d < hd ? qr[d] : 0.0f;
    acc[j] = 0.0f;
  }
  float m = -INFINITY;
  float l = 0.0f;
  for (int p = warp; p <= pos; p += kWarps) {
    const uint8_t* block = pages.base + static_cast<size_t>(table[p / pages.block_tokens]) *
                                            pages.block_bytes;
    const auto* kp = reinterpret_cast<const __half*>(block + 2 * static_cast<size_t>(layer) *
                                                                 pages.page_bytes) +
                     static_cast<int64_t>(p % pages.block_tokens) * kv_dim + kvh * hd;
    const auto* vp = reinterpret_cast<const __half*>(reinterpret_cast<const uint8_t*>(kp) +
                                                     pages.page_bytes);
    float dot = 0.0f;
#pragma unroll
    for (int j = 0; j < kMaxDimsPerLane; ++j) {
      const int d = lane + 32 * j;
      if (d < hd) dot = fmaf(q[j], __half2float(kp[d]), dot);
    }
    const float s = internal::WarpSum(dot) * scale;
    const float m_new = fmaxf(m, s);
    const float corr = expf(m - m_new);  // 0 on the first position (m = -inf)
    const float e = expf(s - m_new);
    l = l * corr + e;
#pragma unroll
    for (int j = 0; j < kMaxDimsPerLane; ++j) {
      const int d = lane + 32 * j;
      if (d < hd) acc[j] = fmaf(e, __half2float(vp[d]), acc[j] * corr);
    }
    m = m_new;
  }
  if (lane == 0) {
    s_max[warp] = m;
    s_sum[warp] = l;
  }
#pragma unroll
  for (int j = 0; j < kMaxDimsPerLane; ++j) s_acc[warp][lane + 32 * j] = acc[j];
  __syncthreads();
  if (warp != 0) return;
  float mx = -INFINITY;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, s_max[w]);
  float total = 0.0f;
  float f[kWarps];
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    f[w] = s_sum[w] > 0.0f ? expf(s_max[w] - mx) : 0.0f;  // a warp with no positions adds 0
    total += s_sum[w] * f[w];
  }
  float* out = rows.out + (r * n_heads + h) * hd;
#pragma unroll
  for (int j = 0; j < kMaxDimsPerLane; ++j) {
    const int d = lane + 32 * j;
    if (d >= hd) continue;
    float o = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) o = fmaf(s_acc[w][d], f[w], o);
    out[d] = o / total;
  }
}

}  // namespace

absl::Status Attention(const AttentionRows& rows, const KvPages& pages, int layer, int n_heads,
                       float scale) {
  if (pages.head_dim <= 0 || pages.head_dim > kMaxDimsPerLane * 32) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA attention takes head_dim 1..",
                                                   kMaxDimsPerLane * 32, ", not ",
                                                   pages.head_dim));
  }
  if (pages.n_kv_heads <= 0 || n_heads % pages.n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(n_heads, " query heads do not split over ",
                                                   pages.n_kv_heads, " KV heads"));
  }
  if (rows.rows <= 0) return absl::OkStatus();
  dim3 grid(static_cast<unsigned>(rows.rows), static_cast<unsigned>(n_heads));
  AttentionKernel<<<grid, kWarps * 32>>>(rows, pages, layer, n_heads, scale);
  return LaunchStatus("Attention");
}

}  // namespace crescent::kernels::cuda
