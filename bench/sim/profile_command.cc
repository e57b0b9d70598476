#include "bench/sim/profile_command.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "bench/sim/profile.h"
#include "src/common/status.h"
#include "src/common/thread_pool.h"
#include "src/engine/cpu_backend.h"
#include "src/engine/kv_cache.h"
#include "src/engine/loaded_model.h"

namespace crescent::bench {
namespace {

namespace policy = ::crescent::conductor::policy;

struct ProfileOptions {
  std::string model;
  std::string out = "profile.json";
  int threads = 0;
  double bandwidth_gbs = 10.0;
  int max_prefill = 1024;
  int decode_steps = 8;
};

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Seq {
  std::vector<int32_t> tokens;
  std::vector<engine::KvCache::BlockId> blocks;
};

class Profiler {
 public:
  Profiler(engine::Backend* backend, engine::KvCache* cache, int vocab)
      : backend_(backend), cache_(cache), vocab_(vocab) {}

  // Runs `n` new tokens of `s` after its first `pos0`; returns seconds.
  absl::StatusOr<double> Run(Seq* s, int64_t pos0, int64_t n) {
    for (int64_t i = 0; i < n; ++i) s->tokens.push_back(static_cast<int32_t>(rng_() % vocab_));
    CRESCENT_RETURN_IF_ERROR(cache_->GrowTable(pos0 + n, &s->blocks));
    engine::SequenceBatch sb{std::span<const int32_t>(s->tokens.data() + pos0, n), pos0, s->blocks,
                             engine::LogitsMode::kLast};
    const double t0 = Now();
    CRESCENT_RETURN_IF_ERROR(backend_->Forward(std::span(&sb, 1), cache_, nullptr, &logits_));
    return Now() - t0;
  }

  // One decode step for every sequence in `seqs`; returns seconds.
  absl::StatusOr<double> Step(std::vector<Seq>& seqs) {
    std::vector<engine::SequenceBatch> batch;
    for (Seq& s : seqs) {
      s.tokens.push_back(static_cast<int32_t>(rng_() % vocab_));
      CRESCENT_RETURN_IF_ERROR(cache_->GrowTable(static_cast<int64_t>(s.tokens.size()), &s.blocks));
    }
    for (Seq& s : seqs) {
      batch.push_back({std::span<const int32_t>(&s.tokens.back(), 1),
                       static_cast<int64_t>(s.tokens.size() - 1), s.blocks,
                       engine::LogitsMode::kLast});
    }
    const double t0 = Now();
    CRESCENT_RETURN_IF_ERROR(backend_->Forward(batch, cache_, nullptr, &logits_));
    return Now() - t0;
  }

  void Free(Seq* s) {
    for (auto b : s->blocks) cache_->Unref(b);
    s->blocks.clear();
    s->tokens.clear();
  }

 private:
  engine::Backend* backend_;
  engine::KvCache* cache_;
  int vocab_;
  std::mt19937 rng_{1234};
  std::vector<float> logits_;
};

absl::Status RunProfile(const ProfileOptions& o) {
  const std::string path = o.model.empty() ? engine::DefaultModelPath() : o.model;
  CRESCENT_ASSIGN_OR_RETURN(auto model, engine::LoadModel(path));
  const model::ModelConfig& c = model->config;
  const int threads = o.threads > 0 ? o.threads : ThreadPool::DefaultThreadCount();
  CRESCENT_ASSIGN_OR_RETURN(auto backend, engine::CpuBackend::Create(c, model->weights, threads));
  const int max_new = std::max(64, o.max_prefill);
  const std::vector<int> batches = {1, 4, 8};
  const std::vector<int> contexts = {128, max_new};
  engine::KvCacheConfig kc{c.n_layers, c.n_kv_heads, c.head_dim, 16, 0};
  kc.num_blocks = (8 * (max_new + o.decode_steps + 16)) / 16 + 2 * (2 * max_new) / 16 + 64;
  CRESCENT_ASSIGN_OR_RETURN(auto cache, engine::KvCache::Create(kc));
  Profiler prof(backend.get(), cache.get(), c.vocab_size);

  policy::CostProfile p;
  p.block_tokens = 512;  // the cluster's hashing block (the traces' 512-token blocks)
  p.kv_bytes_per_token = static_cast<int64_t>(c.n_layers) * c.n_kv_heads * c.head_dim * 2 * 2;
  p.transfer_bandwidth_bytes_per_s = o.bandwidth_gbs * 1e9;
  p.transfer_latency_s = 1e-4;
  {
    Seq warm;
    CRESCENT_RETURN_IF_ERROR(prof.Run(&warm, 0, 32).status());
    prof.Free(&warm);
  }
  for (int n : {max_new / 8, max_new / 2, max_new}) {
    for (int cached : {0, max_new}) {
      Seq s;
      if (cached > 0) CRESCENT_RETURN_IF_ERROR(prof.Run(&s, 0, cached).status());
      CRESCENT_ASSIGN_OR_RETURN(double t, prof.Run(&s, cached, n));
      p.prefill.push_back({n, cached, t});
      std::printf("prefill new %5d cached %5d  %8.4f s\n", n, cached, t);
      std::fflush(stdout);
      prof.Free(&s);
    }
  }
  for (int b : batches) {
    for (int ctx : contexts) {
      std::vector<Seq> seqs(b);
      for (Seq& s : seqs) CRESCENT_RETURN_IF_ERROR(prof.Run(&s, 0, ctx).status());
      double best = 1e30;
      for (int i = 0; i < o.decode_steps; ++i) {
        CRESCENT_ASSIGN_OR_RETURN(double t, prof.Step(seqs));
        best = std::min(best, t);
      }
      p.decode.push_back({b, static_cast<int64_t>(b) * ctx, best});
      std::printf("decode batch %2d context %6d  %8.4f s/step\n", b, b * ctx, best);
      std::fflush(stdout);
      for (Seq& s : seqs) prof.Free(&s);
    }
  }
  CRESCENT_ASSIGN_OR_RETURN(policy::CostModel fit, policy::CostModel::Fit(p));
  const auto& pc = fit.prefill_coefficients();
  const auto& dc = fit.decode_coefficients();
  std::printf("fit: prefill = %.4g + %.4g n + %.4g n (c + n/2); decode = %.4g + %.4g b + %.4g k\n",
              pc[0], pc[1], pc[2], dc[0], dc[1], dc[2]);
  std::ofstream out(o.out);
  out << sim::CostProfileToJson(
             p, absl::StrFormat("measured by crescent-bench profile: CPU backend, %d threads, "
                                "model %s; bandwidth given (%.1f GB/s), not measured",
                                threads, path, o.bandwidth_gbs))
      << "\n";
  if (!out) return absl::InternalError("writing " + o.out);
  std::printf("wrote %s\n", o.out.c_str());
  return absl::OkStatus();
}

}  // namespace

void AddProfileCommand(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<ProfileOptions>();
  CLI::App* cmd = app.add_subcommand(
      "profile", "Measure a node's cost profile (CPU backend) for `crescent-bench sim --profile`");
  cmd->add_option("--model", o->model, "GGUF model (default: $CRESCENT_MODEL or the reference)");
  cmd->add_option("--out", o->out, "profile JSON to write")->capture_default_str();
  cmd->add_option("--threads", o->threads, "default: all CPUs");
  cmd->add_option("--bandwidth-gbs", o->bandwidth_gbs,
                  "KV transfer bandwidth to record, GB/s (not measured)")
      ->capture_default_str();
  cmd->add_option("--max-prefill", o->max_prefill, "largest prefill measured, tokens")
      ->capture_default_str();
  cmd->add_option("--decode-steps", o->decode_steps, "steps per decode point (best kept)")
      ->capture_default_str();
  cmd->callback([o, exit_code] {
    const absl::Status s = RunProfile(*o);
    if (!s.ok()) {
      std::fprintf(stderr, "crescent-bench profile: %s\n", std::string(s.message()).c_str());
      *exit_code = 1;
    }
  });
}

}  // namespace crescent::bench
