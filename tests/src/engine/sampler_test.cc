#include "src/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace crescent::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

SamplingParams Seeded(uint64_t seed) {
  SamplingParams p;
  p.seed = seed;
  p.has_seed = true;
  return p;
}

// Natural-log probabilities as logits: softmax(log p) = p.
std::vector<float> LogitsFromProbs(const std::vector<double>& probs) {
  std::vector<float> l;
  for (const double p : probs) l.push_back(static_cast<float>(std::log(p)));
  return l;
}

// Draws `n` tokens, each from a fresh copy of `logits` with no history.
std::vector<int32_t> DrawMany(Sampler& s, const std::vector<float>& logits, int n) {
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    std::vector<float> l = logits;
    out.push_back(s.Sample(l, {}, {}).token);
  }
  return out;
}

std::set<int32_t> Distinct(const std::vector<int32_t>& v) { return {v.begin(), v.end()}; }

// log-softmax in double, computed independently of the sampler.
std::vector<double> LogSoftmax(const std::vector<float>& logits) {
  double m = -std::numeric_limits<double>::infinity();
  for (const float l : logits) m = std::max(m, static_cast<double>(l));
  double sum = 0.0;
  for (const float l : logits) sum += std::exp(l - m);
  std::vector<double> out;
  for (const float l : logits) out.push_back(l - m - std::log(sum));
  return out;
}

// ---------------------------------------------------------------------------------------------
// SamplingExp

TEST(SamplingExpTest, CloseToLibmExp) {
  double worst = 0.0;
  for (double x = 0.0; x > -707.0; x -= 0.0137) {
    worst = std::max(worst, std::fabs(SamplingExp(x) - std::exp(x)) / std::exp(x));
  }
  EXPECT_LT(worst, 5e-16);
  EXPECT_EQ(SamplingExp(0.0), 1.0);
  EXPECT_EQ(SamplingExp(1.0), 1.0);  // positive arguments are clamped to 0.
  EXPECT_EQ(SamplingExp(-709.0), 0.0);
  EXPECT_EQ(SamplingExp(-std::numeric_limits<double>::infinity()), 0.0);
  EXPECT_EQ(SamplingExp(std::nan("")), 0.0);
}

TEST(SamplingExpTest, BitsArePinned) {
  // From sampling_exp() in tests/reference/sampler_reference.py.
  EXPECT_EQ(SamplingExp(-1.0), 0x1.78b56362cef38p-2);
  EXPECT_EQ(SamplingExp(-0.5), 0x1.368b2fc6f960bp-1);
  EXPECT_EQ(SamplingExp(-10.25), 0x1.2899a7a835447p-15);
  EXPECT_EQ(SamplingExp(-300.125), 0x1.01fc80984719dp-433);
  EXPECT_EQ(SamplingExp(-707.5), 0x1.39b42358bdf31p-1021);
}

// ---------------------------------------------------------------------------------------------
// Validation

TEST(ValidateSamplingParamsTest, DefaultsAreValid) {
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams{}, 100).ok());
}

TEST(ValidateSamplingParamsTest, BoundariesAreValid) {
  SamplingParams p;
  p.temperature = 2.0f;
  p.top_p = 1.0f;
  p.top_k = 100000;
  p.min_p = 1.0f;
  p.repetition_penalty = 2.0f;
  p.frequency_penalty = -2.0f;
  p.presence_penalty = 2.0f;
  p.logprobs = true;
  p.top_logprobs = 20;
  p.logit_bias = {{0, -100.0f}, {99, 100.0f}};
  EXPECT_TRUE(ValidateSamplingParams(p, 100).ok());
  p.temperature = 0.0f;
  EXPECT_TRUE(ValidateSamplingParams(p, 100).ok());
}

struct BadCase {
  std::string field;  // must appear in the message.
  void (*mutate)(SamplingParams*);
};

TEST(ValidateSamplingParamsTest, EachBadFieldIsNamed) {
  const std::vector<BadCase> cases = {
      {"temperature", [](SamplingParams* p) { p->temperature = -0.1f; }},
      {"temperature", [](SamplingParams* p) { p->temperature = 2.5f; }},
      {"temperature", [](SamplingParams* p) { p->temperature = std::nanf(""); }},
      {"top_p", [](SamplingParams* p) { p->top_p = 0.0f; }},
      {"top_p", [](SamplingParams* p) { p->top_p = 1.5f; }},
      {"top_k", [](SamplingParams* p) { p->top_k = -1; }},
      {"min_p", [](SamplingParams* p) { p->min_p = 1.5f; }},
      {"min_p", [](SamplingParams* p) { p->min_p = -0.5f; }},
      {"repetition_penalty", [](SamplingParams* p) { p->repetition_penalty = 0.0f; }},
      {"repetition_penalty", [](SamplingParams* p) { p->repetition_penalty = 3.0f; }},
      {"frequency_penalty", [](SamplingParams* p) { p->frequency_penalty = 2.5f; }},
      {"presence_penalty", [](SamplingParams* p) { p->presence_penalty = -3.0f; }},
      {"top_logprobs", [](SamplingParams* p) { p->top_logprobs = -1; }},
      {"top_logprobs",
       [](SamplingParams* p) {
         p->logprobs = true;
         p->top_logprobs = 21;
       }},
      {"logprobs", [](SamplingParams* p) { p->top_logprobs = 5; }},
      {"logit_bias token id 100",
       [](SamplingParams* p) {
         p->logit_bias = {{100, 1.0f}};
       }},
      {"logit_bias token id -1",
       [](SamplingParams* p) {
         p->logit_bias = {{-1, 1.0f}};
       }},
      {"logit_bias value for token 7",
       [](SamplingParams* p) {
         p->logit_bias = {{7, 150.0f}};
       }},
      {"stop_token_ids: token id 100",
       [](SamplingParams* p) {
         p->stop_token_ids = {3, 100};
       }},
      {"min_tokens", [](SamplingParams* p) { p->min_tokens = -1; }},
  };
  for (const BadCase& c : cases) {
    SamplingParams p;
    c.mutate(&p);
    const absl::Status s = ValidateSamplingParams(p, 100);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.field));
  }
}

TEST(ValidateSamplingParamsTest, MessageGivesRangeAndValue) {
  SamplingParams p;
  p.temperature = 3.0f;
  EXPECT_EQ(std::string(ValidateSamplingParams(p, 10).message()),
            "temperature must be in [0, 2], got 3");
}

// ---------------------------------------------------------------------------------------------
// Greedy

TEST(SamplerTest, GreedyPicksArgmax) {
  SamplingParams p = Seeded(1);
  p.temperature = 0.0f;
  Sampler s(p, 4);
  std::vector<float> logits = {0.5f, 2.0f, -1.0f, 1.9f};
  EXPECT_EQ(s.Sample(logits, {}, {}).token, 1);
}

TEST(SamplerTest, GreedyTiesGoToLowestId) {
  SamplingParams p;  // unseeded: greedy must not depend on the seed.
  p.temperature = 0.0f;
  Sampler s(p, 5);
  std::vector<float> ties = {1.0f, 3.0f, 3.0f, 2.0f, 3.0f};
  EXPECT_EQ(s.Sample(ties, {}, {}).token, 1);
  std::vector<float> flat(5, 0.25f);
  EXPECT_EQ(s.Sample(flat, {}, {}).token, 0);
  std::vector<float> last = {-5.0f, -4.0f, -3.0f, -2.0f, -1.0f};
  EXPECT_EQ(s.Sample(last, {}, {}).token, 4);
}

// ---------------------------------------------------------------------------------------------
// Truncation filters: exact kept sets. With a fixed seed the draws are deterministic, and every
// kept token has probability >= 10% here, so thousands of draws see all of them.

TEST(SamplerTest, TopKKeepsExactlyTheKBest) {
  SamplingParams p = Seeded(7);
  p.top_k = 3;
  Sampler s(p, 6);
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 2.5f, 0.0f, 2.9f};
  EXPECT_EQ(Distinct(DrawMany(s, logits, 3000)), (std::set<int32_t>{1, 3, 5}));
}

TEST(SamplerTest, TopKBoundaryTiesGoToLowerIds) {
  SamplingParams p = Seeded(8);
  p.top_k = 2;
  Sampler s(p, 5);
  const std::vector<float> logits = {2.0f, 1.0f, 2.0f, 2.0f, 0.0f};
  EXPECT_EQ(Distinct(DrawMany(s, logits, 2000)), (std::set<int32_t>{0, 2}));
}

TEST(SamplerTest, TopKOfOneIsGreedy) {
  SamplingParams p = Seeded(9);
  p.top_k = 1;
  Sampler s(p, 4);
  const std::vector<float> logits = {0.0f, 0.1f, 0.05f, -0.2f};
  EXPECT_EQ(Distinct(DrawMany(s, logits, 500)), (std::set<int32_t>{1}));
}

TEST(SamplerTest, TopPKeepsSmallestPrefixReachingP) {
  // Sorted: id1 0.4, id3 0.3, id2 0.2, id0 0.1; cumulative 0.4, 0.7, 0.9, 1.0.
  const std::vector<float> logits = LogitsFromProbs({0.1, 0.4, 0.2, 0.3});
  const std::vector<std::pair<float, std::set<int32_t>>> cases = {
      {0.35f, {1}}, {0.6f, {1, 3}}, {0.75f, {1, 3, 2}}, {0.95f, {0, 1, 2, 3}}};
  for (const auto& [top_p, want] : cases) {
    SamplingParams p = Seeded(11);
    p.top_p = top_p;
    Sampler s(p, 4);
    EXPECT_EQ(Distinct(DrawMany(s, logits, 3000)), want) << "top_p " << top_p;
  }
}

TEST(SamplerTest, TopPRenormalizesOverTopK) {
  // top_k = 3 drops id0; over {0.4, 0.3, 0.2} / 0.9 the cumulative is 0.44, 0.78, 1.0, so
  // top_p = 0.75 keeps two tokens (without top_k it would keep three: 0.4, 0.7 < 0.75, 0.9).
  const std::vector<float> logits = LogitsFromProbs({0.1, 0.4, 0.2, 0.3});
  SamplingParams p = Seeded(12);
  p.top_k = 3;
  p.top_p = 0.75f;
  Sampler s(p, 4);
  EXPECT_EQ(Distinct(DrawMany(s, logits, 3000)), (std::set<int32_t>{1, 3}));
}

TEST(SamplerTest, TopPOverLargeVocabularyGrowsThePrefix) {
  // 1000 tokens with logits falling by 0.01 each: top_p = 0.9 needs a prefix far longer than
  // the first 64 the sampler sorts, and ties broken by id in a flat distribution.
  const int vocab = 1000;
  std::vector<float> logits(vocab);
  for (int i = 0; i < vocab; ++i) logits[i] = -0.01f * static_cast<float>(i);
  double z = 0.0;
  for (const float l : logits) z += std::exp(static_cast<double>(l));
  double cum = 0.0;
  int want = 0;
  const double top_p = 0.9f;  // the float the sampler compares with, widened.
  while (cum < top_p * z) cum += std::exp(static_cast<double>(logits[want++]));
  ASSERT_GT(want, 64);
  SamplingParams p = Seeded(13);
  p.top_p = 0.9f;
  Sampler s(p, vocab);
  const std::vector<int32_t> drawn = DrawMany(s, logits, 20000);
  EXPECT_EQ(*std::max_element(drawn.begin(), drawn.end()), want - 1);

  std::vector<float> flat(vocab, 1.0f);
  p.top_p = 0.5f;
  Sampler f(p, vocab);
  const std::set<int32_t> kept = Distinct(DrawMany(f, flat, 10000));
  ASSERT_EQ(kept.size(), 500u);
  EXPECT_EQ(*kept.begin(), 0);
  EXPECT_EQ(*kept.rbegin(), 499);
}

TEST(SamplerTest, MinPKeepsTokensAboveFractionOfTheBest) {
  const std::vector<float> logits = LogitsFromProbs({0.5, 0.3, 0.15, 0.05});
  const std::vector<std::pair<float, std::set<int32_t>>> cases = {
      {0.05f, {0, 1, 2, 3}}, {0.2f, {0, 1, 2}}, {0.5f, {0, 1}}, {0.9f, {0}}};
  for (const auto& [min_p, want] : cases) {
    for (const int top_k : {0, 3}) {
      SamplingParams p = Seeded(14);
      p.min_p = min_p;
      p.top_k = top_k;
      Sampler s(p, 4);
      std::set<int32_t> expect = want;
      if (top_k == 3) expect.erase(3);
      EXPECT_EQ(Distinct(DrawMany(s, logits, 3000)), expect)
          << "min_p " << min_p << " top_k " << top_k;
    }
  }
}

TEST(SamplerTest, MinPIsScaledByTemperature) {
  // At temperature 2 the probabilities flatten: weights relative to the best are
  // sqrt(p / 0.5) = 1, 0.77, 0.55, 0.32, so min_p = 0.5 keeps three tokens instead of two.
  const std::vector<float> logits = LogitsFromProbs({0.5, 0.3, 0.15, 0.05});
  SamplingParams p = Seeded(15);
  p.min_p = 0.5f;
  p.temperature = 2.0f;
  Sampler s(p, 4);
  EXPECT_EQ(Distinct(DrawMany(s, logits, 3000)), (std::set<int32_t>{0, 1, 2}));
}

// ---------------------------------------------------------------------------------------------
// Distribution and seeds

// Chi-square statistic of `counts` against softmax(logits / temperature) over `n` draws.
double ChiSquare(const std::vector<float>& logits, float temperature,
                 const std::vector<int32_t>& drawn) {
  std::vector<double> scaled;
  for (const float l : logits) scaled.push_back(l / temperature);
  double m = *std::max_element(scaled.begin(), scaled.end());
  double z = 0.0;
  for (const double v : scaled) z += std::exp(v - m);
  std::vector<int> counts(logits.size(), 0);
  for (const int32_t t : drawn) counts[t]++;
  double chi2 = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double expected = std::exp(scaled[i] - m) / z * static_cast<double>(drawn.size());
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return chi2;
}

TEST(SamplerTest, FrequenciesMatchTemperatureScaledSoftmax) {
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f, 0.5f, -1.0f, 1.5f};
  // 5 degrees of freedom: P(chi2 > 20.5) = 0.001. Fixed seeds make this deterministic.
  for (const float t : {0.7f, 1.0f, 1.6f}) {
    SamplingParams p = Seeded(2024);
    p.temperature = t;
    Sampler s(p, 6);
    const std::vector<int32_t> drawn = DrawMany(s, logits, 60000);
    EXPECT_LT(ChiSquare(logits, t, drawn), 20.5) << "temperature " << t;
  }
}

TEST(SamplerTest, FrequenciesWithTopKMatchRenormalizedSoftmax) {
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f, 0.5f, -1.0f, 1.5f};
  SamplingParams p = Seeded(99);
  p.top_k = 4;  // keeps ids 2, 5, 1, 3.
  Sampler s(p, 6);
  const std::vector<int32_t> drawn = DrawMany(s, logits, 60000);
  std::vector<int32_t> mapped;
  const std::map<int32_t, int32_t> index = {{2, 0}, {5, 1}, {1, 2}, {3, 3}};
  for (const int32_t t : drawn) {
    ASSERT_TRUE(index.count(t)) << t;
    mapped.push_back(index.at(t));
  }
  EXPECT_LT(ChiSquare({2.0f, 1.5f, 1.0f, 0.5f}, 1.0f, mapped), 16.3);  // 3 dof, p = 0.001.
}

TEST(SamplerTest, SameSeedSameSequence) {
  const std::vector<float> logits = {0.3f, 1.0f, 0.2f, 0.9f, 0.5f, 0.0f, 0.8f, 0.4f};
  SamplingParams p = Seeded(42);
  p.top_p = 0.95f;
  p.temperature = 0.9f;
  Sampler a(p, 8), b(p, 8);
  const std::vector<int32_t> sa = DrawMany(a, logits, 1000);
  EXPECT_EQ(sa, DrawMany(b, logits, 1000));
  Sampler c(Seeded(43), 8);
  const std::vector<int32_t> sc = DrawMany(c, logits, 1000);
  EXPECT_NE(sa, sc);
  EXPECT_EQ(a.seed(), 42u);
}

TEST(SamplerTest, SkipSampleStandsForOneDraw) {
  const std::vector<float> logits = {0.3f, 1.0f, 0.2f, 0.9f, 0.5f, 0.0f, 0.8f, 0.4f};
  SamplingParams p = Seeded(7);
  p.temperature = 1.0f;
  Sampler a(p, 8), b(p, 8);
  const std::vector<int32_t> sa = DrawMany(a, logits, 200);
  b.SkipSample();  // as the decode node does for the token the prefill node sampled
  const std::vector<int32_t> sb = DrawMany(b, logits, 199);
  EXPECT_EQ(std::vector<int32_t>(sa.begin() + 1, sa.end()), sb);
  // Greedy sampling draws nothing, so skipping changes nothing.
  SamplingParams g = Seeded(7);
  g.temperature = 0.0f;
  Sampler c(g, 8), d(g, 8);
  d.SkipSample();
  EXPECT_EQ(DrawMany(c, logits, 10), DrawMany(d, logits, 10));
}

TEST(SamplerTest, UnseededSamplersUseDifferentSeeds) {
  Sampler a(SamplingParams{}, 4), b(SamplingParams{}, 4);
  EXPECT_NE(a.seed(), b.seed());  // 2^-64 odds of a false failure.
}

TEST(SamplerTest, SequenceIsPinnedAcrossPlatforms) {
  // From tests/reference/sampler_reference.py, an independent Python model of splitmix64 +
  // xoshiro256**, the 53-bit uniform, SamplingExp and the draw. A change here breaks the
  // reproducibility of every seeded request.
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f, 3.0f, 0.5f, -1.0f};
  Sampler s(Seeded(1234), 6);
  EXPECT_THAT(DrawMany(s, logits, 24), ElementsAreArray({1, 3, 3, 3, 1, 3, 3, 2, 3, 3, 3, 2,
                                                         2, 3, 3, 3, 3, 4, 4, 3, 3, 2, 3, 1}));
}

TEST(SamplerTest, TopPSequenceIsPinnedAcrossPlatforms) {
  // Same model (tests/reference/sampler_reference.py), with temperature and top_p over the
  // whole vocabulary (tokens ordered by logit, ties by id, then drawn in that order).
  const std::vector<float> logits = {0.25f, 1.5f, -0.5f, 1.25f, 2.0f,
                                     0.75f, 1.5f, -2.0f, 0.0f,  1.0f};
  SamplingParams p = Seeded(777);
  p.temperature = 0.7f;
  p.top_p = 0.8f;
  Sampler s(p, 10);
  EXPECT_THAT(DrawMany(s, logits, 30),
              ElementsAreArray({3, 4, 3, 1, 3, 4, 6, 1, 3, 1, 4, 3, 4, 4, 1,
                                4, 4, 6, 4, 3, 4, 4, 1, 3, 4, 6, 1, 6, 4, 4}));
}

TEST(SamplerTest, BlockedSumsArePinnedOverALargerVocabulary) {
  // Same model again (large_logits, block_sums, pick_blocked in sampler_reference.py): 300
  // tokens are four blocks of 64 summed side by side, then a short block of 44, so the draws
  // pin the scan over the block sums and then within a block, and the total (the order of the
  // additions moves only the last bits, which a draw sees about once in 2^50).
  std::vector<float> logits(300);
  for (int i = 0; i < 300; ++i) logits[i] = static_cast<float>(((i * 37) % 101) / 25.0 - 2.0);
  SamplingParams p = Seeded(99);
  p.temperature = 0.8f;
  Sampler s(p, 300);
  EXPECT_THAT(DrawMany(s, logits, 40),
              ElementsAreArray({106, 168, 117, 256, 234, 60,  84,  19,  251, 174, 221, 51, 46, 38,
                                120, 155, 60,  270, 46,  228, 131, 87,  256, 191, 199, 30, 98, 87,
                                185, 49,  19,  2,   30,  240, 215, 147, 270, 299, 46,  294}));
  // top_p over the whole vocabulary measures the nucleus against the blocked total.
  p = Seeded(5);
  p.temperature = 1.3f;
  p.top_p = 0.5f;
  Sampler t(p, 300);
  EXPECT_THAT(
      DrawMany(t, logits, 40),
      ElementsAreArray({251, 57,  87,  106, 98,  177, 270, 5,   8,   109, 54,  49,  281, 147,
                        128, 237, 16,  106, 169, 218, 180, 240, 232, 65,  158, 136, 292, 262,
                        27,  5,   289, 281, 248, 109, 128, 57,  109, 259, 150, 229}));
}

// ---------------------------------------------------------------------------------------------
// Penalties and bias

TEST(SamplerTest, PenaltiesExactArithmetic) {
  SamplingParams p = Seeded(1);
  p.temperature = 0.0f;
  p.repetition_penalty = 2.0f;
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.25f;
  Sampler s(p, 5);
  std::vector<float> logits = {2.0f, -2.0f, 1.0f, 0.5f, 3.0f};
  const std::vector<int32_t> prompt = {0, 1, 0, 77, -3};  // duplicates and stray ids.
  const std::vector<int32_t> generated = {2, 2, 1, 100};
  s.Sample(logits, prompt, generated);
  // Repetition over prompt + generated, once per distinct token: 0: 2/2, 1: -2*2, 2: 1/2.
  // Then generated counts {2: 2, 1: 1}: 2: 0.5 - (2*0.5 + 0.25); 1: -4 - (0.5 + 0.25).
  EXPECT_THAT(logits, ElementsAre(1.0f, -4.75f, -0.75f, 0.5f, 3.0f));
}

TEST(SamplerTest, FrequencyAndPresenceIgnoreThePrompt) {
  SamplingParams p = Seeded(1);
  p.frequency_penalty = 1.0f;
  p.presence_penalty = 1.0f;
  Sampler s(p, 3);
  std::vector<float> logits = {1.0f, 1.0f, 1.0f};
  const std::vector<int32_t> prompt = {0, 0, 0};
  const std::vector<int32_t> generated = {1};
  s.Sample(logits, prompt, generated);
  EXPECT_THAT(logits, ElementsAre(1.0f, -1.0f, 1.0f));
}

TEST(SamplerTest, NegativePenaltiesEncourage) {
  SamplingParams p = Seeded(1);
  p.presence_penalty = -1.5f;
  Sampler s(p, 3);
  std::vector<float> logits = {0.0f, 0.0f, 0.0f};
  const std::vector<int32_t> generated = {2, 2};
  s.Sample(logits, {}, generated);
  EXPECT_THAT(logits, ElementsAre(0.0f, 0.0f, 1.5f));
}

TEST(SamplerTest, PenaltiesChangeTheGreedyChoice) {
  SamplingParams p = Seeded(1);
  p.temperature = 0.0f;
  p.repetition_penalty = 1.5f;
  Sampler s(p, 3);
  std::vector<float> logits = {3.0f, 2.5f, 0.0f};
  const std::vector<int32_t> prompt = {0};
  EXPECT_EQ(s.Sample(logits, prompt, {}).token, 1);  // 3 / 1.5 = 2 < 2.5.
}

TEST(SamplerTest, LogitBiasBansAndForces) {
  const std::vector<float> flat = {0.0f, 0.0f, 0.0f, 0.0f};
  SamplingParams ban = Seeded(5);
  ban.logit_bias = {{1, -100.0f}, {3, -100.0f}};
  Sampler banned(ban, 4);
  EXPECT_EQ(Distinct(DrawMany(banned, flat, 1000)), (std::set<int32_t>{0, 2}));

  SamplingParams force = Seeded(6);
  force.logit_bias = {{2, 100.0f}};
  force.temperature = 2.0f;
  Sampler forced(force, 4);
  const std::vector<float> skewed = {10.0f, 5.0f, 0.0f, 8.0f};
  EXPECT_EQ(Distinct(DrawMany(forced, skewed, 1000)), (std::set<int32_t>{2}));

  force.temperature = 0.0f;
  Sampler greedy(force, 4);
  std::vector<float> l = skewed;
  EXPECT_EQ(greedy.Sample(l, {}, {}).token, 2);
  EXPECT_EQ(l[2], 100.0f);  // applied in place.
}

// ---------------------------------------------------------------------------------------------
// Logprobs

TEST(SamplerTest, LogprobsAreTheBiasedModelDistribution) {
  const std::vector<float> logits = {1.0f, 3.0f, -2.0f, 2.5f, 0.0f, 2.9f, -1.0f};
  for (const float t : {0.0f, 0.3f, 1.0f}) {
    SamplingParams p = Seeded(3);
    p.temperature = t;
    p.logprobs = true;
    p.top_logprobs = 4;
    p.logit_bias = {{0, 1.5f}};
    Sampler s(p, 7);
    std::vector<float> l = logits;
    const SampleResult r = s.Sample(l, {}, {});
    std::vector<float> biased = logits;
    biased[0] += 1.5f;
    const std::vector<double> want = LogSoftmax(biased);  // temperature does not enter.
    EXPECT_NEAR(r.logprob, want[r.token], 1e-5);
    ASSERT_EQ(r.top_logprobs.size(), 4u);
    // Logits 3, 2.9, then 2.5 twice (id 0 after its bias): the tie goes to the lower id.
    const std::vector<int32_t> order = {1, 5, 0, 3};
    double mass = 0.0;
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_EQ(r.top_logprobs[i].token, order[i]);
      EXPECT_NEAR(r.top_logprobs[i].logprob, want[order[i]], 1e-5);
      if (i > 0) {
        EXPECT_GE(r.top_logprobs[i - 1].logprob, r.top_logprobs[i].logprob);
      }
      mass += std::exp(r.top_logprobs[i].logprob);
    }
    EXPECT_LT(mass, 1.0);
    EXPECT_GT(mass, 0.9);
  }
}

TEST(SamplerTest, TopLogprobsCappedByVocabulary) {
  SamplingParams p = Seeded(3);
  p.logprobs = true;
  p.top_logprobs = 20;
  Sampler s(p, 3);
  std::vector<float> l = {0.0f, 0.0f, 0.0f};
  const SampleResult r = s.Sample(l, {}, {});
  ASSERT_EQ(r.top_logprobs.size(), 3u);
  double mass = 0.0;
  for (const TokenLogprob& t : r.top_logprobs) mass += std::exp(t.logprob);
  EXPECT_NEAR(mass, 1.0, 1e-6);
  EXPECT_EQ(r.top_logprobs[0].token, 0);  // ties to the lower id.
}

// Tokens banned with -inf (JSON mode) have probability 0 and are not listed as alternatives
// (their logprob would be -inf, which JSON cannot carry).
TEST(SamplerTest, TopLogprobsLeaveOutImpossibleTokens) {
  SamplingParams p = Seeded(3);
  p.logprobs = true;
  p.top_logprobs = 5;
  Sampler s(p, 6);
  const float ninf = -std::numeric_limits<float>::infinity();
  std::vector<float> l = {ninf, 1.0f, ninf, 2.0f, ninf, ninf};
  const SampleResult r = s.Sample(l, {}, {});
  ASSERT_EQ(r.top_logprobs.size(), 2u);
  EXPECT_EQ(r.top_logprobs[0].token, 3);
  EXPECT_EQ(r.top_logprobs[1].token, 1);
  EXPECT_TRUE(r.token == 1 || r.token == 3);
  EXPECT_TRUE(std::isfinite(r.logprob));
}

TEST(SamplerTest, NoLogprobsUnlessAsked) {
  Sampler s(Seeded(3), 3);
  std::vector<float> l = {0.0f, 1.0f, 2.0f};
  const SampleResult r = s.Sample(l, {}, {});
  EXPECT_TRUE(r.top_logprobs.empty());
  EXPECT_EQ(r.logprob, 0.0f);
}

// ---------------------------------------------------------------------------------------------
// A realistic vocabulary

TEST(SamplerTest, LargeVocabularyTopKStaysInTopK) {
  const int vocab = 151936;
  std::vector<float> logits(vocab);
  uint64_t x = 88172645463325252ull;  // xorshift64 for test data.
  for (float& l : logits) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    l = static_cast<float>(static_cast<double>(x >> 11) * 0x1.0p-53 * 20.0 - 10.0);
  }
  std::vector<float> sorted = logits;
  std::nth_element(sorted.begin(), sorted.begin() + 39, sorted.end(), std::greater<float>());
  const float fortieth = sorted[39];
  SamplingParams p = Seeded(17);
  p.top_k = 40;
  p.top_p = 0.9f;
  p.temperature = 0.8f;
  p.min_p = 0.01f;
  Sampler s(p, vocab);
  for (int i = 0; i < 50; ++i) {
    std::vector<float> l = logits;
    const int32_t t = s.Sample(l, {}, {}).token;
    EXPECT_GE(logits[t], fortieth);
  }
  // And without top_k: top_p over the full vocabulary.
  p.top_k = 0;
  p.min_p = 0.0f;
  Sampler full(p, vocab);
  std::vector<float> l = logits;
  const int32_t t = full.Sample(l, {}, {}).token;
  EXPECT_GE(t, 0);
  EXPECT_LT(t, vocab);
}

}  // namespace
}  // namespace crescent::engine
