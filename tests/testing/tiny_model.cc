#include "tests/testing/tiny_model.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/fp16.h"
#include "kernels/cpu/quants.h"
#include "src/model/gguf_writer.h"

namespace crescent::testing {
namespace {

// GPT-2's byte -> printable code point mapping, UTF-8 encoded.
std::string ByteToken(int b) {
  int cp;
  if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) {
    cp = b;
  } else {
    int n = 0;
    for (int x = 0; x < b; ++x) {
      if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) ++n;
    }
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

std::string Encode(kernels::GgmlType type, const std::vector<float>& values, int64_t cols) {
  int64_t rows = static_cast<int64_t>(values.size()) / cols;
  size_t row_bytes = kernels::RowBytes(type, cols);
  std::string out(row_bytes * rows, '\0');
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = &values[r * cols];
    char* dst = &out[r * row_bytes];
    if (type == kernels::GgmlType::kF32) {
      std::memcpy(dst, src, row_bytes);
    } else if (type == kernels::GgmlType::kF16) {
      kernels::F32ToF16Row(src, reinterpret_cast<uint16_t*>(dst), cols);
    } else if (!kernels::QuantizeRow(type, src, dst, cols)) {
      std::abort();
    }
  }
  return out;
}

}  // namespace

std::string MakeTinyModelGguf(const TinyModelOptions& o) {
  std::mt19937_64 rng(o.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto random = [&](int64_t n, float scale) {
    std::vector<float> v(n);
    for (float& x : v) x = normal(rng) * scale;
    return v;
  };
  const int head_dim = o.n_embd / o.n_heads;
  model::GgufWriter w;
  const std::string a = o.arch;
  w.AddString("general.architecture", a);
  w.AddString("general.name", "tiny-test-model");
  w.AddUint32(a + ".block_count", o.n_layers);
  w.AddUint32(a + ".context_length", o.context_length);
  w.AddUint32(a + ".embedding_length", o.n_embd);
  w.AddUint32(a + ".feed_forward_length", o.n_ff);
  w.AddUint32(a + ".attention.head_count", o.n_heads);
  w.AddUint32(a + ".attention.head_count_kv", o.n_kv_heads);
  w.AddFloat32(a + ".attention.layer_norm_rms_epsilon", 1e-5f);
  w.AddFloat32(a + ".rope.freq_base", 10000.0f);

  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  for (int b = 0; b < 256; ++b) {
    tokens.push_back(ByteToken(b));
    types.push_back(1);
  }
  for (const char* t : {"he", "hel", "hell", "hello"}) {
    tokens.push_back(t);
    types.push_back(1);
  }
  const int im_start = static_cast<int>(tokens.size());
  tokens.push_back("<|im_start|>");
  types.push_back(3);
  const int im_end = static_cast<int>(tokens.size());
  tokens.push_back("<|im_end|>");
  types.push_back(3);
  const int vocab = static_cast<int>(tokens.size());
  w.AddUint32(a + ".vocab_size", vocab);
  w.AddString("tokenizer.ggml.model", "gpt2");
  w.AddString("tokenizer.ggml.pre", "default");
  w.AddStringArray("tokenizer.ggml.tokens", tokens);
  w.AddInt32Array("tokenizer.ggml.token_type", types);
  w.AddStringArray("tokenizer.ggml.merges", {"h e", "he l", "hel l", "hell o"});
  w.AddUint32("tokenizer.ggml.bos_token_id", im_start);
  w.AddUint32("tokenizer.ggml.eos_token_id", im_end);
  w.AddBool("tokenizer.ggml.add_bos_token", false);
  w.AddString("tokenizer.chat_template",
              "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
              "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt "
              "%}{{ '<|im_start|>assistant\n' }}{% endif %}");

  const int d = o.n_embd, ff = o.n_ff;
  const int q_dim = o.n_heads * head_dim, kv_dim = o.n_kv_heads * head_dim;
  auto add_matrix = [&](const std::string& name, int64_t rows, int64_t cols, float scale) {
    w.AddTensor(name, o.weight_type, {cols, rows}, Encode(o.weight_type, random(rows * cols, scale), cols));
  };
  auto add_norm = [&](const std::string& name) {
    std::vector<float> v = random(d, 0.1f);
    for (float& x : v) x += 1.0f;
    w.AddTensorF32(name, {d}, v);
  };
  // The embedding is Q8_0 for quantized variants (as in real files), F32 otherwise.
  kernels::GgmlType emb_type =
      o.weight_type == kernels::GgmlType::kF32 ? kernels::GgmlType::kF32 : kernels::GgmlType::kQ8_0;
  w.AddTensor("token_embd.weight", emb_type, {d, vocab}, Encode(emb_type, random(int64_t{vocab} * d, 1.0f), d));
  add_norm("output_norm.weight");
  if (!o.tied_embeddings) add_matrix("output.weight", vocab, d, 0.1f);
  const float s_in = 1.0f / std::sqrt(static_cast<float>(d));
  const float s_ff = 1.0f / std::sqrt(static_cast<float>(ff));
  for (int l = 0; l < o.n_layers; ++l) {
    std::string p = absl::StrCat("blk.", l, ".");
    add_norm(p + "attn_norm.weight");
    add_matrix(p + "attn_q.weight", q_dim, d, s_in);
    add_matrix(p + "attn_k.weight", kv_dim, d, s_in);
    add_matrix(p + "attn_v.weight", kv_dim, d, s_in);
    add_matrix(p + "attn_output.weight", d, q_dim, s_in);
    if (o.arch == "qwen2") {
      w.AddTensorF32(p + "attn_q.bias", {q_dim}, random(q_dim, 0.1f));
      w.AddTensorF32(p + "attn_k.bias", {kv_dim}, random(kv_dim, 0.1f));
      w.AddTensorF32(p + "attn_v.bias", {kv_dim}, random(kv_dim, 0.1f));
    }
    add_norm(p + "ffn_norm.weight");
    add_matrix(p + "ffn_gate.weight", ff, d, s_in);
    add_matrix(p + "ffn_up.weight", ff, d, s_in);
    add_matrix(p + "ffn_down.weight", d, ff, s_ff);
  }
  return w.Finish();
}

std::string WriteTinyModel(const TinyModelOptions& options) {
  static int counter = 0;
  const char* dir = std::getenv("TEST_TMPDIR");
  std::string path = absl::StrCat(dir ? dir : "/tmp", "/crescent_tiny_", getpid(), "_",
                                  counter++, ".gguf");
  std::string bytes = MakeTinyModelGguf(options);
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
  return path;
}

}  // namespace crescent::testing
