#include "src/engine/backend.h"

#include "absl/strings/str_cat.h"

namespace crescent::engine {

absl::Status ValidateForward(const model::ModelConfig& config, std::span<const SequenceBatch> seqs,
                             const KvCache& cache) {
  const KvCacheConfig& kc = cache.config();
  if (kc.n_layers != config.n_layers || kc.n_kv_heads != config.n_kv_heads ||
      kc.head_dim != config.head_dim) {
    return absl::InvalidArgumentError("KV cache shape does not match the model");
  }
  for (size_t s = 0; s < seqs.size(); ++s) {
    const SequenceBatch& seq = seqs[s];
    if (seq.tokens.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s, " has no tokens"));
    }
    int64_t end = seq.pos0 + static_cast<int64_t>(seq.tokens.size());
    if (seq.pos0 < 0 || end > config.context_length) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s, " spans positions [", seq.pos0,
                                                     ", ", end, ") beyond the model context of ",
                                                     config.context_length));
    }
    int64_t blocks_needed = (end + kc.block_tokens - 1) / kc.block_tokens;
    if (static_cast<int64_t>(seq.block_table.size()) < blocks_needed) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s, " needs ", blocks_needed,
                                                     " KV blocks, its table has ",
                                                     seq.block_table.size()));
    }
    for (int64_t b = 0; b < blocks_needed; ++b) {
      KvCache::BlockId id = seq.block_table[b];
      if (id < 0 || id >= cache.num_blocks() || cache.RefCount(id) <= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("sequence ", s, " block ", b, " names unallocated block ", id));
      }
    }
    for (int32_t t : seq.tokens) {
      if (t < 0 || t >= config.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("sequence ", s, " has token id ", t, " outside the vocabulary"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace crescent::engine
