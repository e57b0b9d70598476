// HTTP tests over loopback against FakeCompletionService, with a small blocking Beast client.
#include "src/server/http_server.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "src/server/openai_protocol.h"
#include "tests/src/server/fake_completion_service.h"

namespace crescent::server {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using ::testing::HasSubstr;
using ::testing::StartsWith;

struct Response {
  int status = 0;
  std::map<std::string, std::string> headers;  // Lower-case names.
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
  json Json() const { return json::parse(body, nullptr, false); }
};

// A blocking HTTP/1.1 client connection.
class Client {
 public:
  explicit Client(uint16_t port) : socket_(ioc_) {
    socket_.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  }

  void Send(http::verb method, const std::string& target, const std::string& body = "",
            const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    http::request<http::string_body> req(method, target, 11);
    req.set(http::field::host, "localhost");
    for (const auto& [name, value] : headers) req.set(name, value);
    if (!body.empty() || method == http::verb::post) {
      req.set(http::field::content_type, "application/json");
      req.body() = body;
    }
    req.prepare_payload();
    http::write(socket_, req);
  }

  Response Receive() {
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 << 20);
    http::read(socket_, buffer_, parser);
    Response r;
    r.status = static_cast<int>(parser.get().result_int());
    for (const auto& field : parser.get()) {
      std::string name(field.name_string());
      for (char& c : name) c = static_cast<char>(std::tolower(c));
      r.headers[name] = std::string(field.value());
    }
    r.body = parser.get().body();
    return r;
  }

  Response Call(http::verb method, const std::string& target, const std::string& body = "",
                const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    Send(method, target, body, headers);
    return Receive();
  }

  tcp::socket& socket() { return socket_; }

 private:
  net::io_context ioc_;
  tcp::socket socket_;
  beast::flat_buffer buffer_;
};

// The "data: " payloads of an SSE body, after checking that every event is framed exactly as
// "data: <payload>\n\n" (or a ": keep-alive\n\n" comment, counted in *keep_alives).
std::vector<std::string> SseEvents(const std::string& body, int* keep_alives = nullptr) {
  std::vector<std::string> events;
  size_t pos = 0;
  int comments = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    EXPECT_NE(end, std::string::npos) << "unterminated event at " << pos << " in " << body;
    if (end == std::string::npos) break;
    std::string event = body.substr(pos, end - pos);
    pos = end + 2;
    if (event == ": keep-alive") {
      ++comments;
      continue;
    }
    EXPECT_THAT(event, StartsWith("data: "));
    EXPECT_EQ(event.find('\n'), std::string::npos) << event;
    events.push_back(event.substr(6));
  }
  if (keep_alives != nullptr) *keep_alives = comments;
  return events;
}

template <typename Pred>
bool WaitFor(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pred();
}

const char kChatBody[] = R"({"model":"smollm2","messages":[{"role":"user","content":"Hi"}]})";

class HttpServerTest : public ::testing::Test {
 protected:
  void StartServer(HttpServerOptions options = {}) {
    options.port = 0;
    auto server = HttpServer::Create(options, &service_, &registry_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ASSERT_NE(server_->port(), 0);
  }
  void SetUp() override { StartServer(); }
  void TearDown() override {
    if (server_) server_->Stop();
  }

  Response Post(const std::string& target, const std::string& body,
                const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    Client client(server_->port());
    return client.Call(http::verb::post, target, body, headers);
  }
  Response Get(const std::string& target) {
    Client client(server_->port());
    return client.Call(http::verb::get, target);
  }

  void ExpectError(const Response& r, int status, const std::string& type,
                   const std::string& param = "") {
    EXPECT_EQ(r.status, status) << r.body;
    json j = r.Json();
    ASSERT_TRUE(j.is_object()) << r.body;
    ASSERT_TRUE(j.contains("error")) << r.body;
    EXPECT_TRUE(j["error"]["message"].is_string()) << r.body;
    EXPECT_FALSE(j["error"]["message"].get<std::string>().empty());
    EXPECT_EQ(j["error"]["type"], type) << r.body;
    ASSERT_TRUE(j["error"].contains("param"));
    ASSERT_TRUE(j["error"].contains("code"));
    if (param.empty()) {
      EXPECT_TRUE(j["error"]["param"].is_null()) << r.body;
    } else {
      EXPECT_EQ(j["error"]["param"], param) << r.body;
    }
    EXPECT_EQ(r.header("content-type"), "application/json");
  }

  MetricsRegistry registry_;
  FakeCompletionService service_;
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, HealthReadyModelsMetrics) {
  Response r = Get("/health");
  EXPECT_EQ(r.status, 200);
  r = Get("/ready");
  EXPECT_EQ(r.status, 200);
  service_.set_ready(false);
  r = Get("/ready");
  ExpectError(r, 503, "service_unavailable_error");
  EXPECT_EQ(r.header("retry-after"), "1");

  r = Get("/v1/models");
  ASSERT_EQ(r.status, 200);
  json j = r.Json();
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 2u);
  EXPECT_EQ(j["data"][0]["id"], "smollm2");
  r = Get("/v1/models/other");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["id"], "other");
  EXPECT_EQ(r.Json()["object"], "model");
  r = Get("/v1/models/gpt-4");
  ExpectError(r, 404, "invalid_request_error");
  EXPECT_EQ(r.Json()["error"]["code"], "model_not_found");

  Post("/v1/chat/completions", kChatBody);
  r = Get("/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_THAT(r.header("content-type"), StartsWith("text/plain; version=0.0.4"));
  EXPECT_THAT(r.body, HasSubstr("crescent:time_to_first_token_seconds_count 1\n"));
  EXPECT_THAT(r.body, HasSubstr("crescent:inter_token_latency_seconds_count 2\n"));
  EXPECT_THAT(r.body, HasSubstr("crescent:e2e_request_latency_seconds_count 1\n"));
  EXPECT_THAT(r.body, HasSubstr("crescent:request_success_total{finished_reason=\"stop\"} 1\n"));
  EXPECT_THAT(r.body, HasSubstr("# TYPE crescent:kv_cache_usage_perc gauge\n"));
}

TEST_F(HttpServerTest, NonStreamingChat) {
  Response r = Post("/v1/chat/completions",
                    R"({"model":"smollm2","messages":[{"role":"system","content":"Be nice."},
                        {"role":"user","content":[{"type":"text","text":"Hi"}]}],
                        "max_tokens":16,"temperature":0,"seed":3,"stop":["x"],"unknown":1})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("content-type"), "application/json");
  json j = r.Json();
  EXPECT_THAT(j["id"].get<std::string>(), StartsWith("chatcmpl-"));
  EXPECT_EQ(r.header("x-request-id"), j["id"]);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_TRUE(j["created"].is_number_integer());
  EXPECT_EQ(j["model"], "smollm2");
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "Hello, world");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 7);
  EXPECT_EQ(j["usage"]["completion_tokens"], 3);
  EXPECT_EQ(j["usage"]["total_tokens"], 10);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 2);

  CompletionRequest seen = service_.last_request();
  EXPECT_EQ(seen.kind, RequestKind::kChat);
  EXPECT_EQ(seen.request_id, j["id"]);
  ASSERT_EQ(seen.messages.size(), 2u);
  EXPECT_EQ(seen.messages[1].content, "Hi");
  EXPECT_EQ(seen.max_tokens, 16);
  EXPECT_EQ(seen.sampling.seed, 3u);
}

TEST_F(HttpServerTest, ToolCallsUnderAuto) {
  FakeCompletionService::Script script;
  script.pieces = {"Checking.", " <tool", "_call>\n{\"name\": \"get_time\", ",
                   "\"arguments\": {\"tz\": \"UTC\"}}\n</tool_call>"};
  service_.set_script(script);
  const std::string body =
      R"({"messages":[{"role":"user","content":"Time?"}],
          "tools":[{"type":"function","function":{"name":"get_time","parameters":
            {"type":"object","properties":{"tz":{"type":"string"}}}}}]})";
  Response r = Post("/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = r.Json();
  const json& choice = j["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_EQ(choice["message"]["content"], "Checking.");
  ASSERT_EQ(choice["message"]["tool_calls"].size(), 1u);
  EXPECT_EQ(choice["message"]["tool_calls"][0]["function"]["name"], "get_time");
  EXPECT_EQ(choice["message"]["tool_calls"][0]["function"]["arguments"], R"({"tz":"UTC"})");
  // The service saw the tools in a system message, and no constraint under auto.
  CompletionRequest seen = service_.last_request();
  ASSERT_EQ(seen.messages.size(), 2u);
  EXPECT_EQ(seen.messages[0].role, "system");
  EXPECT_THAT(seen.messages[0].content, ::testing::HasSubstr("\"name\":\"get_time\""));
  EXPECT_FALSE(seen.json_object);

  // Streamed: the text before the call as content, then the call, then the finish.
  std::string stream_body = body;
  stream_body.insert(1, R"("stream":true,)");
  r = Post("/v1/chat/completions", stream_body);
  ASSERT_EQ(r.status, 200) << r.body;
  std::vector<std::string> events = SseEvents(r.body);
  ASSERT_EQ(events.size(), 4u) << r.body;
  json first = json::parse(events[0])["choices"][0]["delta"];
  EXPECT_EQ(first["role"], "assistant");
  EXPECT_EQ(first["content"], "Checking.");
  json calls = json::parse(events[1])["choices"][0]["delta"]["tool_calls"];
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0]["index"], 0);
  EXPECT_THAT(calls[0]["id"].get<std::string>(), StartsWith("call_"));
  EXPECT_EQ(calls[0]["function"]["name"], "get_time");
  EXPECT_EQ(json::parse(events[2])["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_EQ(events[3], "[DONE]");

  // A parameters schema outside the subset, under "required": 400 naming the tool, nothing run.
  const int started = service_.started();
  r = Post("/v1/chat/completions",
           R"({"messages":[{"role":"user","content":"Time?"}],"tool_choice":"required",
               "tools":[{"type":"function","function":{"name":"get_time","parameters":
                 {"type":"object","properties":{"tz":{"type":"string","format":"x"}}}}}]})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(r.Json()["error"]["param"], "tools[0].function.parameters");
  EXPECT_EQ(service_.started(), started);
}

TEST_F(HttpServerTest, TokenizeParsesAndAsksTheService) {
  // The fake service does not tokenize: 501, after the body was checked.
  Response r = Post("/tokenize", R"({"prompt": "hi"})");
  ExpectError(r, 501, "invalid_request_error");
  r = Post("/tokenize", R"({"prompt": ["a", "b"]})");
  ExpectError(r, 400, "invalid_request_error", "prompt");
  r = Post("/detokenize", R"({"tokens": [1, -2]})");
  ExpectError(r, 400, "invalid_request_error", "tokens[1]");
  r = Get("/tokenize");
  EXPECT_EQ(r.status, 405);
}

TEST_F(HttpServerTest, DefaultModelNameAndLengthFinish) {
  FakeCompletionService::Script script;
  script.finish_reason = "length";
  service_.set_script(script);
  Response r = Post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"Hi"}]})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["model"], "smollm2");
  EXPECT_EQ(r.Json()["choices"][0]["finish_reason"], "length");
}

TEST_F(HttpServerTest, StreamingChatWithUsage) {
  Client client(server_->port());
  Response r =
      client.Call(http::verb::post, "/v1/chat/completions",
                  R"({"model":"smollm2","messages":[{"role":"user","content":"Hi"}],"stream":true,
          "stream_options":{"include_usage":true}})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("content-type"), "text/event-stream; charset=utf-8");
  EXPECT_EQ(r.header("transfer-encoding"), "chunked");
  EXPECT_EQ(r.header("cache-control"), "no-cache");
  std::vector<std::string> events = SseEvents(r.body);
  ASSERT_EQ(events.size(), 5u) << r.body;
  const std::vector<std::string> texts = {"Hello", ",", " world"};
  std::string id;
  for (int i = 0; i < 3; ++i) {
    json j = json::parse(events[i]);
    if (i == 0) id = j["id"];
    EXPECT_EQ(j["id"], id);
    EXPECT_EQ(j["object"], "chat.completion.chunk");
    EXPECT_EQ(j["model"], "smollm2");
    ASSERT_EQ(j["choices"].size(), 1u);
    const json& c = j["choices"][0];
    EXPECT_EQ(c["index"], 0);
    EXPECT_EQ(c["delta"]["content"], texts[i]);
    EXPECT_EQ(c["delta"].contains("role"), i == 0) << events[i];
    if (i == 0) {
      EXPECT_EQ(c["delta"]["role"], "assistant");
    }
    if (i < 2) {
      EXPECT_TRUE(c["finish_reason"].is_null()) << events[i];
    } else {
      EXPECT_EQ(c["finish_reason"], "stop");
    }
    EXPECT_TRUE(j.contains("usage") && j["usage"].is_null());
  }
  json usage = json::parse(events[3]);
  EXPECT_EQ(usage["id"], id);
  EXPECT_TRUE(usage["choices"].is_array() && usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 10);
  EXPECT_EQ(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
  EXPECT_EQ(events[4], "[DONE]");
  EXPECT_THAT(r.body, ::testing::EndsWith("data: [DONE]\n\n"));

  // The connection is kept alive and serves the next request.
  r = client.Call(http::verb::post, "/v1/chat/completions", kChatBody);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.Json()["choices"][0]["message"]["content"], "Hello, world");
}

TEST_F(HttpServerTest, StreamingWithoutUsageHasNoUsageChunk) {
  Response r = Post("/v1/chat/completions",
                    R"({"messages":[{"role":"user","content":"Hi"}],"stream":true})");
  ASSERT_EQ(r.status, 200);
  std::vector<std::string> events = SseEvents(r.body);
  ASSERT_EQ(events.size(), 4u) << r.body;
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(json::parse(events[i]).contains("usage"));
  EXPECT_EQ(events[3], "[DONE]");
}

TEST_F(HttpServerTest, NChoices) {
  Response r =
      Post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"Hi"}],"n":2})");
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.Json();
  ASSERT_EQ(j["choices"].size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(j["choices"][i]["index"], i);
    EXPECT_EQ(j["choices"][i]["message"]["content"], "Hello, world");
    EXPECT_EQ(j["choices"][i]["finish_reason"], "stop");
  }

  r = Post("/v1/chat/completions",
           R"({"messages":[{"role":"user","content":"Hi"}],"n":2,"stream":true,
               "stream_options":{"include_usage":true}})");
  ASSERT_EQ(r.status, 200);
  std::vector<std::string> events = SseEvents(r.body);
  ASSERT_EQ(events.size(), 8u) << r.body;
  std::map<int, std::string> text;
  std::map<int, int> roles, finishes, after_finish;
  for (int i = 0; i < 6; ++i) {
    json c = json::parse(events[i])["choices"][0];
    int index = c["index"];
    if (finishes[index] > 0) ++after_finish[index];
    if (c["delta"].contains("role")) {
      EXPECT_EQ(text[index], "") << "role must come in the first delta";
      ++roles[index];
    }
    text[index] += c["delta"].value("content", "");
    if (!c["finish_reason"].is_null()) ++finishes[index];
  }
  for (int index = 0; index < 2; ++index) {
    EXPECT_EQ(text[index], "Hello, world");
    EXPECT_EQ(roles[index], 1);
    EXPECT_EQ(finishes[index], 1);
    EXPECT_EQ(after_finish[index], 0);
  }
  EXPECT_TRUE(json::parse(events[6])["choices"].empty());
  EXPECT_EQ(events[7], "[DONE]");
}

TEST_F(HttpServerTest, LegacyCompletions) {
  Response r = Post("/v1/completions", R"({"model":"smollm2","prompt":"Once","max_tokens":3})");
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.Json();
  EXPECT_THAT(j["id"].get<std::string>(), StartsWith("cmpl-"));
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], "Hello, world");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  ASSERT_EQ(service_.last_request().prompts.size(), 1u);
  EXPECT_EQ(service_.last_request().prompts[0].text, "Once");

  r = Post("/v1/completions", R"({"prompt":[1,2,3],"stream":true})");
  ASSERT_EQ(r.status, 200);
  std::vector<std::string> events = SseEvents(r.body);
  ASSERT_EQ(events.size(), 4u);
  json first = json::parse(events[0]);
  EXPECT_EQ(first["object"], "text_completion");
  EXPECT_EQ(first["choices"][0]["text"], "Hello");
  EXPECT_EQ(events[3], "[DONE]");
}

TEST_F(HttpServerTest, BadRequests) {
  ExpectError(Post("/v1/chat/completions", "{not json"), 400, "invalid_request_error");
  ExpectError(Post("/v1/chat/completions",
                   R"({"messages":[{"role":"user","content":"x"}],"temperature":3})"),
              400, "invalid_request_error", "temperature");
  ExpectError(Post("/v1/chat/completions",
                   R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})"),
              400, "invalid_request_error", "messages[0].content[0].type");
  ExpectError(Post("/v1/completions", R"({"prompt":"x","stop":["a","b","c","d","e"]})"), 400,
              "invalid_request_error", "stop");
  EXPECT_EQ(service_.started(), 0);
}

TEST_F(HttpServerTest, ServiceValidationErrors) {
  Response r = Post("/v1/chat/completions",
                    R"({"model":"nope","messages":[{"role":"user","content":"x"}]})");
  ExpectError(r, 404, "invalid_request_error");
  EXPECT_EQ(r.Json()["error"]["code"], "model_not_found");

  service_.set_validate_error(absl::OutOfRangeError("prompt + max_tokens exceed 8192"));
  ExpectError(Post("/v1/chat/completions", kChatBody), 400, "invalid_request_error");

  service_.set_validate_error(absl::ResourceExhaustedError("queue is full"));
  r = Post("/v1/chat/completions", kChatBody);
  ExpectError(r, 429, "rate_limit_error");
  EXPECT_EQ(r.header("retry-after"), "1");
  EXPECT_EQ(service_.started(), 0);
}

TEST_F(HttpServerTest, ServiceStartErrors) {
  FakeCompletionService::Script script;
  script.start_error = absl::UnavailableError("no decode node");
  service_.set_script(script);
  // Streaming too: an error before any output still gets its HTTP status.
  Response r = Post("/v1/chat/completions",
                    R"({"messages":[{"role":"user","content":"Hi"}],"stream":true})");
  ExpectError(r, 503, "service_unavailable_error");
  EXPECT_EQ(r.header("retry-after"), "1");
  r = Post("/v1/chat/completions", kChatBody);
  ExpectError(r, 503, "service_unavailable_error");

  script.start_error = absl::ResourceExhaustedError("TTFT SLO cannot be met");
  service_.set_script(script);
  r = Post("/v1/chat/completions", kChatBody);
  ExpectError(r, 429, "rate_limit_error");
  EXPECT_EQ(r.header("retry-after"), "1");

  // A retry hint the service attached (the Conductor's early rejection) replaces the default.
  script.start_error = WithRetryAfter(absl::ResourceExhaustedError("TTFT SLO"), 7.2);
  service_.set_script(script);
  r = Post("/v1/chat/completions", kChatBody);
  ExpectError(r, 429, "rate_limit_error");
  EXPECT_EQ(r.header("retry-after"), "8");

  script.start_error = absl::InternalError("engine exploded");
  service_.set_script(script);
  ExpectError(Post("/v1/chat/completions", kChatBody), 500, "server_error");
}

TEST_F(HttpServerTest, ErrorAfterStreamStartedIsAnEvent) {
  FakeCompletionService::Script script;
  script.late_error = absl::InternalError("decode node lost");
  service_.set_script(script);
  Response r = Post("/v1/chat/completions",
                    R"({"messages":[{"role":"user","content":"Hi"}],"stream":true})");
  ASSERT_EQ(r.status, 200);
  std::vector<std::string> events = SseEvents(r.body);
  ASSERT_EQ(events.size(), 5u) << r.body;
  json error = json::parse(events[3]);
  EXPECT_EQ(error["error"]["message"], "decode node lost");
  EXPECT_EQ(events[4], "[DONE]");
}

TEST_F(HttpServerTest, UnknownPathAndWrongMethod) {
  ExpectError(Get("/v1/nothing"), 404, "invalid_request_error");
  ExpectError(Post("/", "{}"), 404, "invalid_request_error");
  Response r = Get("/v1/chat/completions");
  ExpectError(r, 405, "invalid_request_error");
  EXPECT_EQ(r.header("allow"), "POST");
  r = Post("/v1/models", "{}");
  ExpectError(r, 405, "invalid_request_error");
  EXPECT_EQ(r.header("allow"), "GET");
  r = Post("/health", "{}");
  EXPECT_EQ(r.status, 405);
}

TEST_F(HttpServerTest, BodyTooLarge) {
  server_->Stop();
  HttpServerOptions options;
  options.max_body_bytes = 1024;
  StartServer(options);
  std::string big =
      std::string(R"({"messages":[{"role":"user","content":")") + std::string(4000, 'a') + "\"}]}";
  Response r = Post("/v1/chat/completions", big);
  ExpectError(r, 413, "invalid_request_error");
  EXPECT_EQ(r.Json()["error"]["code"], "request_too_large");
  // Just under the limit is fine.
  r = Post("/v1/chat/completions", kChatBody);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(service_.started(), 1);
}

TEST_F(HttpServerTest, ApiKey) {
  server_->Stop();
  HttpServerOptions options;
  options.api_key = "sk-secret";
  StartServer(options);
  Response r = Post("/v1/chat/completions", kChatBody);
  ExpectError(r, 401, "authentication_error");
  EXPECT_EQ(r.header("www-authenticate"), "Bearer");
  ExpectError(Post("/v1/chat/completions", kChatBody, {{"Authorization", "Bearer sk-wrong"}}), 401,
              "authentication_error");
  ExpectError(Post("/v1/chat/completions", kChatBody, {{"Authorization", "Bearer sk-secre"}}), 401,
              "authentication_error");
  ExpectError(Post("/v1/chat/completions", kChatBody, {{"Authorization", "sk-secret"}}), 401,
              "authentication_error");
  {
    Client client(server_->port());
    ExpectError(client.Call(http::verb::get, "/v1/models"), 401, "authentication_error");
  }
  EXPECT_EQ(service_.started(), 0);
  r = Post("/v1/chat/completions", kChatBody, {{"Authorization", "Bearer sk-secret"}});
  EXPECT_EQ(r.status, 200) << r.body;
  // Health, readiness and metrics stay open for probes and scrapers.
  EXPECT_EQ(Get("/health").status, 200);
  EXPECT_EQ(Get("/ready").status, 200);
  EXPECT_EQ(Get("/metrics").status, 200);
}

TEST_F(HttpServerTest, GarbageDoesNotCrash) {
  for (std::string garbage :
       {std::string("GARBAGE\r\n\r\n"), std::string("\x00\x01\x02\r\n\r\n", 7),
        std::string("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: "
                    "zz\r\n\r\n")}) {
    Client client(server_->port());
    net::write(client.socket(), net::buffer(garbage));
    Response r = client.Receive();
    EXPECT_EQ(r.status, 400);
  }
  // A client that sends half a request and leaves.
  {
    Client client(server_->port());
    std::string half = "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"m";
    net::write(client.socket(), net::buffer(half));
  }
  EXPECT_EQ(Get("/health").status, 200);
}

TEST_F(HttpServerTest, ExpectContinue) {
  Client client(server_->port());
  std::string body = kChatBody;
  std::string head =
      "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
      "Content-Type: application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n";
  net::write(client.socket(), net::buffer(head));
  std::string got;
  char buf[256];
  while (got.find("\r\n\r\n") == std::string::npos) {
    got.append(buf, client.socket().read_some(net::buffer(buf)));
  }
  EXPECT_EQ(got, "HTTP/1.1 100 Continue\r\n\r\n");
  net::write(client.socket(), net::buffer(body));
  Response r = client.Receive();
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["choices"][0]["message"]["content"], "Hello, world");
}

TEST_F(HttpServerTest, ClientDisconnectMidStreamCancels) {
  FakeCompletionService::Script script;
  script.hold_until_cancelled = true;
  service_.set_script(script);
  {
    Client client(server_->port());
    client.Send(http::verb::post, "/v1/chat/completions",
                R"({"messages":[{"role":"user","content":"Hi"}],"stream":true})");
    // Read until the first event has arrived, then go away.
    std::string got;
    char buf[4096];
    while (got.find("data: ") == std::string::npos) {
      size_t n = client.socket().read_some(net::buffer(buf));
      got.append(buf, n);
    }
  }
  EXPECT_TRUE(WaitFor([&] { return service_.cancelled() == 1; }));
  EXPECT_TRUE(WaitFor([&] { return service_.finished() == 1; }));
  EXPECT_TRUE(WaitFor([&] {
    return registry_.RenderText().find("request_success_total{finished_reason=\"abort\"} 1") !=
           std::string::npos;
  }));
}

TEST_F(HttpServerTest, ClientDisconnectWhileWaitingForNonStreamingCancels) {
  FakeCompletionService::Script script;
  script.hold_until_cancelled = true;
  service_.set_script(script);
  {
    Client client(server_->port());
    client.Send(http::verb::post, "/v1/chat/completions", kChatBody);
    ASSERT_TRUE(WaitFor([&] { return service_.started() == 1; }));
  }
  EXPECT_TRUE(WaitFor([&] { return service_.cancelled() == 1; }));
}

TEST_F(HttpServerTest, KeepAliveCommentsWhileWaiting) {
  server_->Stop();
  HttpServerOptions options;
  options.sse_keep_alive_seconds = 0.02;
  StartServer(options);
  FakeCompletionService::Script script;
  script.pieces = {"a", "b"};
  script.piece_delay = std::chrono::milliseconds(300);
  service_.set_script(script);
  Response r = Post("/v1/chat/completions",
                    R"({"messages":[{"role":"user","content":"Hi"}],"stream":true})");
  ASSERT_EQ(r.status, 200);
  int keep_alives = 0;
  std::vector<std::string> events = SseEvents(r.body, &keep_alives);
  EXPECT_GE(keep_alives, 1) << r.body;
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[2], "[DONE]");
}

TEST_F(HttpServerTest, StopCancelsRequestsInFlight) {
  FakeCompletionService::Script script;
  script.hold_until_cancelled = true;
  service_.set_script(script);
  Client client(server_->port());
  client.Send(http::verb::post, "/v1/chat/completions",
              R"({"messages":[{"role":"user","content":"Hi"}],"stream":true})");
  ASSERT_TRUE(WaitFor([&] { return service_.started() == 1; }));
  server_->Stop();
  EXPECT_EQ(service_.cancelled(), 1);
  EXPECT_EQ(service_.finished(), 1);
}

TEST_F(HttpServerTest, TwoHundredConcurrentStreams) {
  constexpr int kStreams = 200;
  service_.set_paused(true);
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kStreams; ++i) {
    clients.push_back(std::make_unique<Client>(server_->port()));
    clients.back()->Send(http::verb::post, "/v1/chat/completions",
                         R"({"messages":[{"role":"user","content":"Hi"}],"stream":true,
                             "stream_options":{"include_usage":true}})");
  }
  // All 200 are open and started before any produces a token.
  ASSERT_TRUE(WaitFor([&] { return service_.started() == kStreams; }))
      << service_.started() << " started";
  service_.set_paused(false);
  std::set<std::string> ids;
  for (auto& client : clients) {
    Response r = client->Receive();
    ASSERT_EQ(r.status, 200);
    std::vector<std::string> events = SseEvents(r.body);
    ASSERT_EQ(events.size(), 5u) << r.body;
    std::string text;
    for (int i = 0; i < 3; ++i) {
      text += json::parse(events[i])["choices"][0]["delta"]["content"].get<std::string>();
    }
    EXPECT_EQ(text, "Hello, world");
    ids.insert(json::parse(events[0])["id"].get<std::string>());
    EXPECT_EQ(events[4], "[DONE]");
  }
  EXPECT_EQ(ids.size(), static_cast<size_t>(kStreams));
  EXPECT_EQ(service_.cancelled(), 0);
}

TEST(HttpServerCreateTest, WithoutServiceServesOnlyHealthAndMetrics) {
  MetricsRegistry registry;
  registry.GetCounter("crescent:node_test_total", "A node's counter.", {})->Increment(3);
  HttpServerOptions options;
  options.num_threads = 1;
  auto server = HttpServer::Create(options, nullptr, &registry);
  ASSERT_TRUE(server.ok()) << server.status();
  auto get = [&](const std::string& target) {
    Client client((*server)->port());
    return client.Call(http::verb::get, target);
  };
  EXPECT_EQ(get("/health").status, 200);
  EXPECT_EQ(get("/ready").status, 200);
  Response metrics = get("/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.body.find("crescent:node_test_total 3"), std::string::npos) << metrics.body;
  EXPECT_EQ(get("/v1/models").status, 404);
  Client client((*server)->port());
  Response chat = client.Call(http::verb::post, "/v1/chat/completions", kChatBody);
  EXPECT_EQ(chat.status, 404);
  EXPECT_TRUE(chat.Json().contains("error")) << chat.body;
  (*server)->Stop();
}

TEST(HttpServerCreateTest, BadOptions) {
  FakeCompletionService service;
  HttpServerOptions options;
  options.host = "not-an-address";
  EXPECT_EQ(HttpServer::Create(options, &service, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.host = "127.0.0.1";
  options.num_threads = 0;
  EXPECT_FALSE(HttpServer::Create(options, &service, nullptr).ok());
  // A taken port.
  options.num_threads = 1;
  auto first = HttpServer::Create(options, &service, nullptr);
  ASSERT_TRUE(first.ok());
  options.port = (*first)->port();
  auto second = HttpServer::Create(options, &service, nullptr);
  EXPECT_FALSE(second.ok());
}

}  // namespace
}  // namespace crescent::server
