#include "bench/common/latency.h"

#include <vector>

#include "gtest/gtest.h"

namespace crescent::bench {
namespace {

TEST(LatencyTest, PercentileInterpolatesLikeNumpy) {
  // numpy.percentile([1, 2, 3, 4], [0, 50, 90, 99, 100]) = [1, 2.5, 3.7, 3.97, 4].
  const std::vector<double> v = {4, 1, 3, 2};
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 2.5);
  EXPECT_NEAR(Percentile(v, 90), 3.7, 1e-12);
  EXPECT_NEAR(Percentile(v, 99), 3.97, 1e-12);
  EXPECT_DOUBLE_EQ(Percentile(v, 100), 4);
  EXPECT_DOUBLE_EQ(Percentile(v, 250), 4);  // clamped
  EXPECT_DOUBLE_EQ(Percentile({0, 10}, 90), 9);
  EXPECT_DOUBLE_EQ(Percentile({}, 50), 0);
  EXPECT_DOUBLE_EQ(Percentile({7}, 99), 7);
}

TEST(LatencyTest, WorstTenthMeanTakesTheCeilingOfTenPercent) {
  std::vector<double> gaps;
  for (int i = 1; i <= 20; ++i) gaps.push_back(i);
  EXPECT_DOUBLE_EQ(WorstTenthMean(gaps), 19.5);  // 20 and 19
  gaps.resize(11);                               // 1..11: ceil(1.1) = 2 gaps
  EXPECT_DOUBLE_EQ(WorstTenthMean(gaps), 10.5);
  EXPECT_DOUBLE_EQ(WorstTenthMean({3, 1, 2}), 3);  // at least one gap
  EXPECT_DOUBLE_EQ(WorstTenthMean({}), 0);
}

}  // namespace
}  // namespace crescent::bench
