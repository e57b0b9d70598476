#include "src/cluster/node_options.h"

#include "absl/strings/str_cat.h"

namespace crescent::cluster {

absl::Status ValidateNodeOptions(const NodeOptions& options) {
  if (options.model_path.empty()) return absl::InvalidArgumentError("--model is required");
  if (options.node_id.empty()) return absl::InvalidArgumentError("--node-id is required");
  if (options.conductor_address.empty()) {
    return absl::InvalidArgumentError("--conductor is required");
  }
  if (options.kv_master_address.empty()) {
    return absl::InvalidArgumentError("--kv-master is required");
  }
  if (options.kv_cache_bytes < (int64_t{1} << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--kv-cache-mb must be at least 1, got ", options.kv_cache_bytes, " bytes"));
  }
  if (options.threads < 0) return absl::InvalidArgumentError("--threads must be >= 0");
  if (options.backend != "cpu" && options.backend != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("--backend must be cpu or cuda, got '", options.backend, "'"));
  }
  if (options.max_step_tokens < 1) {
    return absl::InvalidArgumentError("--max-step-tokens must be >= 1");
  }
  if (options.block_tokens < 1) return absl::InvalidArgumentError("--block-tokens must be >= 1");
  if (options.metrics_port < -1 || options.metrics_port > 65535) {
    return absl::InvalidArgumentError("--metrics-port must be in [0, 65535] (or -1: none)");
  }
  if (options.heartbeat_interval <= std::chrono::milliseconds(0)) {
    return absl::InvalidArgumentError("the heartbeat interval must be positive");
  }
  return absl::OkStatus();
}

}  // namespace crescent::cluster
