#include "prefill_node/cache_report.h"

#include <algorithm>
#include <utility>

namespace crescent::prefill_node {

void CacheReport::AddChain(std::vector<uint64_t> chain) {
  if (chain.empty() || !chain_keys_.insert(chain.back()).second) return;
  chains_.push_back(std::move(chain));
  if (chains_.size() > max_chains_) {
    chain_keys_.erase(chains_.front().back());
    chains_.erase(chains_.begin());
  }
}

CacheReport::Delta CacheReport::Update(const PrefixFn& prefix) {
  absl::flat_hash_set<uint64_t> now;
  std::vector<std::vector<uint64_t>> kept;
  kept.reserve(chains_.size());
  for (std::vector<uint64_t>& chain : chains_) {
    const int64_t n = std::clamp<int64_t>(prefix(chain), 0, static_cast<int64_t>(chain.size()));
    if (n == 0) {
      chain_keys_.erase(chain.back());
      continue;
    }
    now.insert(chain.begin(), chain.begin() + n);
    kept.push_back(std::move(chain));
  }
  chains_ = std::move(kept);
  Delta delta;
  delta.cached.assign(now.begin(), now.end());
  for (uint64_t h : reported_) {
    if (!now.contains(h)) delta.removed.push_back(h);
  }
  std::sort(delta.cached.begin(), delta.cached.end());
  std::sort(delta.removed.begin(), delta.removed.end());
  reported_ = std::move(now);
  return delta;
}

}  // namespace crescent::prefill_node
