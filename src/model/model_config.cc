#include "src/model/model_config.h"

#include <cmath>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "src/common/status.h"

namespace crescent::model {

namespace {

// Reads an integer key as an int in [1, INT_MAX] (or `default_value` when absent and a default
// is given).
absl::StatusOr<int64_t> GetPositive(const GgufFile& file, const std::string& key, int64_t max_value,
                                    std::optional<int64_t> default_value) {
  if (!file.Has(key) && default_value.has_value()) return *default_value;
  absl::StatusOr<int64_t> v = file.GetInt(key);
  if (!v.ok()) {
    if (v.status().code() == absl::StatusCode::kOutOfRange) {
      return absl::InvalidArgumentError(v.status().message());
    }
    return v.status();
  }
  if (*v <= 0 || *v > max_value) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF key '", key, "' is ", *v, "; expected 1 to ", max_value));
  }
  return *v;
}

absl::StatusOr<int> GetPositiveInt(const GgufFile& file, const std::string& key,
                                   std::optional<int> default_value = std::nullopt) {
  std::optional<int64_t> def;
  if (default_value.has_value()) def = *default_value;
  CRESCENT_ASSIGN_OR_RETURN(int64_t v,
                            GetPositive(file, key, std::numeric_limits<int>::max(), def));
  return static_cast<int>(v);
}

absl::StatusOr<float> GetPositiveFloat(const GgufFile& file, const std::string& key,
                                       std::optional<float> default_value = std::nullopt) {
  if (!file.Has(key) && default_value.has_value()) return *default_value;
  CRESCENT_ASSIGN_OR_RETURN(double v, file.GetFloat(key));
  if (!std::isfinite(v) || v <= 0 || v > std::numeric_limits<float>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF key '", key, "' is ", v, "; expected a finite value > 0"));
  }
  return static_cast<float>(v);
}

absl::StatusOr<float> ReadRopeFreqScale(const GgufFile& file, const std::string& arch) {
  std::string type_key = absl::StrCat(arch, ".rope.scaling.type");
  std::string factor_key = absl::StrCat(arch, ".rope.scaling.factor");
  std::string legacy_key = absl::StrCat(arch, ".rope.scale_linear");
  std::string type = "linear";
  if (file.Has(type_key)) {
    CRESCENT_ASSIGN_OR_RETURN(type, file.GetString(type_key));
  }
  if (type == "none") return 1.0f;
  if (type != "linear") {
    return absl::UnimplementedError(absl::StrCat("rope scaling type '", type, "' (key '", type_key,
                                                 "') is not supported; only linear"));
  }
  std::string key = file.Has(factor_key) ? factor_key : legacy_key;
  if (!file.Has(key)) return 1.0f;
  CRESCENT_ASSIGN_OR_RETURN(double factor, file.GetFloat(key));
  // ggml treats a factor of 0 as "no scaling".
  if (factor == 0) return 1.0f;
  if (!std::isfinite(factor) || factor < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF key '", key, "' is ", factor, "; expected a finite factor > 0"));
  }
  return static_cast<float>(1.0 / factor);
}

}  // namespace

absl::StatusOr<RopeStyle> RopeStyleForArch(std::string_view arch) {
  if (arch == "llama" || arch == "mistral") return RopeStyle::kNormal;
  if (arch == "qwen2") return RopeStyle::kNeox;
  return absl::UnimplementedError(absl::StrCat("model architecture '", std::string(arch),
                                               "' is not supported (llama, mistral, qwen2 are)"));
}

absl::Status ValidateModelConfig(const ModelConfig& c) {
  auto positive = [](const char* field, int64_t v) -> absl::Status {
    if (v <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("model config ", field, " is ", v, "; it must be > 0"));
    }
    return absl::OkStatus();
  };
  CRESCENT_RETURN_IF_ERROR(positive("n_layers", c.n_layers));
  CRESCENT_RETURN_IF_ERROR(positive("n_embd", c.n_embd));
  CRESCENT_RETURN_IF_ERROR(positive("n_heads", c.n_heads));
  CRESCENT_RETURN_IF_ERROR(positive("n_kv_heads", c.n_kv_heads));
  CRESCENT_RETURN_IF_ERROR(positive("head_dim", c.head_dim));
  CRESCENT_RETURN_IF_ERROR(positive("n_ff", c.n_ff));
  CRESCENT_RETURN_IF_ERROR(positive("vocab_size", c.vocab_size));
  CRESCENT_RETURN_IF_ERROR(positive("context_length", c.context_length));
  CRESCENT_RETURN_IF_ERROR(positive("rope_dim", c.rope_dim));
  if (c.n_heads % c.n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model config n_heads ", c.n_heads, " is not a multiple of n_kv_heads ", c.n_kv_heads));
  }
  if (c.n_embd % c.n_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("model config n_embd ", c.n_embd,
                                                   " is not a multiple of n_heads ", c.n_heads));
  }
  if (int64_t{c.n_heads} * c.head_dim > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model config n_heads ", c.n_heads, " x head_dim ", c.head_dim, " overflows"));
  }
  if (c.rope_dim > c.head_dim || c.rope_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model config rope_dim ", c.rope_dim, " must be even and at most head_dim ", c.head_dim));
  }
  auto finite_positive = [](const char* field, float v) -> absl::Status {
    if (!std::isfinite(v) || v <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("model config ", field, " is ", v, "; it must be finite and > 0"));
    }
    return absl::OkStatus();
  };
  CRESCENT_RETURN_IF_ERROR(finite_positive("rms_eps", c.rms_eps));
  CRESCENT_RETURN_IF_ERROR(finite_positive("rope_freq_base", c.rope_freq_base));
  CRESCENT_RETURN_IF_ERROR(finite_positive("rope_freq_scale", c.rope_freq_scale));
  CRESCENT_RETURN_IF_ERROR(RopeStyleForArch(c.arch).status());
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ModelConfigFromGguf(const GgufFile& file) {
  ModelConfig c;
  CRESCENT_ASSIGN_OR_RETURN(c.arch, file.GetString("general.architecture"));
  CRESCENT_ASSIGN_OR_RETURN(c.rope_style, RopeStyleForArch(c.arch));
  if (file.Has("general.name")) {
    CRESCENT_ASSIGN_OR_RETURN(c.name, file.GetString("general.name"));
  }
  const std::string& a = c.arch;
  CRESCENT_ASSIGN_OR_RETURN(c.n_layers, GetPositiveInt(file, a + ".block_count"));
  CRESCENT_ASSIGN_OR_RETURN(c.n_embd, GetPositiveInt(file, a + ".embedding_length"));
  CRESCENT_ASSIGN_OR_RETURN(c.n_heads, GetPositiveInt(file, a + ".attention.head_count"));
  CRESCENT_ASSIGN_OR_RETURN(c.n_kv_heads,
                            GetPositiveInt(file, a + ".attention.head_count_kv", c.n_heads));
  CRESCENT_ASSIGN_OR_RETURN(c.n_ff, GetPositiveInt(file, a + ".feed_forward_length"));
  CRESCENT_ASSIGN_OR_RETURN(
      c.context_length,
      GetPositive(file, a + ".context_length", std::numeric_limits<int64_t>::max(), std::nullopt));
  if (c.n_heads % c.n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GGUF key '", a, ".attention.head_count' (", c.n_heads, ") is not a multiple of '", a,
        ".attention.head_count_kv' (", c.n_kv_heads, ")"));
  }
  if (c.n_embd % c.n_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF key '", a, ".embedding_length' (",
                                                   c.n_embd, ") is not a multiple of '", a,
                                                   ".attention.head_count' (", c.n_heads, ")"));
  }
  CRESCENT_ASSIGN_OR_RETURN(
      c.head_dim, GetPositiveInt(file, a + ".attention.key_length", c.n_embd / c.n_heads));
  if (file.Has(a + ".attention.value_length")) {
    CRESCENT_ASSIGN_OR_RETURN(int v_dim, GetPositiveInt(file, a + ".attention.value_length"));
    if (v_dim != c.head_dim) {
      return absl::UnimplementedError(absl::StrCat("GGUF key '", a, ".attention.value_length' (",
                                                   v_dim, ") differs from the key head size ",
                                                   c.head_dim, "; not supported"));
    }
  }
  CRESCENT_ASSIGN_OR_RETURN(c.rms_eps,
                            GetPositiveFloat(file, a + ".attention.layer_norm_rms_epsilon"));
  CRESCENT_ASSIGN_OR_RETURN(c.rope_freq_base,
                            GetPositiveFloat(file, a + ".rope.freq_base", 10000.0f));
  CRESCENT_ASSIGN_OR_RETURN(c.rope_freq_scale, ReadRopeFreqScale(file, a));
  CRESCENT_ASSIGN_OR_RETURN(c.rope_dim,
                            GetPositiveInt(file, a + ".rope.dimension_count", c.head_dim));

  std::string vocab_key = a + ".vocab_size";
  const GgufTensorInfo* embd = file.FindTensor("token_embd.weight");
  if (file.Has(vocab_key)) {
    CRESCENT_ASSIGN_OR_RETURN(c.vocab_size, GetPositiveInt(file, vocab_key));
  } else if (file.Has("tokenizer.ggml.tokens")) {
    CRESCENT_ASSIGN_OR_RETURN(uint64_t n, file.ArraySize("tokenizer.ggml.tokens"));
    if (n == 0 || n > static_cast<uint64_t>(std::numeric_limits<int>::max())) {
      return absl::InvalidArgumentError(
          absl::StrCat("GGUF key 'tokenizer.ggml.tokens' has ", n, " tokens"));
    }
    c.vocab_size = static_cast<int>(n);
  } else if (embd != nullptr && embd->dims.size() == 2 &&
             embd->dims[1] <= std::numeric_limits<int>::max()) {
    c.vocab_size = static_cast<int>(embd->dims[1]);
  } else {
    return absl::NotFoundError(absl::StrCat("vocabulary size: none of GGUF key '", vocab_key,
                                            "', 'tokenizer.ggml.tokens' or a 2-D ",
                                            "token_embd.weight is present"));
  }

  c.tied_embeddings = file.FindTensor("output.weight") == nullptr;
  c.qkv_bias = file.FindTensor("blk.0.attn_q.bias") != nullptr;
  absl::Status valid = ValidateModelConfig(c);
  if (!valid.ok()) return Annotate(valid, "model config from GGUF metadata");
  return c;
}

void AddModelConfigKeys(const ModelConfig& c, GgufWriter* w) {
  const std::string& a = c.arch;
  w->AddString("general.architecture", a);
  if (!c.name.empty()) w->AddString("general.name", c.name);
  w->AddUint32(a + ".block_count", static_cast<uint32_t>(c.n_layers));
  if (c.context_length <= std::numeric_limits<uint32_t>::max()) {
    w->AddUint32(a + ".context_length", static_cast<uint32_t>(c.context_length));
  } else {
    w->AddUint64(a + ".context_length", static_cast<uint64_t>(c.context_length));
  }
  w->AddUint32(a + ".embedding_length", static_cast<uint32_t>(c.n_embd));
  w->AddUint32(a + ".feed_forward_length", static_cast<uint32_t>(c.n_ff));
  w->AddUint32(a + ".attention.head_count", static_cast<uint32_t>(c.n_heads));
  w->AddUint32(a + ".attention.head_count_kv", static_cast<uint32_t>(c.n_kv_heads));
  if (c.n_heads > 0 && c.head_dim != c.n_embd / c.n_heads) {
    w->AddUint32(a + ".attention.key_length", static_cast<uint32_t>(c.head_dim));
    w->AddUint32(a + ".attention.value_length", static_cast<uint32_t>(c.head_dim));
  }
  w->AddFloat32(a + ".attention.layer_norm_rms_epsilon", c.rms_eps);
  w->AddFloat32(a + ".rope.freq_base", c.rope_freq_base);
  if (c.rope_freq_scale != 1.0f) {
    w->AddString(a + ".rope.scaling.type", "linear");
    w->AddFloat32(a + ".rope.scaling.factor", 1.0f / c.rope_freq_scale);
  }
  w->AddUint32(a + ".rope.dimension_count", static_cast<uint32_t>(c.rope_dim));
  w->AddUint32(a + ".vocab_size", static_cast<uint32_t>(c.vocab_size));
}

}  // namespace crescent::model
