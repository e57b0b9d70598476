// JsonSchema: a JSON Schema (OpenAI `response_format: {"type": "json_schema"}`) compiled into the
// form JsonLexer follows while it constrains generation (src/engine/json_constraint.h).
//
// The subset (OpenAI's structured-output subset, and what Pydantic models produce):
//   type: object | array | string | number | integer | boolean | null, or an array of them;
//   properties (every property is generated, in the schema's order; `required` must name
//     properties; additionalProperties is accepted and never used: no other key is generated);
//     an object without properties is any object, or {} with additionalProperties false (a
//     schema for additional properties, a map's values, is refused);
//   items, minItems, maxItems;
//   enum, const (values generated in compact JSON, e.g. "red" or 1.5);
//   anyOf (also from a type array), when its alternatives start with different bytes (a string
//     and null: yes; two objects: no);
//   $ref to "#", "#/$defs/NAME" or "#/definitions/NAME" (recursion allowed);
//   {} or true: any JSON value.
// Annotations (title, description, default, examples, $schema, $id, $comment, deprecated,
// readOnly, writeOnly, strict, $defs, definitions) are ignored. Any other keyword (pattern,
// format, minLength, minimum, oneOf, allOf, ...) is refused: InvalidArgument naming it and where
// it is, rather than a constraint silently not kept. The top level must be an object, or an
// anyOf of objects (only there may alternatives start alike: one is chosen as the bytes come,
// e.g. a tool call's {"name": ..., "arguments": ...} per tool).
#ifndef CRESCENT_SRC_ENGINE_JSON_SCHEMA_H_
#define CRESCENT_SRC_ENGINE_JSON_SCHEMA_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace crescent::engine {

class JsonSchema {
 public:
  enum class Kind : uint8_t {
    kAny,        // any JSON value
    kAnyObject,  // any JSON object
    kObject,     // the properties, in order
    kArray,      // items, min_items..max_items of them
    kString,
    kNumber,
    kInteger,
    kBoolean,
    kNull,
    kEnum,   // one of `literals`
    kAnyOf,  // one of `alternatives`, told apart by the first byte
  };
  struct Property {
    std::string key;  // the key as JSON, quotes included ("\"name\"")
    int node;
  };
  struct Node {
    Kind kind = Kind::kAny;
    std::vector<Property> properties;   // kObject
    int items = -1;                     // kArray
    int min_items = 0;                  // kArray
    int max_items = -1;                 // kArray; -1: no limit
    std::vector<std::string> literals;  // kEnum: compact JSON of each value
    std::vector<int> alternatives;      // kAnyOf (one for a $ref)
    // kAnyOf: the alternative (node id) a value starting with byte b belongs to, or -1.
    std::array<int16_t, 256> by_first_byte;
  };

  // Compiles `schema` (JSON text). InvalidArgument naming the keyword and its JSON pointer for
  // anything outside the subset above, or when the top level is not an object.
  static absl::StatusOr<std::shared_ptr<const JsonSchema>> Compile(std::string_view schema);

  const Node& node(int id) const { return nodes_[id]; }
  // The top level's alternatives: object nodes (kObject or kAnyObject); one unless the top
  // level is an anyOf.
  const std::vector<int>& roots() const { return roots_; }
  int num_nodes() const { return static_cast<int>(nodes_.size()); }

 private:
  std::vector<Node> nodes_;
  std::vector<int> roots_;
};

}  // namespace crescent::engine

#endif  // CRESCENT_SRC_ENGINE_JSON_SCHEMA_H_
