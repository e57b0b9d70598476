#include "bench/replay/prompt_builder.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <unordered_map>

#include "src/common/hash.h"

namespace crescent::bench {
namespace {

// splitmix64: a small, well-mixed generator; deterministic everywhere (unlike std::
// distributions, whose output is implementation-defined).
uint64_t SplitMix(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

int64_t ScaleLength(int64_t n, double scale) {
  return static_cast<int64_t>(std::llround(static_cast<double>(n) * scale));
}

}  // namespace

absl::StatusOr<PromptBuilder> PromptBuilder::Create(const PromptOptions& options,
                                                    int trace_block_tokens) {
  if (!(options.length_scale > 0)) return absl::InvalidArgumentError("length scale must be > 0");
  if (!(options.output_scale > 0)) return absl::InvalidArgumentError("output scale must be > 0");
  if (options.token_lo < 0 || options.token_hi <= options.token_lo) {
    return absl::InvalidArgumentError("token range [lo, hi) is empty");
  }
  if (options.max_context != 0 && options.max_context < 2) {
    return absl::InvalidArgumentError("max context must be >= 2 tokens");
  }
  if (trace_block_tokens < 1) return absl::InvalidArgumentError("trace block_tokens must be >= 1");
  const int64_t block = std::max<int64_t>(1, ScaleLength(trace_block_tokens, options.length_scale));
  return PromptBuilder(options, block);
}

std::vector<int32_t> PromptBuilder::BlockTokens(int64_t hash_id) const {
  uint64_t key[2] = {static_cast<uint64_t>(hash_id), options_.seed};
  uint64_t state = Hash64(key, sizeof(key), 0x6372657363656e74ULL);
  const uint64_t range = static_cast<uint64_t>(options_.token_hi - options_.token_lo);
  std::vector<int32_t> tokens(static_cast<size_t>(block_tokens_));
  for (int32_t& t : tokens) t = options_.token_lo + static_cast<int32_t>(SplitMix(state) % range);
  return tokens;
}

BuiltPrompt PromptBuilder::Build(const TraceRequest& request) const {
  BuiltPrompt out;
  out.max_tokens = std::max<int64_t>(1, ScaleLength(request.output_length, options_.output_scale));
  if (options_.max_output_tokens > 0) {
    out.max_tokens = std::min(out.max_tokens, options_.max_output_tokens);
  }
  int64_t length = std::max<int64_t>(1, ScaleLength(request.input_length, options_.length_scale));
  // A trace whose hash_ids cover fewer tokens than input_length: the rest stays unshared.
  if (options_.max_context > 0) {
    out.max_tokens = std::min(out.max_tokens, options_.max_context - 1);
    length = std::min(length, options_.max_context - out.max_tokens);
  }
  out.tokens.reserve(static_cast<size_t>(length));
  for (int64_t id : request.hash_ids) {
    const int64_t remaining = length - static_cast<int64_t>(out.tokens.size());
    if (remaining <= 0) break;
    std::vector<int32_t> block = BlockTokens(id);
    const int64_t take = std::min<int64_t>(remaining, block_tokens_);
    out.tokens.insert(out.tokens.end(), block.begin(), block.begin() + take);
    out.blocks.push_back({id, take});
  }
  // Tokens beyond the hash blocks (traces that list fewer ids than the length needs) are unique
  // to this request, drawn from its line and timestamp so that they never match anything.
  if (static_cast<int64_t>(out.tokens.size()) < length) {
    Hasher hasher(0x7461696cULL);
    hasher.UpdateU64(static_cast<uint64_t>(request.line));
    hasher.UpdateU64(static_cast<uint64_t>(request.timestamp_ms));
    hasher.UpdateU64(static_cast<uint64_t>(request.input_length));
    hasher.UpdateU64(options_.seed);
    hasher.Update(request.hash_ids.data(), request.hash_ids.size() * sizeof(int64_t));
    uint64_t state = hasher.Digest();
    const uint64_t range = static_cast<uint64_t>(options_.token_hi - options_.token_lo);
    while (static_cast<int64_t>(out.tokens.size()) < length) {
      out.tokens.push_back(options_.token_lo + static_cast<int32_t>(SplitMix(state) % range));
    }
  }
  return out;
}

std::string PromptBuilder::TokensToText(const std::vector<int32_t>& tokens) {
  // A fixed vocabulary of 4096 pronounceable words: consonant-vowel syllables picked by the
  // token id's bits. Common short words tokenize to few tokens in most BPE vocabularies.
  static constexpr std::array<const char*, 16> kOnsets = {"b", "d", "f", "g", "k", "l", "m",  "n",
                                                          "p", "r", "s", "t", "v", "z", "ch", "sh"};
  static constexpr std::array<const char*, 4> kVowels = {"a", "e", "i", "o"};
  std::string text;
  text.reserve(tokens.size() * 7);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const uint32_t w = static_cast<uint32_t>(tokens[i]) % 4096;
    if (i > 0) text += ' ';
    text += kOnsets[w & 15];
    text += kVowels[(w >> 4) & 3];
    text += kOnsets[(w >> 6) & 15];
    text += kVowels[(w >> 10) & 3];
  }
  return text;
}

double IdealTokenHitRatio(const std::vector<BuiltPrompt>& prompts) {
  std::unordered_map<int64_t, int64_t> seen;  // hash id -> most tokens of it seen.
  int64_t total = 0;
  int64_t hits = 0;
  for (const BuiltPrompt& p : prompts) {
    total += static_cast<int64_t>(p.tokens.size());
    for (const PromptBlock& b : p.blocks) {
      auto it = seen.find(b.hash_id);
      if (it == seen.end()) break;
      hits += std::min(b.tokens, it->second);
      if (it->second < b.tokens) break;
    }
    for (const PromptBlock& b : p.blocks) {
      int64_t& s = seen[b.hash_id];
      s = std::max(s, b.tokens);
    }
  }
  return total == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(total);
}

}  // namespace crescent::bench
