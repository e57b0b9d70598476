// `crescent decode-node`: a decode node of the disaggregated cluster (decode_node/).
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "decode_node/decode_node.h"
#include "src/cli/command.h"
#include "src/common/logging.h"
#include "src/engine/loaded_model.h"

namespace crescent::cli {
namespace {

struct DecodeNodeFlags {
  std::string model = engine::DefaultModelPath();
  std::string node_id;
  std::string conductor;
  std::string kv_master;
  std::string grpc_listen = "127.0.0.1:0";
  int metrics_port = 0;
  int threads = 0;
  int64_t kv_cache_mb = 256;
  int block_tokens = 16;
  int max_running = 64;
  int max_step_tokens = 512;
  std::string transport = "auto";
  std::string data_listen = "127.0.0.1:0";
  int64_t reserve_timeout_ms = 30000;
  int drain_timeout_s = 30;
};

int BadFlag(const std::string& message) {
  std::fprintf(stderr, "crescent decode-node: %s\n", message.c_str());
  return 2;
}

int RunDecodeNode(const DecodeNodeFlags& f) {
  if (f.metrics_port < -1 || f.metrics_port > 65535) {
    return BadFlag("--metrics-port must be in [0, 65535] (or -1: none), got " +
                   std::to_string(f.metrics_port));
  }
  if (f.threads < 0) return BadFlag("--threads must be >= 0 (0 = all CPUs)");
  if (f.kv_cache_mb < 1) return BadFlag("--kv-cache-mb must be at least 1");
  if (f.block_tokens < 1) return BadFlag("--block-tokens must be at least 1");
  if (f.max_running < 1) return BadFlag("--max-running must be at least 1");
  if (f.max_step_tokens < 1) return BadFlag("--max-step-tokens must be at least 1");
  if (f.reserve_timeout_ms < 1) return BadFlag("--reserve-timeout-ms must be at least 1");
  if (f.drain_timeout_s < 0) return BadFlag("--drain-timeout-s must be >= 0");
  if (!decode_node::TransportsFor(f.transport).ok()) {
    return BadFlag("--transport must be auto, tcp, shm or rdma, got '" + f.transport + "'");
  }
  std::string host;
  int port = 0;
  for (const auto& [flag, value] :
       {std::pair<const char*, const std::string*>{"--grpc-listen", &f.grpc_listen},
        {"--data-listen", &f.data_listen},
        {"--conductor", &f.conductor},
        {"--kv-master", &f.kv_master}}) {
    absl::Status s = decode_node::SplitHostPort(*value, flag, &host, &port);
    if (!s.ok()) return BadFlag(std::string(s.message()));
  }

  // Every thread started from here on inherits the mask; the main thread waits for the signals.
  const sigset_t signals = BlockStopSignals();

  decode_node::DecodeNodeOptions o;
  o.model_path = f.model;
  o.node_id = f.node_id;
  o.conductor = f.conductor;
  o.kv_master = f.kv_master;
  o.grpc_listen = f.grpc_listen;
  o.metrics_port = f.metrics_port;
  o.threads = f.threads;
  o.kv_cache_mb = f.kv_cache_mb;
  o.block_tokens = f.block_tokens;
  o.max_running = f.max_running;
  o.max_step_tokens = f.max_step_tokens;
  o.transport = f.transport;
  o.data_listen = f.data_listen;
  o.reserve_timeout_ms = f.reserve_timeout_ms;
  auto node = decode_node::DecodeNode::Start(o);
  if (!node.ok()) {
    std::fprintf(stderr, "crescent decode-node: %s\n",
                 std::string(node.status().ToString()).c_str());
    return node.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  std::printf("%s\n", (*node)->ReadyLine().c_str());
  std::fflush(stdout);

  const int signo = WaitForStopSignal(signals);
  CRESCENT_LOG(info, "{}: draining (finishing decodes in flight, up to {} s)",
               signo == SIGINT ? "SIGINT" : "SIGTERM", f.drain_timeout_s);
  (*node)->Drain(std::chrono::seconds(f.drain_timeout_s));
  node->reset();
  CRESCENT_LOG(info, "stopped");
  return 0;
}

}  // namespace

void AddDecodeNodeCommands(CLI::App& app, std::vector<Command>* commands) {
  auto flags = std::make_shared<DecodeNodeFlags>();
  CLI::App* cmd = app.add_subcommand(
      "decode-node",
      "decode node of the disaggregated cluster: reserves KV pages, decodes, streams tokens");
  cmd->alias("decode");  // DESIGN.md's name for the role
  cmd->add_option("-m,--model", flags->model, "GGUF model file")->capture_default_str();
  cmd->add_option("--node-id", flags->node_id, "this node's unique id")->required();
  cmd->add_option("--conductor", flags->conductor, "the Conductor's gRPC registry, host:port")
      ->required();
  cmd->add_option("--kv-master", flags->kv_master, "the KV master, host:port")->required();
  cmd->add_option("--grpc-listen", flags->grpc_listen,
                  "DecodeNode gRPC address (port 0: any free port; the real one registers)")
      ->capture_default_str();
  cmd->add_option("--metrics-port", flags->metrics_port,
                  "port of /health /ready /metrics (0: any free port, -1: none)")
      ->capture_default_str();
  cmd->add_option("-t,--threads", flags->threads, "compute threads (default: all CPUs)");
  cmd->add_option("--kv-cache-mb", flags->kv_cache_mb,
                  "KV cache memory in MiB (a shared segment prefill nodes write into)")
      ->capture_default_str();
  cmd->add_option("--block-tokens", flags->block_tokens,
                  "tokens per KV block (must match the cluster's)")
      ->capture_default_str();
  cmd->add_option("--max-running", flags->max_running, "sequences in the running batch at most")
      ->capture_default_str();
  cmd->add_option("--max-step-tokens", flags->max_step_tokens, "token budget of one engine step")
      ->capture_default_str();
  cmd->add_option("--transport", flags->transport,
                  "how peers reach the KV cache: auto (shm, rdma, tcp), tcp (rdma, tcp), shm, rdma")
      ->capture_default_str();
  cmd->add_option("--data-listen", flags->data_listen,
                  "the transfer engine's tcp data server, host:port (port 0: any free port)")
      ->capture_default_str();
  cmd->add_option("--reserve-timeout-ms", flags->reserve_timeout_ms,
                  "a KV reservation whose Decode has not started by then is released (default "
                  "and upper bound of the Conductor's timeout)")
      ->capture_default_str();
  cmd->add_option("--drain-timeout-s", flags->drain_timeout_s,
                  "on SIGTERM/SIGINT, how long to let decodes in flight finish")
      ->capture_default_str();
  commands->push_back({cmd, [flags] { return RunDecodeNode(*flags); }});
}

}  // namespace crescent::cli
