#include "bench/common/cpu_time.h"

#include <gtest/gtest.h>

namespace crescent::bench {
namespace {

TEST(ParseProcStatTest, SumsTheAggregateLineThroughSteal) {
  // Guest columns are part of user time already and must not be counted twice.
  auto t = ParseProcStat(
      "cpu  100 2 30 400 5 0 6 70 900 900\n"
      "cpu0 50 1 15 200 2 0 3 35 450 450\n"
      "intr 12345\n");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->total, 100u + 2 + 30 + 400 + 5 + 0 + 6 + 70);
  EXPECT_EQ(t->idle, 405u);
  EXPECT_EQ(t->steal, 70u);
}

TEST(ParseProcStatTest, NamesWhatIsWrong) {
  auto missing = ParseProcStat("cpu0 1 2 3 4 5 6 7 8\n");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("no aggregate 'cpu' line"), std::string::npos);

  auto short_line = ParseProcStat("cpu 1 2 3 4\n");
  ASSERT_FALSE(short_line.ok());
  EXPECT_NE(short_line.status().message().find("has 4 columns"), std::string::npos);

  auto garbage = ParseProcStat("cpu 1 2 3 x 5 6 7 8\n");
  ASSERT_FALSE(garbage.ok());
  EXPECT_NE(garbage.status().message().find("column 4 is not a count: 'x'"), std::string::npos);
}

TEST(StealFractionTest, IsTheStolenShareOfTheTimeBetweenSamples) {
  const CpuTimes before{1000, 100, 10};
  EXPECT_DOUBLE_EQ(StealFraction(before, CpuTimes{1200, 150, 60}), 0.25);
  EXPECT_DOUBLE_EQ(StealFraction(before, before), 0.0);
}

TEST(SampleCpuTimesTest, ReadsThisMachine) {
  auto a = SampleCpuTimes();
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_GT(a->total, 0u);
  EXPECT_LE(a->steal, a->total);
}

}  // namespace
}  // namespace crescent::bench
