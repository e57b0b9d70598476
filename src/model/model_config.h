// ModelConfig: the hyperparameters of a llama-family model, read from GGUF metadata.
#ifndef CRESCENT_SRC_MODEL_MODEL_CONFIG_H_
#define CRESCENT_SRC_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "src/model/gguf.h"
#include "src/model/gguf_writer.h"

namespace crescent::model {

// How rotary position embedding pairs up the dimensions of a head.
enum class RopeStyle {
  kNormal,  // pairs (2i, 2i+1): llama, mistral.
  kNeox,    // pairs (i, i + rope_dim/2): qwen2 (GPT-NeoX style).
};

struct ModelConfig {
  std::string arch;  // general.architecture: "llama", "mistral", "qwen2".
  std::string name;  // general.name; may be empty.
  int n_layers = 0;
  int n_embd = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;  // <arch>.attention.key_length, else n_embd / n_heads.
  int n_ff = 0;
  int vocab_size = 0;
  int64_t context_length = 0;  // the context the model was trained for.
  float rms_eps = 1e-5f;
  float rope_freq_base = 10000.0f;
  float rope_freq_scale = 1.0f;  // 1 / linear scaling factor.
  int rope_dim = 0;              // dimensions of each head that rotate; <= head_dim, even.
  RopeStyle rope_style = RopeStyle::kNormal;
  bool tied_embeddings = false;  // no output.weight: the output projection is token_embd.
  bool qkv_bias = false;         // blk.N.attn_{q,k,v}.bias exist (qwen2).

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
  int gqa_ratio() const { return n_kv_heads > 0 ? n_heads / n_kv_heads : 0; }

  bool operator==(const ModelConfig&) const = default;
};

// The rope style ggml uses for `arch`; Unimplemented naming the arch when Crescent does not
// support it. Pure; thread-safe.
absl::StatusOr<RopeStyle> RopeStyleForArch(std::string_view arch);

// Reads the config from `file`'s metadata (keys "<arch>.block_count", ".embedding_length",
// ".attention.head_count", ".attention.head_count_kv" (default head_count),
// ".attention.key_length" (default n_embd / n_heads), ".feed_forward_length", ".context_length",
// ".attention.layer_norm_rms_epsilon", ".rope.freq_base" (default 10000), ".rope.scaling.type"
// / ".rope.scaling.factor" or ".rope.scale_linear" (linear only), ".rope.dimension_count"
// (default head_dim), ".vocab_size" (else the length of tokenizer.ggml.tokens, else
// token_embd.weight's dims[1]); tied_embeddings and qkv_bias from which tensors exist.
// Errors: NotFound naming a missing required key; InvalidArgument naming a key of the wrong type
// or a value that is out of range or inconsistent (n_heads % n_kv_heads != 0, n_embd % n_heads
// != 0, any size <= 0, rope_dim odd or > head_dim); Unimplemented naming an unsupported
// architecture or rope scaling type. Thread-safe.
absl::StatusOr<ModelConfig> ModelConfigFromGguf(const GgufFile& file);

// Checks the invariants ModelConfigFromGguf guarantees (sizes > 0, divisibility, rope_dim), for
// configs built by hand. Errors: InvalidArgument naming the field; Unimplemented naming an
// unsupported arch.
absl::Status ValidateModelConfig(const ModelConfig& config);

// Writes the metadata keys ModelConfigFromGguf reads, so that a synthetic model round-trips:
// general.architecture, general.name, the <arch>.* sizes, rope and epsilon keys (key_length only
// when head_dim != n_embd / n_heads; scaling only when rope_freq_scale != 1). tied_embeddings and
// qkv_bias are expressed by the tensors the caller adds (see ModelTensorSpecs in
// model_weights.h). No tokenizer keys are written.
void AddModelConfigKeys(const ModelConfig& config, GgufWriter* writer);

}  // namespace crescent::model

#endif  // CRESCENT_SRC_MODEL_MODEL_CONFIG_H_
