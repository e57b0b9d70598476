#include "conductor/policy/prefill_selector.h"

#include <algorithm>
#include <limits>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "conductor/policy/cost_model.h"

namespace crescent::conductor::policy {
namespace {

absl::Status NoPrefillNode() {
  return absl::FailedPreconditionError(
      "no node can prefill (no prefill node, or no colocated node with free KV)");
}

// A colocated node also decodes the request, so it must have room for its KV.
bool Eligible(const Request& request, const NodeState& node) {
  if (!CanPrefill(node)) return false;
  if (node.role != NodeRole::kColocated) return true;
  return node.free_kv_blocks >=
         BlocksFor(request.prompt_tokens + request.max_output_tokens, node.cost->block_tokens());
}

class RandomSelector final : public PrefillSelector {
 public:
  explicit RandomSelector(uint64_t seed) : rng_(seed) {}
  PrefillPolicy policy() const override { return PrefillPolicy::kRandom; }
  absl::StatusOr<PrefillPlan> Select(const Request& request, std::span<const NodeState> nodes,
                                     const PoolView& pool, double now_s) override {
    std::vector<int> candidates;
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (Eligible(request, nodes[i])) candidates.push_back(static_cast<int>(i));
    }
    if (candidates.empty()) return NoPrefillNode();
    // Not std::uniform_int_distribution: its output differs between standard libraries, and the
    // simulator's reports must be reproducible everywhere.
    const int pick = candidates[rng_() % candidates.size()];
    return PlanPrefillOn(request, nodes[pick], pick, nullptr);
  }

 private:
  std::mt19937_64 rng_;
};

class RoundRobinSelector final : public PrefillSelector {
 public:
  PrefillPolicy policy() const override { return PrefillPolicy::kRoundRobin; }
  absl::StatusOr<PrefillPlan> Select(const Request& request, std::span<const NodeState> nodes,
                                     const PoolView& pool, double now_s) override {
    for (size_t tried = 0; tried < nodes.size(); ++tried) {
      const size_t i = next_++ % nodes.size();
      if (Eligible(request, nodes[i]))
        return PlanPrefillOn(request, nodes[i], static_cast<int>(i), nullptr);
    }
    return NoPrefillNode();
  }

 private:
  size_t next_ = 0;
};

// Picks the plan with the smallest key(plan); ties go to the lower index.
template <typename Key>
absl::StatusOr<PrefillPlan> ArgMin(const Request& request, std::span<const NodeState> nodes,
                                   const PoolView* pool, Key key) {
  PrefillPlan best;
  double best_key = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (!Eligible(request, nodes[i])) continue;
    PrefillPlan plan = PlanPrefillOn(request, nodes[i], static_cast<int>(i), pool);
    const double k = key(plan);
    if (best.node < 0 || k < best_key) {
      best = plan;
      best_key = k;
    }
  }
  if (best.node < 0) return NoPrefillNode();
  return best;
}

class LeastLoadedSelector final : public PrefillSelector {
 public:
  PrefillPolicy policy() const override { return PrefillPolicy::kLeastLoaded; }
  absl::StatusOr<PrefillPlan> Select(const Request& request, std::span<const NodeState> nodes,
                                     const PoolView& pool, double now_s) override {
    return ArgMin(request, nodes, nullptr, [](const PrefillPlan& p) { return p.queue_s; });
  }
};

class CacheAwareSelector final : public PrefillSelector {
 public:
  explicit CacheAwareSelector(bool global) : global_(global) {}
  PrefillPolicy policy() const override {
    return global_ ? PrefillPolicy::kGlobalCacheAware : PrefillPolicy::kLocalCacheAware;
  }
  absl::StatusOr<PrefillPlan> Select(const Request& request, std::span<const NodeState> nodes,
                                     const PoolView& pool, double now_s) override {
    return ArgMin(request, nodes, global_ ? &pool : nullptr,
                  [](const PrefillPlan& p) { return p.ttft_s; });
  }

 private:
  bool global_;
};

}  // namespace

std::string_view PrefillPolicyName(PrefillPolicy policy) {
  switch (policy) {
    case PrefillPolicy::kRandom:
      return "random";
    case PrefillPolicy::kRoundRobin:
      return "round_robin";
    case PrefillPolicy::kLeastLoaded:
      return "least_loaded";
    case PrefillPolicy::kLocalCacheAware:
      return "local_cache_aware";
    case PrefillPolicy::kGlobalCacheAware:
      return "global_cache_aware";
  }
  return "unknown";
}

absl::StatusOr<PrefillPolicy> ParsePrefillPolicy(std::string_view name) {
  std::string n(name);
  std::replace(n.begin(), n.end(), '-', '_');
  for (PrefillPolicy p : AllPrefillPolicies()) {
    if (n == PrefillPolicyName(p)) return p;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown prefill policy '", n,
      "' (want random, round_robin, least_loaded, local_cache_aware or global_cache_aware)"));
}

std::vector<PrefillPolicy> AllPrefillPolicies() {
  return {PrefillPolicy::kRandom, PrefillPolicy::kRoundRobin, PrefillPolicy::kLeastLoaded,
          PrefillPolicy::kLocalCacheAware, PrefillPolicy::kGlobalCacheAware};
}

std::unique_ptr<PrefillSelector> MakePrefillSelector(PrefillPolicy policy, uint64_t seed) {
  switch (policy) {
    case PrefillPolicy::kRandom:
      return std::make_unique<RandomSelector>(seed);
    case PrefillPolicy::kRoundRobin:
      return std::make_unique<RoundRobinSelector>();
    case PrefillPolicy::kLeastLoaded:
      return std::make_unique<LeastLoadedSelector>();
    case PrefillPolicy::kLocalCacheAware:
      return std::make_unique<CacheAwareSelector>(false);
    case PrefillPolicy::kGlobalCacheAware:
      return std::make_unique<CacheAwareSelector>(true);
  }
  return nullptr;
}

bool CanPrefill(const NodeState& node) {
  return node.role == NodeRole::kPrefill || node.role == NodeRole::kColocated;
}

double PredictedQueueSeconds(const NodeState& node) {
  if (node.queued_prefill_s >= 0.0) return node.queued_prefill_s;
  return node.cost->PrefillSeconds(node.queued_prefill_tokens, 0);
}

int64_t LongestPrefix(std::span<const BlockHash> hashes, int64_t from,
                      const std::function<bool(BlockHash)>& holds) {
  if (!holds) return 0;
  int64_t n = 0;
  for (size_t i = static_cast<size_t>(from); i < hashes.size() && holds(hashes[i]); ++i) ++n;
  return n;
}

PrefillPlan PlanPrefillOn(const Request& request, const NodeState& node, int index,
                          const PoolView* pool) {
  const CostModel& cost = *node.cost;
  const int64_t bt = cost.block_tokens();
  // Only blocks that leave at least one token to compute are usable.
  const int64_t usable = std::min<int64_t>(static_cast<int64_t>(request.block_hashes.size()),
                                           std::max<int64_t>(request.prompt_tokens - 1, 0) / bt);
  const std::span<const BlockHash> hashes(request.block_hashes.data(), usable);

  PrefillPlan plan;
  plan.node = index;
  plan.queue_s = PredictedQueueSeconds(node);
  plan.local_blocks = LongestPrefix(hashes, 0, node.holds_block);
  int64_t cached = plan.local_blocks * bt;
  plan.prefill_s = cost.PrefillSeconds(request.prompt_tokens - cached, cached);

  if (pool != nullptr) {
    const int64_t fetchable = LongestPrefix(hashes, plan.local_blocks, pool->holds_block);
    if (fetchable > 0) {
      const int64_t with_fetch = cached + fetchable * bt;
      const double fetch_s = cost.BlockTransferSeconds(fetchable);
      const double prefill_s = cost.PrefillSeconds(request.prompt_tokens - with_fetch, with_fetch);
      if (fetch_s + prefill_s < plan.prefill_s) {
        plan.fetch_blocks = fetchable;
        plan.fetch_s = fetch_s;
        plan.prefill_s = prefill_s;
        cached = with_fetch;
      }
    }
  }
  plan.cached_tokens = cached;
  plan.compute_tokens = request.prompt_tokens - cached;
  plan.ttft_s = plan.queue_s + plan.fetch_s + plan.prefill_s;
  return plan;
}

}  // namespace crescent::conductor::policy
