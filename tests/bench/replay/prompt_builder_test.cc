#include "bench/replay/prompt_builder.h"

#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace crescent::bench {
namespace {

using ::testing::Each;
using ::testing::Ge;
using ::testing::Lt;

TraceRequest Request(std::vector<int64_t> ids, int64_t input_length, int64_t output_length = 4) {
  return {.timestamp_ms = 0,
          .input_length = input_length,
          .output_length = output_length,
          .hash_ids = std::move(ids)};
}

TEST(PromptBuilderTest, EqualIdsGiveEqualBlocksAndDistinctIdsDistinctBlocks) {
  absl::StatusOr<PromptBuilder> b = PromptBuilder::Create({.length_scale = 1.0 / 32}, 512);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->block_tokens(), 16);
  BuiltPrompt p1 = b->Build(Request({1, 2, 3}, 1536));
  BuiltPrompt p2 = b->Build(Request({1, 2, 4}, 1536));
  ASSERT_EQ(p1.tokens.size(), 48u);
  ASSERT_EQ(p2.tokens.size(), 48u);
  // Shared leading blocks are token-for-token equal; the third differs.
  EXPECT_TRUE(std::equal(p1.tokens.begin(), p1.tokens.begin() + 32, p2.tokens.begin()));
  EXPECT_FALSE(std::equal(p1.tokens.begin() + 32, p1.tokens.end(), p2.tokens.begin() + 32));
  // Many distinct ids: all blocks distinct, all tokens in range.
  std::set<std::vector<int32_t>> blocks;
  for (int64_t id = 0; id < 2000; ++id) {
    std::vector<int32_t> block = b->BlockTokens(id);
    EXPECT_THAT(block, Each(Ge(1000)));
    EXPECT_THAT(block, Each(Lt(30000)));
    blocks.insert(block);
  }
  EXPECT_EQ(blocks.size(), 2000u);
  // Deterministic across builders; the seed changes content.
  absl::StatusOr<PromptBuilder> same = PromptBuilder::Create({.length_scale = 1.0 / 32}, 512);
  absl::StatusOr<PromptBuilder> seeded =
      PromptBuilder::Create({.length_scale = 1.0 / 32, .seed = 7}, 512);
  EXPECT_EQ(same->BlockTokens(42), b->BlockTokens(42));
  EXPECT_NE(seeded->BlockTokens(42), b->BlockTokens(42));
}

TEST(PromptBuilderTest, ScalesLengthsAndKeepsPartialLastBlock) {
  absl::StatusOr<PromptBuilder> b =
      PromptBuilder::Create({.length_scale = 1.0 / 32, .output_scale = 0.5}, 512);
  ASSERT_TRUE(b.ok());
  // 40160 tokens over 79 blocks -> 1255 tokens: 78 full blocks of 16 and 7 of the last.
  std::vector<int64_t> ids;
  for (int i = 0; i < 79; ++i) ids.push_back(i);
  BuiltPrompt p = b->Build(Request(ids, 40160, 100));
  EXPECT_EQ(p.tokens.size(), 1255u);
  ASSERT_EQ(p.blocks.size(), 79u);
  EXPECT_EQ(p.blocks.back().tokens, 1255 - 78 * 16);
  EXPECT_EQ(p.max_tokens, 50);
}

TEST(PromptBuilderTest, ClampsToContextAndCapsOutput) {
  absl::StatusOr<PromptBuilder> b = PromptBuilder::Create(
      {.length_scale = 1.0 / 32, .max_output_tokens = 8, .max_context = 100}, 512);
  ASSERT_TRUE(b.ok());
  std::vector<int64_t> ids;
  for (int i = 0; i < 40; ++i) ids.push_back(i);
  BuiltPrompt p = b->Build(Request(ids, 40 * 512, 500));
  EXPECT_EQ(p.max_tokens, 8);
  EXPECT_EQ(p.tokens.size(), 92u);
  EXPECT_EQ(p.blocks.size(), 6u);  // 5 full blocks and 12 tokens of the sixth.
  EXPECT_EQ(p.blocks.back().tokens, 12);
}

TEST(PromptBuilderTest, TokensBeyondHashIdsAreUniquePerRequest) {
  absl::StatusOr<PromptBuilder> b = PromptBuilder::Create({.length_scale = 1.0 / 32}, 512);
  TraceRequest r1 = Request({1}, 1024);
  TraceRequest r2 = Request({1}, 1024);
  r2.timestamp_ms = 5;
  BuiltPrompt p1 = b->Build(r1), p2 = b->Build(r2);
  ASSERT_EQ(p1.tokens.size(), 32u);
  EXPECT_TRUE(std::equal(p1.tokens.begin(), p1.tokens.begin() + 16, p2.tokens.begin()));
  EXPECT_FALSE(std::equal(p1.tokens.begin() + 16, p1.tokens.end(), p2.tokens.begin() + 16));
}

TEST(PromptBuilderTest, RejectsBadOptions) {
  EXPECT_FALSE(PromptBuilder::Create({.length_scale = 0}, 512).ok());
  EXPECT_FALSE(PromptBuilder::Create({.token_lo = 5, .token_hi = 5}, 512).ok());
  EXPECT_FALSE(PromptBuilder::Create({.max_context = 1}, 512).ok());
  // A tiny scale still leaves one token per block.
  EXPECT_EQ(PromptBuilder::Create({.length_scale = 1e-6}, 512)->block_tokens(), 1);
}

TEST(PromptBuilderTest, TextModeMapsEqualTokensToEqualWords) {
  EXPECT_EQ(PromptBuilder::TokensToText({1, 2, 3}), PromptBuilder::TokensToText({1, 2, 3}));
  EXPECT_NE(PromptBuilder::TokensToText({1, 2, 3}), PromptBuilder::TokensToText({1, 2, 4}));
  const std::string text = PromptBuilder::TokensToText({7, 4095, 9});
  EXPECT_EQ(std::count(text.begin(), text.end(), ' '), 2);
}

TEST(PromptBuilderTest, IdealTokenHitRatio) {
  absl::StatusOr<PromptBuilder> b = PromptBuilder::Create({.length_scale = 1.0 / 32}, 512);
  std::vector<BuiltPrompt> prompts = {
      b->Build(Request({1, 2}, 1024)),     // 32 tokens, 0 hits.
      b->Build(Request({1, 2, 3}, 1536)),  // 48 tokens, 32 hits.
      b->Build(Request({9, 2}, 1024)),     // 32 tokens, 0 (2 is not leading).
      b->Build(Request({1, 2, 3}, 1200)),  // 38 tokens: 16 + 16 + 6 of block 3, all seen.
  };
  EXPECT_DOUBLE_EQ(IdealTokenHitRatio(prompts), (32.0 + 38.0) / (32 + 48 + 32 + 38));
  EXPECT_DOUBLE_EQ(IdealTokenHitRatio({}), 0.0);
}

}  // namespace
}  // namespace crescent::bench
