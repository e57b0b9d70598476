// Timed runs of a whole model through any engine::Backend, shared by model_bench (CPU) and
// cuda_bench (CUDA): prefill of one prompt, decode of a batch, and the K/V bytes a decode step
// reads.
#ifndef CRESCENT_BENCH_COMMON_MODEL_RUNS_H_
#define CRESCENT_BENCH_COMMON_MODEL_RUNS_H_

#include <random>

#include "absl/status/statusor.h"
#include "src/engine/backend.h"
#include "src/engine/cpu_backend.h"
#include "src/engine/kv_cache.h"
#include "src/model/model_config.h"

namespace crescent::bench {

// Prefills one prompt of `tokens` random tokens `runs` times (each in fresh blocks, freed
// after); returns the best tokens/s. Errors: the backend's or the cache's.
absl::StatusOr<double> PrefillTokensPerSecond(engine::Backend* backend, engine::KvCache* cache,
                                              int vocab, int tokens, int runs, std::mt19937* rng);

// Prefills `batch` sequences of `prompt_len` random tokens, then decodes `steps` tokens for all
// of them together, greedy (ArgMax of the previous logits); returns decode tokens/s (all
// sequences counted). With `phases` and a CpuBackend, the decode steps' phases (not the
// prefills') are summed into it (CpuBackend::MeasurePhases). Blocks are freed at the end.
// Errors: the backend's or the cache's (ResourceExhausted when it is too small).
absl::StatusOr<double> DecodeTokensPerSecond(engine::Backend* backend, engine::KvCache* cache,
                                             int vocab, int batch, int prompt_len, int steps,
                                             std::mt19937* rng,
                                             engine::ForwardPhases* phases = nullptr);

// K and V bytes one decode step of `batch` sequences reads, each at the mean context of a run
// of `steps` steps after a 64-token prompt (64 + steps / 2), f16.
double KvBytesPerStep(const model::ModelConfig& c, int batch, int steps);

}  // namespace crescent::bench

#endif  // CRESCENT_BENCH_COMMON_MODEL_RUNS_H_
