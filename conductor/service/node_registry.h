// NodeRegistry: the Conductor's view of the cluster's prefill and decode nodes, built from what
// the nodes report (proto/cluster.proto, service Registry): who they are (NodeInfo), their last
// load (NodeLoad), when they last beat, a cost model fitted from their profile, and which block
// hashes each prefill node is believed to hold. Snapshot() turns it into the policy's input.
//
// Liveness: a node is live while its last Register/Heartbeat is at most node_timeout old (time
// from the Clock passed in), it is not draining and it has not been marked suspect (a failed RPC)
// since its last beat. Only live nodes are offered to the policy. A heartbeat from an id the
// registry does not know answers reregister = true: a restarted Conductor rebuilds its registry
// from the nodes' next beats.
//
// Held prefixes: the registry records, per prefill node, the block hashes of the prompts it
// prefilled successfully (RecordPrefill) plus any the node reports itself (NodeLoad.cached_added /
// cached_removed), in an LRU bounded by the node's total_blocks. It is an approximation of the
// node's prefix cache (the node may have evicted a block the registry still lists); a wrong guess
// costs only a recompute on the node.
//
// RegistryService is the gRPC face of a NodeRegistry.
//
// Thread-safety: every NodeRegistry method is thread-safe.
#ifndef CRESCENT_CONDUCTOR_SERVICE_NODE_REGISTRY_H_
#define CRESCENT_CONDUCTOR_SERVICE_NODE_REGISTRY_H_

#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "conductor/policy/cost_model.h"
#include "conductor/policy/types.h"
#include "proto/cluster.grpc.pb.h"
#include "src/cluster/proto_convert.h"
#include "src/common/clock.h"

namespace crescent::conductor::service {

struct NodeRegistryOptions {
  // The Conductor's model: a node registering with another fingerprint is refused.
  uint64_t model_fingerprint = 0;
  std::string model_id;
  // The cluster's block size; 0 = adopt the first registering node's, then hold everyone to it.
  int block_tokens = 0;
  // K and V bytes per token, all layers (for the default cost model's transfer estimates).
  int64_t kv_bytes_per_token = 0;
  // A node silent this long is dead.
  double node_timeout_s = 3.0;
  // The heartbeat period the registry asks nodes for.
  int64_t heartbeat_interval_ms = 500;
  // Cap of the held-prefix LRU per node (besides the node's total_blocks).
  int64_t max_held_blocks = 1 << 16;
};

// One node as the registry last heard of it.
struct NodeEntry {
  cluster::v1::NodeInfo info;
  cluster::v1::NodeLoad load;
  int64_t last_beat_ns = 0;
  bool suspect = false;  // an RPC to it failed since its last beat
};

// The policy's input at one moment: nodes[i] (with its cost model and held-prefix lookup) is
// reachable at endpoints[i]. Owns what the NodeStates point to; keep it alive while deciding.
struct RegistrySnapshot {
  std::vector<conductor::policy::NodeState> nodes;
  std::vector<std::string> endpoints;
  std::vector<std::shared_ptr<const conductor::policy::CostModel>> costs;
};

// Counts of live nodes by role.
struct LiveCounts {
  int prefill = 0;
  int decode = 0;
};

class NodeRegistry {
 public:
  // `clock` is not owned and must outlive the registry.
  NodeRegistry(const NodeRegistryOptions& options, const Clock* clock);

  // Adds or replaces node `info.node_id` (a re-registration resets its load and suspicion, and
  // keeps its held prefixes). Errors: InvalidArgument (empty node_id or grpc_endpoint, role
  // unspecified, block_tokens < 1); FailedPrecondition when the model fingerprint or block_tokens
  // differs from the cluster's (the message names both values).
  absl::StatusOr<cluster::v1::RegisterResponse> Register(const cluster::v1::NodeInfo& info);

  // Records a beat. Unknown id: reregister = true and nothing else changes.
  cluster::v1::HeartbeatResponse Heartbeat(const cluster::v1::HeartbeatRequest& request);

  // Marks a node suspect after a failed RPC: not live until its next beat.
  void MarkSuspect(std::string_view node_id);

  // Work this conductor has placed on a node, which the node's heartbeats may not show yet (a
  // burst arrives between two beats): Snapshot reports a prefill node's queue as at least the
  // placed prefill tokens, a decode node's batch and context as at least the placed requests,
  // and its free KV blocks less the blocks placed since its last heartbeat. Add with positive
  // amounts when placing, the same negative amounts when the work is done (prefill returned,
  // request finished); blocks need no undo (a heartbeat resets them). Unknown ids are ignored.
  void AddPlaced(std::string_view node_id, int64_t prefill_tokens, int decode_requests,
                 int64_t decode_context_tokens, int64_t kv_blocks);

  // Records that `node_id` prefilled a prompt with these block hashes: they join its held LRU
  // (most recent last). Unknown ids are ignored.
  void RecordPrefill(std::string_view node_id, std::span<const uint64_t> hashes);

  // Whether the registry believes `node_id` holds block `hash`.
  bool Holds(std::string_view node_id, uint64_t hash) const;

  // The live nodes, excluding `excluded` ids, for the policy. Nodes' holds_block calls back into
  // this registry, which must outlive the snapshot's use.
  RegistrySnapshot Snapshot(const std::set<std::string>& excluded = {}) const;

  // One node's entry, live or not; nullopt when unknown.
  std::optional<NodeEntry> Find(std::string_view node_id) const;
  // Every live node's entry.
  std::vector<NodeEntry> LiveNodes() const;
  LiveCounts CountLive() const;

  // The cluster's block size (0 until known).
  int block_tokens() const;

  const NodeRegistryOptions& options() const { return options_; }

 private:
  struct Node {
    NodeEntry entry;
    std::shared_ptr<const conductor::policy::CostModel> cost;
    // LRU of held hashes: list front = least recent.
    std::list<uint64_t> held_order;
    absl::flat_hash_map<uint64_t, std::list<uint64_t>::iterator> held;
    // AddPlaced's running sums.
    int64_t placed_prefill_tokens = 0;
    int64_t placed_decode_requests = 0;
    int64_t placed_decode_context = 0;
    int64_t placed_blocks_since_beat = 0;
  };

  bool IsLive(const Node& node, int64_t now_ns) const;
  void TouchHeld(Node* node, uint64_t hash) const;
  int64_t HeldCapacity(const Node& node) const;
  std::shared_ptr<const conductor::policy::CostModel> CostFor(const cluster::v1::NodeInfo& info,
                                                              int block_tokens) const;

  const NodeRegistryOptions options_;
  const Clock* const clock_;

  mutable absl::Mutex mu_;
  int block_tokens_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::unique_ptr<Node>> nodes_ ABSL_GUARDED_BY(mu_);
};

// The Registry gRPC service over a NodeRegistry (not owned; must outlive the service).
class RegistryService final : public cluster::v1::Registry::Service {
 public:
  explicit RegistryService(NodeRegistry* registry) : registry_(registry) {}

  grpc::Status Register(grpc::ServerContext* context, const cluster::v1::RegisterRequest* request,
                        cluster::v1::RegisterResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext* context, const cluster::v1::HeartbeatRequest* request,
                         cluster::v1::HeartbeatResponse* response) override;

 private:
  NodeRegistry* const registry_;
};

// A cost model for a node that sent no usable profile: rough figures for a small model on a few
// CPU cores (prefill ~2000 tokens/s, decode step ~10 ms), so that the policy's predictions are of
// the right order until real profiles arrive.
conductor::policy::CostModel DefaultCostModel(int block_tokens, int64_t kv_bytes_per_token);

// absl::Status <-> grpc::Status (the codes are numerically equal).
using cluster::FromGrpcStatus;  // src/cluster/proto_convert.h
using cluster::ToGrpcStatus;

}  // namespace crescent::conductor::service

#endif  // CRESCENT_CONDUCTOR_SERVICE_NODE_REGISTRY_H_
