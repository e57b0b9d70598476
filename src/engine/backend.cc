#include "src/engine/backend.h"

#include <cmath>
#include <string>
#include <utility>

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

absl::Status CheckMatrixTypes(const model::ModelWeights& weights,
                              bool (*supported)(kernels::GgmlType), std::string_view backend) {
  auto check = [&](const model::TensorRef& t, const std::string& name) -> absl::Status {
    if (supported(t.type)) return absl::OkStatus();
    return absl::UnimplementedError(
        absl::StrCat("tensor ", name, " has type ", kernels::GetTypeInfo(t.type).name,
                     ", which has no ", std::string(backend), " matmul kernel"));
  };
  absl::Status s = check(weights.output, "output");
  for (size_t l = 0; s.ok() && l < weights.layers.size(); ++l) {
    const model::LayerWeights& lw = weights.layers[l];
    const std::pair<const model::TensorRef*, const char*> mats[] = {
        {&lw.attn_q, "attn_q"},           {&lw.attn_k, "attn_k"},     {&lw.attn_v, "attn_v"},
        {&lw.attn_output, "attn_output"}, {&lw.ffn_gate, "ffn_gate"}, {&lw.ffn_up, "ffn_up"},
        {&lw.ffn_down, "ffn_down"}};
    for (const auto& [t, n] : mats) {
      s = check(*t, absl::StrCat("blk.", l, ".", n, ".weight"));
      if (!s.ok()) break;
    }
  }
  return s;
}

std::vector<double> RopeInverseFrequencies(const model::ModelConfig& config,
                                           const model::ModelWeights& weights) {
  const float* factors =
      weights.rope_freqs.present() ? static_cast<const float*>(weights.rope_freqs.data) : nullptr;
  const int rot = config.rope_dim;
  std::vector<double> inv_freq(rot / 2);
  for (int j = 0; j < rot / 2; ++j) {
    double f =
        std::pow(static_cast<double>(config.rope_freq_base), -2.0 * j / static_cast<double>(rot));
    if (factors != nullptr) f /= factors[j];
    inv_freq[j] = static_cast<double>(config.rope_freq_scale) * f;
  }
  return inv_freq;
}

}  // namespace crescent::engine
