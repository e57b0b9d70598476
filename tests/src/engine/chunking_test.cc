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
    KvCacheConfig kc{config.n_layers, config.n_kv_heads, config.head_dim, block_tokens,
                     num_blocks};
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

 int CountInf() {
    int c = 0; float mx = 0;
    const auto& kc = cache_->config();
    for (int64_t b = 0; b < kc.num_blocks; ++b) for (int l = 0; l < kc.n_layers; ++l) {
      for (uint16_t* pg : {cache_->KPage(b, l), cache_->VPage(b, l)})
        for (size_t i = 0; i < kc.PageBytes() / 2; ++i) { if ((pg[i] & 0x7C00) == 0x7C00) ++c; }
    }
    (void)mx;
    return c;
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
  const std::vector<TinyCase> cases = [] {
    std::vector<TinyCase> c;
    testing::TinyModelOptions o;
    o.context_length = 512;
    for (kernels::GgmlType t : {kernels::GgmlType::kF32, kernels::GgmlType::kF16,
                                kernels::GgmlType::kQ8_0, kernels::GgmlType::kQ4_0,
                                kernels::GgmlType::kQ4_1}) {
      o.weight_type = t;
      c.push_back({o, 2, 4});
    }
    o.arch = "qwen2";
    o.weight_type = kernels::GgmlType::kQ4_1;
    c.push_back({o, 2, 16});
    o.arch = "llama";
    c.push_back({o, 1, 16});
    o.weight_type = kernels::GgmlType::kQ8_0;
    c.push_back({o, 1, 4});
    c.push_back({o, 2, 16});
    c.push_back({o, 1, 16});
    return c;
  }();
  const TinyCase& tc = cases[GetParam()];
  auto file = *model::GgufFile::FromBuffer(testing::MakeTinyModelGguf(tc.options));
  auto config = *model::ModelConfigFromGguf(*file);
  auto weights = *model::LoadModelWeights(*file, config);
  Harness h(config, weights, tc.threads, tc.block_tokens, 512);
  CheckInvariance(&h, RandomTokens(203, config.vocab_size, 42), config.vocab_size);
}

INSTANTIATE_TEST_SUITE_P(Models, TinyChunkingTest, ::testing::Range(0, 10));

TEST(RealModelChunkingTest, LastLogitsIndependentOfChunkingAndBatch) {
  const char* path = std::getenv("CRESCENT_MODEL");
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
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/quants.h"
#include "src/common/thread_pool.h"
namespace crescent::engine {
namespace {
TEST(Exp, MatMulRowIndependence) {
  std::mt19937 rng(3);
  ThreadPool pool(2);
  for (auto t : {kernels::GgmlType::kF32, kernels::GgmlType::kF16, kernels::GgmlType::kQ8_0,
                 kernels::GgmlType::kQ4_0, kernels::GgmlType::kQ4_1}) {
    for (int k : {64, 96, 576, 1536}) {
      const int n = 300;
      std::uniform_real_distribution<float> dist(-1, 1);
      std::vector<float> wf(n * k);
      for (auto& v : wf) v = dist(rng);
      size_t rb = kernels::RowBytes(t, k);
      std::vector<uint8_t> w(rb * n);
      for (int r = 0; r < n; ++r) kernels::QuantizeRow(t, &wf[r * k], &w[r * rb], k);
      kernels::MatrixView mv{t, n, k, w.data(), rb};
      const int m = 203;
      std::vector<float> x(m * k);
      for (auto& v : x) v = dist(rng);
      std::vector<float> ym(m * n), y1(n);
      kernels::MatMul(&pool, mv, x.data(), m, ym.data());
      for (int i = 0; i < m; ++i) {
        for (int mm : {1, 2, 5}) {
          std::vector<float> ys(mm * n);
          if (i + mm > m) continue;
          kernels::MatMul(&pool, mv, &x[i * k], mm, ys.data());
          float d = 0;
          for (int j = 0; j < n; ++j) d = std::max(d, std::fabs(ys[j] - ym[i * n + j]));
          if (d != 0) std::printf("type %d k %d row %d m %d: diff %g\n", int(t), k, i, mm, d);
          if (d > 1e-3) { std::printf("BIG\n"); }
        }
      }
    }
  }
}
}  // namespace
}  // namespace crescent::engine
#include "kernels/cpu/attention.h"
#include "kernels/cpu/fp16.h"
namespace crescent::engine {
namespace {
TEST(Exp, AttentionSplit) {
  std::mt19937 rng(5);
  for (float qscale : {1.0f, 10.0f, 100.0f}) {
  for (int hd : {16, 64}) {
    const int nh = 4, nkv = 2, bt = 16, n = 203;
    std::normal_distribution<float> dist(0, 1);
    const int pages = (n + bt - 1) / bt;
    std::vector<std::vector<uint16_t>> kp(pages), vp(pages);
    std::vector<const uint16_t*> kptr, vptr;
    for (int p = 0; p < pages; ++p) {
      std::vector<float> f(bt * nkv * hd);
      kp[p].resize(f.size()); vp[p].resize(f.size());
      for (auto& v : f) v = dist(rng) * qscale;
      kernels::F32ToF16Row(f.data(), kp[p].data(), f.size());
      for (auto& v : f) v = dist(rng);
      kernels::F32ToF16Row(f.data(), vp[p].data(), f.size());
      kptr.push_back(kp[p].data()); vptr.push_back(vp[p].data());
    }
    std::vector<float> q(n * nh * hd);
    for (auto& v : q) v = dist(rng);
    std::vector<float> full(n * nh * hd);
    ThreadPool pool(2);
    kernels::AttentionSeq s{q.data(), n, 0, kptr.data(), vptr.data(), full.data()};
    kernels::Attention(&pool, &s, 1, nh, nkv, hd, bt, 0.25f);
    float worst = 0;
    for (int j = 0; j < n; ++j) {
      std::vector<float> o(nh * hd);
      kernels::AttentionSeq s1{&q[j * nh * hd], 1, j, kptr.data(), vptr.data(), o.data()};
      kernels::Attention(&pool, &s1, 1, nh, nkv, hd, bt, 0.25f);
      for (int i = 0; i < nh * hd; ++i) worst = std::max(worst, std::fabs(o[i] - full[j * nh * hd + i]));
    }
    std::printf("qscale %g hd %d worst %g\n", qscale, hd, worst);
  }
  }
}
}  // namespace
}  // namespace crescent::engine
namespace crescent::engine {
namespace {
TEST(Exp, MatMulShared) {
  std::mt19937 rng(3);
  ThreadPool pool(2);
  for (auto t : {kernels::GgmlType::kQ8_0, kernels::GgmlType::kQ4_1}) {
    for (int k : {64, 96}) {
      const int ns[3] = {64, 32, 32};
      std::uniform_real_distribution<float> dist(-1, 1);
      size_t rb = kernels::RowBytes(t, k);
      std::vector<std::vector<uint8_t>> w(3);
      kernels::MatrixView mv[3];
      for (int j = 0; j < 3; ++j) {
        std::vector<float> wf(ns[j] * k);
        for (auto& v : wf) v = dist(rng);
        w[j].resize(rb * ns[j]);
        for (int r = 0; r < ns[j]; ++r) kernels::QuantizeRow(t, &wf[r * k], &w[j][r * rb], k);
        mv[j] = kernels::MatrixView{t, ns[j], k, w[j].data(), rb};
      }
      const int m = 203;
      std::vector<float> x(m * k);
      for (auto& v : x) v = dist(rng);
      std::vector<std::vector<float>> ym(3);
      float* yp[3];
      for (int j = 0; j < 3; ++j) { ym[j].resize(m * ns[j]); yp[j] = ym[j].data(); }
      kernels::MatMulShared(&pool, mv, yp, 3, x.data(), m);
      for (int i = 0; i < m; ++i) {
        std::vector<std::vector<float>> ys(3);
        float* sp[3];
        for (int j = 0; j < 3; ++j) { ys[j].resize(ns[j]); sp[j] = ys[j].data(); }
        kernels::MatMulShared(&pool, mv, sp, 3, &x[i * k], 1);
        float d = 0;
        for (int j = 0; j < 3; ++j)
          for (int c = 0; c < ns[j]; ++c) d = std::max(d, std::fabs(ys[j][c] - ym[j][i * ns[j] + c]));
        if (d != 0) std::printf("shared type %d k %d row %d diff %g\n", int(t), k, i, d);
      }
    }
  }
}
}  // namespace
}  // namespace crescent::engine
namespace crescent::engine {
namespace {
TEST(Exp, Threads) {
  testing::TinyModelOptions o;
  o.context_length = 512;
  o.weight_type = kernels::GgmlType::kQ8_0;
  auto file = *model::GgufFile::FromBuffer(testing::MakeTinyModelGguf(o));
  auto config = *model::ModelConfigFromGguf(*file);
  auto weights = *model::LoadModelWeights(*file, config);
  Harness h1(config, weights, 1, 16, 512), h2(config, weights, 2, 16, 512);
  for (int n = 129; n <= 150; ++n) {
    auto p = RandomTokens(n, config.vocab_size, 42);
    std::printf("n %d: 1t 512 vs 2t 512: %g; 1t 1 vs 2t 1: %g; 1t 512 vs 2t 1: %g\n", n,
                MaxAbsDiff(h1.Chunked(p, 512), h2.Chunked(p, 512)),
                MaxAbsDiff(h1.Chunked(p, 1), h2.Chunked(p, 1)),
                MaxAbsDiff(h1.Chunked(p, 512), h2.Chunked(p, 1)));
    std::printf("inf count %d\n", h2.CountInf());
  }
}
}  // namespace
}  // namespace crescent::engine
