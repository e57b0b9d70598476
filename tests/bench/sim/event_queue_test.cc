#include "bench/sim/event_queue.h"

#include <vector>

#include "gtest/gtest.h"

namespace crescent::bench::sim {
namespace {

TEST(EventQueue, PopsInTimeOrder) {
  EventQueue q;
  q.Push({3.0, 0, 3, 0});
  q.Push({1.0, 0, 1, 0});
  q.Push({2.0, 0, 2, 0});
  std::vector<int> order;
  while (!q.empty()) order.push_back(q.Pop().a);
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

TEST(EventQueue, EqualTimesPopInInsertionOrder) {
  EventQueue q;
  for (int i = 0; i < 100; ++i) q.Push({i % 2 == 0 ? 5.0 : 4.0, 0, i, 0});
  std::vector<int> order;
  while (!q.empty()) order.push_back(q.Pop().a);
  ASSERT_EQ(order.size(), 100u);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(order[i], 2 * i + 1);  // the 4.0 s events first, in the order pushed
    EXPECT_EQ(order[50 + i], 2 * i);
  }
  EXPECT_EQ(q.pushed(), 100u);
}

TEST(EventQueue, InterleavedPushesKeepOrder) {
  EventQueue q;
  q.Push({1.0, 0, 1, 0});
  q.Push({10.0, 0, 10, 0});
  EXPECT_EQ(q.Pop().a, 1);
  q.Push({10.0, 0, 11, 0});  // same time as a queued event, pushed later
  q.Push({5.0, 0, 5, 0});
  EXPECT_EQ(q.Pop().a, 5);
  EXPECT_EQ(q.Pop().a, 10);
  EXPECT_EQ(q.Pop().a, 11);
  EXPECT_TRUE(q.empty());
}

}  // namespace
}  // namespace crescent::bench::sim
