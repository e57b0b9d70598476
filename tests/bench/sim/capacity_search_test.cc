#include "bench/sim/capacity_search.h"

#include "gtest/gtest.h"

namespace crescent::bench::sim {
namespace {

// Attainment 1 up to a knee, 0 beyond it.
auto Knee(double knee) {
  return [knee](double m) -> absl::StatusOr<double> { return m <= knee ? 1.0 : 0.0; };
}

TEST(CapacitySearch, FindsTheKneeAboveOne) {
  auto r = FindCapacity(Knee(5.0), 0.9, 20);
  ASSERT_TRUE(r.ok());
  EXPECT_NEAR(r->rate_multiplier, 5.0, 1e-3);
  EXPECT_LE(r->rate_multiplier, 5.0);
  EXPECT_EQ(r->attainment, 1.0);
}

TEST(CapacitySearch, FindsTheKneeBelowOne) {
  auto r = FindCapacity(Knee(0.3), 0.9, 20);
  ASSERT_TRUE(r.ok());
  EXPECT_NEAR(r->rate_multiplier, 0.3, 1e-3);
}

TEST(CapacitySearch, ReportsZeroWhenNothingPasses) {
  auto r = FindCapacity(Knee(0.001), 0.9, 5);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->rate_multiplier, 0.0);
}

TEST(CapacitySearch, PropagatesErrors) {
  auto r = FindCapacity([](double) -> absl::StatusOr<double> { return absl::InternalError("x"); },
                        0.9, 5);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace crescent::bench::sim
