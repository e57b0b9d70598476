// Where a paged f16 KV cache's pages are, as the device sees them: the engine's KvCache layout
// (src/engine/kv_cache.h) — block b starts at base + b * block_bytes and holds, for each layer
// l, a K page at 2 l * page_bytes and a V page right after it, each
// [block_tokens][n_kv_heads][head_dim] f16.
#ifndef CRESCENT_KERNELS_CUDA_KV_PAGES_H_
#define CRESCENT_KERNELS_CUDA_KV_PAGES_H_

#include <cstddef>
#include <cstdint>

namespace crescent::kernels::cuda {

struct KvPages {
  uint8_t* base = nullptr;  // device address of block 0 (device or mapped host memory)
  size_t block_bytes = 0;
  size_t page_bytes = 0;
  int block_tokens = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
};

}  // namespace crescent::kernels::cuda

#endif  // CRESCENT_KERNELS_CUDA_KV_PAGES_H_
