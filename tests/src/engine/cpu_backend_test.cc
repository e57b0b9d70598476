#include "src/engine/cpu_backend.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "src/common/clock.h"
#include "src/engine/kv_cache.h"
#include "src/model/gguf.h"
#include "src/model/model_config.h"
#include "src/model/model_weights.h"
#include "tests/testing/tiny_model.h"

namespace crescent::engine {
namespace {

using kernels::GgmlType;

struct Fixture {
  std::unique_ptr<model::GgufFile> file;
  model::ModelConfig config;
  model::ModelWeights weights;
  std::unique_ptr<CpuBackend> backend;
  std::unique_ptr<KvCache> cache;

  explicit Fixture(const testing::TinyModelOptions& o, int threads = 2, int block_tokens = 4) {
    file = *model::GgufFile::FromBuffer(testing::MakeTinyModelGguf(o));
    config = *model::ModelConfigFromGguf(*file);
    weights = *model::LoadModelWeights(*file, config);
    backend = *CpuBackend::Create(config, weights, threads);
    KvCacheConfig kc{config.n_layers, config.n_kv_heads, config.head_dim, block_tokens, 128};
    cache = *KvCache::Create(kc);
  }

  std::vector<KvCache::BlockId> Blocks(int64_t positions) {
    std::vector<KvCache::BlockId> blocks;
    int bt = cache->config().block_tokens;
    for (int64_t i = 0; i < (positions + bt - 1) / bt; ++i) blocks.push_back(cache->Allocate());
    return blocks;
  }

  // Logits of every position of `tokens`, computed in one call.
  std::vector<float> AllLogits(const std::vector<int32_t>& tokens) {
    auto blocks = Blocks(static_cast<int64_t>(tokens.size()));
    SequenceBatch s{tokens, 0, blocks, LogitsMode::kAll};
    std::vector<float> logits;
    EXPECT_TRUE(backend->Forward(std::span(&s, 1), cache.get(), nullptr, &logits).ok());
    for (auto b : blocks) cache->Unref(b);
    return logits;
  }
};

std::vector<int32_t> RandomTokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

void ExpectClose(std::span<const float> a, std::span<const float> b, float tol,
                 const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  float max_abs = 0;
  for (float x : b) max_abs = std::max(max_abs, std::fabs(x));
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_NEAR(a[i], b[i], tol * std::max(1.0f, max_abs)) << what << " at " << i;
  }
}

class CpuBackendTest : public ::testing::TestWithParam<GgmlType> {};

TEST_P(CpuBackendTest, IncrementalDecodeMatchesWholeSequence) {
  testing::TinyModelOptions o;
  o.weight_type = GetParam();
  Fixture f(o);
  const int vocab = f.config.vocab_size;
  auto tokens = RandomTokens(23, vocab, 7);
  std::vector<float> all = f.AllLogits(tokens);

  // Same tokens one at a time (decode steps), pages shared across calls.
  auto blocks = f.Blocks(23);
  std::vector<float> logits;
  for (int i = 0; i < 23; ++i) {
    SequenceBatch s{std::span(tokens).subspan(i, 1), i, blocks, LogitsMode::kLast};
    ASSERT_TRUE(f.backend->Forward(std::span(&s, 1), f.cache.get(), nullptr, &logits).ok());
    ExpectClose(logits, std::span(all).subspan(static_cast<size_t>(i) * vocab, vocab), 2e-3f,
                "position " + std::to_string(i));
  }
}

TEST_P(CpuBackendTest, ChunkedPrefillMatchesWhole) {
  testing::TinyModelOptions o;
  o.weight_type = GetParam();
  Fixture f(o);
  const int vocab = f.config.vocab_size;
  auto tokens = RandomTokens(37, vocab, 9);
  std::vector<float> all = f.AllLogits(tokens);
  auto blocks = f.Blocks(37);
  std::vector<float> logits;
  for (auto [b, e] : {std::pair{0, 10}, {10, 11}, {11, 29}, {29, 37}}) {
    SequenceBatch s{std::span(tokens).subspan(b, e - b), b, blocks, LogitsMode::kLast};
    ASSERT_TRUE(f.backend->Forward(std::span(&s, 1), f.cache.get(), nullptr, &logits).ok());
    ExpectClose(logits, std::span(all).subspan(static_cast<size_t>(e - 1) * vocab, vocab), 2e-3f,
                "chunk ending at " + std::to_string(e));
  }
}

TEST_P(CpuBackendTest, BatchOfSequencesMatchesEachAlone) {
  testing::TinyModelOptions o;
  o.weight_type = GetParam();
  Fixture f(o);
  const int vocab = f.config.vocab_size;
  std::vector<std::vector<int32_t>> prompts = {
      RandomTokens(5, vocab, 1), RandomTokens(17, vocab, 2), RandomTokens(1, vocab, 3),
      RandomTokens(9, vocab, 4)};
  std::vector<std::vector<float>> alone;
  for (const auto& p : prompts) {
    auto all = f.AllLogits(p);
    alone.emplace_back(all.end() - vocab, all.end());
  }
  std::vector<std::vector<KvCache::BlockId>> tables;
  std::vector<SequenceBatch> batch;
  for (const auto& p : prompts) tables.push_back(f.Blocks(static_cast<int64_t>(p.size())));
  for (size_t i = 0; i < prompts.size(); ++i) {
    batch.push_back({prompts[i], 0, tables[i], LogitsMode::kLast});
  }
  std::vector<float> logits;
  ASSERT_TRUE(f.backend->Forward(batch, f.cache.get(), nullptr, &logits).ok());
  ASSERT_EQ(logits.size(), prompts.size() * vocab);
  for (size_t i = 0; i < prompts.size(); ++i) {
    ExpectClose(std::span(logits).subspan(i * vocab, vocab), alone[i], 2e-3f,
                "sequence " + std::to_string(i));
  }
}

TEST_P(CpuBackendTest, SharedPrefixBlocksAreReusedWithoutRecompute) {
  testing::TinyModelOptions o;
  o.weight_type = GetParam();
  Fixture f(o, 2, /*block_tokens=*/4);
  const int vocab = f.config.vocab_size;
  auto prefix = RandomTokens(8, vocab, 11);  // two full blocks
  auto a = prefix, b = prefix;
  for (int32_t t : RandomTokens(6, vocab, 12)) a.push_back(t);
  for (int32_t t : RandomTokens(3, vocab, 13)) b.push_back(t);
  auto b_alone = f.AllLogits(b);

  auto table_a = f.Blocks(static_cast<int64_t>(a.size()));
  SequenceBatch sa{a, 0, table_a, LogitsMode::kNone};
  std::vector<float> logits;
  ASSERT_TRUE(f.backend->Forward(std::span(&sa, 1), f.cache.get(), nullptr, &logits).ok());
  EXPECT_TRUE(logits.empty());
  // b reuses a's two prefix blocks by reference and computes only its own suffix.
  std::vector<KvCache::BlockId> table_b = {table_a[0], table_a[1]};
  f.cache->Ref(table_a[0]);
  f.cache->Ref(table_a[1]);
  table_b.push_back(f.cache->Allocate());
  SequenceBatch sb{std::span(b).subspan(8), 8, table_b, LogitsMode::kLast};
  ASSERT_TRUE(f.backend->Forward(std::span(&sb, 1), f.cache.get(), nullptr, &logits).ok());
  ExpectClose(logits, std::span(b_alone).subspan(b_alone.size() - vocab), 2e-3f, "shared prefix");
}

INSTANTIATE_TEST_SUITE_P(WeightTypes, CpuBackendTest,
                         ::testing::Values(GgmlType::kF32, GgmlType::kF16, GgmlType::kQ8_0,
                                           GgmlType::kQ4_1, GgmlType::kQ4_0),
                         [](const auto& info) {
                           return std::string(kernels::GetTypeInfo(info.param).name);
                         });

TEST(CpuBackendQwen2Test, BiasAndNeoxRopeAreConsistent) {
  testing::TinyModelOptions o;
  o.arch = "qwen2";
  Fixture f(o);
  EXPECT_TRUE(f.config.qkv_bias);
  EXPECT_EQ(f.config.rope_style, model::RopeStyle::kNeox);
  const int vocab = f.config.vocab_size;
  auto tokens = RandomTokens(12, vocab, 5);
  auto all = f.AllLogits(tokens);
  auto blocks = f.Blocks(12);
  std::vector<float> logits;
  for (int i = 0; i < 12; ++i) {
    SequenceBatch s{std::span(tokens).subspan(i, 1), i, blocks, LogitsMode::kLast};
    ASSERT_TRUE(f.backend->Forward(std::span(&s, 1), f.cache.get(), nullptr, &logits).ok());
    ExpectClose(logits, std::span(all).subspan(static_cast<size_t>(i) * vocab, vocab), 2e-3f,
                "position " + std::to_string(i));
  }
}

// CRESCENT_HUGE_WEIGHTS=1 makes the backend read copies of the matrices in huge pages: the
// same bytes, so the same logits, bit for bit.
TEST(CpuBackendHugePagesTest, CopiedWeightsGiveIdenticalLogits) {
  testing::TinyModelOptions o;
  o.weight_type = GgmlType::kQ4_1;
  Fixture plain(o);
  ASSERT_EQ(setenv("CRESCENT_HUGE_WEIGHTS", "1", 1), 0);
  Fixture copied(o);
  unsetenv("CRESCENT_HUGE_WEIGHTS");
  auto tokens = RandomTokens(9, plain.config.vocab_size, 11);
  EXPECT_EQ(plain.AllLogits(tokens), copied.AllLogits(tokens));
}

// On AVX-512 VNNI the backend repacks the matrices it streams: Q4_1 and Q8_0 ones whose rows
// are a multiple of 16 to kernels::MatrixLayout::kRows16, the others to kGroup8
// (CRESCENT_REPACK_WEIGHTS=0 turns that off, =group8 takes every one to kGroup8, as here).
// kGroup8 is a faster encoding of the same weights, so the same logits, bit for bit. Rows of
// 512 values have two full groups of 8 blocks; the output matrix is tied to the embeddings,
// which must keep being read in GGUF layout. (Without AVX-512 VNNI both sides read the file's
// layout and the test shows nothing.)
TEST(CpuBackendRepackTest, RepackedWeightsGiveIdenticalLogits) {
  for (GgmlType type : {GgmlType::kQ4_1, GgmlType::kQ8_0}) {
    testing::TinyModelOptions o;
    o.weight_type = type;
    o.n_embd = 512;
    o.n_heads = 8;
    o.n_ff = 768;
    ASSERT_EQ(setenv("CRESCENT_REPACK_WEIGHTS", "group8", 1), 0);
    Fixture repacked(o);
    ASSERT_EQ(setenv("CRESCENT_REPACK_WEIGHTS", "0", 1), 0);
    Fixture plain(o);
    unsetenv("CRESCENT_REPACK_WEIGHTS");
    auto tokens = RandomTokens(9, plain.config.vocab_size, 12);
    EXPECT_EQ(repacked.AllLogits(tokens), plain.AllLogits(tokens))
        << kernels::GetTypeInfo(type).name;
    // Decode steps (batch 1) too.
    auto blocks_r = repacked.Blocks(12), blocks_p = plain.Blocks(12);
    for (int i = 0; i < 12; ++i) {
      std::vector<float> lr, lp;
      SequenceBatch sr{std::span(tokens).subspan(i % 9, 1), i, blocks_r, LogitsMode::kLast};
      SequenceBatch sp{std::span(tokens).subspan(i % 9, 1), i, blocks_p, LogitsMode::kLast};
      ASSERT_TRUE(
          repacked.backend->Forward(std::span(&sr, 1), repacked.cache.get(), nullptr, &lr).ok());
      ASSERT_TRUE(plain.backend->Forward(std::span(&sp, 1), plain.cache.get(), nullptr, &lp).ok());
      ASSERT_EQ(lr, lp) << kernels::GetTypeInfo(type).name << " step " << i;
    }
  }
}

// kRows16 (the backend's default for Q4_1 and Q8_0 matrices whose rows are multiples of 16 on
// AVX-512 VNNI) rounds its sums in another order than the file's layout: logits within float
// rounding of the unpacked backend's, and within the repacked backend still the same bits whether a
// position comes in a prefill of many tokens or a decode step of one (the engine's chunking and
// batching rely on it).
TEST(CpuBackendRepackTest, Rows16WeightsGiveTheSameLogitsWithinRoundingAndAnyChunking) {
  for (GgmlType type : {GgmlType::kQ4_1, GgmlType::kQ8_0}) {
    SCOPED_TRACE(kernels::GetTypeInfo(type).name);
    testing::TinyModelOptions o;
    o.weight_type = type;
    o.n_embd = 512;
    o.n_heads = 8;
    o.n_ff = 768;
    Fixture repacked(o);
    ASSERT_EQ(setenv("CRESCENT_REPACK_WEIGHTS", "0", 1), 0);
    Fixture plain(o);
    unsetenv("CRESCENT_REPACK_WEIGHTS");
    auto tokens = RandomTokens(9, plain.config.vocab_size, 13);
    const std::vector<float> all_r = repacked.AllLogits(tokens);
    // Float rounding alone moves these logits by ~1e-7 of the largest, but the next layer
    // quantizes its input to 8 bits a block: a value that lands on a rounding boundary can flip
    // its code, a step of 1/127 of its block's largest value, which the layers after carry (here
    // from position 5 on, ~0.2 % of the largest logit).
    ExpectClose(all_r, plain.AllLogits(tokens), 5e-3f, "kRows16 against the GGUF layout");
    const int64_t vocab = plain.config.vocab_size;
    auto blocks = repacked.Blocks(9);
    for (int i = 0; i < 9; ++i) {
      std::vector<float> step;
      SequenceBatch s{std::span(tokens).subspan(i, 1), i, blocks, LogitsMode::kLast};
      ASSERT_TRUE(
          repacked.backend->Forward(std::span(&s, 1), repacked.cache.get(), nullptr, &step).ok());
      ASSERT_EQ(step,
                std::vector<float>(all_r.begin() + i * vocab, all_r.begin() + (i + 1) * vocab))
          << "position " << i;
    }
  }
}

TEST(CpuBackendValidationTest, LayerHookRunsOncePerLayerInOrder) {
  Fixture f({});
  auto tokens = RandomTokens(6, f.config.vocab_size, 3);
  auto blocks = f.Blocks(6);
  std::vector<int> layers;
  LayerHook hook = [&](int layer) { layers.push_back(layer); };
  SequenceBatch s{tokens, 0, blocks, LogitsMode::kLast};
  std::vector<float> logits;
  ASSERT_TRUE(f.backend->Forward(std::span(&s, 1), f.cache.get(), &hook, &logits).ok());
  std::vector<int> expected(f.config.n_layers);
  std::iota(expected.begin(), expected.end(), 0);
  EXPECT_EQ(layers, expected);
}

TEST(CpuBackendValidationTest, RejectsBadInputWithoutWriting) {
  Fixture f({});
  std::vector<float> logits;
  auto blocks = f.Blocks(8);
  std::vector<int32_t> bad_token = {1, 2, f.config.vocab_size};
  SequenceBatch s{bad_token, 0, blocks, LogitsMode::kLast};
  absl::Status st = f.backend->Forward(std::span(&s, 1), f.cache.get(), nullptr, &logits);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("outside the vocabulary"), std::string::npos) << st;

  std::vector<int32_t> ten(10, 1);
  SequenceBatch short_table{ten, 0, std::span(blocks).subspan(0, 2), LogitsMode::kLast};
  st = f.backend->Forward(std::span(&short_table, 1), f.cache.get(), nullptr, &logits);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("KV blocks"), std::string::npos) << st;

  SequenceBatch past_context{ten, f.config.context_length - 5, blocks, LogitsMode::kLast};
  st = f.backend->Forward(std::span(&past_context, 1), f.cache.get(), nullptr, &logits);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("context"), std::string::npos) << st;

  std::vector<int32_t> empty;
  SequenceBatch none{empty, 0, blocks, LogitsMode::kLast};
  EXPECT_FALSE(f.backend->Forward(std::span(&none, 1), f.cache.get(), nullptr, &logits).ok());
}

// Each reading is one microsecond after the previous one.
class TickingClock final : public Clock {
 public:
  int64_t NowNanos() const override { return 1000 * ++reads_; }

 private:
  mutable std::atomic<int64_t> reads_{0};
};

TEST(CpuBackendPhasesTest, EachLayerPhaseIsTimedOnceAndTheTotalCoversThem) {
  Fixture f({});
  TickingClock clock;
  ForwardPhases phases;
  f.backend->MeasurePhases(&phases, &clock);
  const std::vector<int32_t> tokens = RandomTokens(5, f.config.vocab_size, 4);
  const std::vector<float> measured = f.AllLogits(tokens);
  // One tick per phase per layer, one for the logits; the total adds the reading at the start,
  // the one after the embeddings and the one after each layer's hook.
  const double tick = 1e-6, layers = f.config.n_layers;
  EXPECT_EQ(phases.calls, 1);
  for (double v :
       {phases.qkv, phases.attention, phases.attn_output, phases.ffn_gate_up, phases.ffn_down}) {
    EXPECT_NEAR(v, layers * tick, 1e-12);
  }
  EXPECT_NEAR(phases.logits, tick, 1e-12);
  EXPECT_NEAR(phases.total, (6 * layers + 3) * tick, 1e-12);

  // Measuring changes nothing computed; off again, nothing is added.
  f.backend->MeasurePhases(nullptr);
  EXPECT_EQ(f.AllLogits(tokens), measured);
  EXPECT_EQ(phases.calls, 1);

  // A call rejected before it runs the model adds nothing.
  f.backend->MeasurePhases(&phases, &clock);
  auto blocks = f.Blocks(4);
  std::vector<int32_t> bad = {1, f.config.vocab_size};
  SequenceBatch s{bad, 0, blocks, LogitsMode::kLast};
  std::vector<float> logits;
  EXPECT_FALSE(f.backend->Forward(std::span(&s, 1), f.cache.get(), nullptr, &logits).ok());
  EXPECT_EQ(phases.calls, 1);
  EXPECT_NEAR(phases.total, (6 * layers + 3) * tick, 1e-12);
  for (auto b : blocks) f.cache->Unref(b);
}

}  // namespace
}  // namespace crescent::engine
