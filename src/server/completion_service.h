// CompletionService: the one boundary between the HTTP front (src/server) and whatever produces
// tokens (the colocated engine in `crescent serve`, the Conductor's relay to decode nodes).
// The front parses and validates OpenAI requests into CompletionRequest, calls Start(), and turns
// the chunks it gets back into JSON or SSE. Nothing here knows about HTTP.
#ifndef CRESCENT_SRC_SERVER_COMPLETION_SERVICE_H_
#define CRESCENT_SRC_SERVER_COMPLETION_SERVICE_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace crescent::server {

enum class RequestKind { kChat, kCompletion };

// A function the model may call (OpenAI `tools[i].function`).
struct ToolDefinition {
  std::string name;         // [A-Za-z0-9_-]{1,64}
  std::string description;  // may be empty
  std::string parameters;   // a JSON Schema as compact JSON text in the client's key order;
                            // "" when the function takes no arguments
};

// OpenAI `tool_choice`. kNone without tools.
enum class ToolChoice { kNone, kAuto, kRequired, kFunction };

// How tools are written into the conversation (src/server/tool_calls.h), by the model family
// the service's chat template belongs to.
enum class ToolPromptStyle {
  kHermes,      // <tools> in the system message, calls as <tool_call> blocks (ChatML, Qwen 2.5)
  kLlama31Json  // Llama 3.1/3.2: the functions in the first user message, a call as one JSON
                // object {"name", "parameters"}
};

// A call the model made (a response's `tool_calls`), or one an assistant message of the
// conversation made.
struct ToolCall {
  std::string id;  // "call_..."
  std::string name;
  std::string arguments;  // a JSON object, as text
};

// One chat message. `content` is the text: string content as sent, or the text parts of an
// array content joined with "\n".
struct ChatMessage {
  std::string role;  // "system", "developer", "user", "assistant" or "tool".
  std::string content;
  std::optional<std::string> name;
  std::optional<std::string> tool_call_id;
  std::vector<ToolCall> tool_calls;  // assistant messages
};

// One prompt of a /v1/completions request: text, or token ids when `tokens` is set.
struct CompletionPrompt {
  std::string text;
  std::optional<std::vector<int32_t>> tokens;
};

struct SamplingParams {
  double temperature = 1.0;  // [0, 2]; 0 means greedy.
  double top_p = 1.0;        // (0, 1].
  int top_k = -1;            // -1 (or 0) disables.
  double min_p = 0.0;        // [0, 1].
  std::optional<uint64_t> seed;
  double presence_penalty = 0.0;                       // [-2, 2].
  double frequency_penalty = 0.0;                      // [-2, 2].
  double repetition_penalty = 1.0;                     // (0, 2]; 1 = off (vLLM's extension).
  std::vector<std::pair<int32_t, double>> logit_bias;  // token id -> bias in [-100, 100].
};

struct CompletionRequest {
  RequestKind kind = RequestKind::kChat;
  std::string request_id;  // "chatcmpl-..." or "cmpl-..."; set by the front, unique.
  std::string model;       // As the client sent it; may be empty (the service picks its default).
  // kChat: the conversation. kCompletion: empty.
  std::vector<ChatMessage> messages;
  // kCompletion: the prompts, one or more (a batch). kChat: empty.
  std::vector<CompletionPrompt> prompts;
  SamplingParams sampling;
  std::optional<int> max_tokens;  // Unset: up to the context length. 0 only with echo.
  bool ignore_eos = false;        // Go on past end-of-generation tokens (vLLM's extension).
  // vLLM's extensions: end tokens and stop_token_ids are banned before min_tokens tokens;
  // stop_token_ids end generation as an end token does.
  int min_tokens = 0;
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop;  // At most 4 non-empty strings.
  // Choices per prompt. Choice j of prompt p has choice_index p * n + j (OpenAI's order).
  int n = 1;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage.
  bool logprobs = false;
  int top_logprobs = 0;  // [0, 20]; only with logprobs.
  // kCompletion: each choice's text begins with its prompt, and with logprobs its logprobs begin
  // with the prompt's tokens' (the first has none). max_tokens may then be 0: the prompt alone.
  bool echo = false;
  // response_format {"type": "json_object"} or "json_schema": the output is one JSON object,
  // and with json_schema (its "schema", as compact JSON text) one the schema admits.
  bool json_object = false;
  std::string json_schema;
  // kChat: the functions the model may call, and how (src/server/tool_calls.h; the HTTP front
  // writes them into the messages and json_schema before the service sees the request).
  std::vector<ToolDefinition> tools;
  ToolChoice tool_choice = ToolChoice::kNone;
  std::string tool_choice_function;  // kFunction: the function's name
  bool parallel_tool_calls = true;
  ToolPromptStyle tool_prompt_style = ToolPromptStyle::kHermes;  // set by the front (service's)
  std::string user;
  int64_t arrival_unix_seconds = 0;  // The "created" field of the response.

  // Choices in all: n per prompt (n for a chat request).
  int num_choices() const { return n * std::max<int>(1, static_cast<int>(prompts.size())); }
};

struct TopLogprob {
  std::string token;
  double logprob = 0.0;
};

struct TokenLogprob {
  std::string token;
  // Unset for the first token of an echoed prompt (nothing comes before it): null in JSON.
  std::optional<double> logprob = 0.0;
  std::vector<TopLogprob> top_logprobs;
};

// A piece of one choice's output. The last chunk of a choice carries finish_reason ("stop" or
// "length"); after it no more chunks come for that choice_index.
struct CompletionChunk {
  int choice_index = 0;
  std::string text;
  std::vector<ToolCall> tool_calls;  // set by the HTTP front only (src/server/tool_calls.h)
  std::optional<std::string> finish_reason;
  std::vector<TokenLogprob> logprobs;  // One per token in `text` when logprobs was asked for.
};

struct Usage {
  int prompt_tokens = 0;
  int completion_tokens = 0;  // Over all choices.
  int cached_tokens = 0;      // Prompt tokens served from the prefix cache.
  // Seconds the request waited before it was scheduled, if the service knows; the front records
  // it as crescent:request_queue_time_seconds.
  std::optional<double> queue_seconds;
};

// Called zero or more times per request, in order, never concurrently for one request.
using ChunkCallback = std::function<void(CompletionChunk chunk)>;
// Called exactly once, after the last chunk, also after Cancel() (then with a CANCELLED status
// or OK). A non-OK status ends the request with an error; Usage is meaningful when OK. The
// service drops both callbacks after calling this.
using DoneCallback = std::function<void(absl::Status status, Usage usage)>;

// A request in flight. Thread-safe.
class CompletionHandle {
 public:
  virtual ~CompletionHandle() = default;
  // Asks the service to stop generating (the client went away). Idempotent; on_done still comes.
  virtual void Cancel() = 0;
};

struct ModelInfo {
  std::string id;
  int64_t created = 0;  // Unix seconds.
  std::string owned_by = "crescent";
  int max_model_len = 0;
};

// Implemented by the engine (serve) and the Conductor. All methods are thread-safe and must not
// block for long: they are called on the HTTP front's I/O threads.
class CompletionService {
 public:
  virtual ~CompletionService() = default;

  // Checks what only the service can check, before any work is done. Errors:
  // InvalidArgument / OutOfRange (e.g. prompt + max_tokens beyond the context) -> HTTP 400,
  // NotFound (unknown model) -> 404, ResourceExhausted -> 429, Unavailable -> 503.
  virtual absl::Status Validate(const CompletionRequest& request) = 0;

  // Starts generating. Callbacks may run on any thread, also before Start() returns. Errors go
  // to on_done (same codes as Validate). The returned handle may be destroyed before on_done;
  // that does not cancel the request.
  virtual std::unique_ptr<CompletionHandle> Start(CompletionRequest request, ChunkCallback on_chunk,
                                                  DoneCallback on_done) = 0;

  // The models served, for GET /v1/models.
  virtual std::vector<ModelInfo> Models() = 0;

  // POST /tokenize: the token ids a completion of `request` would start from (a chat
  // request's rendered conversation, or the one prompt of a completion request), nothing
  // generated. Errors as Validate's about the prompt and model. Unimplemented by default.
  virtual absl::StatusOr<std::vector<int32_t>> Tokenize(const CompletionRequest& request) {
    return absl::UnimplementedError("this service does not tokenize");
  }
  // POST /detokenize: the text of `tokens`, special tokens included. InvalidArgument for an id
  // outside the vocabulary. Unimplemented by default.
  virtual absl::StatusOr<std::string> Detokenize(const std::vector<int32_t>& tokens) {
    return absl::UnimplementedError("this service does not detokenize");
  }

  // True when the service can take requests (GET /ready).
  virtual bool Ready() = 0;
  // The layout the model expects tools in (the HTTP front writes them into the request).
  virtual ToolPromptStyle tool_prompt_style() { return ToolPromptStyle::kHermes; }
};

}  // namespace crescent::server

#endif  // CRESCENT_SRC_SERVER_COMPLETION_SERVICE_H_
