#include "bench/replay/client.h"

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "bench/replay/sse.h"
#include "nlohmann/json.hpp"

namespace crescent::bench {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using SteadyTime = std::chrono::steady_clock::time_point;

std::chrono::steady_clock::duration Seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(s));
}

}  // namespace

absl::StatusOr<Endpoint> ParseEndpoint(std::string_view url) {
  constexpr std::string_view kHttp = "http://";
  if (url.substr(0, 8) == "https://") {
    return absl::InvalidArgumentError(
        absl::StrCat("endpoint '", std::string(url), "': https is not supported"));
  }
  if (url.substr(0, kHttp.size()) != kHttp) {
    return absl::InvalidArgumentError(
        absl::StrCat("endpoint '", std::string(url), "' must start with http://"));
  }
  std::string_view rest = url.substr(kHttp.size());
  const size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  Endpoint e;
  if (slash != std::string_view::npos) e.prefix = std::string(rest.substr(slash));
  while (!e.prefix.empty() && e.prefix.back() == '/') e.prefix.pop_back();
  if (e.prefix.size() >= 3 && e.prefix.substr(e.prefix.size() - 3) == "/v1")
    e.prefix.resize(e.prefix.size() - 3);
  std::string_view host = authority, port = "80";
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("endpoint '", std::string(url), "': bad IPv6 host"));
    }
    host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') {
        return absl::InvalidArgumentError(
            absl::StrCat("endpoint '", std::string(url), "': bad port"));
      }
      port = authority.substr(close + 2);
    }
  } else if (const size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("endpoint '", std::string(url), "' has no host"));
  }
  if (port.empty() || port.find_first_not_of("0123456789") != std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("endpoint '", std::string(url), "': bad port"));
  }
  e.host = std::string(host);
  e.port = std::string(port);
  return e;
}

std::string BuildRequestBody(const ClientOptions& options, const ReplayItem& item) {
  json body = {{"max_tokens", item.max_tokens},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}},
               {"temperature", options.temperature}};
  if (!options.model.empty()) body["model"] = options.model;
  if (options.ignore_eos) body["ignore_eos"] = true;
  switch (options.mode) {
    case PromptMode::kTokens:
      body["prompt"] = item.tokens;
      break;
    case PromptMode::kText:
      body["prompt"] = item.text;
      break;
    case PromptMode::kChat:
      body["messages"] = json::array({{{"role", "user"}, {"content", item.text}}});
      break;
  }
  return body.dump();
}

class ReplayClient::Impl {
 public:
  Impl(ClientOptions options, Endpoint endpoint, tcp::resolver::results_type resolved)
      : options_(std::move(options)),
        endpoint_(std::move(endpoint)),
        resolved_(std::move(resolved)) {}

  std::vector<RequestRecord> Run(const std::vector<ReplayItem>& items,
                                 const ProgressCallback& progress);

 private:
  class Session;

  double Now() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  void LaunchDue();
  void Tick();
  void OnSessionDone() {
    ++finished_;
    --in_flight_;
    // The progress timer is all that keeps the loop waiting once the last request is done.
    if (finished_ == static_cast<int64_t>(items_->size())) progress_timer_->cancel();
  }

  ClientOptions options_;
  Endpoint endpoint_;
  tcp::resolver::results_type resolved_;
  // Per Run():
  net::io_context* ioc_ = nullptr;
  const std::vector<ReplayItem>* items_ = nullptr;
  std::vector<RequestRecord>* records_ = nullptr;
  std::vector<size_t> order_;  // Item indices by send time.
  size_t next_ = 0;
  std::unique_ptr<net::steady_timer> launch_timer_;
  std::unique_ptr<net::steady_timer> progress_timer_;
  const ProgressCallback* progress_ = nullptr;
  SteadyTime start_;
  int64_t finished_ = 0;
  int64_t in_flight_ = 0;
};

// One request on its own connection. Lives (shared_ptr) until its last handler has run.
class ReplayClient::Impl::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Impl* client, const ReplayItem& item, RequestRecord* record)
      : client_(client),
        item_(item),
        record_(record),
        socket_(*client->ioc_),
        deadline_(*client->ioc_) {}

  void Start() {
    auto self = shared_from_this();
    deadline_.expires_after(Seconds(client_->options_.connect_timeout_s));
    deadline_.async_wait([self](beast::error_code ec) {
      if (!ec) self->OnTimeout();
    });
    net::async_connect(socket_, client_->resolved_,
                       [self](beast::error_code ec, const tcp::endpoint&) { self->OnConnect(ec); });
  }

 private:
  void OnTimeout() {
    timed_out_ = true;
    beast::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

  void OnConnect(beast::error_code ec) {
    if (ec) return Fail(absl::StrCat("connect: ", ec.message()));
    auto self = shared_from_this();
    deadline_.expires_after(Seconds(client_->options_.request_timeout_s));
    deadline_.async_wait([self](beast::error_code ec2) {
      if (!ec2) self->OnTimeout();
    });
    const Options& o = client_->options_;
    const bool chat = o.mode == PromptMode::kChat;
    request_ = http::request<http::string_body>(
        http::verb::post,
        client_->endpoint_.prefix + (chat ? "/v1/chat/completions" : "/v1/completions"), 11);
    request_.set(http::field::host, client_->endpoint_.host);
    request_.set(http::field::content_type, "application/json");
    request_.set(http::field::accept, "text/event-stream");
    if (!o.api_key.empty()) request_.set(http::field::authorization, "Bearer " + o.api_key);
    request_.body() = BuildRequestBody(o, item_);
    request_.prepare_payload();
    record_->sent_s = client_->Now();
    http::async_write(socket_, request_, [self](beast::error_code ec2, size_t) {
      if (ec2) return self->Fail(absl::StrCat("write: ", ec2.message()));
      self->parser_.body_limit(std::numeric_limits<std::uint64_t>::max());
      http::async_read_header(self->socket_, self->buffer_, self->parser_,
                              [self](beast::error_code ec3, size_t) { self->OnHeader(ec3); });
    });
  }

  void OnHeader(beast::error_code ec) {
    if (ec) return Fail(absl::StrCat("reading response header: ", ec.message()));
    record_->http_status = static_cast<int>(parser_.get().result_int());
    ReadMore();
  }

  void ReadMore() {
    if (parser_.is_done()) return Finish();
    auto self = shared_from_this();
    http::async_read_some(socket_, buffer_, parser_,
                          [self](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    const double now = client_->Now();
    std::string& body = parser_.get().body();
    if (record_->http_status == 200 && !body.empty()) {
      events_.clear();
      sse_.Feed(body, &events_);
      for (const std::string& event : events_) OnEvent(event, now);
      body.clear();
    } else if (record_->http_status != 200) {
      if (error_body_.size() < 4096) error_body_ += body;
      body.clear();
    }
    if (ec == http::error::end_of_stream || (ec && parser_.is_done())) return Finish();
    if (ec) return Fail(absl::StrCat("reading response: ", ec.message()));
    ReadMore();
  }

  void OnEvent(const std::string& data, double now) {
    if (data == "[DONE]") {
      saw_done_ = true;
      return;
    }
    json j = json::parse(data, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) {
      stream_error_ = "stream chunk is not a JSON object";
      return;
    }
    if (auto err = j.find("error"); err != j.end() && !err->is_null()) {
      stream_error_ = absl::StrCat("error in stream: ", err->dump());
      return;
    }
    bool text = false;
    if (auto choices = j.find("choices"); choices != j.end() && choices->is_array()) {
      for (const json& c : *choices) {
        if (auto t = c.find("text");
            t != c.end() && t->is_string() && !t->get_ref<const std::string&>().empty()) {
          text = true;
        }
        if (auto d = c.find("delta"); d != c.end() && d->is_object()) {
          if (auto t = d->find("content");
              t != d->end() && t->is_string() && !t->get_ref<const std::string&>().empty()) {
            text = true;
          }
        }
      }
    }
    if (text) {
      ++text_chunks_;
      if (record_->first_token_s < 0) {
        record_->first_token_s = now;
      } else {
        record_->gaps_s.push_back(now - last_token_s_);
      }
      last_token_s_ = now;
    }
    if (auto usage = j.find("usage"); usage != j.end() && usage->is_object()) {
      record_->usage_reported = true;
      if (auto v = usage->find("completion_tokens"); v != usage->end() && v->is_number_integer()) {
        record_->output_tokens = v->get<int64_t>();
      }
      if (auto v = usage->find("prompt_tokens"); v != usage->end() && v->is_number_integer()) {
        record_->prompt_tokens = v->get<int64_t>();
      }
      if (auto d = usage->find("prompt_tokens_details"); d != usage->end() && d->is_object()) {
        if (auto v = d->find("cached_tokens"); v != d->end() && v->is_number_integer()) {
          record_->cached_tokens = v->get<int64_t>();
        }
      }
    }
  }

  void Finish() {
    record_->end_s = client_->Now();
    if (!record_->usage_reported) record_->output_tokens = text_chunks_;
    if (record_->http_status == 200) {
      if (!stream_error_.empty()) {
        record_->outcome = Outcome::kFailed;
        record_->error = stream_error_;
      } else if (!saw_done_) {
        record_->outcome = Outcome::kFailed;
        record_->error = "stream ended without [DONE]";
      } else {
        record_->outcome = Outcome::kOk;
      }
    } else {
      record_->outcome = record_->http_status == 429 ? Outcome::kRejected : Outcome::kFailed;
      record_->error =
          absl::StrCat("HTTP ", record_->http_status, ": ", error_body_.substr(0, 300));
    }
    Close();
  }

  void Fail(std::string what) {
    record_->outcome = Outcome::kFailed;
    record_->error = timed_out_ ? absl::StrCat("timed out (", what, ")") : std::move(what);
    Close();
  }

  void Close() {
    deadline_.cancel();
    beast::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    client_->OnSessionDone();
  }

  using Options = ClientOptions;
  Impl* client_;
  const ReplayItem& item_;
  RequestRecord* record_;
  tcp::socket socket_;
  net::steady_timer deadline_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  http::response_parser<http::string_body> parser_;
  SseParser sse_;
  std::vector<std::string> events_;
  std::string error_body_;
  std::string stream_error_;
  double last_token_s_ = 0;
  int64_t text_chunks_ = 0;
  bool saw_done_ = false;
  bool timed_out_ = false;
};

void ReplayClient::Impl::LaunchDue() {
  const double now = Now();
  while (next_ < order_.size() && (*items_)[order_[next_]].send_at_s <= now) {
    const size_t i = order_[next_++];
    RequestRecord& record = (*records_)[i];
    ++in_flight_;
    std::make_shared<Session>(this, (*items_)[i], &record)->Start();
  }
  if (next_ < order_.size()) {
    launch_timer_->expires_at(start_ + Seconds((*items_)[order_[next_]].send_at_s));
    launch_timer_->async_wait([this](beast::error_code ec) {
      if (!ec) LaunchDue();
    });
  }
}

void ReplayClient::Impl::Tick() {
  if (finished_ == static_cast<int64_t>(items_->size())) return;
  if (*progress_) (*progress_)(finished_, static_cast<int64_t>(items_->size()), in_flight_);
  progress_timer_->expires_after(std::chrono::milliseconds(500));
  progress_timer_->async_wait([this](beast::error_code ec) {
    if (!ec) Tick();
  });
}

std::vector<RequestRecord> ReplayClient::Impl::Run(const std::vector<ReplayItem>& items,
                                                   const ProgressCallback& progress) {
  net::io_context ioc(1);
  ioc_ = &ioc;
  items_ = &items;
  progress_ = &progress;
  std::vector<RequestRecord> records(items.size());
  records_ = &records;
  order_.resize(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    order_[i] = i;
    RequestRecord& r = records[i];
    r.index = static_cast<int64_t>(i);
    r.scheduled_s = items[i].send_at_s;
    r.max_tokens = items[i].max_tokens;
    r.prompt_tokens = static_cast<int64_t>(items[i].tokens.size());
  }
  std::stable_sort(order_.begin(), order_.end(),
                   [&](size_t a, size_t b) { return items[a].send_at_s < items[b].send_at_s; });
  next_ = 0;
  finished_ = 0;
  in_flight_ = 0;
  launch_timer_ = std::make_unique<net::steady_timer>(ioc);
  progress_timer_ = std::make_unique<net::steady_timer>(ioc);
  start_ = std::chrono::steady_clock::now();
  LaunchDue();
  Tick();
  // Runs until every request has finished (the progress timer is cancelled then); a final
  // progress call reports completion.
  ioc.run();
  if (progress) progress(finished_, static_cast<int64_t>(items.size()), in_flight_);
  launch_timer_.reset();
  progress_timer_.reset();
  ioc_ = nullptr;
  return records;
}

ReplayClient::ReplayClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ReplayClient::~ReplayClient() = default;

absl::StatusOr<std::unique_ptr<ReplayClient>> ReplayClient::Create(const ClientOptions& options) {
  absl::StatusOr<Endpoint> endpoint = ParseEndpoint(options.endpoint);
  if (!endpoint.ok()) return endpoint.status();
  net::io_context ioc;
  tcp::resolver resolver(ioc);
  beast::error_code ec;
  auto resolved = resolver.resolve(endpoint->host, endpoint->port, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("resolving ", endpoint->host, ":", endpoint->port, ": ", ec.message()));
  }
  return std::unique_ptr<ReplayClient>(
      new ReplayClient(std::make_unique<Impl>(options, *std::move(endpoint), resolved)));
}

std::vector<RequestRecord> ReplayClient::Run(const std::vector<ReplayItem>& items,
                                             const ProgressCallback& progress) {
  return impl_->Run(items, progress);
}

}  // namespace crescent::bench
