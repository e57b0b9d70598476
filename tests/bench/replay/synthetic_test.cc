#include "bench/replay/synthetic.h"

#include <set>

#include "bench/replay/trace.h"
#include "gtest/gtest.h"

namespace crescent::bench {
namespace {

TEST(SyntheticTest, PoissonArrivalsAndLengths) {
  absl::StatusOr<Trace> t = GenerateSyntheticTrace(
      {.num_requests = 2000, .rate = 10, .mean_input = 1000, .max_input = 100000, .seed = 3});
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->requests.size(), 2000u);
  // 2000 arrivals at 10/s take about 200 s.
  const double span = t->requests.back().timestamp_ms / 1e3;
  EXPECT_GT(span, 170);
  EXPECT_LT(span, 230);
  double mean = 0;
  for (const TraceRequest& r : t->requests) {
    mean += static_cast<double>(r.input_length);
    EXPECT_EQ(static_cast<int64_t>(r.hash_ids.size()), (r.input_length + 511) / 512);
    EXPECT_GE(r.output_length, 1);
  }
  mean /= 2000;
  EXPECT_GT(mean, 850);
  EXPECT_LT(mean, 1150);
  // No sharing was asked for: every block id is fresh.
  EXPECT_DOUBLE_EQ(IdealBlockHitRatio(*t), 0.0);
  // Deterministic in the seed.
  absl::StatusOr<Trace> again = GenerateSyntheticTrace(
      {.num_requests = 2000, .rate = 10, .mean_input = 1000, .max_input = 100000, .seed = 3});
  EXPECT_EQ(TraceToJsonl(*t), TraceToJsonl(*again));
}

TEST(SyntheticTest, BurstsArriveTogether) {
  absl::StatusOr<Trace> t = GenerateSyntheticTrace(
      {.num_requests = 40, .rate = 4, .arrival = ArrivalProcess::kBursty, .burst_size = 8});
  ASSERT_TRUE(t.ok());
  std::set<int64_t> times;
  for (const TraceRequest& r : t->requests) times.insert(r.timestamp_ms);
  EXPECT_EQ(times.size(), 5u);
}

TEST(SyntheticTest, SharedPrefixGroupsAndSessionsCreateHits) {
  absl::StatusOr<Trace> groups = GenerateSyntheticTrace(
      {.num_requests = 200, .mean_input = 512, .num_groups = 4, .shared_prefix_blocks = 8});
  ASSERT_TRUE(groups.ok());
  for (const TraceRequest& r : groups->requests) {
    ASSERT_GE(r.hash_ids.size(), 8u);
    EXPECT_EQ(r.hash_ids[0] % 8, 0);
    EXPECT_LT(r.hash_ids[0], 32);
  }
  EXPECT_GT(IdealBlockHitRatio(*groups), 0.5);

  absl::StatusOr<Trace> sessions = GenerateSyntheticTrace(
      {.num_requests = 200, .mean_input = 2048, .followup_probability = 0.8, .active_sessions = 4});
  ASSERT_TRUE(sessions.ok());
  EXPECT_GT(IdealBlockHitRatio(*sessions), 0.3);
}

TEST(SyntheticTest, RejectsBadOptions) {
  EXPECT_FALSE(GenerateSyntheticTrace({.rate = 0}).ok());
  EXPECT_FALSE(GenerateSyntheticTrace({.burst_size = 0}).ok());
  EXPECT_FALSE(GenerateSyntheticTrace({.followup_probability = 2}).ok());
  EXPECT_FALSE(GenerateSyntheticTrace({.min_input = 10, .max_input = 5}).ok());
}

}  // namespace
}  // namespace crescent::bench
