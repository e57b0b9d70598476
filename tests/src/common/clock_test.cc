#include "src/common/clock.h"

#include "gtest/gtest.h"

namespace crescent {
namespace {

TEST(ClockTest, ManualClockMovesOnlyWhenTold) {
  ManualClock clock(100);
  EXPECT_EQ(clock.NowNanos(), 100);
  clock.AdvanceNanos(50);
  EXPECT_EQ(clock.NowNanos(), 150);
  clock.AdvanceSeconds(1.5);
  EXPECT_EQ(clock.NowNanos(), 1500000150);
  EXPECT_DOUBLE_EQ(clock.NowSeconds(), 1.50000015);
}

TEST(ClockTest, RealClockIsMonotonic) {
  const Clock* clock = RealClock::Get();
  int64_t a = clock->NowNanos();
  int64_t b = clock->NowNanos();
  EXPECT_LE(a, b);
}

}  // namespace
}  // namespace crescent
