// Prefill node selection. Each selector picks, among the nodes that can prefill (role kPrefill,
// or kColocated), the node for one request and plans how much of its prompt comes from the
// node's own cache, from the global pool, or is recomputed.
//
//   random             uniform over prefill nodes (seeded, deterministic)
//   round_robin        in turn
//   least_loaded       smallest predicted queue time
//   local_cache_aware  smallest predicted TTFT = queue + prefill of the tokens not held locally
//   global_cache_aware Mooncake's Algorithm 1: as local_cache_aware, but blocks that continue
//                      the node's local prefix and are held in the pool are fetched when the
//                      transfer beats recomputing them
// A colocated node is a candidate only when it has free KV for the request (it decodes it too).
// Every policy reuses the prefix the chosen node holds locally (a node never recomputes what it
// has); only global_cache_aware fetches from the pool.
//
// Selectors are not thread-safe (random and round-robin keep state); callers serialise.
#ifndef CRESCENT_CONDUCTOR_POLICY_PREFILL_SELECTOR_H_
#define CRESCENT_CONDUCTOR_POLICY_PREFILL_SELECTOR_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "conductor/policy/types.h"

namespace crescent::conductor::policy {

enum class PrefillPolicy {
  kRandom,
  kRoundRobin,
  kLeastLoaded,
  kLocalCacheAware,
  kGlobalCacheAware,
};
std::string_view PrefillPolicyName(PrefillPolicy policy);
// Parses the names above ("random", "round_robin", ...; '-' accepted for '_').
// Errors: InvalidArgument naming the unknown policy.
absl::StatusOr<PrefillPolicy> ParsePrefillPolicy(std::string_view name);
// All policies, in the order above.
std::vector<PrefillPolicy> AllPrefillPolicies();

class PrefillSelector {
 public:
  virtual ~PrefillSelector() = default;
  virtual PrefillPolicy policy() const = 0;

  // Picks a node for `request` among `nodes` at time now_s. Errors: FailedPrecondition when no
  // node can prefill (none is kPrefill, or no kColocated one has free KV for it). REQUIRES: every
  // prefill-capable node has a non-null cost model.
  virtual absl::StatusOr<PrefillPlan> Select(const Request& request,
                                             std::span<const NodeState> nodes, const PoolView& pool,
                                             double now_s) = 0;
};

// A selector for `policy`; `seed` drives the random policy (ignored by the others).
std::unique_ptr<PrefillSelector> MakePrefillSelector(PrefillPolicy policy, uint64_t seed = 1);

// Whether `node` can prefill (kPrefill or kColocated).
bool CanPrefill(const NodeState& node);

// Predicted wait before a new job starts on `node`: queued_prefill_s when known, else the cost
// of its queued tokens with no cache credit.
double PredictedQueueSeconds(const NodeState& node);

// Number of leading hashes of `hashes` for which `holds` is true, starting at `from`
// (returns a count from `from`). Unset `holds` = 0.
int64_t LongestPrefix(std::span<const BlockHash> hashes, int64_t from,
                      const std::function<bool(BlockHash)>& holds);

// Plans `request` on nodes[index]: local prefix reuse and, when `pool` is non-null, the
// fetch-vs-recompute choice for the pool blocks that continue it. At least one prompt token is
// always computed (the one whose logits give the first token).
PrefillPlan PlanPrefillOn(const Request& request, const NodeState& node, int index,
                          const PoolView* pool);

}  // namespace crescent::conductor::policy

#endif  // CRESCENT_CONDUCTOR_POLICY_PREFILL_SELECTOR_H_
