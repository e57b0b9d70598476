// PromptBuilder: turns a trace request's hash_ids into a real prompt, so that the trace's prefix
// sharing becomes real prefix-cache hits on the server. Each hash id maps deterministically to a
// block of `block_tokens` tokens (equal ids -> equal blocks; distinct ids -> distinct blocks with
// overwhelming probability); lengths are scaled and clamped to fit the model's context.
#ifndef CRESCENT_BENCH_REPLAY_PROMPT_BUILDER_H_
#define CRESCENT_BENCH_REPLAY_PROMPT_BUILDER_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/replay/trace.h"

namespace crescent::bench {

struct PromptOptions {
  // Prompt and block lengths are multiplied by this (1/32 turns 512-token blocks into 16).
  double length_scale = 1.0;
  // Output lengths are multiplied by this, then capped at max_output_tokens (if > 0); at least 1.
  double output_scale = 1.0;
  int64_t max_output_tokens = 0;
  // prompt + output must fit this many tokens (0: no limit); prompts are truncated to fit,
  // and outputs shrunk if even a 1-token prompt would not fit.
  int64_t max_context = 0;
  // Token ids are drawn uniformly from [token_lo, token_hi); keep clear of special tokens.
  int32_t token_lo = 1000;
  int32_t token_hi = 30000;
  uint64_t seed = 0;  // Changes every block's content (a "cold" run against a warm cache).
};

// One block of a built prompt: the trace's hash id and how many tokens of it the prompt holds
// (fewer than block_tokens for a final partial block or a truncated one).
struct PromptBlock {
  int64_t hash_id = 0;
  int64_t tokens = 0;
};

struct BuiltPrompt {
  std::vector<int32_t> tokens;
  std::vector<PromptBlock> blocks;
  int64_t max_tokens = 1;  // Output tokens to ask for.
};

class PromptBuilder {
 public:
  // Errors: InvalidArgument for a non-positive scale, an empty token range, or a max_context
  // below 2.
  static absl::StatusOr<PromptBuilder> Create(const PromptOptions& options, int trace_block_tokens);

  // Tokens per block after scaling (>= 1).
  int64_t block_tokens() const { return block_tokens_; }

  // The prompt for `request`: its blocks' tokens, scaled, truncated to fit. Thread-compatible.
  BuiltPrompt Build(const TraceRequest& request) const;

  // The tokens of one full block for `hash_id`: deterministic in (hash_id, seed).
  std::vector<int32_t> BlockTokens(int64_t hash_id) const;

  // The words for `tokens` in text mode: token id t becomes one word from a fixed vocabulary,
  // words joined by single spaces. Equal token sequences give equal text.
  static std::string TokensToText(const std::vector<int32_t>& tokens);

 private:
  PromptBuilder(const PromptOptions& options, int64_t block_tokens)
      : options_(options), block_tokens_(block_tokens) {}

  PromptOptions options_;
  int64_t block_tokens_;
};

// The ideal hit ratio of built prompts in tokens: an infinite prefix cache, prompts in order;
// a block counts as cached when its id was seen before (up to as many tokens as were seen), and
// only a prompt's leading run of cached blocks counts. 0 when there are no prompt tokens.
double IdealTokenHitRatio(const std::vector<BuiltPrompt>& prompts);

}  // namespace crescent::bench

#endif  // CRESCENT_BENCH_REPLAY_PROMPT_BUILDER_H_
