#include "src/server/openai_protocol.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"
#include "src/common/status.h"
#include "src/engine/json_schema.h"
#include "src/server/json_nesting.h"

namespace crescent::server {
namespace {

using json = nlohmann::json;

constexpr char kParamPayloadUrl[] = "crescent/openai-param";

std::string Str(std::string_view s) { return std::string(s); }

// Typed field readers: absent or null -> nullopt; wrong type -> InvalidParam.
absl::StatusOr<std::optional<double>> GetNumber(const json& obj, const char* key,
                                                const std::string& param) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<double>();
  if (!it->is_number()) return InvalidParam(param, absl::StrCat("'", param, "' must be a number"));
  return std::optional<double>(it->get<double>());
}

absl::StatusOr<std::optional<int64_t>> GetInt(const json& obj, const char* key,
                                              const std::string& param) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<int64_t>();
  if (it->is_number_integer()) {
    if (it->is_number_unsigned() &&
        it->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return InvalidParam(param, absl::StrCat("'", param, "' is too large"));
    }
    return std::optional<int64_t>(it->get<int64_t>());
  }
  if (it->is_number_float()) {
    double v = it->get<double>();
    if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9.0e15) {
      return std::optional<int64_t>(static_cast<int64_t>(v));
    }
  }
  return InvalidParam(param, absl::StrCat("'", param, "' must be an integer"));
}

absl::StatusOr<std::optional<bool>> GetBool(const json& obj, const char* key,
                                            const std::string& param) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<bool>();
  if (!it->is_boolean())
    return InvalidParam(param, absl::StrCat("'", param, "' must be a boolean"));
  return std::optional<bool>(it->get<bool>());
}

absl::StatusOr<std::optional<std::string>> GetString(const json& obj, const char* key,
                                                     const std::string& param) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<std::string>();
  if (!it->is_string()) return InvalidParam(param, absl::StrCat("'", param, "' must be a string"));
  return std::optional<std::string>(it->get<std::string>());
}

absl::Status CheckRange(double v, double lo, double hi, const char* param) {
  if (!(v >= lo && v <= hi)) {
    return InvalidParam(
        param, absl::StrCat("'", param, "' must be between ", lo, " and ", hi, ", got ", v));
  }
  return absl::OkStatus();
}

// The elements of `array` as token ids (integers in [0, 2^31)). InvalidArgument naming
// `param`[i] for the first element that is not one.
absl::StatusOr<std::vector<int32_t>> ParseTokenIds(const json& array, const std::string& param) {
  std::vector<int32_t> tokens;
  tokens.reserve(array.size());
  for (size_t i = 0; i < array.size(); ++i) {
    const json& t = array[i];
    if (!t.is_number_integer() || t.get<int64_t>() < 0 ||
        t.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return InvalidParam(absl::StrCat(param, "[", i, "]"),
                          absl::StrCat("'", param, "' must be an array of token ids"));
    }
    tokens.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  return tokens;
}

absl::StatusOr<json> ParseBody(std::string_view body) {
  if (JsonNestingDepth(body) > kMaxJsonNesting) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request body nests arrays and objects more than ", kMaxJsonNesting, " levels deep"));
  }
  json root = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    return absl::InvalidArgumentError("request body is not valid JSON");
  }
  if (!root.is_object()) return absl::InvalidArgumentError("request body must be a JSON object");
  return root;
}

// Fields shared by both endpoints.
absl::Status ParseCommon(const json& root, CompletionRequest& req) {
  CRESCENT_ASSIGN_OR_RETURN(auto model, GetString(root, "model", "model"));
  req.model = model.value_or("");

  SamplingParams& s = req.sampling;
  CRESCENT_ASSIGN_OR_RETURN(auto temperature, GetNumber(root, "temperature", "temperature"));
  if (temperature) {
    CRESCENT_RETURN_IF_ERROR(CheckRange(*temperature, 0.0, 2.0, "temperature"));
    s.temperature = *temperature;
  }
  CRESCENT_ASSIGN_OR_RETURN(auto top_p, GetNumber(root, "top_p", "top_p"));
  if (top_p) {
    if (!(*top_p > 0.0 && *top_p <= 1.0)) {
      return InvalidParam("top_p", absl::StrCat("'top_p' must be in (0, 1], got ", *top_p));
    }
    s.top_p = *top_p;
  }
  CRESCENT_ASSIGN_OR_RETURN(auto top_k, GetInt(root, "top_k", "top_k"));
  if (top_k) {
    if (*top_k < -1 || *top_k > 1'000'000) {
      return InvalidParam("top_k",
                          absl::StrCat("'top_k' must be -1 (disabled) or >= 0, got ", *top_k));
    }
    s.top_k = static_cast<int>(*top_k);
  }
  CRESCENT_ASSIGN_OR_RETURN(auto min_p, GetNumber(root, "min_p", "min_p"));
  if (min_p) {
    CRESCENT_RETURN_IF_ERROR(CheckRange(*min_p, 0.0, 1.0, "min_p"));
    s.min_p = *min_p;
  }
  CRESCENT_ASSIGN_OR_RETURN(auto seed, GetInt(root, "seed", "seed"));
  if (seed) s.seed = static_cast<uint64_t>(*seed);
  CRESCENT_ASSIGN_OR_RETURN(auto presence, GetNumber(root, "presence_penalty", "presence_penalty"));
  if (presence) {
    CRESCENT_RETURN_IF_ERROR(CheckRange(*presence, -2.0, 2.0, "presence_penalty"));
    s.presence_penalty = *presence;
  }
  CRESCENT_ASSIGN_OR_RETURN(auto frequency,
                            GetNumber(root, "frequency_penalty", "frequency_penalty"));
  if (frequency) {
    CRESCENT_RETURN_IF_ERROR(CheckRange(*frequency, -2.0, 2.0, "frequency_penalty"));
    s.frequency_penalty = *frequency;
  }
  // vLLM's extensions: repetition_penalty (1 = off) and ignore_eos (benchmarks ask for exact
  // output lengths with it).
  CRESCENT_ASSIGN_OR_RETURN(auto repetition,
                            GetNumber(root, "repetition_penalty", "repetition_penalty"));
  if (repetition) {
    if (!(*repetition > 0.0 && *repetition <= 2.0)) {
      return InvalidParam(
          "repetition_penalty",
          absl::StrCat("'repetition_penalty' must be in (0, 2], got ", *repetition));
    }
    s.repetition_penalty = *repetition;
  }
  CRESCENT_ASSIGN_OR_RETURN(auto ignore_eos, GetBool(root, "ignore_eos", "ignore_eos"));
  req.ignore_eos = ignore_eos.value_or(false);
  if (auto it = root.find("logit_bias"); it != root.end() && !it->is_null()) {
    if (!it->is_object()) return InvalidParam("logit_bias", "'logit_bias' must be an object");
    for (const auto& [key, value] : it->items()) {
      std::string param = absl::StrCat("logit_bias.", key);
      int32_t token = 0;
      if (!absl::SimpleAtoi(key, &token) || token < 0) {
        return InvalidParam(
            param, absl::StrCat("logit_bias key '", key, "' must be a non-negative token id"));
      }
      if (!value.is_number()) return InvalidParam(param, "logit_bias values must be numbers");
      double bias = value.get<double>();
      if (!(bias >= -100.0 && bias <= 100.0)) {
        return InvalidParam(param, absl::StrCat("logit_bias values must be between -100 and "
                                                "100, got ",
                                                bias));
      }
      s.logit_bias.emplace_back(token, bias);
    }
  }

  // max_completion_tokens (the newer name) wins over max_tokens when both are set.
  CRESCENT_ASSIGN_OR_RETURN(auto max_tokens, GetInt(root, "max_tokens", "max_tokens"));
  CRESCENT_ASSIGN_OR_RETURN(auto max_completion_tokens,
                            GetInt(root, "max_completion_tokens", "max_completion_tokens"));
  const char* max_param = max_completion_tokens ? "max_completion_tokens" : "max_tokens";
  if (max_completion_tokens) max_tokens = max_completion_tokens;
  if (max_tokens) {
    // 0 is a completion's with echo (checked there): the prompt's logprobs alone.
    const int64_t least = req.kind == RequestKind::kCompletion ? 0 : 1;
    if (*max_tokens < least || *max_tokens > std::numeric_limits<int32_t>::max()) {
      return InvalidParam(max_param,
                          absl::StrCat("'", max_param, "' must be at least 1, got ", *max_tokens));
    }
    req.max_tokens = static_cast<int>(*max_tokens);
  }
  // vLLM's min_tokens and stop_token_ids.
  CRESCENT_ASSIGN_OR_RETURN(auto min_tokens, GetInt(root, "min_tokens", "min_tokens"));
  if (min_tokens) {
    if (*min_tokens < 0 || *min_tokens > std::numeric_limits<int32_t>::max()) {
      return InvalidParam("min_tokens",
                          absl::StrCat("'min_tokens' must be >= 0, got ", *min_tokens));
    }
    if (req.max_tokens && *min_tokens > *req.max_tokens) {
      return InvalidParam("min_tokens",
                          absl::StrCat("'min_tokens' (", *min_tokens, ") must not exceed '",
                                       max_param, "' (", *req.max_tokens, ")"));
    }
    req.min_tokens = static_cast<int>(*min_tokens);
  }
  if (auto it = root.find("stop_token_ids"); it != root.end() && !it->is_null()) {
    if (!it->is_array()) {
      return InvalidParam("stop_token_ids", "'stop_token_ids' must be an array of token ids");
    }
    if (it->size() > kMaxStopTokenIds) {
      return InvalidParam("stop_token_ids", absl::StrCat("at most ", kMaxStopTokenIds,
                                                         " stop_token_ids are allowed"));
    }
    CRESCENT_ASSIGN_OR_RETURN(req.stop_token_ids, ParseTokenIds(*it, "stop_token_ids"));
  }

  if (auto it = root.find("stop"); it != root.end() && !it->is_null()) {
    if (it->is_string()) {
      if (it->get_ref<const std::string&>().empty()) {
        return InvalidParam("stop", "'stop' must not be empty");
      }
      req.stop.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      if (it->size() > static_cast<size_t>(kMaxStopSequences)) {
        return InvalidParam("stop", absl::StrCat("'stop' may hold at most ", kMaxStopSequences,
                                                 " sequences, got ", it->size()));
      }
      for (size_t i = 0; i < it->size(); ++i) {
        const json& item = (*it)[i];
        std::string param = absl::StrCat("stop[", i, "]");
        if (!item.is_string() || item.get_ref<const std::string&>().empty()) {
          return InvalidParam(param, absl::StrCat("'", param, "' must be a non-empty string"));
        }
        req.stop.push_back(item.get<std::string>());
      }
    } else {
      return InvalidParam("stop", "'stop' must be a string or an array of strings");
    }
  }

  CRESCENT_ASSIGN_OR_RETURN(auto n, GetInt(root, "n", "n"));
  if (n) {
    if (*n < 1 || *n > kMaxChoices) {
      return InvalidParam("n",
                          absl::StrCat("'n' must be between 1 and ", kMaxChoices, ", got ", *n));
    }
    req.n = static_cast<int>(*n);
  }
  CRESCENT_ASSIGN_OR_RETURN(auto stream, GetBool(root, "stream", "stream"));
  req.stream = stream.value_or(false);
  if (auto it = root.find("stream_options"); it != root.end() && !it->is_null()) {
    if (!it->is_object())
      return InvalidParam("stream_options", "'stream_options' must be an object");
    CRESCENT_ASSIGN_OR_RETURN(auto include_usage,
                              GetBool(*it, "include_usage", "stream_options.include_usage"));
    req.include_usage = include_usage.value_or(false);
  }
  CRESCENT_ASSIGN_OR_RETURN(auto user, GetString(root, "user", "user"));
  req.user = user.value_or("");
  return absl::OkStatus();
}

absl::StatusOr<std::string> ParseContent(const json& content, const std::string& param,
                                         const std::string& role) {
  if (content.is_string()) return content.get<std::string>();
  if (content.is_null()) {
    // An assistant turn that only made tool calls has no content.
    if (role == "assistant") return std::string();
    return InvalidParam(param, absl::StrCat("'", param, "' must not be null"));
  }
  if (!content.is_array()) {
    return InvalidParam(param, absl::StrCat("'", param,
                                            "' must be a string or an array of "
                                            "content parts"));
  }
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    std::string part_param = absl::StrCat(param, "[", i, "]");
    if (!part.is_object()) {
      return InvalidParam(part_param, absl::StrCat("'", part_param, "' must be an object"));
    }
    CRESCENT_ASSIGN_OR_RETURN(auto type, GetString(part, "type", part_param + ".type"));
    if (!type) {
      return InvalidParam(part_param + ".type", absl::StrCat("'", part_param, ".type' is missing"));
    }
    if (*type != "text") {
      return InvalidParam(part_param + ".type", absl::StrCat("content part type '", *type,
                                                             "' is not supported; only 'text' is"));
    }
    CRESCENT_ASSIGN_OR_RETURN(auto part_text, GetString(part, "text", part_param + ".text"));
    if (!part_text) {
      return InvalidParam(part_param + ".text", absl::StrCat("'", part_param, ".text' is missing"));
    }
    if (i > 0) text += '\n';
    text += *part_text;
  }
  return text;
}

json LogprobsChatJson(const std::vector<TokenLogprob>& logprobs) {
  json content = json::array();
  for (const TokenLogprob& t : logprobs) {
    json top = json::array();
    for (const TopLogprob& tl : t.top_logprobs) {
      std::vector<int> bytes(tl.token.begin(), tl.token.end());
      for (int& b : bytes) b &= 0xff;
      top.push_back({{"token", tl.token}, {"logprob", tl.logprob}, {"bytes", bytes}});
    }
    std::vector<int> bytes(t.token.begin(), t.token.end());
    for (int& b : bytes) b &= 0xff;
    content.push_back({{"token", t.token},
                       {"logprob", t.logprob ? json(*t.logprob) : json(nullptr)},
                       {"bytes", bytes},
                       {"top_logprobs", top}});
  }
  return {{"content", content}};
}

json LogprobsCompletionJson(const std::vector<TokenLogprob>& logprobs, size_t text_offset) {
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(),
       offsets = json::array();
  for (const TokenLogprob& t : logprobs) {
    tokens.push_back(t.token);
    if (!t.logprob) {  // an echoed prompt's first token
      token_logprobs.push_back(nullptr);
      top.push_back(nullptr);
    } else {
      token_logprobs.push_back(*t.logprob);
      json alternatives = json::object();
      for (const TopLogprob& tl : t.top_logprobs) alternatives[tl.token] = tl.logprob;
      top.push_back(alternatives);
    }
    offsets.push_back(text_offset);
    text_offset += t.token.size();
  }
  return {{"tokens", tokens},
          {"token_logprobs", token_logprobs},
          {"top_logprobs", top},
          {"text_offset", offsets}};
}

json UsageJson(const Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", usage.cached_tokens}}}};
}

json NullOr(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

// Model output may end in the middle of a UTF-8 sequence; never fail the response for it.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace

absl::Status InvalidParam(std::string_view param, std::string_view message) {
  absl::Status status =
      absl::InvalidArgumentError(absl::string_view(message.data(), message.size()));
  status.SetPayload(kParamPayloadUrl, absl::Cord(absl::string_view(param.data(), param.size())));
  return status;
}

std::string ParamOf(const absl::Status& status) {
  auto payload = status.GetPayload(kParamPayloadUrl);
  return payload ? std::string(*payload) : std::string();
}

namespace {

// response_format (both endpoints): text, json_object, or json_schema with its schema's text in
// the client's key order (`root` has keys sorted, so `body` is read again for it).
absl::Status ParseResponseFormat(const json& root, std::string_view body, CompletionRequest& req) {
  if (auto format = root.find("response_format"); format != root.end() && !format->is_null()) {
    if (!format->is_object()) {
      return InvalidParam("response_format", "'response_format' must be an object");
    }
    auto type = format->find("type");
    if (type == format->end() || !type->is_string()) {
      return InvalidParam("response_format.type", "'response_format.type' must be a string");
    }
    if (*type == "json_object") {
      req.json_object = true;
    } else if (*type == "json_schema") {
      auto spec = format->find("json_schema");
      if (spec == format->end() || !spec->is_object()) {
        return InvalidParam("response_format.json_schema",
                            "'response_format.json_schema' must be an object");
      }
      req.json_object = true;
      if (auto schema = spec->find("schema"); schema != spec->end() && !schema->is_null()) {
        if (!schema->is_object()) {
          return InvalidParam("response_format.json_schema.schema",
                              "'response_format.json_schema.schema' must be an object");
        }
        // Properties are generated in the schema's order. Checked against the supported
        // subset downstream (src/serve).
        nlohmann::ordered_json ordered = nlohmann::ordered_json::parse(
            body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
        req.json_schema = ordered["response_format"]["json_schema"]["schema"].dump();
        // Checked here, before any service sees it (the cluster's nodes would refuse it later).
        if (absl::Status s = engine::JsonSchema::Compile(req.json_schema).status(); !s.ok()) {
          return InvalidParam("response_format.json_schema.schema", std::string(s.message()));
        }
      }
    } else if (*type != "text") {
      return InvalidParam("response_format.type",
                          absl::StrCat("response_format type '", type->get<std::string>(),
                                       "' is not supported; 'text', 'json_object' and "
                                       "'json_schema' are"));
    }
  }
  return absl::OkStatus();
}

bool IsFunctionName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

// messages[i].tool_calls of an assistant message.
absl::StatusOr<std::vector<ToolCall>> ParseMessageToolCalls(const json& calls,
                                                            const std::string& param) {
  if (!calls.is_array()) return InvalidParam(param, absl::StrCat("'", param, "' must be an array"));
  std::vector<ToolCall> out;
  for (size_t j = 0; j < calls.size(); ++j) {
    const json& c = calls[j];
    const std::string p = absl::StrCat(param, "[", j, "]");
    if (!c.is_object()) return InvalidParam(p, absl::StrCat("'", p, "' must be an object"));
    ToolCall call;
    CRESCENT_ASSIGN_OR_RETURN(auto id, GetString(c, "id", p + ".id"));
    call.id = id.value_or("");
    CRESCENT_ASSIGN_OR_RETURN(auto type, GetString(c, "type", p + ".type"));
    if (type && *type != "function") {
      return InvalidParam(p + ".type", absl::StrCat("tool call type '", *type,
                                                    "' is not supported; only 'function' is"));
    }
    auto fn = c.find("function");
    if (fn == c.end() || !fn->is_object()) {
      return InvalidParam(p + ".function", absl::StrCat("'", p, ".function' must be an object"));
    }
    CRESCENT_ASSIGN_OR_RETURN(auto name, GetString(*fn, "name", p + ".function.name"));
    if (!name) {
      return InvalidParam(p + ".function.name", absl::StrCat("'", p, ".function.name' is missing"));
    }
    call.name = *name;
    CRESCENT_ASSIGN_OR_RETURN(auto arguments,
                              GetString(*fn, "arguments", p + ".function.arguments"));
    const std::string args_param = p + ".function.arguments";
    if (arguments && JsonNestingDepth(*arguments) > kMaxJsonNesting) {
      return InvalidParam(args_param, absl::StrCat("'", args_param, "' nests more than ",
                                                   kMaxJsonNesting, " levels deep"));
    }
    const nlohmann::ordered_json parsed = nlohmann::ordered_json::parse(
        arguments.value_or("{}"), nullptr, /*allow_exceptions=*/false);
    if (parsed.is_discarded() || !parsed.is_object()) {
      return InvalidParam(args_param,
                          absl::StrCat("'", args_param, "' must be a JSON object, as text"));
    }
    call.arguments = parsed.dump();
    out.push_back(std::move(call));
  }
  return out;
}

// tools, tool_choice, parallel_tool_calls (and the deprecated functions / function_call, refused).
absl::Status ParseTools(const json& root, std::string_view body, CompletionRequest& req) {
  for (const auto& [key, instead] : {std::pair<const char*, const char*>{"functions", "tools"},
                                     {"function_call", "tool_choice"}}) {
    if (auto it = root.find(key); it != root.end() && !it->is_null()) {
      return InvalidParam(
          key, absl::StrCat("'", key, "' is deprecated and not supported; use '", instead, "'"));
    }
  }
  auto tools = root.find("tools");
  if (tools != root.end() && !tools->is_null()) {
    if (!tools->is_array()) return InvalidParam("tools", "'tools' must be an array");
    if (tools->size() > kMaxTools) {
      return InvalidParam(
          "tools", absl::StrCat(tools->size(), " tools; at most ", kMaxTools, " are allowed"));
    }
    // Parameter schemas keep the client's key order (properties are generated in it).
    const nlohmann::ordered_json ordered =
        nlohmann::ordered_json::parse(body.begin(), body.end(), nullptr, false);
    for (size_t i = 0; i < tools->size(); ++i) {
      const json& t = (*tools)[i];
      const std::string param = absl::StrCat("tools[", i, "]");
      if (!t.is_object())
        return InvalidParam(param, absl::StrCat("'", param, "' must be an object"));
      CRESCENT_ASSIGN_OR_RETURN(auto type, GetString(t, "type", param + ".type"));
      if (!type)
        return InvalidParam(param + ".type", absl::StrCat("'", param, ".type' is missing"));
      if (*type != "function") {
        return InvalidParam(
            param + ".type",
            absl::StrCat("tool type '", *type, "' is not supported; only 'function' is"));
      }
      auto fn = t.find("function");
      if (fn == t.end() || !fn->is_object()) {
        return InvalidParam(param + ".function",
                            absl::StrCat("'", param, ".function' must be an object"));
      }
      ToolDefinition tool;
      CRESCENT_ASSIGN_OR_RETURN(auto name, GetString(*fn, "name", param + ".function.name"));
      if (!name || !IsFunctionName(*name)) {
        return InvalidParam(param + ".function.name",
                            absl::StrCat("'", param,
                                         ".function.name' must be 1 to 64 letters, digits, "
                                         "underscores or dashes"));
      }
      for (const ToolDefinition& other : req.tools) {
        if (other.name == *name) {
          return InvalidParam(param + ".function.name",
                              absl::StrCat("two tools are named '", *name, "'"));
        }
      }
      tool.name = *name;
      CRESCENT_ASSIGN_OR_RETURN(auto description,
                                GetString(*fn, "description", param + ".function.description"));
      tool.description = description.value_or("");
      if (auto p = fn->find("parameters"); p != fn->end() && !p->is_null()) {
        if (!p->is_object()) {
          return InvalidParam(param + ".function.parameters",
                              absl::StrCat("'", param, ".function.parameters' must be an object"));
        }
        tool.parameters = ordered["tools"][i]["function"]["parameters"].dump();
      }
      req.tools.push_back(std::move(tool));
    }
  }
  req.tool_choice = req.tools.empty() ? ToolChoice::kNone : ToolChoice::kAuto;
  if (auto c = root.find("tool_choice"); c != root.end() && !c->is_null()) {
    if (c->is_string()) {
      const std::string choice = c->get<std::string>();
      if (choice == "none") {
        req.tool_choice = ToolChoice::kNone;
      } else if (choice == "auto") {
        req.tool_choice = ToolChoice::kAuto;
      } else if (choice == "required") {
        req.tool_choice = ToolChoice::kRequired;
      } else {
        return InvalidParam("tool_choice",
                            absl::StrCat("tool_choice '", choice,
                                         "' is not one of 'none', 'auto', 'required' or an "
                                         "object naming a function"));
      }
    } else if (c->is_object()) {
      CRESCENT_ASSIGN_OR_RETURN(auto type, GetString(*c, "type", "tool_choice.type"));
      if (type.value_or("") != "function") {
        return InvalidParam("tool_choice.type", "'tool_choice.type' must be 'function'");
      }
      auto fn = c->find("function");
      std::optional<std::string> name;
      if (fn != c->end() && fn->is_object()) {
        CRESCENT_ASSIGN_OR_RETURN(name, GetString(*fn, "name", "tool_choice.function.name"));
      }
      if (!name) {
        return InvalidParam("tool_choice.function.name", "'tool_choice.function.name' is missing");
      }
      if (!req.tools.empty() &&
          std::none_of(req.tools.begin(), req.tools.end(),
                       [&](const ToolDefinition& t) { return t.name == *name; })) {
        return InvalidParam(
            "tool_choice.function.name",
            absl::StrCat("tool_choice names '", *name, "', which is not one of 'tools'"));
      }
      req.tool_choice = ToolChoice::kFunction;
      req.tool_choice_function = *name;
    } else {
      return InvalidParam("tool_choice", "'tool_choice' must be a string or an object");
    }
    if (req.tool_choice != ToolChoice::kNone && req.tools.empty()) {
      return InvalidParam("tool_choice", "'tool_choice' is only allowed when 'tools' are given");
    }
  }
  CRESCENT_ASSIGN_OR_RETURN(auto parallel,
                            GetBool(root, "parallel_tool_calls", "parallel_tool_calls"));
  req.parallel_tool_calls = parallel.value_or(true);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CompletionRequest> ParseChatCompletionRequest(std::string_view body) {
  CRESCENT_ASSIGN_OR_RETURN(json root, ParseBody(body));
  CompletionRequest req;
  req.kind = RequestKind::kChat;
  CRESCENT_RETURN_IF_ERROR(ParseCommon(root, req));

  auto messages = root.find("messages");
  if (messages == root.end() || messages->is_null()) {
    return InvalidParam("messages", "'messages' is required");
  }
  if (!messages->is_array()) return InvalidParam("messages", "'messages' must be an array");
  if (messages->empty()) return InvalidParam("messages", "'messages' must not be empty");
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    std::string param = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return InvalidParam(param, absl::StrCat("'", param, "' must be an object"));
    ChatMessage message;
    CRESCENT_ASSIGN_OR_RETURN(auto role, GetString(m, "role", param + ".role"));
    if (!role) return InvalidParam(param + ".role", absl::StrCat("'", param, ".role' is missing"));
    if (*role != "system" && *role != "developer" && *role != "user" && *role != "assistant" &&
        *role != "tool") {
      return InvalidParam(param + ".role", absl::StrCat("role '", *role,
                                                        "' is not one of system, developer, "
                                                        "user, assistant, tool"));
    }
    message.role = *role;
    auto content = m.find("content");
    if (content == m.end()) {
      if (message.role != "assistant") {
        return InvalidParam(param + ".content", absl::StrCat("'", param, ".content' is missing"));
      }
    } else {
      CRESCENT_ASSIGN_OR_RETURN(message.content,
                                ParseContent(*content, param + ".content", message.role));
    }
    CRESCENT_ASSIGN_OR_RETURN(message.name, GetString(m, "name", param + ".name"));
    CRESCENT_ASSIGN_OR_RETURN(message.tool_call_id,
                              GetString(m, "tool_call_id", param + ".tool_call_id"));
    if (auto calls = m.find("tool_calls"); calls != m.end() && !calls->is_null()) {
      if (message.role != "assistant") {
        return InvalidParam(param + ".tool_calls",
                            absl::StrCat("only assistant messages carry tool_calls; '", param,
                                         "' is a ", message.role, " message"));
      }
      CRESCENT_ASSIGN_OR_RETURN(message.tool_calls,
                                ParseMessageToolCalls(*calls, param + ".tool_calls"));
    }
    req.messages.push_back(std::move(message));
  }

  CRESCENT_ASSIGN_OR_RETURN(auto logprobs, GetBool(root, "logprobs", "logprobs"));
  req.logprobs = logprobs.value_or(false);
  CRESCENT_ASSIGN_OR_RETURN(auto top_logprobs, GetInt(root, "top_logprobs", "top_logprobs"));
  if (top_logprobs) {
    if (*top_logprobs < 0 || *top_logprobs > kMaxTopLogprobs) {
      return InvalidParam("top_logprobs", absl::StrCat("'top_logprobs' must be between 0 and ",
                                                       kMaxTopLogprobs, ", got ", *top_logprobs));
    }
    if (!req.logprobs && *top_logprobs > 0) {
      return InvalidParam("top_logprobs", "'top_logprobs' requires 'logprobs' to be true");
    }
    req.top_logprobs = static_cast<int>(*top_logprobs);
  }

  CRESCENT_RETURN_IF_ERROR(ParseTools(root, body, req));
  CRESCENT_RETURN_IF_ERROR(ParseResponseFormat(root, body, req));
  if (req.json_object && req.tool_choice != ToolChoice::kNone) {
    return InvalidParam("response_format",
                        "'response_format' json_object or json_schema cannot be combined with "
                        "'tools' unless tool_choice is 'none'");
  }
  return req;
}

absl::StatusOr<CompletionRequest> ParseCompletionRequest(std::string_view body) {
  CRESCENT_ASSIGN_OR_RETURN(json root, ParseBody(body));
  CompletionRequest req;
  req.kind = RequestKind::kCompletion;
  CRESCENT_RETURN_IF_ERROR(ParseCommon(root, req));

  auto prompt = root.find("prompt");
  if (prompt == root.end() || prompt->is_null()) {
    return InvalidParam("prompt", "'prompt' is required");
  }
  // A string, an array of strings (a batch), an array of token ids, or an array of such arrays
  // (a batch).
  auto token_ids = [](const json& array,
                      const std::string& param) -> absl::StatusOr<std::vector<int32_t>> {
    if (array.empty()) return InvalidParam(param, absl::StrCat("'", param, "' must not be empty"));
    return ParseTokenIds(array, param);
  };
  if (prompt->is_string()) {
    req.prompts.push_back({prompt->get<std::string>(), std::nullopt});
  } else if (prompt->is_array()) {
    if (prompt->empty()) return InvalidParam("prompt", "'prompt' must not be empty");
    if ((*prompt)[0].is_number_integer()) {
      CRESCENT_ASSIGN_OR_RETURN(std::vector<int32_t> tokens, token_ids(*prompt, "prompt"));
      req.prompts.push_back({"", std::move(tokens)});
    } else {
      for (size_t i = 0; i < prompt->size(); ++i) {
        const json& p = (*prompt)[i];
        const std::string param = absl::StrCat("prompt[", i, "]");
        if (p.is_string()) {
          req.prompts.push_back({p.get<std::string>(), std::nullopt});
        } else if (p.is_array()) {
          CRESCENT_ASSIGN_OR_RETURN(std::vector<int32_t> tokens, token_ids(p, param));
          req.prompts.push_back({"", std::move(tokens)});
        } else {
          return InvalidParam(
              param, absl::StrCat("'", param, "' must be a string or an array of token ids"));
        }
      }
    }
  } else {
    return InvalidParam("prompt", "'prompt' must be a string or an array");
  }
  if (req.num_choices() > kMaxBatchChoices) {
    return InvalidParam("prompt", absl::StrCat(req.prompts.size(), " prompts with n = ", req.n,
                                               " make ", req.num_choices(), " choices; at most ",
                                               kMaxBatchChoices, " are allowed"));
  }

  // Legacy completions: logprobs is an integer count of alternatives (0..5).
  CRESCENT_ASSIGN_OR_RETURN(auto logprobs, GetInt(root, "logprobs", "logprobs"));
  if (logprobs) {
    if (*logprobs < 0 || *logprobs > 5) {
      return InvalidParam("logprobs",
                          absl::StrCat("'logprobs' must be between 0 and 5, got ", *logprobs));
    }
    req.logprobs = true;
    req.top_logprobs = static_cast<int>(*logprobs);
  }
  CRESCENT_ASSIGN_OR_RETURN(auto echo, GetBool(root, "echo", "echo"));
  req.echo = echo.value_or(false);
  if (req.max_tokens == 0 && !req.echo) {
    return InvalidParam("max_tokens",
                        "'max_tokens' must be at least 1, got 0 (0 is allowed only with 'echo')");
  }
  // The legacy endpoint's default, as OpenAI's and vLLM's: a completion is 16 tokens unless
  // asked otherwise (chat's default is the rest of the context).
  if (!req.max_tokens) req.max_tokens = kDefaultCompletionMaxTokens;
  CRESCENT_ASSIGN_OR_RETURN(auto suffix, GetString(root, "suffix", "suffix"));
  if (suffix && !suffix->empty()) return InvalidParam("suffix", "'suffix' is not supported");
  CRESCENT_ASSIGN_OR_RETURN(auto best_of, GetInt(root, "best_of", "best_of"));
  if (best_of && *best_of != req.n) {
    return InvalidParam("best_of", "'best_of' other than n is not supported");
  }
  CRESCENT_RETURN_IF_ERROR(ParseResponseFormat(root, body, req));
  return req;
}

absl::StatusOr<CompletionRequest> ParseTokenizeRequest(std::string_view body) {
  CRESCENT_ASSIGN_OR_RETURN(json root, ParseBody(body));
  if (root.contains("messages")) return ParseChatCompletionRequest(body);
  CRESCENT_ASSIGN_OR_RETURN(CompletionRequest req, ParseCompletionRequest(body));
  if (req.prompts.size() != 1) {
    return InvalidParam("prompt",
                        absl::StrCat("/tokenize takes one prompt, got ", req.prompts.size()));
  }
  return req;
}

absl::StatusOr<std::vector<int32_t>> ParseDetokenizeRequest(std::string_view body) {
  CRESCENT_ASSIGN_OR_RETURN(json root, ParseBody(body));
  auto tokens = root.find("tokens");
  if (tokens == root.end() || tokens->is_null())
    return InvalidParam("tokens", "'tokens' is required");
  if (!tokens->is_array()) return InvalidParam("tokens", "'tokens' must be an array of token ids");
  return ParseTokenIds(*tokens, "tokens");
}

std::string TokenizeResponseJson(const std::vector<int32_t>& tokens, int max_model_len) {
  return Dump(json{{"count", tokens.size()}, {"max_model_len", max_model_len}, {"tokens", tokens}});
}

std::string DetokenizeResponseJson(std::string_view text) {
  return Dump(json{{"prompt", Str(text)}});
}

namespace {
constexpr char kRetryAfterUrl[] = "type.crescent/retry-after-seconds";
}  // namespace

absl::Status WithRetryAfter(absl::Status status, double seconds) {
  if (status.ok()) return status;
  const int whole = seconds > 1.0 ? static_cast<int>(std::ceil(std::min(seconds, 86400.0))) : 1;
  status.SetPayload(kRetryAfterUrl, absl::Cord(absl::StrCat(whole)));
  return status;
}

std::optional<int> RetryAfterOf(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(kRetryAfterUrl);
  int seconds = 0;
  if (!payload || !absl::SimpleAtoi(std::string(*payload), &seconds) || seconds < 1) {
    return std::nullopt;
  }
  return seconds;
}

HttpError HttpErrorFromStatus(const absl::Status& status) {
  HttpError e;
  e.message = std::string(status.message());
  e.param = ParamOf(status);
  e.retry_after_seconds = RetryAfterOf(status);
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      e.http_status = 400;
      e.type = "invalid_request_error";
      break;
    case absl::StatusCode::kNotFound:
      e.http_status = 404;
      e.type = "invalid_request_error";
      e.code = "model_not_found";
      break;
    case absl::StatusCode::kResourceExhausted:
      e.http_status = 429;
      e.type = "rate_limit_error";
      e.code = "rate_limit_exceeded";
      break;
    case absl::StatusCode::kUnavailable:
      e.http_status = 503;
      e.type = "service_unavailable_error";
      break;
    case absl::StatusCode::kUnauthenticated:
      e.http_status = 401;
      e.type = "authentication_error";
      e.code = "invalid_api_key";
      break;
    case absl::StatusCode::kPermissionDenied:
      e.http_status = 403;
      e.type = "permission_error";
      break;
    case absl::StatusCode::kUnimplemented:
      e.http_status = 501;
      e.type = "invalid_request_error";
      e.code = "not_implemented";
      break;
    default:
      e.http_status = 500;
      e.type = "server_error";
      break;
  }
  if (e.message.empty()) e.message = absl::StatusCodeToString(status.code());
  return e;
}

std::string ErrorJson(const HttpError& error) {
  json j = {{"error",
             {{"message", error.message},
              {"type", error.type},
              {"param", NullOr(error.param)},
              {"code", NullOr(error.code)}}}};
  return Dump(j);
}

namespace {
std::string RandomId(std::string prefix) {
  static absl::Mutex mu(absl::kConstInit);
  static std::mt19937_64* rng = nullptr;
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  absl::MutexLock lock(&mu);
  if (rng == nullptr) rng = new std::mt19937_64(std::random_device{}());
  for (int i = 0; i < 24; ++i) prefix += kAlphabet[(*rng)() % (sizeof(kAlphabet) - 1)];
  return prefix;
}
}  // namespace

std::string NewRequestId(RequestKind kind) {
  return RandomId(kind == RequestKind::kChat ? "chatcmpl-" : "cmpl-");
}

std::string NewToolCallId() { return RandomId("call_"); }

namespace {
// A message's tool_calls, or a stream delta's (each with its index).
json ToolCallsJson(const std::vector<ToolCall>& calls, bool delta) {
  json out = json::array();
  for (size_t k = 0; k < calls.size(); ++k) {
    json call = {{"id", calls[k].id},
                 {"type", "function"},
                 {"function", {{"name", calls[k].name}, {"arguments", calls[k].arguments}}}};
    if (delta) call["index"] = k;
    out.push_back(std::move(call));
  }
  return out;
}
}  // namespace

std::string CompletionResponseJson(const CompletionRequest& request, std::string_view model,
                                   const std::vector<ChoiceResult>& choices, const Usage& usage) {
  const bool chat = request.kind == RequestKind::kChat;
  json out_choices = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    json choice = {{"index", i}};
    json logprobs = nullptr;
    if (request.logprobs) {
      logprobs = chat ? LogprobsChatJson(c.logprobs) : LogprobsCompletionJson(c.logprobs, 0);
    }
    if (chat) {
      choice["message"] = {
          {"role", "assistant"},
          {"content", c.tool_calls.empty() || !c.text.empty() ? json(c.text) : json(nullptr)}};
      if (!c.tool_calls.empty())
        choice["message"]["tool_calls"] = ToolCallsJson(c.tool_calls, false);
    } else {
      choice["text"] = c.text;
    }
    choice["logprobs"] = logprobs;
    choice["finish_reason"] = NullOr(c.finish_reason);
    out_choices.push_back(std::move(choice));
  }
  json j = {{"id", request.request_id},
            {"object", chat ? "chat.completion" : "text_completion"},
            {"created", request.arrival_unix_seconds},
            {"model", Str(model)},
            {"choices", out_choices},
            {"usage", UsageJson(usage)}};
  return Dump(j);
}

std::string StreamChunkJson(const CompletionRequest& request, std::string_view model,
                            const CompletionChunk& chunk, bool first_for_choice,
                            size_t text_offset) {
  const bool chat = request.kind == RequestKind::kChat;
  json choice = {{"index", chunk.choice_index}};
  if (chat) {
    json delta = json::object();
    if (first_for_choice) delta["role"] = "assistant";
    if (!chunk.text.empty() || (first_for_choice && chunk.tool_calls.empty())) {
      delta["content"] = chunk.text;
    }
    if (!chunk.tool_calls.empty()) delta["tool_calls"] = ToolCallsJson(chunk.tool_calls, true);
    choice["delta"] = std::move(delta);
  } else {
    choice["text"] = chunk.text;
  }
  json logprobs = nullptr;
  if (request.logprobs && !chunk.logprobs.empty()) {
    logprobs = chat ? LogprobsChatJson(chunk.logprobs)
                    : LogprobsCompletionJson(chunk.logprobs, text_offset);
  }
  choice["logprobs"] = logprobs;
  choice["finish_reason"] = chunk.finish_reason ? json(*chunk.finish_reason) : json(nullptr);
  json j = {{"id", request.request_id},
            {"object", chat ? "chat.completion.chunk" : "text_completion"},
            {"created", request.arrival_unix_seconds},
            {"model", Str(model)},
            {"choices", json::array({choice})}};
  if (request.include_usage) j["usage"] = nullptr;
  return Dump(j);
}

std::string StreamUsageChunkJson(const CompletionRequest& request, std::string_view model,
                                 const Usage& usage) {
  const bool chat = request.kind == RequestKind::kChat;
  json j = {{"id", request.request_id},
            {"object", chat ? "chat.completion.chunk" : "text_completion"},
            {"created", request.arrival_unix_seconds},
            {"model", Str(model)},
            {"choices", json::array()},
            {"usage", UsageJson(usage)}};
  return Dump(j);
}

namespace {
json ModelObject(const ModelInfo& m) {
  json entry = {
      {"id", m.id}, {"object", "model"}, {"created", m.created}, {"owned_by", m.owned_by}};
  if (m.max_model_len > 0) entry["max_model_len"] = m.max_model_len;
  return entry;
}
}  // namespace

std::string ModelJson(const ModelInfo& model) { return Dump(ModelObject(model)); }

std::string ModelsJson(const std::vector<ModelInfo>& models) {
  json data = json::array();
  for (const ModelInfo& m : models) data.push_back(ModelObject(m));
  return Dump(json{{"object", "list"}, {"data", data}});
}

}  // namespace crescent::server
