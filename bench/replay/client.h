// ReplayClient: an open-loop HTTP/1.1 load generator for OpenAI-compatible endpoints
// (Boost.Beast on one io_context thread). Every request is sent at its scheduled time whether
// or not earlier ones have finished, on its own connection, as a streaming /v1/completions (or
// /v1/chat/completions) call with stream_options.include_usage; the SSE stream is timed chunk
// by chunk into a RequestRecord.
#ifndef CRESCENT_BENCH_REPLAY_CLIENT_H_
#define CRESCENT_BENCH_REPLAY_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/replay/metrics.h"

namespace crescent::bench {

enum class PromptMode {
  kTokens,  // /v1/completions with "prompt": [token ids] (exact control of tokens).
  kText,    // /v1/completions with the prompt as words (for endpoints without token prompts).
  kChat,    // /v1/chat/completions, the words as one user message.
};

struct ClientOptions {
  std::string endpoint = "http://127.0.0.1:8000";  // http://host[:port][/prefix]; no https.
  std::string api_key;  // Non-empty: sent as "Authorization: Bearer <key>".
  std::string model;    // Non-empty: sent as "model".
  PromptMode mode = PromptMode::kTokens;
  double temperature = 0;
  bool ignore_eos = true;  // Sends "ignore_eos": true so outputs have the asked-for length.
  double connect_timeout_s = 10;
  double request_timeout_s = 600;  // From send to the end of the response.
};

// One request to send.
struct ReplayItem {
  double send_at_s = 0;         // From the start of Run().
  std::vector<int32_t> tokens;  // The prompt (kTokens), or the source of its words.
  std::string text;             // The prompt in kText / kChat mode.
  int64_t max_tokens = 1;
};

struct Endpoint {
  std::string host;
  std::string port;
  std::string prefix;  // Path prefix without a trailing '/', e.g. "" or "/openai".
};

// Parses "http://host[:port][/prefix]" (port 80 by default; "[::1]" for IPv6).
// Errors: InvalidArgument naming what is wrong (https is not supported).
absl::StatusOr<Endpoint> ParseEndpoint(std::string_view url);

// The JSON body sent for `item` (exposed for tests).
std::string BuildRequestBody(const ClientOptions& options, const ReplayItem& item);

// Called on the client's thread about twice a second and after the last request:
// (finished, total, in flight).
using ProgressCallback = std::function<void(int64_t, int64_t, int64_t)>;

class ReplayClient {
 public:
  // Resolves the endpoint. Errors: InvalidArgument for a bad URL, Unavailable when the host does
  // not resolve.
  static absl::StatusOr<std::unique_ptr<ReplayClient>> Create(const ClientOptions& options);
  ~ReplayClient();

  // Sends `items` open-loop (each at its send_at_s; they need not be sorted) and blocks until
  // every one has finished or timed out. Returns one record per item, in the items' order
  // (index = position). Network and HTTP errors are recorded per request, not returned.
  // Not thread-safe; may be called again after it returns.
  std::vector<RequestRecord> Run(const std::vector<ReplayItem>& items,
                                 const ProgressCallback& progress);

  class Impl;

 private:
  explicit ReplayClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace crescent::bench

#endif  // CRESCENT_BENCH_REPLAY_CLIENT_H_
