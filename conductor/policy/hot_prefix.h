// Hot-prefix replication advice: blocks hit often within a time window but held by fewer than
// the target number of prefill nodes should be copied (through the pool) to the least-loaded
// prefill nodes that lack them, so that cache-aware selection stops piling every request that
// shares a popular prefix onto one node. Not thread-safe.
#ifndef CRESCENT_CONDUCTOR_POLICY_HOT_PREFIX_H_
#define CRESCENT_CONDUCTOR_POLICY_HOT_PREFIX_H_

#include <cstdint>
#include <deque>
#include <span>
#include <unordered_map>
#include <vector>

#include "conductor/policy/types.h"

namespace crescent::conductor::policy {

struct HotPrefixOptions {
  double window_s = 60.0;   // hits older than this are forgotten
  int min_hits = 8;         // hits within the window that make a block hot
  int target_replicas = 2;  // prefill nodes that should hold a hot block
};

struct ReplicationAdvice {
  BlockHash block = 0;
  int source_node = -1;           // a node holding it (the one with the most hits)
  std::vector<int> target_nodes;  // nodes that should get a copy, least loaded first
};

class HotPrefixTracker {
 public:
  explicit HotPrefixTracker(HotPrefixOptions options = {});

  // Records that `node` reused `block` at now_s. REQUIRES: now_s non-decreasing across calls.
  void RecordHit(BlockHash block, int node, double now_s);

  // Advice for every block hot at now_s and held (per holds_block) by fewer than
  // target_replicas of the prefill-capable `nodes`; sorted by block hash. Forgets hits older
  // than the window.
  std::vector<ReplicationAdvice> Advise(std::span<const NodeState> nodes, double now_s);

  // Hits of `block` within the window ending at now_s.
  int HitsInWindow(BlockHash block, double now_s);

 private:
  struct Hit {
    double t;
    int node;
  };
  void Prune(std::deque<Hit>& hits, double now_s) const;

  HotPrefixOptions options_;
  std::unordered_map<BlockHash, std::deque<Hit>> hits_;
};

}  // namespace crescent::conductor::policy

#endif  // CRESCENT_CONDUCTOR_POLICY_HOT_PREFIX_H_
