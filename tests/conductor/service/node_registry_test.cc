#include "conductor/service/node_registry.h"

#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/common/clock.h"

namespace crescent::conductor::service {
namespace {

namespace v1 = cluster::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr uint64_t kFingerprint = 0xfeedULL;

NodeRegistryOptions Options() {
  NodeRegistryOptions o;
  o.model_fingerprint = kFingerprint;
  o.model_id = "tiny";
  o.kv_bytes_per_token = 1024;
  o.node_timeout_s = 3.0;
  return o;
}

v1::NodeInfo Info(const std::string& id, v1::Role role, int64_t total_blocks = 100) {
  v1::NodeInfo info;
  info.set_node_id(id);
  info.set_role(role);
  info.set_grpc_endpoint("127.0.0.1:" + std::to_string(1000 + id.size()));
  info.set_model_id("tiny");
  info.set_model_fingerprint(kFingerprint);
  info.set_block_tokens(16);
  info.set_total_blocks(total_blocks);
  return info;
}

v1::HeartbeatRequest Beat(const std::string& id, int64_t free_blocks = 50) {
  v1::HeartbeatRequest beat;
  beat.set_node_id(id);
  beat.mutable_load()->set_free_blocks(free_blocks);
  return beat;
}

std::vector<std::string> Ids(const RegistrySnapshot& snap) {
  std::vector<std::string> ids;
  for (const auto& n : snap.nodes) ids.push_back(n.id);
  return ids;
}

TEST(NodeRegistryTest, RegisterAndSnapshot) {
  ManualClock clock;
  NodeRegistry registry(Options(), &clock);
  auto r = registry.Register(Info("p1", v1::ROLE_PREFILL));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->heartbeat_interval_ms(), 500);
  ASSERT_TRUE(registry.Register(Info("d1", v1::ROLE_DECODE, 64)).ok());
  EXPECT_EQ(registry.block_tokens(), 16);

  RegistrySnapshot snap = registry.Snapshot();
  ASSERT_THAT(Ids(snap), ElementsAre("d1", "p1"));
  EXPECT_EQ(snap.nodes[0].role, policy::NodeRole::kDecode);
  EXPECT_EQ(snap.nodes[0].free_kv_blocks, 64);  // total until the first beat
  EXPECT_EQ(snap.nodes[1].role, policy::NodeRole::kPrefill);
  ASSERT_NE(snap.nodes[1].cost, nullptr);
  EXPECT_EQ(snap.nodes[1].cost->block_tokens(), 16);
  EXPECT_EQ(snap.endpoints[1], Info("p1", v1::ROLE_PREFILL).grpc_endpoint());
  LiveCounts live = registry.CountLive();
  EXPECT_EQ(live.prefill, 1);
  EXPECT_EQ(live.decode, 1);
}

TEST(NodeRegistryTest, HeartbeatUpdatesLoad) {
  ManualClock clock;
  NodeRegistry registry(Options(), &clock);
  ASSERT_TRUE(registry.Register(Info("d1", v1::ROLE_DECODE)).ok());
  v1::HeartbeatRequest beat = Beat("d1", 7);
  beat.mutable_load()->set_running_requests(3);
  beat.mutable_load()->set_running_context_tokens(900);
  v1::HeartbeatResponse resp = registry.Heartbeat(beat);
  EXPECT_FALSE(resp.reregister());
  RegistrySnapshot snap = registry.Snapshot();
  ASSERT_EQ(snap.nodes.size(), 1u);
  EXPECT_EQ(snap.nodes[0].free_kv_blocks, 7);
  EXPECT_EQ(snap.nodes[0].running_decode_batch, 3);
  EXPECT_EQ(snap.nodes[0].decode_context_tokens, 900);
}

TEST(NodeRegistryTest, PlacedWorkCountsUntilDoneOrReported) {
  ManualClock clock;
  NodeRegistry registry(Options(), &clock);
  ASSERT_TRUE(registry.Register(Info("d1", v1::ROLE_DECODE)).ok());
  ASSERT_TRUE(registry.Register(Info("p1", v1::ROLE_PREFILL)).ok());
  v1::HeartbeatRequest pbeat = Beat("p1");
  pbeat.mutable_load()->set_queued_prefill_tokens(100);
  registry.Heartbeat(pbeat);
  registry.Heartbeat(Beat("d1", 40));

  // A burst between two beats: the snapshot sees the work placed since.
  registry.AddPlaced("p1", 300, 0, 0, 0);
  registry.AddPlaced("p1", 250, 0, 0, 0);
  registry.AddPlaced("d1", 0, 1, 500, 12);
  registry.AddPlaced("d1", 0, 1, 700, 20);
  registry.AddPlaced("ghost", 1, 1, 1, 1);  // ignored
  RegistrySnapshot snap = registry.Snapshot();
  ASSERT_THAT(Ids(snap), ElementsAre("d1", "p1"));
  EXPECT_EQ(snap.nodes[1].queued_prefill_tokens, 550);  // more than the node's last report
  EXPECT_EQ(snap.nodes[0].running_decode_batch, 2);
  EXPECT_EQ(snap.nodes[0].decode_context_tokens, 1200);
  EXPECT_EQ(snap.nodes[0].free_kv_blocks, 8);  // 40 reported - 32 reserved since

  // Done work comes off; a beat takes over the block count (it reflects the reservations).
  registry.AddPlaced("p1", -550, 0, 0, 0);
  registry.AddPlaced("d1", 0, -1, -500, 0);
  registry.Heartbeat(Beat("d1", 30));
  snap = registry.Snapshot();
  EXPECT_EQ(snap.nodes[1].queued_prefill_tokens, 100);  // the node's own report again
  EXPECT_EQ(snap.nodes[0].running_decode_batch, 1);
  EXPECT_EQ(snap.nodes[0].decode_context_tokens, 700);
  EXPECT_EQ(snap.nodes[0].free_kv_blocks, 30);
}

TEST(NodeRegistryTest, SilentNodeDiesAndABeatRevivesIt) {
  ManualClock clock;
  NodeRegistry registry(Options(), &clock);
  ASSERT_TRUE(registry.Register(Info("p1", v1::ROLE_PREFILL)).ok());
  clock.AdvanceSeconds(2.9);
  EXPECT_EQ(registry.CountLive().prefill, 1);
  clock.AdvanceSeconds(0.2);  // 3.1 s without a beat
  EXPECT_EQ(registry.CountLive().prefill, 0);
  EXPECT_TRUE(registry.Snapshot().nodes.empty());
  EXPECT_TRUE(registry.Find("p1").has_value());  // known, but dead
  EXPECT_FALSE(registry.Heartbeat(Beat("p1")).reregister());
  EXPECT_EQ(registry.CountLive().prefill, 1);
}

TEST(NodeRegistryTest, UnknownHeartbeatAsksToReregister) {
  ManualClock clock;
  NodeRegistry registry(Options(), &clock);
  v1::HeartbeatResponse resp = registry.Heartbeat(Beat("ghost"));
  EXPECT_TRUE(resp.reregister());
  EXPECT_FALSE(registry.Find("ghost").has_value());
  EXPECT_EQ(registry.CountLive().prefill + registry.CountLive().decode, 0);
}

TEST(NodeRegistryTest, ModelMismatchRejectedNamingBothValues) {
  ManualClock clock;
  NodeRegistry registry(Options(), &clock);
  v1::NodeInfo info = Info("p1", v1::ROLE_PREFILL);
  info.set_model_fingerprint(0xbeef);
  info.set_model_id("other");
  auto r = registry.Register(info);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("beef"));
  EXPECT_THAT(r.status().message(), HasSubstr("feed"));
  EXPECT_THAT(r.status().message(), HasSubstr("other"));
  EXPECT_FALSE(registry.Find("p1").has_value());
}

TEST(NodeRegistryTest, BlockTokensMismatchRejected) {
  ManualClock clock;
  NodeRegistry registry(Options(), &clock);
  ASSERT_TRUE(registry.Register(Info("p1", v1::ROLE_PREFILL)).ok());
  v1::NodeInfo info = Info("d1", v1::ROLE_DECODE);
  info.set_block_tokens(32);
  auto r = registry.Register(info);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("32"));
  EXPECT_THAT(r.status().message(), HasSubstr("16"));

  NodeRegistryOptions fixed = Options();
  fixed.block_tokens = 8;
  NodeRegistry strict(fixed, &clock);
  EXPECT_EQ(strict.Register(Info("p1", v1::ROLE_PREFILL)).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(NodeRegistryTest, BadInfoRejected) {
  ManualClock clock;
  NodeRegistry registry(Options(), &clock);
  v1::NodeInfo info = Info("p1", v1::ROLE_PREFILL);
  info.set_grpc_endpoint("");
  EXPECT_EQ(registry.Register(info).status().code(), absl::StatusCode::kInvalidArgument);
  info = Info("p1", v1::ROLE_UNSPECIFIED);
  EXPECT_EQ(registry.Register(info).status().code(), absl::StatusCode::kInvalidArgument);
  info = Info("", v1::ROLE_PREFILL);
  EXPECT_EQ(registry.Register(info).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(NodeRegistryTest, DrainingAndSuspectNodesExcluded) {
  ManualClock clock;
  NodeRegistry registry(Options(), &clock);
  ASSERT_TRUE(registry.Register(Info("p1", v1::ROLE_PREFILL)).ok());
  ASSERT_TRUE(registry.Register(Info("p2", v1::ROLE_PREFILL)).ok());
  ASSERT_TRUE(registry.Register(Info("p3", v1::ROLE_PREFILL)).ok());
  v1::HeartbeatRequest drain = Beat("p1");
  drain.mutable_load()->set_draining(true);
  registry.Heartbeat(drain);
  registry.MarkSuspect("p2");
  EXPECT_THAT(Ids(registry.Snapshot()), ElementsAre("p3"));
  EXPECT_THAT(Ids(registry.Snapshot({"p3"})), ElementsAre());
  registry.Heartbeat(Beat("p2"));  // a beat clears the suspicion
  EXPECT_THAT(Ids(registry.Snapshot()), ElementsAre("p2", "p3"));
}

TEST(NodeRegistryTest, HeldPrefixesAreABoundedLru) {
  ManualClock clock;
  NodeRegistry registry(Options(), &clock);
  ASSERT_TRUE(registry.Register(Info("p1", v1::ROLE_PREFILL, /*total_blocks=*/4)).ok());
  ASSERT_TRUE(registry.Register(Info("p2", v1::ROLE_PREFILL, 4)).ok());
  const std::vector<uint64_t> a = {1, 2, 3};
  registry.RecordPrefill("p1", a);
  EXPECT_TRUE(registry.Holds("p1", 1));
  EXPECT_TRUE(registry.Holds("p1", 3));
  EXPECT_FALSE(registry.Holds("p2", 1));
  const std::vector<uint64_t> touch = {1};
  registry.RecordPrefill("p1", touch);  // 1 is now the most recent
  const std::vector<uint64_t> b = {10, 11};
  registry.RecordPrefill("p1", b);  // capacity 4: evicts 2, the least recent
  EXPECT_TRUE(registry.Holds("p1", 1));
  EXPECT_FALSE(registry.Holds("p1", 2));
  EXPECT_TRUE(registry.Holds("p1", 3));
  const std::vector<uint64_t> c = {12};
  registry.RecordPrefill("p1", c);  // evicts 3
  EXPECT_FALSE(registry.Holds("p1", 3));
  EXPECT_TRUE(registry.Holds("p1", 1));
  EXPECT_TRUE(registry.Holds("p1", 10));
  EXPECT_TRUE(registry.Holds("p1", 11));

  // The policy sees it through the snapshot.
  RegistrySnapshot snap = registry.Snapshot();
  ASSERT_EQ(snap.nodes[0].id, "p1");
  ASSERT_TRUE(snap.nodes[0].holds_block);
  EXPECT_TRUE(snap.nodes[0].holds_block(10));
  EXPECT_FALSE(snap.nodes[1].holds_block(10));

  // Nodes' own reports add and remove.
  v1::HeartbeatRequest beat = Beat("p2");
  beat.mutable_load()->add_cached_added(42);
  registry.Heartbeat(beat);
  EXPECT_TRUE(registry.Holds("p2", 42));
  beat = Beat("p2");
  beat.mutable_load()->add_cached_removed(42);
  registry.Heartbeat(beat);
  EXPECT_FALSE(registry.Holds("p2", 42));
}

TEST(NodeRegistryTest, ProfileFitsACostModel) {
  ManualClock clock;
  NodeRegistry registry(Options(), &clock);
  v1::NodeInfo info = Info("p1", v1::ROLE_PREFILL);
  v1::CostProfile* profile = info.mutable_profile();
  // prefill(n) = 0.001 n exactly, decode(b) = 0.01 + 0.002 b.
  for (int n : {100, 200, 400}) {
    auto* pt = profile->add_prefill();
    pt->set_new_tokens(n);
    pt->set_seconds(0.001 * n);
  }
  for (int b : {1, 2, 4}) {
    auto* pt = profile->add_decode();
    pt->set_batch(b);
    pt->set_seconds(0.01 + 0.002 * b);
  }
  profile->set_transfer_bytes_per_second(2e9);
  ASSERT_TRUE(registry.Register(info).ok());
  ASSERT_TRUE(registry.Register(Info("p2", v1::ROLE_PREFILL)).ok());  // no profile: default
  RegistrySnapshot snap = registry.Snapshot();
  EXPECT_NEAR(snap.nodes[0].cost->PrefillSeconds(1000, 0), 1.0, 0.05);
  EXPECT_NEAR(snap.nodes[0].cost->DecodeStepSeconds(10, 0), 0.03, 0.003);
  EXPECT_DOUBLE_EQ(snap.nodes[0].cost->bandwidth_bytes_per_s(), 2e9);
  const policy::CostModel def = DefaultCostModel(16, 1024);
  EXPECT_DOUBLE_EQ(snap.nodes[1].cost->PrefillSeconds(1000, 0), def.PrefillSeconds(1000, 0));
}

// What a prefill node sends (PrefillNode::MeasureProfile): prefill points and the transfer
// rate, no decode points. The measured half is used, the decode half is the default's.
TEST(NodeRegistryTest, PrefillOnlyProfileReplacesThePrefillHalf) {
  ManualClock clock;
  NodeRegistry registry(Options(), &clock);
  v1::NodeInfo info = Info("p1", v1::ROLE_PREFILL);
  v1::CostProfile* profile = info.mutable_profile();
  for (int n : {32, 128}) {
    auto* pt = profile->add_prefill();
    pt->set_new_tokens(n);
    pt->set_seconds(0.004 * n);
  }
  profile->set_transfer_bytes_per_second(3e8);
  ASSERT_TRUE(registry.Register(info).ok());
  RegistrySnapshot snap = registry.Snapshot();
  const policy::CostModel def = DefaultCostModel(16, 1024);
  EXPECT_NEAR(snap.nodes[0].cost->PrefillSeconds(512, 0), 0.004 * 512, 0.05);
  EXPECT_NE(snap.nodes[0].cost->PrefillSeconds(512, 0), def.PrefillSeconds(512, 0));
  EXPECT_DOUBLE_EQ(snap.nodes[0].cost->DecodeStepSeconds(8, 1000), def.DecodeStepSeconds(8, 1000));
  EXPECT_DOUBLE_EQ(snap.nodes[0].cost->bandwidth_bytes_per_s(), 3e8);
}

TEST(NodeRegistryTest, ReregistrationKeepsHeldPrefixes) {
  ManualClock clock;
  NodeRegistry registry(Options(), &clock);
  ASSERT_TRUE(registry.Register(Info("p1", v1::ROLE_PREFILL)).ok());
  const std::vector<uint64_t> a = {5};
  registry.RecordPrefill("p1", a);
  registry.MarkSuspect("p1");
  ASSERT_TRUE(registry.Register(Info("p1", v1::ROLE_PREFILL)).ok());
  EXPECT_TRUE(registry.Holds("p1", 5));
  EXPECT_EQ(registry.CountLive().prefill, 1);
}

}  // namespace
}  // namespace crescent::conductor::service
