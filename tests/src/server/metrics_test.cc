#include "src/server/metrics.h"

#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace crescent::server {
namespace {

using ::testing::HasSubstr;

TEST(MetricsTest, CounterGaugeRendering) {
  MetricsRegistry r;
  Counter* c = r.GetCounter("crescent:request_success_total", "Finished requests.",
                            {{"finished_reason", "stop"}});
  c->Increment();
  c->Increment(2);
  c->Increment(-5);  // Ignored: counters only go up.
  EXPECT_EQ(c, r.GetCounter("crescent:request_success_total", "", {{"finished_reason", "stop"}}));
  r.GetCounter("crescent:request_success_total", "", {{"finished_reason", "length"}})->Increment();
  Gauge* g = r.GetGauge("crescent:kv_cache_usage_perc", "KV use.");
  g->Set(0.25);
  g->Add(0.5);
  EXPECT_DOUBLE_EQ(g->Value(), 0.75);
  EXPECT_EQ(r.RenderText(),
            "# HELP crescent:kv_cache_usage_perc KV use.\n"
            "# TYPE crescent:kv_cache_usage_perc gauge\n"
            "crescent:kv_cache_usage_perc 0.75\n"
            "# HELP crescent:request_success_total Finished requests.\n"
            "# TYPE crescent:request_success_total counter\n"
            "crescent:request_success_total{finished_reason=\"length\"} 1\n"
            "crescent:request_success_total{finished_reason=\"stop\"} 3\n");
}

TEST(MetricsTest, HistogramCumulativeBuckets) {
  MetricsRegistry r;
  Histogram* h = r.GetHistogram("lat_seconds", "Latency.", {0.125, 1.0});
  h->Observe(0.0625);
  h->Observe(0.125);  // "le" is inclusive.
  h->Observe(0.5);
  h->Observe(7.0);
  EXPECT_EQ(h->Count(), 4u);
  EXPECT_EQ(r.RenderText(),
            "# HELP lat_seconds Latency.\n"
            "# TYPE lat_seconds histogram\n"
            "lat_seconds_bucket{le=\"0.125\"} 2\n"
            "lat_seconds_bucket{le=\"1\"} 3\n"
            "lat_seconds_bucket{le=\"+Inf\"} 4\n"
            "lat_seconds_sum 7.6875\n"
            "lat_seconds_count 4\n");
}

TEST(MetricsTest, LabelsSortedAndEscaped) {
  MetricsRegistry r;
  r.GetGauge("g", "Help with \\ and\nnewline.", {{"z", "1"}, {"a", "q\"uo\\te\nx"}})->Set(-2);
  r.GetHistogram("h", "H.", {1.0}, {{"model", "m"}})->Observe(2);
  std::string text = r.RenderText();
  EXPECT_THAT(text, HasSubstr("# HELP g Help with \\\\ and\\nnewline.\n"));
  EXPECT_THAT(text, HasSubstr("g{a=\"q\\\"uo\\\\te\\nx\",z=\"1\"} -2\n"));
  EXPECT_THAT(text, HasSubstr("h_bucket{model=\"m\",le=\"1\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("h_bucket{model=\"m\",le=\"+Inf\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("h_sum{model=\"m\"} 2\n"));
}

TEST(MetricsTest, TypeConflictGivesDetachedMetric) {
  MetricsRegistry r;
  r.GetCounter("x_total", "X.")->Increment();
  Gauge* g = r.GetGauge("x_total", "X as gauge.");
  ASSERT_NE(g, nullptr);
  g->Set(99);
  Histogram* h1 = r.GetHistogram("y", "Y.", {1.0});
  Histogram* h2 = r.GetHistogram("y", "Y.", {2.0});  // Other buckets.
  EXPECT_NE(h1, h2);
  h2->Observe(0.5);
  std::string text = r.RenderText();
  EXPECT_THAT(text, HasSubstr("x_total 1\n"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("99")));
  EXPECT_THAT(text, HasSubstr("y_count 0\n"));
}

TEST(MetricsTest, ConcurrentUpdatesAreNotLost) {
  MetricsRegistry r;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&r] {
      for (int i = 0; i < 10000; ++i) {
        r.GetCounter("c_total", "C.")->Increment();
        r.GetHistogram("h", "H.", {0.5})->Observe(1.0);
        r.GetGauge("g", "G.")->Add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_DOUBLE_EQ(r.GetCounter("c_total", "C.")->Value(), 40000);
  EXPECT_EQ(r.GetHistogram("h", "H.", {0.5})->Count(), 40000u);
  EXPECT_DOUBLE_EQ(r.GetHistogram("h", "H.", {0.5})->Sum(), 40000);
  EXPECT_DOUBLE_EQ(r.GetGauge("g", "G.")->Value(), 40000);
}

TEST(MetricsTest, ServerMetricsNames) {
  MetricsRegistry r;
  ServerMetrics m(&r);
  m.time_to_first_token_seconds->Observe(0.2);
  m.RequestSuccess("length")->Increment();
  m.kv_cache_usage_perc->Set(0.5);
  std::string text = r.RenderText();
  for (const char* name :
       {"crescent:time_to_first_token_seconds_bucket", "crescent:inter_token_latency_seconds_count",
        "crescent:e2e_request_latency_seconds_sum", "crescent:request_queue_time_seconds_count",
        "crescent:num_requests_running 0", "crescent:num_requests_waiting 0",
        "crescent:kv_cache_usage_perc 0.5", "crescent:prefix_cache_queries_total 0",
        "crescent:prefix_cache_hits_total 0", "crescent:prompt_tokens_total 0",
        "crescent:generation_tokens_total 0", "crescent:num_preemptions_total 0",
        "crescent:request_success_total{finished_reason=\"length\"} 1",
        "# TYPE crescent:time_to_first_token_seconds histogram"}) {
    EXPECT_THAT(text, HasSubstr(name));
  }
}

}  // namespace
}  // namespace crescent::server
