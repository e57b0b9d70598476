// sampler_bench: the cost of picking one token from a vocabulary of logits, per sampling mode.
//
// The serving engine samples each sequence of a step one after another on its loop thread, so
// at batch B a step pays B of these on top of the forward pass (model_bench measures decode with
// greedy picks only). Prints microseconds per Sample() call (best and median of the passes)
// for: greedy; temperature alone (OpenAI's defaults: the whole vocabulary is weighed); top_k
// 40; top_p 0.9; min_p 0.05; greedy with logprobs and 5 top_logprobs. Logits are drawn the way
// a language model's look (a few large, most far below), from a fixed seed.
//
//   sampler_bench [--vocab N] [--calls N] [--passes N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "src/engine/sampler.h"

namespace crescent {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Mode {
  std::string name;
  engine::SamplingParams params;
};

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
  return sink == -1 ? 1 : 0;  // keeps the picks alive
}

}  // namespace
}  // namespace crescent

int main(int argc, char** argv) { return crescent::Main(argc, argv); }
