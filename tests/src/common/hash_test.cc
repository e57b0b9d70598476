#include "src/common/hash.h"

#include <string>

#include "gtest/gtest.h"

namespace crescent {
namespace {

TEST(HashTest, KnownValueIsStableAcrossBuilds) {
  // XXH3-64 of the empty input with seed 0 is fixed by the xxHash specification.
  EXPECT_EQ(Hash64("", 0, 0), 0x2D06800538D394C2ULL);
}

TEST(HashTest, SeedAndContentMatter) {
  EXPECT_NE(Hash64("abc", 1), Hash64("abc", 2));
  EXPECT_NE(Hash64("abc"), Hash64("abd"));
  EXPECT_EQ(Hash64("abc"), Hash64(std::string("abc")));
}

TEST(HashTest, IncrementalEqualsOneShot) {
  std::string data(1000, 'x');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7);
  Hasher h(42);
  h.Update(data.data(), 300);
  h.Update(data.data() + 300, 700);
  EXPECT_EQ(h.Digest(), Hash64(data, 42));
}

}  // namespace
}  // namespace crescent
