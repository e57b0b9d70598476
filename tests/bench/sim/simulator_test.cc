// Simulator tests on hand-computable scenarios. The cost model is linear: prefill 1 ms per
// computed token, decode step 10 ms whatever the batch, KV 1000 bytes per token at 1 GB/s.
#include "bench/sim/simulator.h"

#include <random>
#include <string>
#include <vector>

#include "bench/sim/profile.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace crescent::bench::sim {
namespace {

using ::testing::DoubleNear;
using ::testing::ElementsAre;

policy::CostModel LinearCost() {
  return policy::CostModel::FromCoefficients({0.0, 0.001, 0.0}, {0.010, 0.0, 0.0}, 512, 1000, 1e9,
                                             0.0);
}

TraceRequest Req(double ms, int64_t in, int64_t out, std::vector<uint64_t> ids) {
  return TraceRequest{ms, in, out, std::move(ids)};
}

SimConfig OneByOne(policy::PrefillPolicy p = policy::PrefillPolicy::kGlobalCacheAware) {
  SimConfig c;
  c.prefill_instances = 1;
  c.decode_instances = 1;
  c.policy = p;
  c.slo = {100.0, 1.0};
  return c;
}

TEST(Simulator, OneRequestHasExactTtftAndGaps) {
  const auto r = Simulate({Req(0, 1024, 3, {1, 2})}, LinearCost(), OneByOne());
  ASSERT_TRUE(r.ok()) << r.status();
  const RequestOutcome& o = r->outcomes[0];
  ASSERT_FALSE(o.rejected);
  EXPECT_DOUBLE_EQ(o.ttft_s, 1.024);  // 1024 tokens x 1 ms, nothing cached
  // KV (1.024 MB at 1 GB/s) streams during the prefill; the last of 32 layers lands 32 us
  // after it, then two 10 ms decode steps produce tokens 2 and 3.
  EXPECT_THAT(o.gaps_s, ElementsAre(DoubleNear(0.010032, 1e-9), DoubleNear(0.010, 1e-9)));
  EXPECT_NEAR(o.e2e_s, 1.044032, 1e-9);
  EXPECT_EQ(o.output_tokens, 3);
  EXPECT_EQ(o.computed_tokens, 1024);
  EXPECT_EQ(r->report.completed, 1);
  EXPECT_DOUBLE_EQ(r->report.slo_attainment, 1.0);
}

TEST(Simulator, ASecondRequestReusesTheCachedPrefix) {
  // Request 2 shares block 1; only full blocks that leave a token to compute are reusable.
  const auto r = Simulate({Req(0, 1024, 2, {1, 2}), Req(10'000, 1100, 2, {1, 2, 3})}, LinearCost(),
                          OneByOne(policy::PrefillPolicy::kLocalCacheAware));
  ASSERT_TRUE(r.ok()) << r.status();
  const RequestOutcome& o = r->outcomes[1];
  EXPECT_EQ(o.cached_tokens, 1024);
  EXPECT_EQ(o.computed_tokens, 76);
  EXPECT_NEAR(o.ttft_s, 0.076, 1e-12);
  EXPECT_DOUBLE_EQ(r->report.cache_hit_ratio, 1024.0 / (1024 + 1100));
}

TEST(Simulator, GlobalPolicyFetchesFromThePoolOthersDoNot) {
  // Two prefill instances without local caches; the pool keeps what was computed. Round-robin
  // sends request 2 to the other instance, which cannot reuse anything; the global policy
  // fetches the prefix from the pool (1 block = 0.512 ms of transfer vs 512 ms of compute).
  SimConfig c = OneByOne(policy::PrefillPolicy::kGlobalCacheAware);
  c.prefill_instances = 2;
  c.local_cache_blocks = 0;
  const std::vector<TraceRequest> trace = {Req(0, 1024, 1, {1, 2}), Req(10'000, 1024, 1, {1, 2})};
  const auto global = Simulate(trace, LinearCost(), c);
  ASSERT_TRUE(global.ok());
  EXPECT_EQ(global->outcomes[1].cached_tokens, 512);
  EXPECT_NEAR(global->outcomes[1].ttft_s, 0.000512 + 0.512, 1e-12);
  c.policy = policy::PrefillPolicy::kLocalCacheAware;
  const auto local = Simulate(trace, LinearCost(), c);
  ASSERT_TRUE(local.ok());
  EXPECT_EQ(local->outcomes[1].cached_tokens, 0);
  EXPECT_DOUBLE_EQ(local->outcomes[1].ttft_s, 1.024);
}

TEST(Simulator, QueueingAddsToTtft) {
  // Two requests at once on one prefill instance: the second waits for the first.
  const auto r = Simulate({Req(0, 1000, 1, {}), Req(0, 500, 1, {})}, LinearCost(), OneByOne());
  ASSERT_TRUE(r.ok());
  EXPECT_DOUBLE_EQ(r->outcomes[0].ttft_s, 1.0);
  EXPECT_DOUBLE_EQ(r->outcomes[1].ttft_s, 1.5);
}

TEST(Simulator, EarlyRejectionRejectsBeforePrefillWork) {
  SimConfig c = OneByOne();
  c.slo.ttft_s = 1.2;
  c.early_rejection = true;
  const std::vector<TraceRequest> trace = {Req(0, 1000, 1, {}), Req(0, 500, 1, {})};
  const auto r = Simulate(trace, LinearCost(), c);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->outcomes[0].rejected);
  EXPECT_TRUE(r->outcomes[1].rejected);  // predicted 1.5 s > 1.2 s
  EXPECT_EQ(r->outcomes[1].reject_reason, "ttft_slo");
  EXPECT_EQ(r->report.wasted_prefill_tokens, 0);
  c.early_rejection = false;
  const auto late = Simulate(trace, LinearCost(), c);
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(late->report.rejected, 0);
  EXPECT_EQ(late->report.wasted_prefill_tokens, 500);  // prefilled, then missed the SLO
}

TEST(Simulator, ContinuousBatchingJoinsAtStepBoundaries) {
  // Request 2's KV lands while request 1 decodes; it joins at the next step boundary.
  const auto r = Simulate({Req(0, 100, 4, {}), Req(100, 10, 2, {})}, LinearCost(), OneByOne());
  ASSERT_TRUE(r.ok());
  // Request 1: first token 0.1 s, KV at 0.1 + 3.125 us, steps end at +10 ms each.
  const double kv1 = 0.1 + 100 * 1000 / 1e9 / 32;
  EXPECT_NEAR(r->outcomes[0].e2e_s, kv1 + 0.030, 1e-9);
  // Request 2 arrives at 0.1 s, prefill waits for nothing (instance free at 0.1 s): first token
  // at 0.11 s; it joins at the step boundary kv1 + 0.010 and gets token 2 at kv1 + 0.020.
  EXPECT_DOUBLE_EQ(r->outcomes[1].ttft_s, 0.010);
  EXPECT_NEAR(r->outcomes[1].e2e_s, kv1 + 0.020 - 0.1, 1e-9);
}

TEST(Simulator, ColocatedChunksPrefillIntoDecodeIterations) {
  SimConfig c = OneByOne();
  c.colocated = true;
  c.prefill_instances = 1;
  c.decode_instances = 0;
  c.chunk_tokens = 512;
  const auto r = Simulate({Req(0, 1024, 3, {1, 2})}, LinearCost(), c);
  ASSERT_TRUE(r.ok()) << r.status();
  const RequestOutcome& o = r->outcomes[0];
  EXPECT_DOUBLE_EQ(o.ttft_s, 1.024);  // two 512-token chunks
  EXPECT_THAT(o.gaps_s, ElementsAre(DoubleNear(0.010, 1e-12), DoubleNear(0.010, 1e-12)));
}

TEST(Simulator, ColocatedPrefillStretchesTheRunningBatchsGaps) {
  SimConfig c = OneByOne();
  c.colocated = true;
  c.decode_instances = 0;
  c.chunk_tokens = 100;
  // Request 1 decodes 5 tokens; request 2's 200-token prompt arrives during its decode and is
  // prefilled in two 100-token chunks, each adding 100 ms to one of request 1's steps.
  const auto r = Simulate({Req(0, 10, 5, {}), Req(12, 200, 1, {})}, LinearCost(), c);
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(r->outcomes[0].gaps_s,
              ElementsAre(DoubleNear(0.010, 1e-12), DoubleNear(0.110, 1e-12),
                          DoubleNear(0.110, 1e-12), DoubleNear(0.010, 1e-12)));
}

std::vector<TraceRequest> RandomTrace(int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<TraceRequest> t;
  for (int i = 0; i < n; ++i) {
    TraceRequest r;
    r.timestamp_ms = i * 50.0;
    r.input_length = 512 * static_cast<int64_t>(1 + rng() % 8) + static_cast<int64_t>(rng() % 500);
    r.output_length = 1 + static_cast<int64_t>(rng() % 40);
    const uint64_t group = rng() % 5;  // shared-prefix groups
    for (int64_t b = 0; b < (r.input_length + 511) / 512; ++b) {
      r.hash_ids.push_back(b < 4 ? group * 1000 + b : 100000 + i * 100 + b);
    }
    t.push_back(std::move(r));
  }
  return t;
}

TEST(Simulator, SameSeedSameReport) {
  const auto trace = RandomTrace(300, 42);
  SimConfig c = OneByOne(policy::PrefillPolicy::kRandom);
  c.prefill_instances = 4;
  c.decode_instances = 3;
  c.local_cache_blocks = 20;
  c.pool_blocks = 100;
  c.slo = {2.0, 0.05};
  c.seed = 9;
  auto a = Simulate(trace, LinearCost(), c);
  auto b = Simulate(trace, LinearCost(), c);
  ASSERT_TRUE(a.ok() && b.ok());
  a->report.wall_s = b->report.wall_s = 0;
  EXPECT_EQ(ReportToJson(a->report).dump(), ReportToJson(b->report).dump());
  EXPECT_EQ(a->events, b->events);
  c.seed = 10;
  auto other = Simulate(trace, LinearCost(), c);
  ASSERT_TRUE(other.ok());
  other->report.wall_s = 0;
  EXPECT_NE(ReportToJson(a->report).dump(), ReportToJson(other->report).dump());
}

TEST(Simulator, EveryAcceptedRequestFinishesAndFreesItsKv) {
  const auto trace = RandomTrace(300, 7);
  for (bool colocated : {false, true}) {
    SimConfig c = OneByOne(policy::PrefillPolicy::kGlobalCacheAware);
    c.prefill_instances = 3;
    c.decode_instances = 2;
    c.colocated = colocated;
    c.kv_blocks_per_instance = 40;
    auto r = Simulate(trace, LinearCost(), c);
    ASSERT_TRUE(r.ok());
    for (size_t i = 0; i < trace.size(); ++i) {
      const RequestOutcome& o = r->outcomes[i];
      if (o.rejected) continue;
      EXPECT_EQ(o.output_tokens, trace[i].output_length) << i;
      EXPECT_EQ(o.gaps_s.size(), static_cast<size_t>(trace[i].output_length - 1)) << i;
      EXPECT_EQ(o.cached_tokens + o.computed_tokens, trace[i].input_length) << i;
      EXPECT_GE(o.e2e_s, o.ttft_s) << i;
    }
  }
}

TEST(Simulator, RejectsInconsistentConfigs) {
  SimConfig c = OneByOne();
  c.decode_instances = 0;
  EXPECT_EQ(Simulate({Req(0, 10, 1, {})}, LinearCost(), c).status().code(),
            absl::StatusCode::kInvalidArgument);
  c = OneByOne();
  c.trace_block_tokens = 16;
  EXPECT_THAT(std::string(Simulate({Req(0, 10, 1, {})}, LinearCost(), c).status().message()),
              ::testing::HasSubstr("block size"));
  EXPECT_FALSE(Simulate({}, LinearCost(), OneByOne()).ok());
}

TEST(Profile, DefaultProfileRoundTripsThroughJsonAndFits) {
  const policy::CostProfile p = DefaultCostProfile();
  auto parsed = ParseCostProfileJson(CostProfileToJson(p, "x"));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->prefill.size(), p.prefill.size());
  auto model = policy::CostModel::Fit(*parsed);
  ASSERT_TRUE(model.ok());
  EXPECT_NEAR(model->prefill_coefficients()[1], 125e-6, 1e-9);
  EXPECT_THAT(std::string(ParseCostProfileJson("{}").status().message()),
              ::testing::HasSubstr("block_tokens"));
}

}  // namespace
}  // namespace crescent::bench::sim
