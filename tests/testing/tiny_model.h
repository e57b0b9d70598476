// A tiny random llama-family model written as a real GGUF file, for tests that need a whole
// model (engine, serving, cluster) without the reference model's cost. Its tokenizer is a
// byte-level BPE over the 256 bytes plus a few merges and ChatML control tokens.
#ifndef CRESCENT_TESTS_TESTING_TINY_MODEL_H_
#define CRESCENT_TESTS_TESTING_TINY_MODEL_H_

#include <cstdint>
#include <string>

#include "kernels/cpu/types.h"

namespace crescent::testing {

struct TinyModelOptions {
  std::string arch = "llama";  // "llama" (normal RoPE) or "qwen2" (NeoX RoPE + QKV bias)
  int n_layers = 2;
  int n_embd = 64;
  int n_heads = 4;
  int n_kv_heads = 2;
  int n_ff = 96;
  int context_length = 256;
  kernels::GgmlType weight_type = kernels::GgmlType::kF32;  // F32, F16, Q8_0, Q4_0, Q4_1
  bool tied_embeddings = true;
  uint64_t seed = 1;
};

// Returns the bytes of a valid GGUF v3 file. Vocabulary: 256 byte tokens, then merges
// "h"+"e", "he"+"l", "hel"+"l", "hell"+"o", then <|im_start|> and <|im_end|> (control, eos).
std::string MakeTinyModelGguf(const TinyModelOptions& options = {});

// Writes MakeTinyModelGguf(options) to a fresh file under the test temp dir; returns its path.
std::string WriteTinyModel(const TinyModelOptions& options = {});

}  // namespace crescent::testing

#endif  // CRESCENT_TESTS_TESTING_TINY_MODEL_H_
