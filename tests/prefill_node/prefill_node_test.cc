// PrefillNode (the process body) in-process, against a fake Conductor registry, an in-process KV
// master and a decode engine: it registers with a measured profile, serves Prefill over real
// gRPC, heartbeats its load and the prefixes it holds, serves /metrics, and drains.
#include "prefill_node/prefill_node.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kvstore/client/grpc_segment_directory.h"
#include "kvstore/server/master_server.h"
#include "kvstore/transfer/transfer_engine.h"
#include "proto/cluster.grpc.pb.h"
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

constexpr int kBlockTokens = 4;

class FakeRegistry final : public v1::Registry::Service {
 public:
  grpc::Status Register(grpc::ServerContext*, const v1::RegisterRequest* request,
                        v1::RegisterResponse* response) override {
    std::lock_guard<std::mutex> lock(mu_);
    nodes_.push_back(request->node());
    response->set_heartbeat_interval_ms(50);
    cv_.notify_all();
    return grpc::Status::OK;
  }
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse*) override {
    std::lock_guard<std::mutex> lock(mu_);
    loads_.push_back(request->load());
    cv_.notify_all();
    return grpc::Status::OK;
  }
  // Waits (up to 30 s) until `pred` holds over the registrations and heartbeats seen.
  bool WaitFor(const std::function<bool(const std::vector<v1::NodeInfo>&,
                                        const std::vector<v1::NodeLoad>&)>& pred) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(30), [&] { return pred(nodes_, loads_); });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<v1::NodeInfo> nodes_;
  std::vector<v1::NodeLoad> loads_;
};

// GET `path` from 127.0.0.1:port; returns the whole response (headers and body).
std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  const std::string request =
      "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return "";
  }
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

TEST(PrefillNodeTest, RegistersServesHeartbeatsAndDrains) {
  testing::TinyModelOptions mo;
  mo.n_layers = 3;
  mo.tied_embeddings = false;
  const std::string model_path = testing::WriteTinyModel(mo);
  auto model = engine::LoadModel(model_path);
  ASSERT_TRUE(model.ok()) << model.status();

  kvstore::server::MasterServerOptions mso;
  mso.listen = "127.0.0.1:0";
  auto master = kvstore::server::MasterServer::Start(mso);
  ASSERT_TRUE(master.ok()) << master.status();

  FakeRegistry registry;
  grpc::ServerBuilder builder;
  int registry_port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &registry_port);
  builder.RegisterService(&registry);
  std::unique_ptr<grpc::Server> registry_server = builder.BuildAndStart();
  ASSERT_NE(registry_server, nullptr);

  // The decode side: an engine whose KV cache is segment "decode/kv".
  auto directory = kvstore::client::GrpcSegmentDirectory::Create((*master)->address());
  kvstore::TransferEngineOptions to;
  to.transports = {"tcp"};
  auto transfer = kvstore::TransferEngine::Create(to, directory.get());
  ASSERT_TRUE(transfer.ok()) << transfer.status();
  auto backend = engine::CpuBackend::Create((*model)->config, (*model)->weights, 1);
  ASSERT_TRUE(backend.ok()) << backend.status();
  engine::EngineOptions eo;
  eo.block_tokens = kBlockTokens;
  eo.num_blocks = 64;
  kvstore::TransferEngine* t = transfer->get();
  eo.kv_memory = [t](size_t bytes) { return t->AllocateSharedSegment("decode/kv", bytes); };
  auto decode = Engine::Create(model->get(), backend->get(), eo, RealClock::Get());
  ASSERT_TRUE(decode.ok()) << decode.status();

  PrefillNodeOptions po;
  po.model_path = model_path;
  po.node_id = "p0";
  po.conductor_address = "127.0.0.1:" + std::to_string(registry_port);
  po.kv_master_address = (*master)->address();
  po.threads = 1;
  po.kv_cache_bytes = 1 << 20;
  po.pool_dram_bytes = 4 << 20;
  po.block_tokens = kBlockTokens;
  po.max_step_tokens = 16;
  po.transport = "tcp";
  po.heartbeat_interval = std::chrono::milliseconds(50);
  auto node = PrefillNode::Start(po);
  ASSERT_TRUE(node.ok()) << node.status();
  EXPECT_EQ((*node)->ReadyLine(), "crescent: prefill p0 ready grpc=" + (*node)->grpc_endpoint() +
                                      " http=" + (*node)->metrics_endpoint());

  // Registration: the real endpoint and a measured profile.
  ASSERT_TRUE(registry.WaitFor([](const auto& nodes, const auto&) { return !nodes.empty(); }));
  v1::NodeInfo info;
  registry.WaitFor([&](const auto& nodes, const auto&) {
    info = nodes.front();
    return true;
  });
  EXPECT_EQ(info.node_id(), "p0");
  EXPECT_EQ(info.role(), v1::ROLE_PREFILL);
  EXPECT_EQ(info.grpc_endpoint(), (*node)->grpc_endpoint());
  EXPECT_NE(info.grpc_endpoint(), "127.0.0.1:0");
  EXPECT_EQ(info.model_fingerprint(), (*model)->fingerprint);
  EXPECT_EQ(info.block_tokens(), kBlockTokens);
  EXPECT_GT(info.total_blocks(), 0);
  ASSERT_EQ(info.profile().prefill_size(), 3);
  EXPECT_GT(info.profile().prefill(2).cached_tokens(), 0.0);
  for (const auto& p : info.profile().prefill()) EXPECT_GT(p.seconds(), 0.0);
  EXPECT_GT(info.profile().transfer_bytes_per_second(), 0.0);

  // A colocated run for the expected tokens.
  std::vector<int32_t> prompt;
  for (int i = 0; i < 23; ++i) prompt.push_back(40 + (i * 11) % 150);
  auto generate = [&](Engine::RequestId reservation, int32_t first) {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::vector<int32_t> tokens;
    engine::EngineRequest r;
    r.prompt = prompt;
    r.sampling.temperature = 0.0f;
    r.max_tokens = 8;
    r.ignore_eos = true;
    auto on_token = [&](const engine::SampleResult& s) {
      std::lock_guard<std::mutex> lock(mu);
      tokens.push_back(s.token);
      return true;
    };
    auto on_finish = [&](absl::Status, engine::FinishReason, const engine::RequestStats&,
                         std::span<const engine::KvCache::BlockId>) {
      std::lock_guard<std::mutex> lock(mu);
      done = true;
      cv.notify_all();
    };
    absl::StatusOr<Engine::RequestId> id =
        reservation == 0 ? (*decode)->Submit(r, on_token, on_finish)
                         : (*decode)->SubmitPrefilled(reservation, r, first, on_token, on_finish);
    EXPECT_TRUE(id.ok()) << id.status();
    std::unique_lock<std::mutex> lock(mu);
    EXPECT_TRUE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return done; }));
    if (reservation != 0) tokens.insert(tokens.begin(), first);
    return tokens;
  };
  const std::vector<int32_t> want = generate(0, 0);

  // Prefill over gRPC into a decode reservation, then decode.
  auto reservation = (*decode)->Reserve(static_cast<int64_t>(prompt.size()) + 1);
  ASSERT_TRUE(reservation.ok()) << reservation.status();
  v1::PrefillRequest request;
  request.set_request_id("req-1");
  for (int32_t x : prompt) request.add_prompt(x);
  request.mutable_sampling()->set_temperature(0.0f);
  request.set_max_tokens(8);
  request.set_ignore_eos(true);
  v1::KvTarget* target = request.mutable_target();
  const size_t block_bytes = (*decode)->cache()->config().BlockBytes();
  target->set_segment("decode/kv");
  target->set_block_bytes(block_bytes);
  for (auto b : reservation->blocks) target->add_block_offsets(b * block_bytes);
  auto stub = v1::PrefillNode::NewStub(
      grpc::CreateChannel((*node)->grpc_endpoint(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::PrefillResponse response;
  grpc::Status status = stub->Prefill(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.prompt_tokens(), 23);
  EXPECT_EQ(generate(reservation->id, response.first_token().token()), want);

  // Heartbeats report the prompt's 5 full blocks as cached here.
  const std::vector<uint64_t> hashes =
      engine::BlockHashes(engine::BlockHashSeed((*model)->fingerprint, 0), prompt, kBlockTokens);
  ASSERT_EQ(hashes.size(), 5u);
  EXPECT_TRUE(registry.WaitFor([&](const auto&, const auto& loads) {
    if (loads.empty()) return false;
    const v1::NodeLoad& last = loads.back();
    for (uint64_t h : hashes) {
      if (std::find(last.cached_added().begin(), last.cached_added().end(), h) ==
          last.cached_added().end()) {
        return false;
      }
    }
    return true;
  }));

  // Metrics over HTTP.
  const std::string endpoint = (*node)->metrics_endpoint();
  const int metrics_port = std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
  const std::string metrics = HttpGet(metrics_port, "/metrics");
  EXPECT_NE(metrics.find("crescent:prefill_requests_total{outcome=\"ok\"} 1"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("crescent:kv_transfer_overlap_ratio_count 1"), std::string::npos);

  // Drain: heartbeats say so, new work is refused, and the node stops.
  (*node)->service()->SetDraining();
  (*node)->agent()->SetDraining();
  EXPECT_TRUE(registry.WaitFor(
      [](const auto&, const auto& loads) { return !loads.empty() && loads.back().draining(); }));
  grpc::ClientContext context2;
  context2.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  status = stub->Prefill(&context2, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE((*node)->Drain(std::chrono::seconds(10)));
  node->reset();
  registry_server->Shutdown();
}

}  // namespace
}  // namespace crescent::prefill_node
