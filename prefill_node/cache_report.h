// CacheReport: which block hashes a node's prefix cache holds, as the heartbeat's
// cached_added / cached_removed (proto/cluster.proto NodeLoad).
//
// The engine does not announce its cache's insertions and evictions, so the node tracks the
// hash chains of the prompts it served (AddChain) and asks, at each heartbeat, how long a prefix
// of each chain is still cached (the engine's CachedPrefixBlocks). Pure: the lookup is passed in.
#ifndef CRESCENT_PREFILL_NODE_CACHE_REPORT_H_
#define CRESCENT_PREFILL_NODE_CACHE_REPORT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/container/flat_hash_set.h"

namespace crescent::prefill_node {

class CacheReport {
 public:
  // How many leading hashes of a chain are cached now.
  using PrefixFn = std::function<int64_t(std::span<const uint64_t> chain)>;

  // Keeps at most `max_chains` chains (the oldest are forgotten first).
  explicit CacheReport(size_t max_chains = 4096) : max_chains_(max_chains) {}

  // Tracks a prompt's full-block hash chain. A chain equal to a tracked one is ignored.
  void AddChain(std::vector<uint64_t> chain);

  struct Delta {
    // Every tracked hash cached now (the whole set each time: a heartbeat may be lost, and
    // adding a known hash is harmless), and those that left since the previous Update.
    std::vector<uint64_t> cached;
    std::vector<uint64_t> removed;
  };
  // Re-checks every chain with `prefix`; chains no longer cached at all are forgotten.
  // Not thread-safe (one caller: the heartbeat thread).
  Delta Update(const PrefixFn& prefix);

  size_t num_chains() const { return chains_.size(); }

 private:
  const size_t max_chains_;
  std::vector<std::vector<uint64_t>> chains_;  // oldest first
  absl::flat_hash_set<uint64_t> chain_keys_;   // last hash of each tracked chain
  absl::flat_hash_set<uint64_t> reported_;     // cached at the previous Update
};

}  // namespace crescent::prefill_node

#endif  // CRESCENT_PREFILL_NODE_CACHE_REPORT_H_
