#include "conductor/policy/hot_prefix.h"

#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/conductor/policy/policy_scenario.h"

namespace crescent::conductor::policy::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

HotPrefixOptions Options() {
  HotPrefixOptions o;
  o.window_s = 10.0;
  o.min_hits = 3;
  o.target_replicas = 2;
  return o;
}

TEST(HotPrefix, ABlockHitOftenOnOneNodeIsCopiedToTheLeastLoadedOther) {
  PolicyScenario s;
  s.GivenPrefillNode("p0")
      .Holding({7})
      .WithQueueSeconds(5)
      .GivenPrefillNode("p1")
      .WithQueueSeconds(3)
      .GivenDecodeNode("d0")
      .GivenPrefillNode("p2")
      .WithQueueSeconds(1);
  HotPrefixTracker tracker(Options());
  for (int i = 0; i < 3; ++i) tracker.RecordHit(7, 0, s.now_s() + i);
  tracker.RecordHit(8, 0, s.now_s() + 2);  // one hit: not hot
  const auto advice = tracker.Advise(s.nodes(), s.now_s() + 2);
  ASSERT_EQ(advice.size(), 1u);
  EXPECT_EQ(advice[0].block, 7u);
  EXPECT_EQ(advice[0].source_node, 0);
  EXPECT_THAT(advice[0].target_nodes, ElementsAre(3));  // p2: least loaded
}

TEST(HotPrefix, HitsOutsideTheWindowAreForgotten) {
  PolicyScenario s;
  s.GivenPrefillNode("p0").Holding({7}).GivenPrefillNode("p1");
  HotPrefixTracker tracker(Options());
  const double t0 = s.now_s();
  for (int i = 0; i < 3; ++i) tracker.RecordHit(7, 0, t0 + i);
  EXPECT_EQ(tracker.HitsInWindow(7, t0 + 2), 3);
  EXPECT_EQ(tracker.HitsInWindow(7, t0 + 11.5), 1);
  EXPECT_THAT(tracker.Advise(s.nodes(), t0 + 11.5), IsEmpty());
}

TEST(HotPrefix, NoAdviceOnceEnoughNodesHoldIt) {
  PolicyScenario s;
  s.GivenPrefillNode("p0").Holding({7}).GivenPrefillNode("p1").Holding({7}).GivenPrefillNode("p2");
  HotPrefixTracker tracker(Options());
  for (int i = 0; i < 5; ++i) tracker.RecordHit(7, i % 2, s.now_s());
  EXPECT_THAT(tracker.Advise(s.nodes(), s.now_s()), IsEmpty());
}

}  // namespace
}  // namespace crescent::conductor::policy::testing
