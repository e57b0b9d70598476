#include "src/model/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <queue>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "src/common/hash.h"
#include "src/common/logging.h"
#include "src/common/status.h"
#include "src/model/gguf.h"
#include "src/model/internal/utf8.h"

namespace crescent::model {
namespace internal {

// One compiled pre-tokenizer regex. Split() cuts a text the way HuggingFace's
// Split(behavior = Isolated) and ByteLevel(use_regex) do: every match is a piece, and so is
// every non-empty stretch between matches. The text is matched on its own, so lookaheads see
// its end as the end of the subject. Immutable and thread-safe once compiled.
class RegexSplitter {
 public:
  static absl::StatusOr<std::unique_ptr<RegexSplitter>> Compile(const std::string& pattern) {
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    pcre2_code* code =
        pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                      PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &error_code, &error_offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error_code, message, sizeof(message));
      return absl::InternalError(
          absl::StrFormat("pre-tokenizer regex \"%s\" does not compile at offset %d: %s", pattern,
                          static_cast<int>(error_offset), reinterpret_cast<const char*>(message)));
    }
    // Without JIT (unsupported CPU, or failure) pcre2_match() interprets; same results.
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    return std::unique_ptr<RegexSplitter>(new RegexSplitter(code));
  }

  ~RegexSplitter() { pcre2_code_free(code_); }
  RegexSplitter(const RegexSplitter&) = delete;
  RegexSplitter& operator=(const RegexSplitter&) = delete;

  // Match data sized for this pattern; one per thread at a time.
  pcre2_match_data* NewMatchData() const {
    return pcre2_match_data_create_from_pattern(code_, nullptr);
  }

  // Appends the pieces of `text` to `out`; together they are exactly `text`.
  void Split(std::string_view text, pcre2_match_data* match_data,
             std::vector<std::string_view>* out) const {
    if (match_data == nullptr) {  // out of memory: keep the text whole rather than crash.
      if (!text.empty()) out->push_back(text);
      return;
    }
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    const size_t n = text.size();
    size_t last = 0;  // end of the last piece output.
    size_t pos = 0;   // where the next search starts.
    while (pos < n) {
      int rc = pcre2_match(code_, subject, n, pos, 0, match_data, nullptr);
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
        rc = pcre2_match(code_, subject, n, pos, PCRE2_NO_JIT, match_data, nullptr);
      }
      if (rc < 0) break;  // no match (or a resource limit): the rest is one piece.
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match_data);
      const size_t start = ovector[0];
      const size_t end = ovector[1];
      if (end <= start) {
        // An empty match (no pattern here has one, but a future one might): step over a char.
        pos = start + Utf8CharLengthAt(text, start < n ? start : n - 1);
        continue;
      }
      if (start > last) out->push_back(text.substr(last, start - last));
      out->push_back(text.substr(start, end - start));
      last = pos = end;
    }
    if (last < n) out->push_back(text.substr(last));
  }

 private:
  explicit RegexSplitter(pcre2_code* code) : code_(code) {}
  pcre2_code* code_;
};

}  // namespace internal

namespace {

constexpr uint8_t kFlagSpecial = 1;
constexpr uint8_t kFlagEndOfGeneration = 2;

// Unicode White_Space, which is what \s means to the regex engines of the reference tokenizers
// (Oniguruma in HF tokenizers). PCRE2's \s lacks U+0085, so patterns spell the class out.
constexpr absl::string_view kWhitespaceClassBody =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

// Replaces \s and \S in a pattern with the explicit White_Space class. REQUIRES: no \S inside a
// character class, no nested classes.
std::string ExpandWhitespace(std::string_view pattern) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char next = pattern[++i];
      if (next == 's') {
        absl::StrAppend(&out, in_class ? "" : "[", kWhitespaceClassBody, in_class ? "" : "]");
      } else if (next == 'S') {
        absl::StrAppend(&out, "[^", kWhitespaceClassBody, "]");
      } else {
        out.push_back(c);
        out.push_back(next);
      }
      continue;
    }
    if (c == '[') in_class = true;
    if (c == ']') in_class = false;
    out.push_back(c);
  }
  return out;
}

// The regexes of the HuggingFace pre-tokenizers, as their tokenizer.json files define them.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// HF's Digits(individual_digits = true): every numeric character is a piece of its own.
constexpr std::string_view kSingleDigitPattern = R"(\p{N})";

struct PreTokenizerSpec {
  std::vector<std::string_view> patterns;  // applied in order, each to every piece.
  bool ignore_merges = false;
};

// The pre-tokenizer of a tokenizer.ggml.pre name, or nullopt when the name is unknown.
std::optional<PreTokenizerSpec> FindPreTokenizer(std::string_view pre) {
  if (pre.empty() || pre == "default" || pre == "gpt2" || pre == "gpt-2") {
    return PreTokenizerSpec{{kGpt2Pattern}, false};
  }
  if (pre == "smollm" || pre == "starcoder" || pre == "refact") {
    return PreTokenizerSpec{{kSingleDigitPattern, kGpt2Pattern}, false};
  }
  if (pre == "llama3" || pre == "llama-bpe") return PreTokenizerSpec{{kLlama3Pattern}, true};
  if (pre == "dbrx" || pre == "smaug-bpe") return PreTokenizerSpec{{kLlama3Pattern}, false};
  if (pre == "qwen2" || pre == "deepseek-r1-qwen") {
    return PreTokenizerSpec{{kQwen2Pattern}, false};
  }
  return std::nullopt;
}

// Control-token texts that end a turn or a document in the chat formats in use.
constexpr std::string_view kEndOfGenerationTexts[] = {
    "<|im_end|>",      "<|eot_id|>", "<|eom_id|>",    "<|endoftext|>",
    "<|end_of_text|>", "<|end|>",    "<end_of_turn>", "</s>",
};

// One symbol of a word being merged: a run of bytes [start, start + len) of the word that is
// (or, for an unknown character, is not yet) a token. Dead symbols have len 0.
struct Symbol {
  int32_t id;
  int32_t start;
  int32_t len;
  int32_t prev;
  int32_t next;
};

// A possible merge of two adjacent symbols; lower key is better, ties go to the leftmost.
struct Candidate {
  double key;
  int32_t left;
  int32_t right;
  int32_t left_len;
  int32_t right_len;
  int32_t merged_id;
};
struct CandidateAfter {
  bool operator()(const Candidate& a, const Candidate& b) const {
    if (a.key != b.key) return a.key > b.key;
    return a.left > b.left;
  }
};

// Merges adjacent symbols, best pair first, until no pair can merge. `lookup(left, right,
// &key, &merged_id)` says whether two symbols merge, with what priority and into which token.
// A popped candidate is stale (and skipped) when either symbol has changed since it was queued.
// O(n log n) in the number of symbols.
template <typename Lookup>
void MergeSymbols(std::vector<Symbol>& symbols, const Lookup& lookup) {
  std::priority_queue<Candidate, std::vector<Candidate>, CandidateAfter> queue;
  auto consider = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    double key;
    int32_t merged_id;
    if (lookup(symbols[left], symbols[right], &key, &merged_id)) {
      queue.push({key, left, right, symbols[left].len, symbols[right].len, merged_id});
    }
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i, i + 1);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& left = symbols[c.left];
    Symbol& right = symbols[c.right];
    if (left.len != c.left_len || right.len != c.right_len || left.next != c.right) continue;
    left.id = c.merged_id;
    left.len += right.len;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    right.len = 0;
    consider(left.prev, c.left);
    consider(c.left, left.next);
  }
}

// Parses "<0xNN>" (the byte tokens of SentencePiece vocabularies); -1 if `text` is not one.
int ParseByteToken(std::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return -1;
  int value = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = text[i];
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return -1;
    }
    value = value * 16 + digit;
  }
  return value;
}

// The bytes a byte-level token spells: each character of the GPT-2 byte alphabet becomes its
// byte; characters outside it (never in a well-formed vocabulary) are kept as they are.
std::string ByteLevelToBytes(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t start = pos;
    const int32_t cp = internal::DecodeUtf8(text, &pos);
    if (cp >= 0 && cp < internal::kByteAlphabetEnd && internal::kCodepointToByte[cp] >= 0) {
      out.push_back(static_cast<char>(internal::kCodepointToByte[cp]));
    } else {
      out.append(text.substr(start, pos - start));
    }
  }
  return out;
}

constexpr std::string_view kSentencePieceSpace = "\xE2\x96\x81";  // U+2581

std::string ReplaceAll(std::string_view text, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (true) {
    const size_t hit = text.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(text.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
  out.append(text.substr(pos));
  return out;
}

absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

struct MatchDataDeleter {
  void operator()(pcre2_match_data* p) const { pcre2_match_data_free(p); }
};
using MatchDataPtr = std::unique_ptr<pcre2_match_data, MatchDataDeleter>;

}  // namespace

size_t Tokenizer::StringHash::operator()(std::string_view s) const { return Hash64(s); }

struct Tokenizer::Fragment {
  std::string_view text;  // when id < 0.
  int32_t id;             // a special token, or -1 for text.
};

Tokenizer::Tokenizer(VocabData vocab) : vocab_(std::move(vocab)) {
  std::fill(std::begin(byte_token_), std::end(byte_token_), -1);
  std::fill(std::begin(special_start_), std::end(special_start_), 0);
}

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(VocabData vocab) {
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer(std::move(vocab)));
  CRESCENT_RETURN_IF_ERROR(tokenizer->Init());
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const GgufFile& file) {
  CRESCENT_ASSIGN_OR_RETURN(VocabData vocab, VocabDataFromGguf(file));
  return Create(std::move(vocab));
}

absl::Status Tokenizer::Init() {
  const size_t n = vocab_.tokens.size();
  if (n == 0) return absl::InvalidArgumentError("tokenizer vocabulary has no tokens");
  if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer vocabulary has ", n, " tokens"));
  }
  if (vocab_.model == "gpt2") {
    kind_ = Kind::kBytePairGpt2;
  } else if (vocab_.model == "llama") {
    kind_ = Kind::kSentencePiece;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unsupported tokenizer model \"", vocab_.model,
                                                   "\" (supported: gpt2, llama)"));
  }
  if (!vocab_.scores.empty() && vocab_.scores.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer has ", vocab_.scores.size(), " scores for ", n, " tokens"));
  }
  if (vocab_.token_types.empty()) {
    vocab_.token_types.assign(n, static_cast<int32_t>(TokenType::kNormal));
  } else if (vocab_.token_types.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer has ", vocab_.token_types.size(),
                                                   " token types for ", n, " tokens"));
  }
  const std::pair<const char*, int32_t> ids[] = {{"bos", vocab_.bos_id},
                                                 {"eos", vocab_.eos_id},
                                                 {"unk", vocab_.unk_id},
                                                 {"pad", vocab_.pad_id},
                                                 {"eot", vocab_.eot_id}};
  for (const auto& [name, id] : ids) {
    if (id < -1 || id >= static_cast<int64_t>(n)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokenizer ", name, " id ", id, " is outside the vocabulary of ", n, " tokens"));
    }
  }

  token_to_id_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    token_to_id_.try_emplace(vocab_.tokens[i], static_cast<int32_t>(i));  // the first one wins
  }

  flags_.assign(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const TokenType type = static_cast<TokenType>(vocab_.token_types[i]);
    if (type == TokenType::kControl || type == TokenType::kUnknown) flags_[i] |= kFlagSpecial;
    if (type == TokenType::kControl) {
      for (std::string_view eog : kEndOfGenerationTexts) {
        if (vocab_.tokens[i] == eog) flags_[i] |= kFlagEndOfGeneration;
      }
    }
    if ((type == TokenType::kControl || type == TokenType::kUserDefined) &&
        !vocab_.tokens[i].empty()) {
      specials_.push_back({vocab_.tokens[i], static_cast<int32_t>(i)});
    }
  }
  for (int32_t id : {vocab_.bos_id, vocab_.eos_id, vocab_.eot_id}) {
    if (id >= 0) flags_[id] |= kFlagSpecial;
  }
  for (int32_t id : {vocab_.eos_id, vocab_.eot_id}) {
    if (id >= 0) flags_[id] |= kFlagEndOfGeneration;
  }

  // Specials grouped by first byte, longest first, so that matching is leftmost-longest.
  std::sort(specials_.begin(), specials_.end(), [](const Special& a, const Special& b) {
    const auto fa = static_cast<uint8_t>(a.text[0]);
    const auto fb = static_cast<uint8_t>(b.text[0]);
    if (fa != fb) return fa < fb;
    if (a.text.size() != b.text.size()) return a.text.size() > b.text.size();
    return a.id < b.id;
  });
  for (const Special& s : specials_) ++special_start_[static_cast<uint8_t>(s.text[0]) + 1];
  for (int b = 0; b < 256; ++b) special_start_[b + 1] += special_start_[b];

  return kind_ == Kind::kBytePairGpt2 ? InitGpt2() : InitSentencePiece();
}

absl::Status Tokenizer::InitGpt2() {
  const size_t n = vocab_.tokens.size();
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    internal::AppendUtf8(internal::kByteToCodepoint[b], &ch);
    const auto it = token_to_id_.find(ch);
    if (it != token_to_id_.end()) byte_token_[b] = it->second;
  }

  merges_.reserve(vocab_.merges.size());
  for (size_t i = 0; i < vocab_.merges.size(); ++i) {
    const std::string& merge = vocab_.merges[i];
    // Tokens of the byte alphabet hold no ' ', so the first space (after a non-empty left part)
    // separates the two.
    const size_t space = merge.size() > 1 ? merge.find(' ', 1) : std::string::npos;
    if (space == std::string::npos || space + 1 >= merge.size()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tokenizer merge %d \"%s\" is not two tokens separated by a space", i, merge));
    }
    const std::string_view left(merge.data(), space);
    const std::string_view right(merge.data() + space + 1, merge.size() - space - 1);
    const std::string joined = absl::StrCat(AbslView(left), AbslView(right));
    int32_t part_ids[3];
    const std::string_view parts[3] = {left, right, joined};
    for (int k = 0; k < 3; ++k) {
      const auto it = token_to_id_.find(parts[k]);
      if (it == token_to_id_.end()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("tokenizer merge %d \"%s\": %s \"%s\" is not in the vocabulary", i,
                            merge, k == 2 ? "its result" : "token", std::string(parts[k])));
      }
      part_ids[k] = it->second;
    }
    const uint64_t key =
        (static_cast<uint64_t>(part_ids[0]) << 32) | static_cast<uint32_t>(part_ids[1]);
    merges_.try_emplace(key, MergeInfo{static_cast<int32_t>(i), part_ids[2]});
  }

  std::optional<PreTokenizerSpec> spec = FindPreTokenizer(vocab_.pre);
  if (!spec) {
    CRESCENT_LOG(warn,
                 "tokenizer.ggml.pre \"{}\" is not supported; using GPT-2's pre-tokenizer, so "
                 "tokenization may differ from the model's own",
                 vocab_.pre);
    spec = FindPreTokenizer("gpt2");
  }
  ignore_merges_ = spec->ignore_merges;
  for (std::string_view pattern : spec->patterns) {
    CRESCENT_ASSIGN_OR_RETURN(auto regex,
                              internal::RegexSplitter::Compile(ExpandWhitespace(pattern)));
    pre_regexes_.push_back(std::move(regex));
  }

  pieces_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const auto type = static_cast<TokenType>(vocab_.token_types[i]);
    const std::string& text = vocab_.tokens[i];
    if (type == TokenType::kNormal || type == TokenType::kUndefined) {
      pieces_[i] = ByteLevelToBytes(text);
    } else if (type == TokenType::kByte && ParseByteToken(text) >= 0) {
      pieces_[i] = std::string(1, static_cast<char>(ParseByteToken(text)));
    } else {
      pieces_[i] = text;
    }
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::InitSentencePiece() {
  const size_t n = vocab_.tokens.size();
  if (vocab_.scores.empty()) {
    return absl::InvalidArgumentError(
        "tokenizer model \"llama\" needs token scores (tokenizer.ggml.scores)");
  }
  pieces_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const auto type = static_cast<TokenType>(vocab_.token_types[i]);
    const std::string& text = vocab_.tokens[i];
    if (type == TokenType::kNormal || type == TokenType::kUndefined ||
        type == TokenType::kUserDefined) {
      mergeable_.try_emplace(text, static_cast<int32_t>(i));
    }
    const int byte = type == TokenType::kByte ? ParseByteToken(text) : -1;
    if (byte >= 0) {
      if (byte_token_[byte] < 0) byte_token_[byte] = static_cast<int32_t>(i);
      pieces_[i] = std::string(1, static_cast<char>(byte));
    } else if (type == TokenType::kNormal || type == TokenType::kUndefined) {
      pieces_[i] = ReplaceAll(text, kSentencePieceSpace, " ");
    } else {
      pieces_[i] = text;
    }
  }
  return absl::OkStatus();
}

TokenType Tokenizer::token_type(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return TokenType::kUndefined;
  return static_cast<TokenType>(vocab_.token_types[id]);
}

void Tokenizer::SplitSpecial(std::string_view text, bool parse_special,
                             std::vector<Fragment>* out) const {
  if (!parse_special || specials_.empty()) {
    if (!text.empty()) out->push_back({text, -1});
    return;
  }
  size_t last = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const auto first = static_cast<uint8_t>(text[pos]);
    const Special* found = nullptr;
    for (int32_t k = special_start_[first]; k < special_start_[first + 1]; ++k) {
      const std::string& s = specials_[k].text;
      if (text.size() - pos >= s.size() &&
          std::memcmp(text.data() + pos, s.data(), s.size()) == 0) {
        found = &specials_[k];
        break;
      }
    }
    if (found == nullptr) {
      ++pos;
      continue;
    }
    if (pos > last) out->push_back({text.substr(last, pos - last), -1});
    out->push_back({std::string_view(), found->id});
    pos += found->text.size();
    last = pos;
  }
  if (last < text.size()) out->push_back({text.substr(last), -1});
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_special,
                                       bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_special && vocab_.add_bos && vocab_.bos_id >= 0) out.push_back(vocab_.bos_id);
  std::vector<Fragment> fragments;
  SplitSpecial(text, parse_special, &fragments);
  bool after_special = true;  // the start of the input counts as "after a special token".
  for (const Fragment& fragment : fragments) {
    if (fragment.id >= 0) {
      out.push_back(fragment.id);
      after_special = true;
      continue;
    }
    if (kind_ == Kind::kBytePairGpt2) {
      EncodeGpt2(fragment.text, &out);
    } else {
      EncodeSentencePiece(fragment.text, vocab_.add_space_prefix && after_special, &out);
    }
    after_special = false;
  }
  if (add_special && vocab_.add_eos && vocab_.eos_id >= 0) out.push_back(vocab_.eos_id);
  return out;
}

void Tokenizer::EncodeGpt2(std::string_view text, std::vector<int32_t>* out) const {
  std::vector<std::string_view> words{text};
  std::vector<std::string_view> next;
  for (const auto& regex : pre_regexes_) {
    MatchDataPtr match_data(regex->NewMatchData());
    next.clear();
    next.reserve(words.size() * 2);
    for (std::string_view word : words) regex->Split(word, match_data.get(), &next);
    words.swap(next);
  }
  // Words repeat a lot in long prompts; remember where each one's ids already are in `out`.
  constexpr size_t kMaxCachedWord = 256;
  std::unordered_map<std::string_view, std::pair<size_t, size_t>, StringHash> cache;
  for (std::string_view word : words) {
    const bool cacheable = word.size() >= 2 && word.size() <= kMaxCachedWord;
    if (cacheable) {
      const auto it = cache.find(word);
      if (it != cache.end()) {
        for (size_t k = 0; k < it->second.second; ++k) {
          const int32_t id = (*out)[it->second.first + k];
          out->push_back(id);
        }
        continue;
      }
    }
    const size_t begin = out->size();
    BpeGpt2Word(word, out);
    if (cacheable) cache.emplace(word, std::make_pair(begin, out->size() - begin));
  }
}

void Tokenizer::BpeGpt2Word(std::string_view word, std::vector<int32_t>* out) const {
  // A byte whose character is not in the vocabulary is dropped, as HF's BPE (whose gpt2-style
  // tokenizer.json files have no unk_token) does; emitting unk would put e.g. <|endoftext|>
  // into a prompt.
  if (word.size() == 1) {
    const int32_t id = byte_token_[static_cast<uint8_t>(word[0])];
    if (id >= 0) out->push_back(id);
    return;
  }
  if (ignore_merges_) {
    std::string mapped;
    mapped.reserve(word.size() * 2);
    for (char c : word)
      internal::AppendUtf8(internal::kByteToCodepoint[static_cast<uint8_t>(c)], &mapped);
    const auto it = token_to_id_.find(mapped);
    if (it != token_to_id_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  // Bytes without a token are left out before merging, so their neighbours may merge (HF does
  // the same when the model has no unk token).
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  for (size_t i = 0; i < word.size(); ++i) {
    const int32_t id = byte_token_[static_cast<uint8_t>(word[i])];
    if (id < 0) continue;
    const auto idx = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, static_cast<int32_t>(i), 1, idx - 1, idx + 1});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;
  MergeSymbols(symbols, [this](const Symbol& left, const Symbol& right, double* key,
                               int32_t* merged_id) {
    const uint64_t pair = (static_cast<uint64_t>(left.id) << 32) | static_cast<uint32_t>(right.id);
    const auto it = merges_.find(pair);
    if (it == merges_.end()) return false;
    *key = it->second.rank;
    *merged_id = it->second.merged_id;
    return true;
  });
  for (int32_t i = 0; i >= 0; i = symbols[i].next) out->push_back(symbols[i].id);
}

void Tokenizer::EncodeSentencePiece(std::string_view text, bool add_prefix,
                                    std::vector<int32_t>* out) const {
  std::string norm;
  norm.reserve(text.size() + 3);
  if (add_prefix) norm.append(kSentencePieceSpace);
  for (char c : text) {
    if (c == ' ') {
      norm.append(kSentencePieceSpace);
    } else {
      norm.push_back(c);
    }
  }
  const std::string_view view(norm);
  std::vector<Symbol> symbols;
  symbols.reserve(norm.size());
  for (size_t pos = 0; pos < norm.size();) {
    const size_t len = internal::Utf8CharLengthAt(view, pos);
    const auto it = mergeable_.find(view.substr(pos, len));
    const auto idx = static_cast<int32_t>(symbols.size());
    symbols.push_back({it == mergeable_.end() ? -1 : it->second, static_cast<int32_t>(pos),
                       static_cast<int32_t>(len), idx - 1, idx + 1});
    pos += len;
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;
  MergeSymbols(symbols, [this, view](const Symbol& left, const Symbol& right, double* key,
                                     int32_t* merged_id) {
    const auto it = mergeable_.find(view.substr(left.start, left.len + right.len));
    if (it == mergeable_.end()) return false;
    *key = -static_cast<double>(vocab_.scores[it->second]);
    *merged_id = it->second;
    return true;
  });
  for (int32_t i = 0; i >= 0; i = symbols[i].next) {
    const Symbol& s = symbols[i];
    if (s.id >= 0) {
      out->push_back(s.id);
      continue;
    }
    // A character no token covers: its bytes' tokens, or one unk when a byte token is missing.
    bool have_bytes = true;
    for (int32_t k = 0; k < s.len; ++k) {
      have_bytes = have_bytes && byte_token_[static_cast<uint8_t>(norm[s.start + k])] >= 0;
    }
    if (have_bytes) {
      for (int32_t k = 0; k < s.len; ++k) {
        out->push_back(byte_token_[static_cast<uint8_t>(norm[s.start + k])]);
      }
    } else if (vocab_.unk_id >= 0) {
      out->push_back(vocab_.unk_id);
    }
  }
}

void Tokenizer::AppendDecoded(int32_t id, bool skip_special, bool* at_start,
                              std::string* out) const {
  if (id < 0 || id >= vocab_size()) return;
  if (skip_special && (flags_[id] & kFlagSpecial)) return;
  const std::string& piece = pieces_[id];
  if (*at_start && kind_ == Kind::kSentencePiece && vocab_.add_space_prefix && !piece.empty() &&
      piece[0] == ' ') {
    out->append(piece, 1, std::string::npos);
  } else {
    out->append(piece);
  }
  *at_start = false;
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  bool at_start = true;
  for (int32_t id : ids) AppendDecoded(id, skip_special, &at_start, &out);
  return out;
}

std::string Tokenizer::TokenToPiece(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return std::string();
  return pieces_[id];
}

std::optional<int32_t> Tokenizer::TokenId(std::string_view token_text) const {
  const auto it = token_to_id_.find(token_text);
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

bool Tokenizer::IsEndOfGeneration(int32_t id) const {
  return id >= 0 && id < vocab_size() && (flags_[id] & kFlagEndOfGeneration) != 0;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size() && (flags_[id] & kFlagSpecial) != 0;
}

namespace {

// Reads an optional token id key; absent (or stored as -1 / 0xFFFFFFFF) leaves *id unchanged
// or sets it to -1.
absl::Status ReadOptionalId(const GgufFile& file, std::string_view key, int32_t* id) {
  if (!file.Has(key)) return absl::OkStatus();
  CRESCENT_ASSIGN_OR_RETURN(int64_t value, file.GetInt(key));
  if (value < 0 || value == 0xFFFFFFFFLL) {
    *id = -1;
  } else if (value > std::numeric_limits<int32_t>::max()) {
    return absl::OutOfRangeError(
        absl::StrCat(std::string(key), " = ", value, " is not a token id"));
  } else {
    *id = static_cast<int32_t>(value);
  }
  return absl::OkStatus();
}

absl::Status ReadOptionalBool(const GgufFile& file, std::string_view key, bool* value) {
  if (!file.Has(key)) return absl::OkStatus();
  CRESCENT_ASSIGN_OR_RETURN(*value, file.GetBool(key));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<VocabData> VocabDataFromGguf(const GgufFile& file) {
  VocabData v;
  CRESCENT_ASSIGN_OR_RETURN(v.model, file.GetString("tokenizer.ggml.model"));
  v.pre = "default";
  if (file.Has("tokenizer.ggml.pre")) {
    CRESCENT_ASSIGN_OR_RETURN(v.pre, file.GetString("tokenizer.ggml.pre"));
  }
  CRESCENT_ASSIGN_OR_RETURN(v.tokens, file.GetStringArray("tokenizer.ggml.tokens"));
  if (file.Has("tokenizer.ggml.scores")) {
    CRESCENT_ASSIGN_OR_RETURN(v.scores, file.GetFloatArray("tokenizer.ggml.scores"));
  } else if (v.model == "llama") {
    return absl::NotFoundError(
        "GGUF key tokenizer.ggml.scores is missing (required for tokenizer model \"llama\")");
  }
  if (file.Has("tokenizer.ggml.token_type")) {
    CRESCENT_ASSIGN_OR_RETURN(std::vector<int64_t> types,
                              file.GetIntArray("tokenizer.ggml.token_type"));
    v.token_types.reserve(types.size());
    for (size_t i = 0; i < types.size(); ++i) {
      if (types[i] < 0 || types[i] > static_cast<int64_t>(TokenType::kByte)) {
        return absl::InvalidArgumentError(absl::StrCat("tokenizer.ggml.token_type[", i,
                                                       "] = ", types[i], " is not a token type"));
      }
      v.token_types.push_back(static_cast<int32_t>(types[i]));
    }
  }
  if (file.Has("tokenizer.ggml.merges")) {
    CRESCENT_ASSIGN_OR_RETURN(v.merges, file.GetStringArray("tokenizer.ggml.merges"));
  }
  if (v.model == "llama") {
    v.bos_id = 1;
    v.eos_id = 2;
    v.unk_id = 0;
    v.add_bos = true;
    v.add_space_prefix = true;
  }
  CRESCENT_RETURN_IF_ERROR(ReadOptionalId(file, "tokenizer.ggml.bos_token_id", &v.bos_id));
  CRESCENT_RETURN_IF_ERROR(ReadOptionalId(file, "tokenizer.ggml.eos_token_id", &v.eos_id));
  CRESCENT_RETURN_IF_ERROR(ReadOptionalId(file, "tokenizer.ggml.unknown_token_id", &v.unk_id));
  CRESCENT_RETURN_IF_ERROR(ReadOptionalId(file, "tokenizer.ggml.padding_token_id", &v.pad_id));
  CRESCENT_RETURN_IF_ERROR(ReadOptionalId(file, "tokenizer.ggml.eot_token_id", &v.eot_id));
  CRESCENT_RETURN_IF_ERROR(ReadOptionalBool(file, "tokenizer.ggml.add_bos_token", &v.add_bos));
  CRESCENT_RETURN_IF_ERROR(ReadOptionalBool(file, "tokenizer.ggml.add_eos_token", &v.add_eos));
  CRESCENT_RETURN_IF_ERROR(
      ReadOptionalBool(file, "tokenizer.ggml.add_space_prefix", &v.add_space_prefix));
  return v;
}

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string StreamingDetokenizer::Push(int32_t id) {
  tokenizer_.AppendDecoded(id, skip_special_, &at_start_, &pending_);
  const size_t ready = pending_.size() - internal::IncompleteUtf8TailLength(pending_);
  std::string out = pending_.substr(0, ready);
  pending_.erase(0, ready);
  return out;
}

std::string StreamingDetokenizer::Flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace crescent::model
