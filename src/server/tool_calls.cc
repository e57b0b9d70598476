#include "src/server/tool_calls.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "src/engine/json_schema.h"
#include "src/server/json_nesting.h"
#include "src/server/openai_protocol.h"

namespace crescent::server {
namespace {

using Json = nlohmann::ordered_json;  // keeps the client's key order

constexpr char kOpen[] = "<tool_call>";
constexpr char kClose[] = "</tool_call>";
constexpr std::string_view kOpenTag = kOpen;
constexpr std::string_view kCloseTag = kClose;

bool Constrained(const CompletionRequest& request) {
  return request.tool_choice == ToolChoice::kRequired ||
         request.tool_choice == ToolChoice::kFunction;
}

// A function without parameters takes the empty object.
Json Parameters(const ToolDefinition& tool) {
  if (tool.parameters.empty()) return Json{{"type", "object"}, {"additionalProperties", false}};
  return Json::parse(tool.parameters, nullptr, /*allow_exceptions=*/false);
}

// Rewrites the local $refs of the schema `s` ("#", "#/$defs/X") for the schema moved to JSON
// pointer `to` of a larger one. Only where schemas sit: a property named "$ref", or an enum
// value holding one, is left alone.
void RelocateRefs(Json& s, const std::string& to) {
  if (!s.is_object()) return;
  for (auto& [key, value] : s.items()) {
    if (key == "$ref" && value.is_string()) {
      const std::string ref = value.get<std::string>();
      if (!ref.empty() && ref[0] == '#') value = absl::StrCat("#", to, ref.substr(1));
    } else if (key == "properties" || key == "$defs" || key == "definitions" ||
               key == "patternProperties") {
      if (value.is_object()) {
        for (auto& [name, sub] : value.items()) RelocateRefs(sub, to);
      }
    } else if (key == "items" || key == "additionalProperties" || key == "not" || key == "anyOf" ||
               key == "allOf" || key == "oneOf" || key == "prefixItems") {
      if (value.is_array()) {
        for (Json& sub : value) RelocateRefs(sub, to);
      } else {
        RelocateRefs(value, to);
      }
    }
  }
}

// A tool as the prompts list it: {"type": "function", "function": {name, description, parameters}}.
Json ToolJson(const ToolDefinition& tool) {
  Json fn = {{"name", tool.name}};
  if (!tool.description.empty()) fn["description"] = tool.description;
  fn["parameters"] = Parameters(tool);
  return Json{{"type", "function"}, {"function", fn}};
}

// The key a call's arguments go under in the model's own layout.
const char* ArgumentsKey(ToolPromptStyle style) {
  return style == ToolPromptStyle::kLlama31Json ? "parameters" : "arguments";
}

// A past call as the model writes one: a <tool_call> block, or Llama 3.1's bare JSON object.
std::string RenderCall(const ToolCall& call, ToolPromptStyle style) {
  const Json arguments = Json::parse(call.arguments, nullptr, /*allow_exceptions=*/false);
  const Json body = {{"name", call.name},
                     {ArgumentsKey(style), arguments.is_discarded() ? Json::object() : arguments}};
  if (style == ToolPromptStyle::kLlama31Json) return body.dump();
  return absl::StrCat(kOpen, "\n", body.dump(), "\n", kClose);
}

// Llama 3.1's tools prompt (its chat template with tools_in_user_message): put before the first
// user message's text.
std::string Llama31ToolsPreamble(const std::vector<ToolDefinition>& tools) {
  std::string out =
      "Given the following functions, please respond with a JSON for a function call with its "
      "proper arguments that best answers the given prompt.\n\nRespond in the format "
      "{\"name\": function name, \"parameters\": dictionary of argument name and its value}."
      "Do not use variables.\n\n";
  for (const ToolDefinition& tool : tools) absl::StrAppend(&out, ToolJson(tool).dump(4), "\n\n");
  return out;
}

std::string ToolsSystemBlock(const std::vector<ToolDefinition>& tools, bool parallel) {
  std::string out = absl::StrCat(
      "# Tools\n\nYou may call ", parallel ? "one or more functions" : "one function",
      " to help with the user's request. The functions, one JSON object each, are listed inside "
      "<tools></tools> XML tags:\n<tools>");
  for (const ToolDefinition& tool : tools) absl::StrAppend(&out, "\n", ToolJson(tool).dump());
  absl::StrAppend(&out,
                  "\n</tools>\n\nTo call a function, write a JSON object with its name and "
                  "arguments inside <tool_call></tool_call> XML tags",
                  parallel ? ", one block per call" : "; make at most one call", ":\n", kOpen,
                  "\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n", kClose);
  return out;
}

// One call's JSON ({"name": ..., "arguments": {...}}) naming one of the request's tools.
std::optional<ToolCall> ParseCall(const CompletionRequest& request, std::string_view text) {
  // The model's text: too deep to be a call (and to dump safely) is text.
  if (JsonNestingDepth(text) > kMaxJsonNesting) return std::nullopt;
  const Json j =
      Json::parse(absl::StripAsciiWhitespace(absl::string_view(text.data(), text.size())), nullptr,
                  /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  auto name = j.find("name");
  if (name == j.end() || !name->is_string()) return std::nullopt;
  ToolCall call;
  call.name = name->get<std::string>();
  bool known = false;
  for (const ToolDefinition& tool : request.tools) known = known || tool.name == call.name;
  if (!known) return std::nullopt;
  auto arguments = j.find("arguments");
  if (arguments == j.end()) arguments = j.find("parameters");  // as Llama 3.1 writes them
  if (arguments == j.end()) {
    call.arguments = "{}";
  } else if (arguments->is_object()) {
    call.arguments = arguments->dump();
  } else if (arguments->is_string()) {
    // JSON in a string: its brackets were not counted with the call's.
    const std::string& text_args = arguments->get_ref<const std::string&>();
    if (JsonNestingDepth(text_args) > kMaxJsonNesting) return std::nullopt;
    const Json inner = Json::parse(text_args, nullptr, false);
    if (inner.is_discarded() || !inner.is_object()) return std::nullopt;
    call.arguments = inner.dump();
  } else {
    return std::nullopt;
  }
  call.id = NewToolCallId();
  return call;
}

// The first index from which `text` is a proper prefix of the opening tag; text.size() if none.
size_t PartialTagStart(std::string_view text) {
  const size_t from = text.size() >= kOpenTag.size() ? text.size() - kOpenTag.size() + 1 : 0;
  for (size_t i = from; i < text.size(); ++i) {
    if (kOpenTag.substr(0, text.size() - i) == text.substr(i)) return i;
  }
  return text.size();
}

}  // namespace

bool UsesTools(const CompletionRequest& request) {
  return request.kind == RequestKind::kChat && !request.tools.empty() &&
         request.tool_choice != ToolChoice::kNone;
}

std::string ToolCallSchema(const std::vector<ToolDefinition>& tools, ToolChoice choice,
                           std::string_view function, ToolPromptStyle style) {
  const std::string key = ArgumentsKey(style);
  Json alternatives = Json::array();
  Json defs = Json::object();
  for (const ToolDefinition& tool : tools) {
    if (choice == ToolChoice::kFunction && tool.name != function) continue;
    const std::string def = absl::StrCat("tool", alternatives.size());
    Json parameters = Parameters(tool);
    RelocateRefs(parameters, absl::StrCat("/$defs/", def));
    defs[def] = std::move(parameters);
    alternatives.push_back(Json{
        {"type", "object"},
        {"properties", {{"name", {{"const", tool.name}}}, {key, {{"$ref", "#/$defs/" + def}}}}},
        {"required", {"name", key}}});
  }
  Json out = alternatives.size() == 1 ? alternatives[0] : Json{{"anyOf", alternatives}};
  out["$defs"] = std::move(defs);
  return out.dump();
}

absl::Status ApplyTools(CompletionRequest* request) {
  const ToolPromptStyle style = request->tool_prompt_style;
  for (size_t i = 0; i < request->messages.size(); ++i) {
    ChatMessage& m = request->messages[i];
    if (m.tool_calls.empty()) continue;
    if (style == ToolPromptStyle::kLlama31Json && m.tool_calls.size() > 1) {
      const std::string param = absl::StrCat("messages[", i, "].tool_calls");
      return InvalidParam(param, absl::StrCat("'", param, "' has ", m.tool_calls.size(),
                                              " calls; this model's chat template (Llama 3.1) "
                                              "writes one call per assistant message"));
    }
    std::vector<std::string> blocks;
    for (const ToolCall& call : m.tool_calls) blocks.push_back(RenderCall(call, style));
    const std::string calls = absl::StrJoin(blocks, "\n");
    m.content = m.content.empty() ? calls : absl::StrCat(m.content, "\n", calls);
  }
  if (!UsesTools(*request)) return absl::OkStatus();

  if (Constrained(*request)) {
    // Each parameters schema alone first, so that an error names its tool.
    for (size_t i = 0; i < request->tools.size(); ++i) {
      const ToolDefinition& tool = request->tools[i];
      if (tool.parameters.empty()) continue;
      if (request->tool_choice == ToolChoice::kFunction &&
          tool.name != request->tool_choice_function) {
        continue;
      }
      if (absl::Status s = engine::JsonSchema::Compile(tool.parameters).status(); !s.ok()) {
        const std::string param = absl::StrCat("tools[", i, "].function.parameters");
        return InvalidParam(
            param,
            absl::StrCat("tool '", tool.name, "': ", s.message(), " (with tool_choice '",
                         request->tool_choice == ToolChoice::kRequired ? "required" : "function",
                         "' the arguments are generated under it)"));
      }
    }
    request->json_schema =
        ToolCallSchema(request->tools, request->tool_choice, request->tool_choice_function, style);
    if (absl::Status s = engine::JsonSchema::Compile(request->json_schema).status(); !s.ok()) {
      return InvalidParam("tools", std::string(s.message()));
    }
    request->json_object = true;
  }

  std::vector<ChatMessage>& messages = request->messages;
  if (style == ToolPromptStyle::kLlama31Json) {
    auto user = std::find_if(messages.begin(), messages.end(),
                             [](const ChatMessage& m) { return m.role == "user"; });
    if (user == messages.end()) {
      return InvalidParam("messages",
                          "with tools, this model's chat template (Llama 3.1) puts them in the "
                          "first user message, and 'messages' has none");
    }
    user->content = absl::StrCat(Llama31ToolsPreamble(request->tools), user->content);
    return absl::OkStatus();
  }
  const std::string block = ToolsSystemBlock(request->tools, request->parallel_tool_calls);
  if (!messages.empty() && (messages[0].role == "system" || messages[0].role == "developer")) {
    messages[0].content = absl::StrCat(messages[0].content, "\n\n", block);
  } else {
    ChatMessage system;
    system.role = "system";
    system.content = block;
    messages.insert(messages.begin(), std::move(system));
  }
  return absl::OkStatus();
}

ToolCallOutput ParseToolCalls(const CompletionRequest& request, std::string_view text,
                              std::string_view finish_reason) {
  ToolCallOutput none{std::string(text), {}};
  if (!UsesTools(request) || finish_reason == "length") return none;
  if (Constrained(request)) {
    std::optional<ToolCall> call = ParseCall(request, text);
    if (!call) return none;
    ToolCallOutput out;
    out.calls.push_back(std::move(*call));
    return out;
  }
  ToolCallOutput out;
  // A whole output that is one call's JSON, untagged (as Llama 3.1 answers with tools).
  if (absl::string_view t = absl::StripAsciiWhitespace(absl::string_view(text.data(), text.size()));
      !t.empty() && t.front() == '{') {
    if (std::optional<ToolCall> call = ParseCall(request, std::string_view(t.data(), t.size()))) {
      out.calls.push_back(std::move(*call));
      return out;
    }
  }
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t open = text.find(kOpenTag, pos);
    if (open == std::string_view::npos) {
      out.content += text.substr(pos);
      break;
    }
    out.content += text.substr(pos, open - pos);
    const size_t begin = open + kOpenTag.size();
    const size_t close = text.find(kCloseTag, begin);
    const size_t end = close == std::string_view::npos ? text.size() : close;
    std::optional<ToolCall> call = ParseCall(request, text.substr(begin, end - begin));
    if (!call) return none;
    out.calls.push_back(std::move(*call));
    pos = close == std::string_view::npos ? text.size() : close + kCloseTag.size();
  }
  if (out.calls.empty()) return none;
  out.content = std::string(absl::StripAsciiWhitespace(out.content));
  return out;
}

ToolCallStream::ToolCallStream(const CompletionRequest* request)
    : request_(request), constrained_(Constrained(*request)) {}

CompletionChunk ToolCallStream::Release(size_t n) {
  CompletionChunk out;
  out.choice_index = held_[0].choice_index;
  size_t bytes = 0;
  for (size_t i = 0; i < n; ++i) {
    out.text += held_[i].text;
    bytes += held_[i].text.size();
    for (TokenLogprob& lp : held_[i].logprobs) out.logprobs.push_back(std::move(lp));
  }
  held_.erase(held_.begin(), held_.begin() + static_cast<ptrdiff_t>(n));
  held_text_.erase(0, bytes);
  return out;
}

std::vector<CompletionChunk> ToolCallStream::Push(CompletionChunk chunk) {
  std::vector<CompletionChunk> out;
  const int index = chunk.choice_index;
  std::optional<std::string> finish = std::move(chunk.finish_reason);
  chunk.finish_reason.reset();
  if (!chunk.text.empty() || !chunk.logprobs.empty()) {
    held_text_ += chunk.text;
    held_.push_back(std::move(chunk));
  }
  if (!constrained_ && !in_call_) {
    size_t safe = held_text_.find(kOpenTag);
    const size_t first = held_text_.find_first_not_of(" \t\r\n");
    if (safe != std::string::npos) {
      in_call_ = true;
    } else if (!released_any_ && (first == std::string::npos || held_text_[first] == '{')) {
      // The output so far is blank or opens a JSON object: it may be an untagged call.
      in_call_ = first != std::string::npos;
      safe = 0;
    } else {
      safe = PartialTagStart(held_text_);
    }
    // Whole chunks before the (possible) tag go out.
    size_t n = 0;
    for (size_t end = 0; n < held_.size() && end + held_[n].text.size() <= safe; ++n) {
      end += held_[n].text.size();
    }
    if (n > 0) {
      out.push_back(Release(n));
      released_any_ = true;
    }
  }
  if (!finish) return out;

  CompletionChunk last;
  last.choice_index = index;
  ToolCallOutput parsed = ParseToolCalls(*request_, held_text_, *finish);
  if (!parsed.calls.empty()) {
    if (!parsed.content.empty()) {
      CompletionChunk content;
      content.choice_index = index;
      content.text = std::move(parsed.content);
      out.push_back(std::move(content));
    }
    CompletionChunk calls;
    calls.choice_index = index;
    for (CompletionChunk& c : held_) {
      for (TokenLogprob& lp : c.logprobs) calls.logprobs.push_back(std::move(lp));
    }
    calls.tool_calls = std::move(parsed.calls);
    out.push_back(std::move(calls));
    last.finish_reason = "tool_calls";
    held_.clear();
    held_text_.clear();
  } else {
    if (!held_.empty()) out.push_back(Release(held_.size()));
    last.finish_reason = std::move(finish);
  }
  out.push_back(std::move(last));
  return out;
}

}  // namespace crescent::server
