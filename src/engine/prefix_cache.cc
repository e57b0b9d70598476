#include "src/engine/prefix_cache.h"

namespace crescent::engine {

BlockPool::BlockPool(int64_t num_blocks, bool prefix_cache)
    : prefix_cache_(prefix_cache),
      ref_counts_(num_blocks, 0),
      hashes_(num_blocks, 0),
      lru_prev_(num_blocks, -1),
      lru_next_(num_blocks, -1) {
  free_.reserve(num_blocks);
  // Lowest ids on top of the stack: allocation order is 0, 1, 2, ... on a fresh pool.
  for (int64_t i = num_blocks - 1; i >= 0; --i) free_.push_back(static_cast<BlockId>(i));
}

BlockPool::BlockId BlockPool::Allocate() {
  BlockId id;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else if (lru_head_ >= 0) {
    id = lru_head_;
    LruRemove(id);
    by_hash_.erase(hashes_[id]);
    hashes_[id] = 0;
  } else {
    return -1;
  }
  ref_counts_[id] = 1;
  return id;
}

void BlockPool::Ref(BlockId id) {
  if (ref_counts_[id] == 0) LruRemove(id);  // REQUIRES says it is cached
  ++ref_counts_[id];
}

void BlockPool::Unref(BlockId id) {
  if (--ref_counts_[id] > 0) return;
  if (hashes_[id] != 0) {
    LruPushBack(id);
  } else {
    free_.push_back(id);
  }
}

void BlockPool::Register(BlockId id, uint64_t hash) {
  if (!prefix_cache_ || hash == 0 || hashes_[id] != 0) return;
  auto [it, inserted] = by_hash_.try_emplace(hash, id);
  if (inserted) hashes_[id] = hash;
}

BlockPool::BlockId BlockPool::Lookup(uint64_t hash) const {
  if (!prefix_cache_) return -1;
  auto it = by_hash_.find(hash);
  return it == by_hash_.end() ? -1 : it->second;
}

int64_t BlockPool::MatchPrefix(std::span<const uint64_t> hashes) const {
  int64_t n = 0;
  for (uint64_t h : hashes) {
    if (Lookup(h) < 0) break;
    ++n;
  }
  return n;
}

std::vector<BlockPool::BlockId> BlockPool::CachedInLruOrder() const {
  std::vector<BlockId> out;
  for (BlockId b = lru_head_; b >= 0; b = lru_next_[b]) out.push_back(b);
  return out;
}

void BlockPool::LruPushBack(BlockId id) {
  lru_prev_[id] = lru_tail_;
  lru_next_[id] = -1;
  if (lru_tail_ >= 0) {
    lru_next_[lru_tail_] = id;
  } else {
    lru_head_ = id;
  }
  lru_tail_ = id;
  ++num_cached_;
}

void BlockPool::LruRemove(BlockId id) {
  BlockId p = lru_prev_[id], n = lru_next_[id];
  if (p >= 0) {
    lru_next_[p] = n;
  } else {
    lru_head_ = n;
  }
  if (n >= 0) {
    lru_prev_[n] = p;
  } else {
    lru_tail_ = p;
  }
  lru_prev_[id] = lru_next_[id] = -1;
  --num_cached_;
}

}  // namespace crescent::engine
