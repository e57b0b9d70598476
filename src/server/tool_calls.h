// Tool calling (OpenAI `tools` and `tool_choice` on /v1/chat/completions), done in the HTTP
// front so that every service (the colocated engine, the Conductor's cluster) serves it alike:
// the service sees an ordinary chat request, and the front reads the calls out of its text.
//
// The prompt, by request.tool_prompt_style (the service's model family):
//   kHermes (the layout Hermes-style and Qwen 2.5 models are trained on): the functions go into
//     the system message, one JSON object per line inside <tools></tools>, with the instruction
//     to answer a call (with parallel_tool_calls false, at most one) as
//       <tool_call>
//       {"name": "get_weather", "arguments": {"city": "Oslo"}}
//       </tool_call>
//     An assistant message's tool_calls are written back into the conversation in that form;
//     tool results go to the chat template as role "tool" messages (which templates with tool
//     support lay out as <tool_response> blocks).
//   kLlama31Json (Llama 3.1/3.2's template with tools_in_user_message): the instruction and the
//     functions (indented JSON) go before the first user message's text (none: 400); a call is
//     one JSON object {"name": ..., "parameters": {...}}, one per assistant message (more: 400);
//     tool results are "tool" messages, which the template writes as ipython turns. The
//     template's "Environment: ipython" system line is not written.
//
// What comes out, by tool_choice:
//   "none"      the tools are not shown; the answer is text.
//   "auto"      the output is free; if it holds <tool_call> blocks whose JSON names a tool
//               and carries an arguments object, they become the choice's tool_calls (the
//               text outside them its content, null when blank) and finish_reason
//               "tool_calls"; if any block is not such a call, the whole text is content.
//               An output that is, whole, one such call's JSON without the tags (Llama 3.1's
//               way) is a call too; streamed, an output that opens with '{' is therefore held
//               until it ends.
//   "required", {"type": "function", "function": {"name": ...}}
//               the output is constrained (json_schema, src/engine/json_schema.h) to one call,
//               {"name": ..., "arguments": ...} with the arguments the function's parameters
//               schema admits, of any tool or of the named one. A parameters schema outside
//               the structured-output subset is refused (400 naming the tool), since its
//               constraint could not be kept. One call per choice.
// A choice cut short (finish_reason "length") keeps its text as content.
//
// All functions are pure and thread-safe; ToolCallStream is one per streamed choice.
#ifndef CRESCENT_SRC_SERVER_TOOL_CALLS_H_
#define CRESCENT_SRC_SERVER_TOOL_CALLS_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "src/server/completion_service.h"

namespace crescent::server {

// True when `request` is a chat request whose output is read for tool calls.
bool UsesTools(const CompletionRequest& request);

// Writes the tools into `request`'s messages (the system message; assistant tool_calls as
// <tool_call> blocks) and, for "required" or a named function, the constraint (json_object and
// json_schema). A no-op for a chat request without tools in use except for assistant
// tool_calls, which are always written. InvalidParam naming the tool for a parameters schema
// that cannot be kept as a constraint. REQUIRES: request->kind == kChat.
absl::Status ApplyTools(CompletionRequest* request);

// The JSON schema constraining the output to one call of the tools `choice` allows:
// {"name": <const>, "arguments": <parameters>} ("parameters" in kLlama31Json style), a
// top-level anyOf when several.
std::string ToolCallSchema(const std::vector<ToolDefinition>& tools, ToolChoice choice,
                           std::string_view function,
                           ToolPromptStyle style = ToolPromptStyle::kHermes);

// One choice's output read for calls. `calls` empty: none (then `content` is the text as is).
struct ToolCallOutput {
  std::string content;
  std::vector<ToolCall> calls;
};
// `text` is the whole output of a choice that finished with `finish_reason`.
ToolCallOutput ParseToolCalls(const CompletionRequest& request, std::string_view text,
                              std::string_view finish_reason);

// One streamed choice of a request that UsesTools(): text is sent as content as it comes,
// except what is (or may yet become) a tool call, held until the choice finishes. Under a
// constraint ("required", a named function) everything is held.
class ToolCallStream {
 public:
  explicit ToolCallStream(const CompletionRequest* request);  // REQUIRES: outlives this

  // Takes the service's next chunk for the choice; returns the chunks to send now, in order
  // (content, then at the end any tool_calls and the finish_reason, "tool_calls" when calls
  // were made).
  std::vector<CompletionChunk> Push(CompletionChunk chunk);

 private:
  // Moves the held chunks [0, n) into one chunk of content.
  CompletionChunk Release(size_t n);

  const CompletionRequest* request_;
  bool constrained_;
  std::vector<CompletionChunk> held_;
  std::string held_text_;
  bool in_call_ = false;       // a <tool_call> tag, or a '{' opening the output, was seen
  bool released_any_ = false;  // some text went out as content
};

}  // namespace crescent::server

#endif  // CRESCENT_SRC_SERVER_TOOL_CALLS_H_
