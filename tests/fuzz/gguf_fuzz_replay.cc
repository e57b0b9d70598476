// Replay driver for gguf_fuzz.cc, built with any compiler and run by CTest in every build
// (including the ASan/UBSan one): feeds LLVMFuzzerTestOneInput a seed corpus made in-process
// with GgufWriter plus deterministic mutations of it (bit flips, byte and integer overwrites at
// length fields, truncations, insertions, deletions, splices).
//
//   gguf_fuzz_replay                       # seeds + mutations; exit 0 unless a seed is broken
//   gguf_fuzz_replay --iterations=100000 --seed=7
//   gguf_fuzz_replay --write-corpus=DIR    # writes the seeds for the libFuzzer binary
//   gguf_fuzz_replay FILE...               # replays files (e.g. a crash libFuzzer found)
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/types.h"
#include "src/model/gguf.h"
#include "src/model/gguf_writer.h"
#include "src/model/model_config.h"
#include "tests/src/model/test_model_builder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace crescent::model {
namespace {

using kernels::GgmlType;

ModelConfig MicroConfig(const char* arch) {
  ModelConfig c = test_util::TinyLlamaConfig();
  c.arch = arch;
  c.n_layers = 2;
  c.n_embd = 32;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 16;
  c.rope_dim = 16;
  c.n_ff = 32;
  c.vocab_size = 4;
  return c;
}

std::vector<std::string> MakeSeeds() {
  std::vector<std::string> seeds;
  // 1. A whole tiny llama model: config keys, tokens, every tensor.
  {
    GgufWriter w;
    test_util::AddSyntheticModel(MicroConfig("llama"), GgmlType::kQ8_0, 1, &w);
    w.AddStringArray("tokenizer.ggml.tokens", {"<s>", "</s>", "a", "b"});
    w.AddInt32Array("tokenizer.ggml.token_type", {3, 3, 1, 1});
    seeds.push_back(w.Finish());
  }
  // 2. qwen2 with biases, untied output, alignment 64.
  {
    ModelConfig c = MicroConfig("qwen2");
    c.rope_style = RopeStyle::kNeox;
    c.tied_embeddings = false;
    c.qkv_bias = true;
    c.rope_freq_scale = 0.5f;
    GgufWriter w;
    w.SetAlignment(64);
    test_util::AddSyntheticModel(c, GgmlType::kQ4_1, 2, &w);
    seeds.push_back(w.Finish());
  }
  // 3. Metadata of every type.
  {
    GgufWriter w;
    w.AddUint8("a.u8", 7);
    w.AddInt8("a.i8", -7);
    w.AddUint16("a.u16", 700);
    w.AddInt16("a.i16", -700);
    w.AddUint32("a.u32", 70000);
    w.AddInt32("a.i32", -70000);
    w.AddUint64("a.u64", uint64_t{1} << 40);
    w.AddInt64("a.i64", -(int64_t{1} << 40));
    w.AddFloat32("a.f32", 0.5f);
    w.AddFloat64("a.f64", 0.25);
    w.AddBool("a.bool", true);
    w.AddString("a.str", "hello");
    w.AddStringArray("a.strs", {"x", "", "yz"});
    w.AddFloatArray("a.floats", {1.0f, 2.0f});
    w.AddFloat64Array("a.doubles", {3.0});
    w.AddInt32Array("a.ints", {1, -1});
    w.AddUint32Array("a.uints", {5});
    w.AddInt64Array("a.longs", {-5});
    w.AddUint8Array("a.bytes", {1, 2, 3});
    w.AddBoolArray("a.bools", {true, false});
    w.AddTensorF32("t", {4}, {1, 2, 3, 4});
    seeds.push_back(w.Finish());
  }
  // 4. Tensors of several types and ranks.
  {
    GgufWriter w;
    std::mt19937_64 rng(4);
    w.AddString("general.architecture", "llama");
    w.AddTensor("f16", GgmlType::kF16, {8, 2},
                test_util::RandomTensorBytes(GgmlType::kF16, 16, rng));
    w.AddTensor("q4_0", GgmlType::kQ4_0, {32, 1, 2},
                test_util::RandomTensorBytes(GgmlType::kQ4_0, 64, rng));
    w.AddTensor("q4_k", GgmlType::kQ4_K, {256},
                test_util::RandomTensorBytes(GgmlType::kQ4_K, 256, rng));
    w.AddTensorF32("v", {2, 1, 1, 2}, {1, 2, 3, 4});
    seeds.push_back(w.Finish());
  }
  return seeds;
}

class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}

  std::string Mutate(std::string s, const std::vector<std::string>& seeds) {
    int n = 1 + static_cast<int>(Below(4));
    for (int i = 0; i < n; ++i) MutateOnce(&s, seeds);
    return s;
  }

 private:
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : rng_() % n; }

  // Offsets whose u64 looks like a length or count (small, non-zero): most real length fields
  // in the seeds, which is where lying values do the most damage.
  size_t PickLengthField(const std::string& s) {
    if (s.size() < 8) return 0;
    for (int tries = 0; tries < 64; ++tries) {
      size_t p = Below(s.size() - 7);
      uint64_t v;
      std::memcpy(&v, s.data() + p, 8);
      if (v != 0 && v < (1u << 16)) return p;
    }
    return Below(s.size() - 7);
  }

  uint64_t Interesting(const std::string& s) {
    const uint64_t values[] = {0,
                               1,
                               2,
                               3,
                               4,
                               5,
                               8,
                               9,
                               12,
                               13,
                               31,
                               32,
                               33,
                               255,
                               256,
                               0x7fffffff,
                               0x80000000,
                               0xffffffff,
                               uint64_t{1} << 32,
                               uint64_t{1} << 62,
                               uint64_t{1} << 63,
                               ~uint64_t{0},
                               ~uint64_t{0} - 31,
                               s.size(),
                               s.size() + 1,
                               s.size() - 1,
                               s.size() / 2,
                               rng_()};
    return values[Below(std::size(values))];
  }

  void MutateOnce(std::string* s, const std::vector<std::string>& seeds) {
    switch (Below(10)) {
      case 0:  // flip a bit
        if (!s->empty()) (*s)[Below(s->size())] ^= static_cast<char>(1 << Below(8));
        break;
      case 1:  // set a byte
        if (!s->empty()) (*s)[Below(s->size())] = static_cast<char>(Below(256));
        break;
      case 2:  // overwrite a u32 (types, n_dims) with an interesting value
        if (s->size() >= 4) {
          uint32_t v = static_cast<uint32_t>(Interesting(*s));
          std::memcpy(s->data() + Below(s->size() - 3), &v, 4);
        }
        break;
      case 3:
      case 4:  // overwrite a length field / count / dim / offset
        if (s->size() >= 8) {
          uint64_t v = Interesting(*s);
          std::memcpy(s->data() + PickLengthField(*s), &v, 8);
        }
        break;
      case 5:  // nudge a length field by a little
        if (s->size() >= 8) {
          size_t p = PickLengthField(*s);
          uint64_t v;
          std::memcpy(&v, s->data() + p, 8);
          v += static_cast<uint64_t>(static_cast<int64_t>(Below(17)) - 8);
          std::memcpy(s->data() + p, &v, 8);
        }
        break;
      case 6:  // truncate
        s->resize(Below(s->size() + 1));
        break;
      case 7: {  // insert random bytes
        size_t at = Below(s->size() + 1);
        std::string bytes(1 + Below(16), '\0');
        for (char& c : bytes) c = static_cast<char>(Below(256));
        s->insert(at, bytes);
        break;
      }
      case 8: {  // delete a range
        if (s->empty()) break;
        size_t at = Below(s->size());
        s->erase(at, 1 + Below(std::min<size_t>(64, s->size() - at)));
        break;
      }
      case 9: {  // splice: keep a prefix, continue with another seed's suffix
        const std::string& other = seeds[Below(seeds.size())];
        size_t cut = Below(s->size() + 1);
        size_t from = Below(other.size() + 1);
        *s = s->substr(0, cut) + other.substr(from);
        break;
      }
    }
  }

  std::mt19937_64 rng_;
};

int Run(const std::string& bytes) {
  return LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

int Main(int argc, char** argv) {
  uint64_t iterations = 5000;
  uint64_t seed = 20240601;
  std::string corpus_dir;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--iterations=", 0) == 0) {
      iterations = std::strtoull(arg.c_str() + 13, nullptr, 10);
    } else if (arg.rfind("--seed=", 0) == 0) {
      seed = std::strtoull(arg.c_str() + 7, nullptr, 10);
    } else if (arg.rfind("--write-corpus=", 0) == 0) {
      corpus_dir = arg.substr(15);
    } else {
      files.push_back(arg);
    }
  }

  if (!files.empty()) {
    for (const std::string& path : files) {
      std::ifstream in(path, std::ios::binary);
      if (!in) {
        std::fprintf(stderr, "cannot read %s\n", path.c_str());
        return 1;
      }
      std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      Run(bytes);
      std::printf("replayed %s (%zu bytes)\n", path.c_str(), bytes.size());
    }
    return 0;
  }

  std::vector<std::string> seeds = MakeSeeds();
  // The seeds must be valid, or the mutations below would only probe the first few bytes.
  for (size_t i = 0; i < seeds.size(); ++i) {
    auto file = GgufFile::FromBuffer(seeds[i]);
    if (!file.ok()) {
      std::fprintf(stderr, "seed %zu does not parse: %s\n", i,
                   std::string(file.status().message()).c_str());
      return 1;
    }
    Run(seeds[i]);
  }
  {
    auto file = GgufFile::FromBuffer(seeds[0]);
    auto config = ModelConfigFromGguf(**file);
    if (!config.ok()) {
      std::fprintf(stderr, "seed 0 has no model config: %s\n",
                   std::string(config.status().message()).c_str());
      return 1;
    }
  }
  if (!corpus_dir.empty()) {
    for (size_t i = 0; i < seeds.size(); ++i) {
      std::string path = corpus_dir + "/seed" + std::to_string(i) + ".gguf";
      std::ofstream(path, std::ios::binary) << seeds[i];
    }
    std::printf("wrote %zu seeds to %s\n", seeds.size(), corpus_dir.c_str());
    return 0;
  }

  Mutator mutator(seed);
  std::mt19937_64 pick(seed ^ 0x9e3779b97f4a7c15ull);
  uint64_t accepted = 0;
  for (uint64_t i = 0; i < iterations; ++i) {
    std::string input = mutator.Mutate(seeds[pick() % seeds.size()], seeds);
    if (GgufFile::FromBuffer(input).ok()) ++accepted;
    Run(input);
  }
  std::printf(
      "gguf_fuzz_replay: %zu seeds, %llu mutated inputs (%llu still valid GGUF), seed %llu\n",
      seeds.size(), static_cast<unsigned long long>(iterations),
      static_cast<unsigned long long>(accepted), static_cast<unsigned long long>(seed));
  return 0;
}

}  // namespace
}  // namespace crescent::model

int main(int argc, char** argv) { return crescent::model::Main(argc, argv); }
