#include "src/engine/sampler.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>
#include <random>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/ops.h"

namespace crescent::engine {
namespace {

absl::Status OutOfRange(std::string_view field, std::string_view range, double value) {
  return absl::InvalidArgumentError(
      absl::StrCat(absl::string_view(field.data(), field.size()), " must be in ",
                   absl::string_view(range.data(), range.size()), ", got ", value));
}

// splitmix64 (Steele, Lea, Flood 2014): expands one 64-bit seed into the generator's state.
uint64_t SplitMix64(uint64_t* x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

struct Candidate {
  int32_t id;
  float logit;
};

// The sampler's total order on tokens: higher logit first, then lower id.
bool Better(const Candidate& a, const Candidate& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

// The n best tokens of `logits` (n >= 1), best first. O(vocab log n): a heap of the n best so
// far whose top is the worst of them.
void TopN(std::span<const float> logits, size_t n, std::vector<Candidate>* out) {
  out->clear();
  n = std::min(n, logits.size());
  out->reserve(n);
  const auto size = static_cast<int32_t>(logits.size());
  for (int32_t i = 0; i < size; ++i) {
    const Candidate c{i, logits[static_cast<size_t>(i)]};
    if (out->size() < n) {
      out->push_back(c);
      std::push_heap(out->begin(), out->end(), Better);
    } else if (c.logit > out->front().logit) {  // ids ascend, so an equal logit never wins.
      std::pop_heap(out->begin(), out->end(), Better);
      out->back() = c;
      std::push_heap(out->begin(), out->end(), Better);
    }
  }
  std::sort_heap(out->begin(), out->end(), Better);
}

// The n best tokens, best first, by whichever is cheaper: a heap for n small next to the
// vocabulary, otherwise nth_element over all of them and a sort of the n best. Both give the
// same list, since Better is a total order.
void SelectBest(std::span<const float> logits, size_t n, std::vector<Candidate>* out) {
  n = std::min(n, logits.size());
  if (n * 16 <= logits.size()) {
    TopN(logits, n, out);
    return;
  }
  out->resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) (*out)[i] = {static_cast<int32_t>(i), logits[i]};
  const auto mid = out->begin() + static_cast<std::ptrdiff_t>(n);
  std::nth_element(out->begin(), mid - 1, out->end(), Better);
  out->resize(n);
  std::sort(out->begin(), out->end(), Better);
}

// The largest logit, NaNs skipped; -inf when there is none.
float MaxLogit(std::span<const float> logits) {
  if (logits.empty()) return -std::numeric_limits<float>::infinity();
  const float m = logits[static_cast<size_t>(
      kernels::ArgMax(logits.data(), static_cast<int64_t>(logits.size())))];
  return std::isnan(m) ? -std::numeric_limits<float>::infinity() : m;
}

// Weights are added up in blocks of kSumBlock consecutive ids, each block in id order, and the
// blocks' sums in block order: a fixed order, so totals and draws are the same bits on every
// run and platform, in which four blocks' chains of dependent additions run side by side (one
// running sum over a 49152-token vocabulary is a chain of 49152 additions, ~60 us).
constexpr size_t kSumBlock = 64;

// (*sums)[b] = the sum of w's block b; returns the sum of the block sums.
double BlockSums(std::span<const double> w, std::vector<double>* sums) {
  const size_t n = w.size();
  const size_t blocks = (n + kSumBlock - 1) / kSumBlock;
  sums->resize(blocks);
  size_t b = 0;
  for (; (b + 4) * kSumBlock <= n; b += 4) {
    const double* q = w.data() + b * kSumBlock;
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    for (size_t j = 0; j < kSumBlock; ++j) {
      s0 += q[j];
      s1 += q[kSumBlock + j];
      s2 += q[2 * kSumBlock + j];
      s3 += q[3 * kSumBlock + j];
    }
    (*sums)[b] = s0;
    (*sums)[b + 1] = s1;
    (*sums)[b + 2] = s2;
    (*sums)[b + 3] = s3;
  }
  for (; b < blocks; ++b) {
    double s = 0.0;
    for (size_t i = b * kSumBlock; i < std::min(n, (b + 1) * kSumBlock); ++i) s += w[i];
    (*sums)[b] = s;
  }
  double total = 0.0;
  for (const double s : *sums) total += s;
  return total;
}

// The token a uniform draw `target` in [0, total) lands on: the first i with w[i] > 0 at which
// the running sum passes target, the sum taken as the blocks' sums (BlockSums) up to i's block
// and then id by id within it. The last token of nonzero weight if rounding left target beyond
// the total; 0 if there is none.
size_t Pick(std::span<const double> w, std::span<const double> sums, double target) {
  double cum = 0.0;
  for (size_t b = 0; b < sums.size(); ++b) {
    const double next = cum + sums[b];
    if (target < next) {
      double c = cum;
      for (size_t i = b * kSumBlock; i < std::min(w.size(), (b + 1) * kSumBlock); ++i) {
        c += w[i];
        if (w[i] != 0.0 && target < c) return i;
      }
    }
    cum = next;
  }
  for (size_t i = w.size(); i-- > 0;) {
    if (w[i] != 0.0) return i;
  }
  return 0;
}

// w[i] = SamplingExp((logits[i] - max_logit) * inv_t) for the whole vocabulary, vectorized
// (kernels::PortableExpScaled gives SamplingExp's bits).
void Weigh(std::span<const float> logits, float max_logit, double inv_t, std::vector<double>* w) {
  w->resize(logits.size());
  kernels::PortableExpScaled(logits.data(), static_cast<int64_t>(logits.size()),
                             static_cast<double>(max_logit), inv_t, w->data());
}

// Scratch shared by the samplers of one thread (a Sampler is used by one thread at a time and
// Sample() does not reenter), so that vocabulary-sized buffers are not kept per sequence.
struct Scratch {
  std::vector<Candidate> candidates;
  std::vector<double> weights;        // of candidates, in candidate order.
  std::vector<double> weights_by_id;  // of the whole vocabulary.
  std::vector<double> block_sums;     // BlockSums of one of those.
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

}  // namespace

double SamplingExp(double x) { return kernels::PortableExp(x); }

absl::Status ValidateSamplingParams(const SamplingParams& p, int vocab_size) {
  // Written as !(in range) so that NaN fails every check.
  if (!(p.temperature >= 0.0f && p.temperature <= 2.0f)) {
    return OutOfRange("temperature", "[0, 2]", p.temperature);
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return OutOfRange("top_p", "(0, 1]", p.top_p);
  if (p.top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k must be >= 0 (0 turns it off), got ", p.top_k));
  }
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) return OutOfRange("min_p", "[0, 1]", p.min_p);
  if (!(p.repetition_penalty > 0.0f && p.repetition_penalty <= 2.0f)) {
    return OutOfRange("repetition_penalty", "(0, 2]", p.repetition_penalty);
  }
  if (!(p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f)) {
    return OutOfRange("frequency_penalty", "[-2, 2]", p.frequency_penalty);
  }
  if (!(p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f)) {
    return OutOfRange("presence_penalty", "[-2, 2]", p.presence_penalty);
  }
  if (p.top_logprobs < 0 || p.top_logprobs > 20) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_logprobs must be in [0, 20], got ", p.top_logprobs));
  }
  if (p.top_logprobs > 0 && !p.logprobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_logprobs (", p.top_logprobs, ") requires logprobs to be true"));
  }
  for (const auto& [token, bias] : p.logit_bias) {
    if (token < 0 || token >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "logit_bias token id ", token, " is outside the vocabulary [0, ", vocab_size, ")"));
    }
    if (!(bias >= -100.0f && bias <= 100.0f)) {
      return absl::InvalidArgumentError(absl::StrCat("logit_bias value for token ", token,
                                                     " must be in [-100, 100], got ", bias));
    }
  }
  for (int32_t token : p.stop_token_ids) {
    if (token < 0 || token >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "stop_token_ids: token id ", token, " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  if (p.min_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("min_tokens must be >= 0, got ", p.min_tokens));
  }
  return absl::OkStatus();
}

Sampler::Sampler(SamplingParams params, int vocab_size)
    : params_(std::move(params)), vocab_size_(vocab_size) {
  assert(vocab_size > 0);
  assert(ValidateSamplingParams(params_, vocab_size).ok());
  if (params_.has_seed) {
    seed_ = params_.seed;
  } else {
    std::random_device rd;
    seed_ = (static_cast<uint64_t>(rd()) << 32) ^ static_cast<uint64_t>(rd());
  }
  uint64_t x = seed_;
  for (uint64_t& s : state_) s = SplitMix64(&x);
}

double Sampler::NextUniform() {
  // xoshiro256** (Blackman, Vigna 2018).
  const uint64_t result = Rotl(state_[1] * 5, 7) * 9;
  const uint64_t t = state_[1] << 17;
  state_[2] ^= state_[0];
  state_[3] ^= state_[1];
  state_[1] ^= state_[2];
  state_[0] ^= state_[3];
  state_[2] ^= t;
  state_[3] = Rotl(state_[3], 45);
  return static_cast<double>(result >> 11) * 0x1.0p-53;
}

void Sampler::ApplyPenalties(std::span<float> logits, std::span<const int32_t> prompt,
                             std::span<const int32_t> generated) {
  const float rep = params_.repetition_penalty;
  if (rep != 1.0f) {
    // Once per distinct token of prompt + generated; a bitset marks the ones already done.
    seen_bits_.assign((static_cast<size_t>(vocab_size_) + 63) / 64, 0);
    auto penalize = [&](int32_t t) {
      if (t < 0 || t >= vocab_size_) return;
      uint64_t& word = seen_bits_[static_cast<size_t>(t) >> 6];
      const uint64_t bit = uint64_t{1} << (t & 63);
      if (word & bit) return;
      word |= bit;
      float& l = logits[static_cast<size_t>(t)];
      l = l < 0.0f ? l * rep : l / rep;
    };
    for (const int32_t t : prompt) penalize(t);
    for (const int32_t t : generated) penalize(t);
  }
  const float freq = params_.frequency_penalty;
  const float presence = params_.presence_penalty;
  if (freq != 0.0f || presence != 0.0f) {
    sorted_generated_.clear();
    for (const int32_t t : generated) {
      if (t >= 0 && t < vocab_size_) sorted_generated_.push_back(t);
    }
    std::sort(sorted_generated_.begin(), sorted_generated_.end());
    for (size_t i = 0; i < sorted_generated_.size();) {
      size_t j = i;
      while (j < sorted_generated_.size() && sorted_generated_[j] == sorted_generated_[i]) ++j;
      const auto count = static_cast<float>(j - i);
      logits[static_cast<size_t>(sorted_generated_[i])] -= count * freq + presence;
      i = j;
    }
  }
}

int32_t Sampler::Draw(std::span<const float> logits) {
  const double inv_t = 1.0 / static_cast<double>(params_.temperature);
  const size_t vocab = logits.size();
  const bool full = params_.top_k <= 0 || static_cast<size_t>(params_.top_k) >= vocab;
  const double top_p = params_.top_p;
  const double min_p = params_.min_p;
  const bool use_top_p = top_p < 1.0;
  const float max_logit = MaxLogit(logits);
  if (max_logit == -std::numeric_limits<float>::infinity()) return 0;  // nothing is possible.
  // Weights relative to the most likely token, which gets 1.
  auto weight = [&](float l) {
    return SamplingExp((static_cast<double>(l) - static_cast<double>(max_logit)) * inv_t);
  };
  Scratch& scratch = ThreadScratch();
  std::vector<Candidate>& cand = scratch.candidates;
  std::vector<double>& w = scratch.weights;

  if (full && !use_top_p) {
    // The whole vocabulary in id order; min_p is a threshold on the weight.
    Weigh(logits, max_logit, inv_t, &w);
    if (min_p > 0.0) {
      for (double& x : w) x = x < min_p ? 0.0 : x;
    }
    const double total = BlockSums(w, &scratch.block_sums);
    return static_cast<int32_t>(Pick(w, scratch.block_sums, NextUniform() * total));
  }

  // Otherwise draw from a most-likely-first list of candidates with their weights in `w`, and
  // `z`, the total weight top_p is measured against: that of the top_k set, or of the whole
  // vocabulary.
  double z = 0.0;
  size_t n = 0;  // candidates kept so far.
  if (!full) {
    SelectBest(logits, static_cast<size_t>(params_.top_k), &cand);
    w.resize(cand.size());
    for (size_t j = 0; j < cand.size(); ++j) z += (w[j] = weight(cand[j].logit));
    n = cand.size();
    if (use_top_p) {
      double cum = 0.0;
      for (size_t j = 0; j < cand.size(); ++j) {
        cum += w[j];
        if (cum >= top_p * z) {
          n = j + 1;
          break;
        }
      }
    }
  } else {
    // top_p over the whole vocabulary: order only as long a prefix as it needs, extending the
    // ordered prefix fourfold (nth_element on the rest, then sort) while it falls short.
    std::vector<double>& by_id = scratch.weights_by_id;
    Weigh(logits, max_logit, inv_t, &by_id);
    z = BlockSums(by_id, &scratch.block_sums);
    // Tokens lighter than (1 - top_p) * z / vocab weigh less than (1 - top_p) * z together, so
    // the heavier ones already reach top_p and hold the whole nucleus: only they need ordering.
    // (Halved for rounding; ties are all in or all out, so the order among them is unchanged.)
    const double light = 0.5 * (1.0 - top_p) * z / static_cast<double>(vocab);
    cand.clear();
    for (size_t i = 0; i < vocab; ++i) {
      if (by_id[i] >= light) cand.push_back({static_cast<int32_t>(i), logits[i]});
    }
    const size_t m = cand.size();
    w.clear();
    double cum = 0.0;
    n = m;
    for (size_t done = 0, k = std::min<size_t>(m, 64); done < m; done = k, k = std::min(m, k * 4)) {
      const auto first = cand.begin() + static_cast<std::ptrdiff_t>(done);
      const auto mid = cand.begin() + static_cast<std::ptrdiff_t>(k);
      std::nth_element(first, mid - 1, cand.end(), Better);
      std::sort(first, mid, Better);
      bool reached = false;
      for (size_t j = done; j < k; ++j) {
        w.push_back(by_id[static_cast<size_t>(cand[j].id)]);
        cum += w.back();
        if (cum >= top_p * z) {
          n = j + 1;
          reached = true;
          break;
        }
      }
      if (reached) break;
    }
    n = std::min(n, w.size());
  }
  while (n > 1 && w[n - 1] < min_p) --n;  // candidates are sorted, so min_p keeps a prefix.

  double total = 0.0;
  for (size_t j = 0; j < n; ++j) total += w[j];
  const double target = NextUniform() * total;
  double cum = 0.0;
  for (size_t j = 0; j < n; ++j) {
    cum += w[j];
    if (target < cum) return cand[j].id;
  }
  return cand[n - 1].id;
}

SampleResult TokenLogprobs(std::span<const float> logits, int32_t token, int top_logprobs) {
  assert(token >= 0 && static_cast<size_t>(token) < logits.size());
  SampleResult result;
  result.token = token;
  const float max_logit = MaxLogit(logits);
  const double m = max_logit;
  Scratch& scratch = ThreadScratch();
  Weigh(logits, max_logit, 1.0, &scratch.weights_by_id);
  const double sum = BlockSums(scratch.weights_by_id, &scratch.block_sums);
  const double log_z = m + std::log(sum);
  result.logprob =
      static_cast<float>(static_cast<double>(logits[static_cast<size_t>(token)]) - log_z);
  if (top_logprobs > 0) {
    std::vector<Candidate>& cand = scratch.candidates;
    TopN(logits, static_cast<size_t>(top_logprobs), &cand);
    result.top_logprobs.reserve(cand.size());
    for (const Candidate& c : cand) {
      if (c.logit == -std::numeric_limits<float>::infinity()) break;  // probability 0
      result.top_logprobs.push_back(
          {c.id, static_cast<float>(static_cast<double>(c.logit) - log_z)});
    }
  }
  return result;
}

SampleResult Sampler::Sample(std::span<float> logits, std::span<const int32_t> prompt,
                             std::span<const int32_t> generated) {
  assert(logits.size() == static_cast<size_t>(vocab_size_));
  for (const auto& [token, bias] : params_.logit_bias) {
    if (token >= 0 && token < vocab_size_) logits[static_cast<size_t>(token)] += bias;
  }
  ApplyPenalties(logits, prompt, generated);

  SampleResult result;
  if (params_.temperature == 0.0f) {
    // Ties go to the lowest id; NaN logits are never picked.
    result.token =
        static_cast<int32_t>(kernels::ArgMax(logits.data(), static_cast<int64_t>(logits.size())));
  } else {
    result.token = Draw(logits);
  }

  if (params_.logprobs) {
    const int32_t token = result.token;
    result = TokenLogprobs(logits, token, params_.top_logprobs);
  }
  return result;
}

}  // namespace crescent::engine
