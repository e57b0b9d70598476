// NodeAgent: a prefill or decode node's side of the Conductor's registry (proto/cluster.proto,
// service Registry). It registers the node, then heartbeats every period with the load the node
// reports through a callback; it registers again when the Conductor has forgotten the node (a
// restarted Conductor rebuilds its registry this way) and keeps retrying while the Conductor is
// unreachable, so nodes and Conductor may start in any order.
//
//   NodeAgentOptions options;
//   options.conductor_address = "127.0.0.1:50060";
//   options.node = info;                       // role, id, gRPC endpoint, model fingerprint...
//   auto agent = NodeAgent::Start(options, [&] { return CurrentLoad(); });
//   ...
//   agent->SetDraining();                      // SIGTERM: the next beat says so
//   agent->Stop();
//
// Thread-safety: all methods are thread-safe. The load callback runs on the agent's thread.
#ifndef CRESCENT_SRC_CLUSTER_NODE_AGENT_H_
#define CRESCENT_SRC_CLUSTER_NODE_AGENT_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "proto/cluster.grpc.pb.h"

namespace crescent::cluster {

struct NodeAgentOptions {
  std::string conductor_address;  // host:port of the Conductor's gRPC Registry. Required.
  v1::NodeInfo node;              // node_id, role and grpc_endpoint required.
  // Used until the Conductor answers Register with its own period.
  std::chrono::milliseconds heartbeat_interval{500};
  std::chrono::milliseconds rpc_timeout{2000};
};

class NodeAgent {
 public:
  using LoadFn = std::function<v1::NodeLoad()>;

  // Starts the agent thread, which registers (retrying every interval until the Conductor
  // answers) and then heartbeats. Does not wait for the registration. Errors: InvalidArgument
  // for missing options.
  static absl::StatusOr<std::unique_ptr<NodeAgent>> Start(const NodeAgentOptions& options,
                                                          LoadFn load);
  ~NodeAgent();  // Stop().
  NodeAgent(const NodeAgent&) = delete;
  NodeAgent& operator=(const NodeAgent&) = delete;

  // The next heartbeats carry draining = true: the Conductor sends nothing new here.
  void SetDraining();
  // Stops heartbeating (the Conductor drops the node after its timeout). Idempotent.
  void Stop();

  // Whether the last Register or Heartbeat succeeded.
  bool connected() const { return connected_.load(); }
  // Successful heartbeats so far (tests wait on it).
  uint64_t heartbeats() const { return heartbeats_.load(); }

 private:
  NodeAgent(const NodeAgentOptions& options, LoadFn load);
  void Run();

  const NodeAgentOptions options_;
  const LoadFn load_;
  std::unique_ptr<v1::Registry::Stub> stub_;
  std::atomic<bool> draining_{false};
  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> heartbeats_{0};
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace crescent::cluster

#endif  // CRESCENT_SRC_CLUSTER_NODE_AGENT_H_
