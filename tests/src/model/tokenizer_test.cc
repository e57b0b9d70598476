#include "src/model/tokenizer.h"

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "src/model/gguf.h"
#include "src/model/internal/utf8.h"

namespace crescent::model {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

// ---------------------------------------------------------------------------------------------
// Helpers

std::string ModelPath() {
  const char* env = std::getenv("CRESCENT_MODEL");
  return env != nullptr ? env : "";
}

std::filesystem::path ReferenceDir() {
  if (const char* src = std::getenv("CRESCENT_SOURCE_DIR"); src != nullptr && *src != '\0') {
    return std::filesystem::path(src) / "tests" / "reference";
  }
  // tests/src/model/tokenizer_test.cc -> tests/reference
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "reference";
}

// True when `s` is well-formed UTF-8.
bool IsValidUtf8(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t len = internal::Utf8CharLengthAt(s, pos);
    if (len == 1 && static_cast<uint8_t>(s[pos]) >= 0x80) return false;
    pos += len;
  }
  return true;
}

std::vector<std::string> ReadCorpus() {
  std::vector<std::string> lines;
  std::ifstream in(ReferenceDir() / "tokenizer_corpus.jsonl");
  std::string line;
  while (std::getline(in, line)) lines.push_back(nlohmann::json::parse(line).get<std::string>());
  return lines;
}

// The real model's tokenizer, loaded once for all tests; nullptr when the model is absent.
class SmolLmTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = ModelPath();
    if (path.empty() || !std::filesystem::exists(path)) return;
    auto file = GgufFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status();
    auto tokenizer = Tokenizer::FromGguf(**file);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = std::move(*tokenizer).release();
    for (int b = 0; b < 256; ++b) {
      encodable_[b] =
          !tokenizer_->Encode(std::string(1, static_cast<char>(b)), false, false).empty();
    }
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }
  void SetUp() override {
    if (tokenizer_ == nullptr) {
      GTEST_SKIP() << "reference model not found (set CRESCENT_MODEL to "
                      "SmolLM2-135M-Instruct.Q4_1.gguf): '"
                   << ModelPath() << "'";
    }
  }
  const Tokenizer& tok() const { return *tokenizer_; }

  // `text` without the bytes SmolLM2's vocabulary cannot encode (Encode drops them).
  std::string Encodable(std::string_view text) const {
    std::string out;
    for (char c : text) {
      if (encodable_[static_cast<uint8_t>(c)]) out.push_back(c);
    }
    return out;
  }

  static Tokenizer* tokenizer_;
  static bool encodable_[256];
};
Tokenizer* SmolLmTokenizerTest::tokenizer_ = nullptr;
bool SmolLmTokenizerTest::encodable_[256];

// ---------------------------------------------------------------------------------------------
// The real SmolLM2 tokenizer

TEST_F(SmolLmTokenizerTest, VocabularyFacts) {
  EXPECT_EQ(tok().vocab_size(), 49152);
  EXPECT_EQ(tok().model(), "gpt2");
  EXPECT_EQ(tok().pre(), "smollm");
  EXPECT_EQ(tok().bos_id(), 1);
  EXPECT_EQ(tok().eos_id(), 2);
  EXPECT_EQ(tok().TokenId("<|im_start|>"), 1);
  EXPECT_EQ(tok().TokenId("<|im_end|>"), 2);
  EXPECT_EQ(tok().TokenId("Ġthe"), 260);
  EXPECT_EQ(tok().TokenId("no such token"), std::nullopt);
  EXPECT_EQ(tok().TokenToPiece(260), " the");
  EXPECT_EQ(tok().TokenToPiece(2), "<|im_end|>");
  EXPECT_EQ(tok().TokenToPiece(-1), "");
  EXPECT_EQ(tok().TokenToPiece(49152), "");
  EXPECT_EQ(tok().token_type(1), TokenType::kControl);
  EXPECT_EQ(tok().token_type(260), TokenType::kNormal);
}

TEST_F(SmolLmTokenizerTest, KnownEncodings) {
  // Ids from HuggingFace `tokenizers` with SmolLM2's pre-tokenizer (tokenizer_reference.py).
  EXPECT_THAT(tok().Encode("Hello, world!", false, false), ElementsAre(19556, 28, 905, 17));
  EXPECT_THAT(tok().Encode("The capital of France is Paris.", false, false),
              ElementsAre(504, 3575, 282, 4649, 314, 7042, 30));
  // Digits are split one by one, and a space before a digit stays on its own.
  EXPECT_THAT(tok().Encode("1234567", false, false), ElementsAre(33, 34, 35, 36, 37, 38, 39));
  EXPECT_THAT(tok().Encode(" 2024", false, false), ElementsAre(216, 34, 32, 34, 36));
  // The lookahead of \s+(?!\S) leaves the last space for the word.
  EXPECT_THAT(tok().Encode("  \n\n   x", false, false), ElementsAre(256, 39892, 1792));
  // An emoji is four bytes spread over three tokens.
  EXPECT_THAT(tok().Encode("😀", false, false), ElementsAre(10813, 242, 218));
  EXPECT_THAT(tok().Encode("", true, true), IsEmpty());
}

TEST_F(SmolLmTokenizerTest, SpecialTokensParsedOnlyWhenAsked) {
  const std::string text = "<|im_start|>user\nHi<|im_end|>\n";
  EXPECT_THAT(tok().Encode(text, false, true), ElementsAre(1, 4093, 198, 26843, 2, 198));
  const std::vector<int32_t> plain = tok().Encode(text, false, false);
  EXPECT_THAT(plain, ElementsAre(44, 108, 306, 79, 3738, 108, 46, 4093, 198, 26843, 44, 108, 306,
                                 79, 486, 108, 46, 198));
  EXPECT_THAT(plain, Not(Contains(1)));
  EXPECT_THAT(plain, Not(Contains(2)));
  // Both decode back to the text.
  EXPECT_EQ(tok().Decode(tok().Encode(text, false, true)), text);
  EXPECT_EQ(tok().Decode(plain), text);
  // skip_special drops the control tokens.
  EXPECT_EQ(tok().Decode(tok().Encode(text, false, true), /*skip_special=*/true), "user\nHi\n");
  // Unfinished or unknown special-looking text stays text.
  EXPECT_THAT(tok().Encode("<|im_start", false, true), Not(Contains(1)));
  // SmolLM2's GGUF says add_bos = false: add_special adds nothing.
  EXPECT_EQ(tok().Encode("Hi", true, true), tok().Encode("Hi", false, true));
}

TEST_F(SmolLmTokenizerTest, EndOfGenerationAndSpecial) {
  EXPECT_TRUE(tok().IsEndOfGeneration(2));   // <|im_end|> (eos)
  EXPECT_TRUE(tok().IsEndOfGeneration(0));   // <|endoftext|>
  EXPECT_FALSE(tok().IsEndOfGeneration(1));  // <|im_start|>
  EXPECT_FALSE(tok().IsEndOfGeneration(260));
  EXPECT_FALSE(tok().IsEndOfGeneration(-5));
  EXPECT_TRUE(tok().IsSpecial(0));
  EXPECT_TRUE(tok().IsSpecial(1));
  EXPECT_TRUE(tok().IsSpecial(16));   // <empty_output>
  EXPECT_FALSE(tok().IsSpecial(17));  // "!"
  EXPECT_FALSE(tok().IsSpecial(100000));
}

// Every corpus line encodes exactly as the independent HuggingFace reference did
// (tests/reference/tokenizer_golden.jsonl, written by tokenizer_reference.py).
TEST_F(SmolLmTokenizerTest, MatchesReferenceGoldenFile) {
  const std::vector<std::string> corpus = ReadCorpus();
  ASSERT_GE(corpus.size(), 60u) << "corpus at " << ReferenceDir();
  std::ifstream golden(ReferenceDir() / "tokenizer_golden.jsonl");
  ASSERT_TRUE(golden.is_open()) << ReferenceDir() / "tokenizer_golden.jsonl";
  std::string line;
  size_t n = 0;
  while (std::getline(golden, line)) {
    ASSERT_LT(n, corpus.size()) << "golden file has more lines than the corpus";
    const nlohmann::json want = nlohmann::json::parse(line);
    const std::string& text = corpus[n];
    ++n;
    EXPECT_EQ(tok().Encode(text, false, false), want.at("plain").get<std::vector<int32_t>>())
        << "corpus line " << n << ": " << nlohmann::json(text).dump();
    EXPECT_EQ(tok().Encode(text, false, true), want.at("special").get<std::vector<int32_t>>())
        << "corpus line " << n << " (parse_special): " << nlohmann::json(text).dump();
  }
  EXPECT_EQ(n, corpus.size()) << "golden file and corpus differ in length";
}

TEST_F(SmolLmTokenizerTest, RoundTripsCorpus) {
  for (const std::string& text : ReadCorpus()) {
    EXPECT_EQ(tok().Decode(tok().Encode(text, false, false)), Encodable(text));
    EXPECT_EQ(tok().Decode(tok().Encode(text, true, true)), Encodable(text));
  }
}

// Random strings drawn from many scripts, whitespace kinds and emoji round-trip.
TEST_F(SmolLmTokenizerTest, RoundTripsRandomUnicode) {
  const std::vector<std::pair<uint32_t, uint32_t>> ranges = {
      {0x20, 0x7E},       {0x09, 0x0D},     {0xA0, 0x17F},    {0x300, 0x36F},  // combining marks
      {0x391, 0x3C9},     {0x410, 0x44F},   {0x5D0, 0x5EA},   {0x620, 0x64A},  // Hebrew, Arabic
      {0x660, 0x669},     {0x900, 0x97F},   {0x2000, 0x206F}, {0x3000, 0x30FF},
      {0x4E00, 0x4FFF},   {0xAC00, 0xACFF}, {0xFF10, 0xFF5A}, {0x1F300, 0x1F64F},
      {0x1F900, 0x1F9FF}, {0x85, 0x85},     {0x2028, 0x2029},
  };
  std::mt19937 rng(1234);
  for (int iter = 0; iter < 3000; ++iter) {
    std::string text;
    const int len = 1 + static_cast<int>(rng() % 40);
    for (int i = 0; i < len; ++i) {
      const auto& [lo, hi] = ranges[rng() % ranges.size()];
      internal::AppendUtf8(lo + rng() % (hi - lo + 1), &text);
    }
    ASSERT_EQ(tok().Decode(tok().Encode(text, false, false)), text) << nlohmann::json(text).dump();
  }
}

// Byte-level BPE carries any bytes, invalid UTF-8 included, except the few whose byte-alphabet
// character SmolLM2's vocabulary lacks: those are dropped (as HF does), never turned into unk.
TEST_F(SmolLmTokenizerTest, RoundTripsArbitraryBytes) {
  std::string missing;
  for (int b = 0; b < 256; ++b) {
    if (tok().Encode(std::string(1, static_cast<char>(b)), false, false).empty()) {
      missing.push_back(static_cast<char>(b));
    }
  }
  EXPECT_EQ(missing,
            "\x04\x06\x13\x14\x16\x1D\xC0\xC1\xF1\xF2\xF5\xF6\xF7\xF8\xF9\xFA\xFB\xFC"
            "\xFD\xFE\xFF");
  EXPECT_THAT(tok().Encode(std::string{'a', '\x04', 'b'}, false, false), ElementsAre(81, 82));
  // The neighbours of a dropped byte merge: "[\x04]" is "[]".
  EXPECT_EQ(tok().Encode("[\x04]", false, false), tok().Encode("[]", false, false));
  std::mt19937 rng(99);
  for (int iter = 0; iter < 2000; ++iter) {
    std::string text(1 + rng() % 30, '\0');
    for (char& c : text) c = static_cast<char>(rng() % 256);
    std::string kept;
    for (char c : text) {
      if (missing.find(c) == std::string::npos) kept.push_back(c);
    }
    ASSERT_EQ(tok().Decode(tok().Encode(text, false, false)), kept);
  }
  const std::string broken = "ok \xF0\x9F\x98 cut \xC3 and \x80\xBF stray \xED\xA0\x80 surrogate";
  EXPECT_EQ(tok().Decode(tok().Encode(broken, false, false)), broken);
}

// A prompt of more than 100K tokens encodes (and round-trips); BPE per word keeps it linear.
TEST_F(SmolLmTokenizerTest, LongInputs) {
  std::string text;
  const std::vector<std::string> corpus = ReadCorpus();
  while (text.size() < 600 * 1000) {
    for (const std::string& line : corpus) text.append(line).append("\n");
  }
  const std::vector<int32_t> ids = tok().Encode(text, false, false);
  EXPECT_GT(ids.size(), 100000u);
  // EXPECT_TRUE: a failure message with a diff of two 600 KB strings would take minutes.
  EXPECT_TRUE(tok().Decode(ids) == Encodable(text));

  // One enormous pre-token and one enormous whitespace run.
  const std::string word(200000, 'x');
  const std::vector<int32_t> word_ids = tok().Encode(word, false, false);
  EXPECT_TRUE(tok().Decode(word_ids) == word);
  EXPECT_LT(word_ids.size(), word.size() / 2);
  const std::string spaces = std::string(100000, ' ') + "end";
  EXPECT_TRUE(tok().Decode(tok().Encode(spaces, false, false)) == spaces);
}

TEST_F(SmolLmTokenizerTest, StreamingHoldsSplitEmoji) {
  StreamingDetokenizer stream(tok());
  // "😀" = F0 9F 98 80 comes as three tokens: F0 9F | 98 | 80.
  EXPECT_EQ(stream.Push(10813), "");
  EXPECT_EQ(stream.Push(242), "");
  EXPECT_EQ(stream.Push(218), "😀");
  EXPECT_EQ(stream.Flush(), "");

  // An unfinished character comes out of Flush() as the bytes received.
  StreamingDetokenizer cut(tok());
  EXPECT_EQ(cut.Push(19556), "Hello");
  EXPECT_EQ(cut.Push(10813), "");
  EXPECT_EQ(cut.Flush(), "\xF0\x9F");
}

// Over the whole corpus, the pieces add up to the text, and each Push() returns valid UTF-8
// (unless dropping unencodable bytes has broken the text's own UTF-8).
TEST_F(SmolLmTokenizerTest, StreamingMatchesDecode) {
  for (const std::string& text : ReadCorpus()) {
    const std::vector<int32_t> ids = tok().Encode(text, false, true);
    const bool valid = IsValidUtf8(Encodable(text));
    StreamingDetokenizer stream(tok());
    std::string joined;
    for (int32_t id : ids) {
      const std::string piece = stream.Push(id);
      EXPECT_TRUE(!valid || IsValidUtf8(piece)) << nlohmann::json(text).dump();
      joined += piece;
    }
    joined += stream.Flush();
    EXPECT_EQ(joined, Encodable(text));

    StreamingDetokenizer skipping(tok(), /*skip_special=*/true);
    std::string skipped;
    for (int32_t id : ids) skipped += skipping.Push(id);
    skipped += skipping.Flush();
    EXPECT_EQ(skipped, tok().Decode(ids, /*skip_special=*/true));
  }
}

// ---------------------------------------------------------------------------------------------
// Hand-made byte-level vocabularies

// The 256 byte-alphabet characters (id = byte value), then one token per merge result.
VocabData ByteVocab(const std::vector<std::string>& merges, std::string pre = "gpt2") {
  VocabData v;
  v.model = "gpt2";
  v.pre = std::move(pre);
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    internal::AppendUtf8(internal::kByteToCodepoint[b], &ch);
    v.tokens.push_back(ch);
  }
  for (const std::string& m : merges) {
    const size_t space = m.find(' ');
    v.tokens.push_back(m.substr(0, space) + m.substr(space + 1));
  }
  v.merges = merges;
  return v;
}

std::unique_ptr<Tokenizer> MustCreate(VocabData v) {
  auto t = Tokenizer::Create(std::move(v));
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

TEST(ByteLevelTest, ByteAlphabet) {
  EXPECT_EQ(internal::kByteToCodepoint[' '], 0x120);   // Ġ
  EXPECT_EQ(internal::kByteToCodepoint['\n'], 0x10A);  // Ċ
  EXPECT_EQ(internal::kByteToCodepoint['A'], 'A');
  EXPECT_EQ(internal::kByteToCodepoint[0xAD], 0x143);
  for (int b = 0; b < 256; ++b) {
    EXPECT_EQ(internal::kCodepointToByte[internal::kByteToCodepoint[b]], b);
  }
}

TEST(ByteLevelTest, MergesByRankLeftmostFirst) {
  // "a a" outranks "aa a": "aaa" -> "aa" + "a", not "a" + "aa".
  auto t = MustCreate(ByteVocab({"a a", "aa a", "b c", "a b"}));
  ASSERT_NE(t, nullptr);
  const int32_t aa = 256, aaa = 257, bc = 258, ab = 259;
  EXPECT_THAT(t->Encode("aa", false, false), ElementsAre(aa));
  EXPECT_THAT(t->Encode("aaa", false, false), ElementsAre(aaa));  // aa + a -> aaa
  EXPECT_THAT(t->Encode("aaaa", false, false), ElementsAre(aa, aa));
  // "b c" (rank 2) beats "a b" (rank 3).
  EXPECT_THAT(t->Encode("abc", false, false), ElementsAre('a', bc));
  EXPECT_THAT(t->Encode("abd", false, false), ElementsAre(ab, 'd'));
  EXPECT_EQ(t->Decode(t->Encode("aaabcabd", false, false)), "aaabcabd");
}

// The pre-tokenizer families split digits differently: a merge across a split never happens.
TEST(ByteLevelTest, PreTokenizerFamilies) {
  const std::vector<std::string> merges = {"1 2", "12 3", "123 4", "Ġ 1"};
  const int32_t t12 = 256, t123 = 257, t1234 = 258, sp1 = 259;
  auto gpt2 = MustCreate(ByteVocab(merges, "gpt2"));
  auto smollm = MustCreate(ByteVocab(merges, "smollm"));
  auto llama3 = MustCreate(ByteVocab(merges, "llama-bpe"));
  auto qwen2 = MustCreate(ByteVocab(merges, "qwen2"));
  ASSERT_TRUE(gpt2 && smollm && llama3 && qwen2);
  EXPECT_THAT(gpt2->Encode("1234", false, false), ElementsAre(t1234));
  EXPECT_THAT(smollm->Encode("1234", false, false), ElementsAre('1', '2', '3', '4'));
  EXPECT_THAT(llama3->Encode("1234", false, false), ElementsAre(t123, '4'));
  EXPECT_THAT(qwen2->Encode("1234", false, false), ElementsAre('1', '2', '3', '4'));
  // " 1": GPT-2 keeps the space on the number; the others split it off.
  const int32_t sp = ' ';  // ByteVocab gives each byte's character the byte's value as id.
  EXPECT_THAT(gpt2->Encode(" 1", false, false), ElementsAre(sp1));
  EXPECT_THAT(smollm->Encode(" 1", false, false), ElementsAre(sp, '1'));
  EXPECT_THAT(llama3->Encode(" 1", false, false), ElementsAre(sp, '1'));
  EXPECT_THAT(llama3->Encode("12", false, false), ElementsAre(t12));
}

TEST(ByteLevelTest, Llama3TakesWholeWordTokens) {
  // "xyz" is a token no merge produces; llama-bpe (ignore_merges) still uses it, dbrx does not.
  VocabData v = ByteVocab({});
  v.tokens.push_back("xyz");
  VocabData v2 = v;
  v.pre = "llama-bpe";
  v2.pre = "dbrx";
  auto with = MustCreate(std::move(v));
  auto without = MustCreate(std::move(v2));
  ASSERT_TRUE(with && without);
  EXPECT_THAT(with->Encode("xyz", false, false), ElementsAre(256));
  EXPECT_THAT(without->Encode("xyz", false, false), ElementsAre('x', 'y', 'z'));
}

TEST(ByteLevelTest, UnknownPreFallsBackToGpt2) {
  auto t = MustCreate(ByteVocab({"1 2"}, "no-such-family"));
  ASSERT_NE(t, nullptr);
  EXPECT_THAT(t->Encode("12", false, false), ElementsAre(256));
}

TEST(ByteLevelTest, AddSpecialAndSpecialTokens) {
  VocabData v = ByteVocab({});
  v.tokens.push_back("<s>");
  v.tokens.push_back("</s>");
  v.tokens.push_back("<tool>");
  v.token_types.assign(v.tokens.size(), 1);
  v.token_types[256] = v.token_types[257] = 3;
  v.token_types[258] = 4;  // user-defined
  v.bos_id = 256;
  v.eos_id = 257;
  v.add_bos = true;
  v.add_eos = true;
  auto t = MustCreate(std::move(v));
  ASSERT_NE(t, nullptr);
  EXPECT_THAT(t->Encode("a", true, false), ElementsAre(256, 'a', 257));
  EXPECT_THAT(t->Encode("a<tool>b</s>", false, true), ElementsAre('a', 258, 'b', 257));
  EXPECT_THAT(t->Encode("<tool>", false, false), ElementsAre('<', 't', 'o', 'o', 'l', '>'));
  EXPECT_EQ(t->Decode(std::vector<int32_t>{256, 'a', 258, 257}), "<s>a<tool></s>");
  EXPECT_EQ(t->Decode(std::vector<int32_t>{256, 'a', 258, 257}, true), "a<tool>");
  EXPECT_TRUE(t->IsEndOfGeneration(257));
  EXPECT_FALSE(t->IsSpecial(258));
}

TEST(StreamingDetokenizerTest, PassesInvalidBytesThrough) {
  auto t = MustCreate(ByteVocab({}));
  ASSERT_NE(t, nullptr);
  StreamingDetokenizer s(*t);
  EXPECT_EQ(s.Push(0x80), "\x80");  // a stray continuation byte cannot wait for anything
  EXPECT_EQ(s.Push(0xE2), "");      // lead of a 3-byte character
  EXPECT_EQ(s.Push(0x82), "");
  EXPECT_EQ(s.Push(0xAC), "\xE2\x82\xAC");  // €
  EXPECT_EQ(s.Push(0xE2), "");
  EXPECT_EQ(s.Push('x'), "\xE2x");  // never completed: passed on with what broke it
  EXPECT_EQ(s.Push(0xC3), "");
  EXPECT_EQ(s.Flush(), "\xC3");
}

// ---------------------------------------------------------------------------------------------
// A hand-made SentencePiece vocabulary ("llama" model)

constexpr char kSp[] = "\xE2\x96\x81";  // U+2581

struct SpmVocab {
  VocabData v;
  void Add(const std::string& text, float score, TokenType type = TokenType::kNormal) {
    v.tokens.push_back(text);
    v.scores.push_back(score);
    v.token_types.push_back(static_cast<int32_t>(type));
  }
  int32_t Id(const std::string& text) const {
    for (size_t i = 0; i < v.tokens.size(); ++i) {
      if (v.tokens[i] == text) return static_cast<int32_t>(i);
    }
    ADD_FAILURE() << "no token " << text;
    return -1;
  }
};

SpmVocab MakeSpm(bool byte_tokens) {
  SpmVocab s;
  s.v.model = "llama";
  s.Add("<unk>", 0, TokenType::kUnknown);
  s.Add("<s>", 0, TokenType::kControl);
  s.Add("</s>", 0, TokenType::kControl);
  if (byte_tokens) {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      s.Add(name, 0, TokenType::kByte);
    }
  }
  for (const char* c : {kSp, "h", "e", "l", "o", "w", "r", "d", "a", "b", "c"}) s.Add(c, -100);
  s.Add("he", -1);
  s.Add("ll", -2);
  s.Add("llo", -2.5);
  s.Add("hello", -0.1f);
  s.Add(std::string(kSp) + "hello", -20);
  s.Add("or", -3);
  s.Add(std::string(kSp) + "w", -6);
  s.Add(std::string(kSp) + "wor", -4);
  s.Add("ld", -7);
  s.Add(std::string(kSp) + "world", -5);
  s.Add("ab", -1);
  s.Add("bc", -2);
  s.v.bos_id = 1;
  s.v.eos_id = 2;
  s.v.unk_id = 0;
  s.v.add_bos = true;
  s.v.add_space_prefix = true;
  return s;
}

TEST(SentencePieceTest, MergesByScore) {
  SpmVocab s = MakeSpm(true);
  auto t = MustCreate(s.v);
  ASSERT_NE(t, nullptr);
  const std::string sp = kSp;
  EXPECT_THAT(t->Encode("hello world", false, false),
              ElementsAre(s.Id(sp + "hello"), s.Id(sp + "world")));
  // "ab" (-1) beats "bc" (-2); "▁a" is no token.
  EXPECT_THAT(t->Encode("abc", false, false), ElementsAre(s.Id(sp), s.Id("ab"), s.Id("c")));
  EXPECT_THAT(t->Encode("hello", true, false), ElementsAre(1, s.Id(sp + "hello")));
  EXPECT_EQ(t->Decode(t->Encode("hello world", true, false)), "<s> hello world");
  EXPECT_EQ(t->Decode(t->Encode("hello world", true, false), true), "hello world");
  EXPECT_EQ(t->TokenToPiece(s.Id(sp + "world")), " world");
}

TEST(SentencePieceTest, ByteFallback) {
  SpmVocab s = MakeSpm(true);
  auto t = MustCreate(s.v);
  ASSERT_NE(t, nullptr);
  // 'é' (C3 A9) and '\n' have no token: their bytes become <0xNN> tokens.
  EXPECT_THAT(t->Encode("hé\n", false, false),
              ElementsAre(s.Id(kSp), s.Id("h"), s.Id("<0xC3>"), s.Id("<0xA9>"), s.Id("<0x0A>")));
  EXPECT_EQ(t->TokenToPiece(s.Id("<0x0A>")), "\n");
  for (const std::string text : {"hé\n", "  hello  world ", "x😀y", "hello", "\xC3"}) {
    EXPECT_EQ(t->Decode(t->Encode(text, false, false)), text) << text;
  }
  // Streaming joins the byte tokens of 'é' into one character and drops the prefix space.
  StreamingDetokenizer stream(*t);
  std::string out;
  for (int32_t id : t->Encode("hé hello", false, false)) {
    const std::string piece = stream.Push(id);
    EXPECT_TRUE(IsValidUtf8(piece));
    out += piece;
  }
  EXPECT_EQ(out + stream.Flush(), "hé hello");
}

TEST(SentencePieceTest, UnknownWithoutByteTokens) {
  SpmVocab s = MakeSpm(false);
  auto t = MustCreate(s.v);
  ASSERT_NE(t, nullptr);
  EXPECT_THAT(t->Encode("hé", false, false), ElementsAre(s.Id(kSp), s.Id("h"), 0));
}

TEST(SentencePieceTest, SpacePrefixAfterSpecialTokens) {
  SpmVocab s = MakeSpm(true);
  auto t = MustCreate(s.v);
  ASSERT_NE(t, nullptr);
  const std::string sp = kSp;
  EXPECT_THAT(t->Encode("<s>hello</s>world", false, true),
              ElementsAre(1, s.Id(sp + "hello"), 2, s.Id(sp + "world")));
  // Without parse_special "<s>" is text (byte fallback for '<', '>' and '/').
  EXPECT_THAT(t->Encode("<s>", false, false), Not(Contains(1)));
  s.v.add_space_prefix = false;
  auto no_prefix = MustCreate(s.v);
  ASSERT_NE(no_prefix, nullptr);
  EXPECT_THAT(no_prefix->Encode("hello", false, false), ElementsAre(s.Id("hello")));
  EXPECT_EQ(no_prefix->Decode(no_prefix->Encode(" hello", false, false)), " hello");
}

// ---------------------------------------------------------------------------------------------
// Errors

TEST(TokenizerErrorsTest, RejectsBadVocabularies) {
  VocabData empty;
  empty.model = "gpt2";
  auto r = Tokenizer::Create(empty);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("no tokens"));

  VocabData unknown_merge = ByteVocab({"a b"});
  unknown_merge.merges.push_back("a zzz");
  r = Tokenizer::Create(unknown_merge);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("\"zzz\""));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("merge 1"));

  VocabData no_result = ByteVocab({});
  no_result.merges.push_back("a b");  // "ab" is not a token
  r = Tokenizer::Create(no_result);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("\"ab\""));

  VocabData no_space = ByteVocab({});
  no_space.merges.push_back("ab");
  r = Tokenizer::Create(no_space);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("separated by a space"));

  VocabData bad_model = ByteVocab({});
  bad_model.model = "wordpiece";
  r = Tokenizer::Create(bad_model);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("wordpiece"));

  VocabData bad_id = ByteVocab({});
  bad_id.eos_id = 256;
  r = Tokenizer::Create(bad_id);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("eos id 256"));

  VocabData bad_types = ByteVocab({});
  bad_types.token_types = {1, 1};
  r = Tokenizer::Create(bad_types);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("2 token types for 256 tokens"));

  SpmVocab spm = MakeSpm(true);
  spm.v.scores.clear();
  r = Tokenizer::Create(spm.v);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("scores"));
}

TEST(TokenizerErrorsTest, OutOfRangeIdsDecodeToNothing) {
  auto t = MustCreate(ByteVocab({}));
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Decode(std::vector<int32_t>{'a', -1, 100000, 'b'}), "ab");
  EXPECT_FALSE(t->IsSpecial(-1));
  EXPECT_FALSE(t->IsEndOfGeneration(100000));
}

}  // namespace
}  // namespace crescent::model
