// NodeOptions: what every node role of the disaggregated cluster (prefill_node/, decode_node/)
// is configured with. Each role's Options derive from it and add their own fields, so the
// command line maps onto one struct for the shared flags (src/cli/node_command.h) and the
// checks of Start() are written once.
//
//   decode_node::DecodeNodeOptions o;  // a NodeOptions
//   o.model_path = path; o.node_id = "decode-0";
//   o.conductor_address = "127.0.0.1:50060"; o.kv_master_address = "127.0.0.1:50051";
//   CRESCENT_RETURN_IF_ERROR(cluster::ValidateNodeOptions(o));
#ifndef CRESCENT_SRC_CLUSTER_NODE_OPTIONS_H_
#define CRESCENT_SRC_CLUSTER_NODE_OPTIONS_H_

#include <chrono>
#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace crescent::cluster {

struct NodeOptions {
  std::string model_path;         // GGUF file. Required.
  std::string node_id;            // Unique in the cluster; names the node's segments. Required.
  std::string conductor_address;  // host:port of the Conductor's Registry. Required.
  std::string kv_master_address;  // host:port of the KV master. Required.
  std::string grpc_listen = "127.0.0.1:0";  // The node's gRPC service; port 0 = any free port.
  std::string metrics_host = "127.0.0.1";
  int metrics_port = 0;                         // 0 = any free port, -1 = no metrics server.
  int threads = 0;                              // Compute threads; 0 = all CPUs.
  std::string backend = "cpu";                  // The forward pass: cpu | cuda.
  int64_t kv_cache_bytes = int64_t{256} << 20;  // The engine's KV cache, at least 1 MiB.
  int block_tokens = 16;                        // Must match the cluster's.
  int max_step_tokens = 512;                    // Token budget of one engine step.
  // auto | tcp | shm | rdma: each role maps it to the transports it tries, in order.
  std::string transport = "auto";
  std::string data_listen = "127.0.0.1:0";  // The transfer engine's tcp data server.
  // The host others dial for the node's ports; empty: AdvertisedHost's default.
  std::string advertise_host;
  bool measure_profile = true;  // Time the node's work at start for the Conductor's cost model.
  std::chrono::milliseconds heartbeat_interval{500};
};

// Checks the fields every role needs: the four required ones are set, and the numbers are in
// range. Errors: InvalidArgument naming the command-line flag and what it accepts. Does not
// parse addresses or interpret `transport` (each role does).
absl::Status ValidateNodeOptions(const NodeOptions& options);

}  // namespace crescent::cluster

#endif  // CRESCENT_SRC_CLUSTER_NODE_OPTIONS_H_
