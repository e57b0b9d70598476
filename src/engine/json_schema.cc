#include "src/engine/json_schema.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "src/common/status.h"

namespace crescent::engine {

namespace {

using Json = nlohmann::ordered_json;  // keeps the properties in the schema's order

class JsonSchemaCompiler {
 public:
  explicit JsonSchemaCompiler(const Json* root) : root_(root) {}

  // A new node for schema `s` at JSON pointer `path`.
  absl::StatusOr<int> Compile(const Json& s, const std::string& path);
  // Fills every anyOf node's by_first_byte; refuses overlapping alternatives.
  absl::Status ResolveFirstBytes();

  std::vector<JsonSchema::Node> nodes;

 private:
  absl::Status Fill(const Json& s, const std::string& path, int id);
  absl::StatusOr<int> Ref(const std::string& ref, const std::string& path);
  // The bytes a value of node `id` may start with.
  absl::StatusOr<std::set<int>> FirstBytes(int id, int depth);

  int New() {
    nodes.emplace_back();
    nodes.back().by_first_byte.fill(-1);
    return static_cast<int>(nodes.size()) - 1;
  }

  const Json* root_;
  absl::flat_hash_map<std::string, int> refs_;  // JSON pointer -> node
  int depth_ = 0;
};

constexpr int kMaxSchemaNesting = 64;
constexpr size_t kMaxEnumValues = 64;
constexpr size_t kMaxTopAlternatives = 128;  // e.g. one per tool (OpenAI allows 128)

absl::Status Unsupported(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat("JSON schema at '", path.empty() ? "#" : "#" + path, "': ", what));
}

bool IsAnnotation(const std::string& k) {
  static const std::set<std::string> kAnnotations = {
      "title",      "description", "default",   "examples", "$schema", "$id",        "$comment",
      "deprecated", "readOnly",    "writeOnly", "strict",   "$defs",   "definitions"};
  return kAnnotations.count(k) > 0;
}

std::string Escape(std::string_view key) {  // a JSON-pointer token
  std::string out;
  for (char c : key) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

absl::StatusOr<int> JsonSchemaCompiler::Compile(const Json& s, const std::string& path) {
  const int id = New();
  CRESCENT_RETURN_IF_ERROR(Fill(s, path, id));
  return id;
}

absl::StatusOr<int> JsonSchemaCompiler::Ref(const std::string& ref, const std::string& path) {
  if (ref.empty() || ref[0] != '#') {
    return Unsupported(path, absl::StrCat("$ref '", ref, "' is not within this schema"));
  }
  const std::string pointer = ref.substr(1);
  if (auto it = refs_.find(pointer); it != refs_.end()) return it->second;
  const Json* target = nullptr;
  try {
    target = &root_->at(Json::json_pointer(pointer));
  } catch (const Json::exception&) {
    return Unsupported(path, absl::StrCat("$ref '", ref, "' names nothing"));
  }
  const int id = New();
  refs_[pointer] = id;  // before compiling: a recursive reference finds it
  CRESCENT_RETURN_IF_ERROR(Fill(*target, pointer, id));
  return id;
}

absl::Status JsonSchemaCompiler::Fill(const Json& s, const std::string& path, int id) {
  if (++depth_ > kMaxSchemaNesting) return Unsupported(path, "nested too deeply");
  struct Leave {
    int* depth;
    ~Leave() { --*depth; }
  } leave{&depth_};
  using Kind = JsonSchema::Kind;
  if (s.is_boolean()) {
    if (!s.get<bool>()) return Unsupported(path, "the schema 'false' admits no value");
    nodes[id].kind = Kind::kAny;
    return absl::OkStatus();
  }
  if (!s.is_object()) return Unsupported(path, "a schema must be an object or a boolean");
  static const std::set<std::string> kKeywords = {
      "type",  "properties", "required", "additionalProperties",
      "items", "minItems",   "maxItems", "enum",
      "const", "anyOf",      "$ref"};
  for (const auto& [k, v] : s.items()) {
    if (!IsAnnotation(k) && kKeywords.count(k) == 0) {
      return Unsupported(path, absl::StrCat("keyword '", k, "' is not supported"));
    }
  }
  const bool has_type = s.contains("type");
  if (s.contains("$ref")) {
    for (const char* k : {"type", "properties", "items", "enum", "const", "anyOf"}) {
      if (s.contains(k)) {
        return Unsupported(path, absl::StrCat("'$ref' beside '", k, "' is not supported"));
      }
    }
    if (!s["$ref"].is_string()) return Unsupported(path, "'$ref' must be a string");
    CRESCENT_ASSIGN_OR_RETURN(int target, Ref(s["$ref"].get<std::string>(), path + "/$ref"));
    nodes[id].kind = Kind::kAnyOf;  // an alias: one alternative
    nodes[id].alternatives.push_back(target);
    return absl::OkStatus();
  }
  if (s.contains("enum") || s.contains("const")) {
    std::vector<std::string> literals;
    if (s.contains("const")) {
      literals.push_back(s["const"].dump());
    } else {
      if (!s["enum"].is_array() || s["enum"].empty()) {
        return Unsupported(path + "/enum", "'enum' must be a non-empty array");
      }
      for (const Json& v : s["enum"]) {
        std::string lit = v.dump();
        if (std::find(literals.begin(), literals.end(), lit) == literals.end()) {
          literals.push_back(std::move(lit));
        }
      }
    }
    if (literals.size() > kMaxEnumValues) {
      return Unsupported(path + "/enum",
                         absl::StrCat("at most ", kMaxEnumValues, " values are supported"));
    }
    nodes[id].kind = Kind::kEnum;
    nodes[id].literals = std::move(literals);
    return absl::OkStatus();
  }
  if (s.contains("anyOf")) {
    if (has_type) return Unsupported(path, "'anyOf' beside 'type' is not supported");
    if (!s["anyOf"].is_array() || s["anyOf"].empty()) {
      return Unsupported(path + "/anyOf", "'anyOf' must be a non-empty array");
    }
    for (size_t i = 0; i < s["anyOf"].size(); ++i) {
      CRESCENT_ASSIGN_OR_RETURN(int alt, Compile(s["anyOf"][i], absl::StrCat(path, "/anyOf/", i)));
      nodes[id].kind = Kind::kAnyOf;
      nodes[id].alternatives.push_back(alt);
    }
    return absl::OkStatus();
  }
  std::string type;
  if (has_type) {
    const Json& t = s["type"];
    if (t.is_array()) {  // one alternative per type, each with the other keywords
      if (t.empty()) return Unsupported(path + "/type", "'type' must not be empty");
      for (size_t i = 0; i < t.size(); ++i) {
        Json one = s;
        one["type"] = t[i];
        CRESCENT_ASSIGN_OR_RETURN(int alt, Compile(one, absl::StrCat(path, "/type/", i)));
        nodes[id].kind = Kind::kAnyOf;
        nodes[id].alternatives.push_back(alt);
      }
      return absl::OkStatus();
    }
    if (!t.is_string()) return Unsupported(path + "/type", "'type' must be a string or an array");
    type = t.get<std::string>();
  } else if (s.contains("properties")) {
    type = "object";
  } else if (s.contains("items")) {
    type = "array";
  }
  if (type.empty()) {
    nodes[id].kind = Kind::kAny;
  } else if (type == "object") {
    std::vector<JsonSchema::Property> properties;
    std::set<std::string> names;
    if (s.contains("properties")) {
      if (!s["properties"].is_object()) {
        return Unsupported(path + "/properties", "'properties' must be an object");
      }
      for (const auto& [key, sub] : s["properties"].items()) {
        CRESCENT_ASSIGN_OR_RETURN(int child, Compile(sub, path + "/properties/" + Escape(key)));
        properties.push_back({Json(key).dump(), child});
        names.insert(key);
      }
    }
    if (s.contains("required")) {
      if (!s["required"].is_array()) return Unsupported(path + "/required", "must be an array");
      for (const Json& r : s["required"]) {
        if (!r.is_string() || names.count(r.get<std::string>()) == 0) {
          return Unsupported(path + "/required", absl::StrCat("required property ", r.dump(),
                                                              " is not in 'properties'"));
        }
      }
    }
    if (properties.empty() && s.contains("additionalProperties")) {
      // Without properties the object's keys are its additional ones: none, any, or (not
      // supported) values of a schema, as a dict[str, int] gives.
      const Json& extra = s["additionalProperties"];
      if (extra.is_boolean() && !extra.get<bool>()) {
        nodes[id].kind = Kind::kEnum;  // nothing but {}
        nodes[id].literals = {"{}"};
        return absl::OkStatus();
      }
      if (!(extra.is_boolean() || (extra.is_object() && extra.empty()))) {
        return Unsupported(path + "/additionalProperties",
                           "'additionalProperties' as a schema (a map's values) is not supported");
      }
    }
    nodes[id].kind = properties.empty() ? Kind::kAnyObject : Kind::kObject;
    nodes[id].properties = std::move(properties);
  } else if (type == "array") {
    int items = -1;
    if (s.contains("items")) {
      CRESCENT_ASSIGN_OR_RETURN(items, Compile(s["items"], path + "/items"));
    }
    int min_items = 0, max_items = -1;
    for (auto [k, out] : {std::pair{"minItems", &min_items}, std::pair{"maxItems", &max_items}}) {
      if (!s.contains(k)) continue;
      const Json& v = s[k];
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > 65535) {
        return Unsupported(path + "/" + k, "must be an integer in [0, 65535]");
      }
      *out = static_cast<int>(v.get<int64_t>());
    }
    if (max_items >= 0 && min_items > max_items) {
      return Unsupported(path, "'minItems' is above 'maxItems'");
    }
    nodes[id].kind = Kind::kArray;
    nodes[id].items = items;
    nodes[id].min_items = min_items;
    nodes[id].max_items = max_items;
  } else if (type == "string") {
    nodes[id].kind = Kind::kString;
  } else if (type == "number") {
    nodes[id].kind = Kind::kNumber;
  } else if (type == "integer") {
    nodes[id].kind = Kind::kInteger;
  } else if (type == "boolean") {
    nodes[id].kind = Kind::kBoolean;
  } else if (type == "null") {
    nodes[id].kind = Kind::kNull;
  } else {
    return Unsupported(path + "/type", absl::StrCat("unknown type '", type, "'"));
  }
  // Keywords of one type only, given to another, are refused rather than ignored.
  const Kind kind = nodes[id].kind;
  const bool object = kind == Kind::kObject || kind == Kind::kAnyObject;
  for (const char* k : {"properties", "required", "additionalProperties"}) {
    if (s.contains(k) && !object) {
      return Unsupported(path, absl::StrCat("'", k, "' on a non-object type"));
    }
  }
  for (const char* k : {"items", "minItems", "maxItems"}) {
    if (s.contains(k) && kind != Kind::kArray) {
      return Unsupported(path, absl::StrCat("'", k, "' on a non-array type"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::set<int>> JsonSchemaCompiler::FirstBytes(int id, int depth) {
  if (depth > kMaxSchemaNesting) {
    return Unsupported("", "anyOf / $ref aliases form a cycle");
  }
  using Kind = JsonSchema::Kind;
  const JsonSchema::Node& n = nodes[id];
  std::set<int> out;
  auto add = [&](std::string_view bytes) {
    for (char c : bytes) out.insert(static_cast<uint8_t>(c));
  };
  switch (n.kind) {
    case Kind::kAny:
      add("{[\"-0123456789tfn");
      break;
    case Kind::kAnyObject:
    case Kind::kObject:
      add("{");
      break;
    case Kind::kArray:
      add("[");
      break;
    case Kind::kString:
      add("\"");
      break;
    case Kind::kNumber:
    case Kind::kInteger:
      add("-0123456789");
      break;
    case Kind::kBoolean:
      add("tf");
      break;
    case Kind::kNull:
      add("n");
      break;
    case Kind::kEnum:
      for (const std::string& lit : n.literals) out.insert(static_cast<uint8_t>(lit[0]));
      break;
    case Kind::kAnyOf:
      for (int alt : n.alternatives) {
        CRESCENT_ASSIGN_OR_RETURN(std::set<int> sub, FirstBytes(alt, depth + 1));
        out.insert(sub.begin(), sub.end());
      }
      break;
  }
  return out;
}

absl::Status JsonSchemaCompiler::ResolveFirstBytes() {
  for (size_t id = 0; id < nodes.size(); ++id) {
    if (nodes[id].kind != JsonSchema::Kind::kAnyOf) continue;
    std::array<int16_t, 256> table;
    table.fill(-1);
    for (int alt : nodes[id].alternatives) {
      CRESCENT_ASSIGN_OR_RETURN(std::set<int> bytes, FirstBytes(alt, 0));
      for (int b : bytes) {
        if (table[b] >= 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              "JSON schema: anyOf alternatives must start differently (a string and null: yes; "
              "two objects, or a number and an integer: no); two may start with '",
              std::string(1, static_cast<char>(b)), "'"));
        }
        table[b] = static_cast<int16_t>(alt);
      }
    }
    nodes[id].by_first_byte = table;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<const JsonSchema>> JsonSchema::Compile(std::string_view schema) {
  const Json root = Json::parse(schema.begin(), schema.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return absl::InvalidArgumentError("JSON schema: not valid JSON");
  JsonSchemaCompiler compiler(&root);
  // The top level: an object, or an anyOf of objects (its alternatives may start alike).
  std::vector<std::pair<const Json*, std::string>> tops;
  if (root.is_object() && root.contains("anyOf")) {
    for (const auto& [k, v] : root.items()) {
      if (k != "anyOf" && !IsAnnotation(k)) {
        return absl::InvalidArgumentError(
            absl::StrCat("JSON schema: '", k, "' beside a top-level 'anyOf' is not supported"));
      }
    }
    const Json& alternatives = root.at("anyOf");
    if (!alternatives.is_array() || alternatives.empty()) {
      return absl::InvalidArgumentError("JSON schema at '#/anyOf': must be a non-empty array");
    }
    if (alternatives.size() > kMaxTopAlternatives) {
      return absl::InvalidArgumentError(
          absl::StrCat("JSON schema at '#/anyOf': ", alternatives.size(), " alternatives; at most ",
                       kMaxTopAlternatives, " at the top level"));
    }
    for (size_t i = 0; i < alternatives.size(); ++i) {
      tops.emplace_back(&alternatives[i], absl::StrCat("/anyOf/", i));
    }
  } else {
    tops.emplace_back(&root, "");
  }
  std::vector<int> roots;
  for (const auto& [s, path] : tops) {
    CRESCENT_ASSIGN_OR_RETURN(int top, compiler.Compile(*s, path));
    roots.push_back(top);
  }
  CRESCENT_RETURN_IF_ERROR(compiler.ResolveFirstBytes());
  for (size_t i = 0; i < roots.size(); ++i) {
    int& node = roots[i];  // through any aliases
    const std::string where =
        tops[i].second.empty() ? "the top level" : absl::StrCat("'#", tops[i].second, "'");
    for (int hops = 0; compiler.nodes[node].kind == Kind::kAnyOf; ++hops) {
      if (compiler.nodes[node].alternatives.size() != 1 || hops > kMaxSchemaNesting) {
        return absl::InvalidArgumentError(
            absl::StrCat("JSON schema: ", where, " must be an object"));
      }
      node = compiler.nodes[node].alternatives[0];
    }
    const Kind kind = compiler.nodes[node].kind;
    if (kind != Kind::kObject && kind != Kind::kAnyObject) {
      return absl::InvalidArgumentError(absl::StrCat("JSON schema: ", where, " must be an object"));
    }
  }
  auto out = std::shared_ptr<JsonSchema>(new JsonSchema());
  out->nodes_ = std::move(compiler.nodes);
  out->roots_ = std::move(roots);
  return std::shared_ptr<const JsonSchema>(std::move(out));
}

}  // namespace crescent::engine
