#include "bench/replay/report.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace crescent::bench {
namespace {

using ::testing::HasSubstr;

Summary Sample() {
  RequestRecord r;
  r.scheduled_s = 0;
  r.first_token_s = 0.25;
  r.end_s = 1.0;
  r.gaps_s = {0.25, 0.5};
  r.prompt_tokens = 100;
  r.cached_tokens = 40;
  r.output_tokens = 3;
  r.http_status = 200;
  r.outcome = Outcome::kOk;
  return Summarize({r}, Slo{.ttft_s = 0.5}, 0.5, 0.64);
}

TEST(ReportTest, JsonRoundTrips) {
  const Summary s = Sample();
  nlohmann::json j = ReportToJson(s, "run-a", {{"endpoint", "http://x"}});
  EXPECT_EQ(j["config"]["endpoint"], "http://x");
  absl::StatusOr<LoadedReport> back = ReportFromJson(nlohmann::json::parse(j.dump()));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->label, "run-a");
  EXPECT_EQ(back->summary.requests, 1);
  EXPECT_DOUBLE_EQ(back->summary.hit_ratio, 0.4);
  EXPECT_DOUBLE_EQ(back->summary.ttft_s.p50, 0.25);
  EXPECT_DOUBLE_EQ(back->summary.slo.ttft_s, 0.5);
  EXPECT_DOUBLE_EQ(back->summary.trace_ideal_hit_ratio, 0.64);
}

TEST(ReportTest, FromJsonNamesMissingField) {
  nlohmann::json j = ReportToJson(Sample(), "x", {});
  j["summary"].erase("goodput");
  absl::StatusOr<LoadedReport> back = ReportFromJson(j);
  ASSERT_FALSE(back.ok());
  EXPECT_THAT(back.status().message(), HasSubstr("goodput"));
  EXPECT_FALSE(ReportFromJson(nlohmann::json::array()).ok());
  EXPECT_FALSE(ReadReportFile("/nonexistent/report.json").ok());
}

TEST(ReportTest, CsvHasOneLinePerRecord) {
  RequestRecord ok;
  ok.outcome = Outcome::kOk;
  RequestRecord bad;
  bad.index = 1;
  bad.outcome = Outcome::kRejected;
  bad.http_status = 429;
  bad.error = "HTTP 429: \"slow down\"\nnow";
  const std::string csv = RecordsToCsv({ok, bad});
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 3);
  EXPECT_THAT(csv, HasSubstr(",429,rejected,\"HTTP 429: 'slow down''now\"\n"));
}

TEST(ReportTest, TableAndComparison) {
  const std::string table = FormatSummaryTable(Sample());
  EXPECT_THAT(table, HasSubstr("TTFT p50/p90/p99 (ms)"));
  EXPECT_THAT(table, HasSubstr("250.0"));
  EXPECT_THAT(table, HasSubstr("cache hit ratio"));
  EXPECT_THAT(table, HasSubstr("40.0%"));
  const std::string cmp = FormatComparison({{"base", Sample()}, {"cache-aware", Sample()}});
  EXPECT_THAT(cmp, HasSubstr("base"));
  EXPECT_THAT(cmp, HasSubstr("cache-aware"));
  EXPECT_THAT(cmp, HasSubstr("ideal hit ratio (trace)"));
}

}  // namespace
}  // namespace crescent::bench
