// Scenario tests for the KV master: Given nodes / When puts, gets, ticks, node loss / Then
// placements and answers. Blocks are 64 bytes (one alignment unit) unless a test says otherwise,
// so "usage" below counts blocks: a 6400-byte DRAM segment holds 100 of them.
#include "tests/kvstore/master/master_scenario.h"

#include <cstdint>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/master/master_state.h"

namespace crescent::kvstore::master::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr uint64_t kBlock = 64;
constexpr uint64_t kHundredBlocks = 100 * kBlock;

std::vector<uint64_t> Range(uint64_t first, uint64_t last) {  // [first, last]
  std::vector<uint64_t> keys;
  for (uint64_t k = first; k <= last; ++k) keys.push_back(k);
  return keys;
}

std::vector<uint64_t> KeysOf(const std::vector<MoveTask>& tasks) {
  std::vector<uint64_t> keys;
  for (const MoveTask& t : tasks) keys.push_back(t.key);
  return keys;
}

MasterConfig NoDemotion() {
  MasterConfig config = ScenarioConfig();
  config.demote_to_ssd = false;
  return config;
}

TEST(MasterScenarioTest, PendingPutIsInvisibleUntilPutEnd) {
  MasterScenario s;
  s.GivenNode("n1", kHundredBlocks);
  auto placed = s.PutStart(0xabc, 100);
  ASSERT_TRUE(placed.ok()) << placed.status();
  ASSERT_EQ(placed->size(), 1u);
  EXPECT_EQ((*placed)[0].node_id, "n1");
  EXPECT_EQ((*placed)[0].endpoint, "tcp://n1:7000");
  EXPECT_EQ((*placed)[0].length, 100u);

  const uint64_t keys[] = {0xabc};
  EXPECT_FALSE(s.Visible(0xabc));
  EXPECT_EQ(s.Get(0xabc).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.state().LongestPrefix(keys, s.now()), 0u);
  EXPECT_EQ(s.state().PinFor(0xabc, kSecond, s.now()).code(), absl::StatusCode::kNotFound);
  auto again = s.PutStart(0xabc, 100);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(again.status().message(), HasSubstr("0000000000000abc"));
  EXPECT_THAT(again.status().message(), HasSubstr("pending"));

  ASSERT_TRUE(s.PutEnd(0xabc).ok());
  EXPECT_TRUE(s.Visible(0xabc));
  auto got = s.Get(0xabc);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->replicas.size(), 1u);
  EXPECT_EQ(got->replicas[0].offset, (*placed)[0].offset);
  EXPECT_EQ(got->replicas[0].checksum, MasterScenario::ChecksumOf(0xabc));
  EXPECT_EQ(got->lease_expires_ns, s.now() + 5 * kSecond);
  EXPECT_EQ(s.PutEnd(0xabc).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.PutStart(0xabc, 100).status().code(), absl::StatusCode::kAlreadyExists);
}

TEST(MasterScenarioTest, RevokeFreesSpaceAndForgetsTheKey) {
  MasterScenario s;
  s.GivenNode("n1", kHundredBlocks).GivenNode("n2", kHundredBlocks);
  ASSERT_TRUE(s.PutStart(1, 3 * kBlock, 2).ok());
  EXPECT_EQ(s.state().Usage(Tier::kDram).used, 6 * kBlock);
  EXPECT_EQ(s.state().pending_count(), 1u);

  ASSERT_TRUE(s.state().PutRevoke(1, s.now()).ok());
  EXPECT_EQ(s.state().Usage(Tier::kDram).used, 0u);
  EXPECT_EQ(s.state().pending_count(), 0u);
  EXPECT_EQ(s.Get(1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.PutEnd(1).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.state().PutRevoke(1, s.now()).code(), absl::StatusCode::kNotFound);

  ASSERT_TRUE(s.Put(2, kBlock).ok());
  auto committed = s.state().PutRevoke(2, s.now());
  EXPECT_EQ(committed.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(committed.message(), HasSubstr("0000000000000002"));
  EXPECT_TRUE(s.Visible(2));
}

TEST(MasterScenarioTest, PendingPutExpiresAfterPutTimeout) {
  MasterScenario s;
  s.GivenNode("n1", kHundredBlocks);
  ASSERT_TRUE(s.PutStart(1, kBlock).ok());
  ASSERT_TRUE(s.PutStart(2, kBlock).ok());
  s.AdvanceSeconds(29);
  EXPECT_THAT(s.Tick().expired_puts, IsEmpty());
  s.AdvanceSeconds(2);

  // PutEnd after the timeout fails even before a Tick has run.
  EXPECT_EQ(s.PutEnd(1).code(), absl::StatusCode::kDeadlineExceeded);
  TickReport report = s.Tick();
  EXPECT_THAT(report.expired_puts, ElementsAre(2u));
  EXPECT_EQ(s.state().pending_count(), 0u);
  EXPECT_EQ(s.state().Usage(Tier::kDram).used, 0u);
  EXPECT_EQ(s.PutEnd(2).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(s.Put(2, kBlock).ok());  // The key can be written again.
}

TEST(MasterScenarioTest, ReplicasGoToDistinctNodesWithTheMostFreeDram) {
  MasterScenario s;
  s.GivenNode("n1", 100 * kBlock).GivenNode("n2", 200 * kBlock).GivenNode("n3", 300 * kBlock);
  auto two = s.PutStart(1, kBlock, 2);
  ASSERT_TRUE(two.ok()) << two.status();
  ASSERT_EQ(two->size(), 2u);
  EXPECT_EQ((*two)[0].node_id, "n3");
  EXPECT_EQ((*two)[1].node_id, "n2");
  auto three = s.PutStart(2, kBlock, 3);
  ASSERT_TRUE(three.ok()) << three.status();
  std::vector<std::string> nodes;
  for (const Replica& r : *three) nodes.push_back(r.node_id);
  EXPECT_THAT(nodes, ElementsAre("n3", "n2", "n1"));

  const uint64_t used = s.state().Usage(Tier::kDram).used;
  auto four = s.PutStart(3, kBlock, 4);
  EXPECT_EQ(four.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(four.status().message(), HasSubstr("0000000000000003"));
  EXPECT_THAT(four.status().message(), HasSubstr("placed 3 of 4"));
  EXPECT_EQ(s.state().Usage(Tier::kDram).used, used);  // A failed put reserves nothing.
  EXPECT_EQ(s.PutStart(4, kBlock, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.PutStart(5, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MasterScenarioTest, SsdIsUsedOnlyWhenNoDramFits) {
  MasterScenario s;
  s.GivenNode("n1", 2 * kBlock, kHundredBlocks);
  ASSERT_TRUE(s.Put(1, kBlock).ok());
  ASSERT_TRUE(s.Put(2, kBlock).ok());
  ASSERT_TRUE(s.Put(3, kBlock).ok());
  EXPECT_THAT(s.TiersOf(1), ElementsAre(Tier::kDram));
  EXPECT_THAT(s.TiersOf(2), ElementsAre(Tier::kDram));
  EXPECT_THAT(s.TiersOf(3), ElementsAre(Tier::kSsd));
}

TEST(MasterScenarioTest, ExhaustionIsResourceExhaustedNamingTheKey) {
  MasterScenario s;
  s.GivenNode("n1", 2 * kBlock);
  ASSERT_TRUE(s.Put(1, kBlock).ok());
  ASSERT_TRUE(s.Put(2, kBlock).ok());
  auto full = s.PutStart(0xfeed, kBlock);
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.status().message(), HasSubstr("000000000000feed"));
  EXPECT_EQ(s.state().pending_count(), 0u);
  auto big = s.PutStart(0xb16, 3 * kBlock);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(MasterScenarioTest, BatchCallsAnswerPerKey) {
  MasterScenario s;
  s.GivenNode("n1", kHundredBlocks);
  const PutSpec puts[] = {{1, kBlock}, {2, kBlock}, {1, kBlock}, {3, 0}};
  auto started = s.state().BatchPutStart(puts, 1, s.now());
  ASSERT_EQ(started.size(), 4u);
  EXPECT_TRUE(started[0].ok());
  EXPECT_TRUE(started[1].ok());
  EXPECT_EQ(started[2].status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(started[3].status().code(), absl::StatusCode::kInvalidArgument);

  const PutEndSpec ends[] = {{1, 11}, {2, 22}, {9, 99}};
  auto ended = s.state().BatchPutEnd(ends, s.now());
  ASSERT_EQ(ended.size(), 3u);
  EXPECT_TRUE(ended[0].ok());
  EXPECT_TRUE(ended[1].ok());
  EXPECT_EQ(ended[2].code(), absl::StatusCode::kNotFound);

  const uint64_t keys[] = {1, 9, 2};
  auto got = s.state().BatchGet(keys, s.now());
  ASSERT_EQ(got.size(), 3u);
  ASSERT_TRUE(got[0].ok());
  EXPECT_EQ(got[0]->replicas[0].checksum, 11u);
  EXPECT_EQ(got[1].status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(got[2].ok());
  EXPECT_EQ(got[2]->replicas[0].checksum, 22u);
  EXPECT_THAT(s.state().BatchExists(keys, s.now()), ElementsAre(true, false, true));
}

TEST(MasterScenarioTest, LongestPrefixCountsLeadingCommittedBlocks) {
  MasterScenario s;
  s.GivenNode("n1", kHundredBlocks);
  const uint64_t chain[] = {11, 12, 13, 14, 15};
  EXPECT_EQ(s.state().LongestPrefix(chain, s.now()), 0u);
  for (uint64_t k : {11, 12, 13, 15}) ASSERT_TRUE(s.Put(k, kBlock).ok());
  EXPECT_EQ(s.state().LongestPrefix(chain, s.now()), 3u);
  ASSERT_TRUE(s.PutStart(14, kBlock).ok());
  EXPECT_EQ(s.state().LongestPrefix(chain, s.now()), 3u);  // Pending does not count.
  ASSERT_TRUE(s.PutEnd(14).ok());
  EXPECT_EQ(s.state().LongestPrefix(chain, s.now()), 5u);
  EXPECT_EQ(s.state().LongestPrefix(std::span<const uint64_t>(), s.now()), 0u);
}

TEST(MasterScenarioTest, NoEvictionBetweenWatermarks) {
  MasterScenario s(NoDemotion());
  s.GivenNode("n1", kHundredBlocks);
  s.PutSequence(1, 90, kBlock);  // 90%: not above the high watermark.
  s.AdvanceSeconds(6);
  TickReport report = s.Tick();
  EXPECT_THAT(report.evicted, IsEmpty());
  EXPECT_DOUBLE_EQ(s.UsageFraction(Tier::kDram), 0.90);
}

TEST(MasterScenarioTest, EvictsLeastRecentlyUsedDownToTheLowWatermark) {
  MasterScenario s(NoDemotion());
  s.GivenNode("n1", kHundredBlocks);
  s.PutSequence(1, 95, kBlock);
  ASSERT_TRUE(s.Get(10).ok());  // Touched: now among the most recently used.
  s.AdvanceSeconds(1);
  ASSERT_TRUE(s.Get(3).ok());
  s.AdvanceSeconds(6);  // Leases expire.

  TickReport report = s.Tick();
  std::vector<uint64_t> expected = {1, 2, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17};
  EXPECT_EQ(report.evicted, expected);
  EXPECT_DOUBLE_EQ(s.UsageFraction(Tier::kDram), 0.80);
  EXPECT_TRUE(s.Visible(3));
  EXPECT_TRUE(s.Visible(10));
  EXPECT_FALSE(s.Visible(1));
  EXPECT_TRUE(s.Visible(18));
  EXPECT_THAT(s.Tick().evicted, IsEmpty());  // At the low watermark: nothing more.
}

TEST(MasterScenarioTest, LeasedBlocksAreNotEvicted) {
  MasterScenario s(NoDemotion());
  s.GivenNode("n1", kHundredBlocks);
  s.PutSequence(1, 95, kBlock);
  for (uint64_t k = 1; k <= 95; ++k) ASSERT_TRUE(s.Get(k).ok());
  EXPECT_THAT(s.Tick().evicted, IsEmpty());  // Everything is leased.
  EXPECT_DOUBLE_EQ(s.UsageFraction(Tier::kDram), 0.95);

  s.AdvanceSeconds(4);
  ASSERT_TRUE(s.Get(1).ok());  // Extends the oldest block's lease.
  s.AdvanceSeconds(2);         // Other leases have expired; block 1's has not.
  TickReport report = s.Tick();
  EXPECT_EQ(report.evicted, Range(2, 16));
  EXPECT_TRUE(s.Visible(1));
}

TEST(MasterScenarioTest, PinnedBlocksSurviveEvictionUntilThePinExpires) {
  MasterScenario s(NoDemotion());
  s.GivenNode("n1", kHundredBlocks);
  s.PutSequence(1, 95, kBlock);
  ASSERT_TRUE(s.state().PinFor(1, 60 * kSecond, s.now()).ok());
  ASSERT_TRUE(s.state().PinFor(2, 1 * kSecond, s.now()).ok());
  EXPECT_EQ(s.state().PinFor(1, -1, s.now()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.state().PinFor(999, kSecond, s.now()).code(), absl::StatusCode::kNotFound);
  s.AdvanceSeconds(6);
  TickReport first = s.Tick();
  EXPECT_EQ(first.evicted, Range(2, 16));  // Pin of 2 expired; 1 is still pinned.
  EXPECT_TRUE(s.Visible(1));

  s.PutSequence(100, 11, kBlock);  // Back to 91%.
  EXPECT_THAT(s.Tick().evicted, ElementsAre(17u, 18u, 19u, 20u, 21u, 22u, 23u, 24u, 25u, 26u, 27u));
  s.PutSequence(200, 11, kBlock);  // 91% again, and now the pin has run out.
  s.AdvanceSeconds(60);
  TickReport later = s.Tick();
  ASSERT_FALSE(later.evicted.empty());
  EXPECT_EQ(later.evicted.front(), 1u);
  EXPECT_FALSE(s.Visible(1));
}

TEST(MasterScenarioTest, DemotesToSsdThenPromotesOnHit) {
  MasterScenario s;
  s.GivenNode("n1", kHundredBlocks, 10 * kHundredBlocks);
  s.PutSequence(1, 95, kBlock);
  s.AdvanceSeconds(6);

  TickReport report = s.Tick();
  EXPECT_THAT(report.evicted, IsEmpty());
  ASSERT_EQ(report.new_moves.size(), 15u);
  EXPECT_EQ(KeysOf(report.new_moves), Range(1, 15));
  for (const MoveTask& t : report.new_moves) {
    EXPECT_EQ(t.kind, MoveTask::Kind::kDemote);
    EXPECT_EQ(t.from.tier, Tier::kDram);
    EXPECT_EQ(t.to.tier, Tier::kSsd);
    EXPECT_EQ(t.to.segment, "n1/ssd");
    EXPECT_EQ(t.to.checksum, MasterScenario::ChecksumOf(t.key));
  }
  // Until the node reports the copies done, readers are still answered from DRAM.
  EXPECT_THAT(s.TiersOf(1), ElementsAre(Tier::kDram));
  EXPECT_THAT(s.Tick().new_moves, IsEmpty());  // In-flight moves are not scheduled twice.

  s.HeartbeatAll();  // Hands the tasks to n1.
  ASSERT_EQ(s.delivered().size(), 15u);
  s.FinishDeliveredMoves();
  EXPECT_THAT(s.TiersOf(1), ElementsAre(Tier::kSsd));
  EXPECT_THAT(s.TiersOf(16), ElementsAre(Tier::kDram));
  EXPECT_DOUBLE_EQ(s.UsageFraction(Tier::kDram), 0.80);
  EXPECT_EQ(s.state().Usage(Tier::kSsd).used, 15 * kBlock);

  // A hit on an SSD-only block is answered from SSD and schedules a promotion.
  auto hit = s.Get(1);
  ASSERT_TRUE(hit.ok()) << hit.status();
  ASSERT_EQ(hit->replicas.size(), 1u);
  EXPECT_EQ(hit->replicas[0].tier, Tier::kSsd);
  ASSERT_TRUE(hit->promotion_task_id.has_value());
  auto hit_again = s.Get(1);
  ASSERT_TRUE(hit_again.ok());
  EXPECT_FALSE(hit_again->promotion_task_id.has_value());  // One promotion at a time.

  s.HeartbeatAll();
  ASSERT_EQ(s.delivered().size(), 1u);
  EXPECT_EQ(s.delivered()[0].id, *hit->promotion_task_id);
  EXPECT_EQ(s.delivered()[0].kind, MoveTask::Kind::kPromote);
  EXPECT_EQ(s.delivered()[0].to.tier, Tier::kDram);
  s.FinishDeliveredMoves();
  EXPECT_THAT(s.TiersOf(1), ElementsAre(Tier::kDram, Tier::kSsd));
  auto promoted = s.Get(1);
  ASSERT_TRUE(promoted.ok());
  EXPECT_EQ(promoted->replicas[0].tier, Tier::kDram);
  EXPECT_EQ(promoted->replicas[0].checksum, MasterScenario::ChecksumOf(1));
  EXPECT_FALSE(promoted->promotion_task_id.has_value());
}

TEST(MasterScenarioTest, DramEvictionDropsTheDramCopyWhenAnSsdCopyExists) {
  MasterScenario s;
  s.GivenNode("n1", kHundredBlocks, 10 * kHundredBlocks);
  s.PutSequence(1, 95, kBlock);
  s.AdvanceSeconds(6);
  ASSERT_EQ(s.Tick().new_moves.size(), 15u);
  s.HeartbeatAll();
  s.FinishDeliveredMoves();
  ASSERT_TRUE(s.Get(1).ok());  // Promote block 1 back: it now has DRAM + SSD copies.
  s.HeartbeatAll();
  s.FinishDeliveredMoves();
  ASSERT_THAT(s.TiersOf(1), ElementsAre(Tier::kDram, Tier::kSsd));

  s.AdvanceSeconds(6);
  s.PutSequence(100, 10, kBlock);  // 91 blocks in DRAM.
  TickReport report = s.Tick();
  EXPECT_THAT(report.dropped_dram, IsEmpty());  // Block 1 was used after 16..26.
  EXPECT_EQ(KeysOf(report.new_moves), Range(16, 26));
  // Make block 1 the least recently used DRAM block again by touching all others.
  s.HeartbeatAll();
  s.FinishDeliveredMoves();
  for (uint64_t k = 27; k <= 95; ++k) ASSERT_TRUE(s.Get(k).ok());
  for (uint64_t k = 100; k <= 109; ++k) ASSERT_TRUE(s.Get(k).ok());
  s.AdvanceSeconds(6);
  s.PutSequence(300, 11, kBlock);  // 91 blocks again.
  report = s.Tick();
  ASSERT_FALSE(report.dropped_dram.empty());
  EXPECT_EQ(report.dropped_dram.front(), 1u);
  EXPECT_THAT(s.TiersOf(1), ElementsAre(Tier::kSsd));
}

TEST(MasterScenarioTest, SpaceUnderLeaseIsNotReusedAfterDemotion) {
  MasterScenario s;
  s.GivenNode("n1", kHundredBlocks, 10 * kHundredBlocks);
  s.PutSequence(1, 95, kBlock);
  s.AdvanceSeconds(6);
  ASSERT_EQ(s.Tick().new_moves.size(), 15u);

  // A reader gets block 1 from DRAM while its demotion is in flight.
  auto during = s.Get(1);
  ASSERT_TRUE(during.ok());
  ASSERT_EQ(during->replicas[0].tier, Tier::kDram);
  const uint64_t leased_offset = during->replicas[0].offset;
  s.HeartbeatAll();
  s.FinishDeliveredMoves();
  EXPECT_THAT(s.TiersOf(1), ElementsAre(Tier::kSsd));
  // 14 blocks freed; block 1's range stays reserved until its lease ends.
  EXPECT_DOUBLE_EQ(s.UsageFraction(Tier::kDram), 0.81);

  for (uint64_t k = 1000; k < 1019; ++k) {
    auto placed = s.PutStart(k, kBlock);
    ASSERT_TRUE(placed.ok()) << placed.status();
    EXPECT_NE((*placed)[0].offset, leased_offset) << "leased range reused by " << KeyHex(k);
  }
  auto overflow = s.PutStart(2000, kBlock);  // DRAM is full but for the leased range.
  ASSERT_TRUE(overflow.ok()) << overflow.status();
  EXPECT_EQ((*overflow)[0].tier, Tier::kSsd);

  s.AdvanceSeconds(6);  // The lease has expired; the next Tick releases the range.
  s.Tick();
  auto reused = s.PutStart(2001, kBlock);
  ASSERT_TRUE(reused.ok()) << reused.status();
  EXPECT_EQ((*reused)[0].tier, Tier::kDram);
  EXPECT_EQ((*reused)[0].offset, leased_offset);
}

TEST(MasterScenarioTest, FailedOrOverdueMovesLeaveTheObjectUnchanged) {
  MasterScenario s;
  s.GivenNode("n1", kHundredBlocks, 10 * kHundredBlocks);
  s.PutSequence(1, 95, kBlock);
  s.AdvanceSeconds(6);
  ASSERT_EQ(s.Tick().new_moves.size(), 15u);
  s.HeartbeatAll();
  s.FinishDeliveredMoves(absl::InternalError("disk write failed"));
  EXPECT_EQ(s.state().Usage(Tier::kSsd).used, 0u);
  EXPECT_THAT(s.TiersOf(1), ElementsAre(Tier::kDram));
  EXPECT_THAT(s.state().PendingMoves(), IsEmpty());

  TickReport retry = s.Tick();
  ASSERT_EQ(retry.new_moves.size(), 15u);
  s.AdvanceSeconds(61);  // Nobody reports: the moves are cancelled and scheduled anew.
  TickReport overdue = s.Tick();
  EXPECT_EQ(overdue.cancelled_moves.size(), 15u);
  EXPECT_EQ(overdue.new_moves.size(), 15u);
  EXPECT_EQ(s.state().Usage(Tier::kSsd).used, 15 * kBlock);
  EXPECT_EQ(s.state().MoveDone(retry.new_moves[0].id, absl::OkStatus(), s.now()).code(),
            absl::StatusCode::kNotFound);
}

TEST(MasterScenarioTest, DeadNodeReplicasDisappearAndSurvivorsStillAnswer) {
  MasterScenario s;
  s.GivenNode("n1", 200 * kBlock).GivenNode("n2", kHundredBlocks).GivenNode("n3", kHundredBlocks);
  ASSERT_TRUE(s.Put(1, kBlock, 2).ok());
  EXPECT_THAT(s.NodesOf(1), ElementsAre("n1", "n2"));
  ASSERT_TRUE(s.Put(2, kBlock).ok());
  EXPECT_THAT(s.NodesOf(2), ElementsAre("n1"));
  ASSERT_TRUE(s.PutStart(3, kBlock).ok());  // Pending, on n1.

  s.NodeGoesSilent("n1");
  s.AdvanceSeconds(9);
  EXPECT_THAT(s.NodesOf(1), ElementsAre("n1", "n2"));  // Not yet past node_timeout.
  s.AdvanceSeconds(2);

  // Answers drop n1 at once, before any Tick.
  EXPECT_FALSE(s.state().IsNodeAlive("n1", s.now()));
  auto got = s.Get(1);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->replicas.size(), 1u);
  EXPECT_EQ(got->replicas[0].node_id, "n2");
  EXPECT_FALSE(s.Visible(2));
  EXPECT_THAT(s.Get(2).status().message(), HasSubstr("no live replica"));
  auto end = s.PutEnd(3);
  EXPECT_EQ(end.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(end.message(), HasSubstr("n1"));
  // New puts avoid the dead node.
  auto placed = s.PutStart(4, kBlock, 2);
  ASSERT_TRUE(placed.ok()) << placed.status();
  EXPECT_NE((*placed)[0].node_id, "n1");
  EXPECT_NE((*placed)[1].node_id, "n1");

  TickReport report = s.Tick();
  EXPECT_THAT(report.dead_nodes, ElementsAre("n1"));
  EXPECT_THAT(report.lost, ElementsAre(2u));
  EXPECT_EQ(s.state().Usage(Tier::kDram).capacity, 200 * kBlock);
  auto beat = s.state().Heartbeat("n1", s.now());
  EXPECT_EQ(beat.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(beat.status().message(), HasSubstr("n1"));
  // A restarted node registers again and starts empty.
  ASSERT_TRUE(s.state().RegisterNode("n1", "tcp://n1:7001", s.now()).ok());
  ASSERT_TRUE(s.state().MountSegment("n1", "n1/dram", Tier::kDram, kBlock * 10, s.now()).ok());
  EXPECT_THAT(s.NodesOf(1), ElementsAre("n2"));
}

// A node process killed without unmounting restarts with the same id before any Tick ran: its
// old registration holds the id while the old incarnation still counts as alive, and is dropped
// (replicas and segments with it) as soon as it has been silent for node_timeout.
TEST(MasterScenarioTest, RestartedNodeRegistersOnceThePreviousIncarnationTimesOut) {
  MasterScenario s;
  s.GivenNode("n1", kHundredBlocks).GivenNode("n2", kHundredBlocks);
  ASSERT_TRUE(s.Put(1, kBlock, 2).ok());
  s.NodeGoesSilent("n1");
  s.AdvanceSeconds(3);
  absl::Status again = s.state().RegisterNode("n1", "tcp://n1:7001", s.now());
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(again.message(), HasSubstr("3000 ms ago"));
  EXPECT_THAT(again.message(), HasSubstr("silent for 10000 ms"));
  s.AdvanceSeconds(8);
  ASSERT_TRUE(s.state().RegisterNode("n1", "tcp://n1:7001", s.now()).ok());
  EXPECT_THAT(s.NodesOf(1), ElementsAre("n2"));  // the old incarnation's replica is gone
  EXPECT_EQ(s.state().Usage(Tier::kDram).capacity, kHundredBlocks);
  ASSERT_TRUE(s.state().MountSegment("n1", "n1/dram", Tier::kDram, kHundredBlocks, s.now()).ok());
  EXPECT_TRUE(s.state().Heartbeat("n1", s.now()).ok());
}

TEST(MasterScenarioTest, HeartbeatAfterTheTimeoutDeclaresTheNodeDead) {
  MasterScenario s;
  s.GivenNode("n1", kHundredBlocks).GivenNode("n2", kHundredBlocks);
  ASSERT_TRUE(s.Put(1, kBlock, 2).ok());
  s.NodeGoesSilent("n2");
  s.AdvanceSeconds(11);
  EXPECT_EQ(s.state().Heartbeat("n2", s.now()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.NodesOf(1), ElementsAre("n1"));
  EXPECT_EQ(s.state().Usage(Tier::kDram).capacity, kHundredBlocks);
}

TEST(MasterScenarioTest, UnmountDropsTheSegmentsReplicas) {
  MasterScenario s;
  s.GivenNode("n1", kHundredBlocks).GivenNode("n2", kHundredBlocks);
  ASSERT_TRUE(s.Put(1, kBlock, 2).ok());
  ASSERT_TRUE(s.state().UnmountSegment("n1/dram", s.now()).ok());
  EXPECT_THAT(s.NodesOf(1), ElementsAre("n2"));
  EXPECT_EQ(s.state().UnmountSegment("n1/dram", s.now()).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.state().MountSegment("n9", "n9/dram", Tier::kDram, kBlock, s.now()).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(s.state().MountSegment("n2", "n2/dram", Tier::kDram, kBlock, s.now()).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(s.state().MountSegment("n2", "tiny", Tier::kDram, 1, s.now()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MasterStateTest, CreateRejectsInconsistentConfig) {
  MasterConfig config = ScenarioConfig();
  config.low_watermark = 0.95;
  EXPECT_EQ(MasterState::Create(config).status().code(), absl::StatusCode::kInvalidArgument);
  config = ScenarioConfig();
  config.alignment = 48;
  EXPECT_EQ(MasterState::Create(config).status().code(), absl::StatusCode::kInvalidArgument);
  config = ScenarioConfig();
  config.lease_ns = 0;
  EXPECT_EQ(MasterState::Create(config).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace crescent::kvstore::master::testing
