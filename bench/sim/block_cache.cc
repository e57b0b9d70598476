#include "bench/sim/block_cache.h"

namespace crescent::bench::sim {

LruBlockCache::LruBlockCache(int64_t capacity_blocks) : capacity_(capacity_blocks) {}

void LruBlockCache::Touch(uint64_t block) {
  if (capacity_ <= 0) return;
  auto it = index_.find(block);
  if (it != index_.end()) {
    order_.splice(order_.begin(), order_, it->second);
    return;
  }
  order_.push_front(block);
  index_.emplace(block, order_.begin());
  if (static_cast<int64_t>(index_.size()) > capacity_) {
    index_.erase(order_.back());
    order_.pop_back();
    ++evictions_;
  }
}

}  // namespace crescent::bench::sim
