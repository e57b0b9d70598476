#include "conductor/policy/hot_prefix.h"

#include <algorithm>
#include <map>

#include "conductor/policy/prefill_selector.h"

namespace crescent::conductor::policy {

HotPrefixTracker::HotPrefixTracker(HotPrefixOptions options) : options_(options) {}

void HotPrefixTracker::Prune(std::deque<Hit>& hits, double now_s) const {
  while (!hits.empty() && hits.front().t < now_s - options_.window_s) hits.pop_front();
}

void HotPrefixTracker::RecordHit(BlockHash block, int node, double now_s) {
  std::deque<Hit>& hits = hits_[block];
  hits.push_back({now_s, node});
  Prune(hits, now_s);
}

int HotPrefixTracker::HitsInWindow(BlockHash block, double now_s) {
  auto it = hits_.find(block);
  if (it == hits_.end()) return 0;
  Prune(it->second, now_s);
  return static_cast<int>(it->second.size());
}

std::vector<ReplicationAdvice> HotPrefixTracker::Advise(std::span<const NodeState> nodes,
                                                        double now_s) {
  std::vector<ReplicationAdvice> advice;
  for (auto it = hits_.begin(); it != hits_.end();) {
    Prune(it->second, now_s);
    if (it->second.empty()) {
      it = hits_.erase(it);
      continue;
    }
    const BlockHash block = it->first;
    const std::deque<Hit>& hits = it->second;
    ++it;
    if (static_cast<int>(hits.size()) < options_.min_hits) continue;

    std::vector<int> holders;
    std::vector<int> lacking;
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (!CanPrefill(nodes[i])) continue;
      const bool holds = nodes[i].holds_block && nodes[i].holds_block(block);
      (holds ? holders : lacking).push_back(static_cast<int>(i));
    }
    if (holders.empty() || static_cast<int>(holders.size()) >= options_.target_replicas) continue;

    std::map<int, int> hits_by_node;
    for (const Hit& h : hits) ++hits_by_node[h.node];
    ReplicationAdvice a;
    a.block = block;
    a.source_node = holders.front();
    for (int h : holders) {
      if (hits_by_node[h] > hits_by_node[a.source_node]) a.source_node = h;
    }
    std::stable_sort(lacking.begin(), lacking.end(), [&](int x, int y) {
      return PredictedQueueSeconds(nodes[x]) < PredictedQueueSeconds(nodes[y]);
    });
    const size_t want = static_cast<size_t>(options_.target_replicas) - holders.size();
    lacking.resize(std::min(lacking.size(), want));
    a.target_nodes = std::move(lacking);
    if (!a.target_nodes.empty()) advice.push_back(std::move(a));
  }
  std::sort(
      advice.begin(), advice.end(),
      [](const ReplicationAdvice& x, const ReplicationAdvice& y) { return x.block < y.block; });
  return advice;
}

}  // namespace crescent::conductor::policy
