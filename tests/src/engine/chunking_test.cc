// Rows of the batched forward pass are computed independently of how a prompt is split into
// chunks and of which other sequences share the batch: the last-token logits must be
// bit-identical across chunkings and batch compositions (the serving engine's recompute and
// prefix caching, and the prefill/decode split of the cluster, rely on it).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "src/engine/cpu_backend.h"
#include "src/engine/kv_cache.h"
#include "src/engine/loaded_model.h"
#include "src/model/gguf.h"
#include "src/model/model_config.h"
#include "src/model/model_weights.h"
#include "tests/testing/tiny_model.h"

namespace crescent::engine {
namespace {

// One model, backend and cache; computes last-token logits of prompts in chunks.
class Harness {
 public:
  Harness(const model::ModelConfig& config, const model::ModelWeights& weights, int threads,
          int block_tokens, int64_t num_blocks)
      : config_(config) {
    backend_ = *CpuBackend::Create(config, weights, threads);
    KvCacheConfig kc{config.n_layers, config.n_kv_heads, config.head_dim, block_tokens, num_blocks};
    cache_ = *KvCache::Create(kc);
  }

  std::vector<KvCache::BlockId> Blocks(int64_t positions) {
    std::vector<KvCache::BlockId> blocks;
    const int bt = cache_->config().block_tokens;
    for (int64_t i = 0; i < (positions + bt - 1) / bt; ++i) blocks.push_back(cache_->Allocate());
    return blocks;
  }
  void Free(const std::vector<KvCache::BlockId>& blocks) {
    for (KvCache::BlockId b : blocks) cache_->Unref(b);
  }

  // Logits of the last token of `tokens`, computed in chunks of `chunk` tokens, each chunk
  // alone in its Forward call.
  std::vector<float> Chunked(const std::vector<int32_t>& tokens, int chunk) {
    auto blocks = Blocks(static_cast<int64_t>(tokens.size()));
    std::vector<float> logits;
    for (size_t b = 0; b < tokens.size(); b += chunk) {
      const size_t e = std::min(tokens.size(), b + chunk);
      std::vector<int32_t> part(tokens.begin() + b, tokens.begin() + e);
      SequenceBatch s{part, static_cast<int64_t>(b), blocks,
                      e == tokens.size() ? LogitsMode::kLast : LogitsMode::kNone};
      absl::Status st = backend_->Forward(std::span(&s, 1), cache_.get(), nullptr, &logits);
      EXPECT_TRUE(st.ok()) << st;
    }
    Free(blocks);
    return logits;
  }

  // The same, but every Forward call also carries chunks of `others` (each its own sequence,
  // with its own chunk size), placed before and after the sequence of interest in the batch.
  // Returns the last-token logits of `tokens`.
  std::vector<float> Mixed(const std::vector<int32_t>& tokens, int chunk,
                           const std::vector<std::vector<int32_t>>& others,
                           const std::vector<int>& other_chunks) {
    auto blocks = Blocks(static_cast<int64_t>(tokens.size()));
    std::vector<std::vector<KvCache::BlockId>> other_blocks;
    std::vector<size_t> other_done(others.size(), 0);
    for (const auto& o : others) other_blocks.push_back(Blocks(static_cast<int64_t>(o.size())));
    std::vector<float> result;
    for (size_t b = 0; b < tokens.size(); b += chunk) {
      const size_t e = std::min(tokens.size(), b + chunk);
      std::vector<std::vector<int32_t>> parts;
      std::vector<SequenceBatch> batch;
      std::vector<size_t> which;  // index into others, or SIZE_MAX for ours
      parts.reserve(others.size() + 1);
      auto add_other = [&](size_t oi) {
        const size_t ob = other_done[oi];
        if (ob >= others[oi].size()) return;
        const size_t oe = std::min(others[oi].size(), ob + other_chunks[oi]);
        parts.emplace_back(others[oi].begin() + ob, others[oi].begin() + oe);
        batch.push_back({parts.back(), static_cast<int64_t>(ob), other_blocks[oi],
                         oi % 2 == 0 ? LogitsMode::kAll : LogitsMode::kLast});
        which.push_back(oi);
        other_done[oi] = oe;
      };
      if (!others.empty()) add_other(0);
      parts.emplace_back(tokens.begin() + b, tokens.begin() + e);
      batch.push_back({parts.back(), static_cast<int64_t>(b), blocks,
                       e == tokens.size() ? LogitsMode::kLast : LogitsMode::kNone});
      which.push_back(SIZE_MAX);
      for (size_t oi = 1; oi < others.size(); ++oi) add_other(oi);
      std::vector<float> logits;
      absl::Status st = backend_->Forward(batch, cache_.get(), nullptr, &logits);
      EXPECT_TRUE(st.ok()) << st;
      if (e == tokens.size()) {
        // Find our row among the output rows.
        int64_t out_row = 0;
        for (size_t i = 0; i < batch.size(); ++i) {
          if (which[i] == SIZE_MAX) break;
          out_row += batch[i].logits == LogitsMode::kAll
                         ? static_cast<int64_t>(batch[i].tokens.size())
                         : (batch[i].logits == LogitsMode::kLast ? 1 : 0);
        }
        const int64_t v = config_.vocab_size;
        result.assign(logits.begin() + out_row * v, logits.begin() + (out_row + 1) * v);
      }
    }
    Free(blocks);
    for (const auto& ob : other_blocks) Free(ob);
    return result;
  }

 private:
  const model::ModelConfig& config_;
  std::unique_ptr<CpuBackend> backend_;
  std::unique_ptr<KvCache> cache_;
};

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

std::vector<int32_t> RandomTokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
  return t;
}

// Checks chunkings 1..8 and one big chunk, and batch compositions, against one big chunk.
void CheckInvariance(Harness* h, const std::vector<int32_t>& prompt, int vocab) {
  const std::vector<float> ref = h->Chunked(prompt, 512);
  ASSERT_FALSE(ref.empty());
  for (int chunk : {1, 2, 3, 4, 5, 6, 7, 8, 512}) {
    const float diff = MaxAbsDiff(h->Chunked(prompt, chunk), ref);
    std::printf("chunk %3d: max |diff| = %g\n", chunk, diff);
    EXPECT_EQ(diff, 0.0f) << "chunk " << chunk;
  }
  const std::vector<std::vector<int32_t>> others = {RandomTokens(37, vocab, 7),
                                                    RandomTokens(150, vocab, 8)};
  for (int chunk : {1, 3, 8, 512}) {
    const float diff = MaxAbsDiff(h->Mixed(prompt, chunk, others, {5, 64}), ref);
    std::printf("chunk %3d with 2 other sequences: max |diff| = %g\n", chunk, diff);
    EXPECT_EQ(diff, 0.0f) << "chunk " << chunk << " batched with other sequences";
  }
}

struct TinyCase {
  testing::TinyModelOptions options;
  int threads;
  int block_tokens;
};

class TinyChunkingTest : public ::testing::TestWithParam<int> {};

TEST_P(TinyChunkingTest, LastLogitsIndependentOfChunkingAndBatch) {
  // Every weight type with 2 threads and pages of 4 positions (so that decode splits positions
  // over threads early), NeoX RoPE + QKV bias, pages of 16, and one thread.
  const std::vector<TinyCase> cases = [] {
    std::vector<TinyCase> c;
    testing::TinyModelOptions o;
    o.context_length = 512;
    for (kernels::GgmlType t :
         {kernels::GgmlType::kF32, kernels::GgmlType::kF16, kernels::GgmlType::kQ8_0,
          kernels::GgmlType::kQ4_0, kernels::GgmlType::kQ4_1}) {
      o.weight_type = t;
      c.push_back({o, 2, 4});
    }
    o.weight_type = kernels::GgmlType::kQ8_0;
    c.push_back({o, 2, 16});
    c.push_back({o, 1, 16});
    o.arch = "qwen2";
    o.weight_type = kernels::GgmlType::kQ4_1;
    c.push_back({o, 2, 16});
    return c;
  }();
  const TinyCase& tc = cases[GetParam()];
  auto file = *model::GgufFile::FromBuffer(testing::MakeTinyModelGguf(tc.options));
  auto config = *model::ModelConfigFromGguf(*file);
  auto weights = *model::LoadModelWeights(*file, config);
  Harness h(config, weights, tc.threads, tc.block_tokens, 512);
  CheckInvariance(&h, RandomTokens(203, config.vocab_size, 42), config.vocab_size);
}

INSTANTIATE_TEST_SUITE_P(Models, TinyChunkingTest, ::testing::Range(0, 8));

TEST(RealModelChunkingTest, LastLogitsIndependentOfChunkingAndBatch) {
  const char* path = std::getenv("CRESCENT_MODEL");
  // Seconds of real inference: run by the e2e test engine_chunking_real_model_test only.
  if (std::getenv("CRESCENT_CHUNKING_REAL_MODEL") == nullptr) {
    GTEST_SKIP() << "CRESCENT_CHUNKING_REAL_MODEL not set";
  }
  std::FILE* f = path != nullptr ? std::fopen(path, "rb") : nullptr;
  if (f == nullptr) GTEST_SKIP() << "CRESCENT_MODEL not set or missing";
  std::fclose(f);
  LoadOptions lo;
  lo.prefault = false;
  auto model = LoadModel(path, lo);
  ASSERT_TRUE(model.ok()) << model.status();
  const std::string text =
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
      "Explain in a few sentences why the sky is blue, and why sunsets are red. Mention "
      "Rayleigh scattering and the length of the path that light travels through the "
      "atmosphere.<|im_end|>\n<|im_start|>assistant\n";
  auto tokens = (*model)->tokenizer->Encode(text, false, true);
  Harness h((*model)->config, (*model)->weights, 2, 16, 256);
  CheckInvariance(&h, tokens, (*model)->config.vocab_size);
}

}  // namespace
}  // namespace crescent::engine
