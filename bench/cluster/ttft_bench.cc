// ttft_bench: time to first token, colocated vs disaggregated, on this machine.
//
//   ttft_bench [--crescent build/release/bin/crescent] [--model M] [--sizes 512,2048,4096]
//              [--runs 3] [--threads N] [--transport auto]
//
// For each prompt length it sends `runs` requests one at a time (unique random token prompts,
// so nothing is served from a cache; one output token), first to `crescent serve`, then to a
// `crescent up` cluster of one prefill and one decode node, and prints the median TTFT of each,
// the overhead ratio disaggregated / colocated, and what the prefill node measured: how much of
// the KV transfer overlapped its compute (crescent:kv_transfer_overlap_ratio) and how much was
// left exposed after the last layer (crescent:kv_transfer_seconds).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "bench/replay/client.h"
#include "src/cluster/supervisor.h"
#include "src/cluster/up.h"

namespace crescent::bench {
namespace {

struct Flags {
  std::string crescent;
  std::string model;
  std::vector<int> sizes = {512, 2048, 4096};
  int runs = 3;
  int threads = 0;
  int64_t kv_cache_mb = 512;
  std::string transport = "auto";
  bool verbose = false;
};

struct SizeResult {
  double colocated_s = -1;
  double disaggregated_s = -1;
  double overlap = -1;    // Mean kv_transfer_overlap_ratio over the size's requests.
  double exposed_s = -1;  // Mean kv_transfer_seconds.
  double compute_s = -1;  // Mean prefill_compute_seconds.
};

double Median(std::vector<double> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Sum of every series of a metric family member (`name` or `name{...}`).
double SumSeries(const std::string& text, const std::string& name) {
  double total = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    const std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    if (line.empty() || line[0] == '#' || line.compare(0, name.size(), name) != 0) continue;
    const char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != ' ' && next != '{') continue;
    const size_t space = line.rfind(' ');
    total += std::strtod(line.c_str() + space + 1, nullptr);
  }
  return total;
}

// One unique random prompt of `n` tokens per call.
std::vector<int32_t> RandomPrompt(int n, std::mt19937_64& rng) {
  std::uniform_int_distribution<int32_t> dist(1000, 30000);
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  for (auto& t : tokens) t = dist(rng);
  return tokens;
}

// Sends `runs` requests of `size` tokens one after another; returns their TTFTs (seconds).
std::vector<double> Measure(ReplayClient& client, int size, int runs, std::mt19937_64& rng,
                            bool verbose) {
  std::vector<double> ttfts;
  for (int r = 0; r < runs; ++r) {
    ReplayItem item;
    item.tokens = RandomPrompt(size, rng);
    item.max_tokens = 1;
    const auto records = client.Run({item}, nullptr);
    const RequestRecord& rec = records.at(0);
    if (rec.outcome != Outcome::kOk || rec.ttft_s() < 0) {
      std::fprintf(stderr, "ttft_bench: a %d-token request failed (HTTP %d): %s\n", size,
                   rec.http_status, rec.error.c_str());
      continue;
    }
    if (verbose) std::fprintf(stderr, "  %d tokens: TTFT %.3f s\n", size, rec.ttft_s());
    ttfts.push_back(rec.ttft_s());
  }
  return ttfts;
}

absl::StatusOr<std::unique_ptr<ReplayClient>> MakeClient(int port) {
  ClientOptions co;
  co.endpoint = absl::StrCat("http://127.0.0.1:", port);
  co.mode = PromptMode::kTokens;
  co.ignore_eos = true;
  co.request_timeout_s = 600;
  return ReplayClient::Create(co);
}

int Run(const Flags& f) {
  std::mt19937_64 rng(static_cast<uint64_t>(getpid()) * 0x9E3779B97F4A7C15ull);
  std::vector<SizeResult> results(f.sizes.size());
  const int threads = f.threads > 0
                          ? f.threads
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));

  // Colocated: `crescent serve`.
  {
    cluster::SupervisorOptions so;
    so.forward_output = f.verbose;
    auto sup = cluster::Supervisor::Create(so);
    auto port = cluster::PickFreePort();
    if (!sup.ok() || !port.ok()) return 1;
    auto started =
        (*sup)->Start({"serve",
                       f.crescent,
                       {"serve", "--model", f.model, "--port", absl::StrCat(*port), "--threads",
                        absl::StrCat(threads), "--kv-cache-mb", absl::StrCat(f.kv_cache_mb)},
                       {}});
    if (!started.ok()) {
      std::fprintf(stderr, "ttft_bench: %s\n", std::string(started.status().ToString()).c_str());
      return 1;
    }
    bool ready = false;
    for (int i = 0; i < 1200 && !ready; ++i) {
      ready = cluster::HttpGet(*port, "/ready", "", absl::Seconds(2)).ok();
      if (!ready) usleep(100 * 1000);
      if (!(*sup)->Running("serve")) break;
    }
    if (!ready) {
      std::fprintf(stderr, "ttft_bench: crescent serve did not become ready\n");
      return 1;
    }
    auto client = MakeClient(*port);
    if (!client.ok()) return 1;
    Measure(**client, 64, 1, rng, f.verbose);  // Warm-up.
    for (size_t i = 0; i < f.sizes.size(); ++i) {
      std::fprintf(stderr, "colocated: %d-token prompts...\n", f.sizes[i]);
      results[i].colocated_s = Median(Measure(**client, f.sizes[i], f.runs, rng, f.verbose));
    }
    (*sup)->Stop();
  }

  // Disaggregated: `crescent up`, one prefill and one decode node. On failure the colocated
  // figures are still printed.
  do {
    cluster::UpOptions uo;
    uo.model = f.model;
    uo.binary = f.crescent;
    uo.port = 0;
    uo.threads_per_node = threads;
    uo.kv_cache_mb = f.kv_cache_mb;
    uo.transport = f.transport;
    uo.forward_output = f.verbose;
    auto up = cluster::LocalCluster::Start(uo);
    if (!up.ok()) {
      std::fprintf(stderr, "ttft_bench: crescent up: %s\n",
                   std::string(up.status().ToString()).c_str());
      break;
    }
    std::string prefill_metrics;
    for (const auto& p : (*up)->info().processes) {
      if (p.role == "prefill") prefill_metrics = p.http;
    }
    const int metrics_port =
        prefill_metrics.empty()
            ? 0
            : std::atoi(prefill_metrics.substr(prefill_metrics.rfind(':') + 1).c_str());
    auto read_metrics = [&]() -> std::string {
      if (metrics_port == 0) return "";
      auto m = cluster::HttpGet(metrics_port, "/metrics", "", absl::Seconds(5));
      return m.ok() ? *m : "";
    };
    auto client = MakeClient((*up)->info().http_port);
    if (!client.ok()) break;
    Measure(**client, 64, 1, rng, f.verbose);  // Warm-up.
    for (size_t i = 0; i < f.sizes.size(); ++i) {
      std::fprintf(stderr, "disaggregated: %d-token prompts...\n", f.sizes[i]);
      const std::string before = read_metrics();
      results[i].disaggregated_s = Median(Measure(**client, f.sizes[i], f.runs, rng, f.verbose));
      const std::string after = read_metrics();
      auto mean = [&](const std::string& family) {
        const double n = SumSeries(after, family + "_count") - SumSeries(before, family + "_count");
        const double s = SumSeries(after, family + "_sum") - SumSeries(before, family + "_sum");
        return n > 0 ? s / n : -1.0;
      };
      results[i].overlap = mean("crescent:kv_transfer_overlap_ratio");
      results[i].exposed_s = mean("crescent:kv_transfer_seconds");
      results[i].compute_s = mean("crescent:prefill_compute_seconds");
    }
    (*up)->Stop();
  } while (false);

  std::printf(
      "TTFT, median of %d requests each (unique prompts, 1 output token, %d compute "
      "threads per engine, transport %s)\n",
      f.runs, threads, f.transport.c_str());
  std::printf("%8s %14s %14s %10s %10s %14s %14s\n", "prompt", "colocated_s", "disagg_s",
              "overhead", "overlap", "kv_exposed_s", "prefill_comp_s");
  auto fmt = [](double v, const char* spec) {
    if (v < 0) return std::string("-");
    char buf[32];
    std::snprintf(buf, sizeof(buf), spec, v);
    return std::string(buf);
  };
  for (size_t i = 0; i < f.sizes.size(); ++i) {
    const SizeResult& r = results[i];
    const double ratio =
        r.colocated_s > 0 && r.disaggregated_s > 0 ? r.disaggregated_s / r.colocated_s : -1;
    std::printf("%8d %14s %14s %10s %10s %14s %14s\n", f.sizes[i],
                fmt(r.colocated_s, "%.3f").c_str(), fmt(r.disaggregated_s, "%.3f").c_str(),
                fmt(ratio, "%.3fx").c_str(), fmt(r.overlap, "%.3f").c_str(),
                fmt(r.exposed_s, "%.4f").c_str(), fmt(r.compute_s, "%.3f").c_str());
  }
  std::printf(
      "overhead = disagg / colocated TTFT; overlap = fraction of the KV transfer hidden "
      "behind compute (prefill node); kv_exposed_s = transfer time left after the last "
      "layer\n");
  return 0;
}

}  // namespace
}  // namespace crescent::bench

int main(int argc, char** argv) {
  crescent::bench::Flags f;
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    self[n] = '\0';
    std::string dir(self);
    f.crescent = dir.substr(0, dir.rfind('/')) + "/crescent";
  }
  if (const char* home = std::getenv("HOME")) {
    f.model = std::string(home) + "/.cache/crescent/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  }
  CLI::App app("TTFT of colocated (crescent serve) vs disaggregated (crescent up) serving");
  app.add_option("--crescent", f.crescent, "The crescent binary")->capture_default_str();
  app.add_option("--model", f.model, "GGUF model")->capture_default_str();
  app.add_option("--sizes", f.sizes, "Prompt lengths in tokens")->delimiter(',');
  app.add_option("--runs", f.runs, "Requests per size and mode (median)")->capture_default_str();
  app.add_option("--threads", f.threads, "Compute threads per engine (0: all CPUs)")
      ->capture_default_str();
  app.add_option("--kv-cache-mb", f.kv_cache_mb, "KV cache per engine (MiB)")
      ->capture_default_str();
  app.add_option("--transport", f.transport, "KV transfer transport for crescent up")
      ->capture_default_str();
  app.add_flag("--verbose", f.verbose, "Forward the servers' logs and print every request");
  CLI11_PARSE(app, argc, argv);
  if (f.runs < 1 || f.sizes.empty()) {
    std::fprintf(stderr, "ttft_bench: --runs must be >= 1 and --sizes non-empty\n");
    return 2;
  }
  return crescent::bench::Run(f);
}
