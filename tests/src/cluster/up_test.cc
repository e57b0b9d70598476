#include "src/cluster/up.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace crescent::cluster {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ParseReadyLineTest, ParsesTheAgreedForm) {
  auto r = ParseReadyLine("crescent: prefill prefill-0 ready grpc=127.0.0.1:5000 http=127.0.0.1:9");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->role, "prefill");
  EXPECT_EQ(r->id, "prefill-0");
  EXPECT_EQ(r->grpc, "127.0.0.1:5000");
  EXPECT_EQ(r->http, "127.0.0.1:9");
  auto c = ParseReadyLine("crescent: conductor - ready grpc=127.0.0.1:50060 http=-");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->id, "-");
  EXPECT_EQ(c->http, "");
}

TEST(ParseReadyLineTest, RejectsOtherLines) {
  for (const char* line : {"", "crescent: conductor", "listening on 127.0.0.1:1",
                           "crescent: decode decode-0 starting grpc=a:1 http=-"}) {
    auto r = ParseReadyLine(line);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << line;
  }
}

TEST(DefaultThreadsPerNodeTest, SplitsTheCpusAndNeverGivesZero) {
  EXPECT_EQ(DefaultThreadsPerNode(2, 2), 1);
  EXPECT_EQ(DefaultThreadsPerNode(4, 2), 1);
  EXPECT_EQ(DefaultThreadsPerNode(2, 16), 8);
  EXPECT_EQ(DefaultThreadsPerNode(3, 16), 5);
  EXPECT_EQ(DefaultThreadsPerNode(1, 0), 1);
}

TEST(MetricValueTest, FindsExactSeries) {
  const std::string text =
      "# HELP crescent:cluster_nodes Live nodes\n"
      "# TYPE crescent:cluster_nodes gauge\n"
      "crescent:cluster_nodes_total 99\n"
      "crescent:cluster_nodes{role=\"prefill\"} 2\n"
      "crescent:cluster_nodes{role=\"decode\"} 1 1700000000\n"
      "crescent:x 1.5e3\n";
  EXPECT_EQ(MetricValue(text, "crescent:cluster_nodes{role=\"prefill\"}"), 2.0);
  EXPECT_EQ(MetricValue(text, "crescent:cluster_nodes{role=\"decode\"}"), 1.0);
  EXPECT_EQ(MetricValue(text, "crescent:x"), 1500.0);
  EXPECT_FALSE(MetricValue(text, "crescent:cluster_nodes").has_value());
  EXPECT_FALSE(MetricValue(text, "crescent:missing").has_value());
}

TEST(ArgsTest, EveryRoleGetsTheAgreedFlags) {
  UpOptions o;
  o.model = "/m.gguf";
  o.prefill = 2;
  o.decode = 1;
  o.api_key = "k";
  o.slo_ttft_ms = 2000;
  o.prefill_policy = "round-robin";
  o.kv_cache_mb = 64;
  ClusterPorts p;
  p.master = 1;
  p.conductor_grpc = 2;
  p.http = 3;
  p.prefill_grpc = {10, 11};
  p.prefill_metrics = {20, 21};
  p.decode_grpc = {30};
  p.decode_metrics = {40};
  EXPECT_THAT(MasterArgs(o, p), ElementsAre("kvstore", "master", "--listen", "127.0.0.1:1"));
  const auto c = ConductorArgs(o, p);
  const std::string joined_c = testing::PrintToString(c);
  EXPECT_EQ(c[0], "conductor");
  for (const char* want :
       {"\"--port\", \"3\"", "\"--grpc-listen\", \"127.0.0.1:2\"",
        "\"--kv-master\", \"127.0.0.1:1\"", "\"--api-key\", \"k\"", "\"--slo-ttft-ms\", \"2000\"",
        "\"--prefill-policy\", \"round-robin\"", "\"--model\", \"/m.gguf\""}) {
    EXPECT_THAT(joined_c, HasSubstr(want));
  }
  EXPECT_THAT(joined_c, ::testing::Not(HasSubstr("--slo-tbt-ms")));
  const auto n = NodeArgs(o, p, "prefill", 1, 3);
  const std::string joined_n = testing::PrintToString(n);
  EXPECT_EQ(n[0], "prefill-node");
  for (const char* want :
       {"\"--node-id\", \"prefill-1\"", "\"--conductor\", \"127.0.0.1:2\"",
        "\"--grpc-listen\", \"127.0.0.1:11\"", "\"--metrics-port\", \"21\"", "\"--threads\", \"3\"",
        "\"--kv-cache-mb\", \"64\"", "\"--kv-master\", \"127.0.0.1:1\""}) {
    EXPECT_THAT(joined_n, HasSubstr(want));
  }
  EXPECT_EQ(NodeArgs(o, p, "decode", 0, 1)[0], "decode-node");
  // The default backend adds no flag (nodes default to cpu); another one is passed on.
  EXPECT_THAT(joined_n, ::testing::Not(HasSubstr("--backend")));
  o.backend = "cuda";
  EXPECT_THAT(testing::PrintToString(NodeArgs(o, p, "decode", 0, 1)),
              HasSubstr("\"--backend\", \"cuda\""));
}

TEST(PickFreePortTest, GivesABindablePort) {
  auto port = PickFreePort();
  ASSERT_TRUE(port.ok()) << port.status();
  EXPECT_GT(*port, 0);
  EXPECT_LT(*port, 65536);
}

TEST(PickFreePortTest, PortsDifferAndLieOutsideTheEphemeralRange) {
  const PortRange ephemeral = EphemeralPortRange();
  ASSERT_LE(ephemeral.first, ephemeral.last);
  // Only where the range leaves room (the default [32768, 60999] leaves 20000-32767 and above
  // 60999); else the kernel picks.
  const bool room = ephemeral.first > 20000 || ephemeral.last < 65535;
  auto ports = PickFreePorts(64);
  ASSERT_TRUE(ports.ok()) << ports.status();
  ASSERT_EQ(ports->size(), 64u);
  std::set<int> distinct(ports->begin(), ports->end());
  EXPECT_EQ(distinct.size(), ports->size());
  for (int p : *ports) {
    EXPECT_GT(p, 0);
    EXPECT_LT(p, 65536);
    if (room) {
      EXPECT_TRUE(p < ephemeral.first || p > ephemeral.last)
          << p << " is in the ephemeral range [" << ephemeral.first << ", " << ephemeral.last
          << "]";
    }
  }
  // Closed again: each can be listened on now.
  for (int p : *ports) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(p));
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << p;
    close(fd);
  }
}

// Serves one connection on a loopback port with a canned answer; returns the port.
class CannedServer {
 public:
  explicit CannedServer(std::string answer) : answer_(std::move(answer)) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(fd_, 1), 0);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      const int c = accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string got;
      char buf[4096];
      while (got.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = recv(c, buf, sizeof(buf), 0);
        if (n <= 0) break;
        got.append(buf, static_cast<size_t>(n));
      }
      request_ = got;
      send(c, answer_.data(), answer_.size(), MSG_NOSIGNAL);
      close(c);
    });
  }
  ~CannedServer() {
    thread_.join();
    close(fd_);
  }
  int port() const { return port_; }

 private:
  std::string answer_;
  int fd_ = -1;
  int port_ = 0;
  std::string request_;
  std::thread thread_;
};

TEST(HttpGetTest, ReadsAContentLengthBodyAndSendsTheKey) {
  auto server = std::make_unique<CannedServer>(
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
  auto body = HttpGet(server->port(), "/metrics", "secret", absl::Seconds(5));
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(*body, "hello");
  server.reset();  // Joins.
}

TEST(HttpGetTest, DecodesChunkedBodies) {
  CannedServer server(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n");
  auto body = HttpGet(server.port(), "/x", "", absl::Seconds(5));
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(*body, "abcdefg");
}

TEST(HttpGetTest, ReportsNon200AndRefusedConnections) {
  {
    CannedServer server("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
    auto body = HttpGet(server.port(), "/ready", "", absl::Seconds(5));
    EXPECT_EQ(body.status().code(), absl::StatusCode::kInternal);
    EXPECT_THAT(body.status().message(), HasSubstr("503"));
  }
  auto port = PickFreePort();
  ASSERT_TRUE(port.ok());
  auto refused = HttpGet(*port, "/", "", absl::Seconds(1));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
}

// LocalCluster end to end with fake_crescent.py in place of the real roles.
class LocalClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* src = std::getenv("CRESCENT_SOURCE_DIR");
    fake_ = std::string(src != nullptr ? src : ".") + "/tests/src/cluster/fake_crescent.py";
    if (!std::filesystem::exists(fake_) || access("/usr/bin/env", X_OK) != 0) {
      GTEST_SKIP() << "no " << fake_;
    }
    dir_ = ::testing::TempDir() + "/fake-cluster-" + std::to_string(getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ + "/nodes");
    setenv("FAKE_CLUSTER_DIR", (dir_ + "/nodes").c_str(), 1);
  }
  void TearDown() override {
    unsetenv("FAKE_CLUSTER_DIR");
    unsetenv("FAKE_DIE_NODE");
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  UpOptions Options() {
    UpOptions o;
    o.model = "/fake.gguf";
    o.binary = fake_;
    o.port = 0;
    o.prefill = 2;
    o.decode = 1;
    o.ready_timeout = absl::Seconds(30);
    o.stop_timeout = absl::Seconds(5);
    o.forward_output = false;
    o.ports_file = dir_ + "/ports.json";
    return o;
  }
  std::string fake_;
  std::string dir_;
};

TEST_F(LocalClusterTest, StartsEveryRoleWaitsForRegistrationAndWritesThePortsFile) {
  auto cluster = LocalCluster::Start(Options());
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const ClusterInfo& info = (*cluster)->info();
  EXPECT_EQ(info.model_id, "fake-model");
  EXPECT_EQ(info.url, "http://127.0.0.1:" + std::to_string(info.http_port) + "/v1");
  std::vector<std::string> names;
  for (const auto& p : info.processes) {
    names.push_back(p.name);
    EXPECT_GT(p.pid, 0);
    EXPECT_FALSE(p.grpc.empty()) << p.name;
  }
  EXPECT_THAT(names, ElementsAre("kv-master", "conductor", "prefill-0", "prefill-1", "decode-0"));
  EXPECT_FALSE(info.processes[2].http.empty());
  // All three nodes registered before Start returned.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_ + "/nodes"),
                          std::filesystem::directory_iterator{}),
            3);
  std::ifstream in(dir_ + "/ports.json");
  nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["http_port"], info.http_port);
  ASSERT_EQ(j["processes"].size(), 5u);
  EXPECT_EQ(j["processes"][3]["name"], "prefill-1");
  EXPECT_EQ(j["processes"][3]["http"], info.processes[3].http);

  // A node that dies is reported, and is not essential.
  const pid_t victim = info.processes[4].pid;
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  for (int i = 0; i < 100 && (*cluster)->UnexpectedExits().empty(); ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_EQ((*cluster)->UnexpectedExits().size(), 1u);
  EXPECT_EQ((*cluster)->UnexpectedExits()[0].name, "decode-0");
  EXPECT_FALSE((*cluster)->EssentialExit().has_value());
  // The conductor is.
  ASSERT_EQ(kill(info.processes[1].pid, SIGKILL), 0);
  for (int i = 0; i < 100 && !(*cluster)->EssentialExit(); ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_TRUE((*cluster)->EssentialExit().has_value());
  EXPECT_EQ((*cluster)->EssentialExit()->name, "conductor");

  (*cluster)->Stop();
  for (const auto& p : info.processes) {
    EXPECT_FALSE((*cluster)->supervisor()->Running(p.name)) << p.name;
  }
}

TEST_F(LocalClusterTest, ANodeDyingDuringStartUpFailsStartAndStopsTheRest) {
  setenv("FAKE_DIE_NODE", "prefill-1", 1);
  auto cluster = LocalCluster::Start(Options());
  ASSERT_FALSE(cluster.ok());
  EXPECT_EQ(cluster.status().code(), absl::StatusCode::kAborted) << cluster.status();
  EXPECT_THAT(cluster.status().message(), HasSubstr("prefill-1 exited with status 5"));
}

TEST_F(LocalClusterTest, RejectsBadOptions) {
  UpOptions o = Options();
  o.prefill = 0;
  EXPECT_EQ(LocalCluster::Start(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Options();
  o.model = "";
  EXPECT_EQ(LocalCluster::Start(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Options();
  o.port = 70000;
  EXPECT_EQ(LocalCluster::Start(o).status().code(), absl::StatusCode::kInvalidArgument);
  // The same bounds as each node's own --kv-cache-mb, checked before any node starts.
  for (int64_t mb : {int64_t{0}, int64_t{1} << 24 | 1}) {
    o = Options();
    o.kv_cache_mb = mb;
    const absl::Status s = LocalCluster::Start(o).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << mb;
    EXPECT_THAT(s.message(), HasSubstr("--kv-cache-mb must be in [1, 16777216]")) << s;
  }
}

}  // namespace
}  // namespace crescent::cluster
