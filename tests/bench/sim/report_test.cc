#include "bench/sim/report.h"

#include <vector>

#include "gtest/gtest.h"

namespace crescent::bench::sim {
namespace {

TEST(Report, SummarizeCountsAttainmentGoodputWasteAndHits) {
  policy::Slo slo{1.0, 0.1};
  std::vector<RequestOutcome> o(4);
  o[0] = {.ttft_s = 0.5,
          .e2e_s = 1.0,
          .gaps_s = {0.05, 0.05},
          .prompt_tokens = 100,
          .cached_tokens = 50,
          .computed_tokens = 50,
          .output_tokens = 3};
  o[1] = {.ttft_s = 2.0,
          .e2e_s = 3.0,
          .gaps_s = {0.05},
          .prompt_tokens = 100,
          .cached_tokens = 0,
          .computed_tokens = 100,
          .output_tokens = 2};  // TTFT miss
  o[2] = {.ttft_s = 0.5,
          .e2e_s = 1.0,
          .gaps_s = {0.5},
          .prompt_tokens = 200,
          .cached_tokens = 0,
          .computed_tokens = 200,
          .output_tokens = 2};  // TBT miss
  o[3].rejected = true;
  o[3].reject_reason = "ttft_slo";
  const SimReport r = Summarize(o, slo, /*duration_s=*/10.0, /*span_s=*/8.0);
  EXPECT_EQ(r.requests, 4);
  EXPECT_EQ(r.completed, 3);
  EXPECT_EQ(r.rejected, 1);
  EXPECT_EQ(r.rejected_by_reason.at("ttft_slo"), 1);
  EXPECT_DOUBLE_EQ(r.slo_attainment, 0.25);
  EXPECT_DOUBLE_EQ(r.rejection_rate, 0.25);
  EXPECT_DOUBLE_EQ(r.goodput_rps, 0.1);
  EXPECT_DOUBLE_EQ(r.goodput_tokens_per_s, 0.3);
  EXPECT_DOUBLE_EQ(r.request_rate, 0.5);
  EXPECT_DOUBLE_EQ(r.cache_hit_ratio, 50.0 / 400.0);
  EXPECT_EQ(r.prefilled_tokens, 350);
  EXPECT_EQ(r.wasted_prefill_tokens, 300);
  EXPECT_DOUBLE_EQ(r.ttft_s.p50, 0.5);
  EXPECT_DOUBLE_EQ(r.ttft_s.mean, 1.0);
}

}  // namespace
}  // namespace crescent::bench::sim
