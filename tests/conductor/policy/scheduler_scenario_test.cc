// Scenario tests for the Conductor's policy: Given nodes (caches, queues, decode batches) /
// When a request arrives / Then its placement or rejection. Costs are ScenarioCost's: 16-token
// blocks, prefill 1 ms per computed token, decode step 10 ms + 1 ms per request.
#include <set>
#include <string>
#include <vector>

#include "conductor/policy/early_rejection.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/conductor/policy/policy_scenario.h"

namespace crescent::conductor::policy::testing {
namespace {

using ::testing::HasSubstr;

SchedulerOptions WithSlo(double ttft_s, double tbt_s, bool early_rejection = true) {
  SchedulerOptions o;
  o.slo.ttft_s = ttft_s;
  o.slo.tbt_s = tbt_s;
  o.early_rejection = early_rejection;
  return o;
}

TEST(CacheAware, LocalPicksTheNodeHoldingTheLongestPrefix) {
  PolicyScenario s(PrefillPolicy::kLocalCacheAware);
  s.GivenPrefillNode("p0")
      .GivenPrefillNode("p1")
      .Holding(Blocks(1, 4))
      .GivenPrefillNode("p2")
      .Holding(Blocks(1, 2))
      .GivenDecodeNode("d0");
  const Decision d = s.WhenRequest(100, Blocks(1, 6));
  ASSERT_TRUE(d.accepted) << d.detail;
  EXPECT_EQ(s.PrefillNodeOf(d), "p1");
  EXPECT_EQ(d.prefill.local_blocks, 4);
  EXPECT_EQ(d.prefill.fetch_blocks, 0);
  EXPECT_EQ(d.prefill.cached_tokens, 64);
  EXPECT_EQ(d.prefill.compute_tokens, 36);
  EXPECT_NEAR(d.prefill.ttft_s, 0.036, 1e-12);
  EXPECT_EQ(s.DecodeNodeOf(d), "d0");
}

TEST(CacheAware, OnlyAPrefixCounts) {
  // p1 holds blocks 2..6 but not block 1: nothing of it is reusable.
  PolicyScenario s(PrefillPolicy::kLocalCacheAware);
  s.GivenPrefillNode("p0")
      .Holding({1})
      .GivenPrefillNode("p1")
      .Holding(Blocks(2, 5))
      .GivenDecodeNode("d0");
  const Decision d = s.WhenRequest(100, Blocks(1, 6));
  EXPECT_EQ(s.PrefillNodeOf(d), "p0");
  EXPECT_EQ(d.prefill.local_blocks, 1);
}

TEST(CacheAware, AlwaysComputesAtLeastOneToken) {
  // 64 tokens = exactly 4 blocks, all held: the last block is recomputed for the first token.
  PolicyScenario s(PrefillPolicy::kLocalCacheAware);
  s.GivenPrefillNode("p0").Holding(Blocks(1, 4)).GivenDecodeNode("d0");
  const Decision d = s.WhenRequest(64, Blocks(1, 4));
  EXPECT_EQ(d.prefill.local_blocks, 3);
  EXPECT_EQ(d.prefill.compute_tokens, 16);
}

TEST(GlobalCacheAware, FetchesFromThePoolWhenTransferBeatsRecompute) {
  // A block moves in 1 ms and takes 16 ms to recompute.
  PolicyScenario s(PrefillPolicy::kGlobalCacheAware);
  s.GivenPrefillNode("p0")
      .Holding(Blocks(1, 1))
      .GivenPrefillNode("p1")
      .GivenDecodeNode("d0")
      .GivenPoolHolding(Blocks(1, 5));
  const Decision d = s.WhenRequest(100, Blocks(1, 6));
  ASSERT_TRUE(d.accepted) << d.detail;
  EXPECT_EQ(s.PrefillNodeOf(d), "p0");
  EXPECT_EQ(d.prefill.local_blocks, 1);
  EXPECT_EQ(d.prefill.fetch_blocks, 4);
  EXPECT_EQ(d.prefill.cached_tokens, 80);
  EXPECT_NEAR(d.prefill.fetch_s, 0.004, 1e-12);
  EXPECT_NEAR(d.prefill.ttft_s, 0.004 + 0.020, 1e-12);
}

TEST(GlobalCacheAware, RecomputesWhenTransferIsSlower) {
  // A block now takes 32 ms to move: recomputing (16 ms) wins.
  PolicyScenario s(PrefillPolicy::kGlobalCacheAware);
  s.GivenCost(ScenarioCost(/*bandwidth=*/kBlockBytes / 0.032))
      .GivenPrefillNode("p0")
      .Holding(Blocks(1, 1))
      .GivenPrefillNode("p1")
      .GivenDecodeNode("d0")
      .GivenPoolHolding(Blocks(1, 5));
  const Decision d = s.WhenRequest(100, Blocks(1, 6));
  EXPECT_EQ(s.PrefillNodeOf(d), "p0");
  EXPECT_EQ(d.prefill.fetch_blocks, 0);
  EXPECT_EQ(d.prefill.compute_tokens, 84);
  EXPECT_DOUBLE_EQ(d.prefill.fetch_s, 0.0);
}

TEST(GlobalCacheAware, LocalOnlyPolicyIgnoresThePool) {
  PolicyScenario s(PrefillPolicy::kLocalCacheAware);
  s.GivenPrefillNode("p0").GivenDecodeNode("d0").GivenPoolHolding(Blocks(1, 5));
  const Decision d = s.WhenRequest(100, Blocks(1, 6));
  EXPECT_EQ(d.prefill.fetch_blocks, 0);
  EXPECT_EQ(d.prefill.compute_tokens, 100);
}

TEST(CacheAware, LoadBeatsCacheWhenTheQueueIsLongEnough) {
  // Recomputing everything on idle p1 takes 100 ms; p0 saves 64 ms with its cache.
  for (const auto& [queue_s, expected] :
       std::vector<std::pair<double, std::string>>{{0.050, "p0"}, {0.070, "p1"}}) {
    PolicyScenario s(PrefillPolicy::kLocalCacheAware);
    s.GivenPrefillNode("p0")
        .Holding(Blocks(1, 4))
        .WithQueueSeconds(queue_s)
        .GivenPrefillNode("p1")
        .GivenDecodeNode("d0");
    const Decision d = s.WhenRequest(100, Blocks(1, 6));
    EXPECT_EQ(s.PrefillNodeOf(d), expected) << "p0 queue " << queue_s;
  }
}

TEST(LeastLoaded, PicksTheShortestQueueWhateverTheCache) {
  PolicyScenario s(PrefillPolicy::kLeastLoaded);
  s.GivenPrefillNode("p0")
      .Holding(Blocks(1, 6))
      .WithQueueSeconds(0.002)
      .GivenPrefillNode("p1")
      .WithQueueSeconds(0.001)
      .GivenDecodeNode("d0");
  const Decision d = s.WhenRequest(100, Blocks(1, 6));
  EXPECT_EQ(s.PrefillNodeOf(d), "p1");
}

TEST(LeastLoaded, EstimatesUnknownQueueTimeFromQueuedTokens) {
  PolicyScenario s(PrefillPolicy::kLeastLoaded);
  s.GivenPrefillNode("p0").GivenPrefillNode("p1").GivenDecodeNode("d0");
  s.nodes()[0].queued_prefill_s = -1;
  s.nodes()[0].queued_prefill_tokens = 500;  // 0.5 s
  s.nodes()[1].queued_prefill_s = 0.4;
  EXPECT_EQ(s.PrefillNodeOf(s.WhenRequest(100, {})), "p1");
}

TEST(EarlyRejection, RejectsWhenPredictedTtftMissesTheSlo) {
  PolicyScenario s(PrefillPolicy::kGlobalCacheAware, WithSlo(/*ttft_s=*/1.0, /*tbt_s=*/1.0));
  s.GivenPrefillNode("p0").WithQueueSeconds(2.5).GivenDecodeNode("d0");
  const Decision d = s.WhenRequest(100, Blocks(1, 6));
  EXPECT_FALSE(d.accepted);
  EXPECT_EQ(d.reason, RejectReason::kTtftSlo);
  EXPECT_THAT(d.detail, HasSubstr("TTFT"));
  EXPECT_DOUBLE_EQ(d.retry_after_s, 2.0);  // 2.6 s predicted - 1 s SLO, rounded up
  EXPECT_EQ(s.PrefillNodeOf(d), "p0");     // the plan that was judged is reported
}

TEST(EarlyRejection, AcceptsWhenThePredictionFits) {
  PolicyScenario s(PrefillPolicy::kGlobalCacheAware, WithSlo(3.0, 1.0));
  s.GivenPrefillNode("p0").WithQueueSeconds(2.5).GivenDecodeNode("d0");
  const Decision d = s.WhenRequest(100, Blocks(1, 6));
  EXPECT_TRUE(d.accepted) << d.detail;
  EXPECT_EQ(d.reason, RejectReason::kNone);
}

TEST(EarlyRejection, OffMeansQueueingAnyway) {
  PolicyScenario s(PrefillPolicy::kGlobalCacheAware, WithSlo(1.0, 0.001, false));
  s.GivenPrefillNode("p0").WithQueueSeconds(2.5).GivenDecodeNode("d0");
  EXPECT_TRUE(s.WhenRequest(100, Blocks(1, 6)).accepted);
}

TEST(EarlyRejection, RejectsWhenDecodeLoadAtPrefillEndMissesTbt) {
  // 40 running requests: step = 10 + 41 ms = 51 ms > 50 ms SLO.
  PolicyScenario s(PrefillPolicy::kLeastLoaded, WithSlo(10.0, 0.050));
  s.GivenPrefillNode("p0").GivenDecodeNode("d0").WithDecodeBatch(40, 4000);
  const Decision d = s.WhenRequest(100, {});
  EXPECT_FALSE(d.accepted);
  EXPECT_EQ(d.reason, RejectReason::kTbtSlo);
  EXPECT_NEAR(d.decode.predicted_tbt_s, 0.051, 1e-12);
}

TEST(EarlyRejection, UsesTheDecodeForecastAtPrefillEnd) {
  // Same load now, but by the time the 2 s queue + 0.1 s prefill end, half the batch is done.
  PolicyScenario s(PrefillPolicy::kLeastLoaded, WithSlo(10.0, 0.050));
  s.GivenPrefillNode("p0")
      .WithQueueSeconds(2.0)
      .GivenDecodeNode("d0")
      .WithDecodeBatch(40, 4000)
      .WithDecodeBatchLater(1.5, 20);
  const Decision d = s.WhenRequest(100, {});
  EXPECT_TRUE(d.accepted) << d.detail;
  EXPECT_NEAR(d.decode.predicted_tbt_s, 0.031, 1e-12);
}

TEST(Decode, ChoosesThePredictedFastestNode) {
  PolicyScenario s(PrefillPolicy::kRoundRobin);
  s.GivenPrefillNode("p0")
      .GivenDecodeNode("d0")
      .WithDecodeBatch(10, 1000)
      .GivenDecodeNode("d1")
      .WithDecodeBatch(2, 200)
      .GivenDecodeNode("d2")
      .WithDecodeBatch(5, 500);
  const Decision d = s.WhenRequest(100, {});
  EXPECT_EQ(s.DecodeNodeOf(d), "d1");
  EXPECT_NEAR(d.decode.predicted_tbt_s, 0.013, 1e-12);
  EXPECT_EQ(d.decode.kv_blocks_needed, 8);  // (100 + 16) tokens / 16, rounded up
}

TEST(Decode, SkipsNodesWithoutFreeKv) {
  PolicyScenario s(PrefillPolicy::kRoundRobin);
  s.GivenPrefillNode("p0")
      .GivenDecodeNode("d0", /*free_kv_blocks=*/100)
      .WithDecodeBatch(10, 1000)
      .GivenDecodeNode("d1", /*free_kv_blocks=*/7)
      .WithDecodeBatch(2, 200);
  EXPECT_EQ(s.DecodeNodeOf(s.WhenRequest(100, {})), "d0");
}

TEST(Decode, TiesGoToMoreFreeKv) {
  PolicyScenario s(PrefillPolicy::kRoundRobin);
  s.GivenPrefillNode("p0").GivenDecodeNode("d0", 50).GivenDecodeNode("d1", 80);
  EXPECT_EQ(s.DecodeNodeOf(s.WhenRequest(100, {})), "d1");
}

TEST(Decode, RejectsWhenNoNodeHasRoomEvenWithoutEarlyRejection) {
  PolicyScenario s(PrefillPolicy::kRoundRobin, WithSlo(10, 10, /*early_rejection=*/false));
  s.GivenPrefillNode("p0").GivenDecodeNode("d0", 7);
  const Decision d = s.WhenRequest(100, {});
  EXPECT_FALSE(d.accepted);
  EXPECT_EQ(d.reason, RejectReason::kNoDecodeCapacity);
  EXPECT_THAT(d.detail, HasSubstr("8 free KV blocks"));
}

TEST(Colocated, DecodesWhereItPrefills) {
  PolicyScenario s(PrefillPolicy::kLocalCacheAware);
  s.GivenColocatedNode("c0").GivenColocatedNode("c1").Holding(Blocks(1, 3));
  const Decision d = s.WhenRequest(100, Blocks(1, 6));
  ASSERT_TRUE(d.accepted) << d.detail;
  EXPECT_EQ(s.PrefillNodeOf(d), "c1");
  EXPECT_EQ(s.DecodeNodeOf(d), "c1");
}

TEST(Placement, NoPrefillNodeIsARejection) {
  PolicyScenario s(PrefillPolicy::kRandom);
  s.GivenDecodeNode("d0");
  const Decision d = s.WhenRequest(100, {});
  EXPECT_FALSE(d.accepted);
  EXPECT_EQ(d.reason, RejectReason::kNoPrefillNode);
}

TEST(RoundRobin, CyclesOverPrefillNodesOnly) {
  PolicyScenario s(PrefillPolicy::kRoundRobin);
  s.GivenPrefillNode("p0").GivenDecodeNode("d0").GivenPrefillNode("p1").GivenPrefillNode("p2");
  std::vector<std::string> picks;
  for (int i = 0; i < 6; ++i) picks.push_back(s.PrefillNodeOf(s.WhenRequest(10, {})));
  EXPECT_EQ(picks, (std::vector<std::string>{"p0", "p1", "p2", "p0", "p1", "p2"}));
}

std::vector<std::string> RandomPicks(uint64_t seed) {
  PolicyScenario s(PrefillPolicy::kRandom, {}, seed);
  s.GivenPrefillNode("p0").GivenPrefillNode("p1").GivenPrefillNode("p2").GivenDecodeNode("d0");
  std::vector<std::string> picks;
  for (int i = 0; i < 60; ++i) picks.push_back(s.PrefillNodeOf(s.WhenRequest(10, {})));
  return picks;
}

TEST(Random, IsDeterministicForASeedAndCoversEveryNode) {
  const std::vector<std::string> a = RandomPicks(7);
  EXPECT_EQ(a, RandomPicks(7));
  EXPECT_NE(a, RandomPicks(8));
  EXPECT_EQ(std::set<std::string>(a.begin(), a.end()), (std::set<std::string>{"p0", "p1", "p2"}));
}

TEST(PolicyNames, RoundTrip) {
  for (PrefillPolicy p : AllPrefillPolicies()) {
    auto parsed = ParsePrefillPolicy(PrefillPolicyName(p));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, p);
  }
  EXPECT_EQ(*ParsePrefillPolicy("global-cache-aware"), PrefillPolicy::kGlobalCacheAware);
  EXPECT_THAT(std::string(ParsePrefillPolicy("fastest").status().message()), HasSubstr("fastest"));
}

}  // namespace
}  // namespace crescent::conductor::policy::testing
