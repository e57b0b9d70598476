// LruBlockCache: a set of block hashes with a capacity in blocks, evicting the least recently
// used. Models a node's local prefix cache and the global KV pool in the simulator. Not
// thread-safe.
#ifndef CRESCENT_BENCH_SIM_BLOCK_CACHE_H_
#define CRESCENT_BENCH_SIM_BLOCK_CACHE_H_

#include <cstdint>
#include <list>
#include <unordered_map>

namespace crescent::bench::sim {

class LruBlockCache {
 public:
  // capacity 0 = holds nothing.
  explicit LruBlockCache(int64_t capacity_blocks);

  bool Contains(uint64_t block) const { return index_.contains(block); }
  // Inserts `block` or marks it most recently used; evicts the LRU block when over capacity.
  void Touch(uint64_t block);

  int64_t size() const { return static_cast<int64_t>(index_.size()); }
  int64_t capacity() const { return capacity_; }
  int64_t evictions() const { return evictions_; }

 private:
  int64_t capacity_;
  int64_t evictions_ = 0;
  std::list<uint64_t> order_;  // front = most recently used
  std::unordered_map<uint64_t, std::list<uint64_t>::iterator> index_;
};

}  // namespace crescent::bench::sim

#endif  // CRESCENT_BENCH_SIM_BLOCK_CACHE_H_
