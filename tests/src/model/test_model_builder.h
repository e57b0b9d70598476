// Test support: tiny synthetic llama-family GGUF models built with GgufWriter.
//
//   ModelConfig config = test_util::TinyLlamaConfig();
//   std::string bytes = test_util::BuildSyntheticModel(config, kernels::GgmlType::kQ8_0, 42);
//   auto file = GgufFile::FromBuffer(bytes);  // ModelConfigFromGguf(**file) == config.
//
// Weights are random but well-formed: quantized blocks get small finite f16 scales, so kernels
// computing on them see ordinary numbers. Deterministic for a given seed. Header-only.
#ifndef CRESCENT_TESTS_SRC_MODEL_TEST_MODEL_BUILDER_H_
#define CRESCENT_TESTS_SRC_MODEL_TEST_MODEL_BUILDER_H_

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/types.h"
#include "src/model/gguf_writer.h"
#include "src/model/model_config.h"
#include "src/model/model_weights.h"

namespace crescent::model::test_util {

// IEEE half bits for a float in the normal half range (truncating; tiny values flush to 0).
inline uint16_t FloatToHalfBits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  int exp = static_cast<int>((bits >> 23) & 0xff) - 127 + 15;
  if (exp <= 0) return sign;
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7bff);  // largest finite half.
  return static_cast<uint16_t>(sign | (exp << 10) | ((bits >> 13) & 0x3ff));
}

// Random data for `n_values` values of `type` (n_values a multiple of the block size). Supports
// F32, F16, Q4_0, Q4_1 and Q8_0; values are roughly in [-0.5, 0.5].
inline std::string RandomTensorBytes(kernels::GgmlType type, int64_t n_values,
                                     std::mt19937_64& rng) {
  using kernels::GgmlType;
  std::uniform_real_distribution<float> value(-0.5f, 0.5f);
  std::uniform_real_distribution<float> scale(0.002f, 0.03f);
  std::uniform_int_distribution<int> byte(0, 255);
  std::string out;
  auto put16 = [&](uint16_t v) { out.append(reinterpret_cast<const char*>(&v), 2); };
  auto put_bytes = [&](int n) {
    for (int i = 0; i < n; ++i) out.push_back(static_cast<char>(byte(rng)));
  };
  switch (type) {
    case GgmlType::kF32:
      for (int64_t i = 0; i < n_values; ++i) {
        float v = value(rng);
        out.append(reinterpret_cast<const char*>(&v), 4);
      }
      break;
    case GgmlType::kF16:
      for (int64_t i = 0; i < n_values; ++i) put16(FloatToHalfBits(value(rng)));
      break;
    case GgmlType::kQ4_0:
      for (int64_t b = 0; b < n_values / 32; ++b) {
        put16(FloatToHalfBits(scale(rng)));
        put_bytes(16);
      }
      break;
    case GgmlType::kQ4_1:
      for (int64_t b = 0; b < n_values / 32; ++b) {
        put16(FloatToHalfBits(scale(rng)));
        put16(FloatToHalfBits(-8 * scale(rng)));
        put_bytes(16);
      }
      break;
    case GgmlType::kQ8_0:
      for (int64_t b = 0; b < n_values / 32; ++b) {
        put16(FloatToHalfBits(scale(rng) / 8));
        put_bytes(32);
      }
      break;
    default:
      // Other types: bytes of the right size; contents are not meaningful numbers.
      put_bytes(static_cast<int>(kernels::RowBytes(type, n_values)));
      break;
  }
  return out;
}

// A small valid llama config: 2 layers, n_embd 64, 4 heads / 2 KV heads of 16, n_ff 128,
// vocab 256, tied embeddings.
inline ModelConfig TinyLlamaConfig() {
  ModelConfig c;
  c.arch = "llama";
  c.name = "tiny-llama";
  c.n_layers = 2;
  c.n_embd = 64;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.n_ff = 128;
  c.vocab_size = 256;
  c.context_length = 512;
  c.rms_eps = 1e-5f;
  c.rope_freq_base = 10000.0f;
  c.rope_freq_scale = 1.0f;
  c.rope_dim = 16;
  c.rope_style = RopeStyle::kNormal;
  c.tied_embeddings = true;
  c.qkv_bias = false;
  return c;
}

// Adds `config`'s metadata and every tensor of ModelTensorSpecs(config) to `writer`: matrices
// of `matrix_type`, norms near 1 and biases near 0 in F32.
inline void AddSyntheticModel(const ModelConfig& config, kernels::GgmlType matrix_type,
                              uint64_t seed, GgufWriter* writer) {
  std::mt19937_64 rng(seed);
  AddModelConfigKeys(config, writer);
  for (const TensorSpec& spec : ModelTensorSpecs(config)) {
    int64_t n = 1;
    for (int64_t d : spec.dims) n *= d;
    if (spec.f32_only) {
      bool is_norm = spec.name.find("norm") != std::string::npos;
      std::vector<float> v(static_cast<size_t>(n));
      std::uniform_real_distribution<float> noise(-0.05f, 0.05f);
      for (float& x : v) x = (is_norm ? 1.0f : 0.0f) + noise(rng);
      writer->AddTensorF32(spec.name, spec.dims, v);
    } else {
      writer->AddTensor(spec.name, matrix_type, spec.dims, RandomTensorBytes(matrix_type, n, rng));
    }
  }
}

inline std::string BuildSyntheticModel(const ModelConfig& config, kernels::GgmlType matrix_type,
                                       uint64_t seed) {
  GgufWriter writer;
  AddSyntheticModel(config, matrix_type, seed, &writer);
  return writer.Finish();
}

}  // namespace crescent::model::test_util

#endif  // CRESCENT_TESTS_SRC_MODEL_TEST_MODEL_BUILDER_H_
