#include "bench/replay/trace.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace crescent::bench {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kGood[] =
    R"({"timestamp": 0, "input_length": 1000, "output_length": 5, "hash_ids": [0, 1]})";

TEST(TraceTest, ParsesMooncakeLines) {
  const std::string text = std::string(kGood) + "\n" +
                           R"({"timestamp": 250, "input_length": 600, "output_length": 7, )"
                           R"("hash_ids": [0, 2]})" +
                           "\n";
  std::vector<TraceIssue> issues;
  absl::StatusOr<Trace> trace = ParseTrace(text, {}, &issues);
  ASSERT_TRUE(trace.ok()) << trace.status();
  EXPECT_TRUE(issues.empty());
  ASSERT_EQ(trace->requests.size(), 2u);
  EXPECT_EQ(trace->block_tokens, 512);
  EXPECT_EQ(trace->requests[0].input_length, 1000);
  EXPECT_EQ(trace->requests[0].output_length, 5);
  EXPECT_THAT(trace->requests[0].hash_ids, ElementsAre(0, 1));
  EXPECT_EQ(trace->requests[1].timestamp_ms, 250);
  EXPECT_EQ(trace->requests[1].line, 2);
}

TEST(TraceTest, MalformedLinesAreReportedWithLineNumbersAndSkipped) {
  const std::string text =
      std::string(kGood) + "\n" +                // 1
      "not json\n" +                             // 2
      "\n" +                                     // 3 (blank: ignored)
      R"({"timestamp": 1, "input_length": 10})"  // 4: no output_length
      "\n" +
      R"({"timestamp": -1, "input_length": 10, "output_length": 1, "hash_ids": []})"
      "\n" +  // 5: negative
      R"({"timestamp": 2, "input_length": 10, "output_length": 1, "hash_ids": ["a"]})"
      "\n" +  // 6: ids not integers
      R"({"timestamp": 3, "input_length": 10, "output_length": 1, "hash_ids": [1, 2]})"
      "\n" +               // 7: more blocks than the length needs
      "[1, 2]\n" +         // 8: not an object
      std::string(kGood);  // 9, no final newline
  std::vector<TraceIssue> issues;
  absl::StatusOr<Trace> trace = ParseTrace(text, {}, &issues);
  ASSERT_TRUE(trace.ok()) << trace.status();
  EXPECT_EQ(trace->requests.size(), 2u);
  std::vector<int64_t> lines;
  for (const TraceIssue& issue : issues) lines.push_back(issue.line);
  EXPECT_THAT(lines, ElementsAre(2, 4, 5, 6, 7, 8));
  EXPECT_THAT(issues[1].message, HasSubstr("output_length"));
  EXPECT_THAT(issues[2].message, HasSubstr("negative"));
  EXPECT_THAT(issues[4].message, HasSubstr("needs only 1"));
}

TEST(TraceTest, StrictFailsOnFirstMalformedLine) {
  const std::string text = std::string(kGood) + "\n" + kGood + "\n{\"timestamp\": 1}\nbad\n";
  absl::StatusOr<Trace> trace = ParseTrace(text, {.strict = true}, nullptr);
  ASSERT_FALSE(trace.ok());
  EXPECT_EQ(trace.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(trace.status().message(), HasSubstr("line 3"));
}

TEST(TraceTest, SortsByTimestampAndRoundTrips) {
  const std::string text =
      R"({"timestamp": 9, "input_length": 1, "output_length": 1, "hash_ids": [5]})"
      "\r\n" +
      std::string(kGood) + "\r\n";
  absl::StatusOr<Trace> trace = ParseTrace(text, {}, nullptr);
  ASSERT_TRUE(trace.ok()) << trace.status();
  ASSERT_EQ(trace->requests.size(), 2u);
  EXPECT_EQ(trace->requests[0].timestamp_ms, 0);
  absl::StatusOr<Trace> again = ParseTrace(TraceToJsonl(*trace), {}, nullptr);
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->requests.size(), 2u);
  EXPECT_EQ(again->requests[1].hash_ids, trace->requests[1].hash_ids);
}

TEST(TraceTest, ReadFileReportsMissingFile) {
  absl::StatusOr<Trace> trace = ReadTraceFile("/nonexistent/trace.jsonl", {}, nullptr);
  ASSERT_FALSE(trace.ok());
  EXPECT_EQ(trace.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(trace.status().message(), HasSubstr("/nonexistent/trace.jsonl"));
}

Trace MakeTrace(int n) {
  Trace t;
  for (int i = 0; i < n; ++i) {
    t.requests.push_back(
        {.timestamp_ms = 100 * i, .input_length = 512, .output_length = 1, .hash_ids = {i}});
  }
  return t;
}

TEST(TraceTest, SubsetStartLimitSampleAndRebase) {
  Trace t = MakeTrace(100);
  Trace s = SelectSubset(t, {.start = 10, .limit = 20});
  ASSERT_EQ(s.requests.size(), 20u);
  EXPECT_EQ(s.requests[0].hash_ids[0], 10);
  EXPECT_EQ(s.requests[0].timestamp_ms, 0);
  EXPECT_EQ(s.requests[19].timestamp_ms, 1900);
  Trace sampled = SelectSubset(t, {.start = 0, .limit = -1, .sample = 10});
  ASSERT_EQ(sampled.requests.size(), 10u);
  EXPECT_EQ(sampled.requests[1].hash_ids[0], 10);
  EXPECT_EQ(sampled.requests[9].hash_ids[0], 90);
  EXPECT_TRUE(SelectSubset(t, {.start = 200}).requests.empty());
  ScaleTime(s, 0.5);
  EXPECT_EQ(s.requests[19].timestamp_ms, 950);
}

TEST(TraceTest, IdealBlockHitRatioCountsLeadingSeenBlocks) {
  Trace t;
  t.requests.push_back({.input_length = 2048, .hash_ids = {1, 2, 3, 4}});  // 0 hits.
  t.requests.push_back({.input_length = 2048, .hash_ids = {1, 2, 5, 6}});  // 2 hits.
  t.requests.push_back({.input_length = 1024, .hash_ids = {7, 3}});        // 3 seen, not leading.
  EXPECT_DOUBLE_EQ(IdealBlockHitRatio(t), 2.0 / 10.0);
  EXPECT_DOUBLE_EQ(IdealBlockHitRatio(Trace{}), 0.0);
}

TEST(TraceTest, SharedTraceParsesAndMatchesItsReadme) {
  // CTest passes the trace beside the repository (../shared/traces); CRESCENT_TRACE overrides.
  const char* env = std::getenv("CRESCENT_TRACE");
  const std::string path = env != nullptr ? env : "../shared/traces/synthetic_trace.jsonl";
  std::ifstream probe(path);
  if (!probe) GTEST_SKIP() << "no shared trace at " << path;
  std::vector<TraceIssue> issues;
  absl::StatusOr<Trace> trace = ReadTraceFile(path, {.strict = true}, &issues);
  ASSERT_TRUE(trace.ok()) << trace.status();
  EXPECT_EQ(trace->requests.size(), 3993u);
  EXPECT_NEAR(IdealBlockHitRatio(*trace), 0.640, 0.0005);
}

}  // namespace
}  // namespace crescent::bench
