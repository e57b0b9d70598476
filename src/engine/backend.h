// Backend: one forward pass of the model over a batch of sequences and a paged KV cache.
// Prefill chunks and decode steps of many sequences go through the same call: every new token
// of every sequence is a row of one activation matrix, so weights are read once per call.
#ifndef CRESCENT_SRC_ENGINE_BACKEND_H_
#define CRESCENT_SRC_ENGINE_BACKEND_H_

#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "src/engine/kv_cache.h"
#include "src/model/model_config.h"
#include "src/model/model_weights.h"

namespace crescent::engine {

enum class LogitsMode { kNone, kLast, kAll };

// One sequence's part of a forward pass.
struct SequenceBatch {
  std::span<const int32_t> tokens;  // new tokens; tokens[i] sits at position pos0 + i.
  int64_t pos0 = 0;                 // KV of positions [0, pos0) is already in the cache.
  // Blocks covering positions [0, pos0 + tokens.size()); block b holds positions
  // [b * block_tokens, (b + 1) * block_tokens). The forward pass writes the new tokens' KV.
  std::span<const KvCache::BlockId> block_table;
  LogitsMode logits = LogitsMode::kLast;
};

// Called after layer `layer` has finished for the whole batch: that layer's KV of every new
// token is in the cache (the prefill node streams it to the decode node from here).
using LayerHook = std::function<void(int layer)>;

class Backend {
 public:
  virtual ~Backend() = default;

  // Runs the model over `seqs`, writing their new KV into `cache`, and appends to `logits`
  // (cleared first) one vocab-sized row per requested position, in order of `seqs` (kLast:
  // one row, kAll: one per new token). `hook`, when set, runs after each layer.
  // Errors: InvalidArgument when a sequence is empty, runs past the model's context, or its
  // block table does not cover its positions; nothing is written in that case.
  // Thread-compatible: one Forward at a time per backend.
  virtual absl::Status Forward(std::span<const SequenceBatch> seqs, KvCache* cache,
                               const LayerHook* hook, std::vector<float>* logits) = 0;

  virtual const char* name() const = 0;
};

// The checks every backend's Forward makes before touching the cache: the cache's shape is the
// model's; each sequence is non-empty, lies within the model's context, has a block table that
// covers its positions with allocated blocks, and only token ids inside the vocabulary.
// Errors: InvalidArgument naming the sequence and what is wrong.
absl::Status ValidateForward(const model::ModelConfig& config, std::span<const SequenceBatch> seqs,
                             const KvCache& cache);

// Checks that every matrix a forward pass multiplies by (each layer's seven projections and the
// output matrix) has a type `supported` accepts. Errors: Unimplemented naming the first tensor
// that does not, its type and `backend` ("tensor blk.3.ffn_up.weight has type q6_k, which has
// no CUDA matmul kernel").
absl::Status CheckMatrixTypes(const model::ModelWeights& weights,
                              bool (*supported)(kernels::GgmlType), std::string_view backend);

// The rotary frequency of each pair j < rope_dim / 2, in double: freq_scale *
// freq_base^(-2j / rope_dim), divided by the file's factor where it has them (rope_freqs,
// Llama 3.1 style). A position's angle is position * frequency.
std::vector<double> RopeInverseFrequencies(const model::ModelConfig& config,
                                           const model::ModelWeights& weights);

}  // namespace crescent::engine

#endif  // CRESCENT_SRC_ENGINE_BACKEND_H_
