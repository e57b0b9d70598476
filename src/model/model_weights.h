// ModelWeights: where each weight of a llama-family model lies in a GgufFile, shape-checked
// against its ModelConfig. Nothing is copied or converted: every TensorRef points into the
// file's bytes and is valid while the GgufFile lives.
#ifndef CRESCENT_SRC_MODEL_MODEL_WEIGHTS_H_
#define CRESCENT_SRC_MODEL_MODEL_WEIGHTS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cpu/types.h"
#include "src/model/gguf.h"
#include "src/model/model_config.h"

namespace crescent::model {

// A 1-D or 2-D tensor in ggml's layout: `rows` rows of `cols` values each, rows row_stride bytes
// apart (a 1-D tensor is one row). An absent optional tensor has data == nullptr.
struct TensorRef {
  kernels::GgmlType type = kernels::GgmlType::kF32;
  int64_t rows = 0;  // dims[1], or 1 for a 1-D tensor.
  int64_t cols = 0;  // dims[0]: values per row.
  const void* data = nullptr;
  size_t row_stride = 0;  // kernels::RowBytes(type, cols).
  size_t nbytes = 0;      // rows * row_stride.
  // How the rows are encoded: as GGUF stores them, except in a backend's repacked copy.
  kernels::MatrixLayout layout = kernels::MatrixLayout::kGguf;

  bool present() const { return data != nullptr; }
};

struct LayerWeights {
  TensorRef attn_norm, attn_q, attn_k, attn_v, attn_output;
  TensorRef ffn_norm, ffn_gate, ffn_up, ffn_down;
  TensorRef attn_q_bias, attn_k_bias, attn_v_bias;  // absent unless config.qkv_bias.
};

struct ModelWeights {
  TensorRef token_embd;   // rows = vocab_size, cols = n_embd.
  TensorRef output_norm;  // F32 [n_embd].
  TensorRef output;       // rows = vocab_size, cols = n_embd; equals token_embd when tied.
  TensorRef rope_freqs;   // optional F32 [rope_dim / 2] frequency factors (Llama 3.1 style).
  std::vector<LayerWeights> layers;

  // Bytes of weights one decode step reads: every tensor of every layer, output_norm and the
  // output matrix (token_embd counted once more only through `output` when tied); the embedding
  // row gather is not counted. The figure behind the memory-bandwidth bound on tokens/s.
  size_t WeightBytesPerToken() const;
};

// One tensor a model of a given config must contain, with its shape (ne[0] first).
struct TensorSpec {
  std::string name;           // GGUF name, e.g. "blk.3.attn_k.weight".
  std::vector<int64_t> dims;  // {cols} for vectors, {cols, rows} for matrices.
  bool f32_only;              // norms and biases: must be F32; matrices may be any type.
};

// Every tensor LoadModelWeights requires for `config`, in a fixed order (token_embd,
// output_norm, output unless tied, then each layer). Handy for writing synthetic models with
// GgufWriter. REQUIRES: ValidateModelConfig(config) is OK. Pure; thread-safe.
std::vector<TensorSpec> ModelTensorSpecs(const ModelConfig& config);

// Finds every weight of `config`'s model in `file` by its GGUF name ("token_embd.weight",
// "output_norm.weight", "output.weight" (optional when config.tied_embeddings),
// "blk.N.attn_norm.weight", "blk.N.attn_{q,k,v,output}.weight", "blk.N.ffn_norm.weight",
// "blk.N.ffn_{gate,up,down}.weight", "blk.N.attn_{q,k,v}.bias" when config.qkv_bias,
// "rope_freqs.weight" optional) and checks each shape and type.
// Errors: NotFound naming a missing tensor; InvalidArgument naming the tensor with the expected
// and actual shape (or type) on a mismatch, or a config that fails ValidateModelConfig, or a
// bias tensor present although config.qkv_bias is false. Thread-safe.
absl::StatusOr<ModelWeights> LoadModelWeights(const GgufFile& file, const ModelConfig& config);

}  // namespace crescent::model

#endif  // CRESCENT_SRC_MODEL_MODEL_WEIGHTS_H_
