// Sampler: picks the next token from a model's logits under OpenAI-style sampling parameters.
//
// Pipeline, in this order:
//   1. logit_bias: logits[id] += bias (OpenAI semantics: -100 effectively bans a token, +100
//      effectively forces it).
//   2. penalties: repetition_penalty over the distinct tokens of prompt + generated (llama.cpp /
//      Hugging Face style: a positive logit is divided by the penalty, a negative one multiplied);
//      then frequency and presence penalties over the generated tokens only (OpenAI semantics:
//      logit -= count * frequency_penalty + (count > 0) * presence_penalty).
//   3. temperature == 0: greedy argmax, ties to the lowest token id. Otherwise:
//   4. temperature: probabilities proportional to exp(logit / temperature);
//   5. top_k: keep the k most likely tokens (ties at the boundary to the lower ids);
//   6. top_p: keep the smallest most-likely-first prefix whose probability, renormalized over
//      what top_k kept, reaches top_p (always at least one token);
//   7. min_p: keep tokens whose probability is at least min_p times the most likely one's;
//   8. draw from what is left, renormalized.
//
// Reproducibility: with has_seed, the draws come from this file's own xoshiro256** generator
// (seeded through splitmix64) and a uniform double built from its top 53 bits, and candidates
// are visited in an order defined by logits and ids alone; no standard-library distribution is
// used, and the sampling weights come from SamplingExp() below rather than libm. The same seed
// and logits give the same tokens on every run and on every platform with IEEE doubles.
//
// Cost per call: a few O(vocab) passes (one exp per token unless top_k is set, 8 tokens per
// instruction on AVX-512; sums over the vocabulary in blocks whose chains of additions overlap;
// ~75 us at temperature 0.7 over 49152 tokens, sampler_bench), plus
// O(vocab log k) for a small top_k = k (nth_element for a large one), or for top_p alone an
// ordering of only as long a prefix as the nucleus needs, among the tokens heavy enough to
// matter; never a full sort of the vocabulary. Vocabulary-sized scratch is per thread, not per
// Sampler.
#ifndef CRESCENT_SRC_ENGINE_SAMPLER_H_
#define CRESCENT_SRC_ENGINE_SAMPLER_H_

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace crescent::engine {

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy.
  float top_p = 1.0f;
  int top_k = 0;  // 0 = off.
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;  // 1 = off.
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  uint64_t seed = 0;
  bool has_seed = false;
  std::vector<std::pair<int32_t, float>> logit_bias;  // (token id, bias); repeated ids add up.
  bool logprobs = false;
  int top_logprobs = 0;  // 0..20; needs logprobs.
  // JSON mode (OpenAI response_format json_object): the output is one JSON object. Applied by
  // the Engine (src/engine/json_constraint.h) to the logits before Sample; the Sampler itself
  // does not look at it.
  bool json_object = false;
  // With json_object: a JSON Schema (JSON text) the object must match (OpenAI response_format
  // json_schema; the subset in src/engine/json_schema.h). Empty: any object.
  std::string json_schema;
  // Applied by the Engine, not the Sampler. Token ids that end generation as an
  // end-of-generation token does (not reported; kStop), also under ignore_eos.
  std::vector<int32_t> stop_token_ids;
  // The engine bans end-of-generation tokens and stop_token_ids until this many tokens have
  // been generated (unless a JSON constraint is complete, when only an end token may come).
  int min_tokens = 0;
};

// Checks `params` against OpenAI's ranges: temperature [0, 2], top_p (0, 1], top_k >= 0,
// min_p [0, 1], repetition_penalty (0, 2], frequency_penalty and presence_penalty [-2, 2],
// top_logprobs [0, 20] and only with logprobs, logit_bias ids in [0, vocab_size) and values in
// [-100, 100], stop_token_ids in [0, vocab_size), min_tokens >= 0. Returns InvalidArgument naming
// the field, the allowed range and the value given (NaN is out of every range). REQUIRES:
// vocab_size > 0. Thread-safe.
absl::Status ValidateSamplingParams(const SamplingParams& params, int vocab_size);

struct TokenLogprob {
  int32_t token;
  float logprob;
};

struct SampleResult {
  int32_t token;
  // log P(token) under the distribution the model's logits give after logit_bias and penalties,
  // before temperature and truncation (what OpenAI's logprobs report: the model's view, not the
  // sampler's); filled only when params.logprobs, otherwise 0.
  float logprob = 0.0f;
  // The params.top_logprobs most likely tokens under that same distribution, most likely first
  // (ties to the lower id), leaving out tokens of probability 0 (logit -inf, as JSON mode sets
  // them), so there may be fewer; empty unless params.logprobs.
  std::vector<TokenLogprob> top_logprobs;
};

// The logprob of `token` and the `top_logprobs` most likely tokens (0..20) under the distribution
// `logits` gives, as SampleResult reports them (token = `token`); used as is for prompt logprobs,
// where the model's raw distribution is wanted. REQUIRES: logits.size() > token >= 0; logits are
// finite or -inf, not all -inf.
SampleResult TokenLogprobs(std::span<const float> logits, int32_t token, int top_logprobs);

// exp(x) for x <= 0 (larger x is taken as 0) computed with IEEE double arithmetic alone, so that
// it gives the same bits everywhere, unlike libm's exp(); relative error below 5e-16 for
// x > -708, and 0 from there down (and for -inf and NaN). The sampler's weights use it, over
// the whole vocabulary through its vectorized twin kernels::PortableExpScaled, which gives the
// same bits (kernels::PortableExp is this function). Pure.
double SamplingExp(double x);

// One per sequence; not thread-safe (use one Sampler per thread at a time).
class Sampler {
 public:
  // The seed is params.seed when params.has_seed, otherwise drawn from std::random_device.
  // REQUIRES: ValidateSamplingParams(params, vocab_size).ok().
  Sampler(SamplingParams params, int vocab_size);

  // Picks the next token. `logits` is the model's output for the next position; on return it
  // holds the biased and penalized values (temperature is not applied in place). `prompt` and
  // `generated` are the sequence's tokens so far, for the penalties; ids outside the vocabulary
  // are ignored. REQUIRES: logits.size() == vocab_size; logits are finite or -inf.
  SampleResult Sample(std::span<float> logits, std::span<const int32_t> prompt,
                      std::span<const int32_t> generated);

  const SamplingParams& params() const { return params_; }
  int vocab_size() const { return vocab_size_; }
  // The seed in use, so that a run without has_seed can be reproduced.
  uint64_t seed() const { return seed_; }

  // Advances the generator past the draws one Sample() call makes (one draw unless greedy), as
  // if a token had been sampled here: the decode node calls it for the first token, sampled by
  // the prefill node from the same seed, so that a seeded request draws the same numbers
  // disaggregated as colocated.
  void SkipSample() {
    if (params_.temperature != 0.0f) (void)NextUniform();
  }

 private:
  void ApplyPenalties(std::span<float> logits, std::span<const int32_t> prompt,
                      std::span<const int32_t> generated);
  int32_t Draw(std::span<const float> logits);
  // A uniform double in [0, 1) from the top 53 bits of the next xoshiro256** output.
  double NextUniform();

  SamplingParams params_;
  int vocab_size_;
  uint64_t seed_;
  uint64_t state_[4];
  // Scratch kept between calls to avoid allocations: the ids already penalized (one bit each)
  // and the generated tokens sorted, for counting.
  std::vector<uint64_t> seen_bits_;
  std::vector<int32_t> sorted_generated_;
};

}  // namespace crescent::engine

#endif  // CRESCENT_SRC_ENGINE_SAMPLER_H_
