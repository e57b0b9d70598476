// PrefillNodeService against an in-process KV master, pool storage node and "decode side" (a
// second engine whose KV cache is a transfer-engine segment): the KV it writes into a decode
// reservation must give exactly the tokens a colocated engine gives, whether the prefix was
// computed, taken from the node's own cache or fetched from the pool; corrupt pool blocks are
// recomputed; failures leave no blocks behind.
#include "prefill_node/prefill_service.h"

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kvstore/client/grpc_segment_directory.h"
#include "kvstore/client/pool_client.h"
#include "kvstore/server/master_server.h"
#include "kvstore/server/storage_server.h"
#include "kvstore/transfer/transfer_engine.h"
#include "src/common/clock.h"
#include "src/engine/block_hash.h"
#include "src/engine/cpu_backend.h"
#include "src/engine/engine.h"
#include "src/engine/loaded_model.h"
#include "tests/testing/tiny_model.h"

namespace crescent::prefill_node {
namespace {

namespace v1 = cluster::v1;
using engine::Engine;
using engine::EngineOptions;
using engine::EngineRequest;
using engine::FinishReason;
using engine::KvCache;
using kvstore::TransferEngine;

constexpr int kBlockTokens = 4;
constexpr int64_t kNumBlocks = 96;
constexpr int kMaxTokens = 10;

// Runs one request on `engine` and returns its tokens (first token included).
class RequestRun {
 public:
  engine::TokenCallback OnToken() {
    return [this](const engine::SampleResult& r) {
      std::lock_guard<std::mutex> lock(mu_);
      tokens_.push_back(r.token);
      return true;
    };
  }
  engine::FinishCallback OnFinish() {
    return [this](absl::Status status, FinishReason reason, const engine::RequestStats&,
                  std::span<const KvCache::BlockId>) {
      std::lock_guard<std::mutex> lock(mu_);
      status_ = status;
      reason_ = reason;
      done_ = true;
      cv_.notify_all();
    };
  }
  std::vector<int32_t> Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    EXPECT_TRUE(cv_.wait_for(lock, std::chrono::seconds(60), [&] { return done_; }));
    EXPECT_TRUE(status_.ok()) << status_;
    return tokens_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  absl::Status status_;
  FinishReason reason_ = FinishReason::kCancelled;
  std::vector<int32_t> tokens_;
};

EngineRequest Greedy(const std::vector<int32_t>& prompt) {
  EngineRequest r;
  r.prompt = prompt;
  r.sampling.temperature = 0.0f;
  r.max_tokens = kMaxTokens;
  r.ignore_eos = true;
  return r;
}

std::vector<int32_t> Prompt(int n, int seed) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back(32 + (i * 7 + seed * 13) % 200);
  return p;
}

// A node: a transfer engine, an engine whose KV cache is that engine's segment "<name>/kv".
struct Node {
  std::unique_ptr<kvstore::SegmentDirectory> directory;
  std::unique_ptr<TransferEngine> transfer;
  std::unique_ptr<engine::CpuBackend> backend;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<kvstore::client::PoolClient> pool;
  std::unique_ptr<PrefillNodeService> service;
  ~Node() {
    service.reset();
    pool.reset();
    engine.reset();  // before the segment it lives in
    backend.reset();
    transfer.reset();
  }
};

class PrefillServiceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    testing::TinyModelOptions mo;
    mo.n_layers = 3;
    mo.tied_embeddings = false;  // tied, the random model repeats one token: too easy to match
    auto model = engine::LoadModel(testing::WriteTinyModel(mo));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    kvstore::server::MasterServerOptions mso;
    mso.listen = "127.0.0.1:0";
    mso.tick_interval = std::chrono::milliseconds(20);
    auto master = kvstore::server::MasterServer::Start(mso);
    ASSERT_TRUE(master.ok()) << master.status();
    master_ = *std::move(master);
    decode_ = MakeNode("decode", /*with_pool=*/false);
    ASSERT_NE(decode_, nullptr);
  }

  void TearDown() override {
    nodes_.clear();
    decode_.reset();
    storage_.reset();
    master_.reset();
  }

  std::unique_ptr<Node> MakeNode(const std::string& name, bool with_pool) {
    auto node = std::make_unique<Node>();
    node->directory = kvstore::client::GrpcSegmentDirectory::Create(master_->address());
    kvstore::TransferEngineOptions to;
    to.transports = GetParam() == "shm" ? std::vector<std::string>{"shm", "tcp"}
                                        : std::vector<std::string>{"tcp"};
    auto transfer = TransferEngine::Create(to, node->directory.get());
    EXPECT_TRUE(transfer.ok()) << transfer.status();
    if (!transfer.ok()) return nullptr;
    node->transfer = *std::move(transfer);
    auto backend = engine::CpuBackend::Create(model_->config, model_->weights, 1);
    EXPECT_TRUE(backend.ok()) << backend.status();
    if (!backend.ok()) return nullptr;
    node->backend = *std::move(backend);
    EngineOptions eo;
    eo.block_tokens = kBlockTokens;
    eo.num_blocks = kNumBlocks;
    eo.max_step_tokens = 16;  // prompts are computed in several chunks
    TransferEngine* t = node->transfer.get();
    eo.kv_memory = [t, name](size_t bytes) {
      return t->AllocateSharedSegment(name + "/kv", bytes);
    };
    auto engine = Engine::Create(model_.get(), node->backend.get(), eo, RealClock::Get());
    EXPECT_TRUE(engine.ok()) << engine.status();
    if (!engine.ok()) return nullptr;
    node->engine = *std::move(engine);
    if (with_pool) {
      kvstore::client::PoolClientOptions po;
      po.master_address = master_->address();
      po.engine = node->transfer.get();
      po.transport = GetParam();
      auto pool = kvstore::client::PoolClient::Create(po);
      EXPECT_TRUE(pool.ok()) << pool.status();
      if (!pool.ok()) return nullptr;
      node->pool = *std::move(pool);
    }
    auto service = PrefillNodeService::Create(node->engine.get(), node->transfer.get(),
                                              node->pool.get(), nullptr);
    EXPECT_TRUE(service.ok()) << service.status();
    if (!service.ok()) return nullptr;
    node->service = *std::move(service);
    return node;
  }

  Node* Prefiller(bool with_pool = true) {
    nodes_.push_back(MakeNode("prefill" + std::to_string(nodes_.size()), with_pool));
    return nodes_.back().get();
  }

  void StartStorage() {
    kvstore::server::StorageServerOptions so;
    so.master_address = master_->address();
    so.node_id = "pool0";
    so.dram_bytes = 8 << 20;
    so.transport = GetParam();
    auto storage = kvstore::server::StorageServer::Start(so);
    ASSERT_TRUE(storage.ok()) << storage.status();
    storage_ = *std::move(storage);
  }

  // The tokens of a colocated greedy run.
  std::vector<int32_t> Colocated(const std::vector<int32_t>& prompt) {
    std::unique_ptr<Node> node = MakeNode("colocated" + std::to_string(colocated_++), false);
    RequestRun run;
    auto id = node->engine->Submit(Greedy(prompt), run.OnToken(), run.OnFinish());
    EXPECT_TRUE(id.ok()) << id.status();
    return run.Wait();
  }

  // A reservation on the decode engine and the KvTarget naming it.
  v1::KvTarget Reserve(int64_t positions, Engine::RequestId* reservation) {
    auto r = decode_->engine->Reserve(positions);
    EXPECT_TRUE(r.ok()) << r.status();
    v1::KvTarget target;
    if (!r.ok()) return target;
    *reservation = r->id;
    const size_t block_bytes = decode_->engine->cache()->config().BlockBytes();
    target.set_decode_node_id("decode");
    target.set_segment("decode/kv");
    target.set_transfer_endpoint(decode_->transfer->tcp_endpoint());
    target.set_block_bytes(block_bytes);
    target.set_reservation_id(r->id);
    for (KvCache::BlockId b : r->blocks) target.add_block_offsets(b * block_bytes);
    return target;
  }

  v1::PrefillRequest Request(const std::vector<int32_t>& prompt, const v1::KvTarget& target) {
    v1::PrefillRequest request;
    request.set_request_id("r" + std::to_string(next_request_++));
    for (int32_t t : prompt) request.add_prompt(t);
    request.mutable_sampling()->set_temperature(0.0f);
    *request.mutable_target() = target;
    request.set_max_tokens(kMaxTokens);
    request.set_ignore_eos(true);
    return request;
  }

  // Prefills `prompt` on `node` into a fresh decode reservation, decodes, returns the tokens.
  std::vector<int32_t> Disaggregated(Node* node, const std::vector<int32_t>& prompt,
                                     v1::PrefillResponse* response, int pool_prefix_blocks = 0) {
    Engine::RequestId reservation = 0;
    v1::KvTarget target = Reserve(static_cast<int64_t>(prompt.size()) + 1, &reservation);
    v1::PrefillRequest request = Request(prompt, target);
    request.set_pool_prefix_blocks(pool_prefix_blocks);
    absl::Status status = node->service->RunPrefill(request, response);
    EXPECT_TRUE(status.ok()) << status;
    if (!status.ok()) {
      decode_->engine->Release(reservation);
      return {};
    }
    return Decode(reservation, prompt, response->first_token().token());
  }

  std::vector<int32_t> Decode(Engine::RequestId reservation, const std::vector<int32_t>& prompt,
                              int32_t first) {
    RequestRun run;
    auto id = decode_->engine->SubmitPrefilled(reservation, Greedy(prompt), first, run.OnToken(),
                                               run.OnFinish());
    EXPECT_TRUE(id.ok()) << id.status();
    if (!id.ok()) return {};
    std::vector<int32_t> tokens = run.Wait();
    tokens.insert(tokens.begin(), first);
    return tokens;
  }

  // The engine drops a finished request's blocks right after its finish callback returns, so
  // wait (briefly) for that before checking.
  static void ExpectNoBlocksHeld(Engine* engine) {
    std::vector<int> refs;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (true) {
      refs = engine->BlockRefCountsForTesting();
      bool any = false;
      for (int r : refs) any = any || r != 0;
      if (!any || std::chrono::steady_clock::now() >= until) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    for (size_t i = 0; i < refs.size(); ++i) EXPECT_EQ(refs[i], 0) << "block " << i;
  }

  std::unique_ptr<engine::LoadedModel> model_;
  std::unique_ptr<kvstore::server::MasterServer> master_;
  std::unique_ptr<kvstore::server::StorageServer> storage_;
  std::unique_ptr<Node> decode_;
  std::vector<std::unique_ptr<Node>> nodes_;
  int colocated_ = 0;
  int next_request_ = 0;
};

TEST_P(PrefillServiceTest, DecodeAfterPrefillMatchesColocated) {
  const std::vector<int32_t> prompt = Prompt(37, 1);
  const std::vector<int32_t> want = Colocated(prompt);
  ASSERT_EQ(want.size(), static_cast<size_t>(kMaxTokens));
  Node* node = Prefiller(/*with_pool=*/false);
  ASSERT_NE(node, nullptr);
  v1::PrefillResponse response;
  EXPECT_EQ(Disaggregated(node, prompt, &response), want);
  EXPECT_EQ(response.prompt_tokens(), 37);
  EXPECT_EQ(response.cached_tokens(), 0);
  EXPECT_EQ(response.pool_tokens(), 0);
  EXPECT_FALSE(response.end_of_generation());
  EXPECT_GE(response.overlap_fraction(), 0.0);
  EXPECT_LE(response.overlap_fraction(), 1.0);
  EXPECT_GT(node->service->metrics().kv_transfer_bytes->Value(), 0.0);

  // The check can fail: decoding over a reservation nobody wrote gives other tokens.
  Engine::RequestId empty = 0;
  Reserve(static_cast<int64_t>(prompt.size()) + 1, &empty);
  EXPECT_NE(Decode(empty, prompt, want[0]), want);
  ExpectNoBlocksHeld(node->engine.get());
}

TEST_P(PrefillServiceTest, LocalPrefixHitIsCopiedToTheTarget) {
  const std::vector<int32_t> prompt = Prompt(29, 2);
  const std::vector<int32_t> want = Colocated(prompt);
  Node* node = Prefiller(/*with_pool=*/false);
  ASSERT_NE(node, nullptr);
  v1::PrefillResponse first, second;
  EXPECT_EQ(Disaggregated(node, prompt, &first), want);
  // Same prompt again: the node's own prefix cache serves all but the last block, which the
  // engine never computes again: those blocks must reach the new reservation as copies.
  EXPECT_EQ(Disaggregated(node, prompt, &second), want);
  EXPECT_EQ(second.cached_tokens(), 28);
  EXPECT_EQ(second.pool_tokens(), 0);
  // A longer prompt sharing the prefix: cached head, computed tail.
  std::vector<int32_t> longer = prompt;
  for (int i = 0; i < 11; ++i) longer.push_back(40 + i);
  v1::PrefillResponse third;
  EXPECT_EQ(Disaggregated(node, longer, &third), Colocated(longer));
  EXPECT_EQ(third.cached_tokens(), 28);
  ExpectNoBlocksHeld(node->engine.get());
}

TEST_P(PrefillServiceTest, FreshNodeFetchesThePrefixFromThePool) {
  StartStorage();
  const std::vector<int32_t> prompt = Prompt(41, 3);
  const std::vector<int32_t> want = Colocated(prompt);
  Node* a = Prefiller();
  ASSERT_NE(a, nullptr);
  v1::PrefillResponse first;
  EXPECT_EQ(Disaggregated(a, prompt, &first), want);
  ASSERT_TRUE(a->service->WaitIdle(std::chrono::seconds(30)));
  EXPECT_EQ(a->service->metrics().pool_put_blocks->Value(), 10.0);  // 41 / 4 full blocks

  Node* b = Prefiller();
  ASSERT_NE(b, nullptr);
  v1::PrefillResponse second;
  EXPECT_EQ(Disaggregated(b, prompt, &second, /*pool_prefix_blocks=*/10), want);
  EXPECT_EQ(second.pool_tokens(), 40);
  EXPECT_EQ(second.cached_tokens(), 40);
  EXPECT_EQ(b->service->metrics().pool_fetched_tokens->Value(), 40.0);
  EXPECT_EQ(b->pool->stats().checksum_mismatches, 0u);
  ASSERT_TRUE(b->service->WaitIdle(std::chrono::seconds(30)));
  EXPECT_EQ(b->service->metrics().pool_put_blocks->Value(), 0.0);  // nothing new to publish
  ExpectNoBlocksHeld(a->engine.get());
  ExpectNoBlocksHeld(b->engine.get());
}

TEST_P(PrefillServiceTest, CorruptPoolBlocksAreRecomputedNotUsed) {
  StartStorage();
  const std::vector<int32_t> prompt = Prompt(33, 4);
  const std::vector<int32_t> want = Colocated(prompt);
  Node* a = Prefiller();
  ASSERT_NE(a, nullptr);
  v1::PrefillResponse first;
  EXPECT_EQ(Disaggregated(a, prompt, &first), want);
  ASSERT_TRUE(a->service->WaitIdle(std::chrono::seconds(30)));
  ASSERT_GT(a->service->metrics().pool_put_blocks->Value(), 0.0);

  // Overwrite the storage node's whole DRAM segment behind the master's back.
  std::vector<std::byte> garbage(8 << 20, std::byte{0x3c});
  auto handle = a->transfer->OpenSegment("pool0/dram");
  ASSERT_TRUE(handle.ok()) << handle.status();
  kvstore::BatchId batch = a->transfer->AllocateBatch(1);
  kvstore::TransferRequest write{kvstore::TransferOp::kWrite, garbage.data(), *handle, 0,
                                 garbage.size()};
  ASSERT_TRUE(a->transfer->SubmitTransfer(batch, {&write, 1}).ok());
  ASSERT_TRUE(a->transfer->Wait(batch, std::chrono::seconds(10)).ok());
  ASSERT_TRUE(a->transfer->FreeBatch(batch).ok());

  Node* b = Prefiller();
  ASSERT_NE(b, nullptr);
  v1::PrefillResponse second;
  EXPECT_EQ(Disaggregated(b, prompt, &second, /*pool_prefix_blocks=*/8), want);
  EXPECT_EQ(second.pool_tokens(), 0);
  EXPECT_EQ(second.cached_tokens(), 0);
  EXPECT_GT(b->pool->stats().checksum_mismatches, 0u);
  ExpectNoBlocksHeld(b->engine.get());
}

TEST_P(PrefillServiceTest, UnavailablePoolMeansCompute) {
  // No storage node: the pool holds nothing although the Conductor said it did.
  const std::vector<int32_t> prompt = Prompt(21, 5);
  Node* node = Prefiller();
  ASSERT_NE(node, nullptr);
  v1::PrefillResponse response;
  EXPECT_EQ(Disaggregated(node, prompt, &response, /*pool_prefix_blocks=*/5), Colocated(prompt));
  EXPECT_EQ(response.pool_tokens(), 0);
  ExpectNoBlocksHeld(node->engine.get());
}

TEST_P(PrefillServiceTest, UnknownSegmentIsUnavailableAndLeaksNothing) {
  Node* node = Prefiller(/*with_pool=*/false);
  ASSERT_NE(node, nullptr);
  const std::vector<int32_t> prompt = Prompt(17, 6);
  Engine::RequestId reservation = 0;
  v1::KvTarget target = Reserve(18, &reservation);
  target.set_segment("nobody/kv");
  v1::PrefillResponse response;
  absl::Status status = node->service->RunPrefill(Request(prompt, target), &response);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_NE(status.message().find("nobody/kv"), absl::string_view::npos) << status;
  decode_->engine->Release(reservation);
  ExpectNoBlocksHeld(node->engine.get());
  ExpectNoBlocksHeld(decode_->engine.get());
}

TEST_P(PrefillServiceTest, WriteBeyondTheSegmentFailsTheRequestAndLeaksNothing) {
  Node* node = Prefiller(/*with_pool=*/false);
  ASSERT_NE(node, nullptr);
  const std::vector<int32_t> prompt = Prompt(30, 7);
  Engine::RequestId reservation = 0;
  v1::KvTarget target = Reserve(31, &reservation);
  target.set_block_offsets(5, uint64_t{1} << 40);  // far outside decode/kv
  v1::PrefillResponse response;
  absl::Status status = node->service->RunPrefill(Request(prompt, target), &response);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_NE(status.message().find("decode/kv"), absl::string_view::npos) << status;
  decode_->engine->Release(reservation);
  ExpectNoBlocksHeld(node->engine.get());
  // The node still serves the next request correctly.
  v1::PrefillResponse next;
  EXPECT_EQ(Disaggregated(node, prompt, &next), Colocated(prompt));
}

TEST_P(PrefillServiceTest, BadRequestsAreRejectedBeforeAnyWork) {
  Node* node = Prefiller(/*with_pool=*/false);
  ASSERT_NE(node, nullptr);
  const std::vector<int32_t> prompt = Prompt(12, 8);
  Engine::RequestId reservation = 0;
  const v1::KvTarget target = Reserve(13, &reservation);
  v1::PrefillResponse response;

  v1::PrefillRequest wrong_size = Request(prompt, target);
  wrong_size.mutable_target()->set_block_bytes(target.block_bytes() * 2);
  EXPECT_EQ(node->service->RunPrefill(wrong_size, &response).code(),
            absl::StatusCode::kInvalidArgument);

  v1::PrefillRequest too_few = Request(prompt, target);
  too_few.mutable_target()->mutable_block_offsets()->RemoveLast();
  too_few.mutable_target()->mutable_block_offsets()->RemoveLast();  // 2 blocks for 12 tokens
  EXPECT_EQ(node->service->RunPrefill(too_few, &response).code(),
            absl::StatusCode::kInvalidArgument);

  v1::PrefillRequest empty = Request({}, target);
  EXPECT_EQ(node->service->RunPrefill(empty, &response).code(), absl::StatusCode::kInvalidArgument);

  v1::PrefillRequest late = Request(prompt, target);
  late.set_deadline_unix_ms(1000);  // 1970
  EXPECT_EQ(node->service->RunPrefill(late, &response).code(), absl::StatusCode::kDeadlineExceeded);

  node->service->SetDraining();
  EXPECT_EQ(node->service->RunPrefill(Request(prompt, target), &response).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_TRUE(node->service->WaitIdle(std::chrono::seconds(1)));
  decode_->engine->Release(reservation);
  ExpectNoBlocksHeld(node->engine.get());
}

TEST_P(PrefillServiceTest, MaxTokensOneEndsTheGeneration) {
  Node* node = Prefiller(/*with_pool=*/false);
  ASSERT_NE(node, nullptr);
  const std::vector<int32_t> prompt = Prompt(9, 9);
  Engine::RequestId reservation = 0;
  v1::PrefillRequest request = Request(prompt, Reserve(10, &reservation));
  request.set_max_tokens(1);
  v1::PrefillResponse response;
  ASSERT_TRUE(node->service->RunPrefill(request, &response).ok());
  EXPECT_TRUE(response.end_of_generation());
  EXPECT_EQ(response.first_token().token(), Colocated(prompt)[0]);
  decode_->engine->Release(reservation);
}

INSTANTIATE_TEST_SUITE_P(Transports, PrefillServiceTest, ::testing::Values("tcp", "shm"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace crescent::prefill_node
