#include "src/model/model_weights.h"

#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/types.h"
#include "src/model/gguf.h"
#include "src/model/gguf_writer.h"
#include "src/model/model_config.h"
#include "tests/src/model/test_model_builder.h"

namespace crescent::model {
namespace {

using kernels::GgmlType;
using ::testing::HasSubstr;

std::string Message(const absl::Status& s) { return std::string(s.message()); }

// Builds a model of `config` through `edit`, which may change each spec before it is written
// (return false to leave the tensor out).
std::unique_ptr<GgufFile> BuildEdited(const ModelConfig& config,
                                      const std::function<bool(TensorSpec*, GgmlType*)>& edit) {
  GgufWriter w;
  AddModelConfigKeys(config, &w);
  std::mt19937_64 rng(7);
  for (TensorSpec spec : ModelTensorSpecs(config)) {
    GgmlType type = spec.f32_only ? GgmlType::kF32 : GgmlType::kQ8_0;
    if (!edit(&spec, &type)) continue;
    int64_t n = 1;
    for (int64_t d : spec.dims) n *= d;
    w.AddTensor(spec.name, type, spec.dims, test_util::RandomTensorBytes(type, n, rng));
  }
  auto file = GgufFile::FromBuffer(w.Finish());
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? std::move(*file) : nullptr;
}

void ExpectRef(const TensorRef& ref, const GgufFile& file, const std::string& name, GgmlType type,
               int64_t rows, int64_t cols) {
  const GgufTensorInfo* t = file.FindTensor(name);
  ASSERT_NE(t, nullptr) << name;
  EXPECT_TRUE(ref.present()) << name;
  EXPECT_EQ(ref.type, type) << name;
  EXPECT_EQ(ref.rows, rows) << name;
  EXPECT_EQ(ref.cols, cols) << name;
  EXPECT_EQ(ref.data, t->data) << name;
  EXPECT_EQ(ref.row_stride, kernels::RowBytes(type, cols)) << name;
  EXPECT_EQ(ref.nbytes, ref.row_stride * static_cast<size_t>(rows)) << name;
  EXPECT_EQ(ref.nbytes, t->nbytes) << name;
}

TEST(ModelWeightsTest, TinyLlamaLoads) {
  ModelConfig c = test_util::TinyLlamaConfig();
  std::string bytes = test_util::BuildSyntheticModel(c, GgmlType::kQ4_1, 3);
  auto file = GgufFile::FromBuffer(bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& f = **file;
  auto config = ModelConfigFromGguf(f);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(*config, c);
  auto w = LoadModelWeights(f, *config);
  ASSERT_TRUE(w.ok()) << w.status();

  ExpectRef(w->token_embd, f, "token_embd.weight", GgmlType::kQ4_1, 256, 64);
  ExpectRef(w->output_norm, f, "output_norm.weight", GgmlType::kF32, 1, 64);
  EXPECT_EQ(w->output.data, w->token_embd.data);  // tied.
  EXPECT_EQ(w->output.nbytes, w->token_embd.nbytes);
  EXPECT_FALSE(w->rope_freqs.present());
  ASSERT_EQ(w->layers.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    const LayerWeights& l = w->layers[i];
    std::string p = "blk." + std::to_string(i) + ".";
    ExpectRef(l.attn_norm, f, p + "attn_norm.weight", GgmlType::kF32, 1, 64);
    ExpectRef(l.attn_q, f, p + "attn_q.weight", GgmlType::kQ4_1, 64, 64);
    ExpectRef(l.attn_k, f, p + "attn_k.weight", GgmlType::kQ4_1, 32, 64);
    ExpectRef(l.attn_v, f, p + "attn_v.weight", GgmlType::kQ4_1, 32, 64);
    ExpectRef(l.attn_output, f, p + "attn_output.weight", GgmlType::kQ4_1, 64, 64);
    ExpectRef(l.ffn_norm, f, p + "ffn_norm.weight", GgmlType::kF32, 1, 64);
    ExpectRef(l.ffn_gate, f, p + "ffn_gate.weight", GgmlType::kQ4_1, 128, 64);
    ExpectRef(l.ffn_up, f, p + "ffn_up.weight", GgmlType::kQ4_1, 128, 64);
    ExpectRef(l.ffn_down, f, p + "ffn_down.weight", GgmlType::kQ4_1, 64, 128);
    EXPECT_FALSE(l.attn_q_bias.present());
    EXPECT_FALSE(l.attn_k_bias.present());
    EXPECT_FALSE(l.attn_v_bias.present());
  }
  size_t expected = 0;
  for (const GgufTensorInfo& t : f.tensors()) expected += t.nbytes;  // token_embd as output.
  EXPECT_EQ(w->WeightBytesPerToken(), expected);
}

TEST(ModelWeightsTest, UntiedWithBiasesAndRopeFreqs) {
  ModelConfig c = test_util::TinyLlamaConfig();
  c.arch = "qwen2";
  c.rope_style = RopeStyle::kNeox;
  c.tied_embeddings = false;
  c.qkv_bias = true;
  GgufWriter writer;
  test_util::AddSyntheticModel(c, GgmlType::kQ8_0, 5, &writer);
  writer.AddTensorF32("rope_freqs.weight", {8}, std::vector<float>(8, 1.0f));
  auto file = GgufFile::FromBuffer(writer.Finish());
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& f = **file;
  auto config = ModelConfigFromGguf(f);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(*config, c);
  auto w = LoadModelWeights(f, *config);
  ASSERT_TRUE(w.ok()) << w.status();
  ExpectRef(w->output, f, "output.weight", GgmlType::kQ8_0, 256, 64);
  EXPECT_NE(w->output.data, w->token_embd.data);
  ExpectRef(w->rope_freqs, f, "rope_freqs.weight", GgmlType::kF32, 1, 8);
  ExpectRef(w->layers[1].attn_q_bias, f, "blk.1.attn_q.bias", GgmlType::kF32, 1, 64);
  ExpectRef(w->layers[1].attn_k_bias, f, "blk.1.attn_k.bias", GgmlType::kF32, 1, 32);
  ExpectRef(w->layers[1].attn_v_bias, f, "blk.1.attn_v.bias", GgmlType::kF32, 1, 32);
  size_t expected = 0;
  for (const GgufTensorInfo& t : f.tensors()) {
    if (t.name != "token_embd.weight" && t.name != "rope_freqs.weight") expected += t.nbytes;
  }
  EXPECT_EQ(w->WeightBytesPerToken(), expected);
}

TEST(ModelWeightsTest, SpecsListEveryTensor) {
  ModelConfig c = test_util::TinyLlamaConfig();
  std::vector<TensorSpec> specs = ModelTensorSpecs(c);
  EXPECT_EQ(specs.size(), 2u + 2 * 9);
  EXPECT_EQ(specs[0].name, "token_embd.weight");
  EXPECT_EQ(specs[0].dims, (std::vector<int64_t>{64, 256}));
  c.tied_embeddings = false;
  c.qkv_bias = true;
  EXPECT_EQ(ModelTensorSpecs(c).size(), 3u + 2 * 12);
}

TEST(ModelWeightsTest, MissingTensorNamed) {
  ModelConfig c = test_util::TinyLlamaConfig();
  for (std::string missing : {"token_embd.weight", "output_norm.weight", "blk.1.ffn_down.weight",
                              "blk.0.attn_v.weight", "blk.1.attn_norm.weight"}) {
    auto file = BuildEdited(c, [&](TensorSpec* s, GgmlType*) { return s->name != missing; });
    ASSERT_NE(file, nullptr);
    absl::Status s = LoadModelWeights(*file, c).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << missing << ": " << s;
    EXPECT_THAT(Message(s), HasSubstr("'" + missing + "'"));
  }
  // An untied config needs output.weight.
  ModelConfig untied = c;
  untied.tied_embeddings = false;
  auto file =
      BuildEdited(untied, [](TensorSpec* s, GgmlType*) { return s->name != "output.weight"; });
  ASSERT_NE(file, nullptr);
  absl::Status s = LoadModelWeights(*file, untied).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(s), HasSubstr("'output.weight'"));
  // A config with biases needs them.
  ModelConfig biased = c;
  biased.qkv_bias = true;
  file =
      BuildEdited(biased, [](TensorSpec* s, GgmlType*) { return s->name != "blk.1.attn_k.bias"; });
  ASSERT_NE(file, nullptr);
  s = LoadModelWeights(*file, biased).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(s), HasSubstr("'blk.1.attn_k.bias'"));
}

TEST(ModelWeightsTest, WrongShapesNamed) {
  ModelConfig c = test_util::TinyLlamaConfig();
  struct Case {
    std::string name;
    std::vector<int64_t> dims;
    std::string expect;
  };
  std::vector<Case> cases = {
      {"blk.0.attn_k.weight", {64, 64}, "has shape [64, 64], expected [64, 32]"},
      {"blk.1.attn_q.weight", {64, 32}, "has shape [64, 32], expected [64, 64]"},
      {"blk.0.ffn_down.weight", {64, 128}, "has shape [64, 128], expected [128, 64]"},
      {"blk.0.ffn_up.weight", {64, 128, 1}, "expected [64, 128]"},
      {"token_embd.weight", {64, 255 + 1 - 32}, "expected [64, 256]"},
      {"output_norm.weight", {32}, "has shape [32], expected [64]"},
      {"blk.1.ffn_norm.weight", {64, 1}, "expected [64]"},
  };
  for (const Case& k : cases) {
    auto file = BuildEdited(c, [&](TensorSpec* s, GgmlType*) {
      if (s->name == k.name) s->dims = k.dims;
      return true;
    });
    ASSERT_NE(file, nullptr);
    absl::Status s = LoadModelWeights(*file, c).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << k.name << ": " << s;
    EXPECT_THAT(Message(s), HasSubstr("'" + k.name + "'"));
    EXPECT_THAT(Message(s), HasSubstr(k.expect));
  }
}

TEST(ModelWeightsTest, NormsMustBeF32) {
  ModelConfig c = test_util::TinyLlamaConfig();
  auto file = BuildEdited(c, [](TensorSpec* s, GgmlType* type) {
    if (s->name == "blk.0.attn_norm.weight") *type = GgmlType::kF16;
    return true;
  });
  ASSERT_NE(file, nullptr);
  absl::Status s = LoadModelWeights(*file, c).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("'blk.0.attn_norm.weight' has type f16, expected f32"));
}

TEST(ModelWeightsTest, UnexpectedBiasRejected) {
  ModelConfig biased = test_util::TinyLlamaConfig();
  biased.qkv_bias = true;
  std::string bytes = test_util::BuildSyntheticModel(biased, GgmlType::kF32, 1);
  auto file = GgufFile::FromBuffer(bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  ModelConfig plain = biased;
  plain.qkv_bias = false;
  absl::Status s = LoadModelWeights(**file, plain).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("blk.0.attn_q.bias"));
}

TEST(ModelWeightsTest, ConfigChecked) {
  ModelConfig c = test_util::TinyLlamaConfig();
  auto file = GgufFile::FromBuffer(test_util::BuildSyntheticModel(c, GgmlType::kF32, 1));
  ASSERT_TRUE(file.ok()) << file.status();
  ModelConfig many = c;
  many.n_layers = 1 << 30;  // must fail before anything is sized by it.
  absl::Status s = LoadModelWeights(**file, many).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("1073741824 layers"));
  ModelConfig three = c;
  three.n_layers = 3;
  s = LoadModelWeights(**file, three).status();
  EXPECT_FALSE(s.ok());
  ModelConfig invalid = c;
  invalid.n_heads = 0;
  EXPECT_EQ(LoadModelWeights(**file, invalid).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ModelWeightsRealModelTest, SmolLm2Weights) {
  const char* env = std::getenv("CRESCENT_MODEL");
  std::string path = env == nullptr ? "" : env;
  if (path.empty() || !std::ifstream(path).good()) {
    GTEST_SKIP() << "reference model not found (set CRESCENT_MODEL): " << path;
  }
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& f = **file;
  auto c = ModelConfigFromGguf(f);
  ASSERT_TRUE(c.ok()) << c.status();
  auto w = LoadModelWeights(f, *c);
  ASSERT_TRUE(w.ok()) << w.status();
  ExpectRef(w->token_embd, f, "token_embd.weight", GgmlType::kQ8_0, 49152, 576);
  EXPECT_EQ(w->output.data, w->token_embd.data);
  ExpectRef(w->output_norm, f, "output_norm.weight", GgmlType::kF32, 1, 576);
  ASSERT_EQ(w->layers.size(), 30u);
  const LayerWeights& l = w->layers[29];
  ExpectRef(l.attn_q, f, "blk.29.attn_q.weight", GgmlType::kQ4_1, 576, 576);
  ExpectRef(l.attn_k, f, "blk.29.attn_k.weight", GgmlType::kQ4_1, 192, 576);
  ExpectRef(l.attn_v, f, "blk.29.attn_v.weight", GgmlType::kQ4_1, 192, 576);
  ExpectRef(l.attn_output, f, "blk.29.attn_output.weight", GgmlType::kQ4_1, 576, 576);
  ExpectRef(l.ffn_gate, f, "blk.29.ffn_gate.weight", GgmlType::kQ4_1, 1536, 576);
  ExpectRef(l.ffn_up, f, "blk.29.ffn_up.weight", GgmlType::kQ4_1, 1536, 576);
  ExpectRef(l.ffn_down, f, "blk.29.ffn_down.weight", GgmlType::kQ4_1, 576, 1536);
  ExpectRef(l.attn_norm, f, "blk.29.attn_norm.weight", GgmlType::kF32, 1, 576);
  EXPECT_EQ(l.attn_q.row_stride, 18u * 20u);  // 576 / 32 blocks of 20 bytes.
  // Tied: a decode step reads every tensor in the file once (token_embd as the output matrix).
  size_t total = 0;
  for (const GgufTensorInfo& t : f.tensors()) total += t.nbytes;
  EXPECT_EQ(w->WeightBytesPerToken(), total);
  EXPECT_GT(total, 90u << 20);
}

}  // namespace
}  // namespace crescent::model
