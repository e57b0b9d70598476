#include "src/server/openai_protocol.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "src/server/json_nesting.h"

namespace crescent::server {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

constexpr char kMinimalChat[] = R"({"model":"m","messages":[{"role":"user","content":"hi"}]})";

// Parses a chat body built from the minimal one with `patch` merged in.
absl::StatusOr<CompletionRequest> ChatWith(const json& patch) {
  json body = json::parse(kMinimalChat);
  body.merge_patch(patch);
  return ParseChatCompletionRequest(body.dump());
}

absl::StatusOr<CompletionRequest> CompletionWith(const json& patch) {
  json body = {{"model", "m"}, {"prompt", "Once upon"}};
  body.merge_patch(patch);
  return ParseCompletionRequest(body.dump());
}

// Expects a 400 naming `param`.
void ExpectParamError(const absl::StatusOr<CompletionRequest>& r, const std::string& param) {
  ASSERT_FALSE(r.ok()) << "expected an error for " << param;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_EQ(ParamOf(r.status()), param) << r.status();
  EXPECT_EQ(HttpErrorFromStatus(r.status()).http_status, 400);
}

TEST(ParseChatTest, MinimalHasDefaults) {
  auto r = ParseChatCompletionRequest(kMinimalChat);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->kind, RequestKind::kChat);
  EXPECT_EQ(r->model, "m");
  ASSERT_EQ(r->messages.size(), 1u);
  EXPECT_EQ(r->messages[0].role, "user");
  EXPECT_EQ(r->messages[0].content, "hi");
  EXPECT_EQ(r->n, 1);
  EXPECT_FALSE(r->stream);
  EXPECT_FALSE(r->include_usage);
  EXPECT_FALSE(r->max_tokens.has_value());
  EXPECT_DOUBLE_EQ(r->sampling.temperature, 1.0);
  EXPECT_DOUBLE_EQ(r->sampling.top_p, 1.0);
  EXPECT_EQ(r->sampling.top_k, -1);
  EXPECT_FALSE(r->sampling.seed.has_value());
  EXPECT_TRUE(r->stop.empty());
  EXPECT_FALSE(r->logprobs);
  EXPECT_FALSE(r->json_object);
}

TEST(ParseChatTest, ResponseFormat) {
  auto r = ChatWith({{"response_format", {{"type", "json_object"}}}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->json_object);
  r = ChatWith({{"response_format", {{"type", "text"}}}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->json_object);
  r = ChatWith({{"response_format", nullptr}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->json_object);
  r = ChatWith(
      {{"response_format",
        {{"type", "json_schema"},
         {"json_schema", {{"name", "p"}, {"strict", true}, {"schema", {{"type", "object"}}}}}}}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->json_object);
  EXPECT_EQ(r->json_schema, R"({"type":"object"})");
  // The schema keeps the client's key order (properties are generated in that order).
  r = ParseChatCompletionRequest(
      R"({"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema",)"
      R"("json_schema":{"schema":{"type":"object","properties":{"zeta":{},"alpha":{}}}}}})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->json_schema, R"({"type":"object","properties":{"zeta":{},"alpha":{}}})");
  // Without a schema: any object.
  r = ChatWith({{"response_format", {{"type", "json_schema"}, {"json_schema", {{"name", "p"}}}}}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->json_object);
  EXPECT_TRUE(r->json_schema.empty());
}

TEST(ParseChatTest, EveryField) {
  json patch = {
      {"messages",
       {{{"role", "system"}, {"content", "be brief"}},
        {{"role", "developer"}, {"content", "dev"}},
        {{"role", "user"},
         {"content", {{{"type", "text"}, {"text", "a"}}, {{"type", "text"}, {"text", "b"}}}},
         {"name", "bob"}},
        {{"role", "assistant"}, {"content", nullptr}},
        {{"role", "tool"}, {"content", "42"}, {"tool_call_id", "call_1"}}}},
      {"stream", true},
      {"stream_options", {{"include_usage", true}}},
      {"max_tokens", 50},
      {"temperature", 0.5},
      {"top_p", 0.9},
      {"top_k", 40},
      {"min_p", 0.05},
      {"seed", 1234},
      {"stop", {"\n\n", "END"}},
      {"n", 3},
      {"presence_penalty", 0.5},
      {"frequency_penalty", -0.5},
      {"repetition_penalty", 1.1},
      {"ignore_eos", true},
      {"min_tokens", 7},
      {"stop_token_ids", {2, 0}},
      {"logit_bias", {{"50256", -100}, {"7", 2.5}}},
      {"logprobs", true},
      {"top_logprobs", 5},
      {"user", "u-1"},
      {"some_future_field", {{"x", 1}}}};
  auto r = ChatWith(patch);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->messages.size(), 5u);
  EXPECT_EQ(r->messages[1].role, "developer");
  EXPECT_EQ(r->messages[2].content, "a\nb");
  EXPECT_EQ(r->messages[2].name, "bob");
  EXPECT_EQ(r->messages[3].content, "");
  EXPECT_EQ(r->messages[4].tool_call_id, "call_1");
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_EQ(r->max_tokens, 50);
  EXPECT_DOUBLE_EQ(r->sampling.temperature, 0.5);
  EXPECT_DOUBLE_EQ(r->sampling.top_p, 0.9);
  EXPECT_EQ(r->sampling.top_k, 40);
  EXPECT_DOUBLE_EQ(r->sampling.min_p, 0.05);
  EXPECT_EQ(r->sampling.seed, 1234u);
  EXPECT_THAT(r->stop, ::testing::ElementsAre("\n\n", "END"));
  EXPECT_EQ(r->n, 3);
  EXPECT_DOUBLE_EQ(r->sampling.presence_penalty, 0.5);
  EXPECT_DOUBLE_EQ(r->sampling.frequency_penalty, -0.5);
  EXPECT_DOUBLE_EQ(r->sampling.repetition_penalty, 1.1);
  EXPECT_TRUE(r->ignore_eos);
  EXPECT_EQ(r->min_tokens, 7);
  EXPECT_THAT(r->stop_token_ids, ::testing::ElementsAre(2, 0));
  EXPECT_THAT(r->sampling.logit_bias,
              ::testing::UnorderedElementsAre(std::pair<int32_t, double>(50256, -100.0),
                                              std::pair<int32_t, double>(7, 2.5)));
  EXPECT_TRUE(r->logprobs);
  EXPECT_EQ(r->top_logprobs, 5);
  EXPECT_EQ(r->user, "u-1");
}

TEST(ParseChatTest, MaxCompletionTokensWinsAndStopString) {
  auto r = ChatWith({{"max_tokens", 10}, {"max_completion_tokens", 20}, {"stop", "###"}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->max_tokens, 20);
  EXPECT_THAT(r->stop, ::testing::ElementsAre("###"));
  // Integral floats are accepted where integers are expected.
  r = ChatWith({{"max_tokens", 16.0}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->max_tokens, 16);
  // Explicit nulls mean "default".
  r = ChatWith({{"temperature", nullptr}});  // merge_patch drops nulls; send raw instead.
  auto raw = ParseChatCompletionRequest(
      R"({"messages":[{"role":"user","content":"x"}],"temperature":null,"stop":null,"n":null})");
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_DOUBLE_EQ(raw->sampling.temperature, 1.0);
  EXPECT_EQ(raw->n, 1);
}

TEST(ParseChatTest, MalformedBodies) {
  for (const char* body : {"", "{", "not json", "[1,2]", "\"str\"", "{\"messages\":[}"}) {
    auto r = ParseChatCompletionRequest(body);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(HttpErrorFromStatus(r.status()).http_status, 400);
  }
}

// Nesting that recursive code (dumping a schema, walking tool arguments) could not take is a
// 400 before anything walks it: here a million levels, which crashed the server before.
TEST(ParseChatTest, TooDeeplyNestedBodiesAreRefused) {
  const int n = 1000000;
  std::string deep_schema = R"({"messages":[{"role":"user","content":"hi"}],)"
                            R"("response_format":{"type":"json_schema","json_schema":)"
                            R"({"name":"x","schema":)";
  for (int i = 0; i < n; ++i) deep_schema += R"({"a":)";
  deep_schema += "1";
  deep_schema += std::string(n, '}');
  deep_schema += "}}}";
  auto r = ParseChatCompletionRequest(deep_schema);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("levels deep"), std::string_view::npos) << r.status();
  auto c = ParseCompletionRequest(R"({"prompt":"x","extra":)" + std::string(n, '[') +
                                  std::string(n, ']') + "}");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(HttpErrorFromStatus(c.status()).http_status, 400);
  // Within the limit, deep but legal nesting parses.
  std::string fine = R"({"messages":[{"role":"user","content":"hi"}],"extra":)";
  fine += std::string(kMaxJsonNesting - 1, '[') + std::string(kMaxJsonNesting - 1, ']') + "}";
  EXPECT_TRUE(ParseChatCompletionRequest(fine).ok());
  // A past call's arguments are JSON in a string: measured too.
  json args_body = json::parse(R"({"messages":[{"role":"user","content":"hi"},
      {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function",
       "function":{"name":"f","arguments":""}}]},
      {"role":"tool","tool_call_id":"call_1","content":"ok"}]})");
  args_body["messages"][1]["tool_calls"][0]["function"]["arguments"] =
      std::string(100000, '[') + std::string(100000, ']');
  ExpectParamError(ParseChatCompletionRequest(args_body.dump()),
                   "messages[1].tool_calls[0].function.arguments");
}

TEST(ParseChatTest, MessageErrorsNameTheField) {
  ExpectParamError(ParseChatCompletionRequest(R"({"model":"m"})"), "messages");
  ExpectParamError(ChatWith({{"messages", "hi"}}), "messages");
  ExpectParamError(ChatWith({{"messages", json::array()}}), "messages");
  ExpectParamError(ChatWith({{"messages", {1}}}), "messages[0]");
  ExpectParamError(ChatWith({{"messages", {{{"content", "x"}}}}}), "messages[0].role");
  ExpectParamError(ChatWith({{"messages", {{{"role", "wizard"}, {"content", "x"}}}}}),
                   "messages[0].role");
  ExpectParamError(ChatWith({{"messages", {{{"role", 3}, {"content", "x"}}}}}), "messages[0].role");
  ExpectParamError(ChatWith({{"messages", {{{"role", "user"}}}}}), "messages[0].content");
  ExpectParamError(ChatWith({{"messages", {{{"role", "user"}, {"content", 5}}}}}),
                   "messages[0].content");
  ExpectParamError(
      ChatWith({{"messages",
                 {{{"role", "user"}, {"content", "ok"}},
                  {{"role", "user"},
                   {"content",
                    {{{"type", "text"}, {"text", "a"}},
                     {{"type", "image_url"}, {"image_url", {{"url", "http://x"}}}}}}}}}}),
      "messages[1].content[1].type");
  auto r = ChatWith({{"messages", {{{"role", "user"}, {"content", {{{"type", "input_audio"}}}}}}}});
  ExpectParamError(r, "messages[0].content[0].type");
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("input_audio"));
  ExpectParamError(ChatWith({{"messages", {{{"role", "user"}, {"content", {{{"text", "a"}}}}}}}}),
                   "messages[0].content[0].type");
  ExpectParamError(
      ChatWith({{"messages", {{{"role", "user"}, {"content", {{{"type", "text"}}}}}}}}),
      "messages[0].content[0].text");
  ExpectParamError(ChatWith({{"messages", {{{"role", "user"}, {"content", {"str"}}}}}}),
                   "messages[0].content[0]");
}

TEST(ParseChatTest, Tools) {
  auto r = ParseChatCompletionRequest(R"({"model": "m",
    "messages": [{"role": "user", "content": "weather?"},
                 {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
                  "type": "function", "function": {"name": "get_weather",
                  "arguments": "{\"city\": \"Oslo\", \"unit\": \"c\"}"}}]},
                 {"role": "tool", "tool_call_id": "call_1", "content": "7 C"}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Now.",
               "parameters": {"type": "object", "properties": {"z": {"type": "string"},
                                                                "a": {"type": "integer"}}}}},
              {"type": "function", "function": {"name": "get-time"}}],
    "tool_choice": {"type": "function", "function": {"name": "get-time"}},
    "parallel_tool_calls": false})");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->tools.size(), 2u);
  EXPECT_EQ(r->tools[0].name, "get_weather");
  EXPECT_EQ(r->tools[0].description, "Now.");
  // The client's key order is kept ("z" before "a").
  EXPECT_EQ(r->tools[0].parameters,
            R"({"type":"object","properties":{"z":{"type":"string"},"a":{"type":"integer"}}})");
  EXPECT_EQ(r->tools[1].parameters, "");
  EXPECT_EQ(r->tool_choice, ToolChoice::kFunction);
  EXPECT_EQ(r->tool_choice_function, "get-time");
  EXPECT_FALSE(r->parallel_tool_calls);
  ASSERT_EQ(r->messages[1].tool_calls.size(), 1u);
  EXPECT_EQ(r->messages[1].tool_calls[0].id, "call_1");
  EXPECT_EQ(r->messages[1].tool_calls[0].arguments, R"({"city":"Oslo","unit":"c"})");
  EXPECT_EQ(r->messages[1].content, "");

  // Defaults: auto with tools, none without; "none" with tools is allowed.
  auto with = ChatWith({{"tools", {{{"type", "function"}, {"function", {{"name", "f"}}}}}}});
  ASSERT_TRUE(with.ok()) << with.status();
  EXPECT_EQ(with->tool_choice, ToolChoice::kAuto);
  EXPECT_TRUE(with->parallel_tool_calls);
  auto without = ChatWith({{"tool_choice", "none"}});
  ASSERT_TRUE(without.ok()) << without.status();
  EXPECT_EQ(without->tool_choice, ToolChoice::kNone);
  auto required = ChatWith({{"tools", {{{"type", "function"}, {"function", {{"name", "f"}}}}}},
                            {"tool_choice", "required"}});
  ASSERT_TRUE(required.ok()) << required.status();
  EXPECT_EQ(required->tool_choice, ToolChoice::kRequired);
}

TEST(ResponseJsonTest, ToolCalls) {
  CompletionRequest req;
  req.kind = RequestKind::kChat;
  req.request_id = "chatcmpl-t";
  ChoiceResult c;
  c.finish_reason = "tool_calls";
  c.tool_calls.push_back({"call_a", "get_weather", R"({"city":"Oslo"})"});
  json j = json::parse(CompletionResponseJson(req, "m", {c}, Usage{}));
  const json& message = j["choices"][0]["message"];
  EXPECT_TRUE(message["content"].is_null());
  EXPECT_EQ(message["tool_calls"][0]["id"], "call_a");
  EXPECT_EQ(message["tool_calls"][0]["type"], "function");
  EXPECT_EQ(message["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(message["tool_calls"][0]["function"]["arguments"], R"({"city":"Oslo"})");
  EXPECT_FALSE(message["tool_calls"][0].contains("index"));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "tool_calls");

  CompletionChunk chunk;
  chunk.tool_calls = c.tool_calls;
  json delta = json::parse(StreamChunkJson(req, "m", chunk, true, 0))["choices"][0]["delta"];
  EXPECT_EQ(delta["role"], "assistant");
  EXPECT_FALSE(delta.contains("content"));
  EXPECT_EQ(delta["tool_calls"][0]["index"], 0);
  EXPECT_EQ(delta["tool_calls"][0]["function"]["name"], "get_weather");
}

TEST(ParseChatTest, RangeAndTypeErrorsNameTheField) {
  struct Case {
    json patch;
    std::string param;
  };
  const std::vector<Case> cases = {
      {{{"model", 5}}, "model"},
      {{{"temperature", 2.5}}, "temperature"},
      {{{"temperature", -0.1}}, "temperature"},
      {{{"temperature", "hot"}}, "temperature"},
      {{{"top_p", 0}}, "top_p"},
      {{{"top_p", 1.5}}, "top_p"},
      {{{"top_k", -2}}, "top_k"},
      {{{"top_k", 1.5}}, "top_k"},
      {{{"min_p", 1.1}}, "min_p"},
      {{{"seed", "x"}}, "seed"},
      {{{"presence_penalty", 3}}, "presence_penalty"},
      {{{"frequency_penalty", -2.5}}, "frequency_penalty"},
      {{{"repetition_penalty", 0}}, "repetition_penalty"},
      {{{"repetition_penalty", 2.5}}, "repetition_penalty"},
      {{{"ignore_eos", 1}}, "ignore_eos"},
      {{{"min_tokens", -1}}, "min_tokens"},
      {{{"min_tokens", 9}, {"max_tokens", 8}}, "min_tokens"},
      {{{"stop_token_ids", 3}}, "stop_token_ids"},
      {{{"stop_token_ids", {1, "x"}}}, "stop_token_ids[1]"},
      {{{"logit_bias", {1, 2}}}, "logit_bias"},
      {{{"logit_bias", {{"abc", 1}}}}, "logit_bias.abc"},
      {{{"logit_bias", {{"-3", 1}}}}, "logit_bias.-3"},
      {{{"logit_bias", {{"12", 101}}}}, "logit_bias.12"},
      {{{"logit_bias", {{"12", "x"}}}}, "logit_bias.12"},
      {{{"max_tokens", 0}}, "max_tokens"},
      {{{"max_tokens", -5}}, "max_tokens"},
      {{{"max_tokens", "10"}}, "max_tokens"},
      {{{"max_tokens", 1.5}}, "max_tokens"},
      {{{"max_completion_tokens", 0}}, "max_completion_tokens"},
      {{{"stop", {"a", "b", "c", "d", "e"}}}, "stop"},
      {{{"stop", ""}}, "stop"},
      {{{"stop", 5}}, "stop"},
      {{{"stop", {"a", 3}}}, "stop[1]"},
      {{{"stop", {"a", ""}}}, "stop[1]"},
      {{{"n", 0}}, "n"},
      {{{"n", 1000}}, "n"},
      {{{"stream", "yes"}}, "stream"},
      {{{"stream_options", 1}}, "stream_options"},
      {{{"stream_options", {{"include_usage", 1}}}}, "stream_options.include_usage"},
      {{{"logprobs", 1}}, "logprobs"},
      {{{"logprobs", true}, {"top_logprobs", 21}}, "top_logprobs"},
      {{{"logprobs", true}, {"top_logprobs", -1}}, "top_logprobs"},
      {{{"top_logprobs", 3}}, "top_logprobs"},
      {{{"user", 7}}, "user"},
      {{{"tools", {{{"type", "function"}}}}}, "tools[0].function"},
      {{{"tools", "x"}}, "tools"},
      {{{"tools", {{{"type", "retrieval"}}}}}, "tools[0].type"},
      {{{"tools", {{{"function", {{"name", "f"}}}}}}}, "tools[0].type"},
      {{{"tools", {{{"type", "function"}, {"function", {{"name", "bad name"}}}}}}},
       "tools[0].function.name"},
      {{{"tools",
         {{{"type", "function"}, {"function", {{"name", "f"}}}},
          {{"type", "function"}, {"function", {{"name", "f"}}}}}}},
       "tools[1].function.name"},
      {{{"tools", {{{"type", "function"}, {"function", {{"name", "f"}, {"parameters", 3}}}}}}},
       "tools[0].function.parameters"},
      {{{"tool_choice", "required"}}, "tool_choice"},
      {{{"tools", {{{"type", "function"}, {"function", {{"name", "f"}}}}}},
        {"tool_choice", "sometimes"}},
       "tool_choice"},
      {{{"tools", {{{"type", "function"}, {"function", {{"name", "f"}}}}}},
        {"tool_choice", {{"type", "function"}, {"function", {{"name", "g"}}}}}},
       "tool_choice.function.name"},
      {{{"tools", {{{"type", "function"}, {"function", {{"name", "f"}}}}}},
        {"response_format", {{"type", "json_object"}}}},
       "response_format"},
      {{{"functions", {{{"name", "f"}}}}}, "functions"},
      {{{"function_call", "auto"}}, "function_call"},
      {{{"parallel_tool_calls", "yes"}}, "parallel_tool_calls"},
      {{{"messages", {{{"role", "user"}, {"content", "x"}, {"tool_calls", json::array()}}}}},
       "messages[0].tool_calls"},
      {{{"messages",
         {{{"role", "assistant"},
           {"tool_calls",
            {{{"id", "c"},
              {"type", "function"},
              {"function", {{"name", "f"}, {"arguments", "not json"}}}}}}}}}},
       "messages[0].tool_calls[0].function.arguments"},
      {{{"response_format",
         {{"type", "json_schema"},
          {"json_schema", {{"schema", {{"type", "object"}, {"patternProperties", 1}}}}}}}},
       "response_format.json_schema.schema"},
      {{{"response_format", {{"type", "json_schema"}}}}, "response_format.json_schema"},
      {{{"response_format", {{"type", "json_schema"}, {"json_schema", {{"schema", 1}}}}}},
       "response_format.json_schema.schema"},
      {{{"response_format", {{"type", "grammar"}}}}, "response_format.type"},
      {{{"response_format", "json_object"}}, "response_format"},
      {{{"response_format", json::object()}}, "response_format.type"},
      {{{"response_format", {{"type", 1}}}}, "response_format.type"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.patch.dump());
    ExpectParamError(ChatWith(c.patch), c.param);
  }
}

TEST(ParseCompletionTest, PromptForms) {
  auto r = CompletionWith(json::object());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->kind, RequestKind::kCompletion);
  ASSERT_EQ(r->prompts.size(), 1u);
  EXPECT_EQ(r->prompts[0].text, "Once upon");
  EXPECT_FALSE(r->prompts[0].tokens.has_value());
  EXPECT_TRUE(r->messages.empty());
  EXPECT_EQ(r->num_choices(), 1);

  r = CompletionWith({{"prompt", {"single"}}});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->prompts.size(), 1u);
  EXPECT_EQ(r->prompts[0].text, "single");

  r = CompletionWith({{"prompt", {1, 2, 3}}, {"logprobs", 2}, {"echo", false}});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->prompts.size(), 1u);
  ASSERT_TRUE(r->prompts[0].tokens.has_value());
  EXPECT_THAT(*r->prompts[0].tokens, ::testing::ElementsAre(1, 2, 3));
  EXPECT_TRUE(r->logprobs);
  EXPECT_EQ(r->top_logprobs, 2);
}

TEST(ParseCompletionTest, EchoAllowsMaxTokensZero) {
  auto r = CompletionWith({{"echo", true}, {"logprobs", 1}, {"max_tokens", 0}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->echo);
  EXPECT_EQ(r->max_tokens, 0);
  EXPECT_EQ(r->top_logprobs, 1);
  r = CompletionWith({{"echo", true}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->echo);
  EXPECT_EQ(r->max_tokens, kDefaultCompletionMaxTokens);
  r = CompletionWith(json::object());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->echo);
}

// Unset, a completion's max_tokens is the legacy endpoint's 16; a chat's stays unset (the
// rest of the context).
TEST(ParseCompletionTest, MaxTokensDefaultsTo16) {
  auto r = ParseCompletionRequest(R"({"prompt":"x"})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->max_tokens, 16);
  r = ParseCompletionRequest(R"({"prompt":"x","max_tokens":null})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->max_tokens, 16);
  r = ParseCompletionRequest(R"({"prompt":"x","max_tokens":300})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->max_tokens, 300);
  EXPECT_FALSE(ParseChatCompletionRequest(R"({"messages":[{"role":"user","content":"x"}]})")
                   ->max_tokens.has_value());
}

TEST(ParseCompletionTest, ResponseFormatToo) {
  auto r = CompletionWith({{"response_format", {{"type", "json_object"}}}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->json_object);
  ExpectParamError(CompletionWith({{"response_format", {{"type", "yaml"}}}}),
                   "response_format.type");
}

TEST(ParseCompletionTest, BatchedPrompts) {
  auto r = CompletionWith({{"prompt", {"a", "b c"}}, {"n", 3}});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->prompts.size(), 2u);
  EXPECT_EQ(r->prompts[1].text, "b c");
  EXPECT_EQ(r->num_choices(), 6);

  r = CompletionWith({{"prompt", {{1, 2}, {3}}}});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->prompts.size(), 2u);
  EXPECT_THAT(*r->prompts[0].tokens, ::testing::ElementsAre(1, 2));
  EXPECT_THAT(*r->prompts[1].tokens, ::testing::ElementsAre(3));

  // Strings and token lists may be mixed.
  r = CompletionWith({{"prompt", {json("x"), json({4, 5})}}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->prompts[0].text, "x");
  EXPECT_THAT(*r->prompts[1].tokens, ::testing::ElementsAre(4, 5));
}

TEST(ParseCompletionTest, ErrorsNameTheField) {
  ExpectParamError(ParseCompletionRequest(R"({"model":"m"})"), "prompt");
  ExpectParamError(CompletionWith({{"prompt", 5}}), "prompt");
  ExpectParamError(CompletionWith({{"prompt", json::array()}}), "prompt");
  ExpectParamError(CompletionWith({{"prompt", {1, -2}}}), "prompt[1]");
  ExpectParamError(CompletionWith({{"prompt", {{1, 2}, {3, -1}}}}), "prompt[1][1]");
  ExpectParamError(CompletionWith({{"prompt", {json({1}), json::array()}}}), "prompt[1]");
  ExpectParamError(CompletionWith({{"prompt", {json("a"), json(5)}}}), "prompt[1]");
  ExpectParamError(CompletionWith({{"prompt", {1, "a"}}}), "prompt[1]");
  ExpectParamError(CompletionWith({{"prompt", std::vector<std::string>(9, "p")}, {"n", 16}}),
                   "prompt");
  ExpectParamError(CompletionWith({{"logprobs", 6}}), "logprobs");
  ExpectParamError(CompletionWith({{"echo", 1}}), "echo");
  ExpectParamError(CompletionWith({{"max_tokens", 0}}), "max_tokens");  // 0 only with echo
  ExpectParamError(CompletionWith({{"max_tokens", -1}, {"echo", true}}), "max_tokens");
  ExpectParamError(CompletionWith({{"suffix", "end"}}), "suffix");
  ExpectParamError(CompletionWith({{"best_of", 3}}), "best_of");
  ExpectParamError(CompletionWith({{"temperature", 9}}), "temperature");
}

TEST(ErrorJsonTest, ShapesAndCodes) {
  struct Case {
    absl::Status status;
    int http;
    std::string type;
  };
  const std::vector<Case> cases = {
      {absl::InvalidArgumentError("bad"), 400, "invalid_request_error"},
      {absl::OutOfRangeError("too long"), 400, "invalid_request_error"},
      {absl::NotFoundError("no model"), 404, "invalid_request_error"},
      {absl::ResourceExhaustedError("busy"), 429, "rate_limit_error"},
      {absl::UnavailableError("down"), 503, "service_unavailable_error"},
      {absl::UnauthenticatedError("who"), 401, "authentication_error"},
      {absl::InternalError("boom"), 500, "server_error"},
      {absl::DataLossError("lost"), 500, "server_error"},
  };
  for (const Case& c : cases) {
    HttpError e = HttpErrorFromStatus(c.status);
    EXPECT_EQ(e.http_status, c.http) << c.status;
    EXPECT_EQ(e.type, c.type) << c.status;
    json j = json::parse(ErrorJson(e));
    ASSERT_TRUE(j.contains("error"));
    const json& err = j["error"];
    EXPECT_EQ(err["message"], std::string(c.status.message()));
    EXPECT_EQ(err["type"], c.type);
    EXPECT_TRUE(err.contains("param"));
    EXPECT_TRUE(err["param"].is_null());
    EXPECT_TRUE(err.contains("code"));
  }
  HttpError e = HttpErrorFromStatus(InvalidParam("messages[0].role", "bad role"));
  json j = json::parse(ErrorJson(e));
  EXPECT_EQ(j["error"]["param"], "messages[0].role");
  EXPECT_EQ(j["error"]["message"], "bad role");
  EXPECT_EQ(HttpErrorFromStatus(absl::NotFoundError("x")).code, "model_not_found");
}

TEST(ResponseJsonTest, ChatCompletion) {
  CompletionRequest req;
  req.kind = RequestKind::kChat;
  req.request_id = NewRequestId(RequestKind::kChat);
  req.arrival_unix_seconds = 1700000000;
  std::vector<ChoiceResult> choices = {{"Hi there", "stop", {}}, {"Yo", "length", {}}};
  Usage usage{.prompt_tokens = 10, .completion_tokens = 5, .cached_tokens = 4};
  json j = json::parse(CompletionResponseJson(req, "smollm2", choices, usage));
  EXPECT_THAT(j["id"].get<std::string>(), ::testing::StartsWith("chatcmpl-"));
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["created"], 1700000000);
  EXPECT_EQ(j["model"], "smollm2");
  ASSERT_EQ(j["choices"].size(), 2u);
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "Hi there");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(j["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(j["choices"][1]["index"], 1);
  EXPECT_EQ(j["choices"][1]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 10);
  EXPECT_EQ(j["usage"]["completion_tokens"], 5);
  EXPECT_EQ(j["usage"]["total_tokens"], 15);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
}

TEST(ResponseJsonTest, TextCompletionWithLogprobs) {
  CompletionRequest req;
  req.kind = RequestKind::kCompletion;
  req.request_id = NewRequestId(RequestKind::kCompletion);
  req.logprobs = true;
  std::vector<ChoiceResult> choices = {
      {"ab", "stop", {{"a", -0.5, {{"a", -0.5}, {"x", -1.5}}}, {"b", -0.25, {}}}}};
  json j = json::parse(CompletionResponseJson(req, "m", choices, Usage{}));
  EXPECT_THAT(j["id"].get<std::string>(), ::testing::StartsWith("cmpl-"));
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], "ab");
  const json& lp = j["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"], json({"a", "b"}));
  EXPECT_EQ(lp["token_logprobs"], json({-0.5, -0.25}));
  EXPECT_EQ(lp["top_logprobs"][0]["x"], -1.5);
  EXPECT_EQ(lp["text_offset"], json({0, 1}));

  // An echoed prompt's first token has no logprob: null, in both lists.
  TokenLogprob first{"Hi", std::nullopt, {}};
  choices = {{"Hi a", "length", {first, {" a", -0.5, {{" a", -0.5}}}}}};
  j = json::parse(CompletionResponseJson(req, "m", choices, Usage{}));
  const json& echoed = j["choices"][0]["logprobs"];
  EXPECT_EQ(echoed["tokens"], json({"Hi", " a"}));
  EXPECT_EQ(echoed["token_logprobs"], json({nullptr, -0.5}));
  EXPECT_TRUE(echoed["top_logprobs"][0].is_null());
  EXPECT_EQ(echoed["top_logprobs"][1][" a"], -0.5);
  EXPECT_EQ(echoed["text_offset"], json({0, 2}));
}

TEST(ResponseJsonTest, StreamChunks) {
  CompletionRequest req;
  req.kind = RequestKind::kChat;
  req.request_id = "chatcmpl-abc";
  req.arrival_unix_seconds = 5;
  req.include_usage = true;
  req.logprobs = true;
  CompletionChunk first{.choice_index = 1, .text = "He", .logprobs = {{"He", -0.1, {}}}};
  json j = json::parse(StreamChunkJson(req, "m", first, /*first_for_choice=*/true, 0));
  EXPECT_EQ(j["object"], "chat.completion.chunk");
  EXPECT_EQ(j["id"], "chatcmpl-abc");
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["index"], 1);
  EXPECT_EQ(j["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["delta"]["content"], "He");
  EXPECT_TRUE(j["choices"][0]["finish_reason"].is_null());
  EXPECT_EQ(j["choices"][0]["logprobs"]["content"][0]["token"], "He");
  EXPECT_EQ(j["choices"][0]["logprobs"]["content"][0]["bytes"], json({72, 101}));
  EXPECT_TRUE(j.contains("usage") && j["usage"].is_null());

  CompletionChunk last{.choice_index = 1, .text = "", .finish_reason = "length"};
  j = json::parse(StreamChunkJson(req, "m", last, /*first_for_choice=*/false, 2));
  EXPECT_FALSE(j["choices"][0]["delta"].contains("role"));
  EXPECT_FALSE(j["choices"][0]["delta"].contains("content"));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");

  j = json::parse(
      StreamUsageChunkJson(req, "m", Usage{.prompt_tokens = 3, .completion_tokens = 4}));
  EXPECT_TRUE(j["choices"].is_array() && j["choices"].empty());
  EXPECT_EQ(j["usage"]["total_tokens"], 7);
}

TEST(ResponseJsonTest, InvalidUtf8InOutputDoesNotThrow) {
  CompletionRequest req;
  req.kind = RequestKind::kChat;
  CompletionChunk chunk{.text = std::string("\xe2\x82", 2)};  // Half of a UTF-8 sequence.
  std::string s = StreamChunkJson(req, "m", chunk, true, 0);
  EXPECT_TRUE(json::accept(s)) << s;
}

TEST(ModelsJsonTest, List) {
  json j = json::parse(ModelsJson({ModelInfo{.id = "a", .created = 1}, ModelInfo{.id = "b"}}));
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 2u);
  EXPECT_EQ(j["data"][0]["id"], "a");
  EXPECT_EQ(j["data"][0]["object"], "model");
  EXPECT_EQ(j["data"][0]["created"], 1);
  EXPECT_EQ(j["data"][0]["owned_by"], "crescent");
}

TEST(RequestIdTest, UniqueAndPrefixed) {
  std::string a = NewRequestId(RequestKind::kChat), b = NewRequestId(RequestKind::kChat);
  EXPECT_NE(a, b);
  EXPECT_EQ(a.size(), std::string("chatcmpl-").size() + 24);
  std::string call = NewToolCallId();
  EXPECT_EQ(call.rfind("call_", 0), 0u);
  EXPECT_EQ(call.size(), 5u + 24);
  EXPECT_NE(call, NewToolCallId());
}

TEST(RetryAfterTest, RoundsUpAndIsReadBack) {
  EXPECT_EQ(RetryAfterOf(absl::ResourceExhaustedError("x")), std::nullopt);
  EXPECT_EQ(RetryAfterOf(WithRetryAfter(absl::ResourceExhaustedError("x"), 2.01)), 3);
  EXPECT_EQ(RetryAfterOf(WithRetryAfter(absl::UnavailableError("x"), 0.2)), 1);
  EXPECT_TRUE(WithRetryAfter(absl::OkStatus(), 5).ok());
  absl::Status s = WithRetryAfter(absl::ResourceExhaustedError("SLO"), 4);
  EXPECT_EQ(s.message(), "SLO");
  HttpError e = HttpErrorFromStatus(s);
  EXPECT_EQ(e.http_status, 429);
  EXPECT_EQ(e.retry_after_seconds, 4);
  EXPECT_EQ(HttpErrorFromStatus(absl::UnavailableError("x")).retry_after_seconds, std::nullopt);
}

}  // namespace
}  // namespace crescent::server
