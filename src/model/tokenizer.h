// Tokenizer: text <-> token ids for the vocabularies GGUF files carry (tokenizer.ggml.*).
//
// Two tokenizer models:
//   "gpt2"  - byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM2, StarCoder, ...). Text is split into
//             pre-tokens by the family's Unicode regexes (chosen by tokenizer.ggml.pre), each
//             pre-token's UTF-8 bytes are mapped to the GPT-2 byte alphabet, then merged by the
//             ranks of tokenizer.ggml.merges.
//   "llama" - SentencePiece BPE (Llama 2, Mistral): spaces become U+2581, an optional U+2581 is
//             prepended, characters are merged by token score, and what no token covers falls
//             back to the byte tokens <0xNN>.
//
// Pre-tokenizers by tokenizer.ggml.pre (matching the models' HuggingFace tokenizer.json):
//   "default", "gpt2", "gpt-2"               GPT-2's ByteLevel regex
//   "smollm", "starcoder", "refact"          every digit on its own, then GPT-2's regex
//   "llama3", "llama-bpe"                    Llama 3's regex (\p{N}{1,3}), and a pre-token that
//                                            is itself a token is taken whole (ignore_merges)
//   "dbrx", "smaug-bpe"                      Llama 3's regex, merges always applied
//   "qwen2", "deepseek-r1-qwen"              Qwen2's regex (single digits)
// Any other name falls back to GPT-2's regex and logs a warning once per Create() (the output
// may then differ from the model's reference tokenizer).
//
// Special tokens: with parse_special, text spelling a control (token_type 3) or user-defined
// (token_type 4) token is cut out before pre-tokenization (leftmost, longest first) and becomes
// that token; without it such text is tokenized like any other.
#ifndef CRESCENT_SRC_MODEL_TOKENIZER_H_
#define CRESCENT_SRC_MODEL_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"

namespace crescent::model {

class GgufFile;

namespace internal {
class RegexSplitter;
}  // namespace internal

// GGUF's tokenizer.ggml.token_type values (never renumber).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// Everything a tokenizer is built from, as GGUF stores it.
struct VocabData {
  std::string model;  // tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece).
  std::string pre;    // tokenizer.ggml.pre; empty means "default".
  std::vector<std::string> tokens;   // id -> token text (byte-level alphabet for "gpt2").
  std::vector<float> scores;         // id -> score; required for "llama", else may be empty.
  std::vector<int32_t> token_types;  // id -> TokenType; empty means all kNormal.
  std::vector<std::string> merges;   // "left right", best first; "gpt2" only.
  int32_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1, eot_id = -1;  // -1: none.
  bool add_bos = false, add_eos = false, add_space_prefix = false;
};

// Reads the tokenizer.ggml.* keys of `file`. Required: model, tokens; scores for "llama".
// Optional keys take the defaults of their model when absent: "llama" -> bos 1, eos 2, unk 0,
// add_bos true, add_space_prefix true; "gpt2" -> no special ids, add_bos false. pre defaults to
// "default". Does not validate the vocabulary (Tokenizer::Create does).
// Errors: NotFound naming a missing required key; InvalidArgument / OutOfRange (from the GGUF
// getters) naming a key of the wrong type or value.
absl::StatusOr<VocabData> VocabDataFromGguf(const GgufFile& file);

// Immutable once created; every method is const and thread-safe.
class Tokenizer {
 public:
  // Validates `vocab` and builds the lookup tables.
  // Errors (InvalidArgument, naming what was wrong): empty token list; an unsupported model;
  // scores / token_types whose length differs from the token count; a "llama" vocab without
  // scores; a special id outside [0, vocab size); a merge without a space, or naming (or
  // producing) a token that is not in the vocabulary; a regex that PCRE2 rejects (Internal).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(VocabData vocab);
  // VocabDataFromGguf + Create.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const GgufFile& file);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Tokenizes `text`.
  //   add_special: prepend BOS / append EOS as the vocab's add_bos / add_eos say.
  //   parse_special: text like "<|im_start|>" that spells a control or user-defined token
  //     becomes that token; otherwise it is tokenized as plain text.
  // Any bytes are accepted; invalid UTF-8 goes through the byte alphabet / byte fallback.
  // "gpt2": a byte whose byte-alphabet character is not a token is dropped before merging, as
  // the reference (HF) tokenizer does (SmolLM2 lacks e.g. 0x04, 0xC0, 0xF1). "llama": a
  // character with neither a token nor byte tokens becomes one unk; the space prefix is added
  // to text at the start of the input and to text right after a parsed special token.
  // Cost: BPE runs per pre-token with a heap (O(n log n) in the word's length), and repeated
  // pre-tokens within one call come from a per-call cache, so long prompts stay near linear.
  std::vector<int32_t> Encode(std::string_view text, bool add_special, bool parse_special) const;

  // The text of `ids`: the concatenation of their pieces, with skip_special leaving out special
  // tokens (IsSpecial). For "llama" with add_space_prefix, one leading space of the first piece
  // output is dropped (undoing Encode's prefix). Ids outside the vocabulary are skipped. The
  // result may hold invalid UTF-8 when the ids split a character.
  std::string Decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // The bytes token `id` stands for: the byte-level alphabet mapped back to bytes ("gpt2"),
  // U+2581 -> ' ' and <0xNN> -> byte ("llama"); control, unknown and user-defined tokens give
  // their text as is. Empty for an id outside the vocabulary.
  std::string TokenToPiece(int32_t id) const;

  // The id of the token whose text is exactly `token_text` (e.g. "<|im_end|>", "Ġthe").
  std::optional<int32_t> TokenId(std::string_view token_text) const;

  // True for eos, eot, and control tokens that end a turn or a text in known chat formats
  // (<|im_end|>, <|eot_id|>, <|eom_id|>, <|endoftext|>, <|end_of_text|>, <|end|>,
  // <end_of_turn>, </s>).
  bool IsEndOfGeneration(int32_t id) const;
  // True for control and unknown tokens and for the bos / eos / eot ids: the tokens
  // Decode(..., skip_special = true) leaves out.
  bool IsSpecial(int32_t id) const;

  int32_t bos_id() const { return vocab_.bos_id; }
  int32_t eos_id() const { return vocab_.eos_id; }
  int32_t eot_id() const { return vocab_.eot_id; }
  int vocab_size() const { return static_cast<int>(vocab_.tokens.size()); }
  const std::string& model() const { return vocab_.model; }
  const std::string& pre() const { return vocab_.pre; }
  TokenType token_type(int32_t id) const;

 private:
  friend class StreamingDetokenizer;
  enum class Kind { kBytePairGpt2, kSentencePiece };
  struct MergeInfo {
    int32_t rank;
    int32_t merged_id;
  };
  struct Special {
    std::string text;
    int32_t id;
  };
  struct Fragment;
  // Hashes std::string keys and std::string_view probes alike (heterogeneous lookup).
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const;
  };
  using StringMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

  explicit Tokenizer(VocabData vocab);
  absl::Status Init();
  absl::Status InitGpt2();
  absl::Status InitSentencePiece();

  void SplitSpecial(std::string_view text, bool parse_special, std::vector<Fragment>* out) const;
  void EncodeGpt2(std::string_view text, std::vector<int32_t>* out) const;
  void BpeGpt2Word(std::string_view word, std::vector<int32_t>* out) const;
  void EncodeSentencePiece(std::string_view text, bool add_prefix, std::vector<int32_t>* out) const;
  // Appends the piece of `id` to `out` as Decode does; *at_start says whether nothing has been
  // output yet (for the SentencePiece leading-space rule) and is updated.
  void AppendDecoded(int32_t id, bool skip_special, bool* at_start, std::string* out) const;

  VocabData vocab_;
  Kind kind_ = Kind::kBytePairGpt2;
  bool ignore_merges_ = false;
  std::vector<std::string> pieces_;  // id -> decoded bytes (TokenToPiece).
  std::vector<uint8_t> flags_;       // id -> kFlag* bits.
  StringMap token_to_id_;
  // "gpt2": (left id << 32 | right id) -> rank and result.
  std::unordered_map<uint64_t, MergeInfo> merges_;
  // "llama": text -> id of the tokens merges may produce (normal and user-defined).
  StringMap mergeable_;
  // The token of each byte: its byte-level character ("gpt2") or <0xNN> ("llama"); -1 if none.
  int32_t byte_token_[256];
  std::vector<std::unique_ptr<internal::RegexSplitter>> pre_regexes_;  // applied in order.
  std::vector<Special> specials_;  // sorted by first byte, then longest first.
  int32_t special_start_[257];     // specials_ index range of each first byte.
};

// Turns a token stream into text without ever emitting half a UTF-8 character: bytes of an
// incomplete sequence at the end are held until a later token completes them (or Flush()).
// Invalid bytes that cannot start or continue a character are passed through. The
// concatenation of every Push() and the final Flush() equals tokenizer.Decode(ids,
// skip_special). Not thread-safe; the Tokenizer must outlive it.
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special = false);

  // Returns the text that `id` completes (possibly empty).
  std::string Push(int32_t id);
  // Returns the held bytes (an incomplete UTF-8 sequence, possibly empty); call it at the end
  // of the stream.
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  bool at_start_ = true;
  std::string pending_;
};

}  // namespace crescent::model

#endif  // CRESCENT_SRC_MODEL_TOKENIZER_H_
