// serve_bench: what `crescent serve`'s engine delivers, in process (no HTTP), on a real model.
//
//   1. Batching: output tokens/s at concurrency 1, 8 and 32 for a decode-heavy load (every
//      request: a distinct 64-token prompt, exactly 64 output tokens), and the ratio to
//      concurrency 1.
//   2. Prefix caching: time to first token of a ~1500-token prompt cold, and of a second prompt
//      sharing all but its last block with it (prefix cached), and the ratio.
//   3. Speculative decoding (prompt lookup): batch-1 greedy decode tok/s of chat requests with
//      --speculative-tokens drafts a step against none, on requests whose answers repeat their
//      prompt (copying, editing) and on one that does not; the drafts confirmed, the tokens a
//      step, and how many output tokens agree with the plain run; then part 1's random-prompt
//      load at each concurrency with and without it (batched, where a step is compute-bound).
//      Each is run twice: computing every proposed draft (draft cost 0, "all") and only the
//      drafts each sequence's record pays for at the step's batch (--spec-draft-cost, "fit").
//
//   serve_bench [--model PATH] [--threads N] [--concurrency 1,8,32] [--prompt-tokens 64]
//               [--output-tokens 64] [--long-prompt 1500] [--repeats 3] [--temperature 0]
//               [--speculative-tokens 4] [--spec-output-tokens 160] [--spec-draft-cost 0.2]
#include <algorithm>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
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

// One greedy request alone (batch 1): its tokens, stats and decode tok/s (first token to end).
struct Single {
  std::vector<int32_t> tokens;
  engine::RequestStats stats;
  double decode_tok_s = 0;
};
Single RunOne(engine::Engine& eng, const std::vector<int32_t>& prompt, int max_tokens) {
  Single out;
  absl::Notification done;
  engine::EngineRequest r;
  r.prompt = prompt;
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  const int64_t start = RealClock::Get()->NowNanos();
  double end_s = 0;
  auto id = eng.Submit(
      std::move(r),
      [&out](const engine::SampleResult& s) {
        out.tokens.push_back(s.token);
        return true;
      },
      [&](absl::Status status, engine::FinishReason, const engine::RequestStats& stats,
          std::span<const engine::KvCache::BlockId>) {
        if (!status.ok()) std::fprintf(stderr, "request failed: %s\n", status.ToString().c_str());
        out.stats = stats;
        end_s = (RealClock::Get()->NowNanos() - start) * 1e-9;
        done.Notify();
      });
  if (!id.ok()) {
    std::fprintf(stderr, "submit: %s\n", id.status().ToString().c_str());
    std::exit(1);
  }
  done.WaitForNotification();
  const double decode_s = end_s - out.stats.first_token_seconds;
  if (out.tokens.size() > 1 && decode_s > 0) {
    out.decode_tok_s = static_cast<double>(out.tokens.size() - 1) / decode_s;
  }
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
  int speculative_tokens = 4, spec_output_tokens = 160, spec_ngram_min = 2, spec_ngram_max = 4;
  double spec_draft_cost = engine::EngineOptions{}.speculative_draft_cost;
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
  app.add_option("--speculative-tokens", speculative_tokens,
                 "part 3's drafts a step (0 skips part 3)")
      ->check(CLI::Range(0, 64))
      ->capture_default_str();
  app.add_option("--spec-output-tokens", spec_output_tokens, "part 3's max_tokens")
      ->capture_default_str();
  app.add_option("--spec-ngram-min", spec_ngram_min, "part 3's shortest n-gram looked up")
      ->capture_default_str();
  app.add_option("--spec-ngram-max", spec_ngram_max, "part 3's longest n-gram looked up")
      ->capture_default_str();
  app.add_option("--spec-draft-cost", spec_draft_cost,
                 "part 3's \"fit\" engine: a draft token's cost as a fraction of a batch-1 step")
      ->check(CLI::Range(0.0, 0.999))
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

  if (speculative_tokens > 0 && (*model)->chat_template) {
    engine::EngineOptions spec_options = options;
    spec_options.speculative_tokens = speculative_tokens;
    spec_options.speculative_ngram_min = spec_ngram_min;
    spec_options.speculative_ngram_max = spec_ngram_max;
    spec_options.speculative_draft_cost = 0;
    auto spec =
        engine::Engine::Create(model->get(), backend->get(), spec_options, RealClock::Get());
    if (!spec.ok()) {
      std::fprintf(stderr, "%s\n", spec.status().ToString().c_str());
      return 1;
    }
    spec_options.speculative_draft_cost = spec_draft_cost;
    auto fit = engine::Engine::Create(model->get(), backend->get(), spec_options, RealClock::Get());
    if (!fit.ok()) {
      std::fprintf(stderr, "%s\n", fit.status().ToString().c_str());
      return 1;
    }
    // An engine's drafting over one run: drafts checked, confirmed, and steps taken.
    struct Drafting {
      double drafted = 0, accepted = 0, steps = 0;
      double rate() const { return drafted > 0 ? 100.0 * accepted / drafted : 0.0; }
    };
    auto drafting = [](const engine::EngineStats& before, const engine::EngineStats& after) {
      return Drafting{
          static_cast<double>(after.draft_tokens - before.draft_tokens),
          static_cast<double>(after.accepted_draft_tokens - before.accepted_draft_tokens),
          static_cast<double>(after.steps - before.steps)};
    };
    const std::string paragraph =
        "The lighthouse stood on a rock at the mouth of the bay. Every evening the keeper "
        "climbed the one hundred and twelve steps, trimmed the wick, wound the clockwork and "
        "lit the lamp, and every morning he put it out again and wrote the weather in his book.";
    const std::string code =
        "def total_price(items, tax_rate):\n    total = 0\n    for item in items:\n"
        "        total += item.price * item.quantity\n    return total * (1 + tax_rate)\n";
    const std::vector<std::pair<std::string, std::string>> tasks = {
        {"copy", "Repeat the following text exactly, word for word:\n\n" + paragraph},
        {"edit",
         "Rename the variable total to subtotal in this Python function and show the "
         "whole function:\n\n" +
             code},
        {"story", "Write a short story about a cat who learns to sail."},
    };
    std::printf(
        "\n3. Speculative decoding (prompt lookup, up to %d drafts a step, n-grams of %d-%d "
        "tokens): batch 1, greedy, up to %d output tokens (best of %d); \"all\" computes every "
        "proposed draft, \"fit\" those that pay at draft cost %.2f\n",
        speculative_tokens, spec_options.speculative_ngram_min, spec_options.speculative_ngram_max,
        spec_output_tokens, repeats, spec_draft_cost);
    std::printf("%6s %6s %10s %8s %7s %8s %8s %8s %7s %8s %8s %10s\n", "task", "tokens",
                "plain tok/s", "all", "speedup", "accepted", "tok/step", "fit", "speedup",
                "accepted", "tok/step", "same");
    for (const auto& [name, text] : tasks) {
      const model::ChatMessage message{"user", text};
      auto rendered = (*model)->chat_template->Render(std::span(&message, 1), true);
      if (!rendered.ok()) {
        std::fprintf(stderr, "%s\n", rendered.status().ToString().c_str());
        return 1;
      }
      const std::vector<int32_t> prompt =
          (*model)->tokenizer->Encode(*rendered, /*add_special=*/false, /*parse_special=*/true);
      Single plain, fast, fitted;
      Drafting all_drafts, fit_drafts;
      for (int k = 0; k < repeats; ++k) {
        Single a = RunOne(**eng, prompt, spec_output_tokens);
        if (a.decode_tok_s > plain.decode_tok_s) plain = a;
        engine::EngineStats before = (*spec)->Stats();
        Single b = RunOne(**spec, prompt, spec_output_tokens);
        all_drafts = drafting(before, (*spec)->Stats());
        if (b.decode_tok_s > fast.decode_tok_s) fast = b;
        before = (*fit)->Stats();
        Single f = RunOne(**fit, prompt, spec_output_tokens);
        fit_drafts = drafting(before, (*fit)->Stats());
        if (f.decode_tok_s > fitted.decode_tok_s) fitted = f;
      }
      auto same = [&](const Single& x) {
        size_t n = 0;
        while (n < plain.tokens.size() && n < x.tokens.size() && plain.tokens[n] == x.tokens[n]) {
          ++n;
        }
        return n;
      };
      auto per_step = [](const Single& x, const Drafting& d) {
        return d.steps > 0 ? static_cast<double>(x.tokens.size()) / d.steps : 0.0;
      };
      std::printf(
          "%6s %6zu %10.1f %8.1f %6.2fx %7.0f%% %8.2f %8.1f %6.2fx %7.0f%% %8.2f %4zu,%zu/%zu\n",
          name.c_str(), fast.tokens.size(), plain.decode_tok_s, fast.decode_tok_s,
          fast.decode_tok_s / plain.decode_tok_s, all_drafts.rate(), per_step(fast, all_drafts),
          fitted.decode_tok_s, fitted.decode_tok_s / plain.decode_tok_s, fit_drafts.rate(),
          per_step(fitted, fit_drafts), same(fast), same(fitted), plain.tokens.size());
    }
    // Batched: part 1's load with and without speculation, where a step is compute-bound and
    // extra rows are not free.
    std::printf("(part 1's load, best of %d rounds of plain, all, fit)\n", repeats);
    std::printf("%6s %6s %10s %8s %7s %8s %8s %7s %8s\n", "batch", "tokens", "plain tok/s", "all",
                "ratio", "accepted", "fit", "ratio", "accepted");
    for (int c : concurrency) {
      std::vector<std::vector<int32_t>> prompts;
      for (int i = 0; i < c; ++i) prompts.push_back(RandomPrompt(rng, prompt_tokens, vocab));
      auto rate = [&](engine::Engine& e) {
        std::vector<Finished> r = RunBatch(e, prompts, output_tokens, 0.0f);
        double wall = 0;
        int64_t tokens = 0;
        for (const Finished& f : r) {
          wall = std::max(wall, f.finish_seconds);
          tokens += f.stats.generated_tokens;
        }
        return std::make_pair(tokens, static_cast<double>(tokens) / wall);
      };
      // Rounds of plain, all, fit (the host's drift hits all three alike); best of each.
      int64_t tokens = 0;
      double plain_rate = 0, all_rate = 0, fit_rate = 0;
      Drafting all_drafts, fit_drafts;
      for (int k = 0; k < repeats; ++k) {
        const auto [n, p] = rate(**eng);
        tokens = n;
        plain_rate = std::max(plain_rate, p);
        engine::EngineStats before = (*spec)->Stats();
        all_rate = std::max(all_rate, rate(**spec).second);
        all_drafts = drafting(before, (*spec)->Stats());
        before = (*fit)->Stats();
        fit_rate = std::max(fit_rate, rate(**fit).second);
        fit_drafts = drafting(before, (*fit)->Stats());
      }
      std::printf("%6d %6lld %10.1f %8.1f %6.2fx %7.0f%% %8.1f %6.2fx %7.0f%%\n", c,
                  static_cast<long long>(tokens), plain_rate, all_rate, all_rate / plain_rate,
                  all_drafts.rate(), fit_rate, fit_rate / plain_rate, fit_drafts.rate());
    }
  }
  return 0;
}

}  // namespace
}  // namespace crescent

int main(int argc, char** argv) { return crescent::Main(argc, argv); }
