// `crescent up`: a whole disaggregated cluster (KV master, conductor, P prefill and D decode
// nodes) on loopback from one command, stopped cleanly by Ctrl-C / SIGTERM (src/cluster/up.h).
#include <signal.h>
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "src/cli/command.h"
#include "src/cluster/up.h"
#include "src/common/logging.h"
#include "src/engine/loaded_model.h"

namespace crescent::cli {
namespace {

struct UpFlags {
  cluster::UpOptions options;
  int64_t ready_timeout_s = 300;
  double stop_timeout_s = 40;  // Above the nodes' 30 s drain.
};

int RunUp(UpFlags f) {
  cluster::UpOptions& o = f.options;
  if (o.api_key.empty()) {
    if (const char* env = std::getenv("CRESCENT_API_KEY")) o.api_key = env;
  }
  if (f.ready_timeout_s < 1) {
    std::fprintf(stderr, "crescent up: --ready-timeout-s must be at least 1\n");
    return 2;
  }
  if (!(f.stop_timeout_s >= 0)) {
    std::fprintf(stderr, "crescent up: --stop-timeout-s must be >= 0\n");
    return 2;
  }
  o.ready_timeout = absl::Seconds(f.ready_timeout_s);
  o.stop_timeout = absl::Seconds(f.stop_timeout_s);
  SetLogRole("up");
  // Children restore their own signal mask; our threads (one reader per child) inherit this one.
  const sigset_t signals = BlockStopSignals();

  auto started = cluster::LocalCluster::Start(o);
  if (!started.ok()) {
    const bool bad_flag = started.status().code() == absl::StatusCode::kInvalidArgument;
    std::fprintf(stderr, "crescent up: %s\n", std::string(started.status().ToString()).c_str());
    return bad_flag ? 2 : 1;
  }
  cluster::LocalCluster& c = **started;
  const cluster::ClusterInfo& info = c.info();
  for (const auto& p : info.processes) {
    CRESCENT_LOG(info, "{:<10} pid {:<7} grpc={} http={}", p.name, p.pid,
                 p.grpc.empty() ? "-" : p.grpc, p.http.empty() ? "-" : p.http);
  }
  std::printf("Crescent is up: %s (model %s, %d prefill + %d decode nodes)\n", info.url.c_str(),
              info.model_id.c_str(), o.prefill, o.decode);
  std::fflush(stdout);

  // Serve until a stop signal; report node deaths; give up without the conductor or master.
  size_t reported = 0;
  int exit_code = 0;
  const timespec tick{0, 200 * 1000 * 1000};
  while (true) {
    const int signo = sigtimedwait(&signals, nullptr, &tick);
    if (signo == SIGINT || signo == SIGTERM) {
      CRESCENT_LOG(info, "{}: stopping the cluster (nodes drain first)",
                   signo == SIGINT ? "SIGINT" : "SIGTERM");
      break;
    }
    const std::vector<cluster::ChildExit> dead = c.UnexpectedExits();
    for (; reported < dead.size(); ++reported) {
      const cluster::ChildExit& e = dead[reported];
      CRESCENT_LOG(error, "!!! {} (pid {}) {}: it is not restarted; the rest keeps serving", e.name,
                   e.pid, e.Describe());
    }
    if (auto essential = c.EssentialExit()) {
      CRESCENT_LOG(error, "the cluster cannot serve without its {}: stopping everything",
                   essential->name);
      exit_code = 1;
      break;
    }
  }
  c.Stop();
  CRESCENT_LOG(info, "cluster stopped");
  return exit_code;
}

}  // namespace

void AddUpCommands(CLI::App& app, std::vector<Command>* commands) {
  auto f = std::make_shared<UpFlags>();
  cluster::UpOptions& o = f->options;
  o.model = engine::DefaultModelPath();
  CLI::App* up = app.add_subcommand(
      "up",
      "Start a whole disaggregated cluster on loopback (KV master, conductor, prefill and "
      "decode nodes); Ctrl-C stops it");
  up->add_option("--model", o.model, "GGUF model file")->capture_default_str();
  up->add_option("--served-model-name", o.served_model_name,
                 "Model name the API answers to (default: the model's id)");
  up->add_option("--port", o.port, "The conductor's OpenAI HTTP port on 127.0.0.1 (0: any)")
      ->capture_default_str();
  up->add_option("--prefill", o.prefill, "Number of prefill nodes")->capture_default_str();
  up->add_option("--decode", o.decode, "Number of decode nodes")->capture_default_str();
  up->add_option("--threads-per-node", o.threads_per_node,
                 "Compute threads per node (0: CPUs / (prefill + decode), at least 1)")
      ->capture_default_str();
  up->add_option("--backend", o.backend,
                 "Every node's forward pass: cpu, or cuda (builds with nvcc)")
      ->capture_default_str();
  up->add_option("--kv-cache-mb", o.kv_cache_mb, "KV cache per node (MiB)")->capture_default_str();
  up->add_option("--speculative-tokens", o.speculative_tokens,
                 "decode nodes' speculative decoding: prompt-lookup drafts a step (0: off)")
      ->capture_default_str();
  up->add_option("--speculative-draft-cost", o.speculative_draft_cost,
                 "decode nodes' cost of one position's arithmetic, as a fraction of a "
                 "one-token decode step, in [0, 1): drafts only while a step stays "
                 "memory-bound (0: every proposed draft; default: the decode node's)");
  up->add_option("--prefill-policy", o.prefill_policy,
                 "cache-aware|local|least-loaded|round-robin (default: the conductor's)");
  up->add_option("--slo-ttft-ms", o.slo_ttft_ms, "TTFT SLO (default: the conductor's)");
  up->add_option("--slo-tbt-ms", o.slo_tbt_ms,
                 "Time-between-tokens SLO (default: the conductor's)");
  up->add_flag("--no-early-rejection", o.no_early_rejection,
               "Queue requests the SLOs cannot meet instead of answering 429");
  up->add_option("--transport", o.transport, "KV transfer transport: auto|tcp|shm")
      ->capture_default_str();
  up->add_option("--api-key", o.api_key, "Require this bearer key (default: $CRESCENT_API_KEY)");
  up->add_option("--ports-file", o.ports_file,
                 "Write the cluster's processes, pids and addresses here as JSON once ready");
  up->add_option("--ready-timeout-s", f->ready_timeout_s, "Give up if not ready within this")
      ->capture_default_str();
  up->add_option("--stop-timeout-s", f->stop_timeout_s,
                 "Per process: SIGKILL if still running this long after SIGTERM")
      ->capture_default_str();
  commands->push_back({up, [f] { return RunUp(*f); }});
}

}  // namespace crescent::cli
