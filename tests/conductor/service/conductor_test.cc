// The Conductor process object end to end, in one process: the Registry over real gRPC, the
// OpenAI API over real HTTP, fake prefill/decode nodes (fake_nodes.h) behind it, a tiny model.
#include "conductor/service/conductor.h"

#include <grpcpp/grpcpp.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/conductor/service/fake_nodes.h"
#include "tests/testing/tiny_model.h"

namespace crescent::conductor::service {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using fakes::FakeDecode;
using fakes::FakePrefill;
using fakes::FakeServer;
using ::testing::HasSubstr;

struct Response {
  int status = 0;
  std::string retry_after;
  std::string body;
};

Response Call(uint16_t port, http::verb method, const std::string& target,
              const std::string& body = "") {
  net::io_context ioc;
  tcp::socket socket(ioc);
  socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  http::request<http::string_body> req(method, target, 11);
  req.set(http::field::host, "localhost");
  if (method == http::verb::post) {
    req.set(http::field::content_type, "application/json");
    req.body() = body;
  }
  req.prepare_payload();
  http::write(socket, req);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(16 << 20);
  http::read(socket, buffer, parser);
  Response r;
  r.status = static_cast<int>(parser.get().result_int());
  auto it = parser.get().find(http::field::retry_after);
  if (it != parser.get().end()) r.retry_after = std::string(it->value());
  r.body = parser.get().body();
  return r;
}

class ConductorTest : public ::testing::Test {
 protected:
  void SetUp() override { model_path_ = crescent::testing::WriteTinyModel(); }

  void StartConductor(ConductorOptions o = {}) {
    o.model_path = model_path_;
    o.served_model_name = "tiny";
    o.port = 0;
    o.grpc_listen = "127.0.0.1:0";
    o.kv_master = "";
    auto c = Conductor::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    conductor_ = std::move(*c);
    stub_ = cluster::v1::Registry::NewStub(
        grpc::CreateChannel(conductor_->grpc_address(), grpc::InsecureChannelCredentials()));
  }

  cluster::v1::NodeInfo Info(const std::string& id, cluster::v1::Role role,
                             const std::string& endpoint) {
    cluster::v1::NodeInfo info;
    info.set_node_id(id);
    info.set_role(role);
    info.set_grpc_endpoint(endpoint);
    info.set_model_id(conductor_->model().id);
    info.set_model_fingerprint(conductor_->model().fingerprint);
    info.set_block_tokens(16);
    info.set_total_blocks(64);
    return info;
  }

  grpc::Status Register(const cluster::v1::NodeInfo& info) {
    cluster::v1::RegisterRequest req;
    *req.mutable_node() = info;
    cluster::v1::RegisterResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    return stub_->Register(&ctx, req, &resp);
  }

  std::string model_path_;
  std::unique_ptr<Conductor> conductor_;
  std::unique_ptr<cluster::v1::Registry::Stub> stub_;
};

TEST_F(ConductorTest, RegistryOverGrpcAndACompletionThroughTheNodes) {
  StartConductor();
  const uint16_t port = conductor_->http_port();
  EXPECT_EQ(Call(port, http::verb::get, "/ready").status, 503);

  // A node of another model is refused, naming both fingerprints.
  FakePrefill prefill;
  FakeDecode decode;
  FakeServer ps(&prefill), ds(&decode);
  cluster::v1::NodeInfo wrong = Info("p1", cluster::v1::ROLE_PREFILL, ps.endpoint);
  wrong.set_model_fingerprint(conductor_->model().fingerprint ^ 1);
  grpc::Status st = Register(wrong);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(st.error_message(), HasSubstr("fingerprint"));

  // An unknown node's beat asks it to register (how a restarted Conductor rebuilds).
  cluster::v1::HeartbeatRequest beat;
  beat.set_node_id("p1");
  cluster::v1::HeartbeatResponse beat_resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->Heartbeat(&ctx, beat, &beat_resp).ok());
  EXPECT_TRUE(beat_resp.reregister());

  ASSERT_TRUE(Register(Info("p1", cluster::v1::ROLE_PREFILL, ps.endpoint)).ok());
  EXPECT_EQ(Call(port, http::verb::get, "/ready").status, 503);  // no decode node yet
  ASSERT_TRUE(Register(Info("d1", cluster::v1::ROLE_DECODE, ds.endpoint)).ok());
  EXPECT_EQ(Call(port, http::verb::get, "/ready").status, 200);

  Response r = Call(port, http::verb::post, "/v1/completions",
                    R"({"model":"tiny","prompt":"hello hello","max_tokens":4,"temperature":0})");
  ASSERT_EQ(r.status, 200) << r.body;
  json body = json::parse(r.body);
  EXPECT_EQ(body["usage"]["completion_tokens"], 4);
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
  {
    absl::MutexLock lock(&prefill.mu);
    ASSERT_EQ(prefill.requests.size(), 1u);
    EXPECT_EQ(body["usage"]["prompt_tokens"], prefill.requests[0].prompt_size());
  }

  const std::string metrics = Call(port, http::verb::get, "/metrics").body;
  EXPECT_THAT(metrics, HasSubstr("crescent:cluster_nodes{role=\"prefill\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("crescent:phase_seconds_count{phase=\"e2e\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("crescent:phase_seconds_count{phase=\"decode\"} 1"));
  conductor_->Stop();
}

TEST_F(ConductorTest, OverloadAnswers429WithRetryAfter) {
  ConductorOptions o;
  o.generator.scheduler.slo.ttft_s = 1e-9;
  StartConductor(o);
  FakePrefill prefill;
  FakeDecode decode;
  FakeServer ps(&prefill), ds(&decode);
  ASSERT_TRUE(Register(Info("p1", cluster::v1::ROLE_PREFILL, ps.endpoint)).ok());
  ASSERT_TRUE(Register(Info("d1", cluster::v1::ROLE_DECODE, ds.endpoint)).ok());
  Response r = Call(conductor_->http_port(), http::verb::post, "/v1/completions",
                    R"({"model":"tiny","prompt":"hello","max_tokens":4})");
  EXPECT_EQ(r.status, 429) << r.body;
  EXPECT_FALSE(r.retry_after.empty());
  EXPECT_THAT(r.body, HasSubstr("ttft_slo"));
  EXPECT_EQ(prefill.calls.load(), 0);
}

TEST_F(ConductorTest, DecodeNodeFailureMidStreamEndsWithAnErrorEvent) {
  StartConductor();
  FakePrefill prefill;
  FakeDecode decode;
  decode.fail_after = 1;
  FakeServer ps(&prefill), ds(&decode);
  ASSERT_TRUE(Register(Info("p1", cluster::v1::ROLE_PREFILL, ps.endpoint)).ok());
  ASSERT_TRUE(Register(Info("d1", cluster::v1::ROLE_DECODE, ds.endpoint)).ok());
  Response r = Call(conductor_->http_port(), http::verb::post, "/v1/completions",
                    R"({"model":"tiny","prompt":"hello","max_tokens":8,"stream":true})");
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.body, HasSubstr("decode node d1 failed"));
  EXPECT_THAT(r.body, HasSubstr("error"));
}

}  // namespace
}  // namespace crescent::conductor::service
