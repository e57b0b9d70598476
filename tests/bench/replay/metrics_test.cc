#include "bench/replay/metrics.h"

#include <vector>

#include "gtest/gtest.h"

namespace crescent::bench {
namespace {

RequestRecord Ok(double scheduled, double ttft, std::vector<double> gaps, int64_t out,
                 int64_t prompt, int64_t cached) {
  RequestRecord r;
  r.scheduled_s = scheduled;
  r.sent_s = scheduled;
  r.first_token_s = scheduled + ttft;
  double t = r.first_token_s;
  for (double g : gaps) t += g;
  r.end_s = t;
  r.gaps_s = std::move(gaps);
  r.output_tokens = out;
  r.prompt_tokens = prompt;
  r.cached_tokens = cached;
  r.http_status = 200;
  r.outcome = Outcome::kOk;
  return r;
}

TEST(MetricsTest, SloAndGoodput) {
  std::vector<RequestRecord> records;
  records.push_back(Ok(0, 0.1, {0.05, 0.05}, 3, 100, 50));        // Meets both.
  records.push_back(Ok(1, 0.5, {0.05}, 2, 100, 0));               // TTFT too slow.
  records.push_back(Ok(2, 0.1, {0.05, 0.3, 0.05}, 4, 200, 100));  // Worst gap 0.3 too slow.
  RequestRecord rejected;
  rejected.scheduled_s = 3;
  rejected.http_status = 429;
  rejected.outcome = Outcome::kRejected;
  records.push_back(rejected);
  RequestRecord failed;
  failed.scheduled_s = 3.5;
  failed.end_s = 10;  // Failed requests still extend the duration.
  failed.outcome = Outcome::kFailed;
  records.push_back(failed);

  const Slo slo{.ttft_s = 0.2, .tbt_s = 0.1};
  EXPECT_TRUE(MeetsSlo(records[0], slo));
  EXPECT_FALSE(MeetsSlo(records[1], slo));
  EXPECT_FALSE(MeetsSlo(records[2], slo));
  EXPECT_FALSE(MeetsSlo(records[3], slo));
  EXPECT_TRUE(MeetsSlo(records[1], Slo{}));

  Summary s = Summarize(records, slo, 0.6, 0.64);
  EXPECT_EQ(s.requests, 5);
  EXPECT_EQ(s.ok, 3);
  EXPECT_EQ(s.rejected, 1);
  EXPECT_EQ(s.failed, 1);
  EXPECT_DOUBLE_EQ(s.duration_s, 10);
  EXPECT_DOUBLE_EQ(s.slo_attainment, 1.0 / 5);
  EXPECT_DOUBLE_EQ(s.goodput, 1.0 / 10);
  EXPECT_DOUBLE_EQ(s.rejection_rate, 1.0 / 5);
  EXPECT_DOUBLE_EQ(s.request_throughput, 3.0 / 10);
  EXPECT_DOUBLE_EQ(s.output_throughput, 9.0 / 10);
  EXPECT_EQ(s.prompt_tokens, 400);
  EXPECT_EQ(s.cached_tokens, 150);
  EXPECT_DOUBLE_EQ(s.hit_ratio, 150.0 / 400);
  EXPECT_DOUBLE_EQ(s.ideal_hit_ratio, 0.6);
  EXPECT_EQ(s.ttft_s.count, 3);
  EXPECT_NEAR(s.ttft_s.p50, 0.1, 1e-12);
  EXPECT_NEAR(s.ttft_s.max, 0.5, 1e-12);
  EXPECT_EQ(s.tbt_s.count, 6);
  EXPECT_EQ(s.tbt_worst10_s.count, 3);
  EXPECT_NEAR(s.tbt_worst10_s.max, 0.3, 1e-12);
  EXPECT_NEAR(s.e2e_s.max, 0.5 + 0.05, 1e-12);
}

TEST(MetricsTest, EmptySummary) {
  Summary s = Summarize({}, Slo{}, 0, 0);
  EXPECT_EQ(s.requests, 0);
  EXPECT_DOUBLE_EQ(s.goodput, 0);
  EXPECT_DOUBLE_EQ(s.hit_ratio, 0);
}

}  // namespace
}  // namespace crescent::bench
