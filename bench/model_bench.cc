// model_bench: the CPU runtime's speed against the memory-bandwidth "speed of light".
//
// Prints, in one run: DRAM bandwidth (a stream-copy test and a read-only test), weight bytes
// read per decode step, prefill tokens/s for a 512-token prompt, decode tokens/s at batch 1
// (128 tokens) and at batch 8 and 32, and batch-1 decode's fraction of the bandwidth bound
// (bandwidth / bytes per token).
//
// How the bound is taken. Both bandwidth tests run on the same threads as the model, over
// 512 MiB buffers, far larger than the last-level cache, best of 5 passes, once before the model
// runs and once after (the higher figure counts):
//  - copy: memcpy of half the buffer onto the other half; bytes read + bytes written per second
//    (the STREAM convention). This is the figure the "bound" line uses.
//  - read: a summing loop over the buffer, each thread walking its share as 8 interleaved
//    streams with software prefetch; bytes read per second. Decode only reads weights, so this
//    is the most decode can draw (bench/common/bandwidth.h). On few cores it is below the copy
//    figure, which counts every byte twice and whose writes stream out without holding the
//    read-miss slots that limit how many lines one core can have in flight.
// The reference model (98 MB) is close to the size of large server L3 caches, so part of it may
// be served from cache between steps: decode can then beat the read-only figure, and its
// fraction of the copy bound is the conservative number.
// Prefill is the best of 3 runs; batch-1 decode the best of 5, like the bandwidth figures, so
// that on a shared machine both sides of the ratio are taken the same way (batches 8 and 32: the
// best of 3, their scaling over batch 1 being a target too). That ratio compares two bests
// taken up to a minute apart. Each batch-1 run is therefore also measured against the copy
// bandwidth of its own moment (a copy test right before and right after it, the higher
// counting): those per-run fractions and their median are printed too.
//
//   model_bench [--model PATH] [--threads N] [--decode-steps N]
//               [--decode-only [--batch N] [--phases]] [--json]
//
// --decode-only runs nothing but decode at --batch (default 1; no bandwidth test, prefill or
// other batches): the mode to profile a decode step under perf or callgrind. With --phases it
// also prints where a step's time goes (CpuBackend::MeasurePhases): the Q/K/V, attention output,
// gate/up and down projections, attention and the logits, each with the bandwidth it draws.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "bench/common/bandwidth.h"
#include "bench/common/cpu_time.h"
#include "bench/common/model_runs.h"
#include "kernels/cpu/ops.h"
#include "nlohmann/json.hpp"
#include "src/common/clock.h"
#include "src/common/status.h"
#include "src/common/thread_pool.h"
#include "src/engine/cpu_backend.h"
#include "src/engine/kv_cache.h"
#include "src/engine/loaded_model.h"

namespace crescent {
namespace {

using bench::DecodeTokensPerSecond;
using bench::KvBytesPerStep;

// The phases of one decode step at `batch` (mean over the steps), with the bandwidth each
// draws: the matrices' bytes for the projections (each read once a step), the K and V bytes for
// attention (`kv_bytes` a step).
void PrintPhases(const engine::ForwardPhases& p, const model::ModelWeights& w, int batch,
                 double kv_bytes) {
  double qkv = 0, out = 0, gate_up = 0, down = 0;
  for (const model::LayerWeights& lw : w.layers) {
    qkv += static_cast<double>(lw.attn_q.nbytes + lw.attn_k.nbytes + lw.attn_v.nbytes);
    out += static_cast<double>(lw.attn_output.nbytes);
    gate_up += static_cast<double>(lw.ffn_gate.nbytes + lw.ffn_up.nbytes);
    down += static_cast<double>(lw.ffn_down.nbytes);
  }
  const double steps = static_cast<double>(std::max<int64_t>(1, p.calls));
  const double in_phases =
      p.qkv + p.attention + p.attn_output + p.ffn_gate_up + p.ffn_down + p.logits;
  const struct {
    const char* name;
    double seconds, bytes;
  } rows[] = {{"qkv", p.qkv, qkv},
              {"attention", p.attention, kv_bytes},
              {"attn_output", p.attn_output, out},
              {"ffn_gate_up", p.ffn_gate_up, gate_up},
              {"ffn_down", p.ffn_down, down},
              {"logits", p.logits, static_cast<double>(w.output.nbytes)},
              {"other", p.total - in_phases, 0},
              {"total", p.total, 0}};
  std::printf("phases of a decode step at batch %d (mean of %.0f steps):\n", batch, steps);
  std::printf("  %-12s %10s %7s %10s %8s\n", "phase", "us/step", "share", "MB/step", "GB/s");
  for (const auto& r : rows) {
    const double us = r.seconds / steps * 1e6;
    std::printf("  %-12s %10.1f %6.1f%%", r.name, us, 100.0 * r.seconds / p.total);
    if (r.bytes > 0) std::printf(" %10.2f %8.2f", r.bytes / 1e6, r.bytes / (us * 1e-6) / 1e9);
    std::printf("\n");
  }
}

int Main(int argc, char** argv) {
  CLI::App app{"Crescent CPU model benchmark"};
  std::string model_path = engine::DefaultModelPath();
  int threads = 0;
  bool json = false;
  int decode_steps = 128;
  app.add_option("--model", model_path)->capture_default_str();
  app.add_option("--threads", threads, "default: all CPUs");
  app.add_option("--decode-steps", decode_steps)->capture_default_str();
  bool decode_only = false;
  int decode_batch = 1;
  app.add_flag("--json", json, "print one JSON object instead of a table");
  CLI::Option* decode_only_flag =
      app.add_flag("--decode-only", decode_only,
                   "only decode at --batch (a 64-token prompt per sequence, then --decode-steps "
                   "tokens), for profiling");
  app.add_option("--batch", decode_batch, "sequences decoded together with --decode-only")
      ->check(CLI::Range(1, 32))
      ->capture_default_str();
  bool phases = false;
  app.add_flag("--phases", phases,
               "with --decode-only: where a decode step's time goes (projections, attention, "
               "logits) and the bandwidth each part draws")
      ->needs(decode_only_flag);
  CLI11_PARSE(app, argc, argv);
  if (threads <= 0) threads = ThreadPool::DefaultThreadCount();

  auto model = engine::LoadModel(model_path);
  if (!model.ok()) {
    std::fprintf(stderr, "model_bench: %s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  const model::ModelConfig& c = (*model)->config;
  auto backend = engine::CpuBackend::Create(c, (*model)->weights, threads);
  if (!backend.ok()) {
    std::fprintf(stderr, "model_bench: %s\n", std::string(backend.status().message()).c_str());
    return 1;
  }
  engine::KvCacheConfig kc{c.n_layers, c.n_kv_heads, c.head_dim, 16, 0};
  kc.num_blocks = 32 * ((64 + decode_steps + 15) / 16) + (512 + 15) / 16 + 8;
  auto cache = engine::KvCache::Create(kc);
  if (!cache.ok()) return 1;

  std::mt19937 rng(1234);
  if (decode_only) {
    engine::ForwardPhases measured;
    auto tps = DecodeTokensPerSecond(backend->get(), cache->get(), c.vocab_size, decode_batch, 64,
                                     decode_steps, &rng, phases ? &measured : nullptr);
    if (!tps.ok()) {
      std::fprintf(stderr, "model_bench: %s\n", std::string(tps.status().message()).c_str());
      return 1;
    }
    std::printf("decode batch %d (%d tokens)   %.1f tok/s\n", decode_batch, decode_steps, *tps);
    if (phases) {
      PrintPhases(measured, (*model)->weights, decode_batch,
                  KvBytesPerStep(c, decode_batch, decode_steps));
    }
    return 0;
  }

  ThreadPool pool(threads);
  // Bandwidth is measured before and after the model runs and the higher figure kept: a burst
  // of other load on a shared machine during one test would otherwise lower the bound and
  // flatter the fraction.
  bench::DramProbe probe(&pool, size_t{512} << 20);
  const bench::DramBandwidth before = probe.Measure(5);
  double weight_bytes = static_cast<double>((*model)->weights.WeightBytesPerToken());

  // Prefill: one 512-token prompt, best of 3.
  auto prefill =
      bench::PrefillTokensPerSecond(backend->get(), cache->get(), c.vocab_size, 512, 3, &rng);
  if (!prefill.ok()) {
    std::fprintf(stderr, "model_bench: %s\n", std::string(prefill.status().message()).c_str());
    return 1;
  }
  const double prefill_tps = *prefill;
  // KV bytes read per step at batch 1.
  double kv_bytes = KvBytesPerStep(c, 1, decode_steps);
  double decode[3] = {0, 0, 0};
  const int batches[3] = {1, 8, 32};
  // Batches 8 and 32 are the best of 3 runs. Batch 1 runs kB1Runs times, each between two
  // stream-copy measurements (best of 3 passes each, the higher counts), so that each run's
  // fraction of the bound compares decode with the memory system of the same moment: on a
  // shared host the bandwidth moves by a third within minutes, more than any change to the
  // code. Batch 1's runs, their bandwidth and fraction, and the hypervisor's steal during each
  // are printed (see bench/common/cpu_time.h).
  constexpr int kB1Runs = 5;
  double b1_runs[kB1Runs] = {}, b1_steal[kB1Runs] = {}, b1_copy[kB1Runs] = {},
         b1_fraction[kB1Runs] = {};
  for (int i = 0; i < 3; ++i) {
    const int runs = batches[i] == 1 ? kB1Runs : 3;
    for (int rep = 0; rep < runs; ++rep) {
      const double copy_before = batches[i] == 1 ? probe.Measure(3).copy.best : 0;
      const absl::StatusOr<bench::CpuTimes> cpu0 = bench::SampleCpuTimes();
      auto tps = DecodeTokensPerSecond(backend->get(), cache->get(), c.vocab_size, batches[i], 64,
                                       decode_steps, &rng);
      if (!tps.ok()) {
        std::fprintf(stderr, "model_bench: %s\n", std::string(tps.status().message()).c_str());
        return 1;
      }
      const absl::StatusOr<bench::CpuTimes> cpu1 = bench::SampleCpuTimes();
      decode[i] = std::max(decode[i], *tps);
      if (batches[i] == 1) {
        b1_runs[rep] = *tps;
        b1_steal[rep] = cpu0.ok() && cpu1.ok() ? bench::StealFraction(*cpu0, *cpu1) : 0;
        b1_copy[rep] = std::max(copy_before, probe.Measure(3).copy.best);
        b1_fraction[rep] = *tps * (weight_bytes + kv_bytes) / (b1_copy[rep] * 1e9);
      }
    }
  }
  const bench::DramBandwidth after = probe.Measure(5);
  const double bw = std::max(before.copy.best, after.copy.best);
  const double read_bw = std::max(before.read.best, after.read.best);
  double bound = bw * 1e9 / (weight_bytes + kv_bytes);
  // The median of the batch-1 runs' own fractions.
  double sorted_fraction[kB1Runs];
  std::copy(b1_fraction, b1_fraction + kB1Runs, sorted_fraction);
  std::sort(sorted_fraction, sorted_fraction + kB1Runs);
  const double median_fraction = sorted_fraction[kB1Runs / 2];
  double fraction = decode[0] / bound;
  double read_bound = read_bw * 1e9 / (weight_bytes + kv_bytes);

  if (json) {
    nlohmann::json j = {{"model", (*model)->id},
                        {"threads", threads},
                        {"copy_bandwidth_gbs", bw},
                        {"read_bandwidth_gbs", read_bw},
                        {"weight_bytes_per_token", weight_bytes},
                        {"kv_bytes_per_token_b1", kv_bytes},
                        {"prefill_512_tok_s", prefill_tps},
                        {"decode_b1_tok_s", decode[0]},
                        {"decode_b1_runs_tok_s", b1_runs},
                        {"decode_b1_runs_steal", b1_steal},
                        {"decode_b1_runs_copy_bandwidth_gbs", b1_copy},
                        {"decode_b1_runs_fraction_of_bound", b1_fraction},
                        {"decode_b1_median_run_fraction_of_bound", median_fraction},
                        {"decode_b8_tok_s", decode[1]},
                        {"decode_b32_tok_s", decode[2]},
                        {"decode_b1_bound_tok_s", bound},
                        {"decode_b1_fraction_of_bound", fraction},
                        {"decode_b1_read_bound_tok_s", read_bound},
                        {"decode_b1_fraction_of_read_bound", decode[0] / read_bound}};
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("model                         %s (%s, %d layers, d=%d)\n", (*model)->id.c_str(),
              c.arch.c_str(), c.n_layers, c.n_embd);
  std::printf("threads                       %d\n", threads);
  std::printf("stream-copy bandwidth         %.2f GB/s (read + write)\n", bw);
  std::printf("read-only bandwidth           %.2f GB/s\n", read_bw);
  std::printf("weight bytes per token        %.1f MB (+ %.2f MB KV at batch 1)\n",
              weight_bytes / 1e6, kv_bytes / 1e6);
  std::printf("prefill, 512-token prompt     %.1f tok/s\n", prefill_tps);
  std::printf("decode batch 1 (%d tokens)   %.1f tok/s  (best of", decode_steps, decode[0]);
  for (int rep = 0; rep < kB1Runs; ++rep) {
    std::printf(" %.1f%s", b1_runs[rep], rep + 1 < kB1Runs ? "," : ")\n");
  }
  std::printf("CPU steal during those runs   ");
  for (int rep = 0; rep < kB1Runs; ++rep) {
    std::printf("%.1f%%%s", 100 * b1_steal[rep], rep + 1 < kB1Runs ? ", " : "\n");
  }
  std::printf("stream-copy around each run   ");
  for (int rep = 0; rep < kB1Runs; ++rep) {
    std::printf("%.2f%s", b1_copy[rep], rep + 1 < kB1Runs ? ", " : " GB/s\n");
  }
  std::printf("each run's fraction of bound  ");
  for (int rep = 0; rep < kB1Runs; ++rep) {
    std::printf("%.1f%%%s", 100 * b1_fraction[rep], rep + 1 < kB1Runs ? ", " : "");
  }
  std::printf(" (median %.1f%%)\n", 100 * median_fraction);
  std::printf("decode batch 8                %.1f tok/s  (%.2fx batch 1)\n", decode[1],
              decode[1] / decode[0]);
  std::printf("decode batch 32               %.1f tok/s  (%.2fx batch 1)\n", decode[2],
              decode[2] / decode[0]);
  std::printf("bandwidth bound, batch 1      %.1f tok/s\n", bound);
  std::printf("batch-1 fraction of bound     %.1f%%\n", fraction * 100);
  std::printf("read-only bound, batch 1      %.1f tok/s (batch 1 at %.1f%%)\n", read_bound,
              100 * decode[0] / read_bound);
  return 0;
}

}  // namespace
}  // namespace crescent

int main(int argc, char** argv) { return crescent::Main(argc, argv); }
