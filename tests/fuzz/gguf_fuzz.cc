// libFuzzer entry point for the GGUF reader: parses arbitrary bytes, then exercises every
// getter, the model config and the weight map on whatever parses. Any crash, sanitizer report or
// broken invariant (checked below) is a bug: a GgufFile that exists must be safe to use.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "src/model/gguf.h"
#include "src/model/model_config.h"
#include "src/model/model_weights.h"

#define FUZZ_CHECK(cond)                                                                 \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

namespace {

using crescent::model::GgufFile;
using crescent::model::GgufTensorInfo;
using crescent::model::GgufValueType;
using crescent::model::TensorRef;

volatile uint8_t g_sink;

void Touch(const void* data, size_t nbytes) {
  FUZZ_CHECK(data != nullptr && nbytes > 0);
  const uint8_t* p = static_cast<const uint8_t*>(data);
  g_sink = static_cast<uint8_t>(g_sink ^ p[0] ^ p[nbytes - 1]);
}

void TouchRef(const TensorRef& ref) {
  if (!ref.present()) return;
  FUZZ_CHECK(ref.nbytes == ref.row_stride * static_cast<size_t>(ref.rows));
  Touch(ref.data, ref.nbytes);
}

void ExerciseKeys(const GgufFile& f) {
  for (const std::string& key : f.Keys()) {
    FUZZ_CHECK(f.Has(key));
    auto type = f.TypeOf(key);
    FUZZ_CHECK(type.ok());
    (void)f.GetString(key);
    (void)f.GetUint(key);
    (void)f.GetInt(key);
    (void)f.GetFloat(key);
    (void)f.GetBool(key);
    auto strings = f.GetStringArray(key);
    auto floats = f.GetFloatArray(key);
    auto ints = f.GetIntArray(key);
    auto size = f.ArraySize(key);
    FUZZ_CHECK(size.ok() == (*type == GgufValueType::kArray));
    if (strings.ok()) FUZZ_CHECK(strings->size() == *size);
    if (floats.ok()) FUZZ_CHECK(floats->size() == *size);
    if (ints.ok()) FUZZ_CHECK(ints->size() == *size);
  }
  FUZZ_CHECK(f.GetString("no such key\x01").status().code() == absl::StatusCode::kNotFound);
}

void ExerciseTensors(const GgufFile& f) {
  FUZZ_CHECK(f.alignment() > 0 && (f.alignment() & (f.alignment() - 1)) == 0);
  FUZZ_CHECK(f.data_offset() <= f.file_size());
  for (const GgufTensorInfo& t : f.tensors()) {
    FUZZ_CHECK(f.FindTensor(t.name) == &t);
    FUZZ_CHECK(!t.dims.empty() && t.dims.size() <= 4);
    FUZZ_CHECK(t.offset % f.alignment() == 0);
    FUZZ_CHECK(f.data_offset() + t.offset + t.nbytes <= f.file_size());
    Touch(t.data, t.nbytes);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = GgufFile::FromBuffer(std::string(reinterpret_cast<const char*>(data), size));
  if (!file.ok()) {
    FUZZ_CHECK(!file.status().message().empty());
    return 0;
  }
  const GgufFile& f = **file;
  ExerciseKeys(f);
  ExerciseTensors(f);
  auto config = crescent::model::ModelConfigFromGguf(f);
  if (!config.ok()) return 0;
  FUZZ_CHECK(crescent::model::ValidateModelConfig(*config).ok());
  auto weights = crescent::model::LoadModelWeights(f, *config);
  if (!weights.ok()) return 0;
  FUZZ_CHECK(weights->layers.size() == static_cast<size_t>(config->n_layers));
  TouchRef(weights->token_embd);
  TouchRef(weights->output_norm);
  TouchRef(weights->output);
  TouchRef(weights->rope_freqs);
  for (const auto& l : weights->layers) {
    for (const TensorRef* r :
         {&l.attn_norm, &l.attn_q, &l.attn_k, &l.attn_v, &l.attn_output, &l.ffn_norm, &l.ffn_gate,
          &l.ffn_up, &l.ffn_down, &l.attn_q_bias, &l.attn_k_bias, &l.attn_v_bias}) {
      TouchRef(*r);
    }
  }
  (void)weights->WeightBytesPerToken();
  return 0;
}
