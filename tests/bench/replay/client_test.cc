// ReplayClient against the real HTTP front (src/server) over loopback, with a scripted
// CompletionService behind it.
#include "bench/replay/client.h"

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "src/server/http_server.h"
#include "tests/src/server/fake_completion_service.h"

namespace crescent::bench {
namespace {

using server::FakeCompletionService;
using ::testing::HasSubstr;

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(""); }

  void StartServer(const std::string& api_key) {
    server_.reset();
    server::HttpServerOptions options;
    options.api_key = api_key;
    auto s = server::HttpServer::Create(options, &service_, nullptr);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
  }

  ClientOptions Options() {
    ClientOptions o;
    o.endpoint = "http://127.0.0.1:" + std::to_string(server_->port());
    o.request_timeout_s = 20;
    return o;
  }

  static std::vector<ReplayItem> Items(int n, double spacing_s) {
    std::vector<ReplayItem> items;
    for (int i = 0; i < n; ++i) {
      ReplayItem item;
      item.send_at_s = spacing_s * i;
      item.tokens = {1000 + i, 2000, 3000};
      item.text = "ba be bi";
      item.max_tokens = 3;
      items.push_back(std::move(item));
    }
    return items;
  }

  std::vector<RequestRecord> Run(const ClientOptions& options,
                                 const std::vector<ReplayItem>& items) {
    auto client = ReplayClient::Create(options);
    EXPECT_TRUE(client.ok()) << client.status();
    if (!client.ok()) return {};
    int64_t last_done = -1;
    auto records = (*client)->Run(items, [&](int64_t done, int64_t total, int64_t) {
      EXPECT_EQ(total, static_cast<int64_t>(items.size()));
      last_done = done;
    });
    EXPECT_EQ(last_done, static_cast<int64_t>(items.size()));
    return records;
  }

  FakeCompletionService service_;
  std::unique_ptr<server::HttpServer> server_;
};

TEST_F(ClientTest, RecordsEveryStreamedRequest) {
  FakeCompletionService::Script script;
  script.pieces = {"a", "b", "c"};
  script.piece_delay = std::chrono::milliseconds(20);
  script.usage = {.prompt_tokens = 3, .completion_tokens = 3, .cached_tokens = 2};
  service_.set_script(script);
  const auto items = Items(12, 0.01);
  std::vector<RequestRecord> records = Run(Options(), items);
  ASSERT_EQ(records.size(), 12u);
  for (size_t i = 0; i < records.size(); ++i) {
    const RequestRecord& r = records[i];
    SCOPED_TRACE(i);
    EXPECT_EQ(r.outcome, Outcome::kOk) << r.error;
    EXPECT_EQ(r.http_status, 200);
    EXPECT_EQ(r.index, static_cast<int64_t>(i));
    EXPECT_DOUBLE_EQ(r.scheduled_s, 0.01 * i);
    EXPECT_GE(r.sent_s, r.scheduled_s);
    EXPECT_GE(r.first_token_s, r.sent_s);
    EXPECT_GE(r.end_s, r.first_token_s);
    EXPECT_TRUE(r.usage_reported);
    EXPECT_EQ(r.output_tokens, 3);
    EXPECT_EQ(r.cached_tokens, 2);
    EXPECT_EQ(r.prompt_tokens, 3);
    EXPECT_EQ(r.max_tokens, 3);
    // Three chunks with text, 20 ms apart on the server: two gaps.
    ASSERT_EQ(r.gaps_s.size(), 2u);
    for (double g : r.gaps_s) EXPECT_GT(g, 0.0);
  }
  const server::CompletionRequest last = service_.last_request();
  EXPECT_EQ(last.kind, server::RequestKind::kCompletion);
  ASSERT_EQ(last.prompts.size(), 1u);
  ASSERT_TRUE(last.prompts[0].tokens.has_value());
  EXPECT_EQ((*last.prompts[0].tokens)[1], 2000);
  EXPECT_TRUE(last.stream);
  EXPECT_TRUE(last.include_usage);
  EXPECT_EQ(last.max_tokens, 3);
  EXPECT_EQ(last.sampling.temperature, 0.0);
}

TEST_F(ClientTest, OpenLoopSendsWithoutWaitingForCompletions) {
  service_.set_paused(true);  // Nothing completes until every request has been started.
  const auto items = Items(30, 0.002);
  std::thread unpause([this] {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (service_.started() < 30 && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    service_.set_paused(false);
  });
  std::vector<RequestRecord> records = Run(Options(), items);
  unpause.join();
  EXPECT_EQ(service_.started(), 30);
  for (const RequestRecord& r : records) EXPECT_EQ(r.outcome, Outcome::kOk) << r.error;
}

TEST_F(ClientTest, ChatModeTimesDeltaContent) {
  ClientOptions o = Options();
  o.mode = PromptMode::kChat;
  o.model = "smollm2";
  std::vector<RequestRecord> records = Run(o, Items(2, 0));
  for (const RequestRecord& r : records) {
    EXPECT_EQ(r.outcome, Outcome::kOk) << r.error;
    EXPECT_GE(r.first_token_s, 0);
    EXPECT_EQ(r.gaps_s.size(), 2u);
  }
  EXPECT_EQ(service_.last_request().kind, server::RequestKind::kChat);
  EXPECT_EQ(service_.last_request().messages.at(0).content, "ba be bi");
}

TEST_F(ClientTest, RejectionsAndErrorsAreCountedApart) {
  service_.set_validate_error(absl::ResourceExhaustedError("queue full"));
  std::vector<RequestRecord> records = Run(Options(), Items(3, 0));
  for (const RequestRecord& r : records) {
    EXPECT_EQ(r.outcome, Outcome::kRejected);
    EXPECT_EQ(r.http_status, 429);
    EXPECT_THAT(r.error, HasSubstr("429"));
  }
  service_.set_validate_error(absl::OkStatus());
  ClientOptions o = Options();
  o.model = "no-such-model";
  records = Run(o, Items(1, 0));
  EXPECT_EQ(records[0].outcome, Outcome::kFailed);
  EXPECT_EQ(records[0].http_status, 404);

  FakeCompletionService::Script script;
  script.late_error = absl::InternalError("engine broke");
  service_.set_script(script);
  records = Run(Options(), Items(1, 0));
  EXPECT_EQ(records[0].outcome, Outcome::kFailed);
  EXPECT_EQ(records[0].http_status, 200);
  EXPECT_FALSE(records[0].error.empty());
}

TEST_F(ClientTest, ApiKeyIsSent) {
  StartServer("secret");
  std::vector<RequestRecord> records = Run(Options(), Items(1, 0));
  EXPECT_EQ(records[0].http_status, 401);
  EXPECT_EQ(records[0].outcome, Outcome::kFailed);
  ClientOptions o = Options();
  o.api_key = "secret";
  records = Run(o, Items(1, 0));
  EXPECT_EQ(records[0].outcome, Outcome::kOk) << records[0].error;
}

TEST_F(ClientTest, TimeoutsAndRefusedConnectionsFail) {
  FakeCompletionService::Script script;
  script.hold_until_cancelled = true;
  service_.set_script(script);
  ClientOptions o = Options();
  o.request_timeout_s = 0.3;
  std::vector<RequestRecord> records = Run(o, Items(2, 0));
  for (const RequestRecord& r : records) {
    EXPECT_EQ(r.outcome, Outcome::kFailed);
    EXPECT_THAT(r.error, HasSubstr("timed out"));
    EXPECT_GE(r.first_token_s, 0);  // Tokens came before the stall.
  }
  const std::string endpoint = Options().endpoint;
  server_.reset();  // Nothing listens there any more.
  o.endpoint = endpoint;
  records = Run(o, Items(1, 0));
  EXPECT_EQ(records[0].outcome, Outcome::kFailed);
  EXPECT_THAT(records[0].error, HasSubstr("connect"));
}

TEST(EndpointTest, Parses) {
  auto e = ParseEndpoint("http://localhost:8080/v1/");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->host, "localhost");
  EXPECT_EQ(e->port, "8080");
  EXPECT_EQ(e->prefix, "");
  e = ParseEndpoint("http://[::1]:9/openai");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->host, "::1");
  EXPECT_EQ(e->prefix, "/openai");
  EXPECT_EQ(ParseEndpoint("http://h")->port, "80");
  EXPECT_FALSE(ParseEndpoint("https://h").ok());
  EXPECT_FALSE(ParseEndpoint("h:80").ok());
  EXPECT_FALSE(ParseEndpoint("http://h:x").ok());
}

TEST(RequestBodyTest, TokenPromptsAndOptions) {
  ClientOptions o;
  o.model = "m";
  ReplayItem item;
  item.tokens = {5, 6};
  item.max_tokens = 9;
  auto j = nlohmann::json::parse(BuildRequestBody(o, item));
  EXPECT_EQ(j["prompt"], nlohmann::json::array({5, 6}));
  EXPECT_EQ(j["max_tokens"], 9);
  EXPECT_EQ(j["stream"], true);
  EXPECT_EQ(j["stream_options"]["include_usage"], true);
  EXPECT_EQ(j["model"], "m");
  EXPECT_EQ(j["ignore_eos"], true);
  o.mode = PromptMode::kText;
  o.ignore_eos = false;
  item.text = "hello";
  j = nlohmann::json::parse(BuildRequestBody(o, item));
  EXPECT_EQ(j["prompt"], "hello");
  EXPECT_FALSE(j.contains("ignore_eos"));
}

}  // namespace
}  // namespace crescent::bench
