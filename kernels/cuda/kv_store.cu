#include "kernels/cuda/kv_store.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/device.h"

namespace crescent::kernels::cuda {
namespace {

__global__ void StoreKvKernel(const float* k, const float* v, const int32_t* pos,
                              const int32_t* table, const int32_t* table_off, KvPages pages,
                              int layer) {
  const int64_t r = blockIdx.x;
  const int kv_dim = pages.n_kv_heads * pages.head_dim;
  const int32_t block_id = table[table_off[r] + pos[r] / pages.block_tokens];
  const int32_t slot = pos[r] % pages.block_tokens;
  uint8_t* block = pages.base + static_cast<size_t>(block_id) * pages.block_bytes;
  auto* kp = reinterpret_cast<uint16_t*>(block + 2 * static_cast<size_t>(layer) * pages.page_bytes) +
             static_cast<int64_t>(slot) * kv_dim;
  auto* vp = reinterpret_cast<uint16_t*>(reinterpret_cast<uint8_t*>(kp) + pages.page_bytes);
  for (int e = threadIdx.x; e < kv_dim; e += blockDim.x) {
    kp[e] = __half_as_ushort(__float2half_rn(k[r * kv_dim + e]));
    vp[e] = __half_as_ushort(__float2half_rn(v[r * kv_dim + e]));
  }
}

}  // namespace

absl::Status StoreKv(const float* k, const float* v, int64_t rows, const int32_t* pos,
                     const int32_t* table, const int32_t* table_off, const KvPages& pages,
                     int layer) {
  if (rows <= 0) return absl::OkStatus();
  StoreKvKernel<<<static_cast<unsigned>(rows), 128>>>(k, v, pos, table, table_off, pages, layer);
  return LaunchStatus("StoreKv");
}

}  // namespace crescent::kernels::cuda
