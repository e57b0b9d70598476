#include "src/serve/engine_service.h"

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "src/common/clock.h"
#include "src/engine/cpu_backend.h"
#include "src/engine/engine.h"
#include "src/engine/loaded_model.h"
#include "src/server/metrics.h"
#include "src/server/openai_protocol.h"
#include "tests/testing/tiny_model.h"

namespace crescent::serve {
namespace {

using server::CompletionChunk;
using server::CompletionRequest;
using server::RequestKind;

// --- StopMatcher ---

TEST(StopMatcherTest, NoStopsPassesEverythingThrough) {
  StopMatcher m({});
  EXPECT_EQ(m.Push("hello"), "hello");
  EXPECT_EQ(m.Push(" world"), " world");
  EXPECT_EQ(m.Flush(), "");
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.emitted(), 11u);
}

TEST(StopMatcherTest, TextEndsBeforeTheFirstMatch) {
  StopMatcher m({"STOP"});
  EXPECT_EQ(m.Push("abcSTOPdef"), "abc");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.Push("more"), "");
  EXPECT_EQ(m.Flush(), "");
  EXPECT_EQ(m.emitted(), 3u);
}

TEST(StopMatcherTest, HoldsBackAPossibleStartAcrossPieces) {
  StopMatcher m({"END"});
  EXPECT_EQ(m.Push("abcE"), "abc");  // "E" could begin "END".
  EXPECT_EQ(m.Push("N"), "");        // "EN" still could.
  EXPECT_EQ(m.Push("D tail"), "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.emitted(), 3u);
}

TEST(StopMatcherTest, ReleasesHeldTextThatTurnsOutNotToMatch) {
  StopMatcher m({"END"});
  EXPECT_EQ(m.Push("xE"), "x");
  EXPECT_EQ(m.Push("Nx"), "ENx");
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.Push("EN"), "");
  EXPECT_EQ(m.Flush(), "EN");  // End of the choice: held text is sent.
  EXPECT_EQ(m.emitted(), 6u);
}

TEST(StopMatcherTest, UncheckedTextIsPassedOnAndNeverMatched) {
  StopMatcher m({"END"});
  EXPECT_EQ(m.Push("xE"), "x");             // "E" held back
  EXPECT_EQ(m.PushUnchecked("ND"), "END");  // released, and no match across it
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.Push("aEND"), "a");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.PushUnchecked("more"), "");
  EXPECT_EQ(m.emitted(), 5u);
}

TEST(StopMatcherTest, EarliestOfSeveralStopsWins) {
  StopMatcher m({"world", "lo w", "o"});
  EXPECT_EQ(m.Push("hello world"), "hel");
  EXPECT_TRUE(m.stopped());
}

TEST(StopMatcherTest, OverlappingPrefixHoldsTheLongestCandidate) {
  StopMatcher m({"aab"});
  EXPECT_EQ(m.Push("xaa"), "x");
  EXPECT_EQ(m.Push("a"), "a");  // "aaa": only the last "aa" can still begin "aab".
  EXPECT_EQ(m.Push("b"), "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.emitted(), 2u);
}

TEST(ToEngineSamplingTest, ConvertsEveryField) {
  CompletionRequest r;
  r.sampling.temperature = 0.5;
  r.sampling.top_p = 0.9;
  r.sampling.top_k = -1;
  r.sampling.min_p = 0.1;
  r.sampling.seed = 42;
  r.sampling.presence_penalty = 0.5;
  r.sampling.frequency_penalty = -0.5;
  r.sampling.logit_bias = {{5, -100.0}, {7, 3.0}};
  r.logprobs = true;
  r.top_logprobs = 3;
  r.json_object = true;
  r.json_schema = R"({"type":"object"})";
  engine::SamplingParams p = ToEngineSampling(r);
  EXPECT_FLOAT_EQ(p.temperature, 0.5f);
  EXPECT_FLOAT_EQ(p.top_p, 0.9f);
  EXPECT_EQ(p.top_k, 0);
  EXPECT_FLOAT_EQ(p.min_p, 0.1f);
  EXPECT_TRUE(p.has_seed);
  EXPECT_EQ(p.seed, 42u);
  EXPECT_FLOAT_EQ(p.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(p.frequency_penalty, -0.5f);
  ASSERT_EQ(p.logit_bias.size(), 2u);
  EXPECT_EQ(p.logit_bias[1].first, 7);
  EXPECT_FLOAT_EQ(p.logit_bias[1].second, 3.0f);
  EXPECT_TRUE(p.logprobs);
  EXPECT_EQ(p.top_logprobs, 3);
  EXPECT_TRUE(p.json_object);
  EXPECT_EQ(p.json_schema, r.json_schema);
  r.sampling.top_k = 40;
  r.sampling.seed.reset();
  r.logprobs = false;
  p = ToEngineSampling(r);
  EXPECT_EQ(p.top_k, 40);
  EXPECT_FALSE(p.has_seed);
  EXPECT_EQ(p.top_logprobs, 0);
}

// --- EngineService over a real Engine on the tiny model ---

// Everything one request produced.
struct Result {
  std::vector<std::string> text;
  std::vector<std::string> finish;
  std::vector<std::vector<server::TokenLogprob>> logprobs;
  std::vector<int> chunks_after_finish;
  absl::Status status;
  server::Usage usage;
  int done_calls = 0;
};

class Collector {
 public:
  explicit Collector(int n) {
    result_.text.resize(n);
    result_.finish.resize(n);
    result_.logprobs.resize(n);
    result_.chunks_after_finish.assign(n, 0);
  }
  server::ChunkCallback OnChunk() {
    return [this](CompletionChunk chunk) {
      absl::MutexLock lock(&mu_);
      int i = chunk.choice_index;
      if (!result_.finish[i].empty()) ++result_.chunks_after_finish[i];
      result_.text[i] += chunk.text;
      for (auto& lp : chunk.logprobs) result_.logprobs[i].push_back(lp);
      if (chunk.finish_reason) result_.finish[i] = *chunk.finish_reason;
    };
  }
  server::DoneCallback OnDone() {
    return [this](absl::Status status, server::Usage usage) {
      absl::MutexLock lock(&mu_);
      result_.status = status;
      result_.usage = usage;
      ++result_.done_calls;
      done_.Notify();
    };
  }
  Result Wait() {
    EXPECT_TRUE(done_.WaitForNotificationWithTimeout(absl::Seconds(60)));
    absl::SleepFor(absl::Milliseconds(20));  // A second on_done would show up here.
    absl::MutexLock lock(&mu_);
    return result_;
  }

 private:
  absl::Mutex mu_;
  Result result_;
  absl::Notification done_;
};

class EngineServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { Init({}); }

  void Init(engine::EngineOptions options) {
    service_.reset();
    engine_.reset();
    if (path_.empty()) {
      path_ = testing::WriteTinyModel({});
      model_ = *engine::LoadModel(path_, {});
      backend_ = *engine::CpuBackend::Create(model_->config, model_->weights, 2);
    }
    if (options.num_blocks == 0) options.num_blocks = 128;
    options.block_tokens = 4;
    auto engine = engine::Engine::Create(model_.get(), backend_.get(), options, RealClock::Get());
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
    registry_ = std::make_unique<server::MetricsRegistry>();
    metrics_ = std::make_unique<server::ServerMetrics>(registry_.get());
    EngineServiceOptions so;
    so.served_model_name = "tiny";
    so.metrics_interval_seconds = 0;
    auto service = EngineService::Create(engine_.get(), metrics_.get(), so);
    ASSERT_TRUE(service.ok()) << service.status();
    service_ = std::move(*service);
  }

  void TearDown() override {
    service_.reset();
    engine_.reset();
    std::remove(path_.c_str());
  }

  // A completion over token ids whose output is drawn from {'a', 'b'} alone (logit bias), so
  // that the text is ASCII and never ends early.
  CompletionRequest AbRequest(int max_tokens) {
    CompletionRequest r;
    r.kind = RequestKind::kCompletion;
    r.request_id = "cmpl-test";
    r.prompts = {{"", std::vector<int32_t>{'h', 'e', 'l', 'l', 'o', ' '}}};
    r.max_tokens = max_tokens;
    r.sampling.logit_bias = {{'a', 100.0}, {'b', 100.0}};
    r.sampling.seed = 7;
    return r;
  }

  // The text `r` gives without stop strings (the stop tests' baseline).
  std::string FreeText(CompletionRequest r) {
    r.stop.clear();
    Result res = Run(std::move(r));
    EXPECT_TRUE(res.status.ok()) << res.status;
    return res.text[0];
  }

  Result Run(CompletionRequest r) {
    EXPECT_TRUE(service_->Validate(r).ok()) << service_->Validate(r);
    Collector c(r.num_choices());
    auto handle = service_->Start(std::move(r), c.OnChunk(), c.OnDone());
    return c.Wait();
  }

  std::string path_;
  std::unique_ptr<engine::LoadedModel> model_;
  std::unique_ptr<engine::CpuBackend> backend_;
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<server::MetricsRegistry> registry_;
  std::unique_ptr<server::ServerMetrics> metrics_;
  std::unique_ptr<EngineService> service_;
};

TEST_F(EngineServiceTest, ModelsListsTheServedName) {
  auto models = service_->Models();
  ASSERT_EQ(models.size(), 1u);
  EXPECT_EQ(models[0].id, "tiny");
  EXPECT_EQ(models[0].max_model_len, model_->config.context_length);
  EXPECT_TRUE(service_->Ready());
}

TEST_F(EngineServiceTest, ValidateRejectsBadRequestsBeforeAnyWork) {
  CompletionRequest r = AbRequest(8);
  EXPECT_TRUE(service_->Validate(r).ok());
  r.model = "tiny";
  EXPECT_TRUE(service_->Validate(r).ok());
  r.model = "gpt-4";
  EXPECT_EQ(service_->Validate(r).code(), absl::StatusCode::kNotFound);

  r = AbRequest(model_->config.context_length);  // prompt + max_tokens > context
  absl::Status s = service_->Validate(r);
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange) << s;
  EXPECT_NE(s.message().find(std::to_string(model_->config.context_length)), std::string::npos);

  r = AbRequest(8);
  r.prompts[0].tokens = std::vector<int32_t>(model_->config.context_length, 'a');
  r.max_tokens.reset();  // Unset: the prompt alone fills the context.
  EXPECT_EQ(service_->Validate(r).code(), absl::StatusCode::kOutOfRange);

  r = AbRequest(8);
  r.prompts[0].tokens = std::vector<int32_t>{1, 2, 1 << 20};
  s = service_->Validate(r);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(server::ParamOf(s), "prompt");

  r = AbRequest(8);
  r.prompts[0] = {"", std::nullopt};
  EXPECT_EQ(service_->Validate(r).code(), absl::StatusCode::kInvalidArgument);

  r = AbRequest(8);
  r.sampling.logit_bias = {{1 << 20, 1.0}};
  EXPECT_EQ(service_->Validate(r).code(), absl::StatusCode::kInvalidArgument);

  // A schema outside the supported subset: 400 naming the schema and the keyword.
  r = AbRequest(8);
  r.json_object = true;
  r.json_schema = R"({"type":"object","properties":{"a":{"type":"string","pattern":"x"}}})";
  s = service_->Validate(r);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(server::ParamOf(s), "response_format.json_schema.schema");
  EXPECT_NE(s.message().find("pattern"), std::string::npos) << s;

  CompletionRequest chat;
  chat.kind = RequestKind::kChat;
  chat.messages = {{"wizard", "hi", std::nullopt, std::nullopt}};
  s = service_->Validate(chat);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(server::ParamOf(s), "messages");

  // Start reports the same errors through on_done, without chunks.
  Collector c(1);
  r = AbRequest(8);
  r.model = "nope";
  auto handle = service_->Start(r, c.OnChunk(), c.OnDone());
  Result res = c.Wait();
  EXPECT_EQ(res.status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(res.done_calls, 1);
  EXPECT_EQ(res.text[0], "");
}

TEST_F(EngineServiceTest, MaxTokensEndsWithLengthAndCountsUsage) {
  CompletionRequest r = AbRequest(12);
  r.logprobs = true;
  r.top_logprobs = 2;
  Result res = Run(r);
  ASSERT_TRUE(res.status.ok()) << res.status;
  EXPECT_EQ(res.done_calls, 1);
  EXPECT_EQ(res.finish[0], "length");
  EXPECT_EQ(res.chunks_after_finish[0], 0);
  EXPECT_EQ(res.text[0].size(), 12u);
  EXPECT_EQ(res.text[0].find_first_not_of("ab"), std::string::npos) << res.text[0];
  EXPECT_EQ(res.usage.prompt_tokens, 6);
  EXPECT_EQ(res.usage.completion_tokens, 12);
  ASSERT_TRUE(res.usage.queue_seconds.has_value());
  ASSERT_EQ(res.logprobs[0].size(), 12u);
  std::string joined;
  for (const auto& lp : res.logprobs[0]) {
    joined += lp.token;
    EXPECT_LE(lp.logprob, 0.0);
    ASSERT_EQ(lp.top_logprobs.size(), 2u);
    EXPECT_GE(lp.top_logprobs[0].logprob, lp.top_logprobs[1].logprob);
  }
  EXPECT_EQ(joined, res.text[0]);
}

TEST_F(EngineServiceTest, SameSeedSameTextAndChoiceIUsesSeedPlusI) {
  CompletionRequest r = AbRequest(16);
  Result a = Run(r);
  Result b = Run(r);
  ASSERT_TRUE(a.status.ok());
  EXPECT_EQ(a.text[0], b.text[0]);

  r.n = 2;
  Result two = Run(r);
  ASSERT_TRUE(two.status.ok()) << two.status;
  EXPECT_EQ(two.done_calls, 1);
  EXPECT_EQ(two.text[0], a.text[0]);
  EXPECT_EQ(two.usage.completion_tokens, 32);
  EXPECT_EQ(two.finish[1], "length");

  CompletionRequest r8 = AbRequest(16);
  r8.sampling.seed = 8;
  Result c = Run(r8);
  EXPECT_EQ(two.text[1], c.text[0]);
}

// A batch of prompts: choice j of prompt p is choice p * n + j, and gives what prompt p gives
// alone (same seeds); usage adds up the prompts.
TEST_F(EngineServiceTest, BatchedPromptsEachGiveWhatTheyGiveAlone) {
  CompletionRequest r = AbRequest(10);
  r.n = 2;
  CompletionRequest second = r;
  second.prompts = {{"", std::vector<int32_t>{'x', 'y', 'z'}}};
  Result alone0 = Run(r);
  Result alone1 = Run(second);
  ASSERT_TRUE(alone0.status.ok() && alone1.status.ok());

  r.prompts.push_back(second.prompts[0]);
  Result batch = Run(r);
  ASSERT_TRUE(batch.status.ok()) << batch.status;
  EXPECT_EQ(batch.done_calls, 1);
  ASSERT_EQ(batch.text.size(), 4u);
  EXPECT_EQ(batch.text[0], alone0.text[0]);
  EXPECT_EQ(batch.text[1], alone0.text[1]);
  EXPECT_EQ(batch.text[2], alone1.text[0]);
  EXPECT_EQ(batch.text[3], alone1.text[1]);
  for (const std::string& f : batch.finish) EXPECT_EQ(f, "length");
  EXPECT_EQ(batch.usage.prompt_tokens, 6 + 3);
  EXPECT_EQ(batch.usage.completion_tokens, 40);

  // A bad prompt anywhere in the batch fails the whole request, naming it, before any work.
  r.prompts[1].tokens = std::vector<int32_t>{1, 1 << 20};
  absl::Status s = service_->Validate(r);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(server::ParamOf(s), "prompt[1]");
  Collector c(r.num_choices());
  auto handle = service_->Start(r, c.OnChunk(), c.OnDone());
  Result failed = c.Wait();
  EXPECT_EQ(failed.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(failed.done_calls, 1);
}

TEST_F(EngineServiceTest, StopStringEndsTextBeforeTheMatch) {
  CompletionRequest r = AbRequest(32);
  const std::string full = FreeText(r);
  ASSERT_EQ(full.size(), 32u);
  const std::string stop = full.substr(10, 3);
  const size_t at = full.find(stop);  // <= 10

  r.stop = {stop, "zzz"};
  r.logprobs = true;
  Result stopped = Run(r);
  ASSERT_TRUE(stopped.status.ok());
  EXPECT_EQ(stopped.finish[0], "stop");
  EXPECT_EQ(stopped.text[0], full.substr(0, at));
  // Generation stopped at the token completing the stop string.
  EXPECT_EQ(stopped.usage.completion_tokens, static_cast<int>(at + 3));
  // Logprobs cover the text sent (and not the stop string).
  EXPECT_EQ(stopped.logprobs[0].size(), at);
}

// vLLM's min_tokens holds stop strings back too: the first min_tokens - 1 tokens' text is not
// searched.
TEST_F(EngineServiceTest, MinTokensHoldsStopStringsBack) {
  CompletionRequest r = AbRequest(32);
  const std::string full = FreeText(r);
  ASSERT_EQ(full.size(), 32u);
  const std::string stop = full.substr(10, 3);
  const size_t first = full.find(stop);  // <= 10
  r.stop = {stop};
  r.min_tokens = static_cast<int>(first) + 5;  // past the first match's last token
  Result held = Run(r);
  ASSERT_TRUE(held.status.ok()) << held.status;
  // One character a token: text from token min_tokens on is searched.
  const size_t next = full.find(stop, static_cast<size_t>(r.min_tokens) - 1);
  if (next == std::string::npos) {
    EXPECT_EQ(held.finish[0], "length");
    EXPECT_EQ(held.text[0], full);
  } else {
    EXPECT_EQ(held.finish[0], "stop");
    EXPECT_EQ(held.text[0], full.substr(0, next));
    EXPECT_GT(next, first);
  }
}

// echo: each choice's text begins with its prompt, and its logprobs with the prompt tokens'
// (the first without one); max_tokens 0 gives the prompt alone.
TEST_F(EngineServiceTest, EchoPrependsThePromptAndItsLogprobs) {
  CompletionRequest r = AbRequest(4);
  r.echo = true;
  r.n = 2;
  r.logprobs = true;
  r.top_logprobs = 2;
  Result res = Run(r);
  ASSERT_TRUE(res.status.ok()) << res.status;
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(res.text[i].substr(0, 6), "hello ") << res.text[i];
    EXPECT_EQ(res.text[i].size(), 10u) << res.text[i];
    ASSERT_EQ(res.logprobs[i].size(), 10u);
    EXPECT_FALSE(res.logprobs[i][0].logprob.has_value());
    EXPECT_EQ(res.logprobs[i][0].token, "h");
    for (size_t t = 1; t < 10; ++t) {
      ASSERT_TRUE(res.logprobs[i][t].logprob.has_value()) << t;
      EXPECT_LE(*res.logprobs[i][t].logprob, 0.0);
      EXPECT_EQ(res.logprobs[i][t].top_logprobs.size(), 2u);
    }
    EXPECT_EQ(res.logprobs[i][5].token, " ");
  }
  EXPECT_EQ(res.usage.completion_tokens, 8);
  // The prompt's logprobs are the model's, before the request's logit bias.
  EXPECT_GT(*res.logprobs[0][1].logprob, -50.0);  // under the bias of 100 it would be ~-100

  r.n = 1;
  r.max_tokens = 0;
  Result only = Run(r);
  ASSERT_TRUE(only.status.ok()) << only.status;
  EXPECT_EQ(only.text[0], "hello ");
  EXPECT_EQ(only.finish[0], "length");
  EXPECT_EQ(only.usage.completion_tokens, 0);
  EXPECT_EQ(only.usage.prompt_tokens, 6);
  ASSERT_EQ(only.logprobs[0].size(), 6u);
  EXPECT_EQ(*only.logprobs[0][3].logprob, *res.logprobs[0][3].logprob);

  // Without logprobs the echo needs nothing from the engine.
  r.logprobs = false;
  r.top_logprobs = 0;
  r.max_tokens = 3;
  Result plain = Run(r);
  ASSERT_TRUE(plain.status.ok()) << plain.status;
  EXPECT_EQ(plain.text[0].substr(0, 6), "hello ");
  EXPECT_EQ(plain.text[0].size(), 9u);
}

TEST_F(EngineServiceTest, ChatIsRenderedWithTheTemplate) {
  CompletionRequest r;
  r.kind = RequestKind::kChat;
  r.messages = {{"system", "be brief", std::nullopt, std::nullopt},
                {"user", "hello", std::nullopt, std::nullopt}};
  r.max_tokens = 4;
  r.sampling.temperature = 0;
  auto prepared = service_->Prepare(r);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  std::string text = model_->tokenizer->Decode(prepared->prompt);
  EXPECT_EQ(text,
            "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n"
            "<|im_start|>assistant\n");
  Result res = Run(r);
  ASSERT_TRUE(res.status.ok()) << res.status;
  EXPECT_FALSE(res.finish[0].empty());
  EXPECT_EQ(res.usage.prompt_tokens, static_cast<int>(prepared->prompt.size()));
}

TEST_F(EngineServiceTest, MaxTokensUnsetFillsTheContext) {
  CompletionRequest r = AbRequest(1);
  r.max_tokens.reset();
  auto prepared = service_->Prepare(r);
  ASSERT_TRUE(prepared.ok());
  EXPECT_EQ(prepared->max_tokens, model_->config.context_length - 6);
}

TEST_F(EngineServiceTest, SecondRequestWithTheSamePrefixReportsCachedTokens) {
  CompletionRequest r = AbRequest(2);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 40; ++i) prompt.push_back('a' + i % 20);
  r.prompts[0].tokens = prompt;
  Result first = Run(r);
  ASSERT_TRUE(first.status.ok());
  Result second = Run(r);
  ASSERT_TRUE(second.status.ok());
  EXPECT_GT(second.usage.cached_tokens, 0);
  EXPECT_LT(second.usage.cached_tokens, 40);
}

TEST_F(EngineServiceTest, CancelEndsEveryChoiceAndCallsDoneOnce) {
  CompletionRequest r = AbRequest(200);
  r.n = 3;
  Collector c(3);
  auto handle = service_->Start(r, c.OnChunk(), c.OnDone());
  handle->Cancel();
  handle->Cancel();
  Result res = c.Wait();
  EXPECT_EQ(res.done_calls, 1);
  EXPECT_TRUE(res.status.ok() || res.status.code() == absl::StatusCode::kCancelled) << res.status;
  service_->RefreshMetrics();
  EXPECT_EQ(metrics_->num_requests_running->Value(), 0);
  EXPECT_EQ(metrics_->kv_cache_usage_perc->Value(), 0);
}

TEST_F(EngineServiceTest, FullQueueIsResourceExhaustedAndFreesWhatWasSubmitted) {
  engine::EngineOptions options;
  options.max_running = 1;
  options.max_waiting = 1;
  Init(options);
  CompletionRequest r = AbRequest(100);
  r.n = 6;  // At most one running and one waiting.
  Collector c(6);
  auto handle = service_->Start(r, c.OnChunk(), c.OnDone());
  Result res = c.Wait();
  EXPECT_EQ(res.status.code(), absl::StatusCode::kResourceExhausted) << res.status;
  EXPECT_EQ(res.done_calls, 1);
  service_->RefreshMetrics();
  EXPECT_EQ(metrics_->num_requests_running->Value(), 0);
  EXPECT_EQ(metrics_->num_requests_waiting->Value(), 0);
  EXPECT_EQ(metrics_->kv_cache_usage_perc->Value(), 0);
}

TEST_F(EngineServiceTest, MetricsFollowTheEngine) {
  Result res = Run(AbRequest(5));
  ASSERT_TRUE(res.status.ok());
  service_->RefreshMetrics();
  EXPECT_EQ(metrics_->generation_tokens_total->Value(), 5);
  EXPECT_EQ(metrics_->prompt_tokens_total->Value(), 6);
  EXPECT_EQ(metrics_->num_requests_running->Value(), 0);
  EXPECT_EQ(metrics_->kv_cache_usage_perc->Value(), 0);
  service_->RefreshMetrics();  // Counters add only what is new.
  EXPECT_EQ(metrics_->generation_tokens_total->Value(), 5);
  std::string text = registry_->RenderText();
  EXPECT_NE(text.find("crescent:generation_tokens_total 5"), std::string::npos) << text;
}

}  // namespace
}  // namespace crescent::serve
