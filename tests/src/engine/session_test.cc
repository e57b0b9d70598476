#include "src/engine/session.h"

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "src/engine/cpu_backend.h"
#include "src/engine/loaded_model.h"
#include "tests/testing/tiny_model.h"

namespace crescent::engine {
namespace {

class SessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = testing::WriteTinyModel({});
    LoadOptions options;
    model_ = *LoadModel(path_, options);
    backend_ = *CpuBackend::Create(model_->config, model_->weights, 2);
    KvCacheConfig kc{model_->config.n_layers, model_->config.n_kv_heads, model_->config.head_dim,
                     4, 64};
    cache_ = *KvCache::Create(kc);
  }
  void TearDown() override { std::remove(path_.c_str()); }

  std::vector<float> FreshLogits(const std::vector<int32_t>& tokens) {
    Session s(model_.get(), backend_.get(), cache_.get());
    std::vector<float> logits;
    EXPECT_TRUE(s.Prefill(tokens, 512, &logits).ok());
    return logits;
  }

  std::string path_;
  std::unique_ptr<LoadedModel> model_;
  std::unique_ptr<CpuBackend> backend_;
  std::unique_ptr<KvCache> cache_;
};

TEST_F(SessionTest, SecondTurnReusesCommonPrefix) {
  std::vector<int32_t> turn1 = {10, 20, 30, 40, 50, 60, 70};
  std::vector<int32_t> turn2 = turn1;
  for (int32_t t : {80, 90, 100, 110}) turn2.push_back(t);
  auto expected = FreshLogits(turn2);

  Session s(model_.get(), backend_.get(), cache_.get());
  std::vector<float> logits;
  ASSERT_TRUE(s.Prefill(turn1, 3, &logits).ok());
  EXPECT_EQ(s.reused_tokens(), 0);
  ASSERT_TRUE(s.Prefill(turn2, 3, &logits).ok());
  EXPECT_EQ(s.reused_tokens(), 7);
  ASSERT_EQ(logits.size(), expected.size());
  for (size_t i = 0; i < logits.size(); ++i) ASSERT_NEAR(logits[i], expected[i], 1e-3f) << i;

  // A prompt that diverges inside the cached context recomputes from the divergence.
  std::vector<int32_t> edited = {10, 20, 30, 99, 98};
  auto expected_edited = FreshLogits(edited);
  ASSERT_TRUE(s.Prefill(edited, 512, &logits).ok());
  EXPECT_EQ(s.reused_tokens(), 3);
  for (size_t i = 0; i < logits.size(); ++i) ASSERT_NEAR(logits[i], expected_edited[i], 1e-3f);
}

TEST_F(SessionTest, BlocksReturnToTheCache) {
  const int64_t free_before = cache_->num_free_blocks();
  {
    Session s(model_.get(), backend_.get(), cache_.get());
    std::vector<float> logits;
    ASSERT_TRUE(s.Prefill(std::vector<int32_t>(30, 5), 512, &logits).ok());
    EXPECT_EQ(cache_->num_free_blocks(), free_before - 8);
    ASSERT_TRUE(s.Prefill(std::vector<int32_t>(6, 5), 512, &logits).ok());
    EXPECT_EQ(cache_->num_free_blocks(), free_before - 2);
  }
  EXPECT_EQ(cache_->num_free_blocks(), free_before);
}

TEST_F(SessionTest, FullCacheIsResourceExhausted) {
  Session s(model_.get(), backend_.get(), cache_.get());
  std::vector<float> logits;
  absl::Status st = s.Prefill(std::vector<int32_t>(64 * 4 + 1, 5), 512, &logits);
  // 257 tokens exceed the tiny model's 256-token context before the cache runs out.
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  KvCacheConfig kc = cache_->config();
  kc.num_blocks = 2;
  auto small = *KvCache::Create(kc);
  Session t(model_.get(), backend_.get(), small.get());
  st = t.Prefill(std::vector<int32_t>(9, 5), 512, &logits);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_EQ(small->num_free_blocks(), 2);
}

TEST_F(SessionTest, GenerateStreamsExactlyTheFinalText) {
  Session s(model_.get(), backend_.get(), cache_.get());
  GenerateOptions o;
  o.max_tokens = 24;
  o.sampling.temperature = 0;
  std::string streamed;
  auto r = Generate(&s, std::vector<int32_t>{104, 101, 108}, o, [&](std::string_view piece) {
    streamed += piece;
    return true;
  });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(streamed, r->text);
  if (r->finish_reason == "length") {
    EXPECT_EQ(r->tokens.size(), 24u);
  }
  EXPECT_EQ(r->prompt_tokens, 3);
}

TEST_F(SessionTest, StopStringCutsTheTextAndEndsGeneration) {
  GenerateOptions o;
  o.max_tokens = 40;
  o.sampling.temperature = 0;
  std::vector<int32_t> prompt = {104, 101, 108, 108};
  std::string full;
  {
    Session s(model_.get(), backend_.get(), cache_.get());
    auto r = Generate(&s, prompt, o);
    ASSERT_TRUE(r.ok());
    full = r->text;
  }
  if (full.size() < 6) GTEST_SKIP() << "tiny model produced too little text for a stop string";
  // Stop at a substring that starts in the middle of the greedy text.
  size_t at = full.size() / 2;
  std::string stop = full.substr(at, 3);
  size_t first = full.find(stop);
  o.stop = {stop};
  Session s(model_.get(), backend_.get(), cache_.get());
  std::string streamed;
  auto r = Generate(&s, prompt, o, [&](std::string_view piece) {
    streamed += piece;
    return true;
  });
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->finish_reason, "stop");
  EXPECT_EQ(r->text, full.substr(0, first));
  EXPECT_EQ(streamed, r->text) << "no byte of the stop string may have been streamed";
}

TEST_F(SessionTest, CallbackCanStopGeneration) {
  Session s(model_.get(), backend_.get(), cache_.get());
  GenerateOptions o;
  o.max_tokens = 40;
  o.sampling.temperature = 0;
  int calls = 0;
  auto r = Generate(&s, std::vector<int32_t>{104, 101}, o, [&](std::string_view) {
    return ++calls < 2;
  });
  ASSERT_TRUE(r.ok());
  if (calls >= 2) {
    EXPECT_EQ(r->finish_reason, "stop");
  }
  EXPECT_LT(r->tokens.size(), 40u);
}

}  // namespace
}  // namespace crescent::engine
