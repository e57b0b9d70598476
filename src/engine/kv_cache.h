// KvCache: the paged KV cache an engine computes into — fixed-size blocks of `block_tokens`
// positions, f16, one block holding every layer so that it is also the pool's unit of transfer.
//
// Memory layout of one block (DESIGN.md "Canonical KV block", without the header):
//   for layer in [0, n_layers): K [block_tokens][n_kv_heads][head_dim] then V (same shape)
// so a whole block is one contiguous byte range, and one layer of one block is two pages.
//
// Blocks are reference counted: a sequence's block table holds references, and blocks shared
// by several sequences (a common prefix) are never copied. Thread-compatible: callers
// serialize Allocate/Ref/Unref (the scheduler owns the cache); page pointers stay valid for
// the cache's lifetime.
#ifndef CRESCENT_SRC_ENGINE_KV_CACHE_H_
#define CRESCENT_SRC_ENGINE_KV_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cpu/huge_pages.h"

namespace crescent::engine {

struct KvCacheConfig {
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int block_tokens = 16;
  int64_t num_blocks = 0;

  // Bytes of one K (or V) page: one layer of one block.
  size_t PageBytes() const {
    return static_cast<size_t>(block_tokens) * n_kv_heads * head_dim * sizeof(uint16_t);
  }
  // Bytes of one whole block (all layers, K and V).
  size_t BlockBytes() const { return PageBytes() * 2 * static_cast<size_t>(n_layers); }
};

class KvCache {
 public:
  using BlockId = int32_t;

  // Allocates num_blocks blocks, zeroed and committed, on transparent huge pages where the
  // kernel grants them: a decode step reads a few pages of every block in every layer, and on
  // 4 KiB pages each of those reads is a TLB miss. Errors: InvalidArgument for a non-positive
  // field, ResourceExhausted when the memory cannot be had.
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(const KvCacheConfig& config);
  // As Create, over `data` (BlockBytes() * num_blocks bytes, 64-byte aligned), which the caller
  // owns and keeps valid for the cache's lifetime (e.g. a transfer-engine segment). Zeroes it.
  // Errors: InvalidArgument for a bad config, a null or misaligned `data`.
  static absl::StatusOr<std::unique_ptr<KvCache>> CreateInMemory(const KvCacheConfig& config,
                                                                 void* data);
  // Bytes Create would allocate for `config`. REQUIRES: a valid config.
  static size_t MemoryBytes(const KvCacheConfig& config) {
    return config.BlockBytes() * static_cast<size_t>(config.num_blocks);
  }

  const KvCacheConfig& config() const { return config_; }
  // Unique among the caches of this process, never reused: tells a backend that keeps state
  // about a cache's memory (CudaBackend maps it for the device) a new cache from an old one
  // that happened to sit at the same address.
  uint64_t id() const { return id_; }
  int64_t num_blocks() const { return config_.num_blocks; }
  int64_t num_free_blocks() const { return static_cast<int64_t>(free_.size()); }

  // Takes a free block with reference count 1, or returns -1 when none is free.
  BlockId Allocate();
  // Adds a reference to an allocated block. REQUIRES: RefCount(id) > 0.
  void Ref(BlockId id);
  // Drops a reference; the block returns to the free list at zero. REQUIRES: RefCount(id) > 0.
  void Unref(BlockId id);
  int RefCount(BlockId id) const { return ref_counts_[id]; }

  // Appends newly allocated blocks to `table` until it covers `positions` positions. Errors:
  // ResourceExhausted when the cache runs out; the blocks appended before that stay in `table`
  // (the caller owns and releases them).
  absl::Status GrowTable(int64_t positions, std::vector<BlockId>* table);

  // Start of a block's bytes (BlockBytes() long) and of one layer's K and V pages.
  uint8_t* BlockData(BlockId id) { return data_ + static_cast<size_t>(id) * block_bytes_; }
  uint16_t* KPage(BlockId id, int layer) {
    return reinterpret_cast<uint16_t*>(BlockData(id) + static_cast<size_t>(layer) * 2 * page_bytes_);
  }
  uint16_t* VPage(BlockId id, int layer) {
    return reinterpret_cast<uint16_t*>(BlockData(id) +
                                       (static_cast<size_t>(layer) * 2 + 1) * page_bytes_);
  }

 private:
  // `owned` is null when the memory is the caller's (CreateInMemory).
  KvCache(const KvCacheConfig& config, uint8_t* data,
          std::unique_ptr<kernels::HugePageBuffer> owned);
  static absl::Status CheckConfig(const KvCacheConfig& config);

  const KvCacheConfig config_;
  const uint64_t id_;
  const size_t page_bytes_;
  const size_t block_bytes_;
  std::unique_ptr<kernels::HugePageBuffer> owned_;
  uint8_t* const data_;
  std::vector<int32_t> ref_counts_;
  std::vector<BlockId> free_;  // a stack: the most recently freed block is reused first.
};

}  // namespace crescent::engine

#endif  // CRESCENT_SRC_ENGINE_KV_CACHE_H_
