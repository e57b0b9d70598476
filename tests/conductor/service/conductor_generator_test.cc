// ConductorGenerator against fake prefill and decode nodes (fake_nodes.h) on loopback.
#include "conductor/service/conductor_generator.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/engine/block_hash.h"
#include "src/engine/loaded_model.h"
#include "src/server/openai_protocol.h"
#include "tests/conductor/service/fake_nodes.h"
#include "tests/testing/tiny_model.h"

namespace crescent::conductor::service {
namespace {

namespace v1 = cluster::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int kBlockTokens = 16;
constexpr int32_t kEos = 261;  // the tiny model's <|im_end|>

using fakes::Eventually;
using fakes::FakeDecode;
using fakes::FakePrefill;
using fakes::FakeServer;

class FakePool final : public PoolIndex {
 public:
  absl::StatusOr<int64_t> LongestPrefix(std::span<const uint64_t> hashes) override {
    return std::min<int64_t>(blocks, static_cast<int64_t>(hashes.size()));
  }
  int64_t blocks = 0;
};

// What one request delivered.
struct Outcome {
  absl::Mutex mu;
  std::vector<int32_t> tokens;
  std::vector<bool> decode_started_at_token;
  absl::Status status;
  serve::GenerationResult result;
  absl::Notification done;
};

class ConductorGeneratorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto model = engine::LoadModel(testing::WriteTinyModel());
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = model->release();
  }

  void SetUp() override {
    NodeRegistryOptions ro;
    ro.model_fingerprint = model_->fingerprint;
    ro.model_id = model_->id;
    ro.kv_bytes_per_token = 1024;
    ro.node_timeout_s = 30.0;
    registry_ = std::make_unique<NodeRegistry>(ro, RealClock::Get());
  }

  void TearDown() override { generator_.reset(); }

  void AddNode(const std::string& id, v1::Role role, const std::string& endpoint) {
    v1::NodeInfo info;
    info.set_node_id(id);
    info.set_role(role);
    info.set_grpc_endpoint(endpoint);
    info.set_model_id(model_->id);
    info.set_model_fingerprint(model_->fingerprint);
    info.set_block_tokens(kBlockTokens);
    info.set_total_blocks(64);
    ASSERT_TRUE(registry_->Register(info).ok());
  }

  void MakeGenerator(ConductorGeneratorOptions options = {}) {
    options.rpc_timeout_s = 2.0;
    options.prefill_timeout_s = 10.0;
    options.request_timeout_s = 20.0;
    auto g = ConductorGenerator::Create(model_, registry_.get(), &pool_, &metrics_, options);
    ASSERT_TRUE(g.ok()) << g.status();
    generator_ = std::move(*g);
  }

  engine::EngineRequest Request(int prompt_tokens = 40, int max_tokens = 4) {
    engine::EngineRequest r;
    for (int i = 0; i < prompt_tokens; ++i) r.prompt.push_back(10 + i % 200);
    r.max_tokens = max_tokens;
    r.sampling.temperature = 0;
    return r;
  }

  // Submits; the outcome fills in as callbacks arrive. `stop_after`: on_token returns false
  // on that many-th token.
  absl::StatusOr<uint64_t> Start(engine::EngineRequest request, Outcome* out,
                                 FakeDecode* decode = nullptr, int stop_after = -1) {
    return generator_->Submit(
        std::move(request),
        [out, decode, stop_after](const engine::SampleResult& r) {
          absl::MutexLock lock(&out->mu);
          out->tokens.push_back(r.token);
          out->decode_started_at_token.push_back(decode != nullptr && decode->started.load());
          return stop_after < 0 || static_cast<int>(out->tokens.size()) < stop_after;
        },
        [out](absl::Status status, const serve::GenerationResult& result) {
          {
            absl::MutexLock lock(&out->mu);
            out->status = status;
            out->result = result;
          }
          out->done.Notify();
        });
  }

  void Wait(Outcome* out) {
    ASSERT_TRUE(out->done.WaitForNotificationWithTimeout(absl::Seconds(30)))
        << "request never finished";
  }

  double CounterValue(const std::string& name, const server::Labels& labels = {}) {
    return metrics_.GetCounter(name, "", labels)->Value();
  }

  static engine::LoadedModel* model_;
  std::unique_ptr<NodeRegistry> registry_;
  FakePool pool_;
  server::MetricsRegistry metrics_;
  std::unique_ptr<ConductorGenerator> generator_;
};

engine::LoadedModel* ConductorGeneratorTest::model_ = nullptr;

TEST_F(ConductorGeneratorTest, FirstTokenThenDecodeStream) {
  FakePrefill prefill;
  FakeDecode decode;
  FakeServer ps(&prefill), ds(&decode);
  AddNode("p1", v1::ROLE_PREFILL, ps.endpoint);
  AddNode("d1", v1::ROLE_DECODE, ds.endpoint);
  MakeGenerator();
  EXPECT_TRUE(generator_->Ready());

  Outcome out;
  engine::EngineRequest req = Request(40, 4);
  req.cache_salt = 9;
  ASSERT_TRUE(Start(req, &out, &decode).ok());
  Wait(&out);
  ASSERT_TRUE(out.status.ok()) << out.status;
  EXPECT_THAT(out.tokens, ElementsAre(100, 101, 102, 103));
  // The first token reached the client before Decode was called.
  ASSERT_FALSE(out.decode_started_at_token.empty());
  EXPECT_FALSE(out.decode_started_at_token[0]);
  EXPECT_EQ(out.result.reason, engine::FinishReason::kLength);
  EXPECT_EQ(out.result.stats.generated_tokens, 4);
  EXPECT_EQ(out.result.stats.prompt_tokens, 40);

  absl::MutexLock pl(&prefill.mu);
  absl::MutexLock dl(&decode.mu);
  ASSERT_EQ(decode.reserves.size(), 1u);
  // Prompt + the output the policy admitted it with (max_tokens 4).
  EXPECT_EQ(decode.reserves[0].positions(), 44);
  ASSERT_EQ(prefill.requests.size(), 1u);
  const v1::PrefillRequest& pr = prefill.requests[0];
  EXPECT_EQ(pr.prompt_size(), 40);
  EXPECT_EQ(pr.target().reservation_id(), 78u);
  EXPECT_EQ(pr.target().segment(), "seg-d");
  EXPECT_EQ(pr.cache_salt(), 9u);
  EXPECT_EQ(pr.max_tokens(), 4);
  EXPECT_GT(pr.deadline_unix_ms(), 0);
  ASSERT_EQ(decode.decodes.size(), 1u);
  const v1::DecodeRequest& dr = decode.decodes[0];
  EXPECT_EQ(dr.reservation_id(), 78u);
  EXPECT_EQ(dr.first_token().token(), 100);
  EXPECT_EQ(dr.prompt_size(), 40);
  EXPECT_EQ(dr.max_tokens(), 4);
  EXPECT_TRUE(decode.releases.empty());

  // The prefill node is now believed to hold the prompt's blocks.
  const auto hashes =
      engine::BlockHashes(engine::BlockHashSeed(model_->fingerprint, 9), req.prompt, kBlockTokens);
  ASSERT_EQ(hashes.size(), 2u);
  EXPECT_TRUE(registry_->Holds("p1", hashes[1]));
  EXPECT_EQ(generator_->Stats().generated_tokens, 4);
}

TEST_F(ConductorGeneratorTest, RetriesOnAnotherPrefillNodeWithTheSameReservation) {
  std::atomic<int> fail_first{1};
  FakePrefill p1, p2;
  p1.fail_first = &fail_first;
  p2.fail_first = &fail_first;
  FakeDecode decode;
  FakeServer s1(&p1), s2(&p2), ds(&decode);
  AddNode("p1", v1::ROLE_PREFILL, s1.endpoint);
  AddNode("p2", v1::ROLE_PREFILL, s2.endpoint);
  AddNode("d1", v1::ROLE_DECODE, ds.endpoint);
  MakeGenerator();

  Outcome out;
  ASSERT_TRUE(Start(Request(), &out).ok());
  Wait(&out);
  ASSERT_TRUE(out.status.ok()) << out.status;
  EXPECT_THAT(out.tokens, ElementsAre(100, 101, 102, 103));
  EXPECT_EQ(p1.calls.load() + p2.calls.load(), 2);
  EXPECT_EQ(p1.calls.load(), 1);
  EXPECT_EQ(p2.calls.load(), 1);
  EXPECT_EQ(CounterValue("crescent:prefill_retries_total"), 1.0);
  absl::MutexLock dl(&decode.mu);
  EXPECT_EQ(decode.reserves.size(), 1u);  // one reservation for both attempts
  EXPECT_TRUE(decode.releases.empty());
  // The failed node is out of the policy's view until it beats again.
  EXPECT_EQ(registry_->CountLive().prefill, 1);
}

TEST_F(ConductorGeneratorTest, ReservationReleasedWhenPrefillFailsEverywhere) {
  std::atomic<int> fail_first{100};
  FakePrefill p1, p2;
  p1.fail_first = &fail_first;
  p2.fail_first = &fail_first;
  FakeDecode decode;
  FakeServer s1(&p1), s2(&p2), ds(&decode);
  AddNode("p1", v1::ROLE_PREFILL, s1.endpoint);
  AddNode("p2", v1::ROLE_PREFILL, s2.endpoint);
  AddNode("d1", v1::ROLE_DECODE, ds.endpoint);
  MakeGenerator();

  Outcome out;
  ASSERT_TRUE(Start(Request(), &out).ok());
  Wait(&out);
  EXPECT_EQ(out.status.code(), absl::StatusCode::kUnavailable) << out.status;
  EXPECT_THAT(out.status.message(), HasSubstr("fake prefill node is down"));
  EXPECT_TRUE(out.tokens.empty());
  absl::MutexLock dl(&decode.mu);
  ASSERT_EQ(decode.reserves.size(), 1u);
  EXPECT_THAT(decode.releases, ElementsAre(78u));
  EXPECT_TRUE(decode.decodes.empty());
}

TEST_F(ConductorGeneratorTest, NonRetryablePrefillErrorIsReturnedAndReleases) {
  FakePrefill prefill;
  prefill.response_error = static_cast<int>(absl::StatusCode::kInvalidArgument);
  FakeDecode decode;
  FakeServer ps(&prefill), ds(&decode);
  AddNode("p1", v1::ROLE_PREFILL, ps.endpoint);
  AddNode("d1", v1::ROLE_DECODE, ds.endpoint);
  MakeGenerator();
  Outcome out;
  ASSERT_TRUE(Start(Request(), &out).ok());
  Wait(&out);
  EXPECT_EQ(out.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out.status.message(), HasSubstr("prefill node p1"));
  EXPECT_EQ(prefill.calls.load(), 1);
  absl::MutexLock dl(&decode.mu);
  EXPECT_THAT(decode.releases, ElementsAre(78u));
}

TEST_F(ConductorGeneratorTest, DecodeStreamFailureIsUnavailable) {
  FakePrefill prefill;
  FakeDecode decode;
  decode.fail_after = 2;
  FakeServer ps(&prefill), ds(&decode);
  AddNode("p1", v1::ROLE_PREFILL, ps.endpoint);
  AddNode("d1", v1::ROLE_DECODE, ds.endpoint);
  MakeGenerator();
  Outcome out;
  ASSERT_TRUE(Start(Request(40, 10), &out).ok());
  Wait(&out);
  EXPECT_EQ(out.status.code(), absl::StatusCode::kUnavailable) << out.status;
  EXPECT_THAT(out.status.message(), HasSubstr("decode node d1 failed"));
  EXPECT_THAT(out.tokens, ElementsAre(100, 101, 102));
  EXPECT_EQ(registry_->CountLive().decode, 0);  // suspect until it beats again
}

TEST_F(ConductorGeneratorTest, DecodeNodeKilledMidStreamEndsTheRequest) {
  FakePrefill prefill;
  FakeDecode decode;
  decode.block_until_cancelled = true;  // streams its tokens, then hangs
  FakeServer ps(&prefill), ds(&decode);
  AddNode("p1", v1::ROLE_PREFILL, ps.endpoint);
  AddNode("d1", v1::ROLE_DECODE, ds.endpoint);
  MakeGenerator();
  Outcome out;
  ASSERT_TRUE(Start(Request(40, 10), &out).ok());
  ASSERT_TRUE(Eventually([&] {
    absl::MutexLock lock(&out.mu);
    return out.tokens.size() == 4;
  }));
  ds.Kill();
  Wait(&out);
  EXPECT_EQ(out.status.code(), absl::StatusCode::kUnavailable) << out.status;
  EXPECT_THAT(out.status.message(), HasSubstr("decode node d1 failed"));
}

TEST_F(ConductorGeneratorTest, RejectionIsResourceExhaustedWithRetryAfter) {
  FakePrefill prefill;
  FakeDecode decode;
  FakeServer ps(&prefill), ds(&decode);
  AddNode("p1", v1::ROLE_PREFILL, ps.endpoint);
  AddNode("d1", v1::ROLE_DECODE, ds.endpoint);
  ConductorGeneratorOptions options;
  options.scheduler.slo.ttft_s = 1e-9;  // nothing can meet it
  MakeGenerator(options);
  Outcome out;
  ASSERT_TRUE(Start(Request(), &out).ok());
  Wait(&out);
  EXPECT_EQ(out.status.code(), absl::StatusCode::kResourceExhausted) << out.status;
  EXPECT_THAT(out.status.message(), HasSubstr("ttft_slo"));
  ASSERT_TRUE(server::RetryAfterOf(out.status).has_value());
  EXPECT_GE(*server::RetryAfterOf(out.status), 1);
  ASSERT_TRUE(out.result.retry_after_seconds.has_value());
  EXPECT_EQ(CounterValue("crescent:requests_rejected_total", {{"reason", "ttft_slo"}}), 1.0);
  EXPECT_THAT(metrics_.RenderText(),
              HasSubstr("crescent:requests_rejected_total{reason=\"ttft_slo\"} 1"));
  absl::MutexLock dl(&decode.mu);
  EXPECT_TRUE(decode.reserves.empty());
  EXPECT_EQ(prefill.calls.load(), 0);
}

TEST_F(ConductorGeneratorTest, CancelDuringDecodePropagates) {
  FakePrefill prefill;
  FakeDecode decode;
  decode.block_until_cancelled = true;
  FakeServer ps(&prefill), ds(&decode);
  AddNode("p1", v1::ROLE_PREFILL, ps.endpoint);
  AddNode("d1", v1::ROLE_DECODE, ds.endpoint);
  MakeGenerator();
  Outcome out;
  auto id = Start(Request(40, 10), &out);
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(Eventually([&] {
    absl::MutexLock lock(&out.mu);
    return out.tokens.size() == 4;
  }));
  generator_->Cancel(*id);
  Wait(&out);
  EXPECT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.result.reason, engine::FinishReason::kCancelled);
  EXPECT_TRUE(Eventually([&] { return decode.saw_cancel.load(); }));
  EXPECT_TRUE(Eventually([&] { return generator_->in_flight() == 0; }));  // erased after on_done
}

TEST_F(ConductorGeneratorTest, CancelDuringPrefillReleasesTheReservation) {
  FakePrefill prefill;
  prefill.block_until_cancelled = true;
  FakeDecode decode;
  FakeServer ps(&prefill), ds(&decode);
  AddNode("p1", v1::ROLE_PREFILL, ps.endpoint);
  AddNode("d1", v1::ROLE_DECODE, ds.endpoint);
  MakeGenerator();
  Outcome out;
  auto id = Start(Request(), &out);
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(Eventually([&] { return prefill.calls.load() == 1; }));
  generator_->Cancel(*id);
  Wait(&out);
  EXPECT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.result.reason, engine::FinishReason::kCancelled);
  EXPECT_TRUE(out.tokens.empty());
  EXPECT_TRUE(Eventually([&] { return prefill.saw_cancel.load(); }));
  absl::MutexLock dl(&decode.mu);
  EXPECT_THAT(decode.releases, ElementsAre(78u));
  EXPECT_TRUE(decode.decodes.empty());
}

TEST_F(ConductorGeneratorTest, ClientStopCancelsTheStream) {
  FakePrefill prefill;
  FakeDecode decode;
  decode.block_until_cancelled = true;
  FakeServer ps(&prefill), ds(&decode);
  AddNode("p1", v1::ROLE_PREFILL, ps.endpoint);
  AddNode("d1", v1::ROLE_DECODE, ds.endpoint);
  MakeGenerator();
  Outcome out;
  ASSERT_TRUE(Start(Request(40, 10), &out, nullptr, /*stop_after=*/2).ok());
  Wait(&out);
  EXPECT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.result.reason, engine::FinishReason::kStop);
  EXPECT_THAT(out.tokens, ElementsAre(100, 101));
  EXPECT_TRUE(Eventually([&] { return decode.saw_cancel.load(); }));
}

TEST_F(ConductorGeneratorTest, EndOfGenerationFirstTokenEndsWithoutDecode) {
  FakePrefill prefill;
  prefill.first_token = kEos;
  FakeDecode decode;
  FakeServer ps(&prefill), ds(&decode);
  AddNode("p1", v1::ROLE_PREFILL, ps.endpoint);
  AddNode("d1", v1::ROLE_DECODE, ds.endpoint);
  MakeGenerator();
  Outcome out;
  ASSERT_TRUE(Start(Request(), &out).ok());
  Wait(&out);
  EXPECT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.result.reason, engine::FinishReason::kStop);
  EXPECT_TRUE(out.tokens.empty());  // end-of-generation is not a token
  absl::MutexLock dl(&decode.mu);
  EXPECT_TRUE(decode.decodes.empty());
  EXPECT_THAT(decode.releases, ElementsAre(78u));
}

TEST_F(ConductorGeneratorTest, MaxTokensOneNeedsNoDecode) {
  FakePrefill prefill;
  FakeDecode decode;
  FakeServer ps(&prefill), ds(&decode);
  AddNode("p1", v1::ROLE_PREFILL, ps.endpoint);
  AddNode("d1", v1::ROLE_DECODE, ds.endpoint);
  MakeGenerator();
  Outcome out;
  ASSERT_TRUE(Start(Request(40, 1), &out).ok());
  Wait(&out);
  EXPECT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.result.reason, engine::FinishReason::kLength);
  EXPECT_THAT(out.tokens, ElementsAre(100));
  absl::MutexLock dl(&decode.mu);
  EXPECT_TRUE(decode.decodes.empty());
  EXPECT_EQ(decode.releases.size(), 1u);
}

TEST_F(ConductorGeneratorTest, PoolPrefixIsPassedToThePrefillNode) {
  FakePrefill prefill;
  FakeDecode decode;
  FakeServer ps(&prefill), ds(&decode);
  AddNode("p1", v1::ROLE_PREFILL, ps.endpoint);
  AddNode("d1", v1::ROLE_DECODE, ds.endpoint);
  pool_.blocks = 2;
  ConductorGeneratorOptions options;
  options.prefill_policy = policy::PrefillPolicy::kRoundRobin;
  MakeGenerator(options);
  Outcome out;
  ASSERT_TRUE(Start(Request(40, 2), &out).ok());
  Wait(&out);
  ASSERT_TRUE(out.status.ok()) << out.status;
  absl::MutexLock pl(&prefill.mu);
  ASSERT_EQ(prefill.requests.size(), 1u);
  EXPECT_EQ(prefill.requests[0].pool_prefix_blocks(), 2);
}

TEST_F(ConductorGeneratorTest, ValidateAndReadiness) {
  MakeGenerator();
  EXPECT_FALSE(generator_->Ready());
  EXPECT_EQ(generator_->max_sequence_tokens(), model_->config.context_length);
  absl::Status s = generator_->Validate(Request());
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("prefill"));
  Outcome out;
  EXPECT_EQ(Start(Request(), &out).status().code(), absl::StatusCode::kUnavailable);

  FakePrefill prefill;
  FakeDecode decode;
  FakeServer ps(&prefill), ds(&decode);
  AddNode("p1", v1::ROLE_PREFILL, ps.endpoint);
  EXPECT_FALSE(generator_->Ready());
  AddNode("d1", v1::ROLE_DECODE, ds.endpoint);
  EXPECT_TRUE(generator_->Ready());
  EXPECT_THAT(metrics_.RenderText(), HasSubstr("crescent:cluster_nodes{role=\"decode\"} 1"));
  EXPECT_EQ(generator_->max_sequence_tokens(),
            std::min<int64_t>(64 * kBlockTokens, model_->config.context_length));

  EXPECT_TRUE(generator_->Validate(Request()).ok());
  engine::EngineRequest bad = Request();
  bad.prompt[3] = model_->config.vocab_size;
  EXPECT_EQ(generator_->Validate(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = Request();
  bad.max_tokens = 0;
  EXPECT_EQ(generator_->Validate(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = Request(40, static_cast<int>(model_->config.context_length));
  EXPECT_EQ(generator_->Validate(bad).code(), absl::StatusCode::kOutOfRange);
  bad = Request();
  bad.sampling.temperature = 5;
  EXPECT_EQ(generator_->Validate(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = Request(0, 4);
  EXPECT_EQ(generator_->Validate(bad).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ConductorGeneratorTest, ManyConcurrentRequests) {
  FakePrefill p1, p2;
  FakeDecode decode;
  FakeServer s1(&p1), s2(&p2), ds(&decode);
  AddNode("p1", v1::ROLE_PREFILL, s1.endpoint);
  AddNode("p2", v1::ROLE_PREFILL, s2.endpoint);
  AddNode("d1", v1::ROLE_DECODE, ds.endpoint);
  ConductorGeneratorOptions options;
  options.prefill_policy = policy::PrefillPolicy::kRoundRobin;
  MakeGenerator(options);
  constexpr int kRequests = 16;
  std::vector<std::unique_ptr<Outcome>> outs;
  for (int i = 0; i < kRequests; ++i) {
    outs.push_back(std::make_unique<Outcome>());
    ASSERT_TRUE(Start(Request(20 + i, 4), outs.back().get()).ok());
  }
  for (auto& out : outs) {
    Wait(out.get());
    EXPECT_TRUE(out->status.ok()) << out->status;
    EXPECT_THAT(out->tokens, ElementsAre(100, 101, 102, 103));
  }
  EXPECT_EQ(p1.calls.load() + p2.calls.load(), kRequests);
  EXPECT_GT(p1.calls.load(), 0);
  EXPECT_GT(p2.calls.load(), 0);
  EXPECT_EQ(generator_->Stats().generated_tokens, 4 * kRequests);
}

}  // namespace
}  // namespace crescent::conductor::service
