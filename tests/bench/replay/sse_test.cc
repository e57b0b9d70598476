#include "bench/replay/sse.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace crescent::bench {
namespace {

using ::testing::ElementsAre;

TEST(SseParserTest, SplitsEventsAcrossArbitraryPieces) {
  const std::string stream =
      "data: {\"a\":1}\n\n: keep-alive\n\nevent: x\ndata: line1\ndata: line2\n\n"
      "data:nospace\r\n\r\ndata: [DONE]\r\r";
  // Every way of cutting the stream into two pieces gives the same events.
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    SseParser parser;
    std::vector<std::string> events;
    parser.Feed(stream.substr(0, cut), &events);
    parser.Feed(stream.substr(cut), &events);
    EXPECT_THAT(events, ElementsAre("{\"a\":1}", "line1\nline2", "nospace", "[DONE]"))
        << "cut at " << cut;
    EXPECT_EQ(parser.pending(), 0u);
  }
}

TEST(SseParserTest, ByteAtATimeAndIncompleteEvent) {
  SseParser parser;
  std::vector<std::string> events;
  for (char c : std::string("data: x\n\ndata: partial\n")) parser.Feed(std::string(1, c), &events);
  EXPECT_THAT(events, ElementsAre("x"));
  EXPECT_GT(parser.pending(), 0u);
  parser.Feed("\n", &events);
  EXPECT_THAT(events, ElementsAre("x", "partial"));
}

TEST(SseParserTest, EventsWithoutDataAreDropped) {
  SseParser parser;
  std::vector<std::string> events;
  parser.Feed("event: ping\n\nid: 3\n\ndata\n\n", &events);
  EXPECT_THAT(events, ElementsAre(""));  // A bare "data" field is an empty data line.
}

}  // namespace
}  // namespace crescent::bench
