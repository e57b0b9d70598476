#include "src/engine/json_constraint.h"

#include <algorithm>
#include <bit>
#include <limits>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "src/engine/json_schema.h"
#include "src/model/tokenizer.h"

namespace crescent::engine {
namespace {

bool IsBlank(uint8_t b) { return b == ' ' || b == '\t' || b == '\n' || b == '\r'; }
bool IsDigit(uint8_t b) { return b >= '0' && b <= '9'; }
bool IsHex(uint8_t b) { return IsDigit(b) || (b >= 'a' && b <= 'f') || (b >= 'A' && b <= 'F'); }
constexpr std::string_view kLiterals[3] = {"true", "false", "null"};

}  // namespace

// ---- JsonLexer -------------------------------------------------------------------------------

bool JsonLexer::Feed(uint8_t byte) {
  JsonLexer next = *this;
  if (!next.FeedOrSpoil(byte)) return false;
  *this = next;
  return true;
}

bool JsonLexer::FeedOrSpoil(uint8_t byte) {
  if (!Step(byte)) return false;
  if (!IsBlank(byte)) {
    whitespace_ = 0;
    line_break_ = false;
  }
  return true;
}

JsonLexer::JsonLexer(const JsonSchema* schema, int alternative)
    : schema_(schema), root_(schema != nullptr ? schema->roots()[alternative] : -1) {}

bool JsonLexer::Feed(std::string_view bytes) {
  for (char c : bytes) {
    if (!Feed(static_cast<uint8_t>(c))) return false;
  }
  return true;
}

bool JsonLexer::operator==(const JsonLexer& o) const {
  if (schema_ != o.schema_ || root_ != o.root_ || stack_ != o.stack_ || lex_ != o.lex_ ||
      depth_ != o.depth_ || aux_ != o.aux_ || lo_ != o.lo_ || hi_ != o.hi_ ||
      whitespace_ != o.whitespace_ || line_break_ != o.line_break_ || key_ != o.key_ ||
      int_only_ != o.int_only_ || pos_ != o.pos_ || enum_node_ != o.enum_node_ ||
      alts_ != o.alts_) {
    return false;
  }
  if (schema_ == nullptr) return true;
  return std::equal(frame_node_, frame_node_ + depth_, o.frame_node_) &&
         std::equal(frame_count_, frame_count_ + depth_, o.frame_count_);
}

bool JsonLexer::Blank(uint8_t b) {
  if (whitespace_ >= 2 + 4 * depth_) return false;
  if (b == '\n') {
    if (line_break_) return false;
    line_break_ = true;
  }
  ++whitespace_;
  return true;
}

bool JsonLexer::Push(bool object, int node) {
  if (depth_ >= kJsonMaxDepth) return false;
  if (object) stack_ |= uint64_t{1} << depth_;
  if (schema_ != nullptr) {
    frame_node_[depth_] = static_cast<int16_t>(node);
    frame_count_[depth_] = 0;
  }
  ++depth_;
  lex_ = object ? Lex::kObjectFirst : Lex::kArrayFirst;
  return true;
}

void JsonLexer::Pop() {
  --depth_;
  stack_ &= ~(uint64_t{1} << depth_);
  lex_ = depth_ == 0 ? Lex::kDone : Lex::kAfterValue;
}

int JsonLexer::NextValueNode() const {
  if (schema_ == nullptr || depth_ == 0) return -1;
  const int frame = Frame();
  if (frame < 0) return -1;
  const JsonSchema::Node& n = schema_->node(frame);
  if (n.kind == JsonSchema::Kind::kArray) return n.items;
  return n.properties[frame_count_[depth_ - 1]].node;  // kObject
}

bool JsonLexer::StartAny(uint8_t b) {
  switch (b) {
    case '{':
      return Push(true, -1);
    case '[':
      return Push(false, -1);
    case '"':
      lex_ = Lex::kString;
      key_ = false;
      return true;
    case '-':
      lex_ = Lex::kNumMinus;
      return true;
    case '0':
      lex_ = Lex::kNumZero;
      aux_ = 1;
      return true;
    case 't':
    case 'f':
    case 'n':
      lex_ = Lex::kLiteral;
      aux_ = b == 't' ? 0 : b == 'f' ? 1 : 2;
      lo_ = 1;
      return true;
    default:
      if (IsDigit(b)) {
        lex_ = Lex::kNumInt;
        aux_ = 1;
        return true;
      }
      return false;
  }
}

bool JsonLexer::StartValue(uint8_t b, int node) {
  using Kind = JsonSchema::Kind;
  int_only_ = false;
  if (node < 0) return StartAny(b);
  for (int hops = 0; schema_->node(node).kind == Kind::kAnyOf; ++hops) {
    node = schema_->node(node).by_first_byte[b];
    if (node < 0 || hops > kJsonMaxDepth) return false;
  }
  const JsonSchema::Node& n = schema_->node(node);
  switch (n.kind) {
    case Kind::kAny:
      return StartAny(b);
    case Kind::kAnyObject:
      return b == '{' && Push(true, -1);
    case Kind::kObject:
      return b == '{' && Push(true, node);
    case Kind::kArray:
      return b == '[' && Push(false, node);
    case Kind::kString:
      return b == '"' && StartAny(b);
    case Kind::kInteger:
      int_only_ = true;
      [[fallthrough]];
    case Kind::kNumber:
      return (b == '-' || IsDigit(b)) && StartAny(b);
    case Kind::kBoolean:
      return (b == 't' || b == 'f') && StartAny(b);
    case Kind::kNull:
      return b == 'n' && StartAny(b);
    case Kind::kEnum: {
      uint64_t alts = 0;
      for (size_t a = 0; a < n.literals.size(); ++a) {
        if (static_cast<uint8_t>(n.literals[a][0]) == b) alts |= uint64_t{1} << a;
      }
      if (alts == 0) return false;
      lex_ = Lex::kEnumLiteral;
      enum_node_ = static_cast<int16_t>(node);
      alts_ = alts;
      pos_ = 1;
      return true;
    }
    case Kind::kAnyOf:
      return false;  // resolved above
  }
  return false;
}

bool JsonLexer::EndNumber(uint8_t b) {
  lex_ = Lex::kAfterValue;
  int_only_ = false;
  aux_ = 0;
  return Step(b);
}

bool JsonLexer::Step(uint8_t b) {
  // The schema node of the innermost container; -1 for any container (and without a schema).
  const int frame = schema_ != nullptr && depth_ > 0 ? Frame() : -1;
  switch (lex_) {
    case Lex::kStart:  // no whitespace before the object
      if (schema_ != nullptr) return b == '{' && StartValue(b, root_);
      return b == '{' && Push(true, -1);
    case Lex::kValue:
      if (IsBlank(b)) return Blank(b);
      if (frame >= 0 && schema_->node(frame).kind == JsonSchema::Kind::kArray) {
        ++frame_count_[depth_ - 1];  // the array's next item
      }
      return StartValue(b, NextValueNode());
    case Lex::kArrayFirst:
      if (IsBlank(b)) return Blank(b);
      if (frame >= 0) {
        if (b == ']') {
          if (schema_->node(frame).min_items > 0) return false;
          Pop();
          return true;
        }
        if (schema_->node(frame).max_items == 0) return false;
        frame_count_[depth_ - 1] = 1;
        return StartValue(b, schema_->node(frame).items);
      }
      if (b == ']') {
        Pop();
        return true;
      }
      return StartValue(b, -1);
    case Lex::kObjectFirst:
    case Lex::kKey:
      if (IsBlank(b)) return Blank(b);
      if (frame >= 0) {  // the key of property frame_count_: matched byte by byte
        if (b != '"') return false;
        lex_ = Lex::kKeyLiteral;
        pos_ = 1;
        return true;
      }
      if (b == '}' && lex_ == Lex::kObjectFirst) {
        Pop();
        return true;
      }
      if (b != '"') return false;
      lex_ = Lex::kString;
      key_ = true;
      return true;
    case Lex::kKeyLiteral: {
      const std::string& key = schema_->node(frame).properties[frame_count_[depth_ - 1]].key;
      if (b != static_cast<uint8_t>(key[pos_])) return false;
      if (++pos_ == key.size()) {
        lex_ = Lex::kColon;
        pos_ = 0;
      }
      return true;
    }
    case Lex::kColon:
      if (IsBlank(b)) return Blank(b);
      if (b != ':') return false;
      lex_ = Lex::kValue;
      return true;
    case Lex::kAfterValue:
      if (IsBlank(b)) return Blank(b);
      if (frame >= 0) {
        const JsonSchema::Node& n = schema_->node(frame);
        const int count = frame_count_[depth_ - 1];
        if (n.kind == JsonSchema::Kind::kObject) {
          const bool last = count + 1 == static_cast<int>(n.properties.size());
          if (b == ',' && !last) {
            ++frame_count_[depth_ - 1];
            lex_ = Lex::kKey;
            return true;
          }
          if (b == '}' && last) {
            Pop();
            return true;
          }
          return false;
        }
        if (b == ',' && (n.max_items < 0 || count < n.max_items)) {
          lex_ = Lex::kValue;
          return true;
        }
        if (b == ']' && count >= n.min_items) {
          Pop();
          return true;
        }
        return false;
      }
      if (b == ',') {
        lex_ = IsObject() ? Lex::kKey : Lex::kValue;
        return true;
      }
      if ((b == '}' && IsObject()) || (b == ']' && !IsObject())) {
        Pop();
        return true;
      }
      return false;
    case Lex::kEnumLiteral: {
      const std::vector<std::string>& literals = schema_->node(enum_node_).literals;
      uint64_t next = 0;
      bool ended = false;  // a literal is whole: the value may end here
      for (uint64_t a = alts_; a != 0; a &= a - 1) {
        const std::string& lit = literals[std::countr_zero(a)];
        if (pos_ < lit.size() && static_cast<uint8_t>(lit[pos_]) == b) {
          next |= a & -a;
        } else if (pos_ == lit.size()) {
          ended = true;
        }
      }
      if (next != 0) {
        alts_ = next;
        ++pos_;
        return true;
      }
      if (!ended) return false;
      lex_ = Lex::kAfterValue;
      alts_ = 0;
      pos_ = 0;
      enum_node_ = -1;
      return Step(b);
    }
    case Lex::kString:
      if (b == '"') {
        lex_ = key_ ? Lex::kColon : Lex::kAfterValue;
        key_ = false;
        return true;
      }
      if (b == '\\') {
        lex_ = Lex::kEscape;
        return true;
      }
      if (b < 0x20) return false;  // control characters must be escaped
      if (b < 0x80) return true;
      // A UTF-8 lead byte: how many continuation bytes follow, and the first one's range
      // (no overlong forms, no surrogates, nothing above U+10FFFF).
      lo_ = 0x80;
      hi_ = 0xBF;
      if (b >= 0xC2 && b <= 0xDF) {
        aux_ = 1;
      } else if (b >= 0xE0 && b <= 0xEF) {
        aux_ = 2;
        if (b == 0xE0) lo_ = 0xA0;
        if (b == 0xED) hi_ = 0x9F;
      } else if (b >= 0xF0 && b <= 0xF4) {
        aux_ = 3;
        if (b == 0xF0) lo_ = 0x90;
        if (b == 0xF4) hi_ = 0x8F;
      } else {
        return false;
      }
      lex_ = Lex::kUtf8;
      return true;
    case Lex::kUtf8:
      if (b < lo_ || b > hi_) return false;
      lo_ = 0x80;
      hi_ = 0xBF;
      if (--aux_ == 0) {
        lex_ = Lex::kString;
        lo_ = hi_ = 0;
      }
      return true;
    case Lex::kEscape:
      if (b == 'u') {
        lex_ = Lex::kUnicode;
        aux_ = 4;
        return true;
      }
      if (std::string_view("\"\\/bfnrt").find(static_cast<char>(b)) == std::string_view::npos) {
        return false;
      }
      lex_ = Lex::kString;
      return true;
    case Lex::kUnicode:
      if (!IsHex(b)) return false;
      if (--aux_ == 0) lex_ = Lex::kString;
      return true;
    // In number states aux_ counts the digits of the current part (integer, fraction,
    // exponent), each part within its limit.
    case Lex::kNumMinus:
      if (!IsDigit(b)) return false;
      lex_ = b == '0' ? Lex::kNumZero : Lex::kNumInt;
      aux_ = 1;
      return true;
    case Lex::kNumZero:
    case Lex::kNumInt:
      if (IsDigit(b) && lex_ == Lex::kNumInt) return aux_++ < kJsonMaxIntegerDigits;
      if (int_only_) return EndNumber(b);
      if (b == '.') {
        lex_ = Lex::kNumDot;
        aux_ = 0;
        return true;
      }
      if (b == 'e' || b == 'E') {
        lex_ = Lex::kNumE;
        aux_ = 0;
        return true;
      }
      return EndNumber(b);
    case Lex::kNumDot:
      if (!IsDigit(b)) return false;
      lex_ = Lex::kNumFrac;
      aux_ = 1;
      return true;
    case Lex::kNumFrac:
      if (IsDigit(b)) return aux_++ < kJsonMaxFractionDigits;
      if (b == 'e' || b == 'E') {
        lex_ = Lex::kNumE;
        aux_ = 0;
        return true;
      }
      return EndNumber(b);
    case Lex::kNumE:
      if (b == '+' || b == '-') {
        lex_ = Lex::kNumExpSign;
        return true;
      }
      [[fallthrough]];
    case Lex::kNumExpSign:
      if (!IsDigit(b)) return false;
      lex_ = Lex::kNumExp;
      aux_ = 1;
      return true;
    case Lex::kNumExp:
      if (IsDigit(b)) return aux_++ < kJsonMaxExponentDigits;
      return EndNumber(b);
    case Lex::kLiteral: {
      const std::string_view word = kLiterals[aux_];
      if (b != static_cast<uint8_t>(word[lo_])) return false;
      if (++lo_ == word.size()) {
        lex_ = Lex::kAfterValue;
        aux_ = lo_ = 0;
      }
      return true;
    }
    case Lex::kDone:
      return false;
  }
  return false;
}

// ---- JsonVocabulary --------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<JsonVocabulary>> JsonVocabulary::Create(
    std::vector<std::string> pieces, std::vector<bool> usable, std::vector<int32_t> end_tokens) {
  if (pieces.size() != usable.size()) {
    return absl::InvalidArgumentError(absl::StrCat("JSON vocabulary: ", pieces.size(),
                                                   " pieces but ", usable.size(), " usable flags"));
  }
  if (pieces.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError("JSON vocabulary: too many tokens");
  }
  if (end_tokens.empty()) {
    return absl::FailedPreconditionError(
        "JSON mode needs an end-of-generation token; the vocabulary has none");
  }
  auto v = std::unique_ptr<JsonVocabulary>(new JsonVocabulary());
  v->vocab_size_ = static_cast<int>(pieces.size());
  v->is_end_.assign(pieces.size(), false);
  for (int32_t id : end_tokens) {
    if (id < 0 || id >= v->vocab_size_) {
      return absl::InvalidArgumentError(
          absl::StrCat("JSON vocabulary: end token ", id, " is outside [0, ", v->vocab_size_, ")"));
    }
    v->is_end_[id] = true;
  }
  std::sort(end_tokens.begin(), end_tokens.end());
  end_tokens.erase(std::unique(end_tokens.begin(), end_tokens.end()), end_tokens.end());
  v->end_tokens_ = std::move(end_tokens);
  v->pieces_ = std::move(pieces);
  v->usable_ = std::move(usable);

  std::vector<int32_t> usable_ids, other_ids;
  v->plain_.assign((v->vocab_size_ + 63) / 64, 0);
  JsonLexer in_string;
  in_string.Feed(std::string_view("{\""));
  for (int32_t id = 0; id < v->vocab_size_; ++id) {
    if (!v->usable_[id] || v->is_end_[id] || v->pieces_[id].empty()) continue;
    usable_ids.push_back(id);
    JsonLexer after = in_string;
    if (after.Feed(v->pieces_[id]) && after == in_string) {
      v->plain_[id / 64] |= uint64_t{1} << (id % 64);
    } else {
      other_ids.push_back(id);
    }
  }
  v->all_ = v->BuildTrie(std::move(usable_ids));
  v->other_ = v->BuildTrie(std::move(other_ids));
  return v;
}

// Built from the pieces in byte order: each shares the nodes of its common prefix with the one
// before, and equal pieces end at one node with adjacent ids.
JsonVocabulary::Trie JsonVocabulary::BuildTrie(std::vector<int32_t> ids) const {
  std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
    return std::pair(std::string_view(pieces_[a]), a) < std::pair(std::string_view(pieces_[b]), b);
  });
  Trie trie;
  trie.nodes.emplace_back();
  std::vector<int32_t> last_child(1, -1);
  std::vector<int32_t> path = {0};  // path[k]: the node of the previous piece's first k bytes
  std::string_view prev;
  for (int32_t id : ids) {
    const std::string_view piece = pieces_[id];
    const size_t common =
        std::mismatch(prev.begin(), prev.end(), piece.begin(), piece.end()).first - prev.begin();
    path.resize(common + 1);
    for (size_t k = common; k < piece.size(); ++k) {
      const int32_t parent = path[k];
      const auto n = static_cast<int32_t>(trie.nodes.size());
      trie.nodes.emplace_back();
      trie.nodes[n].byte = static_cast<uint8_t>(piece[k]);
      last_child.push_back(-1);
      if (last_child[parent] < 0) {
        trie.nodes[parent].first_child = n;
      } else {
        trie.nodes[last_child[parent]].next_sibling = n;
      }
      last_child[parent] = n;
      path.push_back(n);
    }
    Trie::Node& end = trie.nodes[path[piece.size()]];
    if (end.tokens_end == end.tokens_begin) {
      end.tokens_begin = static_cast<int32_t>(trie.token_ids.size());
    }
    trie.token_ids.push_back(id);
    end.tokens_end = static_cast<int32_t>(trie.token_ids.size());
    prev = piece;
  }
  return trie;
}

absl::StatusOr<std::unique_ptr<JsonVocabulary>> JsonVocabulary::FromTokenizer(
    const model::Tokenizer& tokenizer) {
  const int n = tokenizer.vocab_size();
  std::vector<std::string> pieces(n);
  std::vector<bool> usable(n);
  std::vector<int32_t> end_tokens;
  for (int32_t id = 0; id < n; ++id) {
    pieces[id] = tokenizer.TokenToPiece(id);
    usable[id] = !tokenizer.IsSpecial(id);
    if (tokenizer.IsEndOfGeneration(id)) end_tokens.push_back(id);
  }
  return Create(std::move(pieces), std::move(usable), std::move(end_tokens));
}

void JsonVocabulary::Walk(const Trie& trie, const JsonLexer& lexer, std::vector<uint64_t>* bits) {
  struct Frame {
    int32_t node;
    JsonLexer before;  // the lexer before the node's byte
  };
  std::vector<Frame> stack = {{trie.nodes[0].first_child, lexer}};
  while (!stack.empty()) {
    const Frame f = stack.back();
    stack.pop_back();
    if (f.node < 0) continue;
    const Trie::Node& node = trie.nodes[f.node];
    if (node.next_sibling >= 0) stack.push_back({node.next_sibling, f.before});
    JsonLexer after = f.before;
    if (!after.FeedOrSpoil(node.byte)) continue;
    for (int32_t t = node.tokens_begin; t < node.tokens_end; ++t) {
      const int32_t id = trie.token_ids[t];
      (*bits)[id / 64] |= uint64_t{1} << (id % 64);
    }
    if (node.first_child >= 0) stack.push_back({node.first_child, after});
  }
}

void JsonVocabulary::Allowed(const JsonLexer& lexer, std::vector<uint64_t>* bits) const {
  bits->assign((vocab_size_ + 63) / 64, 0);
  if (lexer.complete()) {
    for (int32_t id : end_tokens_) (*bits)[id / 64] |= uint64_t{1} << (id % 64);
  } else if (lexer.in_string()) {
    *bits = plain_;
    Walk(other_, lexer, bits);
  } else {
    Walk(all_, lexer, bits);
  }
}

// ---- JsonConstraint --------------------------------------------------------------------------

JsonConstraint::JsonConstraint(const JsonVocabulary* vocabulary,
                               std::shared_ptr<const JsonSchema> schema)
    : vocabulary_(vocabulary), schema_(std::move(schema)) {
  if (schema_ == nullptr) {
    lexers_.emplace_back();
    return;
  }
  for (size_t a = 0; a < schema_->roots().size(); ++a) {
    lexers_.emplace_back(schema_.get(), static_cast<int>(a));
  }
}

bool JsonConstraint::complete() const {
  return std::any_of(lexers_.begin(), lexers_.end(),
                     [](const JsonLexer& l) { return l.complete(); });
}

absl::Status JsonConstraint::Restrict(std::span<float> logits) {
  vocabulary_->Allowed(lexers_[0], &allowed_);
  for (size_t i = 1; i < lexers_.size(); ++i) {
    vocabulary_->Allowed(lexers_[i], &more_);
    for (size_t w = 0; w < allowed_.size(); ++w) allowed_[w] |= more_[w];
  }
  if (std::all_of(allowed_.begin(), allowed_.end(), [](uint64_t w) { return w == 0; })) {
    return absl::FailedPreconditionError(
        "JSON mode: no token of the vocabulary continues the JSON generated so far");
  }
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const size_t n = logits.size();
  for (size_t w = 0; w < allowed_.size(); ++w) {
    const uint64_t word = allowed_[w];
    if (word == ~uint64_t{0}) continue;
    const size_t end = std::min(n, 64 * w + 64);
    for (size_t i = 64 * w; i < end; ++i) {
      if (!((word >> (i % 64)) & 1)) logits[i] = kNegInf;
    }
  }
  return absl::OkStatus();
}

absl::Status JsonConstraint::Accept(int32_t token) {
  if (token < 0 || token >= vocabulary_->vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat("JSON mode: token ", token,
                                                   " is outside the vocabulary [0, ",
                                                   vocabulary_->vocab_size(), ")"));
  }
  if (vocabulary_->is_end(token)) {
    if (complete()) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("JSON mode: end token ", token, " before the JSON object is complete"));
  }
  if (complete()) {
    return absl::InvalidArgumentError(
        absl::StrCat("JSON mode: token ", token,
                     " after the JSON object is complete (only an end token may "
                     "follow)"));
  }
  if (!vocabulary_->usable(token)) {
    return absl::InvalidArgumentError(
        absl::StrCat("JSON mode: special token ", token, " cannot appear in the JSON object"));
  }
  const std::string_view piece = vocabulary_->piece(token);
  // The lexers the token keeps alive, moved to the front in place (no allocation a token); a
  // slot is overwritten only once it was read, so when none survives nothing has changed.
  size_t alive = 0;
  for (size_t i = 0; i < lexers_.size(); ++i) {
    JsonLexer next = lexers_[i];
    if (next.Feed(piece)) lexers_[alive++] = next;
  }
  if (alive == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("JSON mode: token %d (\"%s\") does not continue the JSON object", token,
                        absl::CHexEscape(absl::string_view(piece.data(), piece.size()))));
  }
  lexers_.resize(alive);
  return absl::OkStatus();
}

}  // namespace crescent::engine
