#include "src/engine/json_schema.h"

#include <string>

#include "gtest/gtest.h"

namespace crescent::engine {
namespace {

using Kind = JsonSchema::Kind;

// What Pydantic (through the openai client's to_strict_json_schema) sends for
//   class Pet(BaseModel): kind: Literal["cat", "dog"]; legs: int
//   class Person(BaseModel): name: str; age: int; tags: list[str]; pet: Optional[Pet]
constexpr char kPerson[] = R"({
  "$defs": {"Pet": {"properties": {"kind": {"enum": ["cat", "dog"], "title": "Kind",
                                            "type": "string"},
                                   "legs": {"title": "Legs", "type": "integer"}},
                    "required": ["kind", "legs"], "title": "Pet", "type": "object",
                    "additionalProperties": false}},
  "properties": {"name": {"title": "Name", "type": "string"},
                 "age": {"title": "Age", "type": "integer"},
                 "tags": {"items": {"type": "string"}, "title": "Tags", "type": "array",
                          "minItems": 1, "maxItems": 3},
                 "pet": {"anyOf": [{"$ref": "#/$defs/Pet"}, {"type": "null"}]}},
  "required": ["name", "age", "tags", "pet"], "title": "Person", "type": "object",
  "additionalProperties": false})";

TEST(JsonSchemaTest, CompilesAPydanticModel) {
  auto s = JsonSchema::Compile(kPerson);
  ASSERT_TRUE(s.ok()) << s.status();
  const JsonSchema::Node& root = (*s)->node((*s)->roots()[0]);
  ASSERT_EQ(root.kind, Kind::kObject);
  ASSERT_EQ(root.properties.size(), 4u);
  // In the schema's order, keys as JSON.
  EXPECT_EQ(root.properties[0].key, "\"name\"");
  EXPECT_EQ(root.properties[3].key, "\"pet\"");
  EXPECT_EQ((*s)->node(root.properties[1].node).kind, Kind::kInteger);
  const JsonSchema::Node& tags = (*s)->node(root.properties[2].node);
  EXPECT_EQ(tags.kind, Kind::kArray);
  EXPECT_EQ(tags.min_items, 1);
  EXPECT_EQ(tags.max_items, 3);
  const JsonSchema::Node& pet = (*s)->node(root.properties[3].node);
  ASSERT_EQ(pet.kind, Kind::kAnyOf);
  EXPECT_GE(pet.by_first_byte['{'], 0);
  EXPECT_GE(pet.by_first_byte['n'], 0);
  EXPECT_EQ(pet.by_first_byte['"'], -1);
}

TEST(JsonSchemaTest, EnumsTypeArraysAndRecursion) {
  auto s = JsonSchema::Compile(
      R"({"type": "object", "properties": {
            "n": {"enum": [1, 12, "x", null, 1]},
            "c": {"const": {"a": [true]}},
            "t": {"type": ["string", "null"]},
            "kids": {"type": "array", "items": {"$ref": "#"}},
            "any": {}}})");
  ASSERT_TRUE(s.ok()) << s.status();
  const JsonSchema::Node& root = (*s)->node((*s)->roots()[0]);
  const JsonSchema::Node& n = (*s)->node(root.properties[0].node);
  ASSERT_EQ(n.kind, Kind::kEnum);
  EXPECT_EQ(n.literals, (std::vector<std::string>{"1", "12", "\"x\"", "null"}));  // deduplicated
  EXPECT_EQ((*s)->node(root.properties[1].node).literals,
            (std::vector<std::string>{R"({"a":[true]})"}));
  EXPECT_EQ((*s)->node(root.properties[2].node).kind, Kind::kAnyOf);
  EXPECT_EQ((*s)->node(root.properties[4].node).kind, Kind::kAny);
  // An object without properties is any object, or only {} without additional properties.
  auto any = JsonSchema::Compile(R"({"type": "object", "additionalProperties": true})");
  ASSERT_TRUE(any.ok());
  EXPECT_EQ((*any)->node((*any)->roots()[0]).kind, Kind::kAnyObject);
  auto empty = JsonSchema::Compile(
      R"({"type": "object", "properties": {"e": {"type": "object",
                                                 "additionalProperties": false}}})");
  ASSERT_TRUE(empty.ok()) << empty.status();
  const JsonSchema::Node& e =
      (*empty)->node((*empty)->node((*empty)->roots()[0]).properties[0].node);
  EXPECT_EQ(e.kind, Kind::kEnum);
  EXPECT_EQ(e.literals, (std::vector<std::string>{"{}"}));
}

TEST(JsonSchemaTest, RefusesWhatItCannotKeepNamingWhere) {
  struct Case {
    const char* schema;
    const char* message;  // a part of the error
  };
  const Case cases[] = {
      {R"({"type": "string"})", "top level must be an object"},
      {R"({"anyOf": [{"type": "object"}, {"type": "string"}]})", "'#/anyOf/1' must be an object"},
      {R"({"anyOf": []})", "non-empty array"},
      {R"({"anyOf": [{"type": "object"}], "type": "object"})", "'type' beside a top-level"},
      {R"({"type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}})",
       "'#/properties/a': keyword 'pattern'"},
      {R"({"type": "object", "properties": {"a": {"type": "integer", "minimum": 0}}})",
       "keyword 'minimum'"},
      {R"({"type": "object", "properties": {"a": {"oneOf": [{}]}}})", "keyword 'oneOf'"},
      {R"({"type": "object", "properties": {"a": {"anyOf": [{"type": "object"},
                                                             {"type": "object"}]}}})",
       "start differently"},
      {R"({"type": "object", "properties": {"a": {"type": ["number", "integer"]}}})",
       "start differently"},
      {R"({"type": "object", "properties": {"a": {"$ref": "#/$defs/Nope"}}})", "names nothing"},
      {R"({"type": "object", "properties": {"a": {"$ref": "http://x/y"}}})", "not within"},
      {R"({"type": "object", "properties": {"a": {}}, "required": ["b"]})", "\"b\" is not in"},
      {R"({"type": "object", "properties": {"a": {"type": "array", "minItems": 3,
                                                   "maxItems": 2}}})",
       "above 'maxItems'"},
      {R"({"type": "object", "properties": {"a": {"type": "string", "items": {}}}})",
       "'items' on a non-array"},
      {R"({"type": "object", "properties": {"a": {"type": "date"}}})", "unknown type 'date'"},
      {R"({"type": "object", "properties": {"a": false}})", "admits no value"},
      {R"({"type": "object", "properties": {"a": {"enum": []}}})", "non-empty"},
      {R"({"type": "object", "properties": {"a": {"$ref": "#/properties/a"}}})", "cycle"},
      {"{not json", "not valid JSON"},
      {R"({"type": "object", "properties": {"m": {"type": "object",
                                                  "additionalProperties": {"type": "integer"}}}})",
       "'additionalProperties' as a schema"},
  };
  for (const Case& c : cases) {
    auto s = JsonSchema::Compile(c.schema);
    ASSERT_FALSE(s.ok()) << c.schema;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << c.schema;
    EXPECT_NE(s.status().message().find(c.message), std::string::npos)
        << c.schema << " -> " << s.status();
  }
}

TEST(JsonSchemaTest, TopLevelAnyOfOfObjectsMayStartAlike) {
  // Two objects start with the same byte: refused below the top level, one root each at it.
  auto s = JsonSchema::Compile(R"({"anyOf": [
      {"type": "object", "properties": {"a": {"type": "integer"}}},
      {"$ref": "#/$defs/B"}],
    "$defs": {"B": {"type": "object", "properties": {"b": {"type": "string"}}}}})");
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ((*s)->roots().size(), 2u);
  EXPECT_EQ((*s)->node((*s)->roots()[0]).properties[0].key, "\"a\"");
  EXPECT_EQ((*s)->node((*s)->roots()[1]).properties[0].key, "\"b\"");
}

}  // namespace
}  // namespace crescent::engine
