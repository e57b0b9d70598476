// JSON mode (OpenAI `response_format: {"type": "json_object"}`): the tokens a sequence may
// sample next are restricted so that its output is one JSON object.
//
// Three parts:
//   JsonLexer        a byte-level pushdown automaton for one JSON object (RFC 8259), optionally
//                    one a JSON Schema admits (src/engine/json_schema.h), with limits of its own
//                    so that a model cannot spend its tokens on blanks: the object starts at
//                    once (no whitespace before it), and a run of whitespace outside strings
//                    holds at most one line break and 2 + 4 * depth bytes (enough for a line
//                    break and four spaces of indentation per level); at most kJsonMaxDepth
//                    nested containers, and numbers of at most 20 + 20 digits and a 3-digit
//                    exponent. Pure; a copyable value.
//   JsonVocabulary   one per model: the token byte strings in a trie and the end-of-generation
//                    tokens. Immutable once built, so thread-safe.
//   JsonConstraint   one per request: the lexer fed with the tokens sampled so far. Restrict()
//                    sets every logit whose token cannot come next to -inf; Accept() feeds the
//                    token sampled.
//
// A token may come next when its bytes, fed one by one, keep the lexer alive (it need not
// finish a value: a token may end inside a string or a number). End-of-generation tokens may
// come next only once the object is complete, and then nothing else may. So a sequence that
// stops on an end token holds exactly one JSON object, possibly with whitespace before it;
// one cut short by max_tokens holds a prefix of one (as OpenAI's JSON mode does).
// Special tokens (control, unknown, bos/eos/eot) other than the end tokens never may.
//
// Cost (sampler_bench, SmolLM2's 49152 tokens): an allowed set is one depth-first walk of the
// trie, pruned where the lexer dies, 11-27 us; inside a string, where nearly every token may
// come, the tokens that are plain string content are a precomputed set and only the others
// (quotes, backslashes, control bytes, split characters) are walked. Restrict, the set and the
// -inf mask over the logits, ~36 us a token, against ~3 ms for a decode step.
#ifndef CRESCENT_SRC_ENGINE_JSON_CONSTRAINT_H_
#define CRESCENT_SRC_ENGINE_JSON_CONSTRAINT_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace crescent::model {
class Tokenizer;
}

namespace crescent::engine {

class JsonSchema;

inline constexpr int kJsonMaxDepth = 64;
// Digits a number may have in its integer part, its fraction and its exponent (a model must not
// run on with digits; these hold every double and int64).
inline constexpr int kJsonMaxIntegerDigits = 20;
inline constexpr int kJsonMaxFractionDigits = 20;
inline constexpr int kJsonMaxExponentDigits = 3;

class JsonLexer {
 public:
  // Any JSON object.
  JsonLexer() = default;
  // A JSON object `schema` admits (see src/engine/json_schema.h; the same whitespace and
  // nesting limits): its top-level alternative `alternative` (schema->roots()); any object when
  // `schema` is null. REQUIRES: `schema` outlives the lexer and its copies;
  // 0 <= alternative < schema->roots().size().
  explicit JsonLexer(const JsonSchema* schema, int alternative = 0);

  // Feeds one byte. Returns false, leaving the lexer unchanged, when no JSON object (within the
  // limits above) has the bytes fed so far plus `byte` as a prefix.
  bool Feed(uint8_t byte);
  // Feeds `bytes` in order; false (the lexer then holds the state before the failing byte) when
  // one is refused.
  bool Feed(std::string_view bytes);
  // As Feed(byte), without keeping the state on false (it is then unspecified): for a copy
  // that is thrown away when refused, saving Feed's own copy.
  bool FeedOrSpoil(uint8_t byte);
  // True once the top-level object is closed (only end-of-generation tokens may follow).
  bool complete() const { return lex_ == Lex::kDone; }
  // True inside a free string (not a schema's key or enum value), outside any escape or
  // multi-byte character: where a token of plain string content leaves the lexer as it is.
  bool in_string() const { return lex_ == Lex::kString; }
  int depth() const { return depth_; }

  // Equal lexers take the same bytes from here on.
  bool operator==(const JsonLexer& other) const;

 private:
  enum class Lex : uint8_t {
    kStart,        // before the object: whitespace or '{'
    kValue,        // a value must start (after ':' or after ',' in an array)
    kArrayFirst,   // after '[': a value or ']'
    kObjectFirst,  // after '{': a key or '}'
    kKey,          // after ',' in an object: a key
    kColon,        // after a key: ':'
    kAfterValue,   // after a value in a container: ',' or the container's closing bracket
    kString,       // inside a string (key_ says whether it is a key)
    kEscape,       // after '\' in a string
    kUnicode,      // in \uXXXX; aux_ hex digits to go
    kUtf8,         // inside a multi-byte character; aux_ bytes to go, next in [lo_, hi_]
    kNumMinus,     // '-'
    kNumZero,      // a leading 0
    kNumInt,       // integer digits
    kNumDot,       // '.'
    kNumFrac,      // fraction digits
    kNumE,         // 'e' / 'E'
    kNumExpSign,   // the exponent's sign
    kNumExp,       // exponent digits
    kLiteral,      // in true / false / null: aux_ which, lo_ the next index
    kKeyLiteral,   // schema: in the key of the property being written; pos_ bytes matched
    kEnumLiteral,  // schema: in an enum value; alts_ the literals still possible, pos_ matched
    kDone,         // the object is closed
  };

  bool Step(uint8_t byte);  // Feed without the copy: may leave a partial change on false
  // A value of schema node `node` (-1: any value) starting with `byte`.
  bool StartValue(uint8_t byte, int node);
  bool StartAny(uint8_t byte);
  bool EndNumber(uint8_t byte);  // a number ended at `byte`: it goes to kAfterValue
  bool Blank(uint8_t byte);      // whitespace outside strings, within the limits above
  bool Push(bool object, int node);
  void Pop();
  bool IsObject() const { return (stack_ >> (depth_ - 1)) & 1; }
  // The schema node of the innermost container (-1: a container of any values).
  int Frame() const { return frame_node_[depth_ - 1]; }
  // The schema node the next value of the innermost container must match (-1: any).
  int NextValueNode() const;

  const JsonSchema* schema_ = nullptr;
  int root_ = -1;       // schema mode: the object node the lexer starts with
  uint64_t stack_ = 0;  // bit d: container at depth d + 1 is an object (else an array)
  Lex lex_ = Lex::kStart;
  uint8_t depth_ = 0;
  uint8_t aux_ = 0;
  uint8_t lo_ = 0;
  uint8_t hi_ = 0;
  uint8_t whitespace_ = 0;  // whitespace bytes in a row
  bool line_break_ = false;  // the run holds a '\n'
  bool key_ = false;
  bool int_only_ = false;  // the number being read is a schema integer
  uint16_t pos_ = 0;
  int16_t enum_node_ = -1;
  uint64_t alts_ = 0;
  // Schema mode, per container: its node (-1: any) and the property written (objects) or the
  // items started (arrays).
  int16_t frame_node_[kJsonMaxDepth] = {};
  uint16_t frame_count_[kJsonMaxDepth] = {};
};

class JsonVocabulary {
 public:
  // `pieces[id]` is token id's bytes; `usable[id]` false for tokens never allowed inside the
  // object (special tokens); `end_tokens` the ids that end generation (allowed once complete).
  // REQUIRES: pieces.size() == usable.size(); end token ids in [0, pieces.size()).
  static absl::StatusOr<std::unique_ptr<JsonVocabulary>> Create(std::vector<std::string> pieces,
                                                                std::vector<bool> usable,
                                                                std::vector<int32_t> end_tokens);
  // The vocabulary of `tokenizer`: TokenToPiece bytes, IsSpecial tokens unusable,
  // IsEndOfGeneration tokens the end tokens (at least one needed: FailedPrecondition otherwise).
  static absl::StatusOr<std::unique_ptr<JsonVocabulary>> FromTokenizer(
      const model::Tokenizer& tokenizer);

  int vocab_size() const { return vocab_size_; }
  const std::vector<int32_t>& end_tokens() const { return end_tokens_; }
  // REQUIRES for the three: 0 <= id < vocab_size().
  std::string_view piece(int32_t id) const { return pieces_[id]; }
  bool usable(int32_t id) const { return usable_[id]; }
  bool is_end(int32_t id) const { return is_end_[id]; }

  // The tokens allowed after `lexer`, one bit per id (bit i of word i / 64), in *bits
  // (resized to (vocab_size + 63) / 64 words). Thread-safe.
  void Allowed(const JsonLexer& lexer, std::vector<uint64_t>* bits) const;

 private:
  // Token byte strings as a prefix tree: nodes[0] is the root (no byte); a node's children are
  // first_child and its next_sibling chain, in byte order.
  struct Trie {
    struct Node {
      int32_t first_child = -1;
      int32_t next_sibling = -1;
      int32_t tokens_begin = 0;  // [tokens_begin, tokens_end) of token_ids: tokens ending here
      int32_t tokens_end = 0;
      uint8_t byte = 0;
    };
    std::vector<Node> nodes;
    std::vector<int32_t> token_ids;
  };
  JsonVocabulary() = default;
  Trie BuildTrie(std::vector<int32_t> ids) const;
  // Sets in `bits` the tokens of `trie` whose bytes `lexer` takes.
  static void Walk(const Trie& trie, const JsonLexer& lexer, std::vector<uint64_t>* bits);

  int vocab_size_ = 0;
  std::vector<std::string> pieces_;
  std::vector<bool> usable_;
  std::vector<bool> is_end_;
  Trie all_;  // every usable token
  // Inside a string most tokens are plain content (printable, no quote or backslash, whole
  // UTF-8 characters): they keep the lexer as it is, whatever the rest of its state. Their set,
  // and a trie of the other usable tokens, the only ones walked there.
  std::vector<uint64_t> plain_;
  Trie other_;
  std::vector<int32_t> end_tokens_;
};

class JsonConstraint {
 public:
  // Any JSON object, or one `schema` admits (when not null). REQUIRES: `vocabulary` outlives
  // the constraint.
  explicit JsonConstraint(const JsonVocabulary* vocabulary,
                          std::shared_ptr<const JsonSchema> schema = nullptr);

  // Sets logits[id] = -inf for every token that cannot come next. FailedPrecondition when no
  // token can (the vocabulary has no token for any continuation: the request cannot go on).
  // REQUIRES: logits.size() == vocabulary's vocab_size.
  absl::Status Restrict(std::span<float> logits);
  // Feeds the token that was sampled (or, on a decode node, sampled by the prefill node).
  // InvalidArgument, with the state unchanged, when it is not allowed.
  absl::Status Accept(int32_t token);

  bool complete() const;

 private:
  const JsonVocabulary* vocabulary_;
  std::shared_ptr<const JsonSchema> schema_;
  // One lexer per top-level alternative of the schema still possible (one without a schema, or
  // for a schema whose top level is not an anyOf): a token may come next when it may after
  // any of them.
  std::vector<JsonLexer> lexers_;
  std::vector<uint64_t> allowed_;  // scratch of Restrict
  std::vector<uint64_t> more_;     // scratch of Restrict: another lexer's set
};

}  // namespace crescent::engine

#endif  // CRESCENT_SRC_ENGINE_JSON_CONSTRAINT_H_
