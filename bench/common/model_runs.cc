#include "bench/common/model_runs.h"

#include <algorithm>
#include <span>
#include <vector>

#include "kernels/cpu/ops.h"
#include "src/common/clock.h"
#include "src/common/status.h"

namespace crescent::bench {
namespace {

double Now() { return RealClock::Get()->NowSeconds(); }

struct Seq {
  std::vector<int32_t> tokens;
  std::vector<engine::KvCache::BlockId> blocks;
};

void Release(engine::KvCache* cache, Seq* s) {
  for (auto b : s->blocks) cache->Unref(b);
  s->blocks.clear();
}

}  // namespace

absl::StatusOr<double> PrefillTokensPerSecond(engine::Backend* backend, engine::KvCache* cache,
                                              int vocab, int tokens, int runs, std::mt19937* rng) {
  double best = 0;
  for (int rep = 0; rep < runs; ++rep) {
    Seq s;
    for (int i = 0; i < tokens; ++i) s.tokens.push_back(static_cast<int32_t>((*rng)() % vocab));
    absl::Status st = cache->GrowTable(tokens, &s.blocks);
    engine::SequenceBatch sb{s.tokens, 0, s.blocks, engine::LogitsMode::kLast};
    std::vector<float> logits;
    const double t0 = Now();
    if (st.ok()) st = backend->Forward(std::span(&sb, 1), cache, nullptr, &logits);
    const double dt = Now() - t0;
    Release(cache, &s);
    CRESCENT_RETURN_IF_ERROR(st);
    best = std::max(best, tokens / dt);
  }
  return best;
}

absl::StatusOr<double> DecodeTokensPerSecond(engine::Backend* backend, engine::KvCache* cache,
                                             int vocab, int batch, int prompt_len, int steps,
                                             std::mt19937* rng, engine::ForwardPhases* phases) {
  std::vector<Seq> seqs(batch);
  auto release_all = [&] {
    for (Seq& s : seqs) Release(cache, &s);
  };
  std::vector<float> logits;
  for (Seq& s : seqs) {
    for (int i = 0; i < prompt_len; ++i) s.tokens.push_back(static_cast<int32_t>((*rng)() % vocab));
    absl::Status st = cache->GrowTable(prompt_len + steps, &s.blocks);
    engine::SequenceBatch sb{s.tokens, 0, s.blocks, engine::LogitsMode::kLast};
    if (st.ok()) st = backend->Forward(std::span(&sb, 1), cache, nullptr, &logits);
    if (!st.ok()) {
      release_all();
      return st;
    }
  }
  std::vector<engine::SequenceBatch> step(batch);
  auto* cpu = dynamic_cast<engine::CpuBackend*>(backend);
  if (phases != nullptr && cpu != nullptr) cpu->MeasurePhases(phases);
  absl::Status st;
  const double t0 = Now();
  for (int t = 0; t < steps && st.ok(); ++t) {
    for (int i = 0; i < batch; ++i) {
      const int32_t next = t == 0 ? 1
                                  : static_cast<int32_t>(kernels::ArgMax(
                                        logits.data() + static_cast<int64_t>(i) * vocab, vocab));
      seqs[i].tokens.push_back(next);
      step[i] = engine::SequenceBatch{std::span<const int32_t>(&seqs[i].tokens.back(), 1),
                                      static_cast<int64_t>(seqs[i].tokens.size() - 1),
                                      seqs[i].blocks, engine::LogitsMode::kLast};
    }
    st = backend->Forward(step, cache, nullptr, &logits);
  }
  const double dt = Now() - t0;
  if (cpu != nullptr) cpu->MeasurePhases(nullptr);
  release_all();
  CRESCENT_RETURN_IF_ERROR(st);
  return static_cast<double>(batch) * steps / dt;
}

double KvBytesPerStep(const model::ModelConfig& c, int batch, int steps) {
  return static_cast<double>(batch) * 2.0 * c.n_layers * c.n_kv_heads * c.head_dim * 2 *
         (64 + steps / 2.0);
}

}  // namespace crescent::bench
