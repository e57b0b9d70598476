// Writes new tokens' K and V into the paged cache on the device.
#ifndef CRESCENT_KERNELS_CUDA_KV_STORE_H_
#define CRESCENT_KERNELS_CUDA_KV_STORE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/kv_pages.h"

namespace crescent::kernels::cuda {

// For r < rows: row r of k and v ([rows][n_kv_heads * head_dim] f32) goes, rounded to f16
// (nearest even, as kernels::F32ToF16Row), into the K and V pages of `layer` at position pos[r]
// of its sequence: slot pos[r] % block_tokens of block table[table_off[r] + pos[r] /
// block_tokens] (the rows addressed as Attention's are). Device pointers. Asynchronous.
// Errors: Internal when the launch fails.
// REQUIRES: the tables cover the positions with valid blocks; no two rows name the same slot.
absl::Status StoreKv(const float* k, const float* v, int64_t rows, const int32_t* pos,
                     const int32_t* table, const int32_t* table_off, const KvPages& pages,
                     int layer);

}  // namespace crescent::kernels::cuda

#endif  // CRESCENT_KERNELS_CUDA_KV_STORE_H_
