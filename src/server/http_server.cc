#include "src/server/http_server.h"

#include <algorithm>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <map>
#include <optional>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "src/common/clock.h"
#include "src/common/logging.h"
#include "src/server/openai_protocol.h"
#include "src/server/tool_calls.h"

namespace crescent::server {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

constexpr char kServerName[] = "crescent";
constexpr char kJson[] = "application/json";
constexpr char kDone[] = "data: [DONE]\n\n";
constexpr char kKeepAlive[] = ": keep-alive\n\n";
constexpr size_t kWatchReadBytes = 4096;
constexpr size_t kLingerDrainBytes = 4 << 20;

// Compares without an early exit, so that the time taken does not tell how much of a guessed
// key was right (it does tell the length).
bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  size_t n = std::max(a.size(), b.size());
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  for (size_t i = 0; i < n; ++i) {
    unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned>(x ^ y);
  }
  return diff == 0;
}

absl::string_view View(beast::string_view s) { return absl::string_view(s.data(), s.size()); }

HttpError MakeError(int http_status, std::string message, std::string type, std::string code) {
  HttpError e;
  e.http_status = http_status;
  e.message = std::move(message);
  e.type = std::move(type);
  e.code = std::move(code);
  return e;
}

class Session;

}  // namespace

class HttpServer::Impl {
 public:
  Impl(const HttpServerOptions& opts, CompletionService* svc, MetricsRegistry* registry_in)
      : options(opts),
        service(svc),
        own_registry(registry_in == nullptr ? std::make_unique<MetricsRegistry>() : nullptr),
        registry(registry_in == nullptr ? own_registry.get() : registry_in),
        metrics(registry),
        ioc(std::make_shared<net::io_context>(opts.num_threads)),
        work(ioc->get_executor()),
        acceptor(net::make_strand(*ioc)),
        accept_timer(acceptor.get_executor()) {}

  absl::Status Listen();
  void DoAccept();
  void OnAccept(beast::error_code ec, tcp::socket socket);
  void Stop();

  // Session bookkeeping, so that Stop() can close every connection. It lives in its own shared
  // object because a session can outlive the server: the service may drop the last callback
  // holding a session (and so destroy it) after Stop() has returned and Impl is gone.
  struct SessionRegistry {
    absl::Mutex mu;
    bool stopping ABSL_GUARDED_BY(mu) = false;
    uint64_t next_id ABSL_GUARDED_BY(mu) = 0;
    std::map<uint64_t, std::weak_ptr<Session>> sessions ABSL_GUARDED_BY(mu);

    bool Register(uint64_t id, std::weak_ptr<Session> session) {
      absl::MutexLock lock(&mu);
      if (stopping) return false;
      sessions.emplace(id, std::move(session));
      return true;
    }
    void Unregister(uint64_t id) {
      absl::MutexLock lock(&mu);
      sessions.erase(id);
    }
  };

  std::string DefaultModel() {
    std::vector<ModelInfo> models = service->Models();
    return models.empty() ? std::string(kServerName) : models.front().id;
  }

  const HttpServerOptions options;
  CompletionService* const service;
  std::unique_ptr<MetricsRegistry> own_registry;
  MetricsRegistry* const registry;
  ServerMetrics metrics;
  std::shared_ptr<net::io_context> ioc;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  tcp::acceptor acceptor;
  net::steady_timer accept_timer;
  std::vector<std::thread> threads;
  uint16_t port = 0;

  const std::shared_ptr<SessionRegistry> session_registry = std::make_shared<SessionRegistry>();
};

namespace {

// One generation in flight on a connection.
struct Generation {
  uint64_t seq = 0;
  CompletionRequest context;  // The request without its messages/prompt, for rendering.
  std::string model;
  std::unique_ptr<CompletionHandle> handle;
  std::vector<ChoiceResult> choices;
  std::vector<bool> started;
  std::vector<size_t> offsets;
  // Streamed requests that use tools: per choice, what is held back as a possible tool call.
  std::vector<ToolCallStream> tool_streams;
  int64_t start_ns = 0;
  int64_t last_chunk_ns = 0;
  bool any_chunk = false;
  bool done = false;
  bool cancelled = false;
  // Keeps the io_context's threads running until on_done has been handled.
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
};

// One client connection. Every member is touched only on the connection's strand.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, HttpServer::Impl* server, uint64_t id)
      : ioc_(server->ioc),
        registry_(server->session_registry),
        server_(server),
        id_(id),
        stream_(std::move(socket)),
        keepalive_timer_(stream_.get_executor()) {}

  // Touches only what it owns: `server_` may be gone (see SessionRegistry).
  ~Session() { registry_->Unregister(id_); }

  void Start() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->DoRead(); });
  }

  // Closes the connection and cancels its request; posted by Stop().
  void Shutdown() {
    net::post(stream_.get_executor(), [self = shared_from_this()] { self->Close(); });
  }

 private:
  const HttpServerOptions& options() const { return server_->options; }

  void DoRead() {
    if (closed_) return;
    parser_.emplace();
    parser_->body_limit(options().max_body_bytes);
    parser_->header_limit(static_cast<uint32_t>(options().max_header_bytes));
    stream_.expires_after(
        std::chrono::milliseconds(static_cast<int64_t>(options().idle_timeout_seconds * 1000)));
    reading_ = true;
    http::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&Session::OnHeader, shared_from_this()));
  }

  // Clients such as curl send "Expect: 100-continue" with larger bodies and wait for the
  // interim response (or a second) before they send the body.
  void OnHeader(beast::error_code ec, size_t) {
    if (closed_) return;
    if (ec) {
      reading_ = false;
      HandleReadError(ec);
      return;
    }
    auto expect = parser_->get().find(http::field::expect);
    if (expect != parser_->get().end() && beast::iequals(expect->value(), "100-continue") &&
        !parser_->is_done()) {
      static constexpr char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
      net::async_write(stream_, net::buffer(kContinue, sizeof(kContinue) - 1),
                       [self = shared_from_this()](beast::error_code write_ec, size_t) {
                         if (write_ec) {
                           self->reading_ = false;
                           self->Close();
                           return;
                         }
                         self->ReadBody();
                       });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    if (closed_) return;
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&Session::OnRead, shared_from_this()));
  }

  void OnRead(beast::error_code ec, size_t) {
    reading_ = false;
    if (closed_) return;
    if (ec) {
      HandleReadError(ec);
      return;
    }
    stream_.expires_never();
    HandleRequest(parser_->release());
  }

  void HandleReadError(beast::error_code ec) {
    version_ = 11;
    keep_alive_ = false;
    if (ec == http::error::body_limit) {
      SendError(MakeError(
          413,
          absl::StrCat("request body exceeds the limit of ", options().max_body_bytes, " bytes"),
          "invalid_request_error", "request_too_large"));
    } else if (ec == http::error::header_limit) {
      SendError(MakeError(431, "request headers are too large", "invalid_request_error",
                          "request_header_fields_too_large"));
    } else if (ec.category() == http::make_error_code(http::error::bad_target).category() &&
               ec != http::error::end_of_stream && ec != http::error::partial_message) {
      SendError(MakeError(400, absl::StrCat("malformed HTTP request: ", ec.message()),
                          "invalid_request_error", "bad_request"));
    } else {
      Close();  // EOF, reset, timeout.
    }
  }

  void HandleRequest(http::request<http::string_body>&& req) {
    version_ = req.version();
    keep_alive_ = req.keep_alive();
    absl::string_view target = View(req.target());
    absl::string_view path = target.substr(0, target.find('?'));
    const http::verb method = req.method();

    auto require = [&](http::verb allowed, const char* allow) {
      if (method == allowed) return true;
      SendError(MakeError(405,
                          absl::StrCat("method ", View(req.method_string()), " is not allowed on ",
                                       path, "; use ", allow),
                          "invalid_request_error", "method_not_allowed"),
                {{"Allow", allow}});
      return false;
    };

    if (path == "/health") {
      if (require(http::verb::get, "GET")) SendBody(200, kJson, R"({"status":"ok"})");
    } else if (path == "/ready") {
      if (!require(http::verb::get, "GET")) return;
      if (server_->service == nullptr || server_->service->Ready()) {
        SendBody(200, kJson, R"({"status":"ready"})");
      } else {
        SendError(
            MakeError(503, "the server is not ready", "service_unavailable_error", "not_ready"));
      }
    } else if (path == "/metrics") {
      if (require(http::verb::get, "GET")) {
        SendBody(200, "text/plain; version=0.0.4; charset=utf-8", server_->registry->RenderText());
      }
    } else if (server_->service == nullptr) {
      SendError(MakeError(404, absl::StrCat(path, ": this process serves only /health, /ready and "
                                                  "/metrics"),
                          "invalid_request_error", "unknown_url"));
    } else if (path == "/v1/models") {
      if (require(http::verb::get, "GET") && Authorized(req)) {
        SendBody(200, kJson, ModelsJson(server_->service->Models()));
      }
    } else if (absl::StartsWith(path, "/v1/models/")) {
      if (!require(http::verb::get, "GET") || !Authorized(req)) return;
      const absl::string_view id = path.substr(std::string_view("/v1/models/").size());
      for (const ModelInfo& m : server_->service->Models()) {
        if (m.id == id) {
          SendBody(200, kJson, ModelJson(m));
          return;
        }
      }
      SendError(MakeError(404, absl::StrCat("The model '", id, "' does not exist"),
                          "invalid_request_error", "model_not_found"));
    } else if (path == "/tokenize" || path == "/detokenize") {
      if (require(http::verb::post, "POST") && Authorized(req)) {
        if (path == "/tokenize") {
          Tokenize(req.body());
        } else {
          Detokenize(req.body());
        }
      }
    } else if (path == "/v1/chat/completions" || path == "/v1/completions") {
      if (require(http::verb::post, "POST") && Authorized(req)) {
        StartCompletion(
            path == "/v1/chat/completions" ? RequestKind::kChat : RequestKind::kCompletion,
            req.body());
      }
    } else {
      SendError(MakeError(404, absl::StrCat("unknown path: ", path), "invalid_request_error",
                          "unknown_url"));
    }
  }

  bool Authorized(const http::request<http::string_body>& req) {
    const std::string& key = options().api_key;
    if (key.empty()) return true;
    auto it = req.find(http::field::authorization);
    absl::string_view given = it == req.end() ? absl::string_view() : View(it->value());
    constexpr absl::string_view kBearer = "Bearer ";
    if (given.size() >= kBearer.size() &&
        std::equal(kBearer.begin(), kBearer.end(), given.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        })) {
      given.remove_prefix(kBearer.size());
      if (ConstantTimeEquals(std::string_view(given.data(), given.size()), key)) return true;
    }
    SendError(MakeError(401,
                        it == req.end() ? "missing API key: send 'Authorization: Bearer <key>'"
                                        : "incorrect API key",
                        "authentication_error", "invalid_api_key"),
              {{"WWW-Authenticate", "Bearer"}});
    return false;
  }

  // vLLM's /tokenize and /detokenize: answered on this thread (tokenizing is quick).
  void Tokenize(const std::string& body) {
    absl::StatusOr<CompletionRequest> parsed = ParseTokenizeRequest(body);
    if (parsed.ok() && parsed->kind == RequestKind::kChat) {
      parsed->tool_prompt_style = server_->service->tool_prompt_style();
      if (absl::Status status = ApplyTools(&*parsed); !status.ok()) parsed = status;
    }
    if (!parsed.ok()) {
      SendError(HttpErrorFromStatus(parsed.status()));
      return;
    }
    absl::StatusOr<std::vector<int32_t>> tokens = server_->service->Tokenize(*parsed);
    if (!tokens.ok()) {
      SendError(HttpErrorFromStatus(tokens.status()));
      return;
    }
    int max_model_len = 0;
    for (const ModelInfo& m : server_->service->Models()) {
      if (parsed->model.empty() || m.id == parsed->model) {
        max_model_len = m.max_model_len;
        break;
      }
    }
    SendBody(200, kJson, TokenizeResponseJson(*tokens, max_model_len));
  }

  void Detokenize(const std::string& body) {
    absl::StatusOr<std::vector<int32_t>> tokens = ParseDetokenizeRequest(body);
    absl::StatusOr<std::string> text =
        tokens.ok() ? server_->service->Detokenize(*tokens) : tokens.status();
    if (!text.ok()) {
      SendError(HttpErrorFromStatus(text.status()));
      return;
    }
    SendBody(200, kJson, DetokenizeResponseJson(*text));
  }

  void StartCompletion(RequestKind kind, const std::string& body) {
    const int64_t start_ns = RealClock::Get()->NowNanos();
    absl::StatusOr<CompletionRequest> parsed = kind == RequestKind::kChat
                                                   ? ParseChatCompletionRequest(body)
                                                   : ParseCompletionRequest(body);
    if (!parsed.ok()) {
      SendError(HttpErrorFromStatus(parsed.status()));
      return;
    }
    CompletionRequest& req = *parsed;
    if (kind == RequestKind::kChat) {
      req.tool_prompt_style = server_->service->tool_prompt_style();
      if (absl::Status status = ApplyTools(&req); !status.ok()) {
        SendError(HttpErrorFromStatus(status));
        return;
      }
    }
    req.request_id = NewRequestId(kind);
    req.arrival_unix_seconds = static_cast<int64_t>(std::time(nullptr));
    if (absl::Status status = server_->service->Validate(req); !status.ok()) {
      SendError(HttpErrorFromStatus(status));
      return;
    }

    gen_ = std::make_unique<Generation>();
    Generation& gen = *gen_;
    gen.seq = ++gen_seq_;
    gen.context = req;
    gen.context.messages.clear();
    gen.context.prompts.clear();
    gen.model = req.model.empty() ? server_->DefaultModel() : req.model;
    gen.choices.resize(req.num_choices());
    gen.started.assign(req.num_choices(), false);
    gen.offsets.assign(req.num_choices(), 0);
    if (gen.context.stream && UsesTools(gen.context)) {
      gen.tool_streams.assign(req.num_choices(), ToolCallStream(&gen.context));
    }
    gen.start_ns = start_ns;
    gen.work.emplace(ioc_->get_executor());
    headers_sent_ = false;
    chunked_ = version_ >= 11;
    if (!chunked_) keep_alive_ = false;
    sent_since_tick_ = false;

    auto self = shared_from_this();
    auto executor = stream_.get_executor();
    const uint64_t seq = gen.seq;
    ChunkCallback on_chunk = [self, executor, seq](CompletionChunk chunk) {
      net::post(executor, [self, seq, chunk = std::move(chunk)]() mutable {
        self->OnChunk(seq, std::move(chunk));
      });
    };
    DoneCallback on_done = [self, executor, seq](absl::Status status, Usage usage) {
      net::post(executor, [self, seq, status = std::move(status), usage] {
        self->OnDone(seq, status, usage);
      });
    };
    gen.handle = server_->service->Start(std::move(req), std::move(on_chunk), std::move(on_done));
    ArmWatch();
    if (gen.context.stream) ArmKeepAlive(seq);
  }

  void OnChunk(uint64_t seq, CompletionChunk chunk) {
    if (!gen_ || gen_->seq != seq || gen_->done) return;
    Generation& gen = *gen_;
    const int64_t now = RealClock::Get()->NowNanos();
    if (!gen.any_chunk) {
      server_->metrics.time_to_first_token_seconds->Observe((now - gen.start_ns) * 1e-9);
    } else {
      server_->metrics.inter_token_latency_seconds->Observe((now - gen.last_chunk_ns) * 1e-9);
    }
    gen.any_chunk = true;
    gen.last_chunk_ns = now;
    if (chunk.choice_index < 0 || chunk.choice_index >= static_cast<int>(gen.choices.size())) {
      CRESCENT_LOG(error, "{}: chunk for choice {} of {} dropped", gen.context.request_id,
                   chunk.choice_index, gen.choices.size());
      return;
    }
    ChoiceResult& choice = gen.choices[chunk.choice_index];
    if (chunk.finish_reason) choice.finish_reason = *chunk.finish_reason;
    if (!gen.context.stream) {
      choice.text += chunk.text;
      for (auto& lp : chunk.logprobs) choice.logprobs.push_back(std::move(lp));
      return;
    }
    if (closed_) return;
    const size_t i = static_cast<size_t>(chunk.choice_index);
    if (gen.tool_streams.empty()) {
      SendChunk(gen, chunk);
      return;
    }
    for (const CompletionChunk& c : gen.tool_streams[i].Push(std::move(chunk))) SendChunk(gen, c);
  }

  void SendChunk(Generation& gen, const CompletionChunk& chunk) {
    const size_t i = static_cast<size_t>(chunk.choice_index);
    const bool first = !gen.started[i];
    gen.started[i] = true;
    std::string payload = StreamChunkJson(gen.context, gen.model, chunk, first, gen.offsets[i]);
    gen.offsets[i] += chunk.text.size();
    SendEvent(absl::StrCat("data: ", payload, "\n\n"));
  }

  void OnDone(uint64_t seq, const absl::Status& status, const Usage& usage) {
    if (!gen_ || gen_->seq != seq || gen_->done) return;
    Generation& gen = *gen_;
    gen.done = true;
    gen.handle.reset();
    keepalive_timer_.cancel();

    ServerMetrics& m = server_->metrics;
    const int64_t now = RealClock::Get()->NowNanos();
    m.e2e_request_latency_seconds->Observe((now - gen.start_ns) * 1e-9);
    if (usage.queue_seconds) m.request_queue_time_seconds->Observe(*usage.queue_seconds);
    std::string reason;
    if (gen.cancelled || status.code() == absl::StatusCode::kCancelled) {
      reason = "abort";
    } else if (!status.ok()) {
      reason = "error";
    } else {
      reason = gen.choices.empty() || gen.choices[0].finish_reason.empty()
                   ? "stop"
                   : gen.choices[0].finish_reason;
    }
    m.RequestSuccess(reason)->Increment();

    // Release the io_context last: this handler still runs on it.
    auto work = std::move(gen.work);
    if (closed_) return;
    if (gen.context.stream && headers_sent_) {
      if (!status.ok()) {
        SendEvent(absl::StrCat("data: ", ErrorJson(HttpErrorFromStatus(status)), "\n\n"));
      } else if (gen.context.include_usage) {
        SendEvent(
            absl::StrCat("data: ", StreamUsageChunkJson(gen.context, gen.model, usage), "\n\n"));
      }
      SendEvent(kDone);
      EndStream();
    } else if (!status.ok()) {
      SendError(HttpErrorFromStatus(status));
    } else if (gen.context.stream) {
      if (gen.context.include_usage) {
        SendEvent(
            absl::StrCat("data: ", StreamUsageChunkJson(gen.context, gen.model, usage), "\n\n"));
      }
      SendEvent(kDone);
      EndStream();
    } else {
      if (UsesTools(gen.context)) {
        for (ChoiceResult& c : gen.choices) {
          ToolCallOutput out = ParseToolCalls(gen.context, c.text, c.finish_reason);
          if (out.calls.empty()) continue;
          c.text = std::move(out.content);
          c.tool_calls = std::move(out.calls);
          c.finish_reason = "tool_calls";
        }
      }
      SendBody(200, kJson, CompletionResponseJson(gen.context, gen.model, gen.choices, usage));
    }
  }

  void CancelGeneration() {
    if (!gen_ || gen_->done || gen_->cancelled) return;
    gen_->cancelled = true;
    if (gen_->handle) gen_->handle->Cancel();
  }

  // --- Watching for a client that goes away while its request runs. ---

  void ArmWatch() {
    if (closed_ || watching_ || reading_) return;
    if (buffer_.size() >= options().max_body_bytes + options().max_header_bytes) return;
    watching_ = true;
    stream_.async_read_some(buffer_.prepare(kWatchReadBytes),
                            beast::bind_front_handler(&Session::OnWatch, shared_from_this()));
  }

  void OnWatch(beast::error_code ec, size_t n) {
    watching_ = false;
    if (closed_) return;
    if (!ec) buffer_.commit(n);
    if (stop_watch_) {
      // FinishExchange() cancelled the watch to read the next request.
      stop_watch_ = false;
      DoRead();
      return;
    }
    if (ec) {
      Close();  // The client closed or reset the connection: cancel its request.
      return;
    }
    if (gen_ && !gen_->done) ArmWatch();
  }

  // --- Responses. ---

  void SendBody(int status, std::string_view content_type, std::string body,
                const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    auto res = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(status), version_);
    res->set(http::field::server, kServerName);
    res->set(http::field::content_type,
             beast::string_view(content_type.data(), content_type.size()));
    if (gen_) res->set("X-Request-Id", gen_->context.request_id);
    for (const auto& [name, value] : headers) res->set(name, value);
    res->keep_alive(keep_alive_);
    res->body() = std::move(body);
    res->prepare_payload();
    const bool close = res->need_eof();
    writing_ = true;
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res, close](beast::error_code ec, size_t) {
                        self->OnWrite(ec, close);
                      });
  }

  void SendError(const HttpError& error,
                 std::vector<std::pair<std::string, std::string>> headers = {}) {
    if (error.http_status == 429 || error.http_status == 503) {
      headers.emplace_back("Retry-After", absl::StrCat(error.retry_after_seconds.value_or(
                                              options().retry_after_seconds)));
    }
    SendBody(error.http_status, kJson, ErrorJson(error), headers);
  }

  void OnWrite(beast::error_code ec, bool close) {
    writing_ = false;
    if (closed_) return;
    if (ec) {
      Close();
    } else if (close) {
      LingerClose();
    } else {
      FinishExchange();
    }
  }

  // The response is out: read the next request on this connection.
  void FinishExchange() {
    gen_.reset();
    if (watching_) {
      stop_watch_ = true;
      stream_.cancel();  // OnWatch then calls DoRead().
      return;
    }
    DoRead();
  }

  // After an error response that closes the connection, stop sending and read what the client
  // still sends for a moment, so that the kernel does not answer unread data with a reset that
  // could destroy the response before the client reads it.
  void LingerClose() {
    if (watching_ || reading_) {
      Close();
      return;
    }
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(std::chrono::seconds(2));
    DrainSome();
  }

  void DrainSome() {
    if (closed_) return;
    buffer_.consume(buffer_.size());
    stream_.async_read_some(buffer_.prepare(kWatchReadBytes),
                            [self = shared_from_this()](beast::error_code ec, size_t n) {
                              self->drained_ += n;
                              if (ec || self->drained_ > kLingerDrainBytes) {
                                self->Close();
                              } else {
                                self->DrainSome();
                              }
                            });
  }

  // --- Server-Sent Events. ---

  void EnsureStreamHeaders() {
    if (headers_sent_) return;
    headers_sent_ = true;
    std::string h = absl::StrCat("HTTP/1.", version_ >= 11 ? 1 : 0, " 200 OK\r\n");
    absl::StrAppend(&h, "Server: ", kServerName, "\r\n");
    absl::StrAppend(&h, "Content-Type: text/event-stream; charset=utf-8\r\n");
    absl::StrAppend(&h, "Cache-Control: no-cache\r\n");
    absl::StrAppend(&h, "X-Accel-Buffering: no\r\n");
    if (gen_) absl::StrAppend(&h, "X-Request-Id: ", gen_->context.request_id, "\r\n");
    if (chunked_) absl::StrAppend(&h, "Transfer-Encoding: chunked\r\n");
    absl::StrAppend(&h, keep_alive_ ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
    h += "\r\n";
    pending_out_ += h;
  }

  void AppendFramed(std::string_view data) {
    if (chunked_) {
      char size[32];
      int len = std::snprintf(size, sizeof(size), "%zx\r\n", data.size());
      pending_out_.append(size, static_cast<size_t>(len));
      pending_out_.append(data);
      pending_out_ += "\r\n";
    } else {
      pending_out_.append(data);
    }
  }

  void SendEvent(std::string_view event) {
    EnsureStreamHeaders();
    AppendFramed(event);
    sent_since_tick_ = true;
    Flush();
  }

  void EndStream() {
    if (chunked_) pending_out_ += "0\r\n\r\n";
    stream_end_queued_ = true;
    Flush();
  }

  void Flush() {
    if (closed_ || writing_ || pending_out_.empty()) return;
    in_flight_out_.swap(pending_out_);
    pending_out_.clear();
    writing_ = true;
    net::async_write(stream_, net::buffer(in_flight_out_),
                     beast::bind_front_handler(&Session::OnStreamWrite, shared_from_this()));
  }

  void OnStreamWrite(beast::error_code ec, size_t) {
    writing_ = false;
    in_flight_out_.clear();
    if (closed_) return;
    if (ec) {
      Close();
      return;
    }
    if (!pending_out_.empty()) {
      Flush();
      return;
    }
    if (stream_end_queued_) {
      stream_end_queued_ = false;
      if (!keep_alive_) {
        Close();
      } else {
        FinishExchange();
      }
    }
  }

  void ArmKeepAlive(uint64_t seq) {
    keepalive_timer_.expires_after(
        std::chrono::milliseconds(static_cast<int64_t>(options().sse_keep_alive_seconds * 1000)));
    keepalive_timer_.async_wait(
        [self = shared_from_this(), seq](beast::error_code ec) { self->OnKeepAlive(ec, seq); });
  }

  void OnKeepAlive(beast::error_code ec, uint64_t seq) {
    if (ec || closed_ || !gen_ || gen_->seq != seq || gen_->done) return;
    if (!sent_since_tick_) {
      EnsureStreamHeaders();
      AppendFramed(kKeepAlive);
      Flush();
    }
    sent_since_tick_ = false;
    ArmKeepAlive(seq);
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    keepalive_timer_.cancel();
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
    CancelGeneration();
  }

  // Declared first: destroyed last, after the stream and timer that refer to it.
  std::shared_ptr<net::io_context> ioc_;
  const std::shared_ptr<HttpServer::Impl::SessionRegistry> registry_;
  HttpServer::Impl* const server_;
  const uint64_t id_;
  beast::tcp_stream stream_;
  net::steady_timer keepalive_timer_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;

  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool closed_ = false;
  bool reading_ = false;
  bool watching_ = false;
  bool stop_watch_ = false;
  bool writing_ = false;
  size_t drained_ = 0;

  std::unique_ptr<Generation> gen_;
  uint64_t gen_seq_ = 0;

  bool headers_sent_ = false;
  bool chunked_ = true;
  bool stream_end_queued_ = false;
  bool sent_since_tick_ = false;
  std::string pending_out_;
  std::string in_flight_out_;
};

}  // namespace

absl::Status HttpServer::Impl::Listen() {
  beast::error_code ec;
  net::ip::address address = net::ip::make_address(options.host, ec);
  if (ec)
    return absl::InvalidArgumentError(
        absl::StrCat("bad host '", options.host, "': ", ec.message()));
  tcp::endpoint endpoint(address, options.port);
  auto fail = [&](const char* what) {
    return absl::UnavailableError(
        absl::StrCat(what, " ", options.host, ":", options.port, ": ", ec.message()));
  };
  acceptor.open(endpoint.protocol(), ec);
  if (ec) return fail("opening socket for");
  acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (ec) return fail("setting SO_REUSEADDR on");
  acceptor.bind(endpoint, ec);
  if (ec) return fail("binding");
  acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return fail("listening on");
  port = acceptor.local_endpoint(ec).port();
  if (ec) return fail("reading the port of");
  return absl::OkStatus();
}

void HttpServer::Impl::DoAccept() {
  acceptor.async_accept(net::make_strand(*ioc), [this](beast::error_code ec, tcp::socket socket) {
    OnAccept(ec, std::move(socket));
  });
}

void HttpServer::Impl::OnAccept(beast::error_code ec, tcp::socket socket) {
  if (!acceptor.is_open()) return;
  if (ec) {
    // Out of file descriptors and the like: back off instead of spinning.
    CRESCENT_LOG(warn, "accept failed: {}", ec.message());
    accept_timer.expires_after(std::chrono::milliseconds(50));
    accept_timer.async_wait([this](beast::error_code timer_ec) {
      if (!timer_ec) DoAccept();
    });
    return;
  }
  beast::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  uint64_t id;
  {
    absl::MutexLock lock(&session_registry->mu);
    id = ++session_registry->next_id;
  }
  auto session = std::make_shared<Session>(std::move(socket), this, id);
  if (session_registry->Register(id, session)) session->Start();
  DoAccept();
}

void HttpServer::Impl::Stop() {
  std::vector<std::shared_ptr<Session>> live;
  {
    SessionRegistry& r = *session_registry;
    absl::MutexLock lock(&r.mu);
    if (r.stopping) return;
    r.stopping = true;
    for (auto& [id, weak] : r.sessions) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
  }
  net::post(acceptor.get_executor(), [this] {
    beast::error_code ignored;
    acceptor.close(ignored);
    accept_timer.cancel();
  });
  for (auto& s : live) s->Shutdown();
  live.clear();
  work.reset();
  for (std::thread& t : threads) t.join();
  threads.clear();
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(); }

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Create(const HttpServerOptions& options,
                                                               CompletionService* service,
                                                               MetricsRegistry* metrics) {
  if (options.num_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_threads must be at least 1, got ", options.num_threads));
  }
  auto impl = std::make_unique<Impl>(options, service, metrics);
  if (absl::Status status = impl->Listen(); !status.ok()) return status;
  impl->DoAccept();
  for (int i = 0; i < options.num_threads; ++i) {
    impl->threads.emplace_back([ioc = impl->ioc] { ioc->run(); });
  }
  CRESCENT_LOG(info, "HTTP server listening on {}:{}", options.host, impl->port);
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

uint16_t HttpServer::port() const { return impl_->port; }

void HttpServer::Stop() { impl_->Stop(); }

MetricsRegistry* HttpServer::metrics_registry() { return impl_->registry; }

}  // namespace crescent::server
