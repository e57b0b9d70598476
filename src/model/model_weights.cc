#include "src/model/model_weights.h"

#include <array>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "src/common/status.h"

namespace crescent::model {

namespace {

// The tensors every layer has, in LayerWeights order; the biases follow when qkv_bias.
constexpr int kLayerTensors = 9;
constexpr std::array<const char*, kLayerTensors> kLayerNames = {
    "attn_norm.weight", "attn_q.weight",   "attn_k.weight", "attn_v.weight",  "attn_output.weight",
    "ffn_norm.weight",  "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"};
constexpr std::array<const char*, 3> kBiasNames = {"attn_q.bias", "attn_k.bias", "attn_v.bias"};

std::vector<TensorSpec> LayerSpecs(const ModelConfig& c, int layer) {
  std::string p = absl::StrCat("blk.", layer, ".");
  const int64_t e = c.n_embd, q = c.q_dim(), kv = c.kv_dim(), ff = c.n_ff;
  std::vector<TensorSpec> specs = {
      {p + kLayerNames[0], {e}, true},      {p + kLayerNames[1], {e, q}, false},
      {p + kLayerNames[2], {e, kv}, false}, {p + kLayerNames[3], {e, kv}, false},
      {p + kLayerNames[4], {q, e}, false},  {p + kLayerNames[5], {e}, true},
      {p + kLayerNames[6], {e, ff}, false}, {p + kLayerNames[7], {e, ff}, false},
      {p + kLayerNames[8], {ff, e}, false},
  };
  if (c.qkv_bias) {
    specs.push_back({p + kBiasNames[0], {q}, true});
    specs.push_back({p + kBiasNames[1], {kv}, true});
    specs.push_back({p + kBiasNames[2], {kv}, true});
  }
  return specs;
}

std::string Shape(const std::vector<int64_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

TensorRef MakeRef(const GgufTensorInfo& t) {
  TensorRef ref;
  ref.type = t.type;
  ref.cols = t.dims[0];
  ref.rows = t.dims.size() > 1 ? t.dims[1] : 1;
  ref.data = t.data;
  ref.row_stride = kernels::RowBytes(t.type, ref.cols);
  ref.nbytes = t.nbytes;
  return ref;
}

absl::StatusOr<TensorRef> Lookup(const GgufFile& file, const TensorSpec& spec) {
  const GgufTensorInfo* t = file.FindTensor(spec.name);
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrCat("model tensor '", spec.name, "' not found"));
  }
  if (t->dims != spec.dims) {
    return absl::InvalidArgumentError(absl::StrCat("model tensor '", spec.name, "' has shape ",
                                                   Shape(t->dims), ", expected ", Shape(spec.dims),
                                                   " (row length first)"));
  }
  if (spec.f32_only && t->type != kernels::GgmlType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat("model tensor '", spec.name, "' has type ",
                                                   kernels::GetTypeInfo(t->type).name,
                                                   ", expected f32"));
  }
  return MakeRef(*t);
}

}  // namespace

size_t ModelWeights::WeightBytesPerToken() const {
  size_t total = output_norm.nbytes + output.nbytes;
  for (const LayerWeights& l : layers) {
    for (const TensorRef* r :
         {&l.attn_norm, &l.attn_q, &l.attn_k, &l.attn_v, &l.attn_output, &l.ffn_norm, &l.ffn_gate,
          &l.ffn_up, &l.ffn_down, &l.attn_q_bias, &l.attn_k_bias, &l.attn_v_bias}) {
      total += r->nbytes;
    }
  }
  return total;
}

std::vector<TensorSpec> ModelTensorSpecs(const ModelConfig& c) {
  std::vector<TensorSpec> specs = {
      {"token_embd.weight", {c.n_embd, c.vocab_size}, false},
      {"output_norm.weight", {c.n_embd}, true},
  };
  if (!c.tied_embeddings) specs.push_back({"output.weight", {c.n_embd, c.vocab_size}, false});
  for (int i = 0; i < c.n_layers; ++i) {
    std::vector<TensorSpec> layer = LayerSpecs(c, i);
    specs.insert(specs.end(), layer.begin(), layer.end());
  }
  return specs;
}

absl::StatusOr<ModelWeights> LoadModelWeights(const GgufFile& file, const ModelConfig& config) {
  CRESCENT_RETURN_IF_ERROR(ValidateModelConfig(config));
  // A lying block count must fail before anything is sized by it.
  size_t per_layer = kLayerTensors + (config.qkv_bias ? kBiasNames.size() : 0);
  if (static_cast<size_t>(config.n_layers) > file.tensors().size() / per_layer) {
    return absl::InvalidArgumentError(
        absl::StrCat("model config has ", config.n_layers, " layers of ", per_layer,
                     " tensors, but the file ", "holds only ", file.tensors().size(), " tensors"));
  }
  ModelWeights w;
  CRESCENT_ASSIGN_OR_RETURN(
      w.token_embd, Lookup(file, {"token_embd.weight", {config.n_embd, config.vocab_size}, false}));
  CRESCENT_ASSIGN_OR_RETURN(w.output_norm,
                            Lookup(file, {"output_norm.weight", {config.n_embd}, true}));
  if (file.FindTensor("output.weight") != nullptr || !config.tied_embeddings) {
    CRESCENT_ASSIGN_OR_RETURN(
        w.output, Lookup(file, {"output.weight", {config.n_embd, config.vocab_size}, false}));
  } else {
    w.output = w.token_embd;
  }
  if (file.FindTensor("rope_freqs.weight") != nullptr) {
    CRESCENT_ASSIGN_OR_RETURN(w.rope_freqs,
                              Lookup(file, {"rope_freqs.weight", {config.rope_dim / 2}, true}));
  }
  w.layers.reserve(config.n_layers);  // Bounded by the tensor count above.
  for (int i = 0; i < config.n_layers; ++i) {
    std::vector<TensorSpec> specs = LayerSpecs(config, i);
    std::vector<TensorRef> refs;
    refs.reserve(specs.size());
    for (const TensorSpec& spec : specs) {
      CRESCENT_ASSIGN_OR_RETURN(TensorRef ref, Lookup(file, spec));
      refs.push_back(ref);
    }
    if (!config.qkv_bias) {
      for (const char* bias : kBiasNames) {
        std::string name = absl::StrCat("blk.", i, ".", bias);
        if (file.FindTensor(name) != nullptr) {
          return absl::InvalidArgumentError(absl::StrCat(
              "model tensor '", name, "' is present but the model config has qkv_bias false"));
        }
      }
    }
    LayerWeights l;
    l.attn_norm = refs[0];
    l.attn_q = refs[1];
    l.attn_k = refs[2];
    l.attn_v = refs[3];
    l.attn_output = refs[4];
    l.ffn_norm = refs[5];
    l.ffn_gate = refs[6];
    l.ffn_up = refs[7];
    l.ffn_down = refs[8];
    if (config.qkv_bias) {
      l.attn_q_bias = refs[9];
      l.attn_k_bias = refs[10];
      l.attn_v_bias = refs[11];
    }
    w.layers.push_back(l);
  }
  return w;
}

}  // namespace crescent::model
