// What `crescent prefill-node` and `crescent decode-node` share: the node flags both take, their
// checks, and the lifecycle of a node process (start, announce, wait for a stop signal, drain).
// Each command file keeps its role's own flags and their mapping to its node's Options.
#ifndef CRESCENT_SRC_CLI_NODE_COMMAND_H_
#define CRESCENT_SRC_CLI_NODE_COMMAND_H_

#include <signal.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "src/cli/command.h"
#include "src/cluster/node_options.h"
#include "src/common/logging.h"
#include "src/engine/loaded_model.h"

namespace crescent::cli {

// The words that differ between the node roles in the shared flags' help, errors and logs.
struct NodeRole {
  const char* command;               // "prefill-node": prefixes errors, "crescent <command>: ..."
  const char* service;               // "PrefillNode": the gRPC service --grpc-listen serves
  const char* work;                  // "prefills": what a drain lets finish (help and log)
  const char* kv_cache_mb_help;      // --kv-cache-mb's help
  const char* max_step_tokens_help;  // --max-step-tokens's help
  const char* transport_help;        // --transport's help (the values each role accepts)
};

// The flags every node role takes, with their defaults.
struct NodeFlags {
  std::string model = engine::DefaultModelPath();
  std::string node_id;
  std::string conductor;
  std::string kv_master;
  std::string grpc_listen = "127.0.0.1:0";
  int metrics_port = 0;
  int threads = 0;
  std::string backend = "cpu";
  int64_t kv_cache_mb = 256;
  int block_tokens = 16;
  int max_step_tokens = 512;
  std::string transport = "auto";
  std::string data_listen = "127.0.0.1:0";
  std::string advertise_host;  // empty: the listen hosts (this host's name for 0.0.0.0)
  std::string metrics_host = "127.0.0.1";
  int drain_timeout_s = 30;
};

// Registers the NodeFlags on `cmd`, writing into `*flags`: --node-id, --conductor and
// --kv-master are required. REQUIRES: `flags` outlives parsing.
void AddNodeFlags(CLI::App* cmd, const NodeRole& role, NodeFlags* flags);

// Checks the shared flags' ranges and that the four addresses are host:port (not the
// role-specific meaning of --transport). Errors: InvalidArgument, whose message names the flag
// and what it accepts.
absl::Status ValidateNodeFlags(const NodeFlags& flags);

// Copies the shared flags into the node options every role's Options derive from.
void ApplyNodeFlags(const NodeFlags& flags, cluster::NodeOptions* options);

// Prints "crescent <role.command>: <message>" on stderr.
void PrintNodeError(const NodeRole& role, absl::string_view message);

// PrintNodeError, then returns 2: the exit status for bad flags.
int BadNodeFlag(const NodeRole& role, absl::string_view message);

// The life of a node process after its flags are checked: blocks SIGINT/SIGTERM (so every thread
// `start` creates inherits the mask), calls `start`, prints the node's ready line on stdout, waits
// for a stop signal on this thread, drains for up to `drain_timeout_s` seconds and destroys the
// node. Returns the exit status: 0 after a stop, 2 when `start` fails with InvalidArgument, else
// 1 (its error printed by PrintNodeError).
// REQUIRES: called on the main thread before any other thread starts; `start()` returns
// absl::StatusOr<std::unique_ptr<N>> where N has `std::string ReadyLine() const` and
// `Drain(std::chrono::milliseconds)`.
template <typename StartFn>
int RunNodeUntilStopped(const NodeRole& role, int drain_timeout_s, StartFn start) {
  const sigset_t signals = BlockStopSignals();
  auto node = start();
  if (!node.ok()) {
    PrintNodeError(role, node.status().ToString());
    return node.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  std::printf("%s\n", (*node)->ReadyLine().c_str());
  std::fflush(stdout);

  const int signo = WaitForStopSignal(signals);
  CRESCENT_LOG(info, "{}: draining (finishing {} in flight, up to {} s)",
               signo == SIGINT ? "SIGINT" : "SIGTERM", role.work, drain_timeout_s);
  (*node)->Drain(std::chrono::seconds(drain_timeout_s));
  node->reset();
  CRESCENT_LOG(info, "stopped");
  return 0;
}

}  // namespace crescent::cli

#endif  // CRESCENT_SRC_CLI_NODE_COMMAND_H_
