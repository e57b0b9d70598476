#include "src/cluster/node_agent.h"

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace crescent::cluster {
namespace {

// A Registry that records what nodes send; it can forget every node (as a restarted Conductor
// does) or refuse registration.
class RecordingRegistry final : public v1::Registry::Service {
 public:
  grpc::Status Register(grpc::ServerContext*, const v1::RegisterRequest* request,
                        v1::RegisterResponse* response) override {
    absl::MutexLock lock(&mu_);
    if (!refuse_.empty()) return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, refuse_);
    registrations_.push_back(request->node());
    known_ = true;
    response->set_heartbeat_interval_ms(20);
    return grpc::Status::OK;
  }
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override {
    absl::MutexLock lock(&mu_);
    if (!known_) {
      response->set_reregister(true);
      return grpc::Status::OK;
    }
    beats_.push_back(*request);
    return grpc::Status::OK;
  }

  void Forget() {
    absl::MutexLock lock(&mu_);
    known_ = false;
  }
  void Refuse(std::string why) {
    absl::MutexLock lock(&mu_);
    refuse_ = std::move(why);
  }
  size_t registrations() {
    absl::MutexLock lock(&mu_);
    return registrations_.size();
  }
  std::vector<v1::HeartbeatRequest> beats() {
    absl::MutexLock lock(&mu_);
    return beats_;
  }
  v1::NodeInfo last_registered() {
    absl::MutexLock lock(&mu_);
    return registrations_.back();
  }

 private:
  absl::Mutex mu_;
  bool known_ = false;
  std::string refuse_;
  std::vector<v1::NodeInfo> registrations_;
  std::vector<v1::HeartbeatRequest> beats_;
};

struct Server {
  explicit Server(RecordingRegistry* service, int port = 0) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:" + std::to_string(port),
                             grpc::InsecureServerCredentials(), &this->port);
    builder.RegisterService(service);
    server = builder.BuildAndStart();
  }
  ~Server() { server->Shutdown(std::chrono::system_clock::now()); }
  int port = 0;
  std::unique_ptr<grpc::Server> server;
};

NodeAgentOptions Options(int port) {
  NodeAgentOptions options;
  options.conductor_address = "127.0.0.1:" + std::to_string(port);
  options.node.set_node_id("decode-7");
  options.node.set_role(v1::ROLE_DECODE);
  options.node.set_grpc_endpoint("127.0.0.1:1234");
  options.node.set_total_blocks(99);
  options.heartbeat_interval = std::chrono::milliseconds(20);
  options.rpc_timeout = std::chrono::milliseconds(500);
  return options;
}

// Polls `done` for up to 10 s.
template <typename F>
bool Eventually(F done) {
  for (int i = 0; i < 1000; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

TEST(NodeAgentTest, RegistersAndReportsLoadUntilStopped) {
  RecordingRegistry registry;
  Server server(&registry);
  ASSERT_NE(server.port, 0);
  int64_t free_blocks = 40;
  auto agent = NodeAgent::Start(Options(server.port), [&] {
    v1::NodeLoad load;
    load.set_free_blocks(free_blocks);
    return load;
  });
  ASSERT_TRUE(agent.ok()) << agent.status();
  ASSERT_TRUE(Eventually([&] { return (*agent)->heartbeats() >= 3; }));
  EXPECT_TRUE((*agent)->connected());
  EXPECT_EQ(registry.registrations(), 1u);
  EXPECT_EQ(registry.last_registered().node_id(), "decode-7");
  EXPECT_EQ(registry.last_registered().total_blocks(), 99);
  std::vector<v1::HeartbeatRequest> beats = registry.beats();
  ASSERT_GE(beats.size(), 3u);
  EXPECT_EQ(beats[0].node_id(), "decode-7");
  EXPECT_EQ(beats[0].load().free_blocks(), 40);
  EXPECT_FALSE(beats[0].load().draining());
  for (size_t i = 1; i < beats.size(); ++i) EXPECT_GT(beats[i].sequence(), beats[i - 1].sequence());

  (*agent)->SetDraining();
  const size_t before = registry.beats().size();
  ASSERT_TRUE(Eventually([&] {
    std::vector<v1::HeartbeatRequest> b = registry.beats();
    return b.size() > before + 1 && b.back().load().draining();
  }));
  (*agent)->Stop();
  const size_t stopped = registry.beats().size();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(registry.beats().size(), stopped);
}

TEST(NodeAgentTest, RegistersAgainWhenTheConductorForgetsIt) {
  RecordingRegistry registry;
  Server server(&registry);
  auto agent = NodeAgent::Start(Options(server.port), [] { return v1::NodeLoad(); });
  ASSERT_TRUE(agent.ok());
  ASSERT_TRUE(Eventually([&] { return (*agent)->heartbeats() >= 1; }));
  registry.Forget();  // a restarted Conductor knows nothing
  ASSERT_TRUE(Eventually([&] { return registry.registrations() == 2; }));
  const uint64_t beats = (*agent)->heartbeats();
  ASSERT_TRUE(Eventually([&] { return (*agent)->heartbeats() > beats; }));
}

TEST(NodeAgentTest, WaitsForAConductorThatStartsLater) {
  // Pick a free port, then start nothing there yet.
  RecordingRegistry probe_registry;
  int port = 0;
  {
    Server probe(&probe_registry);
    port = probe.port;
  }
  auto agent = NodeAgent::Start(Options(port), [] { return v1::NodeLoad(); });
  ASSERT_TRUE(agent.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  EXPECT_FALSE((*agent)->connected());
  RecordingRegistry registry;
  Server server(&registry, port);
  ASSERT_EQ(server.port, port);
  ASSERT_TRUE(Eventually([&] { return (*agent)->heartbeats() >= 1; }));
  EXPECT_TRUE((*agent)->connected());
}

TEST(NodeAgentTest, RefusedRegistrationKeepsItUnregistered) {
  RecordingRegistry registry;
  registry.Refuse("model fingerprint 1 != 2");
  Server server(&registry);
  auto agent = NodeAgent::Start(Options(server.port), [] { return v1::NodeLoad(); });
  ASSERT_TRUE(agent.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  EXPECT_FALSE((*agent)->connected());
  EXPECT_EQ((*agent)->heartbeats(), 0u);
  EXPECT_TRUE(registry.beats().empty());
}

TEST(NodeAgentTest, BadOptions) {
  auto load = [] { return v1::NodeLoad(); };
  NodeAgentOptions options = Options(1);
  options.conductor_address.clear();
  EXPECT_EQ(NodeAgent::Start(options, load).status().code(), absl::StatusCode::kInvalidArgument);
  options = Options(1);
  options.node.set_role(v1::ROLE_UNSPECIFIED);
  EXPECT_EQ(NodeAgent::Start(options, load).status().code(), absl::StatusCode::kInvalidArgument);
  options = Options(1);
  EXPECT_EQ(NodeAgent::Start(options, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace crescent::cluster
