#include "bench/sim/trace.h"

#include <cstdio>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace crescent::bench::sim {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(Trace, ParsesAMooncakeLine) {
  auto r = ParseTraceLine(
      R"({"timestamp": 40, "input_length": 1100, "output_length": 7, "hash_ids": [0, 1, 2]})", 1);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->timestamp_ms, 40);
  EXPECT_EQ(r->input_length, 1100);
  EXPECT_EQ(r->output_length, 7);
  EXPECT_THAT(r->hash_ids, ElementsAre(0, 1, 2));
}

TEST(Trace, NamesTheLineAndTheProblem) {
  EXPECT_THAT(std::string(ParseTraceLine("{not json", 12).status().message()),
              HasSubstr("trace line 12: not JSON"));
  EXPECT_THAT(
      std::string(ParseTraceLine(R"({"timestamp": 1, "output_length": 2})", 3).status().message()),
      HasSubstr("trace line 3: missing number 'input_length'"));
  EXPECT_THAT(
      std::string(ParseTraceLine(R"({"timestamp": 1, "input_length": -5, "output_length": 2})", 4)
                      .status()
                      .message()),
      HasSubstr("negative"));
  EXPECT_THAT(std::string(ParseTraceLine(R"({"timestamp": 1, "input_length": 5,
                                             "output_length": 2, "hash_ids": [1, "x"]})",
                                         5)
                              .status()
                              .message()),
              HasSubstr("hash_ids"));
}

class TraceFile : public ::testing::Test {
 protected:
  std::string Write(const std::string& text) {
    path_ = ::testing::TempDir() + "/sim_trace_test.jsonl";
    std::ofstream(path_) << text;
    return path_;
  }
  void TearDown() override { std::remove(path_.c_str()); }
  std::string path_;
};

TEST_F(TraceFile, ReadsSortedAndSkipsBlankLines) {
  const std::string path = Write(
      "{\"timestamp\": 50, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": []}\n\n"
      "{\"timestamp\": 20, \"input_length\": 11, \"output_length\": 2, \"hash_ids\": [4]}\n");
  auto t = ReadTrace(path);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->size(), 2u);
  EXPECT_EQ((*t)[0].input_length, 11);
  EXPECT_EQ((*t)[1].input_length, 10);
}

TEST_F(TraceFile, MalformedLinesFailOrAreSkippedByFlag) {
  const std::string path = Write(
      "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 1}\n"
      "garbage\n"
      "{\"timestamp\": 1, \"input_length\": 10, \"output_length\": 1}\n");
  auto strict = ReadTrace(path);
  EXPECT_THAT(std::string(strict.status().message()), HasSubstr("trace line 2"));
  int skipped = 0;
  auto lenient = ReadTrace(path, /*skip_malformed=*/true, &skipped);
  ASSERT_TRUE(lenient.ok());
  EXPECT_EQ(lenient->size(), 2u);
  EXPECT_EQ(skipped, 1);
}

TEST(Trace, MissingFileIsNotFound) {
  EXPECT_EQ(ReadTrace("/nonexistent/trace.jsonl").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace crescent::bench::sim
