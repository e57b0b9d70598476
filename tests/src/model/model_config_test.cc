#include "src/model/model_config.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/model/gguf.h"
#include "src/model/gguf_writer.h"
#include "tests/src/model/test_model_builder.h"

namespace crescent::model {
namespace {

using kernels::GgmlType;
using ::testing::HasSubstr;

absl::StatusOr<ModelConfig> ConfigOf(const GgufWriter& w) {
  auto file = GgufFile::FromBuffer(w.Finish());
  if (!file.ok()) return file.status();
  return ModelConfigFromGguf(**file);
}

// The keys of a minimal llama model, except those `skip` names; `extra` adds more.
GgufWriter LlamaKeys(const std::vector<std::string>& skip = {},
                     const std::function<void(GgufWriter*)>& extra = nullptr) {
  auto keep = [&](const std::string& k) {
    return std::find(skip.begin(), skip.end(), k) == skip.end();
  };
  GgufWriter w;
  if (keep("general.architecture")) w.AddString("general.architecture", "llama");
  if (keep("block_count")) w.AddUint32("llama.block_count", 4);
  if (keep("embedding_length")) w.AddUint32("llama.embedding_length", 256);
  if (keep("head_count")) w.AddUint32("llama.attention.head_count", 8);
  if (keep("head_count_kv")) w.AddUint32("llama.attention.head_count_kv", 2);
  if (keep("feed_forward_length")) w.AddUint32("llama.feed_forward_length", 512);
  if (keep("context_length")) w.AddUint32("llama.context_length", 2048);
  if (keep("rms_eps")) w.AddFloat32("llama.attention.layer_norm_rms_epsilon", 1e-6f);
  if (keep("vocab_size")) w.AddUint32("llama.vocab_size", 1000);
  if (extra) extra(&w);
  return w;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

TEST(ModelConfigTest, MinimalLlamaWithDefaults) {
  auto c = ConfigOf(LlamaKeys());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, "llama");
  EXPECT_EQ(c->name, "");
  EXPECT_EQ(c->n_layers, 4);
  EXPECT_EQ(c->n_embd, 256);
  EXPECT_EQ(c->n_heads, 8);
  EXPECT_EQ(c->n_kv_heads, 2);
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_EQ(c->n_ff, 512);
  EXPECT_EQ(c->vocab_size, 1000);
  EXPECT_EQ(c->context_length, 2048);
  EXPECT_FLOAT_EQ(c->rms_eps, 1e-6f);
  EXPECT_EQ(c->rope_freq_base, 10000.0f);
  EXPECT_EQ(c->rope_freq_scale, 1.0f);
  EXPECT_EQ(c->rope_dim, 32);
  EXPECT_EQ(c->rope_style, RopeStyle::kNormal);
  EXPECT_TRUE(c->tied_embeddings);  // no output.weight tensor.
  EXPECT_FALSE(c->qkv_bias);
  EXPECT_EQ(c->q_dim(), 256);
  EXPECT_EQ(c->kv_dim(), 64);
  EXPECT_EQ(c->gqa_ratio(), 4);
}

TEST(ModelConfigTest, HeadCountKvDefaultsToHeadCount) {
  auto c = ConfigOf(LlamaKeys({"head_count_kv"}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->n_kv_heads, 8);
}

TEST(ModelConfigTest, RoundTripsThroughWriter) {
  ModelConfig llama = test_util::TinyLlamaConfig();
  llama.rope_freq_base = 500000.0f;
  llama.rope_freq_scale = 0.25f;
  llama.rope_dim = 8;
  llama.context_length = int64_t{1} << 33;
  GgufWriter w;
  AddModelConfigKeys(llama, &w);
  auto got = ConfigOf(w);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, llama);

  ModelConfig qwen = test_util::TinyLlamaConfig();
  qwen.arch = "qwen2";
  qwen.rope_style = RopeStyle::kNeox;
  qwen.head_dim = 32;  // != n_embd / n_heads: written as key_length.
  qwen.rope_dim = 32;
  qwen.tied_embeddings = false;
  qwen.qkv_bias = true;
  std::string bytes = test_util::BuildSyntheticModel(qwen, GgmlType::kF32, 1);
  auto file = GgufFile::FromBuffer(bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->Has("qwen2.attention.key_length"));
  auto got_qwen = ModelConfigFromGguf(**file);
  ASSERT_TRUE(got_qwen.ok()) << got_qwen.status();
  EXPECT_EQ(*got_qwen, qwen);
}

TEST(ModelConfigTest, RopeStyles) {
  EXPECT_EQ(*RopeStyleForArch("llama"), RopeStyle::kNormal);
  EXPECT_EQ(*RopeStyleForArch("mistral"), RopeStyle::kNormal);
  EXPECT_EQ(*RopeStyleForArch("qwen2"), RopeStyle::kNeox);
  absl::Status s = RopeStyleForArch("mamba").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(Message(s), HasSubstr("mamba"));
}

TEST(ModelConfigTest, UnsupportedArchitecture) {
  GgufWriter w;
  w.AddString("general.architecture", "gpt2");
  w.AddUint32("gpt2.block_count", 12);
  absl::Status s = ConfigOf(w).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(Message(s), HasSubstr("'gpt2'"));
}

TEST(ModelConfigTest, MissingRequiredKeys) {
  for (const char* key : {"general.architecture", "block_count", "embedding_length", "head_count",
                          "feed_forward_length", "context_length", "rms_eps"}) {
    absl::Status s = ConfigOf(LlamaKeys({key})).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << key << ": " << s;
    std::string expect = std::string(key) == "rms_eps" ? "layer_norm_rms_epsilon" : key;
    EXPECT_THAT(Message(s), HasSubstr(expect)) << s;
  }
}

TEST(ModelConfigTest, WrongTypesNameTheKey) {
  absl::Status s = ConfigOf(LlamaKeys({"block_count"}, [](GgufWriter* w) {
                     w->AddString("llama.block_count", "30");
                   })).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("llama.block_count"));
  EXPECT_THAT(Message(s), HasSubstr("string"));

  s = ConfigOf(LlamaKeys({"feed_forward_length"}, [](GgufWriter* w) {
        w->AddInt32Array("llama.feed_forward_length", {512, 512, 512, 512});
      })).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("llama.feed_forward_length"));

  s = ConfigOf(LlamaKeys({"general.architecture"}, [](GgufWriter* w) {
        w->AddUint32("general.architecture", 1);
      })).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("general.architecture"));
}

TEST(ModelConfigTest, OutOfRangeValues) {
  struct Case {
    const char* skip;
    std::function<void(GgufWriter*)> add;
    const char* expect;
  };
  std::vector<Case> cases = {
      {"block_count", [](GgufWriter* w) { w->AddUint32("llama.block_count", 0); },
       "llama.block_count"},
      {"block_count", [](GgufWriter* w) { w->AddInt32("llama.block_count", -2); },
       "llama.block_count"},
      {"block_count", [](GgufWriter* w) { w->AddUint64("llama.block_count", uint64_t{1} << 40); },
       "llama.block_count"},
      {"block_count", [](GgufWriter* w) { w->AddUint64("llama.block_count", ~uint64_t{0}); },
       "llama.block_count"},
      {"head_count_kv", [](GgufWriter* w) { w->AddUint32("llama.attention.head_count_kv", 3); },
       "head_count_kv"},
      {"head_count", [](GgufWriter* w) { w->AddUint32("llama.attention.head_count", 6); },
       "embedding_length"},  // 256 % 6 != 0 (and 6 % 2 == 0).
      {"rms_eps",
       [](GgufWriter* w) { w->AddFloat32("llama.attention.layer_norm_rms_epsilon", -1.0f); },
       "layer_norm_rms_epsilon"},
      {"rms_eps",
       [](GgufWriter* w) {
         w->AddFloat32("llama.attention.layer_norm_rms_epsilon",
                       std::numeric_limits<float>::quiet_NaN());
       },
       "layer_norm_rms_epsilon"},
      {"context_length", [](GgufWriter* w) { w->AddInt64("llama.context_length", -1); },
       "llama.context_length"},
      {"vocab_size", [](GgufWriter* w) { w->AddUint32("llama.vocab_size", 0); },
       "llama.vocab_size"},
      {"", [](GgufWriter* w) { w->AddUint32("llama.rope.dimension_count", 33); }, "rope_dim"},
      {"", [](GgufWriter* w) { w->AddUint32("llama.rope.dimension_count", 64); }, "rope_dim"},
      {"", [](GgufWriter* w) { w->AddFloat32("llama.rope.freq_base", 0.0f); },
       "llama.rope.freq_base"},
      {"", [](GgufWriter* w) { w->AddUint32("llama.attention.key_length", 0); }, "key_length"},
      {"", [](GgufWriter* w) { w->AddFloat32("llama.rope.scaling.factor", -2.0f); },
       "llama.rope.scaling.factor"},
  };
  for (const Case& c : cases) {
    absl::Status s = ConfigOf(LlamaKeys({c.skip}, c.add)).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.expect << ": " << s;
    EXPECT_THAT(Message(s), HasSubstr(c.expect));
  }
}

TEST(ModelConfigTest, RopeScaling) {
  auto linear = ConfigOf(LlamaKeys({}, [](GgufWriter* w) {
    w->AddString("llama.rope.scaling.type", "linear");
    w->AddFloat32("llama.rope.scaling.factor", 4.0f);
  }));
  ASSERT_TRUE(linear.ok()) << linear.status();
  EXPECT_EQ(linear->rope_freq_scale, 0.25f);

  auto legacy = ConfigOf(
      LlamaKeys({}, [](GgufWriter* w) { w->AddFloat32("llama.rope.scale_linear", 2.0f); }));
  ASSERT_TRUE(legacy.ok()) << legacy.status();
  EXPECT_EQ(legacy->rope_freq_scale, 0.5f);

  auto none = ConfigOf(LlamaKeys({}, [](GgufWriter* w) {
    w->AddString("llama.rope.scaling.type", "none");
    w->AddFloat32("llama.rope.scaling.factor", 8.0f);
  }));
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->rope_freq_scale, 1.0f);

  auto zero = ConfigOf(
      LlamaKeys({}, [](GgufWriter* w) { w->AddFloat32("llama.rope.scaling.factor", 0.0f); }));
  ASSERT_TRUE(zero.ok()) << zero.status();
  EXPECT_EQ(zero->rope_freq_scale, 1.0f);

  absl::Status yarn = ConfigOf(LlamaKeys({}, [](GgufWriter* w) {
                        w->AddString("llama.rope.scaling.type", "yarn");
                        w->AddFloat32("llama.rope.scaling.factor", 4.0f);
                      })).status();
  EXPECT_EQ(yarn.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(Message(yarn), HasSubstr("yarn"));
}

TEST(ModelConfigTest, HeadDimFromKeyLength) {
  auto c = ConfigOf(LlamaKeys({}, [](GgufWriter* w) {
    w->AddUint32("llama.attention.key_length", 64);
    w->AddUint32("llama.attention.value_length", 64);
  }));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->rope_dim, 64);
  EXPECT_EQ(c->q_dim(), 512);

  absl::Status s = ConfigOf(LlamaKeys({}, [](GgufWriter* w) {
                     w->AddUint32("llama.attention.key_length", 64);
                     w->AddUint32("llama.attention.value_length", 32);
                   })).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(Message(s), HasSubstr("value_length"));
}

TEST(ModelConfigTest, VocabSizeFallbacks) {
  auto from_tokens = ConfigOf(LlamaKeys({"vocab_size"}, [](GgufWriter* w) {
    w->AddStringArray("tokenizer.ggml.tokens", {"a", "b", "c"});
  }));
  ASSERT_TRUE(from_tokens.ok()) << from_tokens.status();
  EXPECT_EQ(from_tokens->vocab_size, 3);

  auto from_embd = ConfigOf(LlamaKeys({"vocab_size"}, [](GgufWriter* w) {
    w->AddTensorF32("token_embd.weight", {256, 7}, std::vector<float>(256 * 7));
  }));
  ASSERT_TRUE(from_embd.ok()) << from_embd.status();
  EXPECT_EQ(from_embd->vocab_size, 7);

  absl::Status s = ConfigOf(LlamaKeys({"vocab_size"})).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(s), HasSubstr("llama.vocab_size"));
}

TEST(ModelConfigTest, TensorsDecideTiedAndBias) {
  auto c = ConfigOf(LlamaKeys({}, [](GgufWriter* w) {
    w->AddTensorF32("output.weight", {256, 4}, std::vector<float>(1024));
    w->AddTensorF32("blk.0.attn_q.bias", {256}, std::vector<float>(256));
  }));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->tied_embeddings);
  EXPECT_TRUE(c->qkv_bias);
}

TEST(ModelConfigTest, ValidateModelConfig) {
  ModelConfig c = test_util::TinyLlamaConfig();
  EXPECT_TRUE(ValidateModelConfig(c).ok());
  ModelConfig bad = c;
  bad.n_ff = 0;
  EXPECT_THAT(Message(ValidateModelConfig(bad)), HasSubstr("n_ff"));
  bad = c;
  bad.n_kv_heads = 3;
  EXPECT_THAT(Message(ValidateModelConfig(bad)), HasSubstr("n_kv_heads"));
  bad = c;
  bad.rope_dim = 17;
  EXPECT_THAT(Message(ValidateModelConfig(bad)), HasSubstr("rope_dim"));
  bad = c;
  bad.arch = "bert";
  EXPECT_EQ(ValidateModelConfig(bad).code(), absl::StatusCode::kUnimplemented);
  bad = c;
  bad.rope_freq_scale = 0;
  EXPECT_THAT(Message(ValidateModelConfig(bad)), HasSubstr("rope_freq_scale"));
}

TEST(ModelConfigRealModelTest, SmolLm2Figures) {
  const char* env = std::getenv("CRESCENT_MODEL");
  std::string path = env == nullptr ? "" : env;
  if (path.empty() || !std::ifstream(path).good()) {
    GTEST_SKIP() << "reference model not found (set CRESCENT_MODEL): " << path;
  }
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto c = ModelConfigFromGguf(**file);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, "llama");
  EXPECT_FALSE(c->name.empty());
  EXPECT_EQ(c->n_layers, 30);
  EXPECT_EQ(c->n_embd, 576);
  EXPECT_EQ(c->n_heads, 9);
  EXPECT_EQ(c->n_kv_heads, 3);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->n_ff, 1536);
  EXPECT_EQ(c->vocab_size, 49152);
  EXPECT_EQ(c->context_length, 8192);
  EXPECT_FLOAT_EQ(c->rms_eps, 1e-5f);
  EXPECT_EQ(c->rope_freq_base, 100000.0f);
  EXPECT_EQ(c->rope_freq_scale, 1.0f);
  EXPECT_EQ(c->rope_dim, 64);
  EXPECT_EQ(c->rope_style, RopeStyle::kNormal);
  EXPECT_TRUE(c->tied_embeddings);
  EXPECT_FALSE(c->qkv_bias);
}

}  // namespace
}  // namespace crescent::model
