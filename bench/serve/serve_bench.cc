// serve_bench: what `crescent serve`'s engine delivers, in process (no HTTP), on a real model.
//
//   1. Batching: output tokens/s at concurrency 1, 8 and 32 for a decode-heavy load (every
//      request: a distinct 64-token prompt, exactly 64 output tokens), and the ratio to
//      concurrency 1.
//   2. Prefix caching: time to first token of a ~1500-token prompt cold, and of a second prompt
//      sharing all but its last block with it (prefix cached), and the ratio.
//
//   serve_bench [--model PATH] [--threads N] [--concurrency 1,8,32] [--prompt-tokens 64]
//               [--output-tokens 64] [--long-prompt 1500] [--repeats 3] [--temperature 0]
#include <algorithm>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "src/common/clock.h"
#include "src/engine/cpu_backend.h"
#include "src/engine/engine.h"
#include "src/engine/loaded_model.h"

namespace crescent {
namespace {

struct Finished {
  engine::RequestStats stats;
  double finish_seconds = 0;  // Since the batch was submitted.
};

// Token ids of ordinary text tokens, drawn from `rng`; distinct streams give distinct prompts
// (no prefix-cache hits between them).
std::vector<int32_t> RandomPrompt(std::mt19937_64& rng, int n, int vocab) {
  std::uniform_int_distribution<int32_t> dist(1000, std::min(vocab, 30000) - 1);
  std::vector<int32_t> p(n);
  for (int32_t& t : p) t = dist(rng);
  return p;
}

// Submits every prompt at once; returns each request's stats once all have finished.
std::vector<Finished> RunBatch(engine::Engine& eng,
                               const std::vector<std::vector<int32_t>>& prompts, int output_tokens,
                               float temperature) {
  std::vector<Finished> out(prompts.size());
  absl::BlockingCounter done(static_cast<int>(prompts.size()));
  const int64_t start = RealClock::Get()->NowNanos();
  for (size_t i = 0; i < prompts.size(); ++i) {
    engine::EngineRequest r;
    r.prompt = prompts[i];
    r.max_tokens = output_tokens;
    r.ignore_eos = true;
    r.sampling.temperature = temperature;
    r.sampling.has_seed = true;  // the same draws on every run
    r.sampling.seed = i;
    auto id = eng.Submit(
        std::move(r), [](const engine::SampleResult&) { return true; },
        [&out, &done, i, start](absl::Status status, engine::FinishReason,
                                const engine::RequestStats& stats,
                                std::span<const engine::KvCache::BlockId>) {
          if (!status.ok()) std::fprintf(stderr, "request failed: %s\n", status.ToString().c_str());
          out[i].stats = stats;
          out[i].finish_seconds = (RealClock::Get()->NowNanos() - start) * 1e-9;
          done.DecrementCount();
        });
    if (!id.ok()) {
      std::fprintf(stderr, "submit: %s\n", id.status().ToString().c_str());
      std::exit(1);
    }
  }
  done.Wait();
  return out;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Main(int argc, char** argv) {
  CLI::App app{"serve_bench: batching throughput and prefix-cache TTFT of the serving engine"};
  std::string model_path = engine::DefaultModelPath();
  int threads = 0, prompt_tokens = 64, output_tokens = 64, long_prompt = 1500, repeats = 3;
  int block_tokens = 16;
  float temperature = 0.0f;
  std::vector<int> concurrency = {1, 8, 32};
  app.add_option("-m,--model", model_path)->capture_default_str();
  app.add_option("-t,--threads", threads, "compute threads (default: all CPUs)");
  app.add_option("--concurrency", concurrency)->delimiter(',')->capture_default_str();
  app.add_option("--prompt-tokens", prompt_tokens)->capture_default_str();
  app.add_option("--output-tokens", output_tokens)->capture_default_str();
  app.add_option("--long-prompt", long_prompt)->capture_default_str();
  app.add_option("--repeats", repeats, "TTFT measurements (median)")->capture_default_str();
  app.add_option("--block-tokens", block_tokens)->capture_default_str();
  app.add_option("--temperature", temperature,
                 "part 1's sampling temperature (0: greedy; above 0 every token of the "
                 "vocabulary is weighed, seeded per request)")
      ->check(CLI::Range(0.0f, 2.0f))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  auto model = engine::LoadModel(model_path, {});
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    return 1;
  }
  auto backend = engine::CpuBackend::Create((*model)->config, (*model)->weights, threads);
  if (!backend.ok()) {
    std::fprintf(stderr, "%s\n", backend.status().ToString().c_str());
    return 1;
  }
  engine::EngineOptions options;
  options.block_tokens = block_tokens;
  options.max_running = std::max(64, *std::max_element(concurrency.begin(), concurrency.end()));
  auto eng = engine::Engine::Create(model->get(), backend->get(), options, RealClock::Get());
  if (!eng.ok()) {
    std::fprintf(stderr, "%s\n", eng.status().ToString().c_str());
    return 1;
  }
  const int vocab = (*model)->config.vocab_size;
  std::printf("serve_bench: %s, %d compute threads, %d-token blocks\n", (*model)->id.c_str(),
              (*backend)->num_threads(), block_tokens);
  std::mt19937_64 rng(12345);

  // Warm-up: page in, grow scratch.
  RunBatch(**eng, {RandomPrompt(rng, prompt_tokens, vocab)}, 8, temperature);

  if (temperature > 0) {
    std::printf(
        "\n1. Batching: %d-token prompts, %d output tokens each (temperature %.2g, "
        "ignore_eos)\n",
        prompt_tokens, output_tokens, temperature);
  } else {
    std::printf("\n1. Batching: %d-token prompts, %d output tokens each (greedy, ignore_eos)\n",
                prompt_tokens, output_tokens);
  }
  std::printf("%12s %12s %14s %12s %16s\n", "concurrency", "wall s", "output tok/s", "vs c=1",
              "mean TTFT s");
  double base = 0;
  for (int c : concurrency) {
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < c; ++i) prompts.push_back(RandomPrompt(rng, prompt_tokens, vocab));
    std::vector<Finished> r = RunBatch(**eng, prompts, output_tokens, temperature);
    double wall = 0, ttft = 0;
    int64_t tokens = 0;
    for (const Finished& f : r) {
      wall = std::max(wall, f.finish_seconds);
      ttft += f.stats.first_token_seconds;
      tokens += f.stats.generated_tokens;
    }
    double tps = tokens / wall;
    if (base == 0) base = tps;
    std::printf("%12d %12.2f %14.1f %11.2fx %16.3f\n", c, wall, tps, tps / base, ttft / c);
  }

  std::printf(
      "\n2. Prefix cache: TTFT of a %d-token prompt, cold vs. sharing all but its last "
      "block with an earlier prompt (median of %d)\n",
      long_prompt, repeats);
  std::vector<double> cold, warm;
  int64_t cached = 0;
  for (int k = 0; k < repeats; ++k) {
    std::vector<int32_t> a = RandomPrompt(rng, long_prompt, vocab);
    std::vector<int32_t> b = a;
    std::vector<int32_t> tail = RandomPrompt(rng, block_tokens, vocab);
    std::copy(tail.begin(), tail.end(), b.end() - block_tokens);
    cold.push_back(RunBatch(**eng, {a}, 1, 0.0f)[0].stats.first_token_seconds);
    Finished w = RunBatch(**eng, {b}, 1, 0.0f)[0];
    warm.push_back(w.stats.first_token_seconds);
    cached = w.stats.cached_tokens;
  }
  double c = Median(cold), w = Median(warm);
  std::printf("%14s %10.3f s\n%14s %10.3f s  (%lld of %d prompt tokens cached)\n%14s %10.1fx\n",
              "cold TTFT", c, "cached TTFT", w, static_cast<long long>(cached), long_prompt,
              "speedup", c / w);
  return 0;
}

}  // namespace
}  // namespace crescent

int main(int argc, char** argv) { return crescent::Main(argc, argv); }
