// `crescent prefill-node`: a prefill node of the disaggregated cluster (prefill_node/).
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "prefill_node/prefill_node.h"
#include "src/cli/command.h"
#include "src/common/logging.h"
#include "src/engine/loaded_model.h"

namespace crescent::cli {
namespace {

struct PrefillNodeFlags {
  std::string model = engine::DefaultModelPath();
  std::string node_id;
  std::string conductor;
  std::string kv_master;
  std::string grpc_listen = "127.0.0.1:0";
  int metrics_port = 0;
  int threads = 0;
  int64_t kv_cache_mb = 256;
  int64_t pool_dram_mb = 256;
  int block_tokens = 16;
  int max_step_tokens = 512;
  std::string transport = "auto";
  std::string data_listen = "127.0.0.1:0";
  bool no_profile = false;
  int drain_timeout_s = 30;
};

int BadFlag(const std::string& message) {
  std::fprintf(stderr, "crescent prefill-node: %s\n", message.c_str());
  return 2;
}

int RunPrefillNode(const PrefillNodeFlags& f) {
  if (f.metrics_port < -1 || f.metrics_port > 65535) {
    return BadFlag("--metrics-port must be in [0, 65535] (or -1: none), got " +
                   std::to_string(f.metrics_port));
  }
  if (f.threads < 0) return BadFlag("--threads must be >= 0 (0 = all CPUs)");
  if (f.kv_cache_mb < 1) return BadFlag("--kv-cache-mb must be at least 1");
  if (f.pool_dram_mb < 0) return BadFlag("--pool-dram-mb must be >= 0 (0 = none)");
  if (f.block_tokens < 1) return BadFlag("--block-tokens must be at least 1");
  if (f.max_step_tokens < 1) return BadFlag("--max-step-tokens must be at least 1");
  if (f.drain_timeout_s < 0) return BadFlag("--drain-timeout-s must be >= 0");
  if (!prefill_node::TransportOrder(f.transport).ok()) {
    return BadFlag("--transport must be auto, tcp, shm or rdma, got '" + f.transport + "'");
  }

  // Every thread started from here on inherits the mask; the main thread waits for the signals.
  const sigset_t signals = BlockStopSignals();

  prefill_node::PrefillNodeOptions o;
  o.model_path = f.model;
  o.node_id = f.node_id;
  o.conductor_address = f.conductor;
  o.kv_master_address = f.kv_master;
  o.grpc_listen = f.grpc_listen;
  o.metrics_port = f.metrics_port;
  o.threads = f.threads;
  o.kv_cache_bytes = f.kv_cache_mb << 20;
  o.pool_dram_bytes = static_cast<uint64_t>(f.pool_dram_mb) << 20;
  o.block_tokens = f.block_tokens;
  o.max_step_tokens = f.max_step_tokens;
  o.transport = f.transport;
  o.data_listen = f.data_listen;
  o.measure_profile = !f.no_profile;
  auto node = prefill_node::PrefillNode::Start(o);
  if (!node.ok()) {
    std::fprintf(stderr, "crescent prefill-node: %s\n",
                 std::string(node.status().ToString()).c_str());
    return node.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  std::printf("%s\n", (*node)->ReadyLine().c_str());
  std::fflush(stdout);

  const int signo = WaitForStopSignal(signals);
  CRESCENT_LOG(info, "{}: draining (finishing prefills in flight, up to {} s)",
               signo == SIGINT ? "SIGINT" : "SIGTERM", f.drain_timeout_s);
  (*node)->Drain(std::chrono::seconds(f.drain_timeout_s));
  node->reset();
  CRESCENT_LOG(info, "stopped");
  return 0;
}

}  // namespace

void AddPrefillNodeCommands(CLI::App& app, std::vector<Command>* commands) {
  auto flags = std::make_shared<PrefillNodeFlags>();
  CLI::App* cmd = app.add_subcommand(
      "prefill-node",
      "prefill node of the disaggregated cluster: computes prompts' KV into decode nodes");
  cmd->alias("prefill");  // DESIGN.md's name for the role
  cmd->add_option("-m,--model", flags->model, "GGUF model file")->capture_default_str();
  cmd->add_option("--node-id", flags->node_id, "this node's unique id")->required();
  cmd->add_option("--conductor", flags->conductor, "the Conductor's gRPC registry, host:port")
      ->required();
  cmd->add_option("--kv-master", flags->kv_master, "the KV master, host:port")->required();
  cmd->add_option("--grpc-listen", flags->grpc_listen,
                  "PrefillNode gRPC address (port 0: any free port; the real one registers)")
      ->capture_default_str();
  cmd->add_option("--metrics-port", flags->metrics_port,
                  "port of /health /ready /metrics (0: any free port, -1: none)")
      ->capture_default_str();
  cmd->add_option("-t,--threads", flags->threads, "compute threads (default: all CPUs)");
  cmd->add_option("--kv-cache-mb", flags->kv_cache_mb, "KV cache memory in MiB")
      ->capture_default_str();
  cmd->add_option("--pool-dram-mb", flags->pool_dram_mb,
                  "DRAM this node contributes to the KV pool in MiB (0: none)")
      ->capture_default_str();
  cmd->add_option("--block-tokens", flags->block_tokens,
                  "tokens per KV block (must match the cluster's)")
      ->capture_default_str();
  cmd->add_option("--max-step-tokens", flags->max_step_tokens,
                  "token budget of one engine step (the prefill chunk size)")
      ->capture_default_str();
  cmd->add_option("--transport", flags->transport,
                  "KV transfer: auto (shm, rdma, tcp), tcp, shm (shm, tcp) or rdma (rdma, tcp)")
      ->capture_default_str();
  cmd->add_option("--data-listen", flags->data_listen,
                  "the transfer engine's tcp data server, host:port (port 0: any)")
      ->capture_default_str();
  cmd->add_flag("--no-profile", flags->no_profile,
                "skip the startup cost measurement (the Conductor then uses its defaults)");
  cmd->add_option("--drain-timeout-s", flags->drain_timeout_s,
                  "on SIGTERM/SIGINT, how long to wait for prefills in flight")
      ->capture_default_str();
  commands->push_back({cmd, [flags] { return RunPrefillNode(*flags); }});
}

}  // namespace crescent::cli
