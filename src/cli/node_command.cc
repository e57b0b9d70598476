#include "src/cli/node_command.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "src/common/host_port.h"
#include "src/common/memory_size.h"
#include "src/common/status.h"

namespace crescent::cli {

void AddNodeFlags(CLI::App* cmd, const NodeRole& role, NodeFlags* flags) {
  cmd->add_option("-m,--model", flags->model, "GGUF model file")->capture_default_str();
  cmd->add_option("--node-id", flags->node_id, "this node's unique id")->required();
  cmd->add_option("--conductor", flags->conductor, "the Conductor's gRPC registry, host:port")
      ->required();
  cmd->add_option("--kv-master", flags->kv_master, "the KV master, host:port")->required();
  cmd->add_option("--grpc-listen", flags->grpc_listen,
                  absl::StrCat(role.service,
                               " gRPC address (port 0: any free port; the real one registers)"))
      ->capture_default_str();
  cmd->add_option("--metrics-port", flags->metrics_port,
                  "port of /health /ready /metrics (0: any free port, -1: none)")
      ->capture_default_str();
  cmd->add_option("-t,--threads", flags->threads, "compute threads (default: all CPUs)");
  cmd->add_option("--backend", flags->backend, "forward pass: cpu, or cuda (builds with nvcc)")
      ->capture_default_str();
  cmd->add_option("--kv-cache-mb", flags->kv_cache_mb, role.kv_cache_mb_help)
      ->capture_default_str();
  cmd->add_option("--block-tokens", flags->block_tokens,
                  "tokens per KV block (must match the cluster's)")
      ->capture_default_str();
  cmd->add_option("--max-step-tokens", flags->max_step_tokens, role.max_step_tokens_help)
      ->capture_default_str();
  cmd->add_option("--transport", flags->transport, role.transport_help)->capture_default_str();
  cmd->add_option("--data-listen", flags->data_listen,
                  "the transfer engine's tcp data server, host:port (port 0: any free port)")
      ->capture_default_str();
  cmd->add_option("--advertise-host", flags->advertise_host,
                  "host or IP the Conductor, the KV master and peers dial to reach this node's "
                  "gRPC, data and metrics ports (e.g. the pod IP when listening on 0.0.0.0; "
                  "default: the listen host, or this host's name for 0.0.0.0)");
  cmd->add_option("--metrics-host", flags->metrics_host,
                  "interface of /health /ready /metrics (0.0.0.0: all, for a scraper elsewhere)")
      ->capture_default_str();
  cmd->add_option(
         "--drain-timeout-s", flags->drain_timeout_s,
         absl::StrCat("on SIGTERM/SIGINT, how long to let ", role.work, " in flight finish"))
      ->capture_default_str();
}

absl::Status ValidateNodeFlags(const NodeFlags& flags) {
  if (flags.metrics_port < -1 || flags.metrics_port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--metrics-port must be in [0, 65535] (or -1: none), got ", flags.metrics_port));
  }
  if (flags.threads < 0) return absl::InvalidArgumentError("--threads must be >= 0 (0 = all CPUs)");
  CRESCENT_RETURN_IF_ERROR(CheckMemoryMb("--kv-cache-mb", flags.kv_cache_mb, 1));
  if (flags.block_tokens < 1) {
    return absl::InvalidArgumentError("--block-tokens must be at least 1");
  }
  if (flags.max_step_tokens < 1) {
    return absl::InvalidArgumentError("--max-step-tokens must be at least 1");
  }
  if (flags.drain_timeout_s < 0) {
    return absl::InvalidArgumentError("--drain-timeout-s must be >= 0");
  }
  if (flags.advertise_host.find_first_of(" /") != std::string::npos ||
      (!flags.advertise_host.empty() && IsWildcardHost(flags.advertise_host))) {
    return absl::InvalidArgumentError(
        absl::StrCat("--advertise-host must be a host name or IP others can dial, got '",
                     flags.advertise_host, "'"));
  }
  for (const auto& [flag, address] :
       {std::pair{"--grpc-listen", &flags.grpc_listen},
        std::pair{"--data-listen", &flags.data_listen}, std::pair{"--conductor", &flags.conductor},
        std::pair{"--kv-master", &flags.kv_master}}) {
    CRESCENT_RETURN_IF_ERROR(ParseHostPort(*address, flag).status());
  }
  return absl::OkStatus();
}

void ApplyNodeFlags(const NodeFlags& flags, cluster::NodeOptions* options) {
  options->model_path = flags.model;
  options->node_id = flags.node_id;
  options->conductor_address = flags.conductor;
  options->kv_master_address = flags.kv_master;
  options->grpc_listen = flags.grpc_listen;
  options->metrics_host = flags.metrics_host;
  options->metrics_port = flags.metrics_port;
  options->threads = flags.threads;
  options->backend = flags.backend;
  options->kv_cache_bytes = flags.kv_cache_mb << 20;
  options->block_tokens = flags.block_tokens;
  options->max_step_tokens = flags.max_step_tokens;
  options->transport = flags.transport;
  options->data_listen = flags.data_listen;
  options->advertise_host = flags.advertise_host;
}

void PrintNodeError(const NodeRole& role, absl::string_view message) {
  std::fprintf(stderr, "crescent %s: %.*s\n", role.command, static_cast<int>(message.size()),
               message.data());
}

int BadNodeFlag(const NodeRole& role, absl::string_view message) {
  PrintNodeError(role, message);
  return 2;
}

}  // namespace crescent::cli
