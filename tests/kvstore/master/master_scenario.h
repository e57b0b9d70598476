// A fluent Given / When / Then harness for MasterState scenario tests.
//
//   MasterScenario s;
//   s.GivenNode("n1", /*dram=*/64 * 100).GivenNode("n2", 64 * 100);
//   ASSERT_OK(s.Put(0xa, 64, /*replicas=*/2));
//   s.AdvanceSeconds(6);                 // heartbeats every node that is not silent
//   TickReport r = s.Tick();
//   EXPECT_THAT(s.NodesOf(0xa), ...);
//
// Time is a ManualClock; advancing it heartbeats the nodes that have not been made silent, so
// only NodeGoesSilent makes a node die. Move tasks handed out by those heartbeats are kept in
// delivered() for the test to complete or fail.
#ifndef CRESCENT_TESTS_KVSTORE_MASTER_MASTER_SCENARIO_H_
#define CRESCENT_TESTS_KVSTORE_MASTER_MASTER_SCENARIO_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "kvstore/master/master_state.h"
#include "src/common/clock.h"

namespace crescent::kvstore::master::testing {

constexpr int64_t kSecond = 1'000'000'000;

inline MasterConfig ScenarioConfig() {
  MasterConfig config;
  config.put_timeout_ns = 30 * kSecond;
  config.lease_ns = 5 * kSecond;
  config.node_timeout_ns = 10 * kSecond;
  config.move_timeout_ns = 60 * kSecond;
  config.high_watermark = 0.90;
  config.low_watermark = 0.80;
  config.alignment = 64;
  return config;
}

class MasterScenario {
 public:
  explicit MasterScenario(MasterConfig config = ScenarioConfig()) : clock_(1000 * kSecond) {
    auto state = MasterState::Create(config);
    EXPECT_TRUE(state.ok()) << state.status();
    state_ = *std::move(state);
  }

  // ---- Given ----

  // Registers `id` with a DRAM segment "<id>/dram" and, if ssd_bytes > 0, "<id>/ssd".
  MasterScenario& GivenNode(const std::string& id, uint64_t dram_bytes, uint64_t ssd_bytes = 0) {
    EXPECT_TRUE(state_->RegisterNode(id, "tcp://" + id + ":7000", now()).ok());
    registered_.insert(id);
    if (dram_bytes > 0) {
      EXPECT_TRUE(state_->MountSegment(id, id + "/dram", Tier::kDram, dram_bytes, now()).ok());
    }
    if (ssd_bytes > 0) {
      EXPECT_TRUE(state_->MountSegment(id, id + "/ssd", Tier::kSsd, ssd_bytes, now()).ok());
    }
    return *this;
  }

  // ---- When ----

  // Moves time forward in steps of at most one second, heartbeating every node that is not
  // silent after each step, as live storage nodes would.
  MasterScenario& AdvanceSeconds(double seconds) {
    int64_t remaining = static_cast<int64_t>(seconds * static_cast<double>(kSecond));
    do {
      const int64_t step = std::min(remaining, kSecond);
      clock_.AdvanceNanos(step);
      remaining -= step;
      HeartbeatAll();
    } while (remaining > 0);
    return *this;
  }
  MasterScenario& NodeGoesSilent(const std::string& id) {
    silent_.insert(id);
    return *this;
  }
  void HeartbeatAll() {
    for (const std::string& id : registered_) {
      if (silent_.contains(id) || !state_->IsNodeAlive(id, now())) continue;
      auto tasks = state_->Heartbeat(id, now());
      EXPECT_TRUE(tasks.ok()) << tasks.status();
      if (tasks.ok()) delivered_.insert(delivered_.end(), tasks->begin(), tasks->end());
    }
  }

  absl::StatusOr<std::vector<Replica>> PutStart(uint64_t key, uint64_t size, int replicas = 1) {
    return state_->PutStart(key, size, replicas, now());
  }
  absl::Status PutEnd(uint64_t key) { return state_->PutEnd(key, ChecksumOf(key), now()); }
  absl::Status Put(uint64_t key, uint64_t size, int replicas = 1) {
    auto started = PutStart(key, size, replicas);
    if (!started.ok()) return started.status();
    return PutEnd(key);
  }
  // Puts keys [first, first + count) of `size` bytes, one second of clock apart from the next
  // so that their LRU order is their key order. Fails the test on any error.
  void PutSequence(uint64_t first, int count, uint64_t size) {
    for (int i = 0; i < count; ++i) {
      ASSERT_TRUE(Put(first + i, size).ok()) << KeyHex(first + i);
      AdvanceSeconds(1);
    }
  }
  absl::StatusOr<GetResult> Get(uint64_t key) { return state_->Get(key, now()); }
  TickReport Tick() { return state_->Tick(now()); }

  // Reports every delivered, not yet reported move task as done with `result`.
  void FinishDeliveredMoves(const absl::Status& result = absl::OkStatus()) {
    for (const MoveTask& task : delivered_) {
      EXPECT_TRUE(state_->MoveDone(task.id, result, now()).ok()) << task.id;
    }
    delivered_.clear();
  }

  // ---- Then ----

  bool Visible(uint64_t key) const {
    const uint64_t keys[] = {key};
    return state_->BatchExists(keys, now())[0];
  }
  // The nodes holding live replicas of `key`, DRAM ones first; empty if not visible.
  std::vector<std::string> NodesOf(uint64_t key) const {
    std::vector<std::string> nodes;
    auto replicas = state_->PeekReplicas(key, now());
    if (replicas.ok()) {
      for (const Replica& r : *replicas) nodes.push_back(r.node_id);
    }
    return nodes;
  }
  std::vector<Tier> TiersOf(uint64_t key) const {
    std::vector<Tier> tiers;
    auto replicas = state_->PeekReplicas(key, now());
    if (replicas.ok()) {
      for (const Replica& r : *replicas) tiers.push_back(r.tier);
    }
    return tiers;
  }
  double UsageFraction(Tier tier) const {
    const TierUsage u = state_->Usage(tier);
    return u.capacity == 0 ? 0.0 : static_cast<double>(u.used) / static_cast<double>(u.capacity);
  }

  static uint64_t ChecksumOf(uint64_t key) { return key * 0x9e3779b97f4a7c15ULL + 1; }

  MasterState& state() { return *state_; }
  int64_t now() const { return clock_.NowNanos(); }
  std::vector<MoveTask>& delivered() { return delivered_; }

 private:
  ManualClock clock_;
  std::unique_ptr<MasterState> state_;
  std::set<std::string> registered_;
  std::set<std::string> silent_;
  std::vector<MoveTask> delivered_;
};

}  // namespace crescent::kvstore::master::testing

#endif  // CRESCENT_TESTS_KVSTORE_MASTER_MASTER_SCENARIO_H_
