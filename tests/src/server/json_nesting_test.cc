#include "src/server/json_nesting.h"

#include <string>

#include "gtest/gtest.h"

namespace crescent::server {
namespace {

TEST(JsonNestingDepthTest, CountsBracketsOutsideStrings) {
  EXPECT_EQ(JsonNestingDepth(""), 0);
  EXPECT_EQ(JsonNestingDepth("17"), 0);
  EXPECT_EQ(JsonNestingDepth("[]"), 1);
  EXPECT_EQ(JsonNestingDepth("[[], {}]"), 2);
  EXPECT_EQ(JsonNestingDepth(R"({"a": [1, {"b": []}], "c": {}})"), 4);
  // Brackets inside strings, escaped quotes and escaped backslashes.
  EXPECT_EQ(JsonNestingDepth(R"(["[[[{{"])"), 1);
  EXPECT_EQ(JsonNestingDepth(R"(["\"[[", "x"])"), 1);
  EXPECT_EQ(JsonNestingDepth(R"(["\\", [[]]])"), 3);
  // Not JSON: a number all the same, never below 0.
  EXPECT_EQ(JsonNestingDepth("]]]}[["), 2);
  EXPECT_EQ(JsonNestingDepth("[\"unterminated [[["), 1);
}

TEST(JsonNestingDepthTest, StopsPastTheLimit) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_EQ(JsonNestingDepth(deep), kMaxJsonNesting + 1);
  EXPECT_EQ(JsonNestingDepth(deep, 10), 11);
  EXPECT_EQ(JsonNestingDepth("[[[]]]", 3), 3);
  EXPECT_EQ(JsonNestingDepth("[[[[]]]]", 3), 4);
}

}  // namespace
}  // namespace crescent::server
