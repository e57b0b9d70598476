// BlockPool: the engine's allocator of KV blocks, with reference counts and the automatic
// prefix cache.
//
// A block is in exactly one of three states:
//   free        refcount 0, no hash; on the free list.
//   referenced  refcount > 0; held by sequences' block tables or reservations (a shared prefix
//               block is held by several). May carry a hash once its KV is complete.
//   cached      refcount 0 with a hash; its KV stays valid and a later sequence whose block
//               hash chain reaches that hash takes it without recomputing (Ref). Cached blocks
//               sit in an LRU list and are evicted (hash dropped, block reused) least recently
//               released first, only when no free block is left.
//
// Only KV metadata lives here; the bytes are in the KvCache, indexed by the same BlockId. Pure
// bookkeeping: no I/O, no clock. Thread-compatible (the engine serializes calls under its lock).
#ifndef CRESCENT_SRC_ENGINE_PREFIX_CACHE_H_
#define CRESCENT_SRC_ENGINE_PREFIX_CACHE_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "src/engine/kv_cache.h"

namespace crescent::engine {

class BlockPool {
 public:
  using BlockId = KvCache::BlockId;

  // `num_blocks` > 0 blocks, all free. With `prefix_cache` false, Register is a no-op and no
  // block is ever cached.
  BlockPool(int64_t num_blocks, bool prefix_cache);

  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  int64_t num_blocks() const { return static_cast<int64_t>(ref_counts_.size()); }
  // Free blocks (no hash).
  int64_t num_free() const { return static_cast<int64_t>(free_.size()); }
  // Unreferenced blocks kept for prefix hits.
  int64_t num_cached() const { return num_cached_; }
  // Blocks Allocate can hand out: free + cached.
  int64_t num_available() const { return num_free() + num_cached_; }
  bool prefix_cache() const { return prefix_cache_; }

  // Takes a block with refcount 1: a free one if any, else evicts the least recently released
  // cached block (its hash is forgotten). Returns -1 when every block is referenced.
  BlockId Allocate();
  // Adds a reference; a cached block becomes referenced (leaves the LRU).
  // REQUIRES: RefCount(id) > 0 or IsCached(id).
  void Ref(BlockId id);
  // Drops a reference. At zero a block with a hash becomes cached (most recently used end of
  // the LRU), one without becomes free. REQUIRES: RefCount(id) > 0.
  void Unref(BlockId id);
  int RefCount(BlockId id) const { return ref_counts_[id]; }
  bool IsCached(BlockId id) const { return ref_counts_[id] == 0 && hashes_[id] != 0; }

  // Names a referenced block whose KV is complete by its chain hash. No-op when the prefix cache
  // is off, when the block already has a hash, or when another block holds `hash` (the first
  // stays the one found). REQUIRES: RefCount(id) > 0, hash != 0.
  void Register(BlockId id, uint64_t hash);
  // The block named `hash`, referenced or cached, or -1.
  BlockId Lookup(uint64_t hash) const;
  // The hash a block is registered under, 0 if none.
  uint64_t HashOf(BlockId id) const { return hashes_[id]; }

  // Longest prefix of `hashes` found, in blocks (a hint; takes no references).
  int64_t MatchPrefix(std::span<const uint64_t> hashes) const;

  // The cached blocks, least recently released first (eviction order). For tests and stats.
  std::vector<BlockId> CachedInLruOrder() const;

 private:
  void LruPushBack(BlockId id);
  void LruRemove(BlockId id);

  const bool prefix_cache_;
  std::vector<int32_t> ref_counts_;
  std::vector<uint64_t> hashes_;  // 0 = none (a real chain hash of 0 is treated as none)
  std::vector<BlockId> free_;     // a stack
  absl::flat_hash_map<uint64_t, BlockId> by_hash_;
  // Intrusive doubly linked LRU over cached blocks; -1 ends.
  std::vector<BlockId> lru_prev_, lru_next_;
  BlockId lru_head_ = -1, lru_tail_ = -1;
  int64_t num_cached_ = 0;
};

}  // namespace crescent::engine

#endif  // CRESCENT_SRC_ENGINE_PREFIX_CACHE_H_
