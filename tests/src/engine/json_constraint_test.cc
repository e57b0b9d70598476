#include "src/engine/json_constraint.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "src/engine/json_schema.h"
#include "src/model/gguf.h"
#include "src/model/tokenizer.h"

namespace crescent::engine {
namespace {

// Feeds `text` byte by byte; the index of the first byte refused, or -1 when all are taken.
int FirstRefused(std::string_view text, JsonLexer* lexer) {
  for (size_t i = 0; i < text.size(); ++i) {
    if (!lexer->Feed(static_cast<uint8_t>(text[i]))) return static_cast<int>(i);
  }
  return -1;
}

bool AcceptsWhole(std::string_view text) {
  JsonLexer lexer;
  return FirstRefused(text, &lexer) < 0 && lexer.complete();
}

TEST(JsonLexerTest, AcceptsObjects) {
  const std::vector<std::string> docs = {
      "{}",
      "{ }",
      R"({"a":1})",
      R"({"a": [1, -2.5e+3, 0, 0.25, 1E-2, true, false, null, "x\u00e9\n\"\\\/", {"b": {}}, []]})",
      "{\n  \"name\": \"Ann\",\n  \"tags\": [\n    \"a\",\n    \"b\"\n  ]\n}",
      "{\"utf8\": \"caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80 \x7F\"}",
      R"({"":""})",
      R"({"n":-0.0e0})",
  };
  for (const std::string& doc : docs) {
    JsonLexer lexer;
    EXPECT_EQ(FirstRefused(doc, &lexer), -1) << doc;
    EXPECT_TRUE(lexer.complete()) << doc;
    EXPECT_EQ(lexer.depth(), 0) << doc;
  }
}

TEST(JsonLexerTest, RefusesAtTheFirstBadByte) {
  struct Case {
    std::string text;
    int refused;  // index of the byte refused
  };
  const std::vector<Case> cases = {
      {"[]", 0},                            // the top level must be an object
      {" {}", 0},                           // and start at once
      {"\"a\"", 0},                         //
      {"{\"a\":01}", 6},                    // no leading zeros
      {"{\"a\":1,}", 7},                    // no trailing comma
      {"{\"a\" 1}", 5},                     // colon missing
      {"{'a':1}", 1},                       // single quotes
      {"{\"a\":tru}", 8},                   //
      {"{\"a\":\"\x01\"}", 6},              // raw control character in a string
      {"{\"a\":\"\\q\"}", 7},               // unknown escape
      {"{\"a\":\"\\u12g4\"}", 10},          // not a hex digit
      {"{\"a\":\"\xC0\x80\"}", 6},          // overlong
      {"{\"a\":\"\xED\xA0\x80\"}", 7},      // UTF-16 surrogate
      {"{\"a\":\"\xF4\x90\x80\x80\"}", 7},  // above U+10FFFF
      {"{\"a\":\"\xE6\x97\"}", 8},          // character cut short
      {"{\"a\":1}}", 7},                    // anything after the object
      {"{\"a\":1} ", 7},                    //
      {"{\"a\":-}", 6},                     //
      {"{\"a\":1.}", 7},                    //
      {"{\"a\":1e}", 7},                    //
      {"{\"a\":[1}", 7},                    // mismatched bracket
      {"{\"a\":{]}", 6},                    //
      {"{1:2}", 1},                         // keys are strings
  };
  for (const Case& c : cases) {
    JsonLexer lexer;
    EXPECT_EQ(FirstRefused(c.text, &lexer), c.refused) << c.text;
  }
}

TEST(JsonLexerTest, RefusedByteLeavesTheLexerAsItWas) {
  JsonLexer lexer;
  ASSERT_TRUE(lexer.Feed(std::string_view("{\"a\":1")));
  const JsonLexer before = lexer;
  EXPECT_FALSE(lexer.Feed(static_cast<uint8_t>('x')));
  EXPECT_TRUE(lexer == before);
  // The number may still go on, or end at a delimiter that is taken in its own right.
  EXPECT_TRUE(lexer.Feed(std::string_view("23}")));
  EXPECT_TRUE(lexer.complete());
}

TEST(JsonLexerTest, LimitsWhitespaceRunsOutsideStrings) {
  JsonLexer lexer;
  ASSERT_TRUE(lexer.Feed(static_cast<uint8_t>('{')));
  // Depth 1: a run of at most 2 + 4 bytes, one line break.
  ASSERT_TRUE(lexer.Feed(std::string_view(" \n    ")));
  EXPECT_FALSE(lexer.Feed(static_cast<uint8_t>(' ')));
  ASSERT_TRUE(lexer.Feed(std::string_view("\"k\":")));  // a token resets the run
  ASSERT_TRUE(lexer.Feed(static_cast<uint8_t>('\n')));
  EXPECT_FALSE(lexer.Feed(static_cast<uint8_t>('\n')));  // one line break a run
  ASSERT_TRUE(lexer.Feed(std::string_view("[")));
  // Depth 2: 10 bytes.
  EXPECT_TRUE(lexer.Feed(std::string_view("\r\n        ")));
  EXPECT_FALSE(lexer.Feed(static_cast<uint8_t>('\t')));
  // Inside strings whitespace is content, not limited.
  JsonLexer s;
  ASSERT_TRUE(s.Feed(std::string_view("{\"")));
  EXPECT_TRUE(s.Feed(std::string(200, ' ')));
  EXPECT_TRUE(s.Feed(std::string_view("\"")));
}

TEST(JsonLexerTest, LimitsDigits) {
  const std::string twenty(20, '7');
  for (const std::string& ok :
       {"{\"a\":-" + twenty + "." + twenty + "e+123}", "{\"a\":" + twenty + "E-1}"}) {
    EXPECT_TRUE(AcceptsWhole(ok)) << ok;
  }
  JsonLexer lexer;
  EXPECT_EQ(FirstRefused("{\"a\":" + twenty + "7", &lexer), 25);
  JsonLexer frac;
  EXPECT_EQ(FirstRefused("{\"a\":0." + twenty + "7", &frac), 27);
  JsonLexer exp;
  EXPECT_EQ(FirstRefused("{\"a\":1e1234", &exp), 10);
}

TEST(JsonLexerTest, LimitsNesting) {
  JsonLexer lexer;
  ASSERT_TRUE(lexer.Feed(std::string_view("{\"a\":")));
  for (int d = 1; d < kJsonMaxDepth; ++d) ASSERT_TRUE(lexer.Feed(static_cast<uint8_t>('['))) << d;
  EXPECT_EQ(lexer.depth(), kJsonMaxDepth);
  EXPECT_FALSE(lexer.Feed(static_cast<uint8_t>('[')));
  EXPECT_FALSE(lexer.Feed(static_cast<uint8_t>('{')));
  for (int d = 1; d < kJsonMaxDepth; ++d) ASSERT_TRUE(lexer.Feed(static_cast<uint8_t>(']'))) << d;
  EXPECT_TRUE(lexer.Feed(static_cast<uint8_t>('}')));
  EXPECT_TRUE(lexer.complete());
}

// A random JSON value of bounded depth.
nlohmann::json RandomValue(std::mt19937& rng, int depth) {
  std::uniform_int_distribution<int> kind(0, depth >= 4 ? 4 : 6);
  switch (kind(rng)) {
    case 0:
      return std::uniform_int_distribution<int>(-100000, 100000)(rng);
    case 1:
      return std::uniform_real_distribution<double>(-1e6, 1e6)(rng);
    case 2: {
      static const std::vector<std::string> words = {"",
                                                     "a",
                                                     "hello world",
                                                     "tab\there",
                                                     "quote\"back\\slash",
                                                     "caf\xC3\xA9",
                                                     "\xE6\x97\xA5\xE6\x9C\xAC",
                                                     "\xF0\x9F\x98\x80",
                                                     "ctl\x01\x1F",
                                                     "/slash"};
      return words[std::uniform_int_distribution<size_t>(0, words.size() - 1)(rng)];
    }
    case 3:
      return std::uniform_int_distribution<int>(0, 1)(rng) == 1;
    case 4:
      return nullptr;
    case 5: {
      nlohmann::json a = nlohmann::json::array();
      const int n = std::uniform_int_distribution<int>(0, 4)(rng);
      for (int i = 0; i < n; ++i) a.push_back(RandomValue(rng, depth + 1));
      return a;
    }
    default: {
      nlohmann::json o = nlohmann::json::object();
      const int n = std::uniform_int_distribution<int>(0, 4)(rng);
      for (int i = 0; i < n; ++i) o["k" + std::to_string(i)] = RandomValue(rng, depth + 1);
      return o;
    }
  }
}

// Differential test against nlohmann's parser: random objects dumped compact and indented are
// accepted; single-byte mutations of them are accepted exactly when nlohmann accepts them as
// one object with nothing after it.
TEST(JsonLexerTest, AgreesWithAJsonParserOnMutatedDocuments) {
  std::mt19937 rng(7);
  int mutated_valid = 0, mutated_invalid = 0;
  for (int iter = 0; iter < 2000; ++iter) {
    nlohmann::json doc = nlohmann::json::object();
    const int n = std::uniform_int_distribution<int>(0, 4)(rng);
    for (int i = 0; i < n; ++i) doc["key" + std::to_string(i)] = RandomValue(rng, 1);
    const std::string text = doc.dump(iter % 2 == 0 ? -1 : 2);
    ASSERT_TRUE(AcceptsWhole(text)) << text;
    static const std::string alphabet = "{}[]\":,.-+eE0123456789 \n\\tfnrua\x01\x80\xC3\xE6";
    for (int m = 0; m < 8; ++m) {
      std::string bad = text;
      const size_t pos = std::uniform_int_distribution<size_t>(0, bad.size() - 1)(rng);
      bad[pos] = alphabet[std::uniform_int_distribution<size_t>(0, alphabet.size() - 1)(rng)];
      // A byte made whitespace may break the lexer's whitespace limits (two line breaks in a
      // run, whitespace before the object) in a document a parser takes: not compared.
      if (bad[pos] == ' ' || bad[pos] == '\n') continue;
      bool expected = false;
      if (bad.back() == '}') {
        try {
          expected = nlohmann::json::parse(bad).is_object();
        } catch (const nlohmann::json::out_of_range&) {
          continue;  // a number beyond double's range: nlohmann refuses it, RFC 8259 does not
        } catch (const nlohmann::json::parse_error&) {
        }
      }
      EXPECT_EQ(AcceptsWhole(bad), expected) << bad;
      (expected ? mutated_valid : mutated_invalid)++;
    }
  }
  EXPECT_GT(mutated_valid, 100);
  EXPECT_GT(mutated_invalid, 100);
}

// ---- With a schema ----------------------------------------------------------------------------

constexpr char kPersonSchema[] = R"({
  "$defs": {"Pet": {"properties": {"kind": {"enum": ["cat", "dog"]},
                                   "legs": {"type": "integer"}},
                    "required": ["kind", "legs"], "type": "object"}},
  "properties": {"name": {"type": "string"},
                 "age": {"type": "integer"},
                 "tags": {"items": {"type": "string"}, "type": "array", "minItems": 1,
                          "maxItems": 3},
                 "pet": {"anyOf": [{"$ref": "#/$defs/Pet"}, {"type": "null"}]},
                 "extra": {}},
  "type": "object"})";

std::shared_ptr<const JsonSchema> Schema(const char* text) {
  auto s = JsonSchema::Compile(text);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : nullptr;
}

TEST(JsonSchemaLexerTest, AcceptsWhatTheSchemaAdmits) {
  auto schema = Schema(kPersonSchema);
  const std::vector<std::string> docs = {
      R"({"name":"Ann","age":30,"tags":["a"],"pet":{"kind":"cat","legs":4},"extra":[1,{"x":null}]})",
      R"({"name": "B\u00e9", "age": -7, "tags": ["a", "b", "c"], "pet": null, "extra": "s"})",
      "{\n  \"name\": \"C\",\n  \"age\": 0,\n  \"tags\": [ \"x\" ],\n  \"pet\": {\n    "
      "\"kind\": \"dog\",\n    \"legs\": 3\n  },\n  \"extra\": 2.5e3\n}",
  };
  for (const std::string& doc : docs) {
    JsonLexer lexer(schema.get());
    EXPECT_EQ(FirstRefused(doc, &lexer), -1) << doc;
    EXPECT_TRUE(lexer.complete()) << doc;
  }
}

TEST(JsonSchemaLexerTest, RefusesWhatTheSchemaDoesNot) {
  auto schema = Schema(kPersonSchema);
  const std::string head = R"({"name":"A","age":1,)";
  struct Case {
    std::string text;
    int refused;
  };
  const std::vector<Case> cases = {
      {R"({"age":1})", 2},                                 // properties in the schema's order
      {R"({"name":"A"})", 11},                             // a property missing
      {R"({"name":1})", 8},                                // a string wanted
      {R"({"name":"A","age":1.5})", 19},                   // an integer wanted
      {R"({"name":"A","age":"1"})", 18},                   //
      {R"({"name":"A","age":01})", 19},                    // still no leading zero
      {head + R"("tags":[])", 28},                         // minItems 1
      {head + R"("tags":["a","b","c","d"])", 39},          // maxItems 3
      {head + R"("tags":["a"],"pet":true)", 39},           // an object or null
      {head + R"("tags":["a"],"pet":{"kind":"cow")", 49},  // an enum value
      {head + R"("tags":["a"],"pet":{"kind":"cat","legs":4,)", 61},  // no extra property
      {head + R"("tags":["a"],"pet":null,"extra":1,)", 53},          // nor after the last
  };
  for (const Case& c : cases) {
    JsonLexer lexer(schema.get());
    EXPECT_EQ(FirstRefused(c.text, &lexer), c.refused) << c.text;
  }
}

TEST(JsonSchemaLexerTest, EnumValuesThatArePrefixesOfOthers) {
  auto schema = Schema(R"({"type": "object", "properties": {"n": {"enum": [1, 12, "a"]}}})");
  for (const char* ok : {R"({"n":1})", R"({"n":12})", R"({"n": "a" })"}) {
    JsonLexer lexer(schema.get());
    EXPECT_EQ(FirstRefused(ok, &lexer), -1) << ok;
    EXPECT_TRUE(lexer.complete()) << ok;
  }
  JsonLexer lexer(schema.get());
  EXPECT_EQ(FirstRefused(R"({"n":13})", &lexer), 6);  // "1" ended; '3' cannot follow a value
}

TEST(JsonSchemaLexerTest, ObjectWithoutAdditionalPropertiesIsEmpty) {
  auto schema = Schema(R"({"type": "object", "properties": {
      "e": {"type": "object", "additionalProperties": false}, "f": {"type": "object"}}})");
  JsonLexer lexer(schema.get());
  EXPECT_EQ(FirstRefused(R"({"e":{},"f":{"x":[1]}})", &lexer), -1);
  EXPECT_TRUE(lexer.complete());
  JsonLexer bad(schema.get());
  EXPECT_EQ(FirstRefused(R"({"e":{"x":1}})", &bad), 6);
}

TEST(JsonSchemaLexerTest, RecursiveSchema) {
  auto schema = Schema(R"({"type": "object", "properties": {
      "v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#"}}}})");
  JsonLexer lexer(schema.get());
  const std::string doc =
      R"({"v":1,"kids":[{"v":2,"kids":[]},{"v":3,"kids":[{"v":4,"kids":[]}]}]})";
  EXPECT_EQ(FirstRefused(doc, &lexer), -1);
  EXPECT_TRUE(lexer.complete());
  JsonLexer bad(schema.get());
  EXPECT_EQ(FirstRefused(R"({"v":1,"kids":[{"v":2}]})", &bad), 21);
}

// A tool call per tool: the alternatives start alike and part at the name.
constexpr char kToolCallSchema[] = R"({"anyOf": [
  {"type": "object", "properties": {"name": {"const": "get_weather"},
     "arguments": {"type": "object", "properties": {"city": {"type": "string"}}}}},
  {"type": "object", "properties": {"name": {"const": "get_time"},
     "arguments": {"type": "object", "properties": {"zone": {"type": "integer"}}}}}]})";

TEST(JsonSchemaLexerTest, TopLevelAlternativesEachHaveALexer) {
  auto schema = Schema(kToolCallSchema);
  ASSERT_NE(schema, nullptr);
  ASSERT_EQ(schema->roots().size(), 2u);
  const std::string weather = R"({"name": "get_weather", "arguments": {"city": "Oslo"}})";
  const std::string time = R"({"name": "get_time", "arguments": {"zone": 2}})";
  JsonLexer first(schema.get(), 0);
  JsonLexer second(schema.get(), 1);
  EXPECT_EQ(FirstRefused(weather, &first), -1);
  EXPECT_TRUE(first.complete());
  EXPECT_EQ(FirstRefused(time, &second), -1);
  EXPECT_TRUE(second.complete());
  JsonLexer wrong(schema.get(), 1);
  EXPECT_EQ(FirstRefused(weather, &wrong), static_cast<int>(std::string_view(weather).find("w")));
}

TEST(JsonConstraintTest, TopLevelAlternativesAreFollowedTogether) {
  auto schema = Schema(kToolCallSchema);
  ASSERT_NE(schema, nullptr);
  // One token per byte, and an end token.
  std::vector<std::string> pieces;
  for (int b = 32; b < 127; ++b) pieces.push_back(std::string(1, static_cast<char>(b)));
  pieces.push_back("<end>");
  const int32_t end = static_cast<int32_t>(pieces.size()) - 1;
  std::vector<bool> usable(pieces.size(), true);
  usable[end] = false;
  auto v = JsonVocabulary::Create(pieces, usable, {end});
  ASSERT_TRUE(v.ok()) << v.status();
  auto id = [](char c) { return static_cast<int32_t>(c) - 32; };
  auto allowed = [&](JsonConstraint& c) {
    std::vector<float> logits((*v)->vocab_size(), 0.0f);
    EXPECT_TRUE(c.Restrict(logits).ok());
    std::string out;
    for (int32_t i = 0; i < end; ++i) {
      if (!std::isinf(logits[i])) out += pieces[i];
    }
    return out;
  };
  JsonConstraint c(v->get(), schema);
  for (char ch : std::string_view(R"({"name":"get_)")) ASSERT_TRUE(c.Accept(id(ch)).ok()) << ch;
  EXPECT_EQ(allowed(c), "tw");  // either tool's name goes on
  ASSERT_TRUE(c.Accept(id('t')).ok());
  EXPECT_EQ(allowed(c), "i");  // only get_time is left
  EXPECT_EQ(c.Accept(id('w')).code(), absl::StatusCode::kInvalidArgument);
  for (char ch : std::string_view(R"(ime","arguments":{"zone":)")) {
    ASSERT_TRUE(c.Accept(id(ch)).ok()) << ch;
  }
  EXPECT_EQ(c.Accept(id('"')).code(), absl::StatusCode::kInvalidArgument);  // an integer
  for (char ch : std::string_view("7}")) ASSERT_TRUE(c.Accept(id(ch)).ok()) << ch;
  EXPECT_FALSE(c.complete());
  EXPECT_EQ(c.Accept(end).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(c.Accept(id('}')).ok());
  EXPECT_TRUE(c.complete());
  EXPECT_TRUE(c.Accept(end).ok());
}

// ---- JsonVocabulary and JsonConstraint on a small vocabulary ----------------------------------

std::unique_ptr<JsonVocabulary> SmallVocabulary() {
  // id:                 0    1    2     3      4     5    6    7      8     9       10
  std::vector<std::string> pieces = {"{", "}",   "\"",  "ab",  "\":", " ",
                                     "1", "}\n", "\"}", "<e>", "{}"};
  std::vector<bool> usable(pieces.size(), true);
  usable[9] = false;
  auto v = JsonVocabulary::Create(pieces, usable, {9});
  EXPECT_TRUE(v.ok()) << v.status();
  return std::move(*v);
}

std::vector<int32_t> AllowedIds(const JsonVocabulary& v, const JsonLexer& lexer) {
  std::vector<uint64_t> bits;
  v.Allowed(lexer, &bits);
  std::vector<int32_t> out;
  for (int32_t id = 0; id < v.vocab_size(); ++id) {
    if ((bits[id / 64] >> (id % 64)) & 1) out.push_back(id);
  }
  return out;
}

TEST(JsonVocabularyTest, AllowedSetsFollowTheLexer) {
  auto v = SmallVocabulary();
  JsonLexer lexer;
  EXPECT_EQ(AllowedIds(*v, lexer), (std::vector<int32_t>{0, 10}));  // "{", "{}"
  ASSERT_TRUE(lexer.Feed(static_cast<uint8_t>('{')));
  // `"` opens a key, after which `:` and `}` are string content; `}\n` closes the object and
  // then has a byte too many.
  EXPECT_EQ(AllowedIds(*v, lexer), (std::vector<int32_t>{1, 2, 4, 5, 8}));
  ASSERT_TRUE(lexer.Feed(std::string_view("\"ab")));
  // In a key: printable bytes; a raw newline is refused, and `"}` closes the key then meets `}`
  // where a colon must be.
  EXPECT_EQ(AllowedIds(*v, lexer), (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 10}));
  ASSERT_TRUE(lexer.Feed(std::string_view("\": 1")));
  EXPECT_EQ(AllowedIds(*v, lexer), (std::vector<int32_t>{1, 5, 6}));
  ASSERT_TRUE(lexer.Feed(static_cast<uint8_t>('}')));
  EXPECT_EQ(AllowedIds(*v, lexer), (std::vector<int32_t>{9}));  // only the end token
}

TEST(JsonConstraintTest, RestrictAndAccept) {
  auto v = SmallVocabulary();
  JsonConstraint c(v.get());
  std::vector<float> logits(v->vocab_size(), 1.0f);
  ASSERT_TRUE(c.Restrict(logits).ok());
  for (int32_t id = 0; id < v->vocab_size(); ++id) {
    const bool allowed = id == 0 || id == 10;
    EXPECT_EQ(std::isinf(logits[id]) && logits[id] < 0, !allowed) << id;
  }
  absl::Status s = c.Accept(1);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("does not continue"), std::string::npos) << s;
  EXPECT_EQ(c.Accept(9).code(), absl::StatusCode::kInvalidArgument);  // end before complete
  EXPECT_EQ(c.Accept(99).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(c.Accept(10).ok());  // "{}"
  EXPECT_TRUE(c.complete());
  EXPECT_EQ(c.Accept(5).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(c.Accept(9).ok());
}

TEST(JsonConstraintTest, SpecialTokensAreNeverAllowedInside) {
  std::vector<std::string> pieces = {"{", "<|x|>", "}", "<end>"};
  auto v = JsonVocabulary::Create(pieces, {true, false, true, false}, {3});
  ASSERT_TRUE(v.ok()) << v.status();
  JsonConstraint c(v->get());
  ASSERT_TRUE(c.Accept(0).ok());
  EXPECT_EQ(c.Accept(1).code(), absl::StatusCode::kInvalidArgument);
  std::vector<float> logits(4, 0.0f);
  ASSERT_TRUE(c.Restrict(logits).ok());
  EXPECT_TRUE(std::isinf(logits[1]));
  EXPECT_FALSE(std::isinf(logits[2]));
}

TEST(JsonConstraintTest, NoContinuationIsAnError) {
  // Nothing but "{": after it no token continues.
  auto v = JsonVocabulary::Create({"{", "<end>"}, {true, false}, {1});
  ASSERT_TRUE(v.ok());
  JsonConstraint c(v->get());
  ASSERT_TRUE(c.Accept(0).ok());
  std::vector<float> logits(2, 0.0f);
  EXPECT_EQ(c.Restrict(logits).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(JsonVocabularyTest, RejectsBadInput) {
  EXPECT_EQ(JsonVocabulary::Create({"a"}, {true, true}, {0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JsonVocabulary::Create({"a"}, {true}, {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(JsonVocabulary::Create({"a"}, {true}, {3}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ---- The reference model's vocabulary --------------------------------------------------------

class SmolLmJsonTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* path = std::getenv("CRESCENT_MODEL");
    if (path == nullptr || !std::filesystem::exists(path)) return;
    auto file = model::GgufFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status();
    auto tokenizer = model::Tokenizer::FromGguf(**file);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = std::move(*tokenizer).release();
    auto v = JsonVocabulary::FromTokenizer(*tokenizer_);
    ASSERT_TRUE(v.ok()) << v.status();
    vocabulary_ = std::move(*v).release();
  }
  static void TearDownTestSuite() {
    delete vocabulary_;
    delete tokenizer_;
    vocabulary_ = nullptr;
    tokenizer_ = nullptr;
  }
  void SetUp() override {
    if (vocabulary_ == nullptr) GTEST_SKIP() << "reference model not found (CRESCENT_MODEL)";
  }
  static model::Tokenizer* tokenizer_;
  static JsonVocabulary* vocabulary_;
};
model::Tokenizer* SmolLmJsonTest::tokenizer_ = nullptr;
JsonVocabulary* SmolLmJsonTest::vocabulary_ = nullptr;

// Random walks over the real vocabulary, each step a token the constraint allows (leaning to
// tokens that close strings and containers, so that walks end): at several states the allowed
// set equals a brute-force check of every token. Returns the texts of the walks that reached an
// end token (only end tokens are then allowed).
std::vector<std::string> Walks(const JsonVocabulary& v, std::shared_ptr<const JsonSchema> schema,
                               int walks, uint32_t seed, int* brute_checks) {
  std::mt19937 rng(seed);
  const int n = v.vocab_size();
  std::vector<std::string> completed;
  for (int walk = 0; walk < walks; ++walk) {
    JsonConstraint c(&v, schema);
    JsonLexer lexer(schema.get());  // mirrors c
    std::string text;
    for (int step = 0; step < 400 && !c.complete(); ++step) {
      std::vector<uint64_t> bits;
      v.Allowed(lexer, &bits);
      std::vector<int32_t> allowed, closing;
      for (int32_t id = 0; id < n; ++id) {
        if (!((bits[id / 64] >> (id % 64)) & 1)) continue;
        allowed.push_back(id);
        if (v.piece(id).find_first_of("\"}],:") != std::string_view::npos) closing.push_back(id);
      }
      if (step % 25 == 3) {
        ++*brute_checks;
        for (int32_t id = 0; id < n; ++id) {
          JsonLexer probe = lexer;
          const bool ok =
              v.usable(id) && !v.is_end(id) && !v.piece(id).empty() && probe.Feed(v.piece(id));
          EXPECT_EQ(std::binary_search(allowed.begin(), allowed.end(), id), ok)
              << "token " << id << " '" << v.piece(id) << "' after '" << text << "'";
        }
      }
      if (allowed.empty()) {
        ADD_FAILURE() << "no token allowed after '" << text << "'";
        break;
      }
      const std::vector<int32_t>& pool =
          !closing.empty() && std::uniform_int_distribution<int>(0, 2)(rng) > 0 ? closing : allowed;
      const int32_t token = pool[std::uniform_int_distribution<size_t>(0, pool.size() - 1)(rng)];
      EXPECT_TRUE(c.Accept(token).ok());
      EXPECT_TRUE(lexer.Feed(v.piece(token)));
      text += v.piece(token);
    }
    if (!c.complete()) continue;
    EXPECT_EQ(AllowedIds(v, lexer), v.end_tokens());
    completed.push_back(text);
  }
  return completed;
}

TEST_F(SmolLmJsonTest, WalksSpellObjectsAndTheTrieMatchesBruteForce) {
  int brute_checks = 0;
  const std::vector<std::string> texts = Walks(*vocabulary_, nullptr, 12, 11, &brute_checks);
  for (const std::string& text : texts) {
    ASSERT_TRUE(nlohmann::json::accept(text)) << text;
    EXPECT_TRUE(nlohmann::json::parse(text).is_object()) << text;
  }
  EXPECT_GE(texts.size(), 6u);
  EXPECT_GE(brute_checks, 12);
  // The end tokens are SmolLM2's <|im_end|> and <|endoftext|>.
  EXPECT_TRUE(vocabulary_->is_end(*tokenizer_->TokenId("<|im_end|>")));
  EXPECT_FALSE(vocabulary_->usable(*tokenizer_->TokenId("<|im_start|>")));
}

// The same with a schema: every finished walk is an object the schema admits, checked here
// field by field with a JSON parser.
TEST_F(SmolLmJsonTest, WalksUnderASchemaSpellAdmittedObjects) {
  auto schema = Schema(kPersonSchema);
  int brute_checks = 0;
  const std::vector<std::string> texts = Walks(*vocabulary_, schema, 12, 5, &brute_checks);
  for (const std::string& text : texts) {
    ASSERT_TRUE(nlohmann::json::accept(text)) << text;
    const nlohmann::ordered_json j = nlohmann::ordered_json::parse(text);
    std::vector<std::string> keys;
    for (const auto& [k, v] : j.items()) keys.push_back(k);
    EXPECT_EQ(keys, (std::vector<std::string>{"name", "age", "tags", "pet", "extra"})) << text;
    EXPECT_TRUE(j["name"].is_string()) << text;
    EXPECT_TRUE(j["age"].is_number_integer()) << text;
    ASSERT_TRUE(j["tags"].is_array()) << text;
    EXPECT_GE(j["tags"].size(), 1u);
    EXPECT_LE(j["tags"].size(), 3u);
    for (const auto& t : j["tags"]) EXPECT_TRUE(t.is_string()) << text;
    if (!j["pet"].is_null()) {
      ASSERT_TRUE(j["pet"].is_object()) << text;
      EXPECT_TRUE(j["pet"]["kind"] == "cat" || j["pet"]["kind"] == "dog") << text;
      EXPECT_TRUE(j["pet"]["legs"].is_number_integer()) << text;
      EXPECT_EQ(j["pet"].size(), 2u) << text;
    }
  }
  EXPECT_GE(texts.size(), 4u);
  EXPECT_GE(brute_checks, 12);
}

}  // namespace
}  // namespace crescent::engine
