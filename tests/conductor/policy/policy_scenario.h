// A fluent Given / When / Then harness for the Conductor's scheduling policy.
//
//   PolicyScenario s(PrefillPolicy::kGlobalCacheAware);
//   s.GivenPrefillNode("p0").GivenPrefillNode("p1").Holding({1, 2, 3});
//   s.GivenDecodeNode("d0", /*free_kv_blocks=*/100);
//   Decision d = s.WhenRequest(/*prompt_tokens=*/100, {1, 2, 3, 4, 5});
//   EXPECT_EQ(s.PrefillNodeOf(d), "p1");
//
// Every node shares one cost model (ScenarioCost unless GivenCost replaces it): 16-token blocks,
// prefill 1 ms per new token, decode step 10 ms + 1 ms per request, 1000 KV bytes per token.
// Time is a ManualClock starting at 1000 s; requests arrive at its current time.
#ifndef CRESCENT_TESTS_CONDUCTOR_POLICY_POLICY_SCENARIO_H_
#define CRESCENT_TESTS_CONDUCTOR_POLICY_POLICY_SCENARIO_H_

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "conductor/policy/cost_model.h"
#include "conductor/policy/prefill_selector.h"
#include "conductor/policy/scheduler.h"
#include "conductor/policy/types.h"
#include "gtest/gtest.h"
#include "src/common/clock.h"

namespace crescent::conductor::policy::testing {

constexpr int kBlockTokens = 16;
constexpr int64_t kKvBytesPerToken = 1000;
constexpr int64_t kBlockBytes = kBlockTokens * kKvBytesPerToken;

// bandwidth in bytes/s; the default moves one block in 1 ms (16x faster than recomputing it).
inline CostModel ScenarioCost(double bandwidth = kBlockBytes / 0.001) {
  return CostModel::FromCoefficients({0.0, 0.001, 0.0}, {0.010, 0.001, 0.0}, kBlockTokens,
                                     kKvBytesPerToken, bandwidth, 0.0);
}

class PolicyScenario {
 public:
  explicit PolicyScenario(PrefillPolicy policy = PrefillPolicy::kGlobalCacheAware,
                          SchedulerOptions options = {}, uint64_t seed = 1)
      : clock_(1000'000'000'000),
        cost_(std::make_unique<CostModel>(ScenarioCost())),
        scheduler_(MakePrefillSelector(policy, seed), options) {}

  // ---- Given ----

  PolicyScenario& GivenCost(const CostModel& cost) {
    *cost_ = cost;
    return *this;
  }
  PolicyScenario& GivenPrefillNode(const std::string& id) {
    return AddNode(id, NodeRole::kPrefill);
  }
  PolicyScenario& GivenColocatedNode(const std::string& id, int64_t free_kv_blocks = 1000) {
    AddNode(id, NodeRole::kColocated);
    nodes_.back().free_kv_blocks = free_kv_blocks;
    return *this;
  }
  PolicyScenario& GivenDecodeNode(const std::string& id, int64_t free_kv_blocks = 1000) {
    AddNode(id, NodeRole::kDecode);
    nodes_.back().free_kv_blocks = free_kv_blocks;
    return *this;
  }
  // The last node given holds these blocks in its local cache.
  PolicyScenario& Holding(const std::vector<BlockHash>& blocks) {
    held_.back().insert(blocks.begin(), blocks.end());
    return *this;
  }
  // The last node given has this much prefill work queued.
  PolicyScenario& WithQueueSeconds(double seconds) {
    nodes_.back().queued_prefill_s = seconds;
    return *this;
  }
  // The last node given runs a decode batch of `batch` requests with `context` tokens in all.
  PolicyScenario& WithDecodeBatch(int batch, int64_t context) {
    nodes_.back().running_decode_batch = batch;
    nodes_.back().decode_context_tokens = context;
    return *this;
  }
  // The last node given forecasts its decode batch to be `later_batch` from `at_s` seconds from
  // now on (requests finishing meanwhile).
  PolicyScenario& WithDecodeBatchLater(double at_s, int later_batch) {
    NodeState& n = nodes_.back();
    const double t = now_s() + at_s;
    const DecodeLoad now{n.running_decode_batch, n.decode_context_tokens};
    n.decode_load_at = [now, t, later_batch](double when) {
      return when >= t ? DecodeLoad{later_batch, 0} : now;
    };
    return *this;
  }
  PolicyScenario& GivenPoolHolding(const std::vector<BlockHash>& blocks) {
    pool_blocks_.insert(blocks.begin(), blocks.end());
    return *this;
  }

  // ---- When ----

  // A request of `prompt_tokens` whose full blocks hash to `hashes`.
  Decision WhenRequest(int64_t prompt_tokens, std::vector<BlockHash> hashes,
                       int64_t max_output_tokens = 16) {
    Request r;
    r.id = ++next_id_;
    r.prompt_tokens = prompt_tokens;
    r.block_hashes = std::move(hashes);
    r.max_output_tokens = max_output_tokens;
    r.arrival_s = now_s();
    return WhenRequest(r);
  }
  Decision WhenRequest(const Request& r) {
    PoolView pool;
    pool.holds_block = [this](BlockHash h) { return pool_blocks_.contains(h); };
    return scheduler_.Schedule(r, nodes_, pool, now_s());
  }
  void AdvanceSeconds(double s) { clock_.AdvanceSeconds(s); }

  // ---- Then ----

  std::string PrefillNodeOf(const Decision& d) const {
    return d.prefill.node < 0 ? "" : nodes_[d.prefill.node].id;
  }
  std::string DecodeNodeOf(const Decision& d) const {
    return d.decode.node < 0 ? "" : nodes_[d.decode.node].id;
  }

  double now_s() const { return clock_.NowSeconds(); }
  std::vector<NodeState>& nodes() { return nodes_; }
  const CostModel& cost() const { return *cost_; }

 private:
  PolicyScenario& AddNode(const std::string& id, NodeRole role) {
    held_.push_back(std::make_unique<std::set<BlockHash>>());
    NodeState n;
    n.id = id;
    n.role = role;
    n.queued_prefill_s = 0.0;
    n.cost = cost_.get();
    const std::set<BlockHash>* held = &held_.back();
    n.holds_block = [held](BlockHash h) { return held->contains(h); };
    nodes_.push_back(std::move(n));
    return *this;
  }

  // Holding() edits the set the last node's callback reads.
  struct HeldList {
    std::vector<std::unique_ptr<std::set<BlockHash>>> sets;
    void push_back(std::unique_ptr<std::set<BlockHash>> s) { sets.push_back(std::move(s)); }
    std::set<BlockHash>& back() { return *sets.back(); }
  };

  ManualClock clock_;
  std::unique_ptr<CostModel> cost_;
  Scheduler scheduler_;
  std::vector<NodeState> nodes_;
  HeldList held_;
  std::set<BlockHash> pool_blocks_;
  uint64_t next_id_ = 0;
};

// Hashes first, first + 1, ..., first + count - 1.
inline std::vector<BlockHash> Blocks(BlockHash first, int count) {
  std::vector<BlockHash> v;
  for (int i = 0; i < count; ++i) v.push_back(first + i);
  return v;
}

}  // namespace crescent::conductor::policy::testing

#endif  // CRESCENT_TESTS_CONDUCTOR_POLICY_POLICY_SCENARIO_H_
