// sampler_bench: the cost of picking one token from a vocabulary of logits, per sampling mode.
//
// The serving engine samples each sequence of a step one after another on its loop thread, so
// at batch B a step pays B of these on top of the forward pass (model_bench measures decode with
// greedy picks only). Prints microseconds per Sample() call (best and median of the passes)
// for: greedy; temperature alone (OpenAI's defaults: the whole vocabulary is weighed); top_k
// 40; top_p 0.9; min_p 0.05; greedy with logprobs and 5 top_logprobs. Logits are drawn the way
// a language model's look (a few large, most far below), from a fixed seed.
//
// Then JSON mode (response_format json_object) over a real vocabulary (--model, default the
// reference model; skipped when absent): the time to build the vocabulary's trie (once per
// engine), to compute the allowed-token set in a few lexer states (with and without a JSON
// Schema), and JsonConstraint::Restrict
// (the set and the -inf mask over the logits: what each JSON-mode token pays).
//
//   sampler_bench [--vocab N] [--calls N] [--passes N] [--model PATH]
#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "src/engine/json_constraint.h"
#include "src/engine/json_schema.h"
#include "src/engine/loaded_model.h"
#include "src/engine/sampler.h"
#include "src/model/gguf.h"
#include "src/model/tokenizer.h"

namespace crescent {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Mode {
  std::string name;
  engine::SamplingParams params;
};

// Best and median of `passes` timings of fn(), in microseconds.
template <typename Fn>
std::pair<double, double> Time(int passes, int calls, Fn fn) {
  std::vector<double> per_call;
  for (int pass = 0; pass < passes; ++pass) {
    const double t0 = Now();
    for (int c = 0; c < calls; ++c) fn();
    per_call.push_back((Now() - t0) / calls * 1e6);
  }
  std::sort(per_call.begin(), per_call.end());
  return {per_call.front(), per_call[per_call.size() / 2]};
}

int JsonMode(const std::string& path, int passes) {
  auto file = model::GgufFile::Open(path);
  if (!file.ok()) {
    std::fprintf(stderr, "%s\n", file.status().ToString().c_str());
    return 1;
  }
  auto tokenizer = model::Tokenizer::FromGguf(**file);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "%s\n", tokenizer.status().ToString().c_str());
    return 1;
  }
  const double t0 = Now();
  auto vocabulary = engine::JsonVocabulary::FromTokenizer(**tokenizer);
  const double build_ms = (Now() - t0) * 1e3;
  if (!vocabulary.ok()) {
    std::fprintf(stderr, "%s\n", vocabulary.status().ToString().c_str());
    return 1;
  }
  const engine::JsonVocabulary& v = **vocabulary;
  std::printf("\nJSON mode, vocabulary of %s (%d tokens): trie built in %.1f ms\n",
              std::filesystem::path(path).filename().c_str(), v.vocab_size(), build_ms);
  std::printf("%-40s %10s %10s %8s\n", "allowed set", "best us", "median us", "allowed");
  // A schema like the ones Pydantic models give (json_schema mode).
  auto schema = engine::JsonSchema::Compile(R"({"type": "object", "properties": {
      "name": {"type": "string"}, "age": {"type": "integer"},
      "pets": {"type": "array", "items": {"type": "object", "properties": {
          "kind": {"enum": ["cat", "dog", "bird"]}, "name": {"type": "string"}}}}}})");
  if (!schema.ok()) return 1;
  struct State {
    const char* name;
    const char* prefix;
    const engine::JsonSchema* schema;
  };
  const State states[] = {
      {"before the object", "", nullptr},
      {"after '{'", "{", nullptr},
      {"in a string value", "{\"name\": \"Al", nullptr},
      {"after a number", "{\"a\": [1, 2", nullptr},
      {"after a value, nested", "{\"a\": {\"b\": true", nullptr},
      {"schema: after '{'", "{", schema->get()},
      {"schema: in a key", "{\"name\": \"Al\", \"a", schema->get()},
      {"schema: an integer value", "{\"name\": \"Al\", \"age\": ", schema->get()},
      {"schema: in an enum value", "{\"name\":\"A\",\"age\":1,\"pets\":[{\"kind\":\"",
       schema->get()},
  };
  size_t sink = 0;
  for (const auto& [name, prefix, state_schema] : states) {
    engine::JsonLexer lexer(state_schema);
    if (!lexer.Feed(std::string_view(prefix))) return 1;
    std::vector<uint64_t> bits;
    v.Allowed(lexer, &bits);
    size_t allowed = 0;
    for (uint64_t w : bits) allowed += std::popcount(w);
    auto [best, median] = Time(passes, 50, [&] {
      v.Allowed(lexer, &bits);
      sink += bits[0];
    });
    std::printf("%-40s %10.1f %10.1f %8zu\n", name, best, median, allowed);
  }
  engine::JsonConstraint constraint(&v);
  for (int32_t id : (*tokenizer)->Encode("{\"name\": \"Al", false, false)) {
    if (!constraint.Accept(id).ok()) return 1;
  }
  std::vector<float> logits(v.vocab_size(), 0.0f);
  auto [best, median] = Time(passes, 200, [&] { sink += constraint.Restrict(logits).ok(); });
  std::printf("%-40s %10.1f %10.1f\n", "Restrict (in a string)", best, median);

  // tool_choice "required" with 8 tools (src/server/tool_calls.h): a top-level anyOf, one
  // lexer per tool, each walked, until the name tells them apart.
  std::string tools = R"({"anyOf": [)";
  for (int t = 0; t < 8; ++t) {
    tools += std::string(t > 0 ? "," : "") +
             R"({"type": "object", "properties": {"name": {"const": "tool_)" + std::to_string(t) +
             R"("}, "arguments": {"type": "object", "properties": {"city": {"type": "string"},
                 "days": {"type": "integer"}}}}})";
  }
  tools += "]}";
  auto tool_schema = engine::JsonSchema::Compile(tools);
  if (!tool_schema.ok()) return 1;
  const std::pair<const char*, const char*> tool_states[] = {
      {"Restrict, 8 tools, name open", "{\"name\": \"tool_"},
      {"Restrict, 8 tools, name decided", "{\"name\": \"tool_3\", \"arguments\": {\"city\": \"Os"},
  };
  for (const auto& [name, prefix] : tool_states) {
    engine::JsonConstraint c(&v, *tool_schema);
    for (int32_t id : (*tokenizer)->Encode(prefix, false, false)) {
      if (!c.Accept(id).ok()) return 1;
    }
    auto [tbest, tmedian] = Time(passes, 100, [&] { sink += c.Restrict(logits).ok(); });
    std::printf("%-40s %10.1f %10.1f\n", name, tbest, tmedian);
  }
  return sink == 0 ? 1 : 0;
}

int Main(int argc, char** argv) {
  CLI::App app{"Crescent sampler benchmark"};
  int vocab = 49152;  // SmolLM2's
  int calls = 200;
  int passes = 7;
  app.add_option("--vocab", vocab)->check(CLI::Range(1, 1 << 20))->capture_default_str();
  app.add_option("--calls", calls, "Sample() calls per pass")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--passes", passes)->check(CLI::Range(1, 1000))->capture_default_str();
  std::string model_path = engine::DefaultModelPath();
  app.add_option("--model", model_path, "GGUF whose vocabulary the JSON-mode figures use")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  std::mt19937 rng(7);
  std::normal_distribution<float> noise(0.0f, 2.5f);
  std::vector<float> base(static_cast<size_t>(vocab));
  for (float& l : base) l = noise(rng) - 8.0f;
  for (int i = 0; i < 20 && i < vocab; ++i) base[rng() % base.size()] += 12.0f;

  auto with = [](auto edit) {
    engine::SamplingParams p;
    p.has_seed = true;
    p.seed = 1;
    edit(&p);
    return p;
  };
  const std::vector<Mode> modes = {
      {"greedy", with([](engine::SamplingParams* p) { p->temperature = 0.0f; })},
      {"temperature 0.7", with([](engine::SamplingParams* p) { p->temperature = 0.7f; })},
      {"top_k 40", with([](engine::SamplingParams* p) { p->top_k = 40; })},
      {"top_p 0.9", with([](engine::SamplingParams* p) { p->top_p = 0.9f; })},
      {"min_p 0.05", with([](engine::SamplingParams* p) { p->min_p = 0.05f; })},
      {"greedy + logprobs, 5 top", with([](engine::SamplingParams* p) {
         p->temperature = 0.0f;
         p->logprobs = true;
         p->top_logprobs = 5;
       })}};

  std::printf("vocabulary %d, %d calls per pass, %d passes\n", vocab, calls, passes);
  std::printf("%-26s %10s %10s\n", "mode", "best us", "median us");
  std::vector<float> logits(base.size());
  int64_t sink = 0;
  for (const Mode& mode : modes) {
    if (!engine::ValidateSamplingParams(mode.params, vocab).ok()) return 1;
    engine::Sampler sampler(mode.params, vocab);
    std::vector<double> per_call;
    for (int pass = 0; pass < passes; ++pass) {
      double spent = 0;
      for (int c = 0; c < calls; ++c) {
        logits = base;  // Sample() biases and penalizes in place; the copy is not timed.
        const double t0 = Now();
        sink += sampler.Sample(logits, {}, {}).token;
        spent += Now() - t0;
      }
      per_call.push_back(spent / calls * 1e6);
    }
    std::sort(per_call.begin(), per_call.end());
    std::printf("%-26s %10.1f %10.1f\n", mode.name.c_str(), per_call.front(),
                per_call[per_call.size() / 2]);
  }
  if (sink == -1) return 1;  // keeps the picks alive
  if (!std::filesystem::exists(model_path)) {
    std::printf("\nJSON mode: skipped (no model at '%s'; --model PATH)\n", model_path.c_str());
    return 0;
  }
  return JsonMode(model_path, passes);
}

}  // namespace
}  // namespace crescent

int main(int argc, char** argv) { return crescent::Main(argc, argv); }
