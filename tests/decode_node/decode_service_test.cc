// The decode node in-process on the tiny model: a real KV master (segment directory), the
// DecodeNode with its gRPC service, and a "prefill side" (another engine plus a transfer engine)
// that computes a prompt's KV and writes it into the reserved blocks over tcp. The Conductor is
// absent: the node's agent keeps retrying, which changes nothing here.
#include "decode_node/decode_service.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "decode_node/decode_node.h"
#include "src/cluster/proto_convert.h"
#include "gtest/gtest.h"
#include "kvstore/client/grpc_segment_directory.h"
#include "kvstore/server/master_server.h"
#include "kvstore/transfer/transfer_engine.h"
#include "proto/cluster.grpc.pb.h"
#include "src/common/clock.h"
#include "src/engine/cpu_backend.h"
#include "src/engine/engine.h"
#include "src/engine/loaded_model.h"
#include "tests/testing/prompts.h"
#include "tests/testing/tiny_model.h"

namespace crescent::decode_node {
namespace {

namespace v1 = ::crescent::cluster::v1;
using std::chrono::milliseconds;

using testing::MakePrompt;

// Runs one request to the end on `engine`; returns its tokens (for a PrefillOnly request, the
// first token) and, when `blocks_out` is set, a copy of the bytes of its KV blocks.
struct RunResult {
  std::vector<int32_t> tokens;
  std::vector<engine::SampleResult> samples;
  absl::Status status;
  engine::FinishReason reason = engine::FinishReason::kCancelled;
  std::vector<std::vector<uint8_t>> blocks;
};

RunResult RunToEnd(engine::Engine* engine, engine::EngineRequest request, bool copy_blocks) {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  RunResult result;
  auto id = engine->Submit(
      std::move(request),
      [&](const engine::SampleResult& r) {
        std::lock_guard<std::mutex> lock(mu);
        result.tokens.push_back(r.token);
        result.samples.push_back(r);
        return true;
      },
      [&](absl::Status status, engine::FinishReason reason, const engine::RequestStats&,
          std::span<const engine::KvCache::BlockId> blocks) {
        std::lock_guard<std::mutex> lock(mu);
        result.status = status;
        result.reason = reason;
        if (copy_blocks) {
          const size_t bytes = engine->cache()->config().BlockBytes();
          for (engine::KvCache::BlockId b : blocks) {
            const uint8_t* data = engine->cache()->BlockData(b);
            result.blocks.emplace_back(data, data + bytes);
          }
        }
        done = true;
        cv.notify_all();
      });
  EXPECT_TRUE(id.ok()) << id.status();
  if (!id.ok()) return result;
  std::unique_lock<std::mutex> lock(mu);
  EXPECT_TRUE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return done; }));
  return result;
}

engine::EngineRequest Greedy(std::vector<int32_t> prompt, int max_tokens) {
  engine::EngineRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  r.sampling.temperature = 0;
  // Logprobs make the comparisons sharp: they depend on every bit of the KV, where a greedy
  // token of the tiny random model often does not.
  r.sampling.logprobs = true;
  r.sampling.top_logprobs = 3;
  return r;
}

// Token, logprob and top logprobs, exactly.
void ExpectSameSamples(const std::vector<engine::SampleResult>& got,
                       const std::vector<engine::SampleResult>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(got[i].token, want[i].token);
    EXPECT_EQ(got[i].logprob, want[i].logprob);
    ASSERT_EQ(got[i].top_logprobs.size(), want[i].top_logprobs.size());
    for (size_t j = 0; j < got[i].top_logprobs.size(); ++j) {
      EXPECT_EQ(got[i].top_logprobs[j].token, want[i].top_logprobs[j].token);
      EXPECT_EQ(got[i].top_logprobs[j].logprob, want[i].top_logprobs[j].logprob);
    }
  }
}

bool SameLogprobs(const std::vector<engine::SampleResult>& a,
                  const std::vector<engine::SampleResult>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].token != b[i].token || a[i].logprob != b[i].logprob) return false;
  }
  return true;
}

// Polls `pred` for up to 10 s.
template <typename Pred>
bool Eventually(Pred pred) {
  for (int i = 0; i < 1000; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return pred();
}

class DecodeNodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::TinyModelOptions mo;
    mo.context_length = 2048;
    path_ = testing::WriteTinyModel(mo);

    kvstore::server::MasterServerOptions mso;
    mso.listen = "127.0.0.1:0";
    auto master = kvstore::server::MasterServer::Start(mso);
    ASSERT_TRUE(master.ok()) << master.status();
    master_ = std::move(*master);

    DecodeNodeOptions o;
    o.model_path = path_;
    o.node_id = "decode-0";
    o.conductor_address = "127.0.0.1:1";  // nobody: the agent keeps retrying
    o.kv_master_address = master_->address();
    o.threads = 1;
    o.kv_cache_bytes = 1 << 20;
    o.transport = "auto";
    o.heartbeat_interval = milliseconds(200);
    auto node = DecodeNode::Start(o);
    ASSERT_TRUE(node.ok()) << node.status();
    node_ = std::move(*node);

    channel_ = grpc::CreateChannel(node_->grpc_endpoint(), grpc::InsecureChannelCredentials());
    stub_ = v1::DecodeNode::NewStub(channel_);

    // The prefill side: its own model, engine and transfer engine.
    model_ = *engine::LoadModel(path_, {});
    backend_ = *engine::CpuBackend::Create(model_->config, model_->weights, 1);
    engine::EngineOptions eo;
    eo.num_blocks = 128;
    prefill_engine_ = *engine::Engine::Create(model_.get(), backend_.get(), eo, RealClock::Get());
    directory_ = kvstore::client::GrpcSegmentDirectory::Create(master_->address());
    kvstore::TransferEngineOptions to;
    to.transports = {"shm", "tcp"};
    auto transfer = kvstore::TransferEngine::Create(to, directory_.get());
    ASSERT_TRUE(transfer.ok()) << transfer.status();
    transfer_ = std::move(*transfer);
  }

  void TearDown() override {
    transfer_.reset();
    prefill_engine_.reset();
    node_.reset();
    master_.reset();
    std::remove(path_.c_str());
  }

  grpc::Status Reserve(int64_t positions, int64_t timeout_ms, v1::KvTarget* target,
                       const std::string& request_id = "r") {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ReserveRequest req;
    req.set_request_id(request_id);
    req.set_positions(positions);
    req.set_timeout_ms(timeout_ms);
    v1::ReserveResponse resp;
    grpc::Status s = stub_->Reserve(&ctx, req, &resp);
    if (target != nullptr) *target = resp.target();
    return s;
  }

  // Computes `prompt` on the prefill engine and writes its KV into `target`'s blocks over
  // `transport`. Returns the first token.
  int32_t PrefillInto(const std::vector<int32_t>& prompt, const v1::KvTarget& target,
                      const std::string& transport = "tcp") {
    engine::EngineRequest r = Greedy(prompt, 1);
    r.mode = engine::RequestMode::kPrefillOnly;
    RunResult pre = RunToEnd(prefill_engine_.get(), r, /*copy_blocks=*/true);
    EXPECT_TRUE(pre.status.ok()) << pre.status;
    EXPECT_EQ(pre.reason, engine::FinishReason::kPrefillDone);
    EXPECT_EQ(pre.tokens.size(), 1u);
    const size_t prompt_blocks = (prompt.size() + 15) / 16;
    EXPECT_GE(pre.blocks.size(), prompt_blocks);
    EXPECT_GE(static_cast<size_t>(target.block_offsets_size()), prompt_blocks);
    EXPECT_EQ(target.block_bytes(), prefill_engine_->cache()->config().BlockBytes());

    auto seg = transfer_->OpenSegment(target.segment(), {transport});
    EXPECT_TRUE(seg.ok()) << seg.status();
    if (!seg.ok() || pre.tokens.empty()) return -1;
    EXPECT_EQ(transfer_->SegmentTransport(*seg).value_or(""), transport);
    std::vector<kvstore::TransferRequest> writes;
    for (size_t i = 0; i < prompt_blocks && i < pre.blocks.size(); ++i) {
      writes.push_back({kvstore::TransferOp::kWrite, pre.blocks[i].data(), *seg,
                        target.block_offsets(static_cast<int>(i)), target.block_bytes()});
    }
    kvstore::BatchId batch = transfer_->AllocateBatch(writes.size());
    EXPECT_TRUE(transfer_->SubmitTransfer(batch, writes).ok());
    EXPECT_TRUE(transfer_->Wait(batch, std::chrono::seconds(10)).ok());
    EXPECT_TRUE(transfer_->FreeBatch(batch).ok());
    EXPECT_TRUE(transfer_->CloseSegment(*seg).ok());
    return pre.tokens[0];
  }

  v1::DecodeRequest MakeDecode(const std::string& request_id, const v1::KvTarget& target,
                               const std::vector<int32_t>& prompt, int32_t first_token,
                               int max_tokens) {
    v1::DecodeRequest d;
    d.set_request_id(request_id);
    d.set_reservation_id(target.reservation_id());
    for (int32_t t : prompt) d.add_prompt(t);
    d.mutable_first_token()->set_token(first_token);
    cluster::SamplingToProto(Greedy({}, 1).sampling, d.mutable_sampling());
    d.set_max_tokens(max_tokens);
    d.set_ignore_eos(true);
    return d;
  }

  struct StreamResult {
    std::vector<int32_t> tokens;
    std::vector<engine::SampleResult> samples;
    bool has_finish = false;
    v1::DecodeEvent::Finish finish;
    grpc::Status status;
  };

  StreamResult Decode(const v1::DecodeRequest& request) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    auto reader = stub_->Decode(&ctx, request);
    StreamResult out;
    v1::DecodeEvent e;
    while (reader->Read(&e)) {
      EXPECT_FALSE(out.has_finish) << "an event after the Finish event";
      if (e.has_token()) {
        out.tokens.push_back(e.token().token());
        out.samples.push_back(cluster::SampledTokenFromProto(e.token()));
      }
      if (e.has_finish()) {
        out.has_finish = true;
        out.finish = e.finish();
      }
    }
    out.status = reader->Finish();
    return out;
  }

  bool NoBlocksHeld() {
    std::vector<int> refs = node_->engine()->BlockRefCountsForTesting();
    for (int r : refs) {
      if (r != 0) return false;
    }
    return true;
  }

  double Metric(std::string_view needle) {
    // A sample line: "<name>{labels} <value>" at the start of a line.
    const std::string text = "\n" + node_->registry()->RenderText();
    const size_t at = text.find("\n" + std::string(needle) + " ");
    if (at == std::string::npos) return -1;
    return std::stod(text.substr(at + needle.size() + 2));
  }

  std::string path_;
  std::unique_ptr<kvstore::server::MasterServer> master_;
  std::unique_ptr<DecodeNode> node_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::DecodeNode::Stub> stub_;
  std::unique_ptr<engine::LoadedModel> model_;
  std::unique_ptr<engine::Backend> backend_;
  std::unique_ptr<engine::Engine> prefill_engine_;
  std::unique_ptr<kvstore::client::GrpcSegmentDirectory> directory_;
  std::unique_ptr<kvstore::TransferEngine> transfer_;
};

// The node times decode steps of a batch of 1 and of 4 at start and registers them.
TEST_F(DecodeNodeTest, MeasuresADecodeProfileAtStart) {
  const cluster::v1::CostProfile& p = node_->profile();
  ASSERT_EQ(p.decode_size(), 2);
  EXPECT_EQ(p.decode(0).batch(), 1);
  EXPECT_EQ(p.decode(1).batch(), 4);
  EXPECT_GT(p.decode(0).context(), 0);
  EXPECT_GT(p.decode(1).context(), p.decode(0).context());
  for (const auto& pt : p.decode()) EXPECT_GT(pt.seconds(), 0.0);
  EXPECT_EQ(p.prefill_size(), 0);
  const engine::EngineStats stats = node_->engine()->Stats();
  EXPECT_EQ(stats.running, 0);
  EXPECT_EQ(stats.waiting, 0);
  // Start returns once the measurement's blocks are back (the engine frees them just after the
  // finish callbacks the measurement waits for).
  EXPECT_TRUE(NoBlocksHeld());
}

TEST_F(DecodeNodeTest, TokensMatchColocatedEngine) {
  // Lengths around block boundaries (the first token's position in a fresh block or not), over
  // tcp and over shared memory.
  for (auto [n, transport] : std::vector<std::pair<int, std::string>>{
           {37, "tcp"}, {47, "shm"}, {48, "tcp"}, {16, "shm"}}) {
    SCOPED_TRACE(::testing::Message() << n << " over " << transport);
    const std::vector<int32_t> prompt = MakePrompt(n, n);
    constexpr int kMaxTokens = 12;
    RunResult colocated = RunToEnd(prefill_engine_.get(), Greedy(prompt, kMaxTokens), false);
    ASSERT_EQ(colocated.tokens.size(), static_cast<size_t>(kMaxTokens));

    v1::KvTarget target;
    ASSERT_TRUE(Reserve(n + 1, 10000, &target).ok());
    EXPECT_EQ(target.decode_node_id(), "decode-0");
    EXPECT_EQ(target.segment(), "decode-0/kv");
    EXPECT_EQ(target.transfer_endpoint(), node_->transfer()->tcp_endpoint());
    EXPECT_EQ(target.block_offsets_size(), (n + 1 + 15) / 16);
    const int32_t first = PrefillInto(prompt, target, transport);
    EXPECT_EQ(first, colocated.tokens[0]);

    StreamResult s = Decode(MakeDecode("req", target, prompt, first, kMaxTokens));
    ASSERT_TRUE(s.status.ok()) << s.status.error_message();
    ASSERT_TRUE(s.has_finish);
    EXPECT_EQ(s.finish.status().code(), 0) << s.finish.status().message();
    EXPECT_EQ(s.finish.reason(), "length");
    std::vector<int32_t> all = {first};
    all.insert(all.end(), s.tokens.begin(), s.tokens.end());
    EXPECT_EQ(all, colocated.tokens);
    ExpectSameSamples(s.samples, std::vector<engine::SampleResult>(colocated.samples.begin() + 1,
                                                                   colocated.samples.end()));
    EXPECT_TRUE(Eventually([&] { return NoBlocksHeld(); }));
  }
  EXPECT_EQ(Metric("crescent:decode_requests_total{outcome=\"length\"}"), 4);
  EXPECT_EQ(Metric("crescent:decode_kv_wait_seconds_count"), 4);
}

TEST_F(DecodeNodeTest, FirstTokenThatEndsTheRequestStreamsOnlyTheFinish) {
  const std::vector<int32_t> prompt = MakePrompt(30, 9);
  v1::KvTarget target;
  ASSERT_TRUE(Reserve(31, 10000, &target).ok());
  const int32_t first = PrefillInto(prompt, target);
  StreamResult s = Decode(MakeDecode("one", target, prompt, first, 1));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_TRUE(s.tokens.empty());
  ASSERT_TRUE(s.has_finish);
  EXPECT_EQ(s.finish.reason(), "length");
  EXPECT_TRUE(Eventually([&] { return NoBlocksHeld(); }));
}

TEST_F(DecodeNodeTest, WithoutTheKvTheTokensDiffer) {
  // The control for the test above: the same request over a reservation nobody wrote must not
  // reproduce the colocated logprobs (otherwise that test would prove nothing).
  const std::vector<int32_t> prompt = MakePrompt(40, 3);
  RunResult colocated = RunToEnd(prefill_engine_.get(), Greedy(prompt, 12), false);
  v1::KvTarget target;
  ASSERT_TRUE(Reserve(41, 10000, &target).ok());
  StreamResult s = Decode(MakeDecode("req", target, prompt, colocated.tokens[0], 12));
  ASSERT_TRUE(s.status.ok());
  ASSERT_EQ(s.samples.size(), 11u);
  EXPECT_FALSE(SameLogprobs(
      s.samples,
      std::vector<engine::SampleResult>(colocated.samples.begin() + 1, colocated.samples.end())));
}

TEST_F(DecodeNodeTest, ReservationTimeoutReleasesBlocks) {
  v1::KvTarget target;
  ASSERT_TRUE(Reserve(100, 100, &target).ok());
  EXPECT_FALSE(NoBlocksHeld());
  EXPECT_EQ(node_->service()->pending_reservations(), 1);
  ASSERT_TRUE(Eventually([&] { return Metric("crescent:reservations_expired_total") == 1; }));
  EXPECT_TRUE(NoBlocksHeld());
  EXPECT_EQ(node_->service()->pending_reservations(), 0);
  const std::vector<int32_t> prompt = MakePrompt(20, 1);
  StreamResult s = Decode(MakeDecode("late", target, prompt, 65, 4));
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::NOT_FOUND) << s.status.error_message();
}

TEST_F(DecodeNodeTest, ReleaseFreesAReservation) {
  v1::KvTarget target;
  ASSERT_TRUE(Reserve(64, 10000, &target).ok());
  EXPECT_FALSE(NoBlocksHeld());
  grpc::ClientContext ctx;
  v1::ReleaseRequest req;
  req.set_reservation_id(target.reservation_id());
  v1::ReleaseResponse resp;
  ASSERT_TRUE(stub_->Release(&ctx, req, &resp).ok());
  EXPECT_TRUE(NoBlocksHeld());
  EXPECT_EQ(node_->service()->pending_reservations(), 0);
}

TEST_F(DecodeNodeTest, CancelledStreamFreesBlocks) {
  const std::vector<int32_t> prompt = MakePrompt(20, 2);
  v1::KvTarget target;
  ASSERT_TRUE(Reserve(21, 10000, &target).ok());
  const int32_t first = PrefillInto(prompt, target);
  grpc::ClientContext ctx;
  // Long enough that the cancel always lands first (the tiny model makes thousands of tokens/s).
  auto reader = stub_->Decode(&ctx, MakeDecode("long", target, prompt, first, 2000));
  v1::DecodeEvent e;
  int tokens = 0;
  while (tokens < 3 && reader->Read(&e)) {
    if (e.has_token()) ++tokens;
  }
  ASSERT_EQ(tokens, 3);
  ctx.TryCancel();
  while (reader->Read(&e)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(Eventually([&] { return node_->service()->active_decodes() == 0; }));
  EXPECT_TRUE(Eventually([&] { return NoBlocksHeld(); }));
  EXPECT_TRUE(Eventually(
      [&] { return Metric("crescent:decode_requests_total{outcome=\"cancelled\"}") == 1; }));
  EXPECT_LT(Metric("crescent:generation_tokens_total"), 1999);
}

TEST_F(DecodeNodeTest, CancelRpcEndsTheStream) {
  const std::vector<int32_t> prompt = MakePrompt(20, 4);
  v1::KvTarget target;
  ASSERT_TRUE(Reserve(21, 10000, &target, "victim").ok());
  const int32_t first = PrefillInto(prompt, target);
  grpc::ClientContext ctx;
  auto reader = stub_->Decode(&ctx, MakeDecode("victim", target, prompt, first, 2000));
  v1::DecodeEvent e;
  ASSERT_TRUE(reader->Read(&e));
  {
    grpc::ClientContext cctx;
    v1::CancelRequest req;
    req.set_request_id("victim");
    v1::CancelResponse resp;
    ASSERT_TRUE(stub_->Cancel(&cctx, req, &resp).ok());
  }
  bool finished = false;
  std::string reason;
  while (reader->Read(&e)) {
    if (e.has_finish()) {
      finished = true;
      reason = e.finish().reason();
    }
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(finished);
  EXPECT_EQ(reason, "cancelled");
  EXPECT_TRUE(Eventually([&] { return NoBlocksHeld(); }));
}

TEST_F(DecodeNodeTest, CancelRpcReleasesAPendingReservation) {
  v1::KvTarget target;
  ASSERT_TRUE(Reserve(30, 10000, &target, "early").ok());
  grpc::ClientContext cctx;
  v1::CancelRequest req;
  req.set_request_id("early");
  v1::CancelResponse resp;
  ASSERT_TRUE(stub_->Cancel(&cctx, req, &resp).ok());
  EXPECT_TRUE(NoBlocksHeld());
  EXPECT_EQ(node_->service()->pending_reservations(), 0);
}

TEST_F(DecodeNodeTest, ErrorsNameWhatWasWrong) {
  const std::vector<int32_t> prompt = MakePrompt(20, 5);
  v1::KvTarget unknown;
  unknown.set_reservation_id(987654);
  StreamResult s = Decode(MakeDecode("x", unknown, prompt, 65, 4));
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(s.status.error_message().find("987654"), std::string::npos);

  grpc::Status r = Reserve(0, 1000, nullptr);
  EXPECT_EQ(r.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(r.error_message().find("positions"), std::string::npos);

  r = Reserve(1 << 20, 1000, nullptr);
  EXPECT_EQ(r.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << r.error_message();

  v1::KvTarget target;
  ASSERT_TRUE(Reserve(21, 10000, &target).ok());
  s = Decode(MakeDecode("x", target, {}, 65, 4));
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.status.error_message().find("prompt"), std::string::npos);
  s = Decode(MakeDecode("x", target, prompt, 65, 0));
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.status.error_message().find("max_tokens"), std::string::npos);
  // A request the engine refuses (a token outside the vocabulary) releases the reservation.
  s = Decode(MakeDecode("x", target, prompt, 1 << 30, 4));
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.status.error_message().find("first_token"), std::string::npos);
  EXPECT_TRUE(NoBlocksHeld());
  // A reservation too small for the prompt.
  ASSERT_TRUE(Reserve(8, 10000, &target).ok());
  s = Decode(MakeDecode("x", target, prompt, 65, 4));
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(NoBlocksHeld());
}

TEST_F(DecodeNodeTest, DrainRejectsReserveAndServesReservationsMadeBefore) {
  const std::vector<int32_t> prompt = MakePrompt(20, 6);
  v1::KvTarget target;
  ASSERT_TRUE(Reserve(21, 10000, &target).ok());
  const int32_t first = PrefillInto(prompt, target);

  std::thread drainer([&] { EXPECT_TRUE(node_->Drain(milliseconds(20000))); });
  ASSERT_TRUE(Eventually([&] { return node_->service()->draining(); }));
  grpc::Status r = Reserve(21, 1000, nullptr);
  EXPECT_EQ(r.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(node_->Load().draining());

  StreamResult s = Decode(MakeDecode("before-drain", target, prompt, first, 5));
  EXPECT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.tokens.size(), 4u);
  drainer.join();
  // on_finish runs while the blocks are still referenced; the engine drops them right after.
  EXPECT_TRUE(Eventually([&] { return NoBlocksHeld(); }));
}

TEST_F(DecodeNodeTest, LoadReportsTheEngine) {
  v1::NodeLoad before = node_->Load();
  EXPECT_EQ(before.free_blocks(), node_->engine()->cache()->num_blocks());
  v1::KvTarget target;
  ASSERT_TRUE(Reserve(64, 10000, &target).ok());
  v1::NodeLoad after = node_->Load();
  EXPECT_EQ(after.free_blocks(), before.free_blocks() - 4);
  EXPECT_EQ(after.waiting_requests(), 1);  // the reservation
  EXPECT_FALSE(after.draining());
}

TEST(DecodeNodeOptionsTest, BadOptionsAreRejected) {
  DecodeNodeOptions o;
  o.model_path = "m.gguf";
  o.node_id = "d";
  o.conductor_address = "127.0.0.1:1";
  o.kv_master_address = "127.0.0.1:2";
  o.transport = "carrier-pigeon";
  auto node = DecodeNode::Start(o);
  ASSERT_FALSE(node.ok());
  EXPECT_EQ(node.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(node.status().message().find("--transport"), std::string::npos);
  o.transport = "auto";
  o.node_id = "";
  EXPECT_EQ(DecodeNode::Start(o).status().code(), absl::StatusCode::kInvalidArgument);

  o.node_id = "decode-0";
  o.data_listen = "nohost";
  node = DecodeNode::Start(o);
  EXPECT_EQ(node.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(node.status().message(), "--data-listen must be host:port, got 'nohost'");
}

}  // namespace
}  // namespace crescent::decode_node
