#include "src/server/tool_calls.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "src/engine/json_constraint.h"
#include "src/engine/json_schema.h"
#include "src/server/openai_protocol.h"

namespace crescent::server {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using json = nlohmann::json;

constexpr char kWeatherParams[] =
    R"({"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}},)"
    R"("required":["city","days"]})";

CompletionRequest WeatherRequest(ToolChoice choice) {
  CompletionRequest r;
  r.kind = RequestKind::kChat;
  r.messages.push_back({"user", "Weather in Oslo?"});
  r.tools.push_back({"get_weather", "Forecast for a city.", kWeatherParams});
  r.tools.push_back({"get_time", "", ""});
  r.tool_choice = choice;
  return r;
}

// True when `schema` admits `doc` byte by byte through one of its top-level alternatives.
bool Admits(const std::string& schema, const std::string& doc) {
  auto compiled = engine::JsonSchema::Compile(schema);
  EXPECT_TRUE(compiled.ok()) << compiled.status();
  if (!compiled.ok()) return false;
  for (size_t a = 0; a < (*compiled)->roots().size(); ++a) {
    engine::JsonLexer lexer(compiled->get(), static_cast<int>(a));
    if (lexer.Feed(doc) && lexer.complete()) return true;
  }
  return false;
}

TEST(ApplyToolsTest, AutoPutsTheToolsIntoTheSystemMessage) {
  CompletionRequest r = WeatherRequest(ToolChoice::kAuto);
  ASSERT_TRUE(ApplyTools(&r).ok());
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_THAT(r.messages[0].content, HasSubstr("<tools>\n{\"type\":\"function\",\"function\":"
                                               "{\"name\":\"get_weather\",\"description\":"
                                               "\"Forecast for a city.\",\"parameters\":"));
  // A function without parameters takes the empty object.
  EXPECT_THAT(
      r.messages[0].content,
      HasSubstr(
          R"("name":"get_time","parameters":{"type":"object","additionalProperties":false}})"));
  EXPECT_THAT(r.messages[0].content, HasSubstr("<tool_call>"));
  EXPECT_THAT(r.messages[0].content, HasSubstr("one block per call"));
  EXPECT_FALSE(r.json_object);  // free output under auto
  EXPECT_TRUE(r.json_schema.empty());

  // parallel_tool_calls false asks for one call.
  CompletionRequest one = WeatherRequest(ToolChoice::kAuto);
  one.parallel_tool_calls = false;
  ASSERT_TRUE(ApplyTools(&one).ok());
  EXPECT_THAT(one.messages[0].content, HasSubstr("make at most one call"));

  // An existing system message is extended, not replaced.
  CompletionRequest s = WeatherRequest(ToolChoice::kAuto);
  s.messages.insert(s.messages.begin(), {"system", "Be brief."});
  ASSERT_TRUE(ApplyTools(&s).ok());
  ASSERT_EQ(s.messages.size(), 2u);
  EXPECT_THAT(s.messages[0].content, StartsWith("Be brief.\n\n# Tools"));
}

TEST(ApplyToolsTest, NoneLeavesTheConversationButWritesPastCalls) {
  CompletionRequest r = WeatherRequest(ToolChoice::kNone);
  ChatMessage call{"assistant", ""};
  call.tool_calls.push_back({"call_1", "get_weather", R"({"city":"Oslo","days":1})"});
  r.messages.push_back(call);
  ChatMessage result{"tool", "7 C"};
  result.tool_call_id = "call_1";
  r.messages.push_back(result);
  ASSERT_TRUE(ApplyTools(&r).ok());
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[0].content, "Weather in Oslo?");
  EXPECT_EQ(r.messages[1].content,
            "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\",\"days\":1}}"
            "\n</tool_call>");
  EXPECT_EQ(r.messages[2].role, "tool");
  EXPECT_FALSE(UsesTools(r));
}

TEST(ApplyToolsTest, RequiredConstrainsToACallOfAnyTool) {
  CompletionRequest r = WeatherRequest(ToolChoice::kRequired);
  ASSERT_TRUE(ApplyTools(&r).ok());
  EXPECT_TRUE(r.json_object);
  EXPECT_TRUE(Admits(r.json_schema, R"({"name":"get_weather","arguments":{"city":"X","days":2}})"));
  EXPECT_TRUE(Admits(r.json_schema, R"({"name": "get_time", "arguments": {}})"));
  EXPECT_FALSE(Admits(r.json_schema, R"({"name":"get_time","arguments":{"city":"X"}})"));
  EXPECT_FALSE(Admits(r.json_schema, R"({"name":"get_weather","arguments":{"city":"X"}})"));
  EXPECT_FALSE(Admits(r.json_schema, R"({"name":"other","arguments":{}})"));
}

TEST(ApplyToolsTest, NamedFunctionConstrainsToThatOne) {
  CompletionRequest r = WeatherRequest(ToolChoice::kFunction);
  r.tool_choice_function = "get_weather";
  ASSERT_TRUE(ApplyTools(&r).ok());
  EXPECT_TRUE(Admits(r.json_schema, R"({"name":"get_weather","arguments":{"city":"X","days":2}})"));
  EXPECT_FALSE(Admits(r.json_schema, R"({"name": "get_time", "arguments": {}})"));
}

TEST(ApplyToolsTest, ParameterRefsFollowTheirSchema) {
  // $defs and a recursive $ref inside the parameters still resolve once wrapped.
  CompletionRequest r = WeatherRequest(ToolChoice::kRequired);
  r.tools[1].parameters =
      R"({"type":"object","properties":{"node":{"$ref":"#/$defs/Node"}},)"
      R"("$defs":{"Node":{"type":"object","properties":{"v":{"type":"integer"},)"
      R"("next":{"anyOf":[{"$ref":"#/$defs/Node"},{"type":"null"}]}}}}})";
  ASSERT_TRUE(ApplyTools(&r).ok()) << r.json_schema;
  EXPECT_TRUE(
      Admits(r.json_schema,
             R"({"name":"get_time","arguments":{"node":{"v":1,"next":{"v":2,"next":null}}}})"));
}

TEST(ApplyToolsTest, ParametersOutsideTheSubsetAreRefusedNamingTheTool) {
  CompletionRequest r = WeatherRequest(ToolChoice::kRequired);
  r.tools[0].parameters =
      R"({"type":"object","properties":{"city":{"type":"string","pattern":"^A"}}})";
  absl::Status s = ApplyTools(&r);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParamOf(s), "tools[0].function.parameters");
  EXPECT_THAT(std::string(s.message()), HasSubstr("pattern"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("get_weather"));
  // Under auto nothing is constrained, so nothing is refused.
  r.tool_choice = ToolChoice::kAuto;
  EXPECT_TRUE(ApplyTools(&r).ok());
}

// Llama 3.1's layout: the functions before the first user message, calls as bare JSON with
// "parameters", one per assistant message; the constraint uses its key too.
TEST(ApplyToolsTest, Llama31PutsTheToolsIntoTheFirstUserMessage) {
  CompletionRequest r = WeatherRequest(ToolChoice::kAuto);
  r.tool_prompt_style = ToolPromptStyle::kLlama31Json;
  r.messages.insert(r.messages.begin(), {"system", "Be brief."});
  r.messages.push_back(
      {"assistant", "", std::nullopt, std::nullopt, {{"call_1", "get_time", "{}"}}});
  r.messages.push_back({"tool", "12:00", std::nullopt, "call_1", {}});
  r.messages.push_back({"user", "And tomorrow?"});
  ASSERT_TRUE(ApplyTools(&r).ok());
  ASSERT_EQ(r.messages.size(), 5u);
  EXPECT_EQ(r.messages[0].content, "Be brief.");  // the system message is left alone
  EXPECT_THAT(r.messages[1].content,
              StartsWith("Given the following functions, please respond with a JSON for a "
                         "function call with its proper arguments that best answers the given "
                         "prompt.\n\nRespond in the format {\"name\": function name, "
                         "\"parameters\": dictionary of argument name and its value}.Do not use "
                         "variables.\n\n{\n    \"type\": \"function\",\n    \"function\": {\n"
                         "        \"name\": \"get_weather\","));
  EXPECT_THAT(r.messages[1].content, ::testing::EndsWith("}\n\nWeather in Oslo?"));
  EXPECT_EQ(r.messages[2].content, R"({"name":"get_time","parameters":{}})");
  EXPECT_EQ(r.messages[4].content, "And tomorrow?");  // only the first user message

  CompletionRequest required = WeatherRequest(ToolChoice::kRequired);
  required.tool_prompt_style = ToolPromptStyle::kLlama31Json;
  ASSERT_TRUE(ApplyTools(&required).ok());
  EXPECT_TRUE(Admits(required.json_schema,
                     R"({"name":"get_weather","parameters":{"city":"Oslo","days":2}})"));
  EXPECT_FALSE(Admits(required.json_schema,
                      R"({"name":"get_weather","arguments":{"city":"Oslo","days":2}})"));
  ToolCallOutput out = ParseToolCalls(
      required, R"({"name":"get_weather","parameters":{"city":"Oslo","days":2}})", "stop");
  ASSERT_EQ(out.calls.size(), 1u);
  EXPECT_EQ(out.calls[0].arguments, R"({"city":"Oslo","days":2})");

  // No user message to carry the tools; two calls in one assistant message.
  CompletionRequest no_user = WeatherRequest(ToolChoice::kAuto);
  no_user.tool_prompt_style = ToolPromptStyle::kLlama31Json;
  no_user.messages = {{"system", "Be brief."}};
  absl::Status s = ApplyTools(&no_user);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("first user message"));
  CompletionRequest two = WeatherRequest(ToolChoice::kAuto);
  two.tool_prompt_style = ToolPromptStyle::kLlama31Json;
  two.messages.push_back({"assistant",
                          "",
                          std::nullopt,
                          std::nullopt,
                          {{"call_1", "get_time", "{}"}, {"call_2", "get_time", "{}"}}});
  EXPECT_EQ(ApplyTools(&two).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ParseToolCallsTest, AutoReadsBlocks) {
  const CompletionRequest r = WeatherRequest(ToolChoice::kAuto);
  ToolCallOutput out = ParseToolCalls(
      r,
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
      "\"Oslo\", \"days\": 1}}\n</tool_call>\n<tool_call>{\"name\":\"get_time\"}",
      "stop");
  ASSERT_EQ(out.calls.size(), 2u);
  EXPECT_EQ(out.content, "Let me check.");
  EXPECT_EQ(out.calls[0].name, "get_weather");
  EXPECT_EQ(out.calls[0].arguments, R"({"city":"Oslo","days":1})");
  EXPECT_THAT(out.calls[0].id, StartsWith("call_"));
  EXPECT_NE(out.calls[0].id, out.calls[1].id);
  EXPECT_EQ(out.calls[1].arguments, "{}");  // an unclosed last block, no arguments

  // Arguments as a JSON string, as some models write them.
  out = ParseToolCalls(
      r, "<tool_call>{\"name\":\"get_time\",\"arguments\":\"{\\\"z\\\":1}\"}</tool_call>", "stop");
  ASSERT_EQ(out.calls.size(), 1u);
  EXPECT_EQ(out.calls[0].arguments, R"({"z":1})");
  EXPECT_EQ(out.content, "");
}

TEST(ParseToolCallsTest, AutoReadsAnUntaggedCall) {
  const CompletionRequest r = WeatherRequest(ToolChoice::kAuto);
  ToolCallOutput out = ParseToolCalls(
      r, "  {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}\n", "stop");
  ASSERT_EQ(out.calls.size(), 1u);
  EXPECT_EQ(out.calls[0].arguments, R"({"city":"Oslo"})");
  // Other JSON is content.
  for (const std::string text : {"{\"city\": \"Oslo\"}", "{\"name\": \"Ann\"}"}) {
    out = ParseToolCalls(r, text, "stop");
    EXPECT_TRUE(out.calls.empty()) << text;
    EXPECT_EQ(out.content, text);
  }
}

// A model's call nested past kMaxJsonNesting, in the call or in arguments written as a
// string, is not read as a call (reading it would recurse once per level): it stays content.
TEST(ParseToolCallsTest, TooDeepACallIsContent) {
  const CompletionRequest r = WeatherRequest(ToolChoice::kAuto);
  std::string text = R"(<tool_call>{"name":"get_time","arguments":)";
  for (int i = 0; i < 200000; ++i) text += R"({"a":)";
  text += "1" + std::string(200000, '}') + "}</tool_call>";
  ToolCallOutput out = ParseToolCalls(r, text, "stop");
  EXPECT_TRUE(out.calls.empty());
  EXPECT_EQ(out.content.size(), text.size());
  // Arguments written as a JSON string: their nesting hides inside the string from the scan
  // of the call, and is measured on its own.
  text = R"(<tool_call>{"name":"get_time","arguments":")";
  for (int i = 0; i < 200000; ++i) text += R"({\"a\":)";
  text += "1" + std::string(200000, '}') + R"("}</tool_call>)";
  out = ParseToolCalls(r, text, "stop");
  EXPECT_TRUE(out.calls.empty());
  EXPECT_EQ(out.content.size(), text.size());
}

TEST(ParseToolCallsTest, AnythingElseIsContent) {
  const CompletionRequest r = WeatherRequest(ToolChoice::kAuto);
  for (const std::string text :
       {"It is sunny.", "<tool_call>{\"name\":\"launch\",\"arguments\":{}}</tool_call>",
        "<tool_call>{not json}</tool_call>", "<tool_call>[1]</tool_call>",
        "<tool_call>{\"name\":\"get_time\",\"arguments\":3}</tool_call>",
        "<tool_call>{\"name\":\"get_time\"}</tool_call><tool_call>oops</tool_call>"}) {
    ToolCallOutput out = ParseToolCalls(r, text, "stop");
    EXPECT_TRUE(out.calls.empty()) << text;
    EXPECT_EQ(out.content, text);
  }
  // Cut short: kept as text.
  EXPECT_TRUE(
      ParseToolCalls(r, "<tool_call>{\"name\":\"get_time\"}</tool_call>", "length").calls.empty());
  // Without tools in use nothing is read.
  CompletionRequest none = WeatherRequest(ToolChoice::kNone);
  EXPECT_TRUE(
      ParseToolCalls(none, "<tool_call>{\"name\":\"get_time\"}</tool_call>", "stop").calls.empty());
}

TEST(ParseToolCallsTest, ConstrainedOutputIsTheCall) {
  const CompletionRequest r = WeatherRequest(ToolChoice::kRequired);
  ToolCallOutput out = ParseToolCalls(
      r, R"({"name": "get_weather", "arguments": {"city": "Rome", "days": 3}})", "stop");
  ASSERT_EQ(out.calls.size(), 1u);
  EXPECT_EQ(out.calls[0].arguments, R"({"city":"Rome","days":3})");
  EXPECT_EQ(out.content, "");
  EXPECT_TRUE(ParseToolCalls(r, R"({"name": "get_weather", "argu)", "length").calls.empty());
}

CompletionChunk Chunk(std::string text, std::optional<std::string> finish = std::nullopt) {
  CompletionChunk c;
  c.choice_index = 1;
  c.text = std::move(text);
  c.logprobs.push_back({c.text, -0.5, {}});
  c.finish_reason = std::move(finish);
  return c;
}

std::string Texts(const std::vector<CompletionChunk>& chunks) {
  std::string out;
  for (const CompletionChunk& c : chunks) out += c.text;
  return out;
}

TEST(ToolCallStreamTest, StreamsTextAndHoldsWhatMayBeACall) {
  const CompletionRequest r = WeatherRequest(ToolChoice::kAuto);
  ToolCallStream stream(&r);
  EXPECT_EQ(Texts(stream.Push(Chunk("Hi"))), "Hi");
  EXPECT_EQ(Texts(stream.Push(Chunk(" <b"))), " <b");          // "<b" cannot start the tag
  EXPECT_EQ(Texts(stream.Push(Chunk("> ok <tool"))), "");      // "<tool" may
  EXPECT_EQ(Texts(stream.Push(Chunk("s>"))), "> ok <tools>");  // it did not
  EXPECT_EQ(Texts(stream.Push(Chunk(" <tool_"))), "");
  EXPECT_EQ(Texts(stream.Push(Chunk("call>{\"name\":\"get_time\"}"))), "");
  std::vector<CompletionChunk> last = stream.Push(Chunk("</tool_call>", "stop"));
  ASSERT_EQ(last.size(), 2u);
  EXPECT_EQ(last[0].choice_index, 1);
  ASSERT_EQ(last[0].tool_calls.size(), 1u);
  EXPECT_EQ(last[0].tool_calls[0].name, "get_time");
  EXPECT_EQ(last[0].logprobs.size(), 3u);  // the held tokens'
  EXPECT_EQ(last[1].finish_reason, "tool_calls");
  EXPECT_TRUE(last[1].tool_calls.empty());
}

TEST(ToolCallStreamTest, HeldTextThatIsNoCallGoesOutAsContent) {
  const CompletionRequest r = WeatherRequest(ToolChoice::kAuto);
  ToolCallStream stream(&r);
  // Chunks are held whole (a chunk's text and logprobs stay together).
  EXPECT_EQ(Texts(stream.Push(Chunk("a <tool_call>{\"name\":"))), "");
  std::vector<CompletionChunk> last = stream.Push(Chunk("\"nope\"}", "stop"));
  ASSERT_EQ(last.size(), 2u);
  EXPECT_EQ(last[0].text, "a <tool_call>{\"name\":\"nope\"}");
  EXPECT_EQ(last[0].logprobs.size(), 2u);
  EXPECT_EQ(last[1].finish_reason, "stop");
}

TEST(ToolCallStreamTest, AnOutputOpeningAnObjectIsHeld) {
  const CompletionRequest r = WeatherRequest(ToolChoice::kAuto);
  ToolCallStream call(&r);
  EXPECT_TRUE(call.Push(Chunk(" ")).empty());
  EXPECT_TRUE(call.Push(Chunk("{\"name\": \"get_time\"")).empty());
  std::vector<CompletionChunk> last = call.Push(Chunk("}", "stop"));
  ASSERT_EQ(last.size(), 2u);
  EXPECT_EQ(last[0].tool_calls[0].name, "get_time");
  EXPECT_EQ(last[1].finish_reason, "tool_calls");
  // JSON that is no call goes out at the end, as content.
  ToolCallStream json(&r);
  EXPECT_TRUE(json.Push(Chunk("{\"a\": ")).empty());
  last = json.Push(Chunk("1}", "stop"));
  ASSERT_EQ(last.size(), 2u);
  EXPECT_EQ(last[0].text, "{\"a\": 1}");
  EXPECT_EQ(last[1].finish_reason, "stop");
  // Text first: streamed; a '{' later is just text.
  ToolCallStream text(&r);
  EXPECT_EQ(Texts(text.Push(Chunk("Sure: "))), "Sure: ");
  EXPECT_EQ(Texts(text.Push(Chunk("{\"name\": \"get_time\"}"))), "{\"name\": \"get_time\"}");
}

TEST(ToolCallStreamTest, ConstrainedHoldsEverything) {
  const CompletionRequest r = WeatherRequest(ToolChoice::kRequired);
  ToolCallStream stream(&r);
  EXPECT_TRUE(stream.Push(Chunk("{\"name\": \"get_time\", ")).empty());
  std::vector<CompletionChunk> last = stream.Push(Chunk("\"arguments\": {}}", "stop"));
  ASSERT_EQ(last.size(), 2u);
  EXPECT_EQ(last[0].tool_calls[0].name, "get_time");
  EXPECT_EQ(last[1].finish_reason, "tool_calls");
  // Cut short: the text, as content, with the finish reason.
  ToolCallStream cut(&r);
  EXPECT_TRUE(cut.Push(Chunk("{\"name\"")).empty());
  last = cut.Push(Chunk(": \"get", "length"));
  ASSERT_EQ(last.size(), 2u);
  EXPECT_EQ(last[0].text, "{\"name\": \"get");
  EXPECT_EQ(last[1].finish_reason, "length");
}

}  // namespace
}  // namespace crescent::server
