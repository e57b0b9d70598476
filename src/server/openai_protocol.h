// The OpenAI wire format: request bodies to CompletionRequest, results to response JSON and SSE
// chunks, absl::Status to OpenAI error JSON and HTTP status. Pure functions, no I/O; all are
// thread-safe.
#ifndef CRESCENT_SRC_SERVER_OPENAI_PROTOCOL_H_
#define CRESCENT_SRC_SERVER_OPENAI_PROTOCOL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "src/server/completion_service.h"

namespace crescent::server {

// Limits enforced by the parsers.
inline constexpr int kMaxStopSequences = 4;
inline constexpr int kMaxChoices = 16;        // n
inline constexpr int kMaxBatchChoices = 128;  // n times the prompts of a batched completion
inline constexpr int kMaxTopLogprobs = 20;
inline constexpr int kMaxTools = 128;
// max_tokens of a /v1/completions request that does not set it (OpenAI's and vLLM's default
// for the legacy endpoint; chat requests default to the rest of the context).
inline constexpr int kDefaultCompletionMaxTokens = 16;
inline constexpr size_t kMaxStopTokenIds = 64;

// Parse a POST /v1/chat/completions or /v1/completions body. Unknown fields are ignored.
// request_id is left empty (the server sets it). Errors: InvalidArgument for malformed JSON,
// wrong types, out-of-range values and unsupported features, with the offending field's path
// ("messages[2].content[0].type", "temperature") attached; read it back with ParamOf().
absl::StatusOr<CompletionRequest> ParseChatCompletionRequest(std::string_view body);
absl::StatusOr<CompletionRequest> ParseCompletionRequest(std::string_view body);

// POST /tokenize (vLLM's): a chat body ("messages", tools included) or a completion body with
// one "prompt". Errors as those parsers'; several prompts are InvalidArgument naming "prompt".
absl::StatusOr<CompletionRequest> ParseTokenizeRequest(std::string_view body);
// POST /detokenize: {"tokens": [ids]}; InvalidArgument naming "tokens" or "tokens[i]".
absl::StatusOr<std::vector<int32_t>> ParseDetokenizeRequest(std::string_view body);
// {"count", "max_model_len", "tokens"} and {"prompt"}.
std::string TokenizeResponseJson(const std::vector<int32_t>& tokens, int max_model_len);
std::string DetokenizeResponseJson(std::string_view text);

// An InvalidArgument status that names the request field `param`.
absl::Status InvalidParam(std::string_view param, std::string_view message);
// The field attached by InvalidParam(), or "" if none.
std::string ParamOf(const absl::Status& status);

// How a status is shown to an HTTP client.
struct HttpError {
  int http_status = 500;
  std::string message;
  std::string type;   // "invalid_request_error", "authentication_error", ...
  std::string param;  // "" renders as null.
  std::string code;   // "" renders as null.
  // Retry-After for 429/503, when the status carried one (WithRetryAfter); else the server's.
  std::optional<int> retry_after_seconds;
};

// Attaches a retry hint (seconds, rounded up, at least 1) to a ResourceExhausted or Unavailable
// status; the HTTP front sends it as Retry-After. Returns the status.
absl::Status WithRetryAfter(absl::Status status, double seconds);
// The hint attached by WithRetryAfter, if any.
std::optional<int> RetryAfterOf(const absl::Status& status);

// InvalidArgument/OutOfRange -> 400, NotFound -> 404, ResourceExhausted -> 429,
// Unavailable -> 503, Unauthenticated -> 401, PermissionDenied -> 403, Unimplemented -> 501,
// anything else -> 500.
// REQUIRES: !status.ok().
HttpError HttpErrorFromStatus(const absl::Status& status);

// {"error":{"message":...,"type":...,"param":...,"code":...}}
std::string ErrorJson(const HttpError& error);

// "chatcmpl-<24 random alphanumerics>" or "cmpl-<...>". Thread-safe.
std::string NewRequestId(RequestKind kind);
// "call_<24 random alphanumerics>", a tool call's id. Thread-safe.
std::string NewToolCallId();

// The text, finish reason and logprobs of one finished choice (non-streaming responses).
struct ChoiceResult {
  std::string text;           // with tool_calls: the content besides them ("" renders as null)
  std::string finish_reason;  // "" renders as null.
  std::vector<TokenLogprob> logprobs;
  std::vector<ToolCall> tool_calls;
};

// A whole chat.completion or text_completion object. `model` is the name to report.
std::string CompletionResponseJson(const CompletionRequest& request, std::string_view model,
                                   const std::vector<ChoiceResult>& choices, const Usage& usage);

// One SSE payload (without "data: "): a chat.completion.chunk or text_completion chunk with one
// choice. `first_for_choice` puts the assistant role into a chat delta; `text_offset` is the
// choice's text length before this chunk (completions logprobs).
std::string StreamChunkJson(const CompletionRequest& request, std::string_view model,
                            const CompletionChunk& chunk, bool first_for_choice,
                            size_t text_offset);

// The final usage chunk of a stream (empty choices), sent when include_usage is set.
std::string StreamUsageChunkJson(const CompletionRequest& request, std::string_view model,
                                 const Usage& usage);

// GET /v1/models: {"object":"list","data":[{"id","object":"model","created","owned_by"}...]}.
std::string ModelsJson(const std::vector<ModelInfo>& models);
// GET /v1/models/{id}: one such model object.
std::string ModelJson(const ModelInfo& model);

}  // namespace crescent::server

#endif  // CRESCENT_SRC_SERVER_OPENAI_PROTOCOL_H_
