#include "src/engine/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/fp16.h"
#include "kernels/cuda/device.h"
#include "src/engine/cpu_backend.h"
#include "src/engine/kv_cache.h"
#include "src/model/gguf.h"
#include "src/model/model_config.h"
#include "src/model/model_weights.h"
#include "tests/kernels/cuda/cuda_test_util.h"
#include "tests/testing/tiny_model.h"

namespace crescent::engine {
namespace {

using kernels::GgmlType;

// A model from GGUF bytes with a CPU and a CUDA backend over one cache each.
struct Pair {
  std::unique_ptr<model::GgufFile> file;
  model::ModelConfig config;
  model::ModelWeights weights;
  std::unique_ptr<KvCache> cpu_cache, gpu_cache;
  std::unique_ptr<CpuBackend> cpu;
  std::unique_ptr<CudaBackend> gpu;

  explicit Pair(std::unique_ptr<model::GgufFile> f, int block_tokens, int64_t blocks)
      : file(std::move(f)) {
    config = *model::ModelConfigFromGguf(*file);
    weights = *model::LoadModelWeights(*file, config);
    KvCacheConfig kc{config.n_layers, config.n_kv_heads, config.head_dim, block_tokens, blocks};
    cpu_cache = *KvCache::Create(kc);
    gpu_cache = *KvCache::Create(kc);
    cpu = *CpuBackend::Create(config, weights, 2);
    auto g = CudaBackend::Create(config, weights);
    EXPECT_TRUE(g.ok()) << g.status();
    if (g.ok()) gpu = std::move(*g);
  }
};

std::vector<int32_t> Tokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

// max |a - b| over max |b|.
double RelDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, mag = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(a[i] - b[i])));
    mag = std::max(mag, static_cast<double>(std::fabs(b[i])));
  }
  return diff / std::max(mag, 1e-30);
}

TEST(CudaBackendTest, NoDeviceIsFailedPrecondition) {
  if (kernels::cuda::DeviceCount() > 0) GTEST_SKIP() << "a CUDA device is present";
  auto file = *model::GgufFile::FromBuffer(testing::MakeTinyModelGguf({}));
  auto config = *model::ModelConfigFromGguf(*file);
  auto weights = *model::LoadModelWeights(*file, config);
  auto b = CudaBackend::Create(config, weights);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition) << b.status();
}

// A prefill chunk and a decode step of two sequences in one call, on both backends: the same
// logits within f32 rounding (F32 weights: neither backend quantizes anything), the same KV in
// every page the call wrote (f16, so within one f16 rounding), the hook after every layer.
void CheckTiny(const testing::TinyModelOptions& o) {
  Pair p(*model::GgufFile::FromBuffer(testing::MakeTinyModelGguf(o)), 4, 64);
  ASSERT_NE(p.gpu, nullptr);
  const auto prompt = Tokens(11, p.config.vocab_size, 1);
  const auto other = Tokens(6, p.config.vocab_size, 2);
  for (auto [backend, cache] : {std::pair<Backend*, KvCache*>{p.cpu.get(), p.cpu_cache.get()},
                                {p.gpu.get(), p.gpu_cache.get()}}) {
    for (int i = 0; i < 8; ++i) ASSERT_EQ(cache->Allocate(), i);
  }
  const std::vector<KvCache::BlockId> t0 = {5, 1, 7, 3}, t1 = {0, 2};
  std::vector<float> logits[2];
  std::vector<int> hooks[2];
  int which = 0;
  for (auto [backend, cache] : {std::pair<Backend*, KvCache*>{p.cpu.get(), p.cpu_cache.get()},
                                {p.gpu.get(), p.gpu_cache.get()}}) {
    // First: the whole `other` (positions 0..5) and the first 8 of `prompt`.
    SequenceBatch a[2] = {{std::span(prompt).first(8), 0, t0, LogitsMode::kAll},
                          {other, 0, t1, LogitsMode::kLast}};
    std::vector<float> first;
    LayerHook hook = [&, w = which](int layer) { hooks[w].push_back(layer); };
    ASSERT_TRUE(backend->Forward(a, cache, &hook, &first).ok());
    // Then: the rest of `prompt` as a chunk and one decode token of `other`.
    SequenceBatch b[2] = {{std::span(prompt).subspan(8), 8, t0, LogitsMode::kAll},
                          {std::span(prompt).first(1), 6, t1, LogitsMode::kLast}};
    std::vector<float> second;
    ASSERT_TRUE(backend->Forward(b, cache, nullptr, &second).ok());
    logits[which] = first;
    logits[which].insert(logits[which].end(), second.begin(), second.end());
    ++which;
  }
  ASSERT_EQ(logits[0].size(), logits[1].size());
  EXPECT_LT(RelDiff(logits[1], logits[0]), 1e-4);
  EXPECT_EQ(hooks[1], hooks[0]);
  EXPECT_EQ(static_cast<int>(hooks[1].size()), p.config.n_layers);
  const size_t n = KvCache::MemoryBytes(p.cpu_cache->config()) / 2;
  const auto* kc = reinterpret_cast<const uint16_t*>(p.cpu_cache->BlockData(0));
  const auto* kg = reinterpret_cast<const uint16_t*>(p.gpu_cache->BlockData(0));
  int far = 0;
  for (size_t i = 0; i < n; ++i) {
    const float a = kernels::F16ToF32(kc[i]), b = kernels::F16ToF32(kg[i]);
    far += std::fabs(a - b) > 1e-3f * std::fabs(a) + 1e-4f;
  }
  EXPECT_EQ(far, 0) << "f16 KV entries further apart than one f16 rounding";
}

TEST(CudaBackendTest, TinyLlamaMatchesTheCpuBackend) {
  CRESCENT_REQUIRE_CUDA_DEVICE();
  CheckTiny({});
}

TEST(CudaBackendTest, TinyQwen2MatchesTheCpuBackend) {
  CRESCENT_REQUIRE_CUDA_DEVICE();
  testing::TinyModelOptions o;
  o.arch = "qwen2";
  o.tied_embeddings = false;
  CheckTiny(o);
}

TEST(CudaBackendTest, BadBatchesAreInvalidArgument) {
  CRESCENT_REQUIRE_CUDA_DEVICE();
  Pair p(*model::GgufFile::FromBuffer(testing::MakeTinyModelGguf({})), 4, 8);
  ASSERT_NE(p.gpu, nullptr);
  std::vector<int32_t> tokens = {1, 2, 3, 4, 5};
  std::vector<KvCache::BlockId> one = {p.gpu_cache->Allocate()};
  SequenceBatch s{tokens, 0, one, LogitsMode::kLast};
  std::vector<float> logits(3);
  EXPECT_EQ(p.gpu->Forward(std::span(&s, 1), p.gpu_cache.get(), nullptr, &logits).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(logits.empty());
}

// The reference model (Q4_1 and Q8_0 weights): greedy continuations of two prompts equal the
// CPU backend's, token for token, and the first step's logits agree within the CPU kernels'
// activation quantization.
TEST(CudaBackendTest, ReferenceModelGreedyMatchesTheCpuBackend) {
  CRESCENT_REQUIRE_CUDA_DEVICE();
  const char* path = std::getenv("CRESCENT_MODEL");
  if (path == nullptr) GTEST_SKIP() << "CRESCENT_MODEL not set";
  auto file = model::GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  Pair p(std::move(*file), 16, 64);
  ASSERT_NE(p.gpu, nullptr);
  for (const std::vector<int32_t>& prompt :
       {std::vector<int32_t>{1, 9690, 198, 2683, 359, 253, 5356, 5646, 30, 2},
        std::vector<int32_t>{504, 3575, 282, 4649, 314}}) {
    std::vector<int32_t> out[2];
    int which = 0;
    for (auto [backend, cache] : {std::pair<Backend*, KvCache*>{p.cpu.get(), p.cpu_cache.get()},
                                  {p.gpu.get(), p.gpu_cache.get()}}) {
      std::vector<KvCache::BlockId> table;
      ASSERT_TRUE(cache->GrowTable(static_cast<int64_t>(prompt.size()) + 16, &table).ok());
      std::vector<int32_t> tokens = prompt;
      std::vector<float> logits;
      int64_t pos = 0;
      std::vector<int32_t> step = prompt;
      for (int i = 0; i < 16; ++i) {
        SequenceBatch s{step, pos, table, LogitsMode::kLast};
        ASSERT_TRUE(backend->Forward(std::span(&s, 1), cache, nullptr, &logits).ok());
        pos += static_cast<int64_t>(step.size());
        const int32_t next =
            static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
        out[which].push_back(next);
        step = {next};
      }
      for (KvCache::BlockId b : table) cache->Unref(b);
      ++which;
    }
    EXPECT_EQ(out[1], out[0]);
  }
}

}  // namespace
}  // namespace crescent::engine
